"""What distributed training needs to know of a trainable .edge file, and the parameter server's
update program.

A trainable model (``edge convert --trainable``) holds the variables, a ``grad`` signature
(inputs + labels -> loss + ``grad/<variable>``; an embedding table read by one Gather gets
``grad/<table>/rows`` + ``grad/<table>/indices`` instead) and the optimizer it was converted with.
``ModelSpec`` reads those facts once through the C runtime (no converter, no ONNX).

The parameter server applies updates with the runtime's own optimizer kernels: each shard builds an
``update program``, a small .edge graph with its share of the variables, their optimizer slots and
the learning rate as variables, one input per gradient and one OPTIMIZER_UPDATE per variable,
grouped under an ``apply`` signature. So there is one implementation of Adam & co. for the device
(``train`` signature) and the datacenter (the shards).

Sharding: dense variables go whole to the shard holding the fewest bytes so far (largest first);
a sparse table is cut into contiguous row ranges, one per shard, so a push or pull of rows by id
touches only the shards owning those rows.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from converter.autodiff.trainable import TrainingConfig
from converter.ops.training import OPTIMIZER_KINDS, OPTIMIZER_SLOTS
from edge.errors import InvalidModelError
from edge.trainer import LABELS, LOSS_OUTPUT, Trainer

GRAD_PREFIX = "grad/"


class TrainingError(ValueError):
    """A job that cannot be started as asked: the message names the argument or the model's problem."""


@dataclass(frozen=True)
class Variable:
    name: str
    shape: tuple[int, ...]
    dtype: str
    sparse: bool = False     # an embedding table updated by rows

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class Optimizer:
    """The update rule the shards apply (from the model's metadata, optionally overridden)."""
    kind: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float | None = None

    def __post_init__(self):
        if self.kind not in OPTIMIZER_KINDS:
            raise TrainingError(f"optimizer {self.kind!r} is not one of {', '.join(OPTIMIZER_KINDS)}")
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)
                and 0 < self.learning_rate <= 10):
            raise TrainingError(f"learning rate {self.learning_rate!r} must be a number in (0, 10]")
        if not 0 <= self.momentum < 1:
            raise TrainingError(f"momentum {self.momentum!r} must be in [0, 1)")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise TrainingError(f"beta1 {self.beta1!r} and beta2 {self.beta2!r} must be in [0, 1)")
        if not (self.epsilon > 0 and math.isfinite(self.epsilon)):
            raise TrainingError(f"epsilon {self.epsilon!r} must be positive")
        if not (0 <= self.weight_decay < 1):
            raise TrainingError(f"weight_decay {self.weight_decay!r} must be in [0, 1)")
        if self.clip_norm is not None and not (self.clip_norm > 0 and math.isfinite(self.clip_norm)):
            raise TrainingError(f"clip_norm {self.clip_norm!r} must be positive")

    def slots(self) -> tuple[str, ...]:
        """Slot variables per parameter, in OPTIMIZER_UPDATE's input order ("step" is a scalar)."""
        return OPTIMIZER_SLOTS[self.kind]

    def update_attrs(self) -> dict:
        """OPTIMIZER_UPDATE's attributes, as the trainable conversion writes them."""
        return TrainingConfig(optimizer=self.kind, lr=self.learning_rate, momentum=self.momentum,
                              nesterov=self.nesterov, beta1=self.beta1, beta2=self.beta2, epsilon=self.epsilon,
                              weight_decay=self.weight_decay).optimizer_attrs()

    def with_overrides(self, **overrides) -> "Optimizer":
        values = {k: v for k, v in overrides.items() if v is not None}
        if values.get("kind") and values["kind"] != self.kind and "momentum" not in values:
            values["momentum"] = 0.9 if values["kind"] == "momentum" else 0.0
        return Optimizer(**{**self.__dict__, **values})


@dataclass
class ModelSpec:
    """A trainable model's contract with the training system, read from its bytes."""
    data: bytes
    sha256: str
    inputs: dict[str, tuple[tuple[int, ...], str, bool]]   # name -> (shape, dtype, batch dynamic)
    labels: tuple[tuple[int, ...], str]
    loss: str
    variables: dict[str, Variable]                        # the trainable ones, in the model's order
    optimizer: Optimizer
    classes: int | None = None                            # class-id labels: the logits' last dimension
    other_variables: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # e.g. BN statistics
    initial: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def fixed_batch(self) -> int | None:
        shape, _, dynamic = next(iter(self.inputs.values()))
        return None if dynamic else int(shape[0])

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "model") -> "ModelSpec":
        with tempfile.TemporaryDirectory(prefix="edge-spec-") as folder:
            path = os.path.join(folder, "model.edge")
            with open(path, "wb") as out:
                out.write(data)
            try:
                trainer = Trainer(path)
            except InvalidModelError as error:
                raise TrainingError(f"{name}: {str(error).replace(path, 'the model')}") from None
            with trainer:
                return cls._read(trainer, bytes(data), name)

    @classmethod
    def _read(cls, trainer: Trainer, data: bytes, name: str) -> "ModelSpec":
        interpreter = trainer.interpreter
        signatures = interpreter.get_signature_list()
        grad = interpreter.get_signature_runner("grad")
        grad_inputs = grad.get_input_details()
        grad_outputs = set(grad.get_output_details())
        if LABELS not in grad_inputs or LOSS_OUTPUT not in grad_outputs:
            raise TrainingError(f"{name}: the grad signature lacks '{LABELS}' or '{LOSS_OUTPUT}' "
                                f"(it has {signatures['grad']})")
        inputs = {}
        for key, detail in grad_inputs.items():
            if key == LABELS:
                continue
            dynamic = bool(len(detail["shape_signature"]) and detail["shape_signature"][0] == -1)
            inputs[key] = (tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"]).name, dynamic)
        label = grad_inputs[LABELS]
        variables = {}
        values = trainer.variables()
        for var in trainer.trainable:
            value = values[var]
            if f"{GRAD_PREFIX}{var}" in grad_outputs:
                sparse = False
            elif f"{GRAD_PREFIX}{var}/rows" in grad_outputs and f"{GRAD_PREFIX}{var}/indices" in grad_outputs:
                sparse = True
            else:
                raise TrainingError(f"{name}: the grad signature has no gradient for variable '{var}'")
            variables[var] = Variable(var, tuple(value.shape), value.dtype.name, sparse)
        meta = trainer.optimizer
        optimizer = Optimizer(kind=meta.get("kind", "sgd"), learning_rate=float(meta.get("learning_rate", 0.01)),
                              momentum=float(meta.get("momentum", 0.0)), nesterov=bool(meta.get("nesterov", False)),
                              beta1=float(meta.get("beta1", 0.9)), beta2=float(meta.get("beta2", 0.999)),
                              epsilon=float(meta.get("epsilon", 1e-8)),
                              weight_decay=float(meta.get("weight_decay", 0.0)), clip_norm=meta.get("clip_norm"))
        classes = None
        if trainer.loss == "cross_entropy" and np.dtype(label["dtype"]).kind in "iu":
            infer = interpreter.get_signature_runner("infer").get_output_details()
            classes = int(next(iter(infer.values()))["shape"][-1])
        initial = {var: np.array(values[var]) for var in variables}
        slot_kinds = {slot for slots in OPTIMIZER_SLOTS.values() for slot in slots}
        initial.update({key: np.array(values[key]) for key in (f"optimizer/{var}/{slot}" for var in variables
                                                                for slot in slot_kinds) if key in values})
        others = {k: np.array(v) for k, v in values.items() if k not in variables and not k.startswith("optimizer/")}
        return cls(data=data, sha256=hashlib.sha256(data).hexdigest(), inputs=inputs,
                   labels=(tuple(int(d) for d in label["shape"]), np.dtype(label["dtype"]).name), loss=trainer.loss,
                   variables=variables, optimizer=optimizer, classes=classes, other_variables=others, initial=initial)


@dataclass(frozen=True)
class Placement:
    """Which shard owns what: whole dense variables, and row ranges [begin, end) of sparse tables."""
    shards: int
    dense: dict[str, int]                                  # variable -> shard
    rows: dict[str, tuple[tuple[int, int], ...]]           # table -> per-shard (begin, end)

    def shard_variables(self, k: int) -> list[str]:
        return [v for v, s in self.dense.items() if s == k]

    def shard_tables(self, k: int) -> dict[str, tuple[int, int]]:
        return {t: ranges[k] for t, ranges in self.rows.items() if ranges[k][1] > ranges[k][0]}

    def bytes_per_shard(self, variables: Mapping[str, Variable]) -> list[int]:
        sizes = [0] * self.shards
        for v, k in self.dense.items():
            sizes[k] += variables[v].nbytes
        for t, ranges in self.rows.items():
            row = variables[t].nbytes // max(variables[t].shape[0], 1)
            for k, (begin, end) in enumerate(ranges):
                sizes[k] += (end - begin) * row
        return sizes


def place(variables: Mapping[str, Variable], shards: int) -> Placement:
    """Size-balanced placement: sparse tables by even row ranges, dense variables largest first onto
    the shard with the fewest bytes so far (ties to the lower shard, so it is deterministic)."""
    if shards < 1:
        raise TrainingError(f"ps_shards must be >= 1, got {shards}")
    load = [0] * shards
    rows = {}
    for var in variables.values():
        if var.sparse:
            total = var.shape[0]
            bounds = [round(total * k / shards) for k in range(shards + 1)]
            rows[var.name] = tuple((bounds[k], bounds[k + 1]) for k in range(shards))
            row = var.nbytes // max(total, 1)
            for k in range(shards):
                load[k] += (bounds[k + 1] - bounds[k]) * row
    dense = {}
    for var in sorted((v for v in variables.values() if not v.sparse), key=lambda v: (-v.nbytes, v.name)):
        k = min(range(shards), key=lambda s: (load[s], s))
        dense[var.name] = k
        load[k] += var.nbytes
    order = {name: i for i, name in enumerate(variables)}
    return Placement(shards, dict(sorted(dense.items(), key=lambda kv: order[kv[0]])), rows)


def update_program(values: Mapping[str, np.ndarray], sparse: Sequence[str], optimizer: Optimizer,
                   slots: Mapping[str, np.ndarray] | None = None) -> bytes:
    """The .edge bytes of a shard's update program (see the module docstring).

    ``values``: the shard's variables (a sparse table's piece holds only its rows). Inputs are
    ``grad/<v>`` for dense variables and ``grad/<v>/rows`` [n, ...] + ``grad/<v>/indices`` [n]
    (int32, local row numbers) for sparse ones, n dynamic. ``slots`` gives starting optimizer
    state (``optimizer/<v>/<slot>``); missing ones start at zero."""
    from converter.builder import GraphBuilder
    from converter.writer import write_model

    slots = slots or {}
    b = GraphBuilder("parameter_shard")
    lr = b.variable("optimizer/learning_rate", np.float32(optimizer.learning_rate), "float32")
    attrs = optimizer.update_attrs()
    inputs = []
    for name, value in values.items():
        value = np.asarray(value)
        variable = b.variable(name, value, str(value.dtype))
        slot_tensors = []
        for slot in optimizer.slots():
            key = f"optimizer/{name}/{slot}"
            if slot == "step":
                start = np.float32(slots.get(key, 0.0))
                slot_tensors.append(b.variable(key, start, "float32"))
            else:
                start = slots.get(key)
                start = np.zeros(value.shape, value.dtype) if start is None else np.asarray(start, value.dtype)
                slot_tensors.append(b.variable(key, start, str(value.dtype)))
        if name in sparse:
            rows = b.input(f"{GRAD_PREFIX}{name}/rows", (1,) + value.shape[1:], str(value.dtype), dynamic_axes=(0,))
            indices = b.input(f"{GRAD_PREFIX}{name}/indices", (1,), "int32", dynamic_axes=(0,))
            inputs += [rows, indices]
            b.op("OptimizerUpdate", variable, rows, indices, lr, *slot_tensors, outputs=[], name=f"update/{name}",
                 sparse=True, **attrs)
        else:
            grad = b.input(f"{GRAD_PREFIX}{name}", value.shape, str(value.dtype))
            inputs.append(grad)
            b.op("OptimizerUpdate", variable, grad, lr, *slot_tensors, outputs=[], name=f"update/{name}",
                 sparse=False, **attrs)
    count = len(values)
    # The program's one output: the learning rate, so that the graph has an output; ``apply``
    # lists every update node so they all run.
    out = b.output(lr, name="learning_rate")
    b.signature("apply", inputs, {"learning_rate": out}, nodes=list(range(count + 1)))
    b.metadata("training.role", json.dumps({"program": "parameter-shard-update", "optimizer": optimizer.kind}))
    return write_model(b.build())
