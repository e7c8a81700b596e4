#!/usr/bin/env python3
"""PyTorch DistributedDataParallel (gloo backend, CPU) on Fashion-MNIST: the peer of `mpirun -np N cnn train` in
bench/dist_bench.sh. Benchmark-only: PyTorch and numpy are never dependencies of the engine or its tests.

N processes (torch.multiprocessing, rendezvous on 127.0.0.1 at a port the kernel picks), T threads each; every
rank takes its contiguous part of each global batch of N x B images of a per-epoch shuffle (cnn.c's sharding),
from the training set in memory. A step: batch gather, forward, softmax cross-entropy, backward (DDP all-reduces
the gradients in --bucket-mb buckets, 25 MB by default, during it, over gloo), Adam (lr 1e-3). The networks are those of
bench/compare_pytorch.py (same parameter counts as cnn.c's), in channels_last, with the settings that make
PyTorch fastest on this machine (bench/RESULTS.md): OPENBLAS_CORETYPE=SkylakeX, OPENBLAS_NUM_THREADS=1, glibc
malloc keeping freed buffers.

Timing: after --warmup steps, --steps steps are timed on rank 0 between two barriers; images/s = N x B x steps /
seconds. With --ranks 1 there is no process group: one plain process (the baseline of scaling efficiency).

Example:
  /tmp/venv-dist/bin/python bench/ddp_gloo.py --model resnet20 --ranks 2 --threads 1 --batch 32 --json /tmp/d.json
"""
import argparse
import json
import os
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(rank, args, port, result):
    import numpy as np
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from compare_pytorch import build_torch_model
    from pytorch_seed_cnn import load_split

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(args.seed)
    if args.ranks > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=args.ranks)
    x, y = load_split(args.data, "train")
    model, _, _ = build_torch_model(args.model)
    model = model.to(memory_format=torch.channels_last)
    if args.ranks > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=args.bucket_mb)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    gb = args.batch * args.ranks
    order = torch.from_numpy(np.random.default_rng(args.seed).permutation(x.shape[0]))
    step_of_epoch = 0

    def step(i):
        nonlocal step_of_epoch, order
        first = (step_of_epoch * gb) % (x.shape[0] - gb)
        idx = order[first + rank * args.batch: first + (rank + 1) * args.batch]
        xb = x[idx].contiguous(memory_format=torch.channels_last)
        yb = y[idx]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        step_of_epoch += 1
        return loss

    for i in range(args.warmup):
        step(i)
    if args.ranks > 1:
        dist.barrier()
    t0 = time.perf_counter()
    for i in range(args.steps):
        loss = step(i)
    if args.ranks > 1:
        dist.barrier()
    seconds = time.perf_counter() - t0
    if rank == 0:
        result.update({"framework": "pytorch-ddp-gloo" if args.ranks > 1 else "pytorch", "torch": torch.__version__,
                       "model": args.model, "ranks": args.ranks, "threads": args.threads, "batch": args.batch,
                       "steps": args.steps, "seconds": seconds, "images_per_sec": gb * args.steps / seconds,
                       "loss": float(loss.detach()), "params": sum(p.numel() for p in model.parameters())})
    if args.ranks > 1:
        dist.destroy_process_group()


def child(rank, args, port, queue):
    result = {}
    run(rank, args, port, result)
    if rank == 0:
        queue.put(result)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["seed", "resnet20"], default="seed")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=32, help="per rank")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--bucket-mb", type=float, default=25.0, help="DDP's bucket_cap_mb")
    p.add_argument("--json")
    args = p.parse_args()
    import torch.multiprocessing as mp

    if args.ranks == 1:
        result = {}
        run(0, args, 0, result)
    else:
        ctx = mp.get_context("spawn")
        queue = ctx.SimpleQueue()
        port = free_port()
        mp.spawn(child, args=(args, port, queue), nprocs=args.ranks, join=True)
        result = queue.get()
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
