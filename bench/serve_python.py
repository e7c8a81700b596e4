#!/usr/bin/env python3
"""The Python side of bench/serve_bench.sh: the seed CNN or ResNet-20 (28x28x1) in PyTorch behind FastAPI/uvicorn,
answering TensorFlow Serving's :predict as `cnn serve` does ("instances" of nested numbers or {"b64": PNG}), with the
weights of the same cnn.c model file, so that both servers give the same probabilities.

Benchmark-only: PyTorch, FastAPI, uvicorn, numpy and Pillow are NOT dependencies of cnn.c or its tests.

    python bench/serve_python.py --model seed.safetensors --arch seed --name seed --port 8601 --threads 2
"""
import argparse
import base64
import io
import json

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from PIL import Image

from st_reader import load_seed_cnn, read_safetensors


class SeedCNN(nn.Module):
    """cnn.c's samples/models/seed_cnn.cnn: three conv 3x3 (valid) + ReLU + max-pool 2 stages, dense 512, dense 10."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3), nn.Conv2d(64, 128, 3)
        self.d1, self.d2 = nn.Linear(128, 512), nn.Linear(512, 10)

    def forward(self, x):  # x: (N, 1, 28, 28)
        for c in (self.c1, self.c2, self.c3):
            x = F.max_pool2d(F.relu(c(x)), 2)
        x = F.relu(self.d1(torch.flatten(x, 1)))  # 128x1x1: NCHW and NHWC flatten alike
        return F.softmax(self.d2(x), dim=1)


class ResNet20(nn.Module):
    """cnn.c's samples/models/resnet20_28.cnn, its conv and batchnorm layers listed in the definition's order (the
    projection shortcut of stages 2 and 3 after the block's two convolutions), as the file numbers them."""

    def __init__(self):
        super().__init__()
        self.units = []  # (conv, batchnorm) in definition order
        def unit(cin, cout, k, stride):
            conv = nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False)
            bn = nn.BatchNorm2d(cout, eps=1e-5)
            self.units.append((conv, bn))
            return conv, bn
        self.stem = unit(1, 16, 3, 1)
        self.blocks = []  # (a, b, projection or None)
        cin = 16
        for width in (16, 32, 64):
            for i in range(3):
                stride = 2 if (i == 0 and width != 16) else 1
                a, b = unit(cin, width, 3, stride), unit(width, width, 3, 1)
                proj = unit(cin, width, 1, stride) if stride == 2 else None
                self.blocks.append((a, b, proj))
                cin = width
        self.layers = nn.ModuleList([m for u in self.units for m in u])
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        conv, bn = self.stem
        x = F.relu(bn(conv(x)))
        for (ca, ba), (cb, bb), proj in self.blocks:
            y = F.relu(ba(ca(x)))
            y = bb(cb(y))
            x = F.relu(y + (proj[1](proj[0](x)) if proj else x))
        return F.softmax(self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1)), dim=1)


def in_order(layers, prefix, extra):
    """Layer names of a kind in definition order: prefix, prefix_1, prefix_2, ..., prefix_10 (numbers, not text
    order). A layer the definition names (resnet20_28.cnn's batchnorm name=s2_main, name=s3_main) still takes a
    number from the counter: the names in `extra` fill the numbers missing, in their sorted order."""
    numbered = {}
    for n in layers:
        if n == prefix:
            numbered[0] = n
        elif n.startswith(prefix + "_") and n[len(prefix) + 1:].isdigit():
            numbered[int(n[len(prefix) + 1:])] = n
    named = sorted(n for n in extra if n in layers)
    out, i = [], 0
    while numbered or named:
        if i in numbered:
            out.append(numbered.pop(i))
        elif named:
            out.append(named.pop(0))
        else:
            raise ValueError(f"{prefix}: layers numbered past a gap: {sorted(numbered)}")
        i += 1
    return out


def load_resnet20(model, path):
    t = read_safetensors(path)
    layers = {k.rsplit(".", 1)[0] for k in t}
    convs, denses = in_order(layers, "conv2d", []), in_order(layers, "dense", [])
    bns = in_order(layers, "batch_normalization", ["s2_main", "s3_main"])
    if len(convs) != len(model.units) or len(bns) != len(model.units) or len(denses) != 1:
        raise ValueError(f"{path}: not ResNet-20 ({len(convs)} convolutions, {len(bns)} batchnorms)")
    with torch.no_grad():
        for (conv, bn), cname, bname in zip(model.units, convs, bns):
            conv.weight.copy_(torch.from_numpy(t[cname + ".weight"].transpose(0, 3, 1, 2).copy()))
            bn.weight.copy_(torch.from_numpy(t[bname + ".gamma"].copy()))
            bn.bias.copy_(torch.from_numpy(t[bname + ".beta"].copy()))
            bn.running_mean.copy_(torch.from_numpy(t[bname + ".running_mean"].copy()))
            bn.running_var.copy_(torch.from_numpy(t[bname + ".running_var"].copy()))
        model.fc.weight.copy_(torch.from_numpy(t[denses[0] + ".weight"].copy()))
        model.fc.bias.copy_(torch.from_numpy(t[denses[0] + ".bias"].copy()))


def instance_to_array(inst):
    if isinstance(inst, dict) and "b64" in inst:
        img = Image.open(io.BytesIO(base64.b64decode(inst["b64"]))).convert("L")
        if img.size != (28, 28):
            img = img.resize((28, 28), Image.BILINEAR)
        return np.asarray(img, dtype=np.float32) / 255.0
    a = np.asarray(inst, dtype=np.float32)
    if a.shape == (28, 28, 1):
        a = a[:, :, 0]
    if a.shape != (28, 28):
        raise ValueError(f"expected a 28x28 image, got shape {a.shape}")
    return a


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--name", default="seed")
    ap.add_argument("--arch", default="seed", choices=["seed", "resnet20"])
    ap.add_argument("--port", type=int, default=8601)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.arch == "resnet20":
        model = ResNet20()
        load_resnet20(model, args.model)
    else:
        model = SeedCNN()
        load_seed_cnn(model, args.model)
    model.eval()
    app = FastAPI()

    @app.post("/v1/models/{name}:predict")
    async def predict(name: str, request: Request):
        if name != args.name:
            raise HTTPException(404, f"model {name} is not served here")
        try:
            body = json.loads(await request.body())
            x = np.stack([instance_to_array(i) for i in body["instances"]])[:, None]
        except Exception as e:  # a bad request, as cnn serve answers it
            raise HTTPException(400, str(e))
        with torch.no_grad():
            p = model(torch.from_numpy(x)).numpy()
        return {"predictions": p.tolist()}

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
