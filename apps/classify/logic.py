"""The classify app without its window: frame sources, the fp32/int8 classifier and its latency.

``open_source`` tries Kivy's camera first (when asked and Kivy is there) and falls back to a folder
of images; either way the app gets RGB uint8 frames from ``read()``. Nothing here needs a window.
"""
from __future__ import annotations

import logging
import pathlib
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

import edge
from apps.classify import model as models
from apps.shared import percentile

log = logging.getLogger("apps.classify")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


class FolderSource:
    """Cycles through the images of a folder (sorted by name), as RGB uint8 arrays."""

    kind = "folder"

    def __init__(self, folder: str | pathlib.Path):
        from PIL import Image

        self.folder = pathlib.Path(folder)
        paths = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise FileNotFoundError(f"{self.folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
        self.names = [p.name for p in paths]
        self.frames = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
        self.position = 0

    def read(self) -> np.ndarray:
        frame = self.frames[self.position % len(self.frames)]
        self.position += 1
        return frame

    def close(self) -> None:
        pass


class CameraSource:
    """Kivy's camera (``kivy.core.camera.Camera``); frames are read from its texture's pixels."""

    kind = "camera"

    def __init__(self, index: int = 0, resolution=(640, 480)):
        from kivy.core.camera import Camera

        self.camera = Camera(index=index, resolution=resolution, stopped=False)
        if getattr(self.camera, "texture", None) is None:
            raise RuntimeError("the camera opened no texture")

    def read(self) -> np.ndarray | None:
        texture = self.camera.texture
        if texture is None:
            return None
        width, height = texture.size
        pixels = np.frombuffer(texture.pixels, np.uint8).reshape(height, width, 4)
        return pixels[::-1, :, :3]

    def close(self) -> None:
        self.camera.stop()


def open_source(folder: str | pathlib.Path, camera: bool = True):
    """The camera when asked for and one opens, else the folder (what opened is ``source.kind``)."""
    if camera:
        try:
            return CameraSource()
        except Exception as error:  # no camera provider, no device, no permission: all mean "use the folder"
            log.info("no camera (%s): reading %s", error, folder)
    return FolderSource(folder)


@dataclass
class Result:
    top: list[tuple[str, float]]
    latency_ms: float


class LiveClassifier:
    """The fp32 or int8 model at 1 or 2 threads; ``classify`` times each call, ``overlay`` gives
    p50/p95 over the last ``window`` of them."""

    def __init__(self, model_dir: str | pathlib.Path, precision: str = "fp32", num_threads: int = 1,
                 window: int = 30):
        self.model_dir = pathlib.Path(model_dir)
        self.latencies_ms: deque[float] = deque(maxlen=window)
        self.precision, self.num_threads = None, None
        self.interpreter = None
        self.configure(precision, num_threads)

    def configure(self, precision: str, num_threads: int) -> None:
        if precision not in ("fp32", "int8"):
            raise ValueError(f"precision {precision!r}: fp32 or int8")
        if (precision, num_threads) == (self.precision, self.num_threads):
            return
        path = self.model_dir / (models.FP32_FILE if precision == "fp32" else models.INT8_FILE)
        interpreter = edge.Interpreter(model_path=str(path), num_threads=num_threads)
        interpreter.allocate_tensors()
        old = self.interpreter
        self.interpreter, self.precision, self.num_threads = interpreter, precision, num_threads
        self._input = interpreter.get_input_details()[0]["index"]
        self._output = interpreter.get_output_details()[0]["index"]
        self.latencies_ms.clear()
        if old is not None:
            old.close()

    @property
    def isa(self) -> str:
        return edge.runtime_isa()

    def logits(self, batch: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._input, batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output)[0].copy()

    def classify(self, frame: np.ndarray, k: int = 3) -> Result:
        start = time.perf_counter()
        logits = self.logits(models.preprocess(frame)).astype(np.float64)
        elapsed = (time.perf_counter() - start) * 1e3
        self.latencies_ms.append(elapsed)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        order = np.argsort(-p)[:k]
        return Result([(models.LABELS[c], float(p[c])) for c in order], elapsed)

    def overlay(self) -> dict[str, float]:
        return {"p50_ms": percentile(self.latencies_ms, 50), "p95_ms": percentile(self.latencies_ms, 95),
                "frames": len(self.latencies_ms)}

    def close(self) -> None:
        if self.interpreter is not None:
            self.interpreter.close()


def agreement(model_dir: str | pathlib.Path, frames) -> float:
    """Fraction of frames on which the int8 model's top-1 equals the fp32 model's."""
    fp32, int8 = LiveClassifier(model_dir, "fp32"), LiveClassifier(model_dir, "int8")
    try:
        same = [fp32.classify(f, 1).top[0][0] == int8.classify(f, 1).top[0][0] for f in frames]
    finally:
        fp32.close()
        int8.close()
    return float(np.mean(same))
