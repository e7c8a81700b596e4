#!/bin/sh
# Pruning on Fashion-MNIST (README "Pruning"; results in bench/RESULTS.md):
#   seed   the seed CNN dense and at 80% unstructured sparsity, seeds 1 2 3, 5 epochs (TF-MOT's polynomial schedule
#          from the end of epoch 1 to the end of epoch 4, every 100 steps), test accuracy of each
#   resnet ResNet-20 dense (EPOCHS, default 3), then fine-tuned from it for FINETUNE_EPOCHS (default 2) twice: with
#          channel pruning to 50% of every conv's filters but the classifier's (0 -> 50% over the first half of the
#          fine-tuning; the channel groups take the residual stream through the adds, README "Pruning"), then
#          stripped (cnn prune --strip), and without pruning (the fair baseline); test accuracies, the stripped
#          model's conv widths, and `cnn bench` inference speed of the dense and the stripped model, alternated 3 times
#   tfmot  the seed CNN's schedule in Keras with tensorflow-model-optimization (bench/prune_tfmot.py; a venv with
#          tensorflow-cpu and tensorflow-model-optimization: VENV=/path/to/venv)
#   speed  the dense and stripped ResNet-20 of a `resnet` run in OUT_DIR again, alternated ROUNDS times
# TARGET: the channel sparsity of the pruned convs (default 0.5); SEED: the fine-tuning runs' seed (default 1)
# Usage: [EPOCHS=3 FINETUNE_EPOCHS=2 LIMIT=N BASE=FILE TARGET=0.5 SEED=1 NO_BASELINE=1 ROUNDS=4] bench/prune_bench.sh seed|resnet|speed|tfmot [OUT_DIR]   (run from the repository root after building ./build/cnn)
set -eu
what=${1:-seed}
out=${2:-/tmp/prune-bench}
cnn=${CNN:-./build/cnn}
mkdir -p "$out"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OMP_WAIT_POLICY=passive
echo "load before: $(uptime)"
steps=844 # 54,000 training images (--val-split 0.1) in batches of 64
case "$what" in
seed)
    for s in 1 2 3; do
        "$cnn" train --model samples/models/seed_cnn.cnn --epochs 5 --batch 64 --lr 0.001 --seed "$s" --quiet \
            --out "$out/dense-$s.safetensors" --metrics-json "$out/dense-$s.json" | tee "$out/dense-$s.txt"
        "$cnn" train --model samples/models/seed_cnn.cnn --epochs 5 --batch 64 --lr 0.001 --seed "$s" --quiet \
            --prune magnitude --target-sparsity 0.8 --prune-begin-step $steps --prune-end-step $((4 * steps)) \
            --prune-frequency 100 --out "$out/pruned80-$s.safetensors" --metrics-json "$out/pruned80-$s.json" |
            tee "$out/pruned80-$s.txt"
    done
    ls -l "$out"/dense-1.safetensors "$out"/pruned80-1.safetensors
    ;;
resnet)
    epochs=${EPOCHS:-3}
    fine=${FINETUNE_EPOCHS:-2}
    # LIMIT=N: train on the first N training images only (a loaded shared machine); the test set stays whole
    limit=""
    if [ -n "${LIMIT:-}" ]; then
        limit="--limit $LIMIT"
        steps=$(((LIMIT + 63) / 64))
    fi
    if [ -n "${BASE:-}" ]; then # BASE=FILE: the dense model of an earlier run, not trained again
        cp "$BASE" "$out/resnet-dense.safetensors"
    else
        "$cnn" train --model samples/models/resnet20_28.cnn --epochs "$epochs" --batch 64 --lr 0.001 --seed 1 \
            --quiet $limit --out "$out/resnet-dense.safetensors" | tee "$out/resnet-dense.txt"
    fi
    fsteps=$((fine * steps))
    "$cnn" train --init-from "$out/resnet-dense.safetensors" --epochs "$fine" --batch 64 --lr 0.0005 --seed "${SEED:-1}" \
        --quiet $limit --prune magnitude --prune-structure channel --target-sparsity "${TARGET:-0.5}" --prune-end-step $((fsteps / 2)) \
        --prune-frequency 100 --out "$out/resnet-pruned.safetensors" | tee "$out/resnet-pruned.txt"
    # the fair baseline: the dense model fine-tuned as long, without pruning (NO_BASELINE=1: an earlier run's)
    if [ -z "${NO_BASELINE:-}" ]; then
        "$cnn" train --init-from "$out/resnet-dense.safetensors" --epochs "$fine" --batch 64 --lr 0.0005 --seed "${SEED:-1}" \
            --quiet $limit --out "$out/resnet-dense-ft.safetensors" | tee "$out/resnet-dense-ft.txt"
    fi
    "$cnn" prune --strip --model "$out/resnet-pruned.safetensors" --out "$out/resnet-stripped.safetensors"
    "$cnn" eval --model "$out/resnet-stripped.safetensors" | grep accuracy | head -1 | tee "$out/resnet-stripped-eval.txt"
    "$cnn" summary "$out/resnet-stripped.safetensors" | grep -i "params" | tee "$out/resnet-stripped-summary.txt"
    # the filters of each conv, dense and stripped (the Output Shape's channels of the Conv2D lines)
    for m in dense stripped; do
        printf '%s conv widths:' "$m"
        "$cnn" summary "$out/resnet-$m.safetensors" 2>/dev/null | awk '/\(Conv2D\)/ && /\(None,/ { gsub(/\)/, "", $6); printf " %s", $6 }'
        echo
    done | tee "$out/resnet-widths.txt"
    echo "load before bench: $(uptime)"
    for r in 1 2 3; do
        "$cnn" bench --model "$out/resnet-dense.safetensors" --device cpu --mode infer --batch 64 --json "$out/bench-dense-$r.json" >/dev/null
        "$cnn" bench --model "$out/resnet-stripped.safetensors" --device cpu --mode infer --batch 64 --json "$out/bench-stripped-$r.json" >/dev/null
    done
    ;;
speed)
    # the dense and the stripped ResNet-20 of an earlier `resnet` run in OUT_DIR, alternated ROUNDS times (default
    # 4): inference in batches of 64 on 2 threads, 20 timed steps per repeat, 7 repeats
    for r in $(seq 1 "${ROUNDS:-4}"); do
        echo "round $r: $(uptime)" | tee -a "$out/speed-load.txt"
        for m in dense stripped; do
            "$cnn" bench --model "$out/resnet-$m.safetensors" --device cpu --mode infer --batch 64 --iters 20 \
                --repeats 7 --quiet --json "$out/speed-$m-$r.json"
        done
    done
    python3 - "$out" "${ROUNDS:-4}" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
r = {m: [json.load(open(f"{out}/speed-{m}-{i}.json"))["infer"] for i in range(1, rounds + 1)] for m in ("dense", "stripped")}
for m, v in r.items():
    print(m, "images/s", [round(x["images_per_sec"]) for x in v], "min latency ms", [round(x["latency_ms_min"], 2) for x in v],
          "GFLOP", v[0]["gflop"])
best = {m: min(x["latency_ms_min"] for x in v) for m, v in r.items()}
med = {m: statistics.median(x["latency_ms_median"] for x in v) for m, v in r.items()}
print("speed-up, best latency: %.2fx; median of the median latencies: %.2fx" %
      (best["dense"] / best["stripped"], med["dense"] / med["stripped"]))
PY
    ;;
tfmot)
    "${VENV:-/tmp/venv-prune}/bin/python" bench/prune_tfmot.py --out "$out/tfmot.json"
    ;;
*)
    echo "usage: bench/prune_bench.sh seed|resnet|speed|tfmot [OUT_DIR]" >&2
    exit 2
    ;;
esac
echo "load after: $(uptime)"
