"""Writes a folder of photographs-like test images for the loader benchmark: CLASSES sub-folders, half JPEG
(quality 90) and half PNG, of random sizes from 160 to 280 pixels a side (so that resizing to 144 shrinks them and
libjpeg-turbo's DCT scaling never applies: both loaders decode in full). Smooth gradients, discs and noise, so
that the files compress like photographs rather than like flat colour. Deterministic (seed 1).

Benchmark-only tool (numpy and Pillow are not dependencies of the engine).
    python bench/make_image_folder.py --out /tmp/loader-bench --images 2000
"""
import argparse
import os

import numpy as np
from PIL import Image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--classes", type=int, default=10)
    a = ap.parse_args()
    rng = np.random.default_rng(1)
    for c in range(a.classes):
        os.makedirs(os.path.join(a.out, f"class{c:02d}"), exist_ok=True)
    for i in range(a.images):
        h, w = (int(v) for v in rng.integers(160, 281, size=2))
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.empty((h, w, 3), np.float32)
        for k in range(3):
            fy, fx, ph = rng.uniform(0.005, 0.05), rng.uniform(0.005, 0.05), rng.uniform(0, 6.3)
            img[..., k] = 127 + 100 * np.sin(fy * y + fx * x + ph)
        for _ in range(4):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(10, 60)
            img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, size=3)
        img += rng.normal(0, 6, size=img.shape)
        px = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        name = os.path.join(a.out, f"class{i % a.classes:02d}", f"{i:05d}")
        if i % 2:
            px.save(name + ".png")
        else:
            px.save(name + ".jpg", quality=90)


if __name__ == "__main__":
    main()
