"""The converter's exceptions."""
from __future__ import annotations


class ConversionError(Exception):
    """A model the converter cannot turn into the IR; the message names the node or tensor."""


class UnsupportedOpsError(ConversionError):
    """Every unsupported op of a model, found before anything was built.

    ``ops`` maps an op key to the names of the nodes that have it. The key is the op type
    ("NonZero"), the domain-qualified type for other domains ("com.microsoft.FusedConv"),
    or the op type with the reason in parentheses when only some uses are unsupported
    ("Resize (antialias=1)", "Add (dtype double)").
    """

    def __init__(self, ops: dict[str, list[str]]):
        self.ops = {key: list(names) for key, names in ops.items()}
        lines = []
        for key, names in sorted(self.ops.items()):
            shown = ", ".join(repr(n) for n in names[:3])
            more = f", ... ({len(names) - 3} more)" if len(names) > 3 else ""
            lines.append(f"  {key} x{len(names)}: {shown}{more}")
        total = sum(len(n) for n in self.ops.values())
        super().__init__(
            f"{len(self.ops)} unsupported op kind(s) in {total} node(s):\n" + "\n".join(lines))
