"""edge.Trainer: trains a trainable .edge model on the device with the C runtime.

    trainer = edge.Trainer("digits.train.edge", num_threads=2)
    history = trainer.fit(x, y, batch_size=32, epochs=10, validation_data=(x_val, y_val))
    trainer.evaluate(x_test, y_test)        # {"loss": ..., "accuracy": ...}
    trainer.save_checkpoint("digits.ckpt")  # every variable, optimizer slots included
    trainer.export("digits.edge")           # the model with the trained weights, for edge.Interpreter

A trainable model (written by ``edge convert --trainable`` or ``converter.api.convert(...,
training=...)``) holds one graph with three signatures over shared variable tensors: ``infer``
(inputs -> outputs), ``grad`` (inputs + "labels" -> "loss" + "grad/<variable>") and ``train``
(inputs + "labels" -> "loss", updating the variables in place), plus the metadata entries
"training.loss", "training.optimizer", "training.trainable" and "training.labels". The Trainer
needs only the C runtime and NumPy; the converter is not involved at any point.

Batches. If the train signature's batch dimension is dynamic (-1 in its shape signature), the last
partial batch of an epoch is run at its own size (the interpreter is resized for it and back). If
it is fixed, every step must be that size: ``batch_size`` must equal it, and the ``len(x) % batch``
samples left over after the last full batch are not trained on in that epoch (with shuffling they
are different samples each epoch); ``fit`` warns once and records the count in the history.
``predict``/``evaluate`` cover every sample either way (a fixed-size last batch is padded and the
padding's outputs dropped: inference treats samples independently).

Loss and accuracy in ``evaluate`` are computed in NumPy (float64) from the ``infer`` output with the
formula of the model's training loss (the ``train`` signature returns only the loss of a step and
the ``grad`` signature would run the backward pass for nothing).
"""
from __future__ import annotations

import json
import math
import operator
import os
import sys
import time
import warnings
from typing import Any, Mapping, TextIO

import numpy as np

from edge import checkpoint as checkpoints
from edge.errors import InvalidArgumentError, InvalidModelError, UnsupportedError
from edge.interpreter import Interpreter

REQUIRED_SIGNATURES = ("infer", "grad", "train")
LABELS = "labels"
LOSS_OUTPUT = "loss"
LEARNING_RATE = "optimizer/learning_rate"

# Spellings of training.loss -> the loss the Trainer computes in evaluate().
LOSS_KINDS = {
    "cross_entropy": "cross_entropy", "softmax_cross_entropy": "cross_entropy", "crossentropy": "cross_entropy",
    "bce": "bce", "bce_with_logits": "bce", "binary_cross_entropy": "bce",
    "mse": "mse", "mean_squared_error": "mse",
}
DEFAULT_BATCH = 32
DEFAULT_PREDICT_BATCH = 256


def _loss_kind(value: str | None) -> str:
    if not value:
        raise InvalidModelError("the model has no 'training.loss' metadata: it is not a trainable model "
                                "(convert it with --trainable)")
    text = value.strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    if isinstance(parsed, dict):
        parsed = parsed.get("kind") or parsed.get("loss") or ""
    kind = LOSS_KINDS.get(str(parsed).strip().lower())
    if kind is None:
        raise UnsupportedError(f"training.loss {value!r} is not a loss this Trainer knows "
                               f"({sorted(set(LOSS_KINDS))})")
    return kind


def _json_metadata(metadata: Mapping[str, str], key: str, default):
    text = metadata.get(key)
    if text is None:
        return default
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidModelError(f"metadata '{key}' is not JSON: {text[:80]!r}") from None


def _positive_int(value, what: str) -> int:
    try:
        number = operator.index(value)
    except TypeError:
        raise InvalidArgumentError(f"{what} must be an integer >= 1, got {value!r}") from None
    if number < 1:
        raise InvalidArgumentError(f"{what} must be an integer >= 1, got {number}")
    return number


def _log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def loss_and_accuracy(kind: str, prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """The model's loss (mean over the batch, as the LOSS op defines it) and, for classifiers,
    the accuracy, in float64."""
    z = prediction.astype(np.float64)
    if kind == "cross_entropy":
        log_p = _log_softmax(z.reshape(-1, z.shape[-1]))
        if np.issubdtype(target.dtype, np.integer):
            ids = target.reshape(-1).astype(np.int64)
            loss = -log_p[np.arange(ids.size), ids].mean()
        else:
            t = target.astype(np.float64).reshape(log_p.shape)
            loss = -(t * log_p).sum(axis=-1).mean()
            ids = t.argmax(axis=-1)
        return {"loss": float(loss), "accuracy": float((log_p.argmax(axis=-1) == ids).mean())}
    t = target.astype(np.float64).reshape(z.shape)
    if kind == "bce":
        loss = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
        return {"loss": float(loss.mean()), "accuracy": float(((z > 0) == (t >= 0.5)).mean())}
    return {"loss": float(((z - t) ** 2).mean())}


class _Progress:
    """One epoch's progress: rich or tqdm when installed and writing to a terminal, else a plain
    line per epoch (edge runs on devices that have neither)."""

    def __init__(self, total: int, description: str, stream: TextIO, bar: bool):
        self.total, self.description, self.stream = total, description, stream
        self.done = 0
        self._rich = self._tqdm = None
        interactive = bar and hasattr(stream, "isatty") and stream.isatty()
        if not interactive:
            return
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._rich = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                                  console=Console(file=stream), transient=True)
            self._rich.start()
            self._task = self._rich.add_task(description, total=total, status="")
            return
        except ImportError:
            pass
        try:
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, desc=description, file=stream, unit="sample", leave=False)
        except ImportError:
            pass

    def update(self, count: int, status: str) -> None:
        self.done += count
        if self._rich is not None:
            self._rich.update(self._task, advance=count, status=status)
        elif self._tqdm is not None:
            self._tqdm.update(count)
            self._tqdm.set_postfix_str(status, refresh=False)

    def close(self, summary: str | None) -> None:
        if self._rich is not None:
            self._rich.stop()
        elif self._tqdm is not None:
            self._tqdm.close()
        if summary is not None:
            print(f"{self.description}  {summary}", file=self.stream, flush=True)


class Trainer:
    """Trains a trainable .edge model (see the module docstring) with the C runtime.

    ``num_threads`` is passed to the interpreter: for a fixed seed and thread count, training is
    deterministic (the same weights bit for bit).
    """

    def __init__(self, model_path: str | os.PathLike, num_threads: int = 1):
        self.model_path = os.fspath(model_path)
        self._interpreter = Interpreter(model_path=self.model_path, num_threads=num_threads)
        signatures = self._interpreter._signatures
        missing = [key for key in REQUIRED_SIGNATURES if key not in signatures]
        if missing:
            raise InvalidModelError(f"{self.model_path}: not a trainable model: no signature(s) {missing} "
                                    f"(it has {sorted(signatures)}); convert it with --trainable")
        metadata = self._interpreter.metadata()
        self.loss = _loss_kind(metadata.get("training.loss"))
        self.optimizer: dict[str, Any] = _json_metadata(metadata, "training.optimizer", {})
        self.trainable: list[str] = list(_json_metadata(metadata, "training.trainable", []))
        self.labels_spec = _json_metadata(metadata, "training.labels", {})

        self._train_signature = signatures["train"]
        self._infer_signature = signatures["infer"]
        train_inputs = self._train_signature["inputs"]
        if LABELS not in train_inputs:
            raise InvalidModelError(f"{self.model_path}: the train signature has no '{LABELS}' input "
                                    f"(inputs {list(train_inputs)})")
        if LOSS_OUTPUT not in self._train_signature["outputs"]:
            raise InvalidModelError(f"{self.model_path}: the train signature has no '{LOSS_OUTPUT}' output")
        self._features = {name: t for name, t in train_inputs.items() if name != LABELS}
        self._labels = train_inputs[LABELS]
        self._loss = self._train_signature["outputs"][LOSS_OUTPUT]
        infer_inputs = self._infer_signature["inputs"]
        if set(infer_inputs) != set(self._features):
            raise InvalidModelError(f"{self.model_path}: infer takes {list(infer_inputs)} but train takes "
                                    f"{list(self._features)} besides the labels")
        if not self._infer_signature["outputs"]:
            raise InvalidModelError(f"{self.model_path}: the infer signature has no outputs")
        self.output_name, self._prediction = next(iter(self._infer_signature["outputs"].items()))
        # A model that ends with Softmax trains on its input (the fused loss takes the logits) and
        # infers probabilities: evaluate() then takes their logarithm as the logits.
        self._prediction_is_probability = self.loss == "cross_entropy" and any(
            op["op"] == "SOFTMAX" and self._prediction in op["outputs"] for op in self._interpreter.op_details())

        details = {d["index"]: d for d in self._interpreter.get_tensor_details()}
        self._variables = {d["name"]: d["index"] for d in details.values() if d["kind"] == "variable"}
        self._variable_specs = {d["name"]: (tuple(int(s) for s in d["shape"]), np.dtype(d["dtype"]))
                                for d in details.values() if d["kind"] == "variable"}
        unknown = [name for name in self.trainable if name not in self._variables]
        if unknown:
            raise InvalidModelError(f"{self.model_path}: training.trainable names {unknown}, which are not "
                                    "variable tensors of the model")
        self._declared = {index: details[index] for index in (*self._features.values(), self._labels)}
        batch_dims = {int(d["shape_signature"][0]) if len(d["shape_signature"]) else 0
                      for d in self._declared.values()}
        # -1: dynamic batch; otherwise every train step has exactly this many samples.
        self.fixed_batch: int | None = None if -1 in batch_dims else int(next(
            int(d["shape"][0]) for d in self._declared.values() if len(d["shape"])))
        self.epochs_trained = 0

    # ---- lifetime ----

    def close(self) -> None:
        self._interpreter.close()

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def interpreter(self) -> Interpreter:
        """The interpreter behind the trainer (its variables are the trainer's state)."""
        return self._interpreter

    @property
    def num_threads(self) -> int:
        return self._interpreter.num_threads

    # ---- variables ----

    @property
    def variable_names(self) -> list[str]:
        return list(self._variables)

    def get_variable(self, name: str) -> np.ndarray:
        if name not in self._variables:
            raise InvalidArgumentError(f"the model has no variable '{name}' (variables: {self.variable_names})")
        return self._interpreter.get_tensor(self._variables[name])

    def set_variable(self, name: str, value) -> None:
        if name not in self._variables:
            raise InvalidArgumentError(f"the model has no variable '{name}' (variables: {self.variable_names})")
        dtype = self._variable_specs[name][1]
        self._interpreter.set_tensor(self._variables[name], np.asarray(value, dtype=dtype))

    def variables(self) -> dict[str, np.ndarray]:
        """A copy of every variable: trainable weights, running statistics, optimizer slots."""
        return {name: self._interpreter.get_tensor(index) for name, index in self._variables.items()}

    def weights(self) -> dict[str, np.ndarray]:
        """A copy of the trainable variables."""
        return {name: self.get_variable(name) for name in self.trainable}

    def reset(self) -> None:
        """Every variable back to its value in the model file (weights, slots, step, learning rate)."""
        self._interpreter.reset_variables()
        self.epochs_trained = 0

    @property
    def learning_rate(self) -> float:
        return float(self.get_variable(self._learning_rate_name()))

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        rate = float(value)
        if not math.isfinite(rate) or rate < 0:
            raise InvalidArgumentError(f"learning_rate must be a finite number >= 0, got {value!r}")
        self.set_variable(self._learning_rate_name(), np.float32(rate))

    def _learning_rate_name(self) -> str:
        if LEARNING_RATE not in self._variables:
            raise UnsupportedError(f"{self.model_path}: the model has no '{LEARNING_RATE}' variable")
        return LEARNING_RATE

    # ---- data ----

    def _feature_arrays(self, x) -> dict[str, np.ndarray]:
        if isinstance(x, Mapping):
            unknown = [name for name in x if name not in self._features]
            missing = [name for name in self._features if name not in x]
            if unknown or missing:
                raise InvalidArgumentError(f"inputs: the model takes {list(self._features)}"
                                           + (f"; missing {missing}" if missing else "")
                                           + (f"; unknown {unknown}" if unknown else ""))
            given = dict(x)
        elif len(self._features) == 1:
            given = {next(iter(self._features)): x}
        else:
            raise InvalidArgumentError(f"the model has {len(self._features)} inputs {list(self._features)}: "
                                       "pass x as a dict of arrays by input name")
        arrays, count = {}, None
        for name, value in given.items():
            declared = self._declared[self._features[name]]
            array = np.asarray(value)
            dtype = np.dtype(declared["dtype"])
            if array.dtype != dtype:
                if array.dtype.kind != dtype.kind and not (array.dtype.kind in "iu" and dtype.kind in "iu"):
                    raise InvalidArgumentError(f"input '{name}': {array.dtype.name} data for a {dtype.name} input")
                array = array.astype(dtype)
            sample = tuple(int(d) for d in declared["shape"][1:])
            if array.ndim != len(declared["shape"]) or array.shape[1:] != sample:
                raise InvalidArgumentError(f"input '{name}': expected samples of shape {list(sample)} "
                                           f"(array [N, {', '.join(map(str, sample))}]), got {list(array.shape)}")
            if count is not None and array.shape[0] != count:
                raise InvalidArgumentError(f"inputs hold different numbers of samples ({count} and {array.shape[0]})")
            count = array.shape[0]
            arrays[name] = np.ascontiguousarray(array)  # ndim >= 1 here
        if not count:
            raise InvalidArgumentError("no samples given")
        return arrays

    def _label_array(self, y, count: int) -> np.ndarray:
        declared = self._declared[self._labels]
        dtype = np.dtype(declared["dtype"])
        array = np.asarray(y)
        sample = tuple(int(d) for d in declared["shape"][1:])
        if array.shape != (count, *sample):
            raise InvalidArgumentError(f"labels: expected shape {[count, *sample]} for {count} samples, "
                                       f"got {list(array.shape)}")
        if dtype.kind in "iu":
            if array.dtype.kind not in "iu":
                raise InvalidArgumentError(f"labels: the model takes {dtype.name} class ids, got {array.dtype.name}")
            classes = int(self._declared_output_shape()[-1])
            low, high = int(array.min()), int(array.max())
            if low < 0 or high >= classes:
                bad = low if low < 0 else high
                raise InvalidArgumentError(f"labels: class id {bad} is out of range for {classes} classes")
        elif array.dtype.kind not in "fiub":
            raise InvalidArgumentError(f"labels: the model takes {dtype.name} targets, got {array.dtype.name}")
        return np.require(array.astype(dtype, copy=False), requirements="C")

    def _declared_output_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self._interpreter._details(self._prediction)["shape"])

    def _resize(self, batch: int) -> None:
        """Shapes every train/infer input for ``batch`` samples (dynamic batch only) and allocates."""
        interpreter = self._interpreter
        # Asked of the interpreter, not cached: a SignatureRunner of the same interpreter may have
        # resized it since.
        labels_shape = interpreter._shape(interpreter._info(self._labels))
        if interpreter._allocated and labels_shape[:1] == (batch,):
            return
        if self.fixed_batch is None:
            for index, declared in self._declared.items():
                interpreter.resize_tensor_input(index, (batch, *[int(d) for d in declared["shape"][1:]]))
        elif batch != self.fixed_batch:
            raise InvalidArgumentError(f"the model's batch is fixed at {self.fixed_batch}, got a batch of {batch}")
        interpreter.allocate_tensors()

    def _train_batch(self, batch_size) -> int:
        if batch_size is None:
            return self.fixed_batch or DEFAULT_BATCH
        batch = _positive_int(batch_size, "batch_size")
        if self.fixed_batch is not None and batch != self.fixed_batch:
            raise InvalidArgumentError(f"batch_size={batch}: the model's train signature has a fixed batch of "
                                       f"{self.fixed_batch} (convert it with a dynamic batch to choose another)")
        return batch

    # ---- training ----

    def train_step(self, x, y) -> float:
        """One optimizer step on one batch; returns its loss."""
        features = self._feature_arrays(x)
        count = next(iter(features.values())).shape[0]
        return self._step(features, self._label_array(y, count))

    def _step(self, features: Mapping[str, np.ndarray], labels: np.ndarray) -> float:
        interpreter = self._interpreter
        self._resize(labels.shape[0])
        for name, array in features.items():
            interpreter.set_tensor(self._features[name], array)
        interpreter.set_tensor(self._labels, labels)
        interpreter._invoke_signature(self._train_signature["index"])
        return float(interpreter.get_tensor(self._loss))

    def fit(self, x, y, batch_size: int | None = None, epochs: int = 1, shuffle: bool = True,
            validation_data=None, seed: int = 0, verbose: int = 1, stream: TextIO | None = None) -> dict[str, list]:
        """Trains for ``epochs`` passes over (x, y); returns the history:
        {"loss": mean training loss per epoch, "time_s", "samples_per_s", "samples", "dropped_samples",
        and with validation_data "val_loss" (+ "val_accuracy" for classifiers)}.

        ``batch_size`` defaults to the model's fixed batch, else 32. ``seed`` drives the shuffling
        (a fresh generator per call). ``verbose``: 0 silent, 1 a progress bar (rich or tqdm when
        installed and on a terminal) and a line per epoch, 2 only the line per epoch.
        """
        epochs = _positive_int(epochs, "epochs")
        features = self._feature_arrays(x)
        count = next(iter(features.values())).shape[0]
        labels = self._label_array(y, count)
        batch = self._train_batch(batch_size)
        if self.fixed_batch is not None:
            steps, dropped = count // batch, count % batch
            if steps == 0:
                raise InvalidArgumentError(f"{count} samples are fewer than the model's fixed batch of {batch}")
            if dropped:
                warnings.warn(f"the model's batch is fixed at {batch}: the last {dropped} of {count} samples "
                              "(different ones each epoch when shuffling) are not trained on in each epoch",
                              stacklevel=2)
        else:
            steps, dropped = math.ceil(count / batch), 0
        validation = None
        if validation_data is not None:
            if len(validation_data) != 2:
                raise InvalidArgumentError("validation_data must be a pair (x, y)")
            val_features = self._feature_arrays(validation_data[0])
            val_count = next(iter(val_features.values())).shape[0]
            validation = (val_features, self._label_array(validation_data[1], val_count))
        stream = stream or sys.stdout
        rng = np.random.default_rng(seed)
        history: dict[str, list] = {"loss": [], "time_s": [], "samples_per_s": [], "samples": [],
                                    "dropped_samples": []}
        for epoch in range(epochs):
            order = rng.permutation(count) if shuffle else np.arange(count)
            progress = _Progress(steps * batch if dropped else count,
                                 f"epoch {self.epochs_trained + 1} ({epoch + 1}/{epochs})", stream, verbose == 1)
            total, seen = 0.0, 0
            start = time.perf_counter()
            try:
                for step in range(steps):
                    chosen = order[step * batch:(step + 1) * batch]
                    loss = self._step({name: array[chosen] for name, array in features.items()}, labels[chosen])
                    total += loss * len(chosen)
                    seen += len(chosen)
                    if verbose == 1:
                        progress.update(len(chosen), f"loss {total / seen:.4f}")
            except BaseException:
                progress.close(None)
                raise
            elapsed = time.perf_counter() - start
            self.epochs_trained += 1
            history["loss"].append(total / seen)
            history["time_s"].append(elapsed)
            history["samples_per_s"].append(seen / elapsed if elapsed > 0 else float("inf"))
            history["samples"].append(seen)
            history["dropped_samples"].append(dropped)
            summary = f"loss {total / seen:.4f}"
            if validation is not None:
                metrics = self._evaluate(*validation)
                for key, value in metrics.items():
                    history.setdefault(f"val_{key}", []).append(value)
                summary += "  " + "  ".join(f"val_{key} {value:.4f}" for key, value in metrics.items())
            summary += f"  {elapsed:.2f} s ({seen / elapsed:.0f} samples/s)" if elapsed > 0 else ""
            progress.close(summary if verbose else None)
        return history

    # ---- inference ----

    def predict(self, x, batch_size: int | None = None) -> np.ndarray:
        """The infer signature's (first) output for every sample of x."""
        return self._predict(self._feature_arrays(x), batch_size)

    def _predict(self, features: Mapping[str, np.ndarray], batch_size: int | None = None) -> np.ndarray:
        count = next(iter(features.values())).shape[0]
        if self.fixed_batch is not None:
            batch = self.fixed_batch
        else:
            batch = _positive_int(batch_size, "batch_size") if batch_size is not None else min(count,
                                                                                                 DEFAULT_PREDICT_BATCH)
        interpreter = self._interpreter
        inputs = self._infer_signature["inputs"]
        pieces = []
        for start in range(0, count, batch):
            chunk = {name: array[start:start + batch] for name, array in features.items()}
            size = next(iter(chunk.values())).shape[0]
            if self.fixed_batch is not None and size < batch:
                # Padding with copies of the last sample: its outputs are dropped below.
                chunk = {name: np.concatenate([a, np.repeat(a[-1:], batch - size, axis=0)])
                         for name, a in chunk.items()}
            self._resize(batch if self.fixed_batch is not None else size)
            for name, array in chunk.items():
                interpreter.set_tensor(inputs[name], array)
            interpreter._invoke_signature(self._infer_signature["index"])
            pieces.append(interpreter.get_tensor(self._prediction)[:size])
        return np.concatenate(pieces)

    def evaluate(self, x, y, batch_size: int | None = None) -> dict[str, float]:
        """{"loss": the model's loss over all of (x, y), "accuracy": for cross-entropy and BCE models}."""
        features = self._feature_arrays(x)
        count = next(iter(features.values())).shape[0]
        return self._evaluate(features, self._label_array(y, count), batch_size)

    def _evaluate(self, features, labels, batch_size=None) -> dict[str, float]:
        prediction = self._predict(features, batch_size)
        if self._prediction_is_probability:
            prediction = np.log(np.maximum(prediction.astype(np.float64), np.finfo(np.float64).tiny))
        return loss_and_accuracy(self.loss, prediction, labels)

    # ---- checkpoints and export ----

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Writes every variable (weights, BatchNorm statistics, optimizer slots and step, learning
        rate) to ``path`` atomically: a crash during the save leaves the previous file intact."""
        checkpoints.save(path, self.variables(), info={
            "model": os.path.basename(self.model_path), "epochs_trained": self.epochs_trained,
            "loss": self.loss, "optimizer": self.optimizer, "trainable": self.trainable})

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restores every variable from ``path``. A checkpoint of another model, or with a variable
        missing or of another shape, raises CheckpointError naming it, and nothing is changed."""
        loaded = checkpoints.restore(path, self._interpreter, self._variables, self._variable_specs)
        self.epochs_trained = int(loaded.info.get("epochs_trained", 0) or 0)

    def export(self, path: str | os.PathLike) -> None:
        """Writes a .edge model whose weights are the trained ones, which edge.Interpreter loads.

        Written by the C runtime (edge_interpreter_save_model: the loaded model's bytes with every
        variable's current value over its initial value, written to a temporary file, synced and
        renamed), so no converter is involved. The file keeps the three signatures (a Trainer
        opened on it resumes from the trained weights, optimizer state included). For inference,
        a plain ``invoke()`` or the "infer" signature runs the forward ops only (the C runtime's
        invoke runs what the graph outputs need; the backward and optimizer ops run only through
        "grad" and "train").
        """
        lib = self._interpreter._lib
        try:
            save_model = lib.edge_interpreter_save_model
        except AttributeError:
            raise UnsupportedError("this C runtime has no edge_interpreter_save_model: rebuild it") from None
        self._interpreter._check(save_model(self._interpreter._handle(), os.fsencode(os.fspath(path))))
