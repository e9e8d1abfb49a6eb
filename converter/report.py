"""The conversion report and its text rendering (rich when installed, plain otherwise)."""
from __future__ import annotations

import io
from dataclasses import dataclass, field

from converter.passes import PassReport

# Graph metadata key prefix naming each tensor cast at the model boundary (value: "float64 as float32").
BOUNDARY_KEY = "boundary_dtype:"


@dataclass
class ConversionReport:
    source_ops: dict[str, int]
    final_ops: dict[str, int]
    folded: int = 0
    fused: int = 0
    removed: int = 0
    transposes_left: int = 0
    constants_bytes: int = 0
    file_size: int = 0
    unsupported_ops: dict[str, list[str]] = field(default_factory=dict)
    # Graph inputs and outputs whose dtype the runtime casts at the boundary: name -> "float64 as float32".
    boundary_dtypes: dict[str, str] = field(default_factory=dict)
    passes: PassReport | None = None
    quantization: object | None = None   # converter.quantize.report.QuantizationReport
    # Dynamic input dims below the converted size (converter.passes.length): the constants read
    # through a run-time slice, and why others could not be (the model then runs only as converted).
    length_bound: tuple[str, ...] = ()
    length_notes: tuple[str, ...] = ()

    @property
    def source_node_count(self) -> int:
        return sum(self.source_ops.values())

    @property
    def final_node_count(self) -> int:
        return sum(self.final_ops.values())

    def __str__(self) -> str:
        return render_plain(self)

    def fusion_details(self) -> dict[str, int]:
        """What each fusing/folding pass took out of the graph: op -> nodes removed."""
        details: dict[str, int] = {}
        if self.passes is None:
            return details
        for record in self.passes.passes:
            if record.name in ("fuse_activation", "fold_batch_norm", "fold_constants", "fuse_residual_add"):
                for op, delta in record.op_delta.items():
                    if delta < 0:
                        key = f"{op} ({record.name})"
                        details[key] = details.get(key, 0) - delta
        return details


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _op_rows(report: ConversionReport) -> list[tuple[str, int, int]]:
    ops = sorted(set(report.source_ops) | set(report.final_ops),
                 key=lambda op: (-max(report.source_ops.get(op, 0), report.final_ops.get(op, 0)), op))
    return [(op, report.source_ops.get(op, 0), report.final_ops.get(op, 0)) for op in ops]


def _length_lines(report: ConversionReport) -> list[str]:
    lines = []
    if report.length_bound:
        lines.append(f"dynamic dims run at any size up to the converted one; {len(report.length_bound)} "
                     f"length-dependent constant(s) sliced at run time")
    lines += [f"dynamic dims fixed at the converted size: {note}" for note in report.length_notes]
    return lines


def render_plain(report: ConversionReport, title: str = "") -> str:
    out = io.StringIO()
    if title:
        print(title, file=out)
    print(f"ops: {report.source_node_count} -> {report.final_node_count}", file=out)
    width = max([len(op) for op, _, _ in _op_rows(report)] + [2])
    print(f"  {'op':<{width}}  before  after", file=out)
    for op, before, after in _op_rows(report):
        print(f"  {op:<{width}}  {before:>6}  {after:>5}", file=out)
    print(f"folded {report.folded}, fused {report.fused}, removed {report.removed}, "
          f"transposes left {report.transposes_left}", file=out)
    for what, count in report.fusion_details().items():
        print(f"  {what}: {count}", file=out)
    print(f"weights {human_bytes(report.constants_bytes)}, file {human_bytes(report.file_size)}", file=out)
    for line in _length_lines(report):
        print(line, file=out)
    if report.boundary_dtypes:
        print("cast at the model boundary, computed inside as the second dtype:", file=out)
        for name, how in report.boundary_dtypes.items():
            print(f"  {name}: {how}", file=out)
    if report.quantization is not None:
        print(str(report.quantization), end="", file=out)
    return out.getvalue()


def print_report(report: ConversionReport, title: str = "", file=None) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(render_plain(report, title), end="", file=file)
        return
    console = Console(file=file, highlight=False, soft_wrap=True)
    table = Table(title=title or None, show_edge=False)
    table.add_column("op")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for op, before, after in _op_rows(report):
        table.add_row(op, str(before), str(after))
    table.add_row("total", str(report.source_node_count), str(report.final_node_count), style="bold")
    console.print(table)
    console.print(f"folded {report.folded}, fused {report.fused}, removed {report.removed}, "
                  f"transposes left {report.transposes_left}")
    for what, count in report.fusion_details().items():
        console.print(f"  {what}: {count}")
    console.print(f"weights {human_bytes(report.constants_bytes)}, file {human_bytes(report.file_size)}")
    for line in _length_lines(report):
        console.print(line, markup=False)
    if report.quantization is not None:
        console.print(str(report.quantization), end="", markup=False)
