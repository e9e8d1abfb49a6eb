"""Builds the digits app's pretrained model: a small CNN trained by the C runtime (edge.Trainer) on
scikit-learn's 8x8 digits, written at first run into the app's cache directory.

    python3 -m apps.digits.model [--out DIR] [--epochs N]

Files (in ``cache_dir("digits")``): ``digits.train.edge`` (trainable: infer/grad/train signatures,
the pretrained weights, dynamic batch) and ``rehearsal.npz`` (a class-balanced sample of the
pretraining images that teaching mixes into every batch, so the old handwriting is not forgotten).
Building needs the converter and scikit-learn (host tooling); the app at run time needs only edge.
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import tempfile

import numpy as np

from apps.shared import cache_dir

CLASSES = 10
MODEL_FILE = "digits.train.edge"
REHEARSAL_FILE = "rehearsal.npz"
VERSION = 1  # bump when the recipe changes: a cached model from another recipe is rebuilt


def load_digits(seed: int = 0, test_fraction: float = 0.25):
    """(x_train, y_train, x_test, y_test): images [N, 8, 8, 1] in [0, 1], labels int32."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    data = sklearn_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    y = data.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_fraction, random_state=seed,
                                                        stratify=y)
    return x_train, y_train, x_test, y_test


def _initial_weights(seed: int, c1: int = 16, c2: int = 32, hidden: int = 64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def he(shape, fan_in):
        return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)

    bound = math.sqrt(6.0 / (hidden + CLASSES))
    return {
        "conv1/weights": he((c1, 3, 3, 1), 9), "conv1/bias": np.zeros(c1, np.float32),
        "conv2/weights": he((c2, 3, 3, c1), 9 * c1), "conv2/bias": np.zeros(c2, np.float32),
        "dense/weights": he((hidden, 4 * c2), 4 * c2), "dense/bias": np.zeros(hidden, np.float32),
        "head/weights": rng.uniform(-bound, bound, (CLASSES, hidden)).astype(np.float32),
        "head/bias": np.zeros(CLASSES, np.float32),
    }


def digits_graph(weights: dict[str, np.ndarray], batch: int = 32):
    """conv3x3(16)-relu-pool -> conv3x3(32)-relu-pool -> dense 64-relu -> 10 logits, NHWC input
    "image" [batch, 8, 8, 1], output "logits"."""
    from converter.builder import GraphBuilder

    b = GraphBuilder("digits_app_cnn")
    x = b.input("image", (batch, 8, 8, 1))
    conv = dict(strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), groups=1, layout="NHWC")
    pool = dict(kernel=(2, 2), strides=(2, 2), layout="NHWC")
    w = {name: b.constant(name, value) for name, value in weights.items()}
    y = b.MaxPool2D(b.Relu(b.Conv2D(x, w["conv1/weights"], w["conv1/bias"], **conv)), **pool)
    y = b.MaxPool2D(b.Relu(b.Conv2D(y, w["conv2/weights"], w["conv2/bias"], **conv)), **pool)
    y = b.Reshape(y, shape=(batch, int(weights["dense/weights"].shape[1])))
    y = b.Relu(b.FullyConnected(y, w["dense/weights"], w["dense/bias"]))
    b.output(b.FullyConnected(y, w["head/weights"], w["head/bias"]), name="logits")
    return b.build()


def write_trainable(weights: dict[str, np.ndarray], path: pathlib.Path, lr: float) -> None:
    """A trainable .edge (Adam, cross-entropy) whose image and label batch dims are dynamic."""
    from converter.api import convert
    from converter.writer import write_model

    graph = digits_graph(weights)
    result = convert(graph, training=dict(loss="cross_entropy", optimizer="adam", lr=lr))
    trainable = result.graph
    labels = trainable.signatures["train"].inputs["labels"]
    # Every reshape (the flatten and its gradient) follows the batch too: written with the fixed one.
    flattened = [node.outputs[0] for node in trainable.nodes if node.op == "Reshape"]
    dynamic = {name: (0,) for name in [*graph.inputs, *flattened]}
    data = write_model(trainable.replace(dynamic_dims={**dynamic, labels: (0,)}))
    path.write_bytes(data)


def build(out: pathlib.Path, epochs: int = 20, seed: int = 0, rehearsal_per_class: int = 30) -> dict:
    import edge

    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = load_digits(seed)
    with tempfile.TemporaryDirectory() as scratch:
        initial = pathlib.Path(scratch) / "initial.edge"
        write_trainable(_initial_weights(seed), initial, lr=3e-3)
        with edge.Trainer(initial) as trainer:
            trainer.fit(x_train, y_train, batch_size=32, epochs=epochs, seed=seed, verbose=0)
            accuracy = trainer.evaluate(x_test, y_test)["accuracy"]
            weights = trainer.weights()
    # Written again from the trained weights so the optimizer starts fresh for teaching.
    write_trainable({k: np.asarray(v, np.float32) for k, v in weights.items()}, out / MODEL_FILE, lr=1e-3)
    rng = np.random.default_rng(seed)
    kept = np.concatenate([rng.choice(np.flatnonzero(y_train == c), rehearsal_per_class, replace=False)
                           for c in range(CLASSES)])
    np.savez_compressed(out / REHEARSAL_FILE, x=x_train[kept], y=y_train[kept])
    info = {"version": VERSION, "epochs": epochs, "test_accuracy": accuracy,
            "model_bytes": (out / MODEL_FILE).stat().st_size}
    (out / "info.json").write_text(json.dumps(info))
    return info


def ensure_model(directory: pathlib.Path | None = None) -> pathlib.Path:
    """The directory holding the pretrained model, built there first if missing or stale."""
    directory = pathlib.Path(directory) if directory else cache_dir("digits")
    info = directory / "info.json"
    try:
        fresh = json.loads(info.read_text()).get("version") == VERSION and (directory / MODEL_FILE).exists()
    except (OSError, ValueError):
        fresh = False
    if not fresh:
        build(directory)
    return directory


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=None)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    info = build(args.out or cache_dir("digits"), epochs=args.epochs)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
