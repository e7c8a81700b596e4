#!/usr/bin/env bash
# Quantization: float against int8 (and dynamic, fp16) for the seed CNN and ResNet-20 on Fashion-MNIST, beside TFLite
# (the seed CNN in Keras, converted with full-integer quantization on as many calibration images, run by its
# interpreter with 2 threads), in one run: test accuracy, file size, batch-1 latency and batch-64 images/s
# (`cnn bench --mode infer`), and cnn-lite alone (`cnn_lite_bench`: batch 1, its portable C kernels).
#
# The speeds are measured in ROUNDS interleaved rounds (every model at both batch sizes once per round, TFLite's two
# models too), and the ratios (int8 against our float, ours against TFLite's) are taken within each round, then their
# median and range reported (bench/quant_summary.py): on a shared machine the load drifts between rounds more than
# within one.
#
#   bench/quant_bench.sh                      # BUILD=build EPOCHS=2 R20_EPOCHS=1 CALIB=1000 PYTHON=python3
#   PYTHON=/path/to/venv/bin/python BUILD=build-serve bench/quant_bench.sh
#   SEED_MODEL=seed.safetensors R20_MODEL=r20.safetensors bench/quant_bench.sh   # models trained already
#   THREADS=1 bench/quant_bench.sh            # OMP_NUM_THREADS for cnn (and TFLite's --threads): 1 is steadier on a
#                                             # shared 2-core machine
#   ROUNDS=5 KEEP=DIR bench/quant_bench.sh    # interleaved speed rounds (default 5); KEEP: where to copy the raw
#                                             # measurements (models.txt, speed.txt)
#   MODES="float int8" bench/quant_bench.sh   # the modes to quantize to (default: float int8 dynamic fp16)
#   EXACT=1 bench/quant_bench.sh              # the int8 models also with cnn-lite's requantization (cnn bench
#                                             # --int8-requant exact: bit for bit cnn-lite's, libcnn's default), in the
#                                             # same rounds; the "int8" rows are always the fused path (--int8-requant
#                                             # fused), so run with EXACT=1 to time the default
#
# Needs a build (cnn, cnn_lite_bench) and Fashion-MNIST (Debian dataset-fashion-mnist); for the TFLite row a python
# with tensorflow-cpu (bench-only: `V/bin/pip install tensorflow-cpu`; without it the row is left out).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
EPOCHS=${EPOCHS:-2}
R20_EPOCHS=${R20_EPOCHS:-1}
CALIB=${CALIB:-1000}
ROUNDS=${ROUNDS:-5}
MODES=${MODES:-float int8 dynamic fp16}
EXACT=${EXACT:-0}
PYTHON=${PYTHON:-python3}
CORES=$(nproc --all)
THREADS=${THREADS:-$CORES}
export OMP_NUM_THREADS=$THREADS
CNN=$BUILD/cnn
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -x "$CNN" ] && [ -x "$BUILD/cnn_lite_bench" ] || { echo "quant_bench: build cnn and cnn_lite_bench first" >&2; exit 1; }

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
seed=${SEED_MODEL:-}
if [ -z "$seed" ]; then
  seed=$work/seed.safetensors
  "$CNN" train --model samples/models/seed_cnn.cnn --data fashion-mnist --epochs "$EPOCHS" --batch 64 --seed 1 --quiet \
    --out "$seed" >"$work/train-seed.log" 2>&1
fi
r20=${R20_MODEL:-}
if [ -z "$r20" ] && [ "$R20_EPOCHS" -gt 0 ]; then
  r20=$work/r20.safetensors
  "$CNN" train --model samples/models/resnet20_28.cnn --data fashion-mnist --epochs "$R20_EPOCHS" --batch 64 --seed 1 \
    --quiet --out "$r20" >"$work/train-r20.log" 2>&1
fi


acc() { "$CNN" eval --model "$1" 2>/dev/null | sed -n 's/.*loss: [0-9.]*  accuracy: \([0-9.]*\).*/\1/p' | head -1; }
bench() { # FILE BATCH [REQUANT] -> "median_ms images_per_s"
  "$CNN" bench --model "$1" --mode infer --batch "$2" --device cpu --int8-requant "${3:-fused}" --quiet \
    --json "$work/b.json" >/dev/null 2>&1
  python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))["infer"]; print("%.4f %.0f" % (d["latency_ms_median"], d["images_per_sec"]))' "$work/b.json"
}

# the models, quantized: accuracy, size and cnn-lite's batch-1 latency (once)
: >"$work/models.txt"
for name in seed r20; do
  model=$([ "$name" = seed ] && echo "$seed" || echo "$r20")
  [ -n "$model" ] || continue
  float_bytes=$(stat -c %s "$model")
  for mode in $MODES; do
    f=$work/$name.$mode.safetensors
    if [ "$mode" = float ]; then
      f=$model
    else
      "$CNN" quantize --model "$model" --out "$f" --mode "$mode" --calib-samples "$CALIB" --quiet
    fi
    lite="-"
    if [ "$mode" != float ]; then
      lite=$("$BUILD/cnn_lite_bench" "$f" 1 200 | sed -n 's/.*: \([0-9.]*\) ms median.*/\1/p')
    fi
    bytes=$(stat -c %s "$f")
    echo "$name $mode $f $(acc "$f") $bytes $float_bytes $lite" >>"$work/models.txt"
  done
done

tflite=0
if "$PYTHON" -c 'import tensorflow' 2>/dev/null; then
  mkdir -p "$work/tfl"
  "$PYTHON" bench/quant_tflite.py --epochs "$EPOCHS" --calib "$CALIB" --threads "$THREADS" --out "$work/tflite.json" \
    --keep "$work/tfl" >"$work/tflite.log" 2>&1 ||
    { tail -5 "$work/tflite.log" >&2; exit 1; }
  tflite=1
else
  echo "quant_bench: $PYTHON has no tensorflow: no TFLite rows" >&2
fi

# the speeds, in interleaved rounds
: >"$work/speed.txt"
for round in $(seq "$ROUNDS"); do
  while read -r name mode f _; do
    read -r b1 _ <<<"$(bench "$f" 1)"
    read -r _ b64 <<<"$(bench "$f" 64)"
    echo "$round $name $mode $b1 $b64" >>"$work/speed.txt"
    if [ "$mode" = int8 ] && [ "$EXACT" = 1 ]; then
      read -r b1 _ <<<"$(bench "$f" 1 exact)"
      read -r _ b64 <<<"$(bench "$f" 64 exact)"
      echo "$round $name int8-exact $b1 $b64" >>"$work/speed.txt"
    fi
  done <"$work/models.txt"
  if [ "$tflite" = 1 ]; then
    for mode in float int8; do
      t=$("$PYTHON" bench/quant_tflite.py --latency "$work/tfl/$mode.tflite" --threads "$THREADS" 2>/dev/null | tail -1)
      echo "$round tflite $mode $t -" >>"$work/speed.txt"
    done
  fi
  echo "round $round of $ROUNDS done, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done
[ -z "${KEEP:-}" ] || cp "$work/models.txt" "$work/speed.txt" "$KEEP"/ 2>/dev/null || true

python3 bench/quant_summary.py "$work/models.txt" "$work/speed.txt" "$work/tflite.json"
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "machine: $CORES cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); $THREADS thread(s)"
echo "size of libcnn-lite.a (-Os): $(size "$BUILD/libcnn-lite.a" | awk 'NR > 1 { t += $4 } END { print t }') bytes"
