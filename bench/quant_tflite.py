#!/usr/bin/env python3
"""The TFLite side of bench/quant_bench.sh: the seed CNN trained in Keras on Fashion-MNIST, converted with
TFLiteConverter to float and to full-integer int8 (calibrated on the same number of training images), run by the
TFLite interpreter (XNNPACK) with 2 threads: test accuracy, file sizes and batch-1 latency.

Benchmark-only: TensorFlow is NOT a dependency of cnn.c or its tests.

    python bench/quant_tflite.py --data /usr/share/datasets/fashion-mnist --epochs 2 --calib 1000 --out tflite.json \
        [--keep DIR]                     # also keep DIR/float.tflite and DIR/int8.tflite
    python bench/quant_tflite.py --latency DIR/int8.tflite --threads 2   # only time a kept model (batch 1, ms)
"""
import argparse
import gzip
import json
import os
import struct
import tempfile
import time

import numpy as np


def idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xff
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


def load(data_dir, split):
    name = "train" if split == "train" else "t10k"
    def find(kind):
        for ext in ("-ubyte.gz", "-ubyte"):
            p = os.path.join(data_dir, f"{name}-{kind}-idx{3 if kind == 'images' else 1}{ext}")
            if os.path.exists(p):
                return p
        raise SystemExit(f"{data_dir}: no {name} {kind}")
    return idx(find("images")).astype(np.float32)[..., None] / 255.0, idx(find("labels")).astype(np.int64)


def latency(interp, x, runs):
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    if inp["dtype"] == np.int8:
        s, z = inp["quantization"]
        x = np.clip(np.round(x / s + z), -128, 127).astype(np.int8)
    for _ in range(20):
        interp.set_tensor(inp["index"], x)
        interp.invoke()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        interp.get_tensor(out["index"])
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def accuracy(interp, xs, ys):
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    correct = 0
    for x, y in zip(xs, ys):
        x = x[None]
        if inp["dtype"] == np.int8:
            s, z = inp["quantization"]
            x = np.clip(np.round(x / s + z), -128, 127).astype(np.int8)
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        correct += int(np.argmax(interp.get_tensor(out["index"])[0]) == y)
    return correct / len(ys)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--calib", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--out")
    ap.add_argument("--keep", help="a folder to keep float.tflite and int8.tflite in")
    ap.add_argument("--latency", help="only time this .tflite file at batch 1 (one test image), print the median ms")
    args = ap.parse_args()
    import tensorflow as tf
    if args.latency:
        xte, _ = load(args.data, "test")
        interp = tf.lite.Interpreter(model_path=args.latency, num_threads=args.threads)
        interp.allocate_tensors()
        print("%.5f" % latency(interp, xte[:1], args.runs))
        return
    if not args.out:
        ap.error("--out is required (or --latency FILE)")
    tf.random.set_seed(1)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    xtr, ytr = load(args.data, "train")
    xte, yte = load(args.data, "test")
    L = tf.keras.layers
    model = tf.keras.Sequential([
        tf.keras.Input((28, 28, 1)),
        L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(128, 3, activation="relu"), L.MaxPooling2D(2),
        L.Flatten(), L.Dense(512, activation="relu"), L.Dense(10, activation="softmax")])
    model.compile(tf.keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(xtr, ytr, batch_size=64, epochs=args.epochs, verbose=0)
    keras_acc = float(model.evaluate(xte, yte, verbose=0)[1])

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    float_model = conv.convert()
    rng = np.random.default_rng(1)
    calib = xtr[rng.choice(len(xtr), args.calib, replace=False)]
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([c[None]] for c in calib)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    int8_model = conv.convert()

    out = {"tensorflow": tf.__version__, "keras_accuracy": keras_acc, "threads": args.threads,
           "float_bytes": len(float_model), "int8_bytes": len(int8_model)}
    for name, blob in (("float", float_model), ("int8", int8_model)):
        if args.keep:
            path = os.path.join(args.keep, name + ".tflite")
            with open(path, "wb") as f:
                f.write(blob)
        else:
            with tempfile.NamedTemporaryFile(suffix=".tflite", delete=False) as f:
                f.write(blob)
                path = f.name
        interp = tf.lite.Interpreter(model_path=path, num_threads=args.threads)
        interp.allocate_tensors()
        out[name + "_accuracy"] = accuracy(interp, xte, yte)
        out[name + "_batch1_ms"] = latency(interp, xte[:1], args.runs)
        if not args.keep:
            os.unlink(path)
    json.dump(out, open(args.out, "w"), indent=1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
