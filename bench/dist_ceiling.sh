#!/usr/bin/env bash
# The ceiling of 2 ranks x 1 thread on this machine, without any all-reduce: ResNet-20's training step on one thread
# (batch 32), one process alone and then two at once, for cnn.c (`cnn bench --mode train`) and for PyTorch
# (bench/ddp_gloo.py --ranks 1, the DDP benchmark's model and settings). Two processes at once against twice one alone
# says whether the two cores slow each other (memory, caches); the two engines' sums say how far apart one thread of
# each is, which bounds the ratio of `bench/dist_bench.sh` (issue 19) whatever the all-reduce does.
#
# Usage: bench/dist_ceiling.sh [BUILD_DIR] [PYTHON] [OUT_DIR] [ROUNDS]   (defaults: build /tmp/venv-dist/bin/python
#        a new /tmp/dist_ceiling.XXXXXX 2)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
PYTHON=${2:-/tmp/venv-dist/bin/python}
D=${3:-$(mktemp -d /tmp/dist_ceiling.XXXXXX)}
ROUNDS=${4:-2}
mkdir -p "$D"
# as bench/dist_bench.sh: PyTorch at its fastest here
export OMP_WAIT_POLICY=passive OMP_NUM_THREADS=1 OPENBLAS_CORETYPE=SkylakeX OPENBLAS_NUM_THREADS=1 \
  MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=268435456
cnnb() { timeout 600 "$BUILD/cnn" bench --model samples/models/resnet20_28.cnn --mode train --batch 32 --threads 1 \
  --iters 40 --quiet --json "$D/$1.json" >/dev/null 2>&1; }
ptb() { timeout 600 "$PYTHON" bench/ddp_gloo.py --model resnet20 --ranks 1 --threads 1 --batch 32 --steps 40 --warmup 5 \
  --json "$D/$1.json" >/dev/null 2>&1; }
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
  cnnb "c-alone-$r"; cnnb "c-pair-a-$r" & cnnb "c-pair-b-$r"; wait
  ptb "p-alone-$r"; ptb "p-pair-a-$r" & ptb "p-pair-b-$r"; wait
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$D" "$ROUNDS" <<'PY'
import json, sys
d, rounds = sys.argv[1], int(sys.argv[2])
def ips(name):
    j = json.load(open(f"{d}/{name}.json"))
    return j["train"]["images_per_sec"] if "train" in j else j["images_per_sec"]
print("| round | engine | 1 process alone | 2 at once (sum) | 2 at once / 2 x alone |")
print("|---|---|---|---|---|")
pairs = {}
for r in range(1, rounds + 1):
    for e, name in (("c", "cnn.c"), ("p", "PyTorch")):
        a, s = ips(f"{e}-alone-{r}"), ips(f"{e}-pair-a-{r}") + ips(f"{e}-pair-b-{r}")
        pairs.setdefault(e, []).append(s)
        print(f"| {r} | {name} | {a:.1f} | {s:.1f} | {s / (2 * a):.2f} |")
print("cnn.c / PyTorch, two at once: " + ", ".join(f"{c / p:.2f}" for c, p in zip(pairs["c"], pairs["p"])))
PY
echo "raw results: $D"
