#!/usr/bin/env python3
"""Cross-checks cnn.c's explanations and attacks against PyTorch on the same weights.

The seed CNN's model file (samples/models/seed_cnn.cnn, trained by cnn train) is read into an equivalent torch module
(conv weights OHWI -> OIHW, dense (out, in) as is). Then:
  * Grad-CAM at the last convolution (torch: the Conv2d module's output, before its ReLU; cnn.c applies that ReLU after
    the following max-pool, so its conv2d_2 output is the same tensor) for --samples test images, spread over the set
    as `cnn explain --data` spreads them; maps upsampled to 28x28 (bilinear, align_corners=False) and compared per
    image by Pearson correlation with the .npy maps `cnn explain` wrote;
  * FGSM (eps --eps, on the cross-entropy of the label, images clipped to [0, 1]) accuracy over the whole test set,
    against `cnn eval --attack fgsm --eps E --metrics-json`.

    python bench/trust_pytorch.py --cnn build/cnn --model seed.safetensors --samples 200 --eps 0.1

A bench script: torch and numpy come from the environment (never a dependency of the engine or its tests)."""
import argparse
import gzip
import json
import os
import struct
import subprocess
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from st_reader import load_seed_cnn

FASHION = "/usr/share/datasets/fashion-mnist"


class SeedCNN(nn.Module):
    """samples/models/seed_cnn.cnn: three conv 3x3 (valid) + ReLU + max-pool 2 stages, dense 512 ReLU, dense 10."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3), nn.Conv2d(64, 128, 3)
        self.d1, self.d2 = nn.Linear(128, 512), nn.Linear(512, 10)
        self.hooked = None

    def forward(self, x):  # (N, 1, 28, 28) -> logits (N, 10)
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        a = self.c3(x)
        if self.hooked is not None:
            a.retain_grad()
            self.hooked.append(a)
        x = F.max_pool2d(F.relu(a), 2)
        return self.d2(F.relu(self.d1(torch.flatten(x, 1))))


def read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    magic, n = struct.unpack(">II", data[:8])
    if magic == 0x803:
        h, w = struct.unpack(">II", data[8:16])
        return np.frombuffer(data[16:], dtype=np.uint8).reshape(n, h, w).astype(np.float32) / 255.0
    return np.frombuffer(data[8:], dtype=np.uint8).astype(np.int64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cnn", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--eps", type=float, default=0.1)
    args = ap.parse_args()
    torch.set_num_threads(2)
    x_all = read_idx(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz"))
    y_all = read_idx(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz"))
    model = SeedCNN()
    load_seed_cnn(model, args.model)
    model.eval()

    # ---- Grad-CAM ----
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([args.cnn, "explain", "--model", args.model, "--data", "fashion-mnist", "--samples",
                        str(args.samples), "--method", "gradcam", "--out", out, "--device", "cpu"], check=True,
                       stdout=subprocess.DEVNULL)
        count = len(x_all)
        corr = []
        for i in range(args.samples):
            index = int(i * count / args.samples)  # as cnn explain spreads its samples
            ours = np.load(os.path.join(out, f"{i:03d}_sample{index}.npy"))
            model.hooked = []
            x = torch.from_numpy(x_all[index][None, None].copy())
            logits = model(x)
            target = int(logits.argmax(1))
            logits[0, target].backward()
            a = model.hooked[0]
            alpha = a.grad.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((alpha * a).sum(1, keepdim=True))
            cam = F.interpolate(cam, size=(28, 28), mode="bilinear", align_corners=False)[0, 0].detach().numpy()
            if cam.std() == 0 or ours.std() == 0:
                corr.append(1.0 if np.allclose(cam, ours, atol=1e-6) else 0.0)
            else:
                corr.append(float(np.corrcoef(cam.ravel(), ours.ravel())[0, 1]))
        model.hooked = None
        corr = np.array(corr)
        print(f"Grad-CAM: {args.samples} images, Pearson correlation of the 28x28 maps: min {corr.min():.6f}, "
              f"mean {corr.mean():.6f}, below 0.999: {(corr < 0.999).sum()}")

    # ---- FGSM ----
    correct = 0
    for first in range(0, len(x_all), 500):
        x = torch.from_numpy(x_all[first:first + 500][:, None].copy()).requires_grad_(True)
        y = torch.from_numpy(y_all[first:first + 500])
        F.cross_entropy(model(x), y).backward()
        adv = (x + args.eps * x.grad.sign()).clamp(0, 1).detach()
        with torch.no_grad():
            correct += int((model(adv).argmax(1) == y).sum())
    torch_acc = correct / len(x_all)
    with tempfile.TemporaryDirectory() as out:
        js = os.path.join(out, "m.json")
        subprocess.run([args.cnn, "eval", "--model", args.model, "--attack", "fgsm", "--eps", str(args.eps),
                        "--metrics-json", js, "--device", "cpu"], check=True, stdout=subprocess.DEVNULL)
        ours = json.load(open(js))["attack"]["accuracy"]
    print(f"FGSM eps {args.eps}: accuracy under attack PyTorch {100 * torch_acc:.2f}%, cnn.c {100 * ours:.2f}%, "
          f"difference {100 * abs(torch_acc - ours):.2f} points")


if __name__ == "__main__":
    main()
