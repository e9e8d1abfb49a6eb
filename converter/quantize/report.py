"""The quantization report: per-layer error (SQNR against float32) and the ops left in float.

SQNR of a layer = 10 * log10(sum(ref**2) / sum((ref - q)**2)) in dB over the calibration samples
it was measured on, where ``ref`` is the layer's output in the float32 graph and ``q`` the same
output in the quantized graph (dequantized), both from the reference executor. The error is
cumulative: it includes what earlier layers contributed, which is what a user deciding which
layer to keep in float (``--keep-float``) needs to see.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
import numpy as np

# Layers below this SQNR are flagged (20 dB: the error's power is 1% of the signal's).
FLAG_BELOW_DB = 20.0
WORST_SHOWN = 3


@dataclass(frozen=True)
class LayerError:
    node: str          # node name (what --keep-float takes)
    op: str
    tensor: str        # the layer's output tensor in the float graph
    sqnr_db: float     # inf when the quantized output equals the float one


@dataclass(frozen=True)
class FloatOp:
    node: str
    op: str
    reason: str


@dataclass(frozen=True)
class SentinelHandling:
    tensor: str
    values: str        # what the sentinels were ("12 values such as -inf")
    handling: str      # "kept in float", or how they saturate and which range the rest got


@dataclass
class QuantizationReport:
    mode: str                                   # "fp16", "dynamic" or "int8"
    method: str | None = None                   # calibration range method (int8)
    calibration_samples: int = 0                # batches run for calibration
    sqnr_samples: int = 0                       # batches the per-layer error was measured on
    layers: list[LayerError] = field(default_factory=list)   # measured when calibration data was given
    quantized: list[tuple[str, str]] = field(default_factory=list)   # (node, op) of every quantized op
    float_ops: list[FloatOp] = field(default_factory=list)
    kept_float: list[str] = field(default_factory=list)
    quantize_nodes: int = 0
    dequantize_nodes: int = 0
    weights_bytes_before: int = 0
    weights_bytes_after: int = 0
    flag_below_db: float = FLAG_BELOW_DB
    notes: list[str] = field(default_factory=list)
    sentinels: list[SentinelHandling] = field(default_factory=list)
    methods: dict[str, str] = field(default_factory=dict)    # tensor -> range method (method "auto")
    smoothed: list = field(default_factory=list)   # converter.quantize.smoothing.Smoothed, per LayerNorm

    @property
    def quantized_ops(self) -> int:
        return len(self.quantized)

    def flagged(self) -> list[LayerError]:
        """Layers whose SQNR is below ``flag_below_db``, worst first."""
        return sorted((e for e in self.layers if e.sqnr_db < self.flag_below_db), key=lambda e: e.sqnr_db)

    def worst(self, count: int = WORST_SHOWN) -> list[LayerError]:
        return sorted(self.layers, key=lambda e: e.sqnr_db)[:count]

    def suggest_keep_float(self, count: int = WORST_SHOWN) -> list[str]:
        """The --keep-float names worth trying first: the flagged layers, else the worst ones
        (a layer whose SQNR is exact or infinite is never suggested)."""
        chosen = self.flagged() or [e for e in self.worst(len(self.layers)) if math.isfinite(e.sqnr_db)]
        names = []
        for e in chosen:
            if e.node not in names:
                names.append(e.node)
        return names[:count]

    def sqnr_of(self, node: str) -> float:
        for e in self.layers:
            if e.node == node:
                return e.sqnr_db
        raise KeyError(f"no quantized layer named {node!r}")

    def __str__(self) -> str:
        return render_text(self)


def sqnr_db(signal_power: float, noise_power: float) -> float:
    if noise_power == 0.0:
        return math.inf
    if signal_power == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal_power / noise_power)


class SqnrAccumulator:
    """Sums sum(ref**2) and sum((ref - q)**2) per layer over several batches (in float64)."""

    def __init__(self):
        self.signal: dict[str, float] = {}
        self.noise: dict[str, float] = {}

    def add(self, key: str, reference: np.ndarray, quantized: np.ndarray) -> None:
        ref = np.asarray(reference, np.float64)
        err = ref - np.asarray(quantized, np.float64)
        self.signal[key] = self.signal.get(key, 0.0) + float(np.sum(ref * ref))
        self.noise[key] = self.noise.get(key, 0.0) + float(np.sum(err * err))

    def result(self, key: str) -> float:
        return sqnr_db(self.signal.get(key, 0.0), self.noise.get(key, 0.0))


def _fmt_db(value: float) -> str:
    return "exact" if value == math.inf else f"{value:6.1f} dB"


def render_text(report: QuantizationReport) -> str:
    out = io.StringIO()
    what = {"fp16": "float16 weights", "dynamic": "dynamic int8 (int8 weights, float activations)",
            "int8": "full int8"}.get(report.mode, report.mode)
    print(f"quantization: {what}" + (f", calibration {report.method} over {report.calibration_samples} "
                                     f"batch(es)" if report.mode == "int8" else ""), file=out)
    print(f"  quantized ops {report.quantized_ops}, left in float {len(report.float_ops)}, "
          f"inserted Quantize {report.quantize_nodes} / Dequantize {report.dequantize_nodes}", file=out)
    if report.weights_bytes_before:
        ratio = report.weights_bytes_after / report.weights_bytes_before
        print(f"  weights {report.weights_bytes_before} -> {report.weights_bytes_after} bytes "
              f"({ratio:.2f}x)", file=out)
    if report.layers:
        print(f"  per-layer SQNR vs float32 ({report.sqnr_samples} batch(es)); "
              f"flagged below {report.flag_below_db:g} dB with '!':", file=out)
        width = max(len(e.node) for e in report.layers)
        for e in report.layers:
            mark = "!" if e.sqnr_db < report.flag_below_db else " "
            print(f"   {mark} {e.node:<{width}}  {e.op:<14} {_fmt_db(e.sqnr_db)}", file=out)
        worst = ", ".join(f"{e.node} ({_fmt_db(e.sqnr_db).strip()})" for e in report.worst())
        print(f"  worst: {worst}", file=out)
        names = report.suggest_keep_float()
        if names:
            what = "flagged" if report.flagged() else "worst"
            print(f"  to keep the {what} layers in float: --keep-float {' '.join(names)}", file=out)
    if report.float_ops:
        print("  left in float:", file=out)
        for f in report.float_ops:
            print(f"    {f.node} ({f.op}): {f.reason}", file=out)
    if report.methods:
        counts: dict[str, int] = {}
        for method in report.methods.values():
            counts[method] = counts.get(method, 0) + 1
        chosen = ", ".join(f"{m} {n}" for m, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        print(f"  calibration auto chose per tensor: {chosen}", file=out)
    if report.smoothed:
        print(f"  outlier smoothing (x / s into the LayerNorm, W * s into the FullyConnected layers) on "
              f"{len(report.smoothed)} LayerNorm output(s):", file=out)
        for entry in report.smoothed:
            print(f"    {entry.tensor} -> {entry.readers} FullyConnected: s in [{entry.scale_min:.3g}, "
                  f"{entry.scale_max:.3g}]", file=out)
    if report.sentinels:
        print("  sentinel values (masks, padding):", file=out)
        for entry in report.sentinels:
            print(f"    {entry.tensor}: {entry.values}: {entry.handling}", file=out)
    for note in report.notes:
        print(f"  note: {note}", file=out)
    return out.getvalue()
