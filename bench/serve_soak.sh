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
command -v hey >/dev/null || { echo "serve_soak: hey is missing: apt-get install hey" >&2; exit 1; }
[ -x "$CNN" ] || { echo "serve_soak: $CNN is missing: build first" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# the seed CNN after one step on ten made-up images, and a 28x28 PNG request
mkdir -p "$work/tiny" "$work/models" "$work/staging"
python3 - "$work" <<'EOF'
import base64, json, struct, sys, zlib
work = sys.argv[1]
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
def png_of(px):
    raw = b"".join(b"\x00" + bytes(row) for row in px)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", len(px[0]), len(px), 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
with open(f"{work}/tiny/list.csv", "w") as f:
    for i in range(10):
        open(f"{work}/tiny/{i}.png", "wb").write(png_of([[(x * (i + 3) + y * 7) % 256 for x in range(28)] for y in range(28)]))
        f.write(f"{i}.png,{i}\n")
px = [[(x * 9 + y * 5) % 256 for x in range(28)] for y in range(28)]
json.dump({"instances": [{"b64": base64.b64encode(png_of(px)).decode()}]}, open(f"{work}/png.body", "w"))
EOF
"$CNN" train --model samples/models/seed_cnn.cnn --data "csv:$work/tiny/list.csv" --epochs 1 --batch 10 --val-split 0 \
  --seed 1 --quiet --out "$work/model.safetensors" >"$work/train.log" 2>&1
mkdir -p "$work/models/1" && cp "$work/model.safetensors" "$work/models/1/"

"$CNN" serve --model-base-path "$work/models" --model-name seed --port 0 --poll-seconds 1 2>"$work/serve.log" &
server=$!
pids+=($server)
port=""
for _ in $(seq 1 300); do
  port=$(sed -n 's/.*listening on 127.0.0.1 port \([0-9]*\).*/\1/p' "$work/serve.log")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { cat "$work/serve.log" >&2; exit 1; }
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
