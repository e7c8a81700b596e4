#!/usr/bin/env bash
# Distillation and quantization-aware training on Fashion-MNIST (issue 17, parts 2 and 3), CPU backend:
#   teacher: ResNet-20 (samples/models/resnet20_28.cnn), T_EPOCHS epochs, Adam 1e-3 with a cosine schedule;
#   alone:   the seed CNN (samples/models/seed_cnn.cnn), 5 epochs, Adam 1e-3, batch 64, seeds 1 2 3;
#   distill: the same runs with --teacher (--distill-alpha ALPHA --temperature TEMP);
#   qat:     each float seed CNN of `alone` fine-tuned with --qat (--init-from, QAT_EPOCHS epochs at QAT_LR), converted
#            by `cnn quantize --mode int8` (the learned ranges); beside it the float model and its post-training int8
#            version (min-max calibration on CALIB training images), and as a control the float model trained the same
#            extra epochs without --qat (and its post-training int8 version).
# Every model is evaluated on the 10,000 test images; --val-split 0 everywhere (the test set is only evaluated).
# VAL=F (default 0): choosing settings instead: every run (the teacher's too) holds out the fraction F of its training
# images, and what is reported is each run's validation accuracy after its last epoch (from --metrics-json), never the
# test set's: teacher, alone and distill then pick ALPHA and TEMP without looking at the test images.
# LIMIT (default 20000): every run trains on the first LIMIT training images (the test set stays whole): the
# machine is two shared cores, and the distilled runs pay the teacher's forward pass on every batch.
#
#   bench/distill_bench.sh [teacher] [alone] [distill] [qat]     # default: all four, in that order
#   W=/tmp/distill-bench BUILD=build T_EPOCHS=8 ALPHA=0.9 TEMP=4 QAT_EPOCHS=1 QAT_LR=0.0001 SEEDS="1 2 3" VAL=0
# Trained models stay in W: a phase reuses a model already there (delete it to train again).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
W=${W:-/tmp/distill-bench}
T_EPOCHS=${T_EPOCHS:-8}
EPOCHS=${EPOCHS:-5}
ALPHA=${ALPHA:-0.9}
TEMP=${TEMP:-4}
QAT_EPOCHS=${QAT_EPOCHS:-1}
QAT_LR=${QAT_LR:-0.0001}
CALIB=${CALIB:-1000}
LIMIT=${LIMIT:-20000}
SEEDS=${SEEDS:-1 2 3}
VAL=${VAL:-0}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OMP_WAIT_POLICY=passive
CNN=$BUILD/cnn
mkdir -p "$W"
phases=${*:-teacher alone distill qat}

acc() { # the test accuracy of a model; with VAL, the validation accuracy of its training run instead
  if [ "$VAL" != 0 ]; then
    python3 -c 'import json,sys; print("%.4f (validation)" % json.load(open(sys.argv[1]))["history"][-1]["val_accuracy"])' \
      "${1%.safetensors}.json"
  else
    "$CNN" eval --model "$1" --device cpu 2>/dev/null | sed -n 's/.*accuracy: \([0-9.]*\).*/\1/p' | head -1
  fi
}
log() { echo "$(date -u +%H:%M:%S) [load $(cut -d' ' -f1-3 /proc/loadavg)] $*"; }
train() { # OUT LOG ARGS...
  local out=$1 lg=$2  # progress bars go to the log (it ends with the test accuracy)
  shift 2
  [ -f "$out" ] || "$CNN" train --data fashion-mnist --val-split "$VAL" --limit "$LIMIT" --batch 64 --device cpu --out "$out" \
    --metrics-json "${out%.safetensors}.json" "$@" >"$lg" 2>&1
}

for phase in $phases; do
  case $phase in
  teacher)
    log "teacher: ResNet-20, $T_EPOCHS epochs"
    train "$W/teacher.safetensors" "$W/teacher.log" --model samples/models/resnet20_28.cnn --epochs "$T_EPOCHS" \
      --lr 0.001 --lr-schedule cosine --seed 1
    log "teacher accuracy $(acc "$W/teacher.safetensors")"
    ;;
  alone)
    for s in $SEEDS; do
      train "$W/alone-$s.safetensors" "$W/alone-$s.log" --model samples/models/seed_cnn.cnn --epochs "$EPOCHS" \
        --lr 0.001 --seed "$s"
      log "alone seed $s accuracy $(acc "$W/alone-$s.safetensors")"
    done
    ;;
  distill)
    for s in $SEEDS; do
      d=$W/distill-a$ALPHA-t$TEMP-$s
      train "$d.safetensors" "$d.log" --model samples/models/seed_cnn.cnn --epochs "$EPOCHS" \
        --lr 0.001 --seed "$s" --teacher "$W/teacher.safetensors" --distill-alpha "$ALPHA" --temperature "$TEMP"
      log "distill seed $s (alpha $ALPHA, T $TEMP) accuracy $(acc "$d.safetensors")"
    done
    ;;
  qat)
    for s in $SEEDS; do
      f=$W/alone-$s.safetensors
      [ -f "$W/ptq-$s.safetensors" ] || "$CNN" quantize --model "$f" --mode int8 --calib-data fashion-mnist \
        --calib-samples "$CALIB" --out "$W/ptq-$s.safetensors" >"$W/ptq-$s.log" 2>&1
      train "$W/qat-$s.safetensors" "$W/qat-$s.log" --init-from "$f" --qat --epochs "$QAT_EPOCHS" --lr "$QAT_LR" \
        --seed "$s"
      # the control: the same extra epochs in float, so that QAT is not credited with them
      train "$W/more-$s.safetensors" "$W/more-$s.log" --init-from "$f" --epochs "$QAT_EPOCHS" --lr "$QAT_LR" --seed "$s"
      [ -f "$W/qat-int8-$s.safetensors" ] || "$CNN" quantize --model "$W/qat-$s.safetensors" --mode int8 \
        --out "$W/qat-int8-$s.safetensors" >"$W/qat-int8-$s.log" 2>&1
      [ -f "$W/more-ptq-$s.safetensors" ] || "$CNN" quantize --model "$W/more-$s.safetensors" --mode int8 \
        --calib-data fashion-mnist --calib-samples "$CALIB" --out "$W/more-ptq-$s.safetensors" >"$W/more-ptq-$s.log" 2>&1
      log "qat seed $s: float $(acc "$f") ptq-int8 $(acc "$W/ptq-$s.safetensors") float+$QAT_EPOCHS $(acc "$W/more-$s.safetensors") float+$QAT_EPOCHS-ptq-int8 $(acc "$W/more-ptq-$s.safetensors") qat-fakequant $(acc "$W/qat-$s.safetensors") qat-int8 $(acc "$W/qat-int8-$s.safetensors")"
    done
    ;;
  *) echo "distill_bench: unknown phase '$phase' (teacher, alone, distill, qat)" >&2; exit 2 ;;
  esac
done
