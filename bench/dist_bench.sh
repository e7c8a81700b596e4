#!/usr/bin/env bash
# Data-parallel training on this machine: 2 ranks x 1 thread (mpirun) against 1 process x 2 threads and 1 process
# x 1 thread, for cnn.c and for PyTorch DDP (gloo) with the same layout, seed CNN and ResNet-20 on Fashion-MNIST.
#
# cnn.c: `cnn train --epochs 2 --val-split 0 --limit N --metrics-json` (1 process: --batch 2B or B; 2 ranks:
# `mpirun -np 2 ... --batch B`, the same global batch); images/s of the second epoch (the first warms up), which
# counts every step of the epoch: loader, forward, backward, gradient all-reduce, Adam. PyTorch: bench/ddp_gloo.py
# with the same global batch and steps. Scaling efficiency = images/s of 2 ranks x 1 thread / (2 x images/s of 1
# process x 1 thread). Prints a markdown table and writes it, with the raw JSON, to --out-dir.
# --agreement: then one epoch of the seed CNN on all of Fashion-MNIST's training split (54,000 images after the
# validation split), 2 ranks x batch 32 against 1 process x batch 64, and how far apart the two models are
# (bench/dist_agreement.py); beside it, the yardstick of float rounding: the same one-process run with 1 thread
# against 2 (the same arithmetic, sums in another order).
#
# --bucket-mb MB: the gradient bucket size of both engines (cnn train --bucket-mb, DDP's bucket_cap_mb; default
# 25, both engines' default); --cnn-args "...": more flags for cnn.c's runs only (e.g. --workers 1).
#
# Usage: bench/dist_bench.sh [--build-dir build] [--python /tmp/venv-dist/bin/python] [--out-dir DIR]
#                            [--models "seed resnet20"] [--skip-pytorch] [--agreement] [--bucket-mb MB]
#                            [--cnn-args "..."]
# PyTorch is benchmark-only: python3 -m venv /tmp/venv-dist && /tmp/venv-dist/bin/pip install torch numpy
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=build
PYTHON=${PYTHON:-/tmp/venv-dist/bin/python}
OUT_DIR=""
MODELS="seed resnet20"
RUN_PT=1
AGREEMENT=0
BUCKET_MB=25
CNN_ARGS=
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --python) PYTHON=$2; shift 2 ;;
    --out-dir) OUT_DIR=$2; shift 2 ;;
    --models) MODELS=$2; shift 2 ;;
    --skip-pytorch) RUN_PT=0; shift ;;
    --agreement) AGREEMENT=1; shift ;;
    --bucket-mb) BUCKET_MB=$2; shift 2 ;;
    --cnn-args) CNN_ARGS=$2; shift 2 ;;
    *) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
[[ -n "$OUT_DIR" ]] || OUT_DIR=$(mktemp -d /tmp/dist_bench.XXXXXX)
mkdir -p "$OUT_DIR"
CNN="$BUILD_DIR/cnn"
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2)
export OMP_WAIT_POLICY=passive
# PyTorch at its fastest here (bench/RESULTS.md)
export OPENBLAS_CORETYPE=SkylakeX OPENBLAS_NUM_THREADS=1 MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=268435456

declare -A MODEL_FILE=([seed]=samples/models/seed_cnn.cnn [resnet20]=samples/models/resnet20_28.cnn)
declare -A LIMIT=([seed]=12800 [resnet20]=3200) # images per epoch: 200 and 50 global batches of 64
B=32                                              # per rank; 1 process x 2 threads: 64

ips() { "$PYTHON" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.1f" % (d["history"][-1]["images_per_sec"] if "history" in d else d["images_per_sec"]))' "$1"; }

cnn_run() { # model tag threads ranks batch
  local m=$1 tag=$2 t=$3 r=$4 b=$5 j="$OUT_DIR/cnn-$1-$2.json"
  local args=(train --model "${MODEL_FILE[$m]}" --epochs 2 --batch "$b" --val-split 0 --limit "${LIMIT[$m]}" --quiet
              --metrics-json "$j" --out "$OUT_DIR/cnn-$m-$tag.safetensors")
  if [[ $r -gt 1 ]]; then args+=(--bucket-mb "$BUCKET_MB"); fi
  # shellcheck disable=SC2206 # the extra flags are words
  if [[ -n "$CNN_ARGS" ]]; then args+=($CNN_ARGS); fi
  if [[ $r -gt 1 ]]; then OMP_NUM_THREADS=$t timeout 1200 "${MPIRUN[@]}" -x OMP_NUM_THREADS -x OMP_WAIT_POLICY "$CNN" "${args[@]}" > "$OUT_DIR/cnn-$m-$tag.log" 2>&1
  else OMP_NUM_THREADS=$t timeout 1200 "$CNN" "${args[@]}" > "$OUT_DIR/cnn-$m-$tag.log" 2>&1; fi
  ips "$j"
}

pt_run() { # model tag threads ranks batch
  local m=$1 tag=$2 t=$3 r=$4 b=$5 j="$OUT_DIR/pt-$1-$2.json"
  local steps=$(( ${LIMIT[$m]} / 64 ))
  OMP_NUM_THREADS=$t timeout 1200 "$PYTHON" bench/ddp_gloo.py --model "$m" --ranks "$r" --threads "$t" --batch "$b" \
    --steps "$steps" --warmup 10 --bucket-mb "$BUCKET_MB" --json "$j" > "$OUT_DIR/pt-$m-$tag.log" 2>&1
  ips "$j"
}

{
  echo "load before: $(uptime)"
  echo
  echo "| model | engine | 1 proc x 1 thread (b $B) | 1 proc x 2 threads (b $((2 * B))) | 2 ranks x 1 thread (b $B each) | 2 ranks / 1 proc x 2 threads | scaling efficiency |"
  echo "|---|---|---|---|---|---|---|"
} | tee "$OUT_DIR/dist_bench.md"
for m in $MODELS; do
  c11=$(cnn_run "$m" p1t1 1 1 $B); c12=$(cnn_run "$m" p1t2 2 1 $((2 * B))); c21=$(cnn_run "$m" r2t1 1 2 $B)
  echo "| $m | cnn.c (MPI) | $c11 | $c12 | $c21 | $(echo "scale=2; $c21 / $c12" | bc) | $(echo "scale=2; $c21 / (2 * $c11)" | bc) |" | tee -a "$OUT_DIR/dist_bench.md"
  if [[ $RUN_PT -eq 1 ]]; then
    p11=$(pt_run "$m" p1t1 1 1 $B); p12=$(pt_run "$m" p1t2 2 1 $((2 * B))); p21=$(pt_run "$m" r2t1 1 2 $B)
    echo "| $m | PyTorch DDP (gloo) | $p11 | $p12 | $p21 | $(echo "scale=2; $p21 / $p12" | bc) | $(echo "scale=2; $p21 / (2 * $p11)" | bc) |" | tee -a "$OUT_DIR/dist_bench.md"
    echo "| $m | cnn.c / PyTorch, 2 ranks x 1 thread | | | **$(echo "scale=2; $c21 / $p21" | bc)** | | |" | tee -a "$OUT_DIR/dist_bench.md"
  fi
done
if [[ $AGREEMENT -eq 1 ]]; then
  common=(train --model samples/models/seed_cnn.cnn --epochs 1 --seed 1 --quiet --deterministic)
  OMP_NUM_THREADS=2 timeout 1800 "$CNN" "${common[@]}" --batch 64 --out "$OUT_DIR/agree-1x64.safetensors" \
    > "$OUT_DIR/agree-1x64.log" 2>&1
  OMP_NUM_THREADS=1 timeout 1800 "$CNN" "${common[@]}" --batch 64 --out "$OUT_DIR/agree-1x64-t1.safetensors" \
    > "$OUT_DIR/agree-1x64-t1.log" 2>&1
  OMP_NUM_THREADS=1 timeout 1800 "${MPIRUN[@]}" -x OMP_NUM_THREADS -x OMP_WAIT_POLICY "$CNN" "${common[@]}" --batch 32 \
    --out "$OUT_DIR/agree-2x32.safetensors" > "$OUT_DIR/agree-2x32.log" 2>&1
  { echo; echo "one epoch of the seed CNN, 2 ranks x 32 against 1 process x 64, 1 thread each: $("$PYTHON" \
      bench/dist_agreement.py "$OUT_DIR/agree-2x32.safetensors" "$OUT_DIR/agree-1x64-t1.safetensors")"
    echo "the same, 1 process x 64 on 1 thread against 2 threads: $("$PYTHON" bench/dist_agreement.py \
      "$OUT_DIR/agree-1x64-t1.safetensors" "$OUT_DIR/agree-1x64.safetensors")"
    echo "test accuracy: 1 x 64 (2 threads) $(grep -o 'test accuracy: [0-9.]*' "$OUT_DIR/agree-1x64.log"), 1 x 64 (1 thread) $(grep -o 'test accuracy: [0-9.]*' "$OUT_DIR/agree-1x64-t1.log"), 2 x 32 $(grep -o 'test accuracy: [0-9.]*' "$OUT_DIR/agree-2x32.log")"
  } | tee -a "$OUT_DIR/dist_bench.md"
fi
{ echo; echo "load after: $(uptime)"; echo "raw results: $OUT_DIR"; } | tee -a "$OUT_DIR/dist_bench.md"
