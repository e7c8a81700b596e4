#!/usr/bin/env bash
# Training-speed comparison, cnn.c vs PyTorch, seed CNN on Fashion-MNIST.
#
# Runs both sides one after the other, in the same run on the same machine, with
# the same threads (2 by default), data (all 60,000 training images: cnn gets
# --val-split 0; the 10,000 test images), batch (64), optimizer (Adam, lr 1e-3),
# epochs and seed, then prints a table (median images/s over the epochs, final
# test accuracy, peak RSS) and the cnn/pytorch images/s ratio, and writes it as
# JSON and markdown.
#
# Usage: bench/train_speed.sh [--epochs E] [--seed S] [--build-dir DIR] [--out-dir DIR]
#                             [--threads T] [--python PY] [--skip-cnn|--skip-pytorch]
#                             [--pytorch-nchw] [--pytorch-default-malloc]
# --out-dir (default: a fresh mktemp dir) receives train_speed.json, train_speed.md and
# the per-side cnn.json, pytorch.json, logs and seed.safetensors.
# PyTorch runs in its fastest measured setup here: channels_last, and glibc malloc told to
# keep freed buffers (MALLOC_MMAP/TRIM_THRESHOLD_; else every step mmaps+faults ~2000
# pages, -25%). --pytorch-nchw / --pytorch-default-malloc turn those off.
#
# PyTorch and numpy are only needed by this benchmark, never by the engine:
#   pip install torch numpy   (or the CPU wheel: --index-url https://download.pytorch.org/whl/cpu)
set -euo pipefail

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }

EPOCHS=1
SEED=1
BUILD_DIR=build
OUT_DIR=""
THREADS=2
PYTHON=${PYTHON:-python3}
CHANNELS_LAST=1
MALLOC_TUNING=1
RUN_CNN=1
RUN_PT=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --epochs) EPOCHS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --out-dir) OUT_DIR=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --python) PYTHON=$2; shift 2 ;;
    --pytorch-nchw) CHANNELS_LAST=0; shift ;;
    --pytorch-default-malloc) MALLOC_TUNING=0; shift ;;
    --skip-cnn) RUN_CNN=0; shift ;;
    --skip-pytorch) RUN_PT=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "train_speed.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

die() { echo "train_speed.sh: error: $*" >&2; exit 1; }

[[ "$EPOCHS" =~ ^[1-9][0-9]*$ ]] || die "--epochs must be a positive integer (got '$EPOCHS')"
[[ "$SEED" =~ ^[0-9]+$ ]] || die "--seed must be a non-negative integer (got '$SEED')"
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || die "--threads must be a positive integer (got '$THREADS')"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

CNN_BIN="$BUILD_DIR/cnn"
MODEL=samples/models/seed_cnn.cnn
PT_SCRIPT=bench/pytorch_seed_cnn.py

if [[ $RUN_CNN -eq 1 ]]; then
  if [[ ! -x "$CNN_BIN" ]]; then
    die "$CNN_BIN not found (or not executable). Build it first, from $ROOT:
    cmake -S . -B $BUILD_DIR -DCMAKE_BUILD_TYPE=Release
    cmake --build $BUILD_DIR -j\$(nproc) --target cnn
or pass --build-dir DIR pointing at an existing build."
  fi
  [[ -f "$MODEL" ]] || die "$MODEL not found (the seed CNN model file is part of the repository)"
fi
if [[ $RUN_PT -eq 1 ]]; then
  "$PYTHON" -c 'import torch, numpy' 2>/dev/null \
    || die "'$PYTHON' cannot import torch and numpy; install them (benchmark only): $PYTHON -m pip install torch numpy"
fi
[[ $RUN_CNN -eq 1 || $RUN_PT -eq 1 ]] || die "nothing to run (--skip-cnn and --skip-pytorch)"

if [[ -z "$OUT_DIR" ]]; then
  OUT_DIR=$(mktemp -d "${TMPDIR:-/tmp}/cnn-train-speed.XXXXXX")
fi
mkdir -p "$OUT_DIR"
TMP="$OUT_DIR"  # per-run artefacts: cnn.json, pytorch.json, logs, seed.safetensors

# Speed numbers are only meaningful on an otherwise idle machine (on 2 cores, one busy
# neighbour halves the OpenMP throughput of both sides): measure other CPU use first.
busy_seconds() { awk '/^cpu /{print ($2+$3+$4+$7+$8+$9)}' /proc/stat; }
B0=$(busy_seconds); sleep 2; B1=$(busy_seconds)
OTHER=$(awk -v a="$B0" -v b="$B1" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", (b-a)/hz/2}')
if awk -v o="$OTHER" 'BEGIN{exit !(o > 0.2)}'; then
  echo "train_speed.sh: warning: the machine is busy (other processes use ~$OTHER cores); timings will be low and noisy" >&2
fi

echo "== train_speed: epochs=$EPOCHS seed=$SEED batch=64 lr=0.001 adam threads=$THREADS out=$OUT_DIR"
echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"

CNN_JSON="$TMP/cnn.json"
PT_JSON="$TMP/pytorch.json"
rm -f "$CNN_JSON" "$PT_JSON"

if [[ $RUN_CNN -eq 1 ]]; then
  echo "== cnn.c: $CNN_BIN train (OMP_NUM_THREADS=$THREADS)"
  if ! OMP_NUM_THREADS=$THREADS "$CNN_BIN" train --model "$MODEL" --data fashion-mnist \
      --epochs "$EPOCHS" --batch 64 --lr 0.001 --optimizer adam --seed "$SEED" \
      --val-split 0 --device cpu --quiet \
      --out "$TMP/seed.safetensors" --metrics-json "$CNN_JSON" 2>&1 | tee "$TMP/cnn.log"; then
    die "cnn train failed (see $TMP/cnn.log)"
  fi
  [[ -s "$CNN_JSON" ]] || die "cnn did not write $CNN_JSON (see $TMP/cnn.log)"
fi

if [[ $RUN_PT -eq 1 ]]; then
  PT_ARGS=(--epochs "$EPOCHS" --seed "$SEED" --threads "$THREADS" --batch 64 --lr 0.001 --json "$PT_JSON")
  [[ $CHANNELS_LAST -eq 1 ]] && PT_ARGS+=(--channels-last)
  # PyTorch at its best here. Its BLAS (MKL) and conv (oneDNN) are linked into
  # libtorch_cpu; the OpenBLAS variables only reach numpy's bundled OpenBLAS (used for
  # nothing in training) and are set so that an OpenBLAS that does not recognise this
  # CPU is forced to SkylakeX. The malloc thresholds stop glibc from unmapping and
  # re-faulting PyTorch's large per-step buffers.
  PT_ENV=(OMP_NUM_THREADS="$THREADS" OPENBLAS_CORETYPE=SkylakeX OPENBLAS_NUM_THREADS=1)
  [[ $MALLOC_TUNING -eq 1 ]] && PT_ENV+=(MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=268435456)
  echo "== pytorch: ${PT_ENV[*]} $PYTHON $PT_SCRIPT ${PT_ARGS[*]}"
  if ! env "${PT_ENV[@]}" "$PYTHON" "$PT_SCRIPT" "${PT_ARGS[@]}" 2>&1 | tee "$TMP/pytorch.log"; then
    die "pytorch run failed (see $TMP/pytorch.log)"
  fi
  [[ -s "$PT_JSON" ]] || die "pytorch did not write $PT_JSON (see $TMP/pytorch.log)"
fi

"$PYTHON" - "$CNN_JSON" "$PT_JSON" "$OUT_DIR" "$EPOCHS" "$SEED" "$THREADS" <<'EOF'
import json, os, statistics, sys, datetime, platform

cnn_path, pt_path, out_dir, epochs, seed, threads = sys.argv[1:7]

def load(p):
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)

rows = []
cnn = load(cnn_path)
if cnn is not None:
    hist = cnn.get("history", [])
    ips = [float(h["images_per_sec"]) for h in hist if h.get("images_per_sec") is not None]
    test = cnn.get("test") or {}
    acc = test.get("accuracy")
    if acc is None and hist:
        acc = hist[-1].get("val_accuracy")
    rows.append({
        "framework": "cnn.c",
        "images_per_sec_per_epoch": ips,
        "images_per_sec_median": statistics.median(ips) if ips else None,
        "final_test_accuracy": acc,
        "final_test_loss": test.get("loss"),
        "peak_rss_mib": cnn.get("peak_rss_mib"),
    })
pt = load(pt_path)
if pt is not None:
    eps = pt.get("epochs", [])
    ips = [float(e["images_per_sec"]) for e in eps]
    rows.append({
        "framework": f"pytorch {pt.get('torch_version', '?')}",
        "images_per_sec_per_epoch": ips,
        "images_per_sec_median": statistics.median(ips) if ips else None,
        "final_test_accuracy": eps[-1].get("test_accuracy") if eps else None,
        "final_test_loss": eps[-1].get("test_loss") if eps else None,
        "peak_rss_mib": pt.get("peak_rss_mib"),
        "channels_last": pt.get("channels_last"),
        # CPU cores other processes used while PyTorch's epochs were timed (should be ~0)
        "other_cpu_cores_max": max((e.get("other_cpu_cores") or 0.0) for e in eps) if eps else None,
    })

ratio = None
if cnn is not None and pt is not None:
    a, b = rows[0]["images_per_sec_median"], rows[1]["images_per_sec_median"]
    if a and b:
        ratio = a / b

def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)

header = "| framework | images/s (median over epochs) | final test accuracy | peak RSS MiB |"
lines = [header, "|---|---:|---:|---:|"]
for r in rows:
    lines.append(f"| {r['framework']} | {fmt(r['images_per_sec_median'], '.1f')} | "
                 f"{fmt(r['final_test_accuracy'], '.4f')} | {fmt(r['peak_rss_mib'], '.1f')} |")
ratio_line = f"cnn/pytorch images/s ratio: {fmt(ratio, '.3f')}"
if pt is not None and rows[-1]["other_cpu_cores_max"] is not None and rows[-1]["other_cpu_cores_max"] > 0.1:
    ratio_line += (f"  (warning: other processes used up to {rows[-1]['other_cpu_cores_max']:.2f} cores "
                   "during the PyTorch epochs; rerun on an idle machine)")

summary = {
    "date": datetime.datetime.now().isoformat(timespec="seconds"),
    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    "epochs": int(epochs), "seed": int(seed), "threads": int(threads),
    "batch": 64, "lr": 0.001, "optimizer": "adam",
    "rows": rows,
    "ratio_cnn_over_pytorch_images_per_sec": ratio,
}
with open(os.path.join(out_dir, "train_speed.json"), "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")
md = [f"# Training speed, seed CNN on Fashion-MNIST ({summary['date']})", "",
      f"epochs={epochs} seed={seed} batch=64 adam lr=0.001 threads={threads}, {os.cpu_count()} CPUs", "",
      *lines, "", ratio_line, ""]
with open(os.path.join(out_dir, "train_speed.md"), "w") as f:
    f.write("\n".join(md))

print()
print("\n".join(lines))
print(ratio_line)
print(f"written: {os.path.join(out_dir, 'train_speed.json')}, {os.path.join(out_dir, 'train_speed.md')}")
EOF
