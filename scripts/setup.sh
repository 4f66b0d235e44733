#!/usr/bin/env bash
# Installs everything moin needs on Debian 12, idempotently: the C++ libraries from Debian's packages and a
# project-local virtual environment (.venv) with the pinned PyTorch wheel (its LibTorch is what we link)
# and the Python references the tests compare against. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(build-essential cmake pkg-config libsentencepiece-dev libfaiss-dev libopenblas-dev nlohmann-json3-dev
              libspdlog-dev libcli11-dev libgtest-dev zlib1g-dev libzstd-dev gnuplot-nox python3-venv
              fortunes fortunes-min dict-foldoc dict-jargon)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

VENV=${MOIN_VENV:-.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.moin-requirements"
if ! cmp -s scripts/requirements.txt "$stamp"; then
  echo "setup: installing Python packages into $VENV (torch wheel and references; first time takes a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r scripts/requirements.txt
  cp scripts/requirements.txt "$stamp"
fi
echo "setup: ok ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'))"
