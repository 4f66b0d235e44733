#!/usr/bin/env bash
# Downloads the .deb files of every non-torch dependency of moin into DIR, for an offline (air-gapped)
# build with scripts/build-cuda.sh --deps DIR. Run on a connected Debian 12 (bookworm, amd64) machine; no
# root needed (apt-get download). Usage: scripts/bundle-deps.sh DIR
#
# The package list is resolved by apt itself, as if nothing were installed (an empty dpkg status), so it is
# complete; packages the GPU host already has because it compiles at all (the closure of build-essential:
# libc6, libstdc++6, binutils, ...) are left out unless named below. DIR also gets packages.txt (name and
# version of each .deb) and SHA256SUMS.
set -euo pipefail
DIR=${1:?usage: scripts/bundle-deps.sh DIR}

# What moin links or includes (faiss's BLAS/LAPACK: OpenBLAS, pthread flavour, linked directly).
WANTED=(libfaiss-dev libopenblas-pthread-dev libopenblas0-pthread libgfortran5 libgomp1 libquadmath0
        libsentencepiece-dev libsentencepiece0 libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 libcli11-dev
        nlohmann-json3-dev libgtest-dev googletest libzstd-dev libzstd1 zlib1g-dev zlib1g)

. /etc/os-release
if [ "${VERSION_CODENAME:-}" != bookworm ] || [ "$(dpkg --print-architecture)" != amd64 ]; then
  echo "bundle-deps: expects Debian 12 (bookworm) amd64, this is ${PRETTY_NAME:-unknown} $(dpkg --print-architecture)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
: > "$work/status"
# The packages apt would install on an empty system, in its own resolution (alternatives, virtuals).
closure() {
  apt-get install -s -qq --no-install-recommends -o Dir::State::status="$work/status" -o Debug::NoLocking=1 "$@" |
    awk '$1 == "Inst" {print $2}' | sort -u
}
closure "${WANTED[@]}" > "$work/all"
closure build-essential > "$work/base"
printf '%s\n' "${WANTED[@]}" | sort -u > "$work/wanted"
# All of the closure, minus the build-essential base, plus every package named explicitly.
{ comm -23 "$work/all" "$work/base"; cat "$work/wanted"; } | sort -u > "$work/list"
if ! grep -qx libfaiss-dev "$work/list"; then
  echo "bundle-deps: apt could not resolve the packages (apt-get update first?)" >&2
  exit 1
fi

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
echo "bundle-deps: downloading $(wc -l < "$work/list") packages into $DIR"
# The candidate version of each, so packages.txt records exactly what was fetched.
mapfile -t pkgs < "$work/list"
# (apt warns that it downloads unsandboxed when DIR is not writable by _apt: harmless.)
(cd "$DIR" && apt-get download -qq "${pkgs[@]}")
for p in "${pkgs[@]}"; do
  ls "$DIR/${p}"_*.deb > /dev/null 2>&1 || { echo "bundle-deps: $p was not downloaded" >&2; exit 1; }
done
(cd "$DIR" && for f in *.deb; do dpkg-deb --show --showformat='${Package} ${Version}\n' "$f"; done) > "$DIR/packages.txt"
(cd "$DIR" && sha256sum *.deb > SHA256SUMS)
echo "bundle-deps: ok: $(ls "$DIR"/*.deb | wc -l) .deb files, $(du -sh "$DIR" | cut -f1); copy $DIR to the GPU host and run"
echo "  scripts/build-cuda.sh --deps $DIR"
