#!/usr/bin/env bash
# A bounded soak of `cnn serve`: hey sends b64 PNG requests at concurrency 8 for DURATION while a new model version
# appears every SWAP seconds (the previous one is then unloaded by the server); every SWAP seconds the server's RSS
# and its metrics are sampled. Prints the versions served, the answers by status code, hey's errors and the RSS
# samples (the issue's target: zero failed requests and flat RSS over 10 minutes).
#
#   bench/serve_soak.sh                      # BUILD=build DURATION=600 SWAP=10 CONCURRENCY=8
#
# Needs a build with cnn serve and hey (Debian package).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DURATION=${DURATION:-600}
SWAP=${SWAP:-10}
CONCURRENCY=${CONCURRENCY:-8}
CNN=$BUILD/cnn
. bench/serve_lib.sh
serve_lib_init serve_soak

# the seed CNN after one step on ten made-up images, and a 28x28 PNG request
serve_make_requests 1
mkdir -p "$work/models" "$work/staging"
"$CNN" train --model samples/models/seed_cnn.cnn --data "csv:$work/tiny/list.csv" --epochs 1 --batch 10 --val-split 0 \
  --seed 1 --quiet --out "$work/model.safetensors" >"$work/train.log" 2>&1
mkdir -p "$work/models/1" && cp "$work/model.safetensors" "$work/models/1/"

"$CNN" serve --model-base-path "$work/models" --model-name seed --port 0 --poll-seconds 1 2>"$work/serve.log" &
server=$!
pids+=($server)
port=$(serve_wait_port "$work/serve.log")
url="http://127.0.0.1:$port"

hey -z "${DURATION}s" -c "$CONCURRENCY" -m POST -T application/json -D "$work/png.body" "$url/v1/models/seed:predict" \
  >"$work/hey.log" 2>&1 &
hey_pid=$!
pids+=($hey_pid)

echo "| seconds | version serving | RSS MiB | requests answered 200 | other answers |"
echo "|---|---|---|---|---|"
version=1
start=$(date +%s)
while kill -0 "$hey_pid" 2>/dev/null; do
  sleep "$SWAP"
  elapsed=$(( $(date +%s) - start ))
  rss=$(awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$server/status")
  metrics=$(curl -s --max-time 5 "$url/monitoring/prometheus/metrics" || true)
  ok=$(printf '%s\n' "$metrics" | awk '/^cnn_serve_requests_total\{.*api="predict",code="200"\}/ { n += $2 } END { print n + 0 }')
  other=$(printf '%s\n' "$metrics" | awk '/^cnn_serve_requests_total\{.*api="predict",code="[^2]/ { n += $2 } END { print n + 0 }')
  serving=$(curl -s --max-time 5 "$url/v2/models/seed" | python3 -c 'import json, sys; print(",".join(json.load(sys.stdin)["versions"]))' 2>/dev/null || echo "?")
  echo "| $elapsed | $serving | $rss | $ok | $other |"
  # the next version appears whole (written beside, then moved in); versions two behind are removed from disk
  version=$((version + 1))
  mkdir -p "$work/staging/$version" && cp "$work/model.safetensors" "$work/staging/$version/"
  mv "$work/staging/$version" "$work/models/$version"
  rm -rf "$work/models/$((version - 3))"
done
wait "$hey_pid" || true
echo
echo "hey: $(grep -E 'Requests/sec' "$work/hey.log" | tr -s ' \t' ' ')"
sed -n '/Status code distribution:/,$p' "$work/hey.log"
curl -s --max-time 5 "$url/monitoring/prometheus/metrics" | grep -E '^cnn_serve_model_loads_total|^process_resident'
echo "versions unloaded: $(grep -c 'unloaded$' "$work/serve.log" || true)"
