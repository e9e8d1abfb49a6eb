"""edge: the on-device Python SDK of edgesplit.

    import edge
    interpreter = edge.Interpreter(model_path="model.edge", num_threads=2)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    y = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

``edge.Trainer("model.train.edge")`` trains a model converted with --trainable (fit, evaluate,
checkpoints, export).

Needs only numpy and cffi (plus the C runtime built by pip install).
"""
from edge.errors import (BadStateError, EdgeError, EdgeRuntimeError, InvalidArgumentError, InvalidModelError,
                         ModelIOError, OutOfMemoryError, UnsupportedError)
from edge.interpreter import Interpreter, SignatureRunner
from edge.trainer import Trainer

__version__ = "0.1.0"


def runtime_version() -> str:
    """The C runtime's version string."""
    from cruntime.binding import ffi, load_library
    return ffi.string(load_library().edge_version()).decode()


def runtime_isa() -> str:
    """The kernel ISA the C runtime picked on this CPU ("scalar", "avx2", ...)."""
    from cruntime.binding import ffi, load_library
    return ffi.string(load_library().edge_isa()).decode()


__all__ = [
    "Interpreter", "SignatureRunner", "Trainer", "EdgeError", "InvalidModelError", "InvalidArgumentError",
    "UnsupportedError", "OutOfMemoryError", "BadStateError", "EdgeRuntimeError", "ModelIOError", "runtime_version", "runtime_isa",
]
