#!/usr/bin/env bash
# Quantization: float against int8 (and dynamic, fp16) for the seed CNN and ResNet-20 on Fashion-MNIST, beside TFLite
# (the seed CNN in Keras, converted with full-integer quantization on as many calibration images, run by its
# interpreter with 2 threads), in one run: test accuracy, file size, batch-1 latency and batch-64 images/s
# (`cnn bench --mode infer`), and cnn-lite alone (`cnn_lite_bench`: batch 1, its portable C kernels).
#
#   bench/quant_bench.sh                      # BUILD=build EPOCHS=2 R20_EPOCHS=1 CALIB=1000 PYTHON=python3
#   PYTHON=/path/to/venv/bin/python BUILD=build-serve bench/quant_bench.sh
#   SEED_MODEL=seed.safetensors R20_MODEL=r20.safetensors bench/quant_bench.sh   # models trained already
#   THREADS=1 bench/quant_bench.sh            # OMP_NUM_THREADS for cnn (and TFLite's --threads): 1 is steadier on a
#                                             # shared 2-core machine
#
# Needs a build (cnn, cnn_lite_bench) and Fashion-MNIST (Debian dataset-fashion-mnist); for the TFLite row a python
# with tensorflow-cpu (bench-only: `V/bin/pip install tensorflow-cpu`; without it the row is left out).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
EPOCHS=${EPOCHS:-2}
R20_EPOCHS=${R20_EPOCHS:-1}
CALIB=${CALIB:-1000}
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

acc() { "$CNN" eval --model "$1" 2>/dev/null | sed -n 's/.*accuracy: \([0-9.]*\).*/\1/p'; }
bench() { # FILE BATCH -> "median_ms images_per_s"
  "$CNN" bench --model "$1" --mode infer --batch "$2" --device cpu --quiet --json "$work/b.json" >/dev/null 2>&1
  python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))["infer"]; print("%.4f %.0f" % (d["latency_ms_median"], d["images_per_sec"]))' "$work/b.json"
}

echo
echo "| model | mode | test accuracy | file bytes | x float | batch-1 ms | batch-64 images/s | cnn-lite batch-1 ms |"
echo "|---|---|---|---|---|---|---|---|"
for name in seed r20; do
  model=$([ "$name" = seed ] && echo "$seed" || echo "$r20")
  [ -n "$model" ] || continue
  float_bytes=$(stat -c %s "$model")
  for mode in float int8 dynamic fp16; do
    f=$work/$name.$mode.safetensors
    if [ "$mode" = float ]; then
      f=$model
    else
      "$CNN" quantize --model "$model" --out "$f" --mode "$mode" --calib-samples "$CALIB" --quiet
    fi
    read -r b1 _ <<<"$(bench "$f" 1)"
    read -r _ b64 <<<"$(bench "$f" 64)"
    lite="-"
    if [ "$mode" != float ]; then
      lite=$("$BUILD/cnn_lite_bench" "$f" 1 200 | sed -n 's/.*: \([0-9.]*\) ms median.*/\1/p')
    fi
    bytes=$(stat -c %s "$f")
    printf '| %s | %s | %s | %s | %.2f | %s | %s | %s |\n' "$([ "$name" = seed ] && echo "seed CNN" || echo "ResNet-20")" \
      "$mode" "$(acc "$f")" "$bytes" "$(python3 -c "print($bytes / $float_bytes)")" "$b1" "$b64" "$lite"
  done
done

if "$PYTHON" -c 'import tensorflow' 2>/dev/null; then
  "$PYTHON" bench/quant_tflite.py --epochs "$EPOCHS" --calib "$CALIB" --threads "$THREADS" --out "$work/tflite.json" \
    >"$work/tflite.log" 2>&1 ||
    { tail -5 "$work/tflite.log" >&2; exit 1; }
  python3 - "$work/tflite.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
for mode in ("float", "int8"):
    print("| seed CNN, TFLite %s (Keras %.4f) | %s | %.4f | %d | %.2f | %.4f | - | - |" % (
        d["tensorflow"], d["keras_accuracy"], mode, d[mode + "_accuracy"], d[mode + "_bytes"],
        d[mode + "_bytes"] / d["float_bytes"], d[mode + "_batch1_ms"]))
EOF
else
  echo "quant_bench: $PYTHON has no tensorflow: no TFLite rows" >&2
fi
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "machine: $CORES cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); $THREADS thread(s)"
echo "size of libcnn-lite.a (-Os): $(size "$BUILD/libcnn-lite.a" | awk 'NR > 1 { t += $4 } END { print t }') bytes"
