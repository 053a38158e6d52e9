#!/usr/bin/env bash
# Installs the Debian packages supair_dist needs to build, test, make data and run
# the cluster tests. Idempotent: does nothing (not even apt-get update) when every
# package is already installed. Runs apt-get as root, or through sudo otherwise.
#
#   scripts/install-deps.sh            build + test + data + analysis packages
#   scripts/install-deps.sh --check    exit 0 if all present, 1 otherwise (no install)
set -euo pipefail

PACKAGES=(
  # build
  build-essential pkg-config make
  libopenmpi-dev openmpi-bin
  libopenblas-openmp-dev
  libhdf5-dev hdf5-tools
  libcunit1-dev zlib1g-dev
  libsndfile1-dev libsamplerate0-dev
  # data
  dataset-fashion-mnist sox libsox-fmt-all festival festvox-kallpc16k espeak-ng
  # analysis and tests
  python3 python3-h5py python3-numpy python3-matplotlib
  slurm-wlm munge
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${1:-}" = "--check" ]; then
  [ ${#missing[@]} -eq 0 ] && exit 0
  echo "missing packages: ${missing[*]}" >&2
  exit 1
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
