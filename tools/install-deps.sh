#!/usr/bin/env bash
# Installs the Debian packages cnn.c builds, tests and trains with, when they are missing.
#   tools/install-deps.sh            build + test + Fashion-MNIST dependencies (libjpeg62-turbo-dev: optional,
#                                    JPEG decoding with libjpeg-turbo, 1.4x to 2x as fast as stb_image;
#                                    libmicrohttpd-dev: optional, the model server, cnn serve;
#                                    gcc-multilib: optional, the tests' 32-bit build of cnn-lite;
#                                    libopenmpi-dev, openmpi-bin: optional, data-parallel training, mpirun)
set -euo pipefail
packages=(build-essential cmake pkg-config zlib1g-dev libdnnl-dev libstb-dev libjpeg62-turbo-dev libmicrohttpd-dev gcc-multilib libopenmpi-dev openmpi-bin libgtest-dev dataset-fashion-mnist)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all of ${packages[*]} are installed"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: not root and no sudo: install ${missing[*]} yourself" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
