#!/usr/bin/env bash
# Prepares what bench/gpu_check.sh needs to run on a GPU machine without compiling there (GPU_CHECK_PREBUILT=DIR):
# builds the committed HEAD with -DCNN_CUDA=ON in a temporary worktree (or, with GPU_PREPARE_SOURCE=tree, the
# working tree as it is, uncommitted changes included, in a temporary build folder), and puts into DIR
#   bin/cnn, bin/test_cuda, bin/test_ops   the program, the CUDA suite and the op conformance table
#   lib.tar.xz                   the shared libraries they need besides libc and CUDA's own (oneDNN, stb, OpenMP,
#                                OpenCL's loader, the CUDA runtime); cuDNN and cuBLAS are the GPU machine's
#   fashion-mnist/               the dataset's four .gz files, when installed here
# Run it on a machine with the CUDA toolkit and cuDNN (a GPU is not needed). DIR should be ignored by git
# (e.g. listed in .git/info/exclude) so that it travels with the working tree only when asked to.
#
# Usage: bench/gpu_prepare.sh [DIR]      (default: .gpu in the repository root)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DIR=$(realpath -m "${1:-.gpu}")
WT=${GPU_PREPARE_WORKTREE:-/tmp/cnn_gpu_worktree}
JOBS=$(nproc 2>/dev/null || echo 2)

rm -rf "$WT"
git worktree prune
if [[ "${GPU_PREPARE_SOURCE:-head}" == tree ]]; then
  SRC=$ROOT
  WHAT="the working tree at $(git rev-parse --short HEAD) with its uncommitted changes"
  mkdir -p "$WT"
else
  SRC=$WT
  WHAT="commit $(git rev-parse --short HEAD)"
  git worktree add --detach -f "$WT" HEAD >/dev/null
fi
cmake -S "$SRC" -B "$WT/build-gpu" -DCMAKE_BUILD_TYPE=Release -DCNN_CUDA=ON >"$WT/configure.log"
cmake --build "$WT/build-gpu" -j"$JOBS" --target cnn test_cuda test_ops >"$WT/build.log"

rm -rf "$DIR"
mkdir -p "$DIR/bin"
cp "$WT/build-gpu/cnn" "$WT/build-gpu/tests/test_cuda" "$WT/build-gpu/tests/test_ops" "$DIR/bin/"

LIBS=$(mktemp -d)
# every library the two programs load, minus the C runtime (the GPU machine has its own, newer) and CUDA's big
# libraries (cuDNN, cuBLAS: the GPU machine's own, matching its driver)
ldd "$DIR/bin/cnn" "$DIR/bin/test_cuda" | awk '/=> \// {print $1, $3}' | sort -u |
  grep -Ev '^(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|libz|ld-linux)[.-]|^libcudnn|^libcublas' |
  while read -r name path; do cp -L "$path" "$LIBS/$name"; done
tar -C "$LIBS" -cJf "$DIR/lib.tar.xz" .
rm -rf "$LIBS"

if [[ -d /usr/share/datasets/fashion-mnist ]]; then
  mkdir -p "$DIR/fashion-mnist"
  cp /usr/share/datasets/fashion-mnist/*.gz "$DIR/fashion-mnist/"
fi
if [[ "$SRC" == "$WT" ]]; then git worktree remove --force "$WT"; else rm -rf "$WT"; fi
echo "$WHAT" >"$DIR/SOURCE"
echo "prepared $DIR ($(du -sh "$DIR" | cut -f1)) from $WHAT: run"
echo "  GPU_CHECK_PREBUILT=${1:-.gpu} bench/gpu_check.sh"
