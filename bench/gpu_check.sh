#!/usr/bin/env bash
# GPU check of the CUDA backend, for a session that has a CUDA machine for a few minutes (sized for an H200 and
# about 15 minutes of device time; it finishes in well under 8).
#
#   1. builds cnn.c with -DCNN_CUDA=ON into build-gpu (Release); or, with GPU_CHECK_PREBUILT=DIR, takes the `cnn`
#      program and the `test_cuda` suite from DIR/bin, the shared libraries they need beyond the CUDA ones from
#      DIR/lib.tar.xz, and Fashion-MNIST from DIR/fashion-mnist (bench/gpu_prepare.sh makes such a DIR on a
#      machine without a GPU, so that the device's minutes go to running, not compiling)
#   2. runs the CUDA suite (test_cuda) and the op table's CUDA rows (test_ops cuda/*), with CNN_REQUIRE_CUDA=1 so that a missing device (driver too
#      old, no GPU visible) fails instead of skipping; its end-to-end test trains the seed CNN for one epoch on
#      Fashion-MNIST on both devices, seeds 1-10, through this `cnn` (CNN_TEST_TOOL) and this data
#      (CNN_TEST_FASHION_MNIST), and compares the mean test accuracies (issue 4: within 0.5 points)
#   3. times seed-CNN training on cuda and on cpu with the cnn program (synthetic 28x28 data, 2 epochs each; the
#      second epoch is the steady state, the first includes cuDNN's algorithm search), and, with Fashion-MNIST,
#      trains one epoch of it on cuda, checks the test accuracy and evaluates that model on the cpu, then
#      ResNet-20 for 5 epochs (issue 3's accuracy run: Adam 1e-3, batch 64, no augmentation)
#   4. `cnn bench` of ResNet-50 (224x224x3, synthetic, batch 256) training on cuda, when the program has `bench`,
#      the bf16 step again with convolutions through cuDNN's legacy API (CNN_CUDNN_CONV=legacy) beside the graph
#      API's default, then a per-layer profile of the bf16 step summed by layer type (GPU_CHECK_SKIP_PROFILE=1
#      skips it), and one batchnorm + ReLU on (256, 56, 56, 256) bf16 forward and backward (PyTorch's in step 5)
#   5. OPTIONAL, only when python3 can import torch with CUDA: PyTorch's speed on the same models and batches,
#      then our ResNet-50 bf16 bench again on the cuDNN that PyTorch ships (when one is found beside it)
#   6. prints a short table, last
#
# Logs and JSON go to ./gpu_check_out, or to $OUT/gpu_check_logs.tar.gz when OUT is set. Any failure (build, a test, a training run, the
# accuracy check) makes the script exit non-zero after the table, naming the step and its log.
#
# Knobs for a short lease: GPU_CHECK_SKIP_RESNET20=1 skips the two ResNet-20 trainings; GPU_CHECK_R50_PRECISIONS
# (default "bf16 tf32 fp32 fp16": the target first), GPU_CHECK_R50_WARMUP (3) and GPU_CHECK_R50_ITERS (10) size
# the ResNet-50 bench; GPU_CHECK_SOFT_LIMIT (360 s) is when the later, optional steps are skipped.
#
# Usage: bench/gpu_check.sh            (from anywhere; it works in the repository root)
#        GPU_CHECK_PREBUILT=.gpu bench/gpu_check.sh
# On a 15-minute lease, so that the ResNet-50 comparisons and PyTorch fit before the soft limit:
#        GPU_CHECK_SKIP_RESNET20=1 GPU_CHECK_R50_PRECISIONS="bf16 tf32" GPU_CHECK_R50_WARMUP=2 GPU_CHECK_R50_ITERS=5 \
#        GPU_CHECK_PREBUILT=.gpu bench/gpu_check.sh
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# Work goes to ./gpu_check_out; with $OUT set (the device tool's folder, which takes back only a few files), to a
# temporary folder, and at the end $OUT receives the table and one archive of the logs and JSON.
if [[ -n "${OUT:-}" ]]; then
  OUT_DIR=/tmp/gpu_check_work
  trap 'tar -C "$OUT_DIR" --exclude=synthetic --exclude="*.safetensors" -czf "$OUT/gpu_check_logs.tar.gz" . 2>/dev/null' EXIT
else
  OUT_DIR=$ROOT/gpu_check_out
fi
rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR"
BUILD=build-gpu
JOBS=$(nproc 2>/dev/null || echo 4)
MODEL=samples/models/seed_cnn.cnn
T0=$(date +%s)
ORIG_LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}

FAILED=()      # "step: log" for every failure
ROWS=()        # "what|result" rows of the final table

log() { echo "== [$(($(date +%s) - T0))s] $*"; }
# each row also goes to $OUT/rows.txt at once: a run stopped at its time limit still brings back what it measured
row() {
  ROWS+=("$1|$2")
  if [[ -n "${OUT:-}" ]]; then echo "| $1 | $2 |" >>"$OUT/rows.txt"; fi
}
fail() { FAILED+=("$1"); row "$2" "FAILED (see $3)"; echo "!! FAILED: $1 (log: $3)" >&2; }

print_table() {
  print_table_body | tee "$OUT_DIR/summary.txt"
  [[ -n "${OUT:-}" ]] && cp "$OUT_DIR/summary.txt" "$OUT/summary.txt"
  return 0
}

print_table_body() {
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
bench_ips() { grep -o '"images_per_sec": [0-9.eE+-]*' "$1" | head -1 | awk '{print $2}'; }  # a `cnn bench --json`
json_test_acc() { tr -d '\n' <"$1" | grep -o '"test": *{[^}]*' | grep -o '"accuracy": [0-9.eE+-]*' | head -1 | awk '{print $2}'; }

# ---- 0. the machine -------------------------------------------------------------------------------------------
log "machine: $(nproc) CPUs; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT_DIR/nvidia-smi.txt"
  row "GPU" "$(head -1 "$OUT_DIR/nvidia-smi.txt" | cut -c1-40)"
else
  echo "nvidia-smi not found" | tee "$OUT_DIR/nvidia-smi.txt"
  row "GPU" "nvidia-smi not found"
fi

# ---- 1. build (or take the prebuilt programs) -----------------------------------------------------------------
PREBUILT=${GPU_CHECK_PREBUILT:-}
if [[ -n "$PREBUILT" ]]; then
  log "prebuilt programs from $PREBUILT"
  CNN="$PREBUILT/bin/cnn"
  TEST_CUDA="$PREBUILT/bin/test_cuda"
  TEST_OPS="$PREBUILT/bin/test_ops"
  LIBDIR=/tmp/cnn_gpu_check_lib
  mkdir -p "$LIBDIR"
  tar -C "$LIBDIR" -xJf "$PREBUILT/lib.tar.xz"
  # cuDNN and cuBLAS come from the machine: the CUDA toolkit's folders, else the pip wheels of PyTorch's python3
  for lib in libcudnn.so.9 libcublas.so.13 libcublasLt.so.13; do
    found=""
    for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
      [[ -e "$d/$lib" ]] && found=$d && break
    done
    if [[ -z "$found" ]]; then
      found=$(python3 -c 'import nvidia, os, glob, sys
for p in nvidia.__path__:
    for f in glob.glob(os.path.join(p, "*", "lib", sys.argv[1])):
        print(os.path.dirname(f)); raise SystemExit' "$lib" 2>/dev/null)
    fi
    if [[ -z "$found" ]]; then
      f=$(find / -xdev -name "$lib" 2>/dev/null | head -1)
      [[ -n "$f" ]] && found=$(dirname "$f")
    fi
    echo "$lib: ${found:-NOT FOUND}"
  done | tee "$OUT_DIR/libs.txt"
  LIBPATH="$LIBDIR:$(grep -v 'NOT FOUND' "$OUT_DIR/libs.txt" | awk '{print $2}' | sort -u | paste -sd:)"
  # for our programs only: PyTorch (step 5) must keep finding the cuDNN it was built with
  export LD_LIBRARY_PATH="$LIBPATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # the suite reads samples/ through the source folder it was built in
  SRC=$(strings "$TEST_CUDA" | grep -m1 -o '/[^ ]*/samples/models/seed_cnn.cnn' | sed 's|/samples/models/seed_cnn.cnn||')
  if [[ -n "$SRC" && ! -e "$SRC/samples" ]]; then mkdir -p "$(dirname "$SRC")" && ln -sfn "$ROOT" "$SRC"; fi
  { ldd "$CNN"; ldd "$TEST_CUDA"; ldd "$TEST_OPS"; } >"$OUT_DIR/ldd.txt" 2>&1
  if grep -q 'not found' "$OUT_DIR/ldd.txt"; then
    grep 'not found' "$OUT_DIR/ldd.txt" | sort -u >&2
    fail "shared libraries missing" "prebuilt programs" "$OUT_DIR/ldd.txt"
    print_table
    exit 1
  fi
  row "prebuilt programs" "ok; $(grep -c 'NOT FOUND' "$OUT_DIR/libs.txt") of 3 CUDA libraries not found"
  [[ -f "$PREBUILT/SOURCE" ]] && row "built from" "$(cut -c1-40 "$PREBUILT/SOURCE")"
  [[ -d "$PREBUILT/fashion-mnist" ]] && FMNIST_DIR="$PREBUILT/fashion-mnist"
else
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
  CNN="$BUILD/cnn"
  TEST_CUDA="$BUILD/tests/test_cuda"
  TEST_OPS="$BUILD/tests/test_ops"
fi
FMNIST_DIR=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}

# ---- 2. the conformance suite ---------------------------------------------------------------------------------
log "test_cuda (the conformance suite)"
C0=$(date +%s)
# CNN_TEST_TOOL and CNN_TEST_FASHION_MNIST: the suite's end-to-end test trains through this `cnn` on this data
if CNN_REQUIRE_CUDA=1 CNN_TEST_TOOL="$CNN" CNN_TEST_FASHION_MNIST="$FMNIST_DIR" timeout 480 "$TEST_CUDA" \
    --gtest_color=no >"$OUT_DIR/test_cuda.log" 2>&1; then
  COUNT=$(grep -o 'PASSED  \] [0-9]* test' "$OUT_DIR/test_cuda.log" | awk '{print $3}')
  row "test_cuda (conformance suite)" "ok, ${COUNT:-?} tests passed, $(($(date +%s) - C0)) s"
else
  fail "test_cuda" "test_cuda (conformance suite)" "$OUT_DIR/test_cuda.log"
  grep -E '^\[  FAILED|Failure|SKIPPED|no CUDA device' "$OUT_DIR/test_cuda.log" | head -60 >&2
fi
# issue 4's accuracy comparison (SeedCnnOneEpochOnFashionMnistReachesTheCpuAccuracy prints the mean of 10 seeds)
MEANS=$(grep -o "mean of 10 seeds: .*" "$OUT_DIR/test_cuda.log" | head -1)
[[ -n "$MEANS" ]] && row "Fashion-MNIST 1 epoch, cuda vs cpu (test_cuda)" "${MEANS#mean of 10 seeds: }, mean of seeds 1-10"
if grep -q '^\[  SKIPPED' "$OUT_DIR/test_cuda.log"; then
  fail "tests were skipped on a GPU machine" "test_cuda skips" "$OUT_DIR/test_cuda.log"
fi
# the op table's rows on the CUDA backend, each against the CPU backend (tests/test_ops.cc)
log "test_ops cuda/* (the op conformance table)"
C0=$(date +%s)
if CNN_REQUIRE_CUDA=1 timeout 300 "$TEST_OPS" --gtest_filter='cuda/*' --gtest_brief=1 --gtest_color=no \
    >"$OUT_DIR/test_ops.log" 2>&1; then
  COUNT=$(grep -o 'PASSED  \] [0-9]* test' "$OUT_DIR/test_ops.log" | awk '{print $3}')
  row "test_ops cuda/* (op conformance table)" "ok, ${COUNT:-?} rows passed, $(($(date +%s) - C0)) s"
else
  fail "test_ops" "test_ops cuda/* (op conformance table)" "$OUT_DIR/test_ops.log"
  grep -E '^\[  FAILED|Failure|SKIPPED|no CUDA device' "$OUT_DIR/test_ops.log" | head -60 >&2
fi
if grep -q '^\[  SKIPPED' "$OUT_DIR/test_ops.log"; then
  fail "tests were skipped on a GPU machine" "test_ops skips" "$OUT_DIR/test_ops.log"
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
  timeout 240 "$CNN" train --device "$dev" --model "$MODEL" --batch 64 --lr 0.001 --optimizer adam --seed 1 \
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
for prec in bf16 fp16; do
  log "train: cuda, synthetic data, 2 epochs, $prec"
  if train_run cuda "train_cuda_$prec" --data "mnist:$SYN" --epochs 2 --precision "$prec"; then
    V=$(json_ips "$OUT_DIR/train_cuda_$prec.json" 2)
    row "seed CNN train, cuda, batch 64, $prec (epoch 2)" "$(printf '%.0f' "$V") images/s"
  else
    fail "cnn train --device cuda --precision $prec" "seed CNN train, cuda, $prec" "$OUT_DIR/train_cuda_$prec.log"
    tail -20 "$OUT_DIR/train_cuda_$prec.log" >&2
  fi
done

# The optional steps below are skipped once this much time is gone, to stay well inside 8 minutes.
SOFT_LIMIT=${GPU_CHECK_SOFT_LIMIT:-360}
elapsed() { echo $(($(date +%s) - T0)); }
# true, after its row, when the optional step TITLE is skipped: its variable VAR set, or the soft limit passed
skip_step() { # TITLE VAR
  if [[ -n "${!2:-}" ]]; then row "$1" "skipped: $2 is set"; return 0; fi
  if [[ $(elapsed) -gt $SOFT_LIMIT ]]; then row "$1" "skipped: $(elapsed) s gone already"; return 0; fi
  return 1
}

if [[ $(elapsed) -gt $SOFT_LIMIT ]]; then
  row "Fashion-MNIST 1 epoch on cuda" "skipped: $(elapsed) s gone already"
elif [[ -d "$FMNIST_DIR" ]]; then
  ACC=""
  log "train: cuda, Fashion-MNIST, 1 epoch (accuracy check)"
  if train_run cuda fmnist_cuda --data "fashion-mnist:$FMNIST_DIR" --epochs 1; then
    ACC=$(json_test_acc "$OUT_DIR/fmnist_cuda.json")
    # the seed CNN reaches about 0.83 after one epoch of Adam at lr 1e-3 (cnn.c on the CPU, and PyTorch)
    if awk -v a="$ACC" 'BEGIN { exit !(a >= 0.80) }'; then
      row "Fashion-MNIST 1 epoch on cuda: test accuracy" "$ACC (ok, >= 0.80)"
    else
      fail "Fashion-MNIST test accuracy $ACC < 0.80 after 1 epoch on cuda" "Fashion-MNIST 1 epoch on cuda" \
        "$OUT_DIR/fmnist_cuda.log"
    fi
  else
    fail "cnn train --device cuda --data fashion-mnist" "Fashion-MNIST 1 epoch on cuda" "$OUT_DIR/fmnist_cuda.log"
  fi
  # the model trained on the GPU, evaluated on the CPU: the same weights give the same test accuracy
  if [[ -f "$OUT_DIR/fmnist_cuda.safetensors" ]]; then
    log "eval: the cuda-trained model on cpu"
    if timeout 120 "$CNN" eval --device cpu --model "$OUT_DIR/fmnist_cuda.safetensors" \
        --data "fashion-mnist:$FMNIST_DIR" --metrics-json "$OUT_DIR/fmnist_cuda_on_cpu.json" \
        >"$OUT_DIR/fmnist_cuda_on_cpu.log" 2>&1; then
      ACC2=$(json_test_acc "$OUT_DIR/fmnist_cuda_on_cpu.json")
      if awk -v a="$ACC" -v b="$ACC2" 'BEGIN { d = a - b; exit !(d <= 0.001 && d >= -0.001) }'; then
        row "the cuda-trained model evaluated on cpu" "$ACC2 (ok, cuda said $ACC)"
      else
        fail "the cuda-trained model gives $ACC2 on cpu, $ACC on cuda" "the cuda-trained model evaluated on cpu" \
          "$OUT_DIR/fmnist_cuda_on_cpu.log"
      fi
    else
      fail "cnn eval --device cpu of the cuda-trained model" "the cuda-trained model evaluated on cpu" \
        "$OUT_DIR/fmnist_cuda_on_cpu.log"
    fi
  fi
  # issue 3's accuracy run: ResNet-20, 5 epochs, Adam 1e-3, batch 64, no augmentation; the bar is 91%
  if ! skip_step "ResNet-20 5 epochs on cuda" GPU_CHECK_SKIP_RESNET20; then
    log "train: cuda, ResNet-20, Fashion-MNIST, 5 epochs"
    if MODEL=samples/models/resnet20_28.cnn train_run cuda resnet20_cuda --data "fashion-mnist:$FMNIST_DIR" \
        --epochs 5 --val-split 0; then
      ACC=$(json_test_acc "$OUT_DIR/resnet20_cuda.json")
      IPS=$(json_ips "$OUT_DIR/resnet20_cuda.json" 5)
      row "ResNet-20 5 epochs on cuda: test accuracy" "$ACC ($(printf '%.0f' "${IPS:-0}") images/s in epoch 5)"
    else
      fail "cnn train --model resnet20_28.cnn --device cuda" "ResNet-20 5 epochs on cuda" "$OUT_DIR/resnet20_cuda.log"
      tail -20 "$OUT_DIR/resnet20_cuda.log" >&2
    fi
    log "train: cuda, ResNet-20, Fashion-MNIST, 5 epochs, bf16"
    if MODEL=samples/models/resnet20_28.cnn train_run cuda resnet20_cuda_bf16 --data "fashion-mnist:$FMNIST_DIR" \
        --epochs 5 --val-split 0 --precision bf16; then
      ACC=$(json_test_acc "$OUT_DIR/resnet20_cuda_bf16.json")
      IPS=$(json_ips "$OUT_DIR/resnet20_cuda_bf16.json" 5)
      row "ResNet-20 5 epochs on cuda, bf16: test accuracy" "$ACC ($(printf '%.0f' "${IPS:-0}") images/s in epoch 5)"
    else
      fail "cnn train --model resnet20_28.cnn --device cuda --precision bf16" "ResNet-20 5 epochs, bf16" \
        "$OUT_DIR/resnet20_cuda_bf16.log"
      tail -20 "$OUT_DIR/resnet20_cuda_bf16.log" >&2
    fi
  fi
else
  row "Fashion-MNIST on cuda" "skipped: $FMNIST_DIR not there"
fi

# ---- 4. cnn bench: ResNet-50 training, 224x224x3, synthetic, batch 256 ------------------------------------------
declare -A R50=() B1=()
if ! "$CNN" bench --help 2>&1 | grep -q -- --precision; then
  row "cnn bench ResNet-50" "skipped: this cnn has no bench command with --precision"
elif [[ $(elapsed) -gt $SOFT_LIMIT ]]; then
  row "cnn bench ResNet-50" "skipped: $(elapsed) s gone already"
else
  for prec in ${GPU_CHECK_R50_PRECISIONS:-bf16 tf32 fp32 fp16}; do
    log "cnn bench: ResNet-50, batch 256, cuda, $prec"
    # CNN_CUDA_LOG: a line per convolution plan (graph API and engine, or the legacy API), counted in the row
    if CNN_CUDA_LOG=1 timeout 150 "$CNN" bench --model samples/models/resnet50.cnn --batch 256 --device cuda --mode train \
        --optimizer sgd --precision "$prec" --warmup "${GPU_CHECK_R50_WARMUP:-3}" --iters "${GPU_CHECK_R50_ITERS:-10}" \
        --repeats 3 --json "$OUT_DIR/bench_r50_$prec.json" >"$OUT_DIR/bench_r50_$prec.log" 2>&1; then
      V=$(bench_ips "$OUT_DIR/bench_r50_$prec.json")
      NG=$(grep -c ': graph API' "$OUT_DIR/bench_r50_$prec.log")
      NL=$(grep -c ': legacy API' "$OUT_DIR/bench_r50_$prec.log")
      row "cnn ResNet-50 train, batch 256, $prec" "$(printf '%.0f' "${V:-0}") images/s (conv plans: $NG graph, $NL legacy)"
      R50[$prec]=$V
    else
      fail "cnn bench ResNet-50 $prec" "cnn ResNet-50 train, $prec" "$OUT_DIR/bench_r50_$prec.log"
      tail -15 "$OUT_DIR/bench_r50_$prec.log" >&2
    fi
  done
  # the bf16 step again with the convolutions through cuDNN's legacy API (cudnnFind*), the graph API's A/B
  if [[ -n "${R50[bf16]:-}" && $(elapsed) -le $SOFT_LIMIT ]]; then
    log "cnn bench: ResNet-50, batch 256, cuda, bf16, CNN_CUDNN_CONV=legacy"
    if CNN_CUDNN_CONV=legacy timeout 150 "$CNN" bench --model samples/models/resnet50.cnn --batch 256 --device cuda \
        --mode train --optimizer sgd --precision bf16 --warmup "${GPU_CHECK_R50_WARMUP:-3}" \
        --iters "${GPU_CHECK_R50_ITERS:-10}" --repeats 3 --json "$OUT_DIR/bench_r50_bf16_legacy.json" \
        >"$OUT_DIR/bench_r50_bf16_legacy.log" 2>&1; then
      V=$(bench_ips "$OUT_DIR/bench_r50_bf16_legacy.json")
      row "cnn ResNet-50 train, bf16, legacy cuDNN API" "$(printf '%.0f' "${V:-0}") images/s (graph API: $(printf '%.0f' "${R50[bf16]}"))"
    else
      fail "cnn bench ResNet-50 bf16 CNN_CUDNN_CONV=legacy" "cnn ResNet-50 train, bf16, legacy API" \
        "$OUT_DIR/bench_r50_bf16_legacy.log"
    fi
  fi
  # where the bf16 step goes: each layer's forward and backward time (syncs around every layer), summed by type
  if ! skip_step "ResNet-50 bf16 per-layer profile" GPU_CHECK_SKIP_PROFILE; then
    log "cnn bench: ResNet-50, batch 256, cuda, bf16, per layer"
    if timeout 150 "$CNN" bench --model samples/models/resnet50.cnn --batch 256 --device cuda --mode train --optimizer sgd \
        --precision bf16 --warmup 2 --iters 3 --repeats 1 --per-layer --json "$OUT_DIR/profile_r50_bf16.json" \
        >"$OUT_DIR/profile_r50_bf16.log" 2>&1; then
      BYTYPE=$(python3 - "$OUT_DIR/profile_r50_bf16.json" <<'PYEOF'
import json, sys
from collections import defaultdict
layers = json.load(open(sys.argv[1]))["layers"]
fwd, bwd = defaultdict(float), defaultdict(float)
for l in layers:
    fwd[l["type"]] += l["fwd_ms"]
    bwd[l["type"]] += l["bwd_ms"]
total = sum(fwd.values()) + sum(bwd.values())
parts = sorted(fwd, key=lambda t: -(fwd[t] + bwd[t]))
print("; ".join(f"{t} {fwd[t]:.1f}+{bwd[t]:.1f} ms" for t in parts[:6]) + f" (of {total:.1f} ms, fwd+bwd)")
PYEOF
      )
      row "ResNet-50 bf16 step by layer type" "${BYTYPE:-see profile_r50_bf16.log}"
    else
      fail "cnn bench --per-layer ResNet-50 bf16" "ResNet-50 bf16 per-layer profile" "$OUT_DIR/profile_r50_bf16.log"
    fi
  fi
  # one batchnorm + ReLU at ResNet-50's largest bottleneck shape, (256, 56, 56, 256) bf16, forward and backward from
  # the per-layer profile: our kernels beside PyTorch's (cuDNN's) on the same tensor (step 5)
  BN_MS=
  if [[ $(elapsed) -le $SOFT_LIMIT ]]; then
    printf 'input 56 56 256\nbatchnorm relu\nglobalavgpool\ndense 10\n' >"$OUT_DIR/bn_relu.cnn"
    log "cnn bench: batchnorm + ReLU (256, 56, 56, 256) bf16, per layer"
    if timeout 90 "$CNN" bench --model "$OUT_DIR/bn_relu.cnn" --batch 256 --device cuda --mode train --optimizer sgd \
        --precision bf16 --warmup 3 --iters 10 --repeats 1 --per-layer --json "$OUT_DIR/bench_bn_relu.json" \
        >"$OUT_DIR/bench_bn_relu.log" 2>&1; then
      BN_MS=$(python3 -c 'import json, sys
l = [l for l in json.load(open(sys.argv[1]))["layers"] if l["type"] == "BatchNormalization"][0]
print("%.3f %.3f" % (l["fwd_ms"], l["bwd_ms"]))' "$OUT_DIR/bench_bn_relu.json" 2>/dev/null)
      row "cnn batchnorm+ReLU (256, 56, 56, 256) bf16, fwd bwd" "${BN_MS:-?} ms"
    else
      fail "cnn bench batchnorm+ReLU bf16" "cnn batchnorm+ReLU bf16" "$OUT_DIR/bench_bn_relu.log"
    fi
  fi
  # batch-1 inference latency, f32
  for m in seed_cnn resnet50; do
    log "cnn bench: $m, batch 1, inference, cuda, fp32"
    if timeout 60 "$CNN" bench --model "samples/models/$m.cnn" --batch 1 --device cuda --mode infer --warmup 20 \
        --iters 50 --repeats 3 --json "$OUT_DIR/bench_b1_$m.json" >"$OUT_DIR/bench_b1_$m.log" 2>&1; then
      V=$(grep -o '"latency_ms_median": [0-9.eE+-]*' "$OUT_DIR/bench_b1_$m.json" | head -1 | awk '{print $2}')
      row "cnn $m batch-1 inference latency, fp32" "${V:-?} ms"
      B1[$m]=$V
    else
      fail "cnn bench $m batch 1" "cnn $m batch-1 latency" "$OUT_DIR/bench_b1_$m.log"
      tail -15 "$OUT_DIR/bench_b1_$m.log" >&2
    fi
  done
fi

# ---- 5. OPTIONAL: PyTorch on the same GPU ---------------------------------------------------------------------
# Runs only when python3 imports torch and sees a GPU: the seed CNN as cnn.c trains it (f32 without TF32, batch
# 64, Adam, the loss read back every step), and ResNet-50 (torchvision's, channels_last, batch 256, synthetic data)
# in fp32, TF32 and bf16 autocast.
if [[ $(elapsed) -gt $SOFT_LIMIT ]]; then
  row "OPTIONAL pytorch, cuda" "skipped: $(elapsed) s gone already"
elif LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
  log "optional: PyTorch seed CNN and ResNet-50 on cuda"
  if LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH PYTHONUNBUFFERED=1 timeout 150 python3 - >"$OUT_DIR/pytorch_cuda.log" 2>&1 <<'EOF'
import time, torch, torch.nn as nn, torch.nn.functional as F
torch.backends.cudnn.benchmark = True
dev = torch.device("cuda")
print(f"pytorch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")

def tf32(on):
    torch.backends.cudnn.allow_tf32 = on
    torch.backends.cuda.matmul.allow_tf32 = on

tf32(False)
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
print(f"seed cnn f32 images/s: {200 * 64 / (time.perf_counter() - t):.0f}")

import torchvision
r50 = torchvision.models.resnet50().to(dev).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(r50.parameters(), lr=0.1, momentum=0.9)
xb = torch.rand(256, 3, 224, 224, device=dev).to(memory_format=torch.channels_last)
yb = torch.randint(0, 1000, (256,), device=dev)
for mode in ("fp32", "tf32", "bf16"):
    tf32(mode != "fp32")
    def r50_step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=(mode == "bf16")):
            loss = F.cross_entropy(r50(xb), yb)
        loss.backward()
        opt.step()
    for _ in range(5):
        r50_step()
    torch.cuda.synchronize()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(8):
            r50_step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) / 8)
    times.sort()
    print(f"resnet50 {mode} batch 256 images/s: {256 / times[1]:.0f}")
    torch.cuda.empty_cache()

# where PyTorch's bf16 step goes: its CUDA kernels' time over 3 steps, per step, by kind (beside our per-layer
# profile by layer type)
from torch.profiler import profile, ProfilerActivity
tf32(True)
def r50_bf16_step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = F.cross_entropy(r50(xb), yb)
    loss.backward()
    opt.step()
r50_bf16_step()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    for _ in range(3):
        r50_bf16_step()
    torch.cuda.synchronize()
# first match wins: cuDNN's batchnorm and pooling kernels also carry "cudnn" in their names
KINDS = (("batchnorm", ("batch_norm", "batchnorm", "bn_", "welford")), ("pool", ("pool",)),
         ("optimizer", ("foreach", "multi_tensor")),
         ("conv", ("conv", "xmma", "cudnn", "implicit", "dgrad", "wgrad", "fprop", "sm90", "cutlass")),
         ("gemm", ("gemm",)), ("elementwise", ("elementwise", "vectorized", "unrolled", "copy", "fill")),
         ("reduce", ("reduce",)))
ms = {}
for e in prof.key_averages():
    t = getattr(e, "self_device_time_total", None)
    if t is None:
        t = getattr(e, "self_cuda_time_total", 0)
    name = e.key.lower()
    kind = next((k for k, keys in KINDS if any(w in name for w in keys)), "other")
    ms[kind] = ms.get(kind, 0.0) + t / 1e3 / 3
print("pytorch resnet50 bf16 kernels per step: " + "; ".join(f"{k} {v:.1f} ms" for k, v in sorted(ms.items(), key=lambda kv: -kv[1]))
      + f" (of {sum(ms.values()):.1f} ms)")

# one batchnorm + ReLU (in place, as torchvision's ResNet) on (256, 256, 56, 56) bf16 channels_last with f32
# parameters (what autocast gives), forward and backward each: the median of 10 after 3 warm-ups
x = torch.randn(256, 256, 56, 56, device=dev).to(torch.bfloat16).to(memory_format=torch.channels_last)
x.requires_grad_()
bn = nn.BatchNorm2d(256).to(dev)
g = torch.randn_like(x)
fw, bw = [], []
for i in range(13):
    x.grad = None
    e = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
    e[0].record()
    y = F.relu(bn(x), inplace=True)
    e[1].record()
    y.backward(g)
    e[2].record()
    torch.cuda.synchronize()
    if i >= 3:
        fw.append(e[0].elapsed_time(e[1]))
        bw.append(e[1].elapsed_time(e[2]))
fw.sort()
bw.sort()
print(f"pytorch bn_relu bf16 fwd bwd ms: {fw[5]:.3f} {bw[5]:.3f}")
del x, y, g, bn
torch.cuda.empty_cache()

# batch-1 inference latency, f32 (no TF32), eval mode, the median of 3 x 50 timed calls after 20 warm-ups
tf32(False)
seed = net.eval()
r50.eval()
for name, m, shape in (("seed_cnn", seed, (1, 1, 28, 28)), ("resnet50", r50, (1, 3, 224, 224))):
    xb1 = torch.rand(*shape, device=dev)
    if name == "resnet50":
        xb1 = xb1.to(memory_format=torch.channels_last)
    with torch.no_grad():
        for _ in range(20):
            m(xb1)
        torch.cuda.synchronize()
        med = []
        for _ in range(3):
            lat = []
            for _ in range(50):
                t = time.perf_counter()
                m(xb1).float().softmax(1).cpu()
                lat.append(time.perf_counter() - t)
            lat.sort()
            med.append(lat[25])
        med.sort()
    print(f"{name} batch 1 latency ms: {med[1] * 1e3:.3f}")
EOF
  then
    V=$(grep -o 'seed cnn f32 images/s: [0-9]*' "$OUT_DIR/pytorch_cuda.log" | awk '{print $NF}')
    row "OPTIONAL pytorch seed CNN, cuda f32, batch 64" "${V:-?} images/s"
    [[ -n "$IPS_GPU" && -n "$V" ]] && row "ratio cnn.c / pytorch, seed CNN" "$(awk -v a="$IPS_GPU" -v b="$V" 'BEGIN { printf "%.2f", a / b }')"
    V=$(grep -o 'pytorch bn_relu bf16 fwd bwd ms: .*' "$OUT_DIR/pytorch_cuda.log" | head -1)
    V=${V#pytorch bn_relu bf16 fwd bwd ms: }
    if [[ -n "$V" ]]; then
      row "OPTIONAL pytorch batchnorm+ReLU (256, 56, 56, 256) bf16, fwd bwd" "$V ms"
      [[ -n "${BN_MS:-}" ]] && row "ratio pytorch / cnn.c time, batchnorm+ReLU fwd, bwd" \
        "$(awk -v a="$BN_MS" -v b="$V" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.2f, %.2f", y[1] / x[1], y[2] / x[2] }')"
    fi
    V=$(grep -o 'pytorch resnet50 bf16 kernels per step: .*' "$OUT_DIR/pytorch_cuda.log" | head -1)
    [[ -n "$V" ]] && row "OPTIONAL pytorch ResNet-50 bf16 step by kernel kind" "${V#pytorch resnet50 bf16 kernels per step: }"
    for prec in fp32 tf32 bf16; do
      V=$(grep -o "resnet50 $prec batch 256 images/s: [0-9]*" "$OUT_DIR/pytorch_cuda.log" | awk '{print $NF}')
      row "OPTIONAL pytorch ResNet-50 train, batch 256, $prec" "${V:-?} images/s"
      if [[ -n "${R50[$prec]:-}" && -n "$V" ]]; then
        row "ratio cnn.c / pytorch, ResNet-50 $prec" "$(awk -v a="${R50[$prec]}" -v b="$V" 'BEGIN { printf "%.2f", a / b }')"
      fi
    done
    for m in seed_cnn resnet50; do
      V=$(grep -o "$m batch 1 latency ms: [0-9.]*" "$OUT_DIR/pytorch_cuda.log" | awk '{print $NF}')
      row "OPTIONAL pytorch $m batch-1 inference latency" "${V:-?} ms"
      if [[ -n "${B1[$m]:-}" && -n "$V" ]]; then
        row "latency ratio cnn.c / pytorch, $m" "$(awk -v a="${B1[$m]}" -v b="$V" 'BEGIN { printf "%.2f", a / b }')"
      fi
    done
  else
    row "OPTIONAL pytorch, cuda" "did not run (see $OUT_DIR/pytorch_cuda.log)"
  fi
else
  row "OPTIONAL pytorch, cuda" "skipped: no torch with CUDA"
fi

# ---- 5b. OPTIONAL: our ResNet-50 bf16 step on PyTorch's cuDNN --------------------------------------------------
# The programs load the machine's cuDNN; PyTorch ships its own (9.14 and 9.19 in the third run). The same bench
# with PyTorch's cuDNN first on the library path separates the library's part of the ratio from ours.
TORCH_CUDNN=$(LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH python3 - 2>/dev/null <<'EOF'
import glob, os
roots = []
try:
    import nvidia.cudnn
    roots += [os.path.join(p, "lib") for p in nvidia.cudnn.__path__]
except ImportError:
    pass
try:
    import torch
    roots.append(os.path.join(os.path.dirname(torch.__file__), "lib"))
except ImportError:
    pass
for r in roots:
    if glob.glob(os.path.join(r, "libcudnn.so.9*")):
        print(r)
        break
EOF
)
if [[ -z "${R50[bf16]:-}" ]]; then
  row "OPTIONAL cnn ResNet-50 bf16 on PyTorch's cuDNN" "skipped: no bf16 ResNet-50 result of ours to compare"
elif [[ -z "$TORCH_CUDNN" ]]; then
  row "OPTIONAL cnn ResNet-50 bf16 on PyTorch's cuDNN" "skipped: no libcudnn.so.9 found beside torch"
elif [[ $(elapsed) -gt $SOFT_LIMIT ]]; then
  row "OPTIONAL cnn ResNet-50 bf16 on PyTorch's cuDNN" "skipped: $(elapsed) s gone already"
else
  log "optional: cnn bench ResNet-50 bf16 with the cuDNN in $TORCH_CUDNN"
  if LD_LIBRARY_PATH=$TORCH_CUDNN:${LD_LIBRARY_PATH:-} timeout 120 "$CNN" bench --model samples/models/resnet50.cnn \
      --batch 256 --device cuda --mode train --optimizer sgd --precision bf16 --warmup "${GPU_CHECK_R50_WARMUP:-3}" \
      --iters "${GPU_CHECK_R50_ITERS:-10}" --repeats 3 --json "$OUT_DIR/bench_r50_bf16_torch_cudnn.json" \
      >"$OUT_DIR/bench_r50_bf16_torch_cudnn.log" 2>&1; then
    V=$(bench_ips "$OUT_DIR/bench_r50_bf16_torch_cudnn.json")
    DNN=$(grep -o 'cuDNN [0-9.]*' "$OUT_DIR/bench_r50_bf16_torch_cudnn.json" | head -1)
    row "OPTIONAL cnn ResNet-50 bf16 on PyTorch's ${DNN:-cuDNN}" \
      "$(printf '%.0f' "${V:-0}") images/s (on the machine's: $(printf '%.0f' "${R50[bf16]}"))"
  else
    row "OPTIONAL cnn ResNet-50 bf16 on PyTorch's cuDNN" "did not run (see bench_r50_bf16_torch_cudnn.log)"
  fi
fi

# ---- 6. the table ---------------------------------------------------------------------------------------------
print_table
[[ ${#FAILED[@]} -eq 0 ]]
