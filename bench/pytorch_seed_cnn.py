#!/usr/bin/env python3
"""PyTorch reference for the cnn.c training-speed comparison: the "seed CNN"
on Fashion-MNIST, trained with the same recipe as
`cnn train --model samples/models/seed_cnn.cnn --optimizer adam --lr 0.001 --batch 64`.

Benchmark-only tool: PyTorch/numpy are NOT dependencies of the engine or its tests.

Model (identical to cnn.c's seed CNN, 163,850 parameters):
  input 1x28x28
  conv 32 3x3 relu (valid, stride 1, bias) -> 32x26x26
  maxpool 2 (stride 2, floor)              -> 32x13x13
  conv 64 3x3 relu                          -> 64x11x11
  maxpool 2                                 -> 64x5x5
  conv 128 3x3 relu                         -> 128x3x3
  maxpool 2                                 -> 128x1x1
  flatten                                   -> 128
  dense 512 relu
  dense 10 (softmax cross-entropy loss)

Weights are initialised as cnn.c does (--init cnn, the default) from --seed.

Timing: images/s of an epoch = images of the timed training steps / wall time
of those steps (batch gather from the in-memory tensor + forward + backward +
Adam step). Evaluation is not timed. The first --warmup-steps steps of each
epoch are trained normally but excluded from the timing.
The last partial batch of an epoch (60000 % 64 = 32 images) is kept.

Example:
  OPENBLAS_CORETYPE=SkylakeX OPENBLAS_NUM_THREADS=1 \
    python bench/pytorch_seed_cnn.py --epochs 5 --seed 1 --threads 2 --json /tmp/pt.json
"""
import argparse
import gzip
import json
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

EXPECTED_PARAMS = 163_850


def read_idx(path):
    """Parse a (gzipped) IDX file into a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: bad IDX magic")
    dtype_code, ndim = data[2], data[3]
    if dtype_code != 0x08:
        raise ValueError(f"{path}: expected unsigned byte data, got type 0x{dtype_code:02x}")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    arr = np.frombuffer(data, dtype=np.uint8, offset=offset)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: size mismatch {arr.size} vs {dims}")
    return arr.reshape(dims)


def find_file(data_dir, stem):
    for name in (stem + ".gz", stem):
        p = os.path.join(data_dir, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"{stem}(.gz) not found in {data_dir}")


def load_split(data_dir, prefix):
    x = read_idx(find_file(data_dir, f"{prefix}-images-idx3-ubyte"))
    y = read_idx(find_file(data_dir, f"{prefix}-labels-idx1-ubyte"))
    x = x.astype(np.float32)
    x /= 255.0  # in place: keep only one float copy of the data set
    x = torch.from_numpy(x).unsqueeze(1)  # N,1,28,28 in [0,1]
    y = torch.from_numpy(y.astype(np.int64))
    return x, y


class SeedCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.conv3 = nn.Conv2d(64, 128, 3)
        self.fc1 = nn.Linear(128, 512)
        self.fc2 = nn.Linear(512, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # 26 -> 13
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # 11 -> 5
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)  # 3 -> 1
        x = torch.flatten(x, 1)                     # 128
        x = F.relu(self.fc1(x))
        return self.fc2(x)                          # logits; softmax is in the loss

    def init_like_cnn(self):
        """cnn.c's init: He normal N(0, 2/fan_in) for layers followed by ReLU, Glorot uniform otherwise,
        biases zero (fan_in of a conv = in_channels * kh * kw)."""
        with torch.no_grad():
            for m in (self.conv1, self.conv2, self.conv3, self.fc1):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            nn.init.xavier_uniform_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)


def evaluate(model, x, y, batch, memfmt):
    model.eval()
    total_loss = 0.0
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            xb = x[i:i + batch].contiguous(memory_format=memfmt)
            yb = y[i:i + batch]
            logits = model(xb)
            total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(1) == yb).sum().item()
    model.train()
    n = x.shape[0]
    return total_loss / n, correct / n


def current_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def host_busy_seconds():
    """CPU seconds all processes on the machine have been busy (from /proc/stat), for contention checks."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except OSError:
        return float("nan")
    user, nice, system, idle, iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels-last", action="store_true", help="use torch.channels_last (NHWC) memory format")
    ap.add_argument("--steps", type=int, default=0,
                    help="stop each epoch after K steps (speed-only measure); 0 = full epoch")
    ap.add_argument("--warmup-steps", type=int, default=0,
                    help="first W steps of each epoch are trained but excluded from the timing")
    ap.add_argument("--eval-batch", type=int, default=0,
                    help="test batch size (default: max(--batch, 256), as cnn.c's evaluation)")
    ap.add_argument("--init", choices=("cnn", "torch"), default="cnn",
                    help="weight init: 'cnn' = cnn.c's (He normal for ReLU layers, Glorot uniform for the "
                         "output layer, zero biases); 'torch' = PyTorch's defaults")
    ap.add_argument("--no-eval", action="store_true", help="skip test evaluation (speed-only runs)")
    ap.add_argument("--profile-steps", type=int, default=0,
                    help="after training, profile N extra steps and print the op table (shows mkldnn use)")
    ap.add_argument("--json", help="write metrics JSON here")
    args = ap.parse_args()

    rss_import = current_rss_mib()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.RandomState(args.seed)
    memfmt = torch.channels_last if args.channels_last else torch.contiguous_format

    xtr, ytr = load_split(args.data_dir, "train")
    xte, yte = load_split(args.data_dir, "t10k")
    if args.channels_last:
        xtr = xtr.contiguous(memory_format=memfmt)
        xte = xte.contiguous(memory_format=memfmt)
    ntrain = xtr.shape[0]
    rss_data = current_rss_mib()
    peak_data = peak_rss_mib()

    model = SeedCNN()
    if args.init == "cnn":
        model.init_like_cnn()
    model = model.to(memory_format=memfmt)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"seed CNN parameters: {nparams:,}")
    assert nparams == EXPECTED_PARAMS, f"expected {EXPECTED_PARAMS} parameters, got {nparams}"
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)

    print(f"torch {torch.__version__}, threads={torch.get_num_threads()} "
          f"interop={torch.get_num_interop_threads()}, mkldnn={torch.backends.mkldnn.is_available()}, "
          f"cpu_capability={torch.backends.cpu.get_cpu_capability()}, channels_last={args.channels_last}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}", flush=True)

    steps_per_epoch = (ntrain + args.batch - 1) // args.batch
    if args.steps > 0:
        steps_per_epoch = min(steps_per_epoch, args.steps)

    epochs = []
    for epoch in range(1, args.epochs + 1):
        perm = torch.from_numpy(rng.permutation(ntrain))
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct = torch.zeros((), dtype=torch.int64)
        seen = 0
        timed_images = 0
        t_start = None
        t0_all = time.perf_counter()
        for step in range(steps_per_epoch):
            if step == args.warmup_steps:
                host0, own0 = host_busy_seconds(), own_cpu_seconds()
                flt0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                t_start = time.perf_counter()
            idx = perm[step * args.batch:(step + 1) * args.batch]
            xb = xtr.index_select(0, idx)
            if args.channels_last:
                xb = xb.contiguous(memory_format=memfmt)
            yb = ytr.index_select(0, idx)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                bs = yb.shape[0]
                loss_sum += loss.detach().double() * bs
                correct += (logits.argmax(1) == yb).sum()
            seen += bs
            if step >= args.warmup_steps:
                timed_images += bs
        t_end = time.perf_counter()
        seconds = (t_end - t_start) if t_start is not None else 0.0
        if t_start is not None and seconds > 0:
            own_cpu = own_cpu_seconds() - own0
            minflt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt0
            other_cpu = max(0.0, host_busy_seconds() - host0 - own_cpu)
        else:
            own_cpu = other_cpu = float("nan")
            minflt = 0
        ips = timed_images / seconds if seconds > 0 else float("nan")
        rec = {
            "epoch": epoch,
            "steps": steps_per_epoch,
            "train_images": seen,
            "timed_images": timed_images,
            "train_loss": loss_sum.item() / seen,
            "train_accuracy": correct.item() / seen,
            "images_per_sec": ips,
            "seconds": seconds,
            "epoch_seconds_incl_warmup": t_end - t0_all,
            # contention check: this process' CPU use and other processes' CPU use (in cores) while timed
            "own_cpu_cores": own_cpu / seconds if seconds > 0 else float("nan"),
            "other_cpu_cores": other_cpu / seconds if seconds > 0 else float("nan"),
            "minor_page_faults_per_step": minflt / max(1, steps_per_epoch - args.warmup_steps),
        }
        if not args.no_eval:
            te0 = time.perf_counter()
            tl, ta = evaluate(model, xte, yte, args.eval_batch or max(args.batch, 256), memfmt)
            rec.update(test_loss=tl, test_accuracy=ta, eval_seconds=time.perf_counter() - te0)
        epochs.append(rec)
        line = (f"epoch {epoch}: train loss {rec['train_loss']:.4f} acc {rec['train_accuracy']:.4f} | "
                f"{ips:.1f} img/s ({seconds:.2f}s, {timed_images} images)")
        if not args.no_eval:
            line += f" | test loss {rec['test_loss']:.4f} acc {rec['test_accuracy']:.4f}"
        line += (f" | peak RSS {peak_rss_mib():.1f} MiB | cpu: own {rec['own_cpu_cores']:.2f} "
                 f"other {rec['other_cpu_cores']:.2f} cores | {rec['minor_page_faults_per_step']:.0f} page faults/step")
        print(line, flush=True)

    if args.profile_steps > 0:
        from torch.profiler import profile, ProfilerActivity
        perm = torch.from_numpy(rng.permutation(ntrain))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for step in range(args.profile_steps):
                idx = perm[step * args.batch:(step + 1) * args.batch]
                xb = xtr.index_select(0, idx).contiguous(memory_format=memfmt)
                loss = F.cross_entropy(model(xb), ytr.index_select(0, idx))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))

    result = {
        "framework": "pytorch",
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "channels_last": args.channels_last,
        "batch": args.batch,
        "lr": args.lr,
        "optimizer": "adam",
        "seed": args.seed,
        "init": args.init,
        "params": nparams,
        "steps_limit": args.steps,
        "warmup_steps": args.warmup_steps,
        "env": {k: os.environ.get(k) for k in
                ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                 "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")},
        "epochs": epochs,
        "peak_rss_mib": peak_rss_mib(),
        "rss_after_import_mib": rss_import,
        "rss_after_data_mib": rss_data,
        "peak_rss_after_data_mib": peak_data,
    }
    print(f"peak RSS {result['peak_rss_mib']:.1f} MiB (RSS after `import torch` {rss_import:.1f} MiB, "
          f"after loading data {rss_data:.1f} MiB)")
    if args.json:
        d = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(d, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
