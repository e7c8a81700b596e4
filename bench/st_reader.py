"""The F32 tensors of a safetensors file by name, for the bench scripts that load cnn.c model files into PyTorch
(serve_python.py, trust_pytorch.py). Benchmark-only (numpy; torch for load_seed_cnn)."""
import json
import struct

import numpy as np


def read_safetensors(path):
    """A u64 header size, a JSON header, the data: every F32 tensor as a numpy array (others refused by name)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{name}: {info['dtype']}, expected F32")
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + a:8 + n + b], dtype=np.float32).reshape(info["shape"])
    return out


def load_seed_cnn(model, path):
    """cnn.c's seed CNN weights (conv OHWI, dense (out, in)) into a torch model with layers c1, c2, c3 (Conv2d) and
    d1, d2 (Linear), in the definition's order (conv2d_1 .. conv2d_3, dense_1, dense_2)."""
    import torch

    t = read_safetensors(path)
    layer_names = sorted({k.rsplit(".", 1)[0] for k in t}, key=lambda n: (n.split("_")[0], len(n), n))
    convs = [n for n in layer_names if n.startswith("conv2d")]
    denses = [n for n in layer_names if n.startswith("dense")]
    with torch.no_grad():
        for layer, name in zip((model.c1, model.c2, model.c3), convs):
            layer.weight.copy_(torch.from_numpy(t[name + ".weight"].transpose(0, 3, 1, 2).copy()))
            layer.bias.copy_(torch.from_numpy(t[name + ".bias"].copy()))
        for layer, name in zip((model.d1, model.d2), denses):
            layer.weight.copy_(torch.from_numpy(t[name + ".weight"].copy()))
            layer.bias.copy_(torch.from_numpy(t[name + ".bias"].copy()))
