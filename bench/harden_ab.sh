#!/usr/bin/env bash
# The cost of the release hardening flags (CNN_HARDEN: stack protector, _FORTIFY_SOURCE, full RELRO, PIE):
# `cnn bench` of the same commit built with and without them, run in turns (A B A B ...) so that a change in the
# machine's load hits both alike, for the seed CNN and ResNet-20 (28x28), training and inference, 2 threads.
#   bench/harden_ab.sh [ROUNDS]          (default 5; builds build-harden-on and build-harden-off)
# Prints each run and the ratio of the medians (hardened / plain: 1.00 means no cost).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
for v in on off; do
  flag=$([ "$v" = on ] && echo ON || echo OFF)
  cmake -S . -B "build-harden-$v" -DCMAKE_BUILD_TYPE=Release -DCNN_HARDEN="$flag" -DCNN_BUILD_TESTS=OFF -DCNN_CUDA=OFF >/dev/null
  cmake --build "build-harden-$v" -j"$(nproc)" --target cnn >/dev/null
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq "$rounds"); do
  for m in seed_cnn resnet20_28; do
    for v in on off; do
      "build-harden-$v/cnn" bench --model "samples/models/$m.cnn" --threads 2 --batch 64 --iters 10 --repeats 3 \
        --quiet --json "$out/$m-$v-$r.json"
    done
  done
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
print(f"{'model':12} {'mode':6} {'hardened img/s':>16} {'plain img/s':>14} {'ratio':>7}")
for m in ("seed_cnn", "resnet20_28"):
    for mode in ("train", "infer"):
        v = {k: [json.load(open(f"{out}/{m}-{k}-{r}.json"))[mode]["images_per_sec"] for r in range(1, rounds + 1)]
             for k in ("on", "off")}
        on, off = statistics.median(v["on"]), statistics.median(v["off"])
        runs = lambda k: "/".join(f"{x:.0f}" for x in v[k])
        print(f"{m:12} {mode:6} {on:16.1f} {off:14.1f} {on / off:7.3f}   (on: {runs('on')}; off: {runs('off')})")
PY
