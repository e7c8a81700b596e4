#!/usr/bin/env bash
# Serving throughput and latency: `cnn serve` beside a Python server (PyTorch behind FastAPI/uvicorn,
# bench/serve_python.py) on the same machine, in the same run, both serving the same model file through TensorFlow
# Serving's :predict: the seed CNN and ResNet-20 (28x28x1). hey (Debian package `hey`) sends requests for DURATION
# at concurrency 1, 8 and 64 with one image each, as JSON float instances and as base64 PNG instances, and then
# requests of BATCH JSON images each at concurrency 2 (each request one forward pass of BATCH: what `cnn bench
# --mode infer --batch BATCH` measures without the server). Prints a markdown table (images/s of 200 answers, p50 and
# p99 latency, non-200 answers and errors) and, for reference, `cnn bench --mode infer` at batch 1 and BATCH.
#
#   bench/serve_bench.sh                       # BUILD=build DURATION=10s PYTHON=python3 MODELS="seed resnet20"
#   PYTHON=/path/to/venv/bin/python BUILD=build-serve bench/serve_bench.sh
#
# Needs: a build with cnn serve (libmicrohttpd), hey, and for the Python side a python with torch, fastapi, uvicorn,
# numpy and pillow (bench-only dependencies, e.g. `python3 -m venv V && V/bin/pip install torch fastapi uvicorn numpy
# pillow`, then PYTHON=V/bin/python; without them the Python rows are left out). Each model is its definition after
# one training step on ten made-up images (speed does not depend on the weights; both servers load the same file).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DURATION=${DURATION:-10s}
PYTHON=${PYTHON:-python3}
CONCURRENCY=${CONCURRENCY:-"1 8 64"}
MODELS=${MODELS:-"seed resnet20"}
BATCH=${BATCH:-32}
CNN=$BUILD/cnn
. bench/serve_lib.sh
serve_lib_init serve_bench
serve_make_requests "$BATCH"

definition() { case "$1" in seed) echo samples/models/seed_cnn.cnn ;; resnet20) echo samples/models/resnet20_28.cnn ;;
  *) echo "serve_bench: unknown model $1 (seed, resnet20)" >&2; exit 2 ;; esac; }

# ---- the runs ----
echo "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| model | server | input | images/request | concurrency | images/s (200 answers) | p50 ms | p99 ms | non-200 | errors |"
echo "|---|---|---|---|---|---|---|---|---|---|"
run() { # MODEL NAME PORT BODY IMAGES_PER_REQUEST CONCURRENCY
  local log="$work/hey-$1-${2// /_}-$4-$6.log"
  hey -z "$DURATION" -c "$6" -m POST -T application/json -D "$work/$4.body" \
    "http://127.0.0.1:$3/v1/models/m:predict" >"$log" 2>&1 || true
  # hey's Requests/sec counts failed requests too: the rate here is of 200 answers over the run's time
  awk -v model="$1" -v name="$2" -v input="$4" -v ipr="$5" -v c="$6" '
    /^  Total:/ { total = $2 }
    /50% in/ { p50 = sprintf("%.2f", $3 * 1000) } /99% in/ { p99 = sprintf("%.2f", $3 * 1000) }
    /^ *\[[0-9]+\][ \t]+[0-9]+ responses/ { code = $1; gsub(/[\[\]]/, "", code); if (code == 200) ok += $2; else bad += $2 }
    /Error distribution:/ { inerr = 1; next }
    inerr && /^ *\[[0-9]+\]/ { n = $1; gsub(/[\[\]]/, "", n); err += n }
    END { printf "| %s | %s | %s | %d | %d | %.0f | %s | %s | %d | %d |\n", model, name, input == "batch" ? "JSON floats" : (input == "png" ? "b64 PNG" : "JSON floats"),
                 ipr, c, (total > 0 ? ok * ipr / total : 0), p50 == "" ? "n/a" : p50, p99 == "" ? "n/a" : p99, bad, err }' "$log"
}

bench_lines=""
for model in $MODELS; do
  mkdir -p "$work/$model/1"
  "$CNN" train --model "$(definition "$model")" --data "csv:$work/tiny/list.csv" --epochs 1 --batch 10 --val-split 0 \
    --seed 1 --quiet --out "$work/$model/1/model.safetensors" >"$work/train-$model.log" 2>&1 ||
    { cat "$work/train-$model.log" >&2; exit 1; }
  # the library alone, before any server runs: the reference for images/s
  for b in 1 "$BATCH"; do
    "$CNN" bench --model "$work/$model/1/model.safetensors" --mode infer --batch "$b" --device cpu --quiet \
      --json "$work/bench-$model-$b.json" >/dev/null 2>&1
    bench_lines+=$(python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print("%s: cnn bench --mode infer --batch %s: %.0f images/s, %.3f ms median" % (sys.argv[3], sys.argv[2], d["infer"]["images_per_sec"], d["infer"]["latency_ms_median"]))' \
      "$work/bench-$model-$b.json" "$b" "$model")$'\n'
  done

  "$CNN" serve --model-base-path "$work/$model" --model-name m --port 0 --max-batch-size "$BATCH" --quiet \
    2>"$work/cnn-$model.log" &
  pids+=($!)
  cnn_port=$(serve_wait_port "$work/cnn-$model.log")

  py_port=""
  if "$PYTHON" -c 'import torch, fastapi, uvicorn, numpy, PIL' 2>/dev/null; then
    py_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$PYTHON" bench/serve_python.py --model "$work/$model/1/model.safetensors" --arch "$model" --name m \
      --port "$py_port" --threads "$(nproc)" 2>"$work/py-$model.log" &
    pids+=($!)
    for _ in $(seq 1 300); do
      curl -s -o /dev/null -X POST -d @"$work/json.body" "http://127.0.0.1:$py_port/v1/models/m:predict" && break
      sleep 0.2
    done
  else
    echo "serve_bench: $PYTHON lacks torch/fastapi/uvicorn/numpy/pillow: no Python rows" >&2
  fi

  # both servers give the same probabilities (same weights, same preprocessing)
  for body in json png batch; do
    a=$(curl -s -X POST -d @"$work/$body.body" "http://127.0.0.1:$cnn_port/v1/models/m:predict")
    if [ -n "$py_port" ]; then
      b=$(curl -s -X POST -d @"$work/$body.body" "http://127.0.0.1:$py_port/v1/models/m:predict")
      python3 -c 'import json, sys; a, b = (json.loads(x)["predictions"] for x in sys.argv[1:3]); print("serve_bench: %s %s: largest difference between the servers'"'"' probabilities: %.2g" % (sys.argv[4], sys.argv[3], max(abs(x - y) for r, s in zip(a, b) for x, y in zip(r, s))))' "$a" "$b" "$body" "$model" >&2
    fi
  done

  for body in json png; do
    for c in $CONCURRENCY; do
      run "$model" "cnn serve" "$cnn_port" "$body" 1 "$c"
      [ -n "$py_port" ] && run "$model" "python (torch, fastapi, uvicorn)" "$py_port" "$body" 1 "$c"
    done
  done
  run "$model" "cnn serve" "$cnn_port" batch "$BATCH" 2
  [ -n "$py_port" ] && run "$model" "python (torch, fastapi, uvicorn)" "$py_port" batch "$BATCH" 2
  # the batch sizes the server ran, over all the runs of this model
  curl -s "http://127.0.0.1:$cnn_port/monitoring/prometheus/metrics" | awk -v model="$model" '
    /^cnn_serve_batch_size_sum/ { s = $2 } /^cnn_serve_batch_size_count/ { n = $2 }
    END { if (n > 0) printf "%s: cnn serve ran %d forward passes of %.2f images on average\n", model, n, s / n > "/dev/stderr" }'
  serve_stop_servers
done

echo
printf '%s' "$bench_lines"
echo "load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); client (hey) on the same cores"
