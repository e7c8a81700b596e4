#!/usr/bin/env python3
"""The table and ratios of bench/quant_bench.sh from its raw measurements.

    python3 bench/quant_summary.py models.txt speed.txt [tflite.json]

models.txt: one line per model file: name mode path accuracy bytes float_bytes cnn_lite_ms.
speed.txt: one line per measurement: round name mode batch1_ms batch64_images_per_s ('-' where not measured).
The speeds in the table are medians over the rounds; the ratios are taken within each round (the same load), and
their median and range reported.
"""
import json
import os
import statistics
import sys

LABEL = {"seed": "seed CNN", "r20": "ResNet-20"}


def main():
    models = [line.split() for line in open(sys.argv[1]) if line.strip()]
    speed = {}
    for line in open(sys.argv[2]):
        if not line.strip():
            continue
        r, name, mode, b1, b64 = line.split()
        speed.setdefault((name, mode), {})[int(r)] = (float(b1), None if b64 == "-" else float(b64))
    tfl = json.load(open(sys.argv[3])) if len(sys.argv) > 3 and os.path.exists(sys.argv[3]) else None

    def med(key, col):
        return statistics.median(v[col] for v in speed[key].values())

    print()
    print("| model | mode | test accuracy | file bytes | x float | batch-1 ms | batch-64 images/s | cnn-lite batch-1 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for name, mode, _, acc, nbytes, fbytes, lite in models:
        print("| %s | %s | %s | %s | %.2f | %.4f | %.0f | %s |" % (
            LABEL[name], mode, acc, format(int(nbytes), ","), int(nbytes) / int(fbytes), med((name, mode), 0),
            med((name, mode), 1), lite))
        if mode == "int8" and (name, "int8-exact") in speed:
            print("| %s | int8, exact requantization | %s | %s | %.2f | %.4f | %.0f | - |" % (
                LABEL[name], acc, format(int(nbytes), ","), int(nbytes) / int(fbytes), med((name, "int8-exact"), 0),
                med((name, "int8-exact"), 1)))
    if tfl:
        for mode in ("float", "int8"):
            print("| seed CNN, TFLite %s (Keras %.4f) | %s | %.4f | %s | %.2f | %.4f | - | - |" % (
                tfl["tensorflow"], tfl["keras_accuracy"], mode, tfl[mode + "_accuracy"],
                format(tfl[mode + "_bytes"], ","), tfl[mode + "_bytes"] / tfl["float_bytes"],
                med(("tflite", mode), 0) if ("tflite", mode) in speed else tfl[mode + "_batch1_ms"]))

    def ratio(num, den, col):
        """num's value over den's, per round: median (min to max, rounds)"""
        if num not in speed or den not in speed:
            return "-"
        v = [speed[num][r][col] / speed[den][r][col] for r in sorted(speed[num]) if r in speed[den]]
        return "%.2fx (%.2f to %.2f, %d rounds)" % (statistics.median(v), min(v), max(v), len(v))

    print()
    print("Ratios within each round (median, range):")
    for name in ("seed", "r20"):
        if (name, "int8") not in speed:
            continue
        print("- %s int8: batch-1 latency %s lower than float's; batch-64 images/s %s float's" % (
            LABEL[name], ratio((name, "float"), (name, "int8"), 0), ratio((name, "int8"), (name, "float"), 1)))
        if (name, "int8-exact") in speed:
            print("- %s int8 with exact requantization: batch-1 latency %s lower than float's; batch-64 images/s %s float's" % (
                LABEL[name], ratio((name, "float"), (name, "int8-exact"), 0),
                ratio((name, "int8-exact"), (name, "float"), 1)))
            print("- %s int8 exact requantization against fused: batch-1 latency %s the fused one's; batch-64 "
                  "images/s %s" % (LABEL[name], ratio((name, "int8-exact"), (name, "int8"), 0),
                                   ratio((name, "int8-exact"), (name, "int8"), 1)))
        for mode in ("dynamic", "fp16"):
            if (name, mode) not in speed:
                continue
            print("- %s %s: batch-1 latency %s float's; batch-64 images/s %s float's" % (
                LABEL[name], mode, ratio((name, mode), (name, "float"), 0), ratio((name, mode), (name, "float"), 1)))
    if ("tflite", "int8") in speed:
        print("- seed CNN batch-1 latency, TFLite's over ours (above 1: ours is faster): int8 %s; float %s" % (
            ratio(("tflite", "int8"), ("seed", "int8"), 0), ratio(("tflite", "float"), ("seed", "float"), 0)))
        if ("seed", "int8-exact") in speed:
            print("- seed CNN int8 batch-1 latency, TFLite's over ours with exact requantization: %s" % (
                ratio(("tflite", "int8"), ("seed", "int8-exact"), 0)))


if __name__ == "__main__":
    main()
