#!/usr/bin/env python3
"""cnn.c vs PyTorch, side by side in one run: training images/s at batch 64, batch-1 inference latency and peak
memory (RSS) of the same networks on the same threads and the same kind of data.

For each network it runs, one after the other and --rounds times (medians are reported):
  cnn bench --model M --mode train --batch B --json ...        (a process of its own: its peak RSS is training's)
  this script --worker train ... (PyTorch, a process of its own)
  cnn bench --model M --mode infer --batch 1 --json ...
  this script --worker infer ...
and prints the ratios against the targets of the performance issue:
  training images/s cnn/PyTorch: seed CNN >= 2.0, ResNet-20 >= 1.5, ResNet-18 >= 1.15;
  batch-1 latency cnn/PyTorch: seed CNN <= 0.25, ResNet-18 <= 0.8;  peak RSS in training cnn/PyTorch <= 0.5.

Both sides: uniform random images of the model's input shape and uniform random labels, made once (the data
pipeline is not measured); a training step is forward, softmax cross-entropy, backward and an Adam update
(lr 1e-3); inference is the eval-mode forward and the softmax, each call timed on its own. Warm-up steps first;
training times a repeat of --iters steps and reports the median over --repeats; inference the median call.
Both check that they build the same network: the trainable parameter count of `cnn summary` must equal
PyTorch's.

PyTorch runs at its best on this machine (bench/RESULTS.md): channels_last, OPENBLAS_CORETYPE=SkylakeX,
OPENBLAS_NUM_THREADS=1, MALLOC_MMAP_THRESHOLD_=67108864 and MALLOC_TRIM_THRESHOLD_=268435456 (else it
page-faults its large buffers every step), torch.set_num_threads(T), set_num_interop_threads(1).
--pytorch-nchw and --pytorch-default-malloc turn those off.

Networks (cnn.c definition, and the PyTorch module built here):
  seed       samples/models/seed_cnn.cnn       (bench/pytorch_seed_cnn.py's SeedCNN), 28x28x1
  resnet20   samples/models/resnet20_28.cnn    He et al.'s CIFAR ResNet-20 for 28x28x1
  resnet18   samples/models/resnet18_32.cnn    ResNet-18, CIFAR layout (3x3 stem, no max-pool), 32x32x3

PyTorch and numpy are benchmark-only, never dependencies of the engine or its tests:
  python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch numpy   (then --python /tmp/venv/bin/python)

Example:
  bench/compare_pytorch.py --build-dir build --threads 2 --rounds 3 --json /tmp/cmp.json
"""
import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

MODELS = {
    "seed": ("samples/models/seed_cnn.cnn", "seed CNN"),
    "resnet20": ("samples/models/resnet20_28.cnn", "ResNet-20 (28x28x1)"),
    "resnet18": ("samples/models/resnet18_32.cnn", "ResNet-18 (32x32x3)"),
}
# the performance issue's targets: (train images/s ratio >=, batch-1 latency ratio <=); RSS ratio <= 0.5 for all
TARGETS = {"seed": (2.0, 0.25), "resnet20": (1.5, None), "resnet18": (1.15, 0.8)}
RSS_TARGET = 0.5


# ---------------------------------------------------------------------------------------------------------------
# the PyTorch side (worker mode; torch is imported only here)

def build_torch_model(name):
    import torch.nn as nn
    import torch.nn.functional as F

    if name == "seed":
        sys.path.insert(0, HERE)
        from pytorch_seed_cnn import SeedCNN
        m = SeedCNN()
        m.init_like_cnn()
        return m, (1, 28, 28), 10

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.short = None
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = F.relu(self.b1(self.c1(x)))
            y = self.b2(self.c2(y))
            return F.relu(y + (x if self.short is None else self.short(x)))

    class ResNet(nn.Module):
        def __init__(self, cin, widths, blocks, classes):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(cin, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                      nn.ReLU(inplace=True))
            layers, c = [], widths[0]
            for i, (w, n) in enumerate(zip(widths, blocks)):
                for j in range(n):
                    layers.append(Basic(c, w, 2 if (i > 0 and j == 0) else 1))
                    c = w
            self.blocks = nn.Sequential(*layers)
            self.fc = nn.Linear(c, classes)
            for mod in self.modules():  # cnn.c's init: He normal before ReLU, Glorot for the classifier
                if isinstance(mod, nn.Conv2d):
                    nn.init.kaiming_normal_(mod.weight, mode="fan_in", nonlinearity="relu")
            nn.init.xavier_uniform_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)

        def forward(self, x):
            x = self.blocks(self.stem(x))
            return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

    if name == "resnet20":
        return ResNet(1, (16, 32, 64), (3, 3, 3), 10), (1, 28, 28), 10
    if name == "resnet18":
        return ResNet(3, (64, 128, 256, 512), (2, 2, 2, 2), 10), (3, 32, 32), 10
    raise SystemExit(f"unknown model {name}")


def worker(args):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(args.seed)
    rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    model, shape, classes = build_torch_model(args.model)
    memfmt = torch.contiguous_format if args.nchw else torch.channels_last
    model = model.to(memory_format=memfmt)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.rand((args.batch,) + shape, generator=g).contiguous(memory_format=memfmt)
    y = torch.randint(0, classes, (args.batch,), generator=g)
    out = {"framework": "pytorch", "torch_version": torch.__version__, "model": args.model, "batch": args.batch,
           "threads": torch.get_num_threads(), "channels_last": not args.nchw,
           "params": sum(p.numel() for p in model.parameters()), "rss_after_import_mib": rss_import}
    if args.worker == "train":
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss

        for _ in range(args.warmup):
            step()
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(args.iters):
                loss = step()
            times.append((time.perf_counter() - t0) / args.iters)
        med = statistics.median(times)
        out["train"] = {"images_per_sec": args.batch / med, "step_ms_median": 1e3 * med,
                        "step_ms_min": 1e3 * min(times), "loss": float(loss)}
    else:
        model.eval()
        times = []
        with torch.inference_mode():
            for _ in range(args.warmup):
                F.softmax(model(x), 1)
            for _ in range(args.iters * args.repeats):
                t0 = time.perf_counter()
                F.softmax(model(x), 1)
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        out["infer"] = {"images_per_sec": args.batch / med, "latency_ms_median": 1e3 * med,
                        "latency_ms_min": 1e3 * min(times)}
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    with open(args.out, "w") as f:
        json.dump(out, f)


# ---------------------------------------------------------------------------------------------------------------
# the driver

def run(cmd, env=None):
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        sys.exit(f"compare_pytorch: failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout}")
    return p.stdout


def busy_cores(seconds=1.0):
    """Cores other processes keep busy (from /proc/stat), to warn about a noisy machine."""
    def busy():
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:9]]
        return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")
    b0 = busy()
    time.sleep(seconds)
    return (busy() - b0) / seconds


def cnn_params(cnn, model):
    m = re.search(r"Trainable params: (\d+)", run([cnn, "summary", model]))
    return int(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default="build", help="where the cnn program is (default build)")
    ap.add_argument("--models", default="seed,resnet20,resnet18", help="comma-separated: seed, resnet20, resnet18")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64, help="training batch (default 64)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10, help="training steps per repeat; inference calls per repeat x5")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1, help="alternate cnn.c and PyTorch this many times; medians")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--python", default=sys.executable, help="the Python with torch (default: this one)")
    ap.add_argument("--pytorch-nchw", action="store_true", help="PyTorch in NCHW instead of channels_last")
    ap.add_argument("--pytorch-default-malloc", action="store_true", help="no MALLOC_*_THRESHOLD_ for PyTorch")
    ap.add_argument("--skip-infer", action="store_true", help="training only")
    ap.add_argument("--json", help="write every measurement and the ratios here")
    # worker mode (internal)
    ap.add_argument("--worker", choices=("train", "infer"), help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--nchw", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    cnn = os.path.join(args.build_dir, "cnn")
    if not os.path.isabs(cnn):
        cnn = os.path.join(ROOT, cnn)
    if not os.access(cnn, os.X_OK):
        sys.exit(f"compare_pytorch: {cnn} not found; build it: cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && "
                 f"cmake --build build --target cnn")
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    for n in names:
        if n not in MODELS:
            sys.exit(f"compare_pytorch: --models: unknown '{n}' (known: {', '.join(MODELS)})")
    if subprocess.run([args.python, "-c", "import torch"], capture_output=True).returncode != 0:
        sys.exit(f"compare_pytorch: '{args.python}' cannot import torch (benchmark only: pip install torch numpy)")

    t = str(args.threads)
    base_env = dict(os.environ, OMP_NUM_THREADS=t)
    pt_env = dict(base_env, OPENBLAS_CORETYPE="SkylakeX", OPENBLAS_NUM_THREADS="1")
    if not args.pytorch_default_malloc:
        pt_env.update(MALLOC_MMAP_THRESHOLD_="67108864", MALLOC_TRIM_THRESHOLD_="268435456")
    other = busy_cores()
    print(f"== compare_pytorch: threads {t}, train batch {args.batch}, warm-up {args.warmup}, {args.iters} x "
          f"{args.repeats} (inference: {args.iters * 5} x {args.repeats} calls), {args.rounds} round(s); "
          f"{os.cpu_count()} CPUs, other load {other:.2f} cores")
    if other > 0.2:
        print("compare_pytorch: warning: the machine is busy; timings will be low and noisy", file=sys.stderr)
    print(f"== PyTorch: {'NCHW' if args.pytorch_nchw else 'channels_last'}; env "
          + " ".join(f"{k}={pt_env[k]}" for k in sorted(set(pt_env) - set(os.environ)) if k != "OMP_NUM_THREADS"))

    results = {}
    with tempfile.TemporaryDirectory(prefix="cnn-compare-") as tmp:
        for name in names:
            model = os.path.join(ROOT, MODELS[name][0])
            want = cnn_params(cnn, model)
            runs = {"cnn_train": [], "pt_train": [], "cnn_infer": [], "pt_infer": []}
            modes = [("train", args.batch, args.iters)] + ([] if args.skip_infer else [("infer", 1, args.iters * 5)])
            for r in range(args.rounds):
                for mode, batch, iters in modes:
                    common = ["--warmup", str(args.warmup), "--iters", str(iters), "--repeats", str(args.repeats)]
                    j = os.path.join(tmp, f"cnn_{name}_{mode}_{r}.json")
                    run([cnn, "bench", "--model", model, "--device", "cpu", "--mode", mode, "--batch", str(batch),
                         "--threads", t, "--seed", str(args.seed), "--quiet", "--json", j] + common, base_env)
                    with open(j) as f:
                        runs[f"cnn_{mode}"].append(json.load(f))
                    j = os.path.join(tmp, f"pt_{name}_{mode}_{r}.json")
                    run([args.python, os.path.abspath(__file__), "--worker", mode, "--model", name, "--batch",
                         str(batch), "--threads", t, "--seed", str(args.seed), "--out", j]
                        + (["--nchw"] if args.pytorch_nchw else []) + common, pt_env)
                    with open(j) as f:
                        runs[f"pt_{mode}"].append(json.load(f))
            got = runs["pt_train"][0]["params"]
            if want != got:
                sys.exit(f"compare_pytorch: {name}: cnn.c has {want} trainable parameters, PyTorch {got}: "
                         "not the same network")

            def med(key, section, field):
                vals = [x[section][field] for x in runs[key]]
                return statistics.median(vals) if vals else None

            res = {
                "params": want,
                "cnn_train_ips": med("cnn_train", "train", "images_per_sec"),
                "pt_train_ips": med("pt_train", "train", "images_per_sec"),
                "cnn_train_rss": statistics.median(x["peak_rss_mib"] for x in runs["cnn_train"]),
                "pt_train_rss": statistics.median(x["peak_rss_mib"] for x in runs["pt_train"]),
                "pt_rss_after_import": runs["pt_train"][0]["rss_after_import_mib"],
                "cnn_train_gflops": med("cnn_train", "train", "gflops"),
                "cnn_train_peak_share": med("cnn_train", "train", "peak_share"),
                "sgemm_peak_gflops": statistics.median(x["sgemm_peak_gflops"] for x in runs["cnn_train"]),
                "runs": runs,
            }
            if not args.skip_infer:
                res["cnn_b1_ms"] = med("cnn_infer", "infer", "latency_ms_median")
                res["pt_b1_ms"] = med("pt_infer", "infer", "latency_ms_median")
            res["train_ratio"] = res["cnn_train_ips"] / res["pt_train_ips"]
            res["rss_ratio"] = res["cnn_train_rss"] / res["pt_train_rss"]
            if not args.skip_infer:
                res["b1_latency_ratio"] = res["cnn_b1_ms"] / res["pt_b1_ms"]
            results[name] = res
            print(f"   {MODELS[name][1]}: done ({want:,} parameters)", flush=True)

    def verdict(v, target, higher):
        if target is None or v is None:
            return ""
        ok = v >= target if higher else v <= target
        return f" ({'>=' if higher else '<='} {target}: {'met' if ok else 'NOT met'})"

    print()
    print("| network | cnn.c train img/s | PyTorch train img/s | ratio | cnn.c b1 ms | PyTorch b1 ms | ratio "
          "| cnn.c RSS MiB | PyTorch RSS MiB | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        tt, lt = TARGETS[name]
        b1 = ("| n/a | n/a | n/a " if args.skip_infer else
              f"| {r['cnn_b1_ms']:.3f} | {r['pt_b1_ms']:.3f} | {r['b1_latency_ratio']:.2f}{verdict(r['b1_latency_ratio'], lt, False)} ")
        print(f"| {MODELS[name][1]} | {r['cnn_train_ips']:,.0f} | {r['pt_train_ips']:,.0f} | "
              f"{r['train_ratio']:.2f}{verdict(r['train_ratio'], tt, True)} {b1}| {r['cnn_train_rss']:.0f} | "
              f"{r['pt_train_rss']:.0f} | {r['rss_ratio']:.2f}{verdict(r['rss_ratio'], RSS_TARGET, False)} |")
    for name, r in results.items():
        print(f"{MODELS[name][1]}: cnn.c training at {r['cnn_train_gflops']:.1f} GFLOP/s = "
              f"{100 * r['cnn_train_peak_share']:.1f}% of the measured sgemm peak ({r['sgemm_peak_gflops']:.0f} GFLOP/s);"
              f" PyTorch's RSS after importing torch alone: {r['pt_rss_after_import']:.0f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": args.threads, "batch": args.batch,
                       "rounds": args.rounds, "other_load_cores": other,
                       "pytorch_env": {k: pt_env[k] for k in sorted(set(pt_env) - set(os.environ))},
                       "channels_last": not args.pytorch_nchw, "results": results}, f, indent=1)
        print(f"written: {args.json}")


if __name__ == "__main__":
    main()
