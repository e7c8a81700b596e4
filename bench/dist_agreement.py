#!/usr/bin/env python3
"""How far apart two cnn.c model files of one definition are: per tensor and overall, the largest |a - b| divided
by the largest |b| (b: the reference), and the largest elementwise relative difference among elements with |b| at
least 1e-3 of the tensor's largest. bench/dist_bench.sh uses it on N ranks of batch b against one process of batch
N x b after one epoch. Benchmark-only (numpy)."""
import sys

import numpy as np

from st_reader import read_safetensors


def main():
    if len(sys.argv) != 3:
        raise SystemExit("usage: dist_agreement.py MODEL REFERENCE")
    a, b = read_safetensors(sys.argv[1]), read_safetensors(sys.argv[2])
    if a.keys() != b.keys():
        raise SystemExit("the files hold different tensors")
    worst_scaled, worst_elem = 0.0, 0.0
    for name in sorted(b):
        x, y = a[name].astype(np.float64), b[name].astype(np.float64)
        top = np.abs(y).max()
        if top == 0:
            continue
        diff = np.abs(x - y)
        scaled = diff.max() / top
        big = np.abs(y) >= 1e-3 * top
        elem = (diff[big] / np.abs(y[big])).max()
        worst_scaled, worst_elem = max(worst_scaled, scaled), max(worst_elem, elem)
    print(f"largest |difference| / largest |weight|: {worst_scaled:.3g}; largest elementwise relative difference "
          f"(weights >= 1e-3 of their tensor's largest): {worst_elem:.3g}")


if __name__ == "__main__":
    main()
