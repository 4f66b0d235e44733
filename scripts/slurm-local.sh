#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for trying `moin launch --slurm` and for its test.
#
#   scripts/slurm-local.sh start    # install slurm-wlm + munge if missing, start munged, slurmctld, slurmd
#   scripts/slurm-local.sh status   # sinfo of the running cluster (exit 1 when it does not answer)
#   scripts/slurm-local.sh stop     # stop the three daemons (the state folder is kept)
#   scripts/slurm-local.sh env      # the line to paste into a shell: export SLURM_CONF=...
#
# Everything lives in one private folder, $MOIN_SLURM_DIR (default /tmp/moin-slurm-$UID): the config, a
# generated munge key and munge socket, state, spool, logs and pid files; nothing is written to /etc and no
# systemd is needed, so it works in a container. Clients find the cluster through SLURM_CONF (`env`).
# One node with MOIN_SLURM_CPUS CPUs (default 2, at most nproc), proctrack/linuxproc, no cgroups, no
# accounting (squeue and scontrol show finished jobs for MinJobAge = 10 minutes). Daemons run as root,
# as Slurm's own do: installing needs root or sudo, and slurmd must be able to start jobs as any user.
# Ports: MOIN_SLURM_PORT (slurmctld, default 16817) and the next one (slurmd), away from a real
# cluster's 6817/6818. MOIN_SLURM_MAX_ARRAY_SIZE sets MaxArraySize (Slurm's default, 1001).
set -euo pipefail

DIR=${MOIN_SLURM_DIR:-/tmp/moin-slurm-$(id -u)}
PORT=${MOIN_SLURM_PORT:-16817}
CPUS=${MOIN_SLURM_CPUS:-2}
MAX_ARRAY=${MOIN_SLURM_MAX_ARRAY_SIZE:-1001}
NODE=moin-node
CONF=$DIR/etc/slurm.conf
SOCKET=$DIR/munge/munge.socket.2

say() { echo "slurm-local: $*" >&2; }
die() { say "$*"; exit 1; }
fail_start() { say "$*"; stop_daemons; exit 1; }  # leaves no half-started cluster behind

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo > /dev/null && sudo -n true 2> /dev/null || die "needs root (or passwordless sudo) to run slurmd"
  SUDO="sudo -n"
fi

install_packages() {
  local missing=()
  for p in slurm-wlm munge; do
    dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get > /dev/null || die "apt-get not found: install Slurm (slurm-wlm) and munge by hand"
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  # The packages' postinst try to start their services; without systemd that is refused, harmlessly.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
}

pid_alive() { [ -f "$1" ] && $SUDO kill -0 "$(cat "$1")" 2> /dev/null; }

answers() { SLURM_CONF=$CONF timeout 10 sinfo -h > /dev/null 2>&1; }

write_config() {
  local cpus=$CPUS
  [[ "$cpus" =~ ^[1-9][0-9]*$ ]] || die "MOIN_SLURM_CPUS must be a positive number, not '$cpus'"
  [ "$cpus" -gt "$(nproc)" ] && cpus=$(nproc)
  $SUDO mkdir -p "$DIR"/{etc,munge,state,spool,log,run}
  $SUDO chmod 700 "$DIR/munge"
  $SUDO tee "$CONF" > /dev/null << EOF
# Written by scripts/slurm-local.sh: a one-node cluster on this machine.
ClusterName=moin-local
SlurmctldHost=$(hostname)(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
PlugStackConfig=$DIR/etc/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
MinJobAge=600
KillWait=5
MaxArraySize=$MAX_ARRAY
NodeName=$NODE NodeHostname=$(hostname) NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  $SUDO touch "$DIR/etc/plugstack.conf"
}

start() {
  install_packages
  if pid_alive "$DIR/run/slurmctld.pid" && pid_alive "$DIR/run/slurmd.pid" && answers; then
    say "already running ($CONF)"
    return 0
  fi
  stop_daemons
  write_config
  if [ ! -f "$DIR/munge/munge.key" ]; then
    $SUDO mungekey --create --keyfile="$DIR/munge/munge.key" > /dev/null
    $SUDO chmod 600 "$DIR/munge/munge.key"
  fi
  $SUDO munged --socket="$SOCKET" --key-file="$DIR/munge/munge.key" --pid-file="$DIR/run/munged.pid" \
    --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" --force \
    || fail_start "munged did not start (see $DIR/log/munged.log)"
  $SUDO env SLURM_CONF="$CONF" slurmctld -f "$CONF" || fail_start "slurmctld did not start (see $DIR/log/slurmctld.log)"
  $SUDO env SLURM_CONF="$CONF" slurmd -f "$CONF" -N "$NODE" || fail_start "slurmd did not start (see $DIR/log/slurmd.log)"
  for _ in $(seq 1 60); do
    if answers && SLURM_CONF=$CONF sinfo -h -o %t -n "$NODE" 2> /dev/null | grep -qE '^(idle|mix|alloc)'; then
      say "running: $(SLURM_CONF=$CONF sinfo -h -o '%P %D node(s) %c CPUs %t' | head -1); export SLURM_CONF=$CONF"
      return 0
    fi
    sleep 1
  done
  say "the node did not come up; last lines of the logs:"
  tail -n 5 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
  stop_daemons
  return 1
}

stop_daemons() {
  for d in slurmd slurmctld munged; do
    local f="$DIR/run/$d.pid"
    if pid_alive "$f"; then
      local pid
      pid=$(cat "$f")
      $SUDO kill "$pid" 2> /dev/null || true
      for _ in $(seq 1 50); do $SUDO kill -0 "$pid" 2> /dev/null || break; sleep 0.2; done
      $SUDO kill -9 "$pid" 2> /dev/null || true
    fi
    $SUDO rm -f "$f"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop_daemons; say "stopped" ;;
  status)
    answers || die "not running (no answer from $CONF)"
    SLURM_CONF=$CONF sinfo; SLURM_CONF=$CONF squeue ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
