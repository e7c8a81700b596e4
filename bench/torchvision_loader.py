"""The peer of bench/loader_bench.c: torchvision's ImageFolder with a DataLoader doing the same transforms on the
same files (resize to 144x144, random 128x128 crop, random horizontal flip, to tensor, ImageNet normalization,
batches of 64), timing the second epoch (the first warms the page cache and starts the workers).

Benchmark-only tool: PyTorch, torchvision and Pillow are NOT dependencies of the engine or its tests.
    python bench/torchvision_loader.py --data DIR --workers 2
prints one line of JSON like cnn_loader_bench.
"""
import argparse
import json
import time

import torch
from PIL import features
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="a folder with one sub-folder per class")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--resize", type=int, default=144)
    ap.add_argument("--epochs", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(1)
    tf = transforms.Compose([
        transforms.Resize((a.resize, a.resize), interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
        transforms.RandomCrop(a.size),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
    ds = datasets.ImageFolder(a.data, transform=tf)
    dl = DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=a.workers,
                    persistent_workers=a.workers > 0, prefetch_factor=2 if a.workers > 0 else None)
    images, t0, checksum = 0, 0.0, 0.0
    for epoch in range(a.epochs):
        if epoch == 1:
            t0 = time.perf_counter()
        for x, y in dl:
            if epoch >= 1:
                images += x.shape[0]
            checksum += float(x[0, 0, 0, 0])
    seconds = time.perf_counter() - t0
    print(json.dumps({"impl": "torchvision", "workers": a.workers, "batch": a.batch, "images": images,
                      "seconds": round(seconds, 4), "images_per_sec": round(images / seconds, 1),
                      "images_per_sec_per_worker": round(images / seconds / max(a.workers, 1), 1),
                      "torch": torch.__version__, "pillow_libjpeg_turbo": features.check_feature("libjpeg_turbo"),
                      "checksum": round(checksum, 6)}))


if __name__ == "__main__":
    main()
