#!/usr/bin/env bash
# The data loader beside torchvision, in one run: decode + resize to 144x144 + random 128x128 crop + random
# horizontal flip + normalization + batches of 64, images/s per worker, on the same folder of JPEGs and PNGs,
# at equal worker counts, each run repeated and the best kept (the machine is shared). Writes JSON lines to
# $OUT (default /tmp/loader-bench/results.jsonl) and a table on stdout.
#
#   bench/loader_bench.sh BUILD_DIR [PYTHON]
#
# BUILD_DIR holds cnn_loader_bench (cmake --build BUILD_DIR --target cnn_loader_bench); PYTHON has torch,
# torchvision, Pillow and numpy (a venv: python -m venv /tmp/venv && /tmp/venv/bin/pip install torch torchvision
# numpy pillow). Benchmark only: none of them is a dependency of the engine or its tests.
set -euo pipefail
build=${1:?usage: bench/loader_bench.sh BUILD_DIR [PYTHON]}
py=${2:-python3}
here=$(cd "$(dirname "$0")" && pwd)
data=${DATA:-/tmp/loader-bench/images}
out=${OUT:-/tmp/loader-bench/results.jsonl}
images=${IMAGES:-2000}
repeats=${REPEATS:-3}
workers=${WORKERS:-"1 2"}
mkdir -p "$(dirname "$out")"
if [ ! -d "$data" ]; then
  echo "loader_bench: writing $images test images to $data"
  "$py" "$here/make_image_folder.py" --out "$data" --images "$images"
fi
# JPEG-only and PNG-only views of the same files
for kind in jpg png; do
  mkdir -p "$data-$kind/all"
  find "$data" -name "*.$kind" -exec ln -sf {} "$data-$kind/all/" \;
done
: > "$out"
for set in "$data" "$data-jpg" "$data-png"; do
  for w in $workers; do
    for r in $(seq "$repeats"); do
      "$build/cnn_loader_bench" --data "folder:$set" --workers "$w" --label "cnn.c $(basename "$set")" >> "$out"
      "$py" "$here/torchvision_loader.py" --data "$set" --workers "$w" |
        sed "s/\"impl\": \"torchvision\"/\"impl\": \"torchvision $(basename "$set")\"/" >> "$out"
    done
  done
done
"$py" - "$out" <<'EOF'
import json, sys
best = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    key = (r["impl"].split(" ", 1)[1], r["workers"], r["impl"].split(" ", 1)[0])
    best[key] = max(best.get(key, 0), r["images_per_sec"])
print("| images | workers | cnn.c images/s | torchvision images/s | cnn.c per worker | torchvision per worker | ratio |")
print("|---|---|---|---|---|---|---|")
for (s, w, impl) in sorted(k for k in best if k[2] == "cnn.c"):
    c, t = best[(s, w, "cnn.c")], best.get((s, w, "torchvision"), float("nan"))
    print(f"| {s} | {w} | {c:,.0f} | {t:,.0f} | {c / w:,.0f} | {t / w:,.0f} | {c / t:.2f}x |")
EOF
