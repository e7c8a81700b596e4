#!/usr/bin/env python3
"""The seed CNN pruned with TensorFlow Model Optimization (prune_low_magnitude, PolynomialDecay) on Fashion-MNIST, the
schedule of bench/prune_bench.sh seed: 0 -> 80% sparsity from step 844 (the end of epoch 1) to step 3376 (the end of
epoch 4), every 100 steps, 5 epochs of Adam 1e-3 in batches of 64 on 54,000 images; the classifier (the last dense)
left dense as in cnn.c. Prints and writes (--out) the test accuracy and the sparsity reached, per seed.

Needs tensorflow-cpu, tensorflow-model-optimization and tf-keras (TF-MOT runs on Keras 2) in a venv; a bench script,
never a dependency of cnn.c."""
import argparse
import gzip
import json
import os
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402

keras = tf.keras


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def model(prune, steps):
    sched = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=0.8, begin_step=steps,
                                                 end_step=4 * steps, frequency=100)
    wrap = (lambda l: tfmot.sparsity.keras.prune_low_magnitude(l, pruning_schedule=sched)) if prune else (lambda l: l)
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        wrap(keras.layers.Conv2D(32, 3, activation="relu")), keras.layers.MaxPooling2D(2),
        wrap(keras.layers.Conv2D(64, 3, activation="relu")), keras.layers.MaxPooling2D(2),
        wrap(keras.layers.Conv2D(128, 3, activation="relu")), keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        wrap(keras.layers.Dense(512, activation="relu")),
        keras.layers.Dense(10),
    ])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--dense", action="store_true", help="also train the dense model per seed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="tfmot.json")
    a = ap.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    x = idx(os.path.join(a.data, "train-images-idx3-ubyte.gz")).astype(np.float32)[..., None] / 255.0
    y = idx(os.path.join(a.data, "train-labels-idx1-ubyte.gz")).astype(np.int64)
    xt = idx(os.path.join(a.data, "t10k-images-idx3-ubyte.gz")).astype(np.float32)[..., None] / 255.0
    yt = idx(os.path.join(a.data, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    results = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        for prune in ([False, True] if a.dense else [True]):
            keras.utils.set_random_seed(seed)
            order = np.random.default_rng(seed).permutation(len(x))
            tr = order[:54000]
            steps = (len(tr) + 63) // 64
            m = model(prune, steps)
            m.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
            cb = [tfmot.sparsity.keras.UpdatePruningStep()] if prune else []
            t0 = time.time()
            m.fit(x[tr], y[tr], batch_size=64, epochs=5, shuffle=True, callbacks=cb, verbose=2)
            secs = time.time() - t0
            acc = float(m.evaluate(xt, yt, batch_size=256, verbose=0)[1])
            if prune:
                m = tfmot.sparsity.keras.strip_pruning(m)
            zeros = total = 0
            for layer in m.layers[:-1]:
                for w in layer.get_weights()[:1] if layer.get_weights() else []:
                    zeros += int((w == 0).sum())
                    total += w.size
            r = {"seed": seed, "pruned": prune, "test_accuracy": acc, "sparsity": zeros / total, "seconds": secs}
            print(json.dumps(r), flush=True)
            results.append(r)
    with open(a.out, "w") as f:
        json.dump({"tensorflow": tf.__version__, "tfmot": tfmot.__version__, "runs": results}, f, indent=1)


if __name__ == "__main__":
    main()
