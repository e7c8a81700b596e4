"""The F32 tensors of a safetensors file by name, for the bench scripts that load cnn.c model files into PyTorch
(serve_python.py, trust_pytorch.py). Benchmark-only (numpy)."""
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
