"""The digits app without its window: strokes -> the model's 8x8 input, classification with its
latency, and teaching the model the user's handwriting on a worker thread.

The UI (``apps/digits/app.py`` + ``digits.kv``) only forwards touches to ``Sketch`` and shows what
``Classifier`` and ``Teacher`` report; tests and ``--selftest`` drive these classes directly.
"""
from __future__ import annotations

import os
import pathlib
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import edge
from apps.digits import model as models
from apps.shared import percentile

GRID = 32          # strokes are rasterised at 32x32, like the NIST bitmaps scikit-learn's digits come from
CELL = GRID // 8   # then each 4x4 block is counted into one of the 8x8 inputs (0..16 -> 0..1)
BOX = 24           # the drawing's bounding box is scaled to fit this many pixels, centred


class Sketch:
    """Strokes in normalised coordinates (x right, y up, both in [0, 1]) and their 8x8 image."""

    def __init__(self, pen_width: float = 2.5):
        self.strokes: list[list[tuple[float, float]]] = []
        self.pen_width = pen_width  # in pixels of the 32x32 grid
        self.version = 0            # bumped on every change, so the UI classifies only new drawings

    def begin(self, x: float, y: float) -> None:
        self.strokes.append([(float(x), float(y))])
        self.version += 1

    def extend(self, x: float, y: float) -> None:
        if not self.strokes:
            self.begin(x, y)
            return
        self.strokes[-1].append((float(x), float(y)))
        self.version += 1

    def clear(self) -> None:
        self.strokes.clear()
        self.version += 1

    @property
    def empty(self) -> bool:
        return not any(self.strokes)

    def image(self) -> np.ndarray:
        """[8, 8, 1] float32 in [0, 1]: the strokes' bounding box scaled (aspect kept) into a BOX
        square centred on the 32x32 grid, drawn with a round pen, 4x4 blocks averaged."""
        grid = np.zeros((GRID, GRID), np.float32)
        points = [p for stroke in self.strokes for p in stroke]
        if not points:
            return grid.reshape(8, CELL, 8, CELL).mean(axis=(1, 3))[..., None]
        xy = np.asarray(points, np.float64)
        low, high = xy.min(axis=0), xy.max(axis=0)
        scale = (BOX - self.pen_width) / max(float((high - low).max()), 1e-6)
        centre = (low + high) / 2
        rows, cols = np.mgrid[0:GRID, 0:GRID]
        px, py = cols + 0.5, rows + 0.5
        radius = self.pen_width / 2
        for stroke in self.strokes:
            pts = (np.asarray(stroke, np.float64) - centre) * scale
            # Image rows grow downwards; the strokes' y grows upwards.
            pts = np.stack([GRID / 2 + pts[:, 0], GRID / 2 - pts[:, 1]], axis=1)
            segments = zip(pts, pts[1:]) if len(pts) > 1 else [(pts[0], pts[0])]
            for a, b in segments:
                d = b - a
                length2 = float(d @ d)
                t = np.zeros_like(px, np.float64) if length2 == 0 else np.clip(
                    ((px - a[0]) * d[0] + (py - a[1]) * d[1]) / length2, 0, 1)
                distance = np.hypot(px - (a[0] + t * d[0]), py - (a[1] + t * d[1]))
                grid[distance <= radius] = 1.0
        return grid.reshape(8, CELL, 8, CELL).mean(axis=(1, 3))[..., None].astype(np.float32)


def user_style(images: np.ndarray, angle: float = 30.0, thicken: int = 3, shear: float = 0.0) -> np.ndarray:
    """A synthetic "other person's handwriting": each 8x8 image upsampled to 32x32, rotated by
    ``angle`` degrees, optionally sheared, its strokes thickened by a ``thicken``-pixel dilation, and
    counted back into 8x8. Used by the self-test and the tests as the style the user teaches."""
    from scipy import ndimage

    out = np.empty_like(images, dtype=np.float32)
    for k, image in enumerate(images):
        big = np.kron(image[..., 0], np.ones((CELL, CELL), np.float32))
        big = ndimage.rotate(big, angle, reshape=False, order=1)
        if shear:
            matrix = np.array([[1.0, shear], [0.0, 1.0]])
            offset = -matrix @ np.array([GRID / 2, GRID / 2]) + np.array([GRID / 2, GRID / 2])
            big = ndimage.affine_transform(big, matrix, offset=offset, order=1)
        if thicken > 1:
            big = ndimage.grey_dilation(big, size=(thicken, thicken))
        out[k, ..., 0] = np.clip(big.reshape(8, CELL, 8, CELL).mean(axis=(1, 3)), 0.0, 1.0)
    return out


@dataclass
class Prediction:
    top: list[tuple[int, float]]  # (digit, probability), best first
    latency_ms: float
    version: int = -1             # the Sketch version it was made from


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


class Classifier:
    """Runs the "infer" signature of a digits model, one drawing at a time, timing each call.

    It owns its own Interpreter (never the Trainer's), so classifying on the UI thread and training
    on the worker never share one; ``load`` swaps in a newly exported model between frames."""

    def __init__(self, model_path: str | pathlib.Path, num_threads: int = 1, history: int = 200):
        self.num_threads = num_threads
        self.latencies_ms: list[float] = []
        self._history = history
        self.model_path = None
        self.load(model_path)

    def load(self, model_path: str | pathlib.Path) -> None:
        interpreter = edge.Interpreter(model_path=str(model_path), num_threads=self.num_threads)
        # A trainable file also declares the train signature's labels; prepare checks every op, so
        # every input with a dynamic batch (labels included) is sized together.
        batched = {d["index"]: [int(v) for v in d["shape"][1:]] for d in interpreter.get_input_details()
                   if len(d["shape_signature"]) and int(d["shape_signature"][0]) == -1}
        old = getattr(self, "interpreter", None)
        self.interpreter, self._batched, self._batch = interpreter, batched, None
        self.runner = interpreter.get_signature_runner("infer")
        self.model_path = pathlib.Path(model_path)
        self.logits(np.zeros((1, 8, 8, 1), np.float32))  # sizes the arena for batch 1 before the first drawing
        if old is not None:
            old.close()

    def logits(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, np.float32)
        if images.shape[0] != self._batch:
            for index, rest in self._batched.items():
                self.interpreter.resize_tensor_input(index, [images.shape[0], *rest])
            self.interpreter.allocate_tensors()
            self._batch = images.shape[0]
        return self.runner(image=images)["logits"]

    def classify(self, image: np.ndarray, k: int = 3, version: int = -1) -> Prediction:
        start = time.perf_counter()
        logits = self.logits(np.asarray(image, np.float32)[None])[0]
        elapsed = (time.perf_counter() - start) * 1e3
        self.latencies_ms = (self.latencies_ms + [elapsed])[-self._history:]
        probabilities = softmax(logits)
        order = np.argsort(-probabilities)[:k]
        return Prediction([(int(c), float(probabilities[c])) for c in order], elapsed, version)

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        predicted = np.concatenate([self.logits(images[k:k + 256]).argmax(1) for k in range(0, len(images), 256)])
        return float(np.mean(predicted == labels))

    def latency_summary(self) -> dict[str, float]:
        return {"count": len(self.latencies_ms), "p50_ms": percentile(self.latencies_ms, 50),
                "p95_ms": percentile(self.latencies_ms, 95)}


def lower_thread_priority(niceness: int = 10) -> None:
    """Background work yields the CPU to the UI thread when cores are scarce, as Android runs
    worker threads at THREAD_PRIORITY_BACKGROUND. On Linux a thread's nice value is its own
    (setpriority on its thread id); elsewhere, or when not permitted, this does nothing."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass


@dataclass
class TeachResult:
    losses: list[float] = field(default_factory=list)
    exported: pathlib.Path | None = None
    checkpoint: pathlib.Path | None = None
    seconds: float = 0.0
    error: str | None = None


class Teacher:
    """Collects the user's labelled drawings and fine-tunes the model on them on a worker thread.

    Every step trains on a batch of ``user_batch`` of the user's samples and ``rehearsal_batch``
    samples kept from pretraining: trained on the new style alone, a network forgets the old one
    (benchmarks/train_digits.py's personalisation part measured it), so rehearsal rides along.
    ``on_loss(step, loss)`` is called from the worker after every step, ``on_done(result)`` once at
    the end; a UI hands both to its own thread (see ``apps.shared.Latest``)."""

    def __init__(self, model_dir: str | pathlib.Path, work_dir: str | pathlib.Path, num_threads: int = 1,
                 steps: int = 300, user_batch: int = 24, rehearsal_batch: int = 32, learning_rate: float = 1e-3,
                 seed: int = 0, pause_s: float = 0.002):
        self.model_dir = pathlib.Path(model_dir)
        self.work_dir = pathlib.Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.num_threads = num_threads
        self.steps, self.user_batch, self.rehearsal_batch = steps, user_batch, rehearsal_batch
        self.learning_rate = learning_rate
        self.seed = seed
        # Between steps the worker sleeps this long: a step's Python part holds the GIL, and without
        # a pause the UI thread waits a whole switch interval (5 ms) per hand-over, several per frame.
        self.pause_s = pause_s
        kept = np.load(self.model_dir / models.REHEARSAL_FILE)
        self.rehearsal_x, self.rehearsal_y = kept["x"].astype(np.float32), kept["y"].astype(np.int32)
        self.samples: list[tuple[np.ndarray, int]] = []
        self.trainer = edge.Trainer(self.current_model, num_threads=num_threads)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.result: TeachResult | None = None
        self.live_losses: list[float] = []  # the running fit's losses, appended by the worker
        self.generation = 0

    @property
    def current_model(self) -> pathlib.Path:
        taught = self.work_dir / "digits.taught.edge"
        return taught if taught.exists() else self.model_dir / models.MODEL_FILE

    def add_sample(self, image: np.ndarray, label: int) -> None:
        self.samples.append((np.asarray(image, np.float32).reshape(8, 8, 1), int(label)))

    def counts(self) -> list[int]:
        counts = [0] * models.CLASSES
        for _, label in self.samples:
            counts[label] += 1
        return counts

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, on_loss: Callable[[int, float], None] | None = None,
              on_done: Callable[[TeachResult], None] | None = None) -> threading.Thread:
        if self.running:
            raise RuntimeError("teaching is already running")
        if not self.samples:
            raise ValueError("draw and label some samples first")
        self._stop.clear()
        self.result = None
        self._thread = threading.Thread(target=self._fit, args=(on_loss, on_done), name="digits-teach", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        self._stop.set()

    def wait(self, timeout: float | None = None) -> TeachResult | None:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.result

    def _fit(self, on_loss, on_done) -> None:
        result = TeachResult()
        self.live_losses = result.losses
        lower_thread_priority()
        start = time.perf_counter()
        try:
            x = np.stack([image for image, _ in self.samples])
            y = np.asarray([label for _, label in self.samples], np.int32)
            rng = np.random.default_rng(self.seed + self.generation)
            trainer = self.trainer
            trainer.learning_rate = self.learning_rate
            for step in range(self.steps):
                if self._stop.is_set():
                    break
                mine = rng.choice(len(x), size=min(self.user_batch, len(x)), replace=False)
                kept = rng.choice(len(self.rehearsal_x), size=self.rehearsal_batch, replace=False)
                loss = trainer.train_step(np.concatenate([x[mine], self.rehearsal_x[kept]]),
                                          np.concatenate([y[mine], self.rehearsal_y[kept]]))
                result.losses.append(loss)
                if on_loss is not None:
                    on_loss(step, loss)
                if self.pause_s:
                    time.sleep(self.pause_s)
            self.generation += 1
            result.checkpoint = self.work_dir / "digits.ckpt"
            trainer.save_checkpoint(result.checkpoint)
            result.exported = self.work_dir / "digits.taught.edge"
            trainer.export(result.exported)
        except Exception as error:  # reported to the UI, which shows it instead of dying on a thread
            result.error = f"{type(error).__name__}: {error}"
        result.seconds = time.perf_counter() - start
        self.result = result
        if on_done is not None:
            on_done(result)

    def close(self) -> None:
        self.stop()
        self.wait()
        self.trainer.close()
