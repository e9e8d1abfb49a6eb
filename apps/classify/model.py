"""Builds the classify app's models at first run (into the apps cache): generated images of six
shapes, a small CNN trained on them by edge.Trainer, its fp32 inference file, a folder of sample
images, and the int8 file calibrated on that folder through converter.quantize.

    python3 -m apps.classify.model [--out DIR]
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

LABELS = ("circle", "square", "triangle", "cross", "ring", "bar")
SIZE = 32
FP32_FILE, INT8_FILE, IMAGES = "shapes.fp32.edge", "shapes.int8.edge", "images"
VERSION = 1


def draw_shape(kind: int, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """One RGB uint8 image: a shape of class ``kind`` in a random colour, place, size and angle
    over a noisy background of another colour."""
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    cy, cx = rng.uniform(0.35, 0.65, 2) * size
    radius = rng.uniform(0.18, 0.3) * size
    angle = rng.uniform(0, math.pi)
    u = (cols - cx) * math.cos(angle) + (rows - cy) * math.sin(angle)
    v = -(cols - cx) * math.sin(angle) + (rows - cy) * math.cos(angle)
    r = np.hypot(u, v)
    if LABELS[kind] == "circle":
        mask = r <= radius
    elif LABELS[kind] == "square":
        mask = (np.abs(u) <= radius * 0.85) & (np.abs(v) <= radius * 0.85)
    elif LABELS[kind] == "triangle":
        mask = (v <= radius * 0.6) & (v >= -radius + 1.7 * np.abs(u))
    elif LABELS[kind] == "cross":
        arm = radius * 0.28
        mask = ((np.abs(u) <= arm) & (np.abs(v) <= radius)) | ((np.abs(v) <= arm) & (np.abs(u) <= radius))
    elif LABELS[kind] == "ring":
        mask = (r <= radius) & (r >= radius * 0.6)
    else:
        mask = (np.abs(u) <= radius) & (np.abs(v) <= radius * 0.25)
    background = rng.uniform(0, 0.5, 3)
    foreground = rng.uniform(0.5, 1.0, 3)
    image = background + rng.normal(0, 0.06, (size, size, 3))
    image[mask] = foreground + rng.normal(0, 0.06, (int(mask.sum()), 3))
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def preprocess(frame: np.ndarray, size: int = SIZE) -> np.ndarray:
    """An RGB uint8 frame of any size -> the model's input [1, size, size, 3] float32 in [0, 1]
    (box-averaged when the frame is a multiple of the size, else nearest-neighbour)."""
    frame = np.asarray(frame)[..., :3]
    h, w = frame.shape[:2]
    if h % size == 0 and w % size == 0:
        small = frame.reshape(size, h // size, size, w // size, 3).mean(axis=(1, 3))
    else:
        small = frame[(np.arange(size) * h // size)[:, None], (np.arange(size) * w // size)[None, :]]
    return (small.astype(np.float32) / 255.0)[None]


def dataset(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(LABELS), count).astype(np.int32)
    images = np.concatenate([preprocess(draw_shape(int(k), rng)) for k in labels])
    return images, labels


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def he(shape, fan_in):
        return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)

    return {"conv1/weights": he((16, 3, 3, 3), 27), "conv1/bias": np.zeros(16, np.float32),
            "conv2/weights": he((32, 3, 3, 16), 144), "conv2/bias": np.zeros(32, np.float32),
            "conv3/weights": he((32, 3, 3, 32), 288), "conv3/bias": np.zeros(32, np.float32),
            "dense/weights": he((64, 512), 512), "dense/bias": np.zeros(64, np.float32),
            "head/weights": he((len(LABELS), 64), 64) * 0.5, "head/bias": np.zeros(len(LABELS), np.float32)}


def shapes_graph(weights: dict[str, np.ndarray], batch: int):
    """Three conv3x3-relu-maxpool blocks (16, 32, 32) -> dense 64 -> logits; input "image"
    [batch, 32, 32, 3] NHWC, output "logits"."""
    from converter.builder import GraphBuilder

    b = GraphBuilder("shapes_cnn")
    y = b.input("image", (batch, SIZE, SIZE, 3))
    conv = dict(strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), groups=1, layout="NHWC")
    pool = dict(kernel=(2, 2), strides=(2, 2), layout="NHWC")
    w = {name: b.constant(name, value) for name, value in weights.items()}
    for layer in ("conv1", "conv2", "conv3"):
        y = b.MaxPool2D(b.Relu(b.Conv2D(y, w[f"{layer}/weights"], w[f"{layer}/bias"], **conv)), **pool)
    y = b.Reshape(y, shape=(batch, 512))
    y = b.Relu(b.FullyConnected(y, w["dense/weights"], w["dense/bias"]))
    b.output(b.FullyConnected(y, w["head/weights"], w["head/bias"]), name="logits")
    return b.build()


def build(out: pathlib.Path, epochs: int = 6, seed: int = 0, sample_images: int = 60) -> dict:
    import edge
    from converter.api import convert
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    x, y = dataset(2400, seed)
    x_val, y_val = dataset(300, seed + 1)
    with tempfile.TemporaryDirectory() as scratch:
        trainable = pathlib.Path(scratch) / "train.edge"
        trainable.write_bytes(convert(shapes_graph(_weights(seed), 32),
                                      training=dict(loss="cross_entropy", optimizer="adam", lr=2e-3)).data)
        with edge.Trainer(trainable) as trainer:
            trainer.fit(x, y, batch_size=32, epochs=epochs, seed=seed, verbose=0)
            accuracy = trainer.evaluate(x_val, y_val)["accuracy"]
            weights = {k: np.asarray(v, np.float32) for k, v in trainer.weights().items()}
    convert(shapes_graph(weights, 1), output_path=str(out / FP32_FILE))
    folder = out / IMAGES
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed + 2)
    for k in range(sample_images):
        kind = k % len(LABELS)
        Image.fromarray(draw_shape(kind, rng)).save(folder / f"{k:03d}_{LABELS[kind]}.png")
    calibration = np.concatenate([preprocess(np.asarray(Image.open(p).convert("RGB")))
                                  for p in sorted(folder.glob("*.png"))])
    convert(shapes_graph(weights, 1), output_path=str(out / INT8_FILE), quantize="int8", calibration=calibration)
    info = {"version": VERSION, "val_accuracy": accuracy, "fp32_bytes": (out / FP32_FILE).stat().st_size,
            "int8_bytes": (out / INT8_FILE).stat().st_size}
    (out / "info.json").write_text(json.dumps(info))
    return info


def ensure_model(directory: pathlib.Path | None = None) -> pathlib.Path:
    directory = pathlib.Path(directory) if directory else cache_dir("classify")
    try:
        fresh = json.loads((directory / "info.json").read_text()).get("version") == VERSION
    except (OSError, ValueError):
        fresh = False
    if not fresh:
        build(directory)
    return directory


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args(argv)
    print(json.dumps(build(args.out or cache_dir("classify"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
