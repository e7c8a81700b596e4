#!/usr/bin/env bash
# GPU check of the CUDA backend, for a session that has a CUDA machine for a few minutes (sized for an H200 and
# about 15 minutes of device time; it finishes in well under 8).
#
#   1. builds cnn.c with -DCNN_CUDA=ON into build-gpu (Release)
#   2. runs the CUDA conformance suite: ctest -L test_cuda, with CNN_REQUIRE_CUDA=1 so that a missing device
#      (driver too old, no GPU visible) fails instead of skipping
#   3. times seed-CNN training on cuda and on cpu with the cnn program (synthetic 28x28 data, 2 epochs each; the
#      second epoch is the steady state, the first includes cuDNN's algorithm search), and, when Fashion-MNIST is
#      installed, trains one epoch of it on cuda and checks the test accuracy
#   4. OPTIONAL, only when python3 can import torch with CUDA: PyTorch's speed on the same model and batch
#   5. prints a short table, last
#
# Logs and JSON go to $OUT when it is set, else ./gpu_check_out. Any failure (build, a test, a training run, the
# accuracy check) makes the script exit non-zero after the table, naming the step and its log.
#
# Usage: bench/gpu_check.sh            (from anywhere; it works in the repository root)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT_DIR=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT_DIR"
BUILD=build-gpu
JOBS=$(nproc 2>/dev/null || echo 4)
MODEL=samples/models/seed_cnn.cnn
T0=$(date +%s)

FAILED=()      # "step: log" for every failure
ROWS=()        # "what|result" rows of the final table

log() { echo "== [$(($(date +%s) - T0))s] $*"; }
row() { ROWS+=("$1|$2"); }
fail() { FAILED+=("$1"); row "$2" "FAILED (see $3)"; echo "!! FAILED: $1 (log: $3)" >&2; }

print_table() {
  echo
  echo "== gpu_check summary ($(($(date +%s) - T0)) s; logs in $OUT_DIR)"
  printf '| %-52s | %-40s |\n' "check" "result"
  printf '|%s|%s|\n' "$(printf -- '-%.0s' {1..54})" "$(printf -- '-%.0s' {1..42})"
  for r in "${ROWS[@]}"; do printf '| %-52s | %-40s |\n' "${r%%|*}" "${r#*|}"; done
  if [[ ${#FAILED[@]} -gt 0 ]]; then
    echo
    echo "!! gpu_check FAILED: ${#FAILED[@]} step(s):" >&2
    for f in "${FAILED[@]}"; do echo "!!   $f" >&2; done
  else
    echo
    echo "gpu_check: all checks passed"
  fi
}

# history entry N's images_per_sec, and the test accuracy, from a `cnn train --metrics-json` file
json_ips() { grep -o "\"epoch\": $2, [^}]*" "$1" | grep -o '"images_per_sec": [0-9.eE+-]*' | awk '{print $2}'; }
json_test_acc() { grep -o '"test": {[^}]*' "$1" | grep -o '"accuracy": [0-9.eE+-]*' | head -1 | awk '{print $2}'; }

# ---- 0. the machine -------------------------------------------------------------------------------------------
log "machine: $(nproc) CPUs; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT_DIR/nvidia-smi.txt"
  row "GPU" "$(head -1 "$OUT_DIR/nvidia-smi.txt" | cut -c1-40)"
else
  echo "nvidia-smi not found" | tee "$OUT_DIR/nvidia-smi.txt"
  row "GPU" "nvidia-smi not found"
fi

# ---- 1. build -------------------------------------------------------------------------------------------------
log "configure + build into $BUILD (-j$JOBS)"
B0=$(date +%s)
if timeout 300 cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCNN_CUDA=ON >"$OUT_DIR/build.log" 2>&1 &&
   timeout 300 cmake --build "$BUILD" -j"$JOBS" >>"$OUT_DIR/build.log" 2>&1; then
  WARNINGS=$(grep -c -i 'warning' "$OUT_DIR/build.log" || true)
  row "build (-DCNN_CUDA=ON)" "ok, $(($(date +%s) - B0)) s, $WARNINGS warning line(s)"
  grep -q "CUDA backend      : built" "$OUT_DIR/build.log" ||
    fail "the configuration did not build the CUDA backend" "CUDA backend in the build" "$OUT_DIR/build.log"
else
  fail "build" "build (-DCNN_CUDA=ON)" "$OUT_DIR/build.log"
  tail -40 "$OUT_DIR/build.log" >&2
  print_table
  exit 1
fi

# ---- 2. the conformance suite ---------------------------------------------------------------------------------
log "ctest -L test_cuda"
C0=$(date +%s)
if (cd "$BUILD" && CNN_REQUIRE_CUDA=1 timeout 300 ctest -L test_cuda --output-on-failure --timeout 240) \
    >"$OUT_DIR/ctest_cuda.log" 2>&1; then
  COUNT=$(grep -o 'out of [0-9]*' "$OUT_DIR/ctest_cuda.log" | tail -1 | awk '{print $3}')
  row "ctest -L test_cuda" "ok, ${COUNT:-?} tests passed, $(($(date +%s) - C0)) s"
else
  fail "ctest -L test_cuda" "ctest -L test_cuda" "$OUT_DIR/ctest_cuda.log"
  grep -E 'Failed|FAILED|Failure|Skipped|no CUDA device' "$OUT_DIR/ctest_cuda.log" | head -40 >&2
fi
if grep -q 'Skipped\|SKIPPED' "$OUT_DIR/ctest_cuda.log"; then
  fail "tests were skipped on a GPU machine" "test_cuda skips" "$OUT_DIR/ctest_cuda.log"
fi

# ---- 3. training speed: cuda vs cpu ---------------------------------------------------------------------------
# Synthetic IDX files (random pixels, labels 0-9): no download, the same on every machine. Speed only: the
# labels are noise.
SYN="$OUT_DIR/synthetic"
mkdir -p "$SYN"
be32() { printf "\\x$(printf %02x $((($1 >> 24) & 255)))\\x$(printf %02x $((($1 >> 16) & 255)))"; printf "\\x$(printf %02x $((($1 >> 8) & 255)))\\x$(printf %02x $(($1 & 255)))"; }
# byte b -> b mod 10: tr maps set1[i] to set2[i]; set2 is 0-9 repeated (GNU tr ignores its excess)
MOD10=$(for _ in $(seq 26); do printf '\\000-\\011'; done)
make_idx() {  # prefix count
  { printf '\x00\x00\x08\x03'; be32 "$2"; be32 28; be32 28; head -c $(($2 * 784)) /dev/urandom; } >"$SYN/$1-images-idx3-ubyte"
  { printf '\x00\x00\x08\x01'; be32 "$2"; head -c "$2" /dev/urandom | tr '\000-\377' "$MOD10"; } >"$SYN/$1-labels-idx1-ubyte"
}
SYN_N=${GPU_CHECK_SYNTHETIC_N:-12800}  # training images (10% are held out for validation)
make_idx train "$SYN_N"
make_idx t10k 2000

train_run() {  # device log-name extra-args...
  local dev=$1 name=$2
  shift 2
  timeout 240 "$BUILD/cnn" train --device "$dev" --model "$MODEL" --batch 64 --lr 0.001 --optimizer adam --seed 1 \
    --quiet --out "$OUT_DIR/$name.safetensors" --metrics-json "$OUT_DIR/$name.json" "$@" >"$OUT_DIR/$name.log" 2>&1
}

IPS_GPU="" IPS_CPU=""
log "train: cuda, synthetic data, 2 epochs"
if train_run cuda train_cuda --data "mnist:$SYN" --epochs 2; then
  IPS_GPU=$(json_ips "$OUT_DIR/train_cuda.json" 2)
  row "seed CNN train, cuda, batch 64 (epoch 2)" "$(printf '%.0f' "$IPS_GPU") images/s (epoch 1: $(printf '%.0f' "$(json_ips "$OUT_DIR/train_cuda.json" 1)"))"
else
  fail "cnn train --device cuda" "seed CNN train, cuda" "$OUT_DIR/train_cuda.log"
  tail -20 "$OUT_DIR/train_cuda.log" >&2
fi
log "train: cpu ($JOBS threads), synthetic data, 2 epochs"
if OMP_NUM_THREADS=$JOBS train_run cpu train_cpu --data "mnist:$SYN" --epochs 2; then
  IPS_CPU=$(json_ips "$OUT_DIR/train_cpu.json" 2)
  row "seed CNN train, cpu $JOBS threads, batch 64 (epoch 2)" "$(printf '%.0f' "$IPS_CPU") images/s"
else
  fail "cnn train --device cpu" "seed CNN train, cpu" "$OUT_DIR/train_cpu.log"
  tail -20 "$OUT_DIR/train_cpu.log" >&2
fi
if [[ -n "$IPS_GPU" && -n "$IPS_CPU" ]]; then
  row "speed-up cuda / cpu" "$(awk -v a="$IPS_GPU" -v b="$IPS_CPU" 'BEGIN { printf "%.1fx", a / b }')"
fi

# The optional steps below are skipped once this much time is gone, to stay well inside 8 minutes.
SOFT_LIMIT=330
elapsed() { echo $(($(date +%s) - T0)); }

FMNIST=/usr/share/datasets/fashion-mnist
if [[ $(elapsed) -gt $SOFT_LIMIT ]]; then
  row "Fashion-MNIST 1 epoch on cuda" "skipped: $(elapsed) s gone already"
elif [[ -d "$FMNIST" ]]; then
  log "train: cuda, Fashion-MNIST, 1 epoch (accuracy check)"
  if train_run cuda fmnist_cuda --data fashion-mnist --epochs 1; then
    ACC=$(json_test_acc "$OUT_DIR/fmnist_cuda.json")
    # the seed CNN reaches ~0.87 after one epoch of Adam at lr 1e-3 (cnn.c's CPU runs, and PyTorch's)
    if awk -v a="$ACC" 'BEGIN { exit !(a >= 0.80) }'; then
      row "Fashion-MNIST 1 epoch on cuda: test accuracy" "$ACC (ok, >= 0.80)"
    else
      fail "Fashion-MNIST test accuracy $ACC < 0.80 after 1 epoch on cuda" "Fashion-MNIST 1 epoch on cuda" \
        "$OUT_DIR/fmnist_cuda.log"
    fi
  else
    fail "cnn train --device cuda --data fashion-mnist" "Fashion-MNIST 1 epoch on cuda" "$OUT_DIR/fmnist_cuda.log"
  fi
else
  row "Fashion-MNIST 1 epoch on cuda" "skipped: $FMNIST not installed"
fi

# ---- 4. OPTIONAL: PyTorch on the same GPU ---------------------------------------------------------------------
# Runs only when python3 imports torch and sees a GPU. f32 without TF32, as cnn.c runs now.
if [[ $(elapsed) -gt $SOFT_LIMIT ]]; then
  row "OPTIONAL pytorch, cuda" "skipped: $(elapsed) s gone already"
elif python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
  log "optional: PyTorch seed CNN on cuda"
  if timeout 120 python3 - >"$OUT_DIR/pytorch_cuda.log" 2>&1 <<'EOF'
import time, torch, torch.nn as nn, torch.nn.functional as F
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.benchmark = True
dev = torch.device("cuda")
net = nn.Sequential(
    nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(64, 128, 3), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 10)).to(dev)
opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
x = torch.rand(64 * 200, 1, 28, 28, device=dev)
y = torch.randint(0, 10, (64 * 200,), device=dev)
def step(i):
    xb, yb = x[i * 64:(i + 1) * 64], y[i * 64:(i + 1) * 64]
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(net(xb), yb)
    loss.backward()
    opt.step()
    return loss.item()  # cnn.c reads the losses back every step too (for the progress bar and the epoch mean)
for i in range(20):
    step(i)
torch.cuda.synchronize()
t = time.perf_counter()
for i in range(200):
    step(i)
torch.cuda.synchronize()
print(f"pytorch {torch.__version__} cuda images/s: {200 * 64 / (time.perf_counter() - t):.0f}")
EOF
  then
    row "OPTIONAL pytorch, cuda f32, batch 64" "$(grep -o 'images/s: [0-9]*' "$OUT_DIR/pytorch_cuda.log" | awk '{print $2}') images/s"
  else
    row "OPTIONAL pytorch, cuda f32, batch 64" "did not run (see $OUT_DIR/pytorch_cuda.log)"
  fi
else
  row "OPTIONAL pytorch, cuda" "skipped: no torch with CUDA"
fi

# ---- 5. the table ---------------------------------------------------------------------------------------------
print_table
[[ ${#FAILED[@]} -eq 0 ]]
