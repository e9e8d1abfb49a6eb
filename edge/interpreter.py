"""edge.Interpreter: the TFLite-style Python API over the C runtime.

Lifetimes follow cruntime/include/edge.h: the C model borrows the model bytes, every interpreter
borrows its model, and tensor memory handed out by ``tensor()`` stays valid until the next
``allocate_tensors()``. The Python objects keep those references themselves, so a user can drop
anything in any order; ``close()`` (or leaving a ``with`` block) frees the C objects at once.
"""
from __future__ import annotations

import operator
import os
import weakref
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from cruntime.binding import ffi, load_library
from edge.errors import BadStateError, InvalidArgumentError, error_for_status

# edge_dtype -> numpy scalar type (the enum in cruntime/include/edge.h).
_DTYPE_VALUES = ffi.typeof("edge_dtype").relements
NUMPY_TYPES: dict[int, type] = {
    _DTYPE_VALUES["EDGE_FLOAT32"]: np.float32,
    _DTYPE_VALUES["EDGE_FLOAT16"]: np.float16,
    _DTYPE_VALUES["EDGE_INT8"]: np.int8,
    _DTYPE_VALUES["EDGE_UINT8"]: np.uint8,
    _DTYPE_VALUES["EDGE_INT32"]: np.int32,
    _DTYPE_VALUES["EDGE_INT64"]: np.int64,
    _DTYPE_VALUES["EDGE_BOOL"]: np.bool_,
    _DTYPE_VALUES["EDGE_FLOAT64"]: np.float64,
    _DTYPE_VALUES["EDGE_INT16"]: np.int16,
    _DTYPE_VALUES["EDGE_UINT16"]: np.uint16,
    _DTYPE_VALUES["EDGE_UINT32"]: np.uint32,
    _DTYPE_VALUES["EDGE_UINT64"]: np.uint64,
}
# NumPy has no bfloat16, float8, float4, int4 or int2; ml_dtypes (which onnx installs) adds them.
# Without it such a tensor is read and written as its raw codes: uint16 for bfloat16, one uint8 a
# element for the others.
_ML_DTYPES = {"EDGE_BFLOAT16": "bfloat16", "EDGE_FLOAT8_E4M3FN": "float8_e4m3fn",
              "EDGE_FLOAT8_E4M3FNUZ": "float8_e4m3fnuz", "EDGE_FLOAT8_E5M2": "float8_e5m2",
              "EDGE_FLOAT8_E5M2FNUZ": "float8_e5m2fnuz", "EDGE_FLOAT8_E8M0FNU": "float8_e8m0fnu",
              "EDGE_FLOAT4_E2M1FN": "float4_e2m1fn", "EDGE_INT4": "int4", "EDGE_UINT4": "uint4", "EDGE_INT2": "int2",
              "EDGE_UINT2": "uint2"}
try:
    import ml_dtypes as _ml_dtypes
except ImportError:
    _ml_dtypes = None
for _name, _ml_name in _ML_DTYPES.items():
    _raw = np.uint16 if _ml_name == "bfloat16" else np.uint8
    NUMPY_TYPES[_DTYPE_VALUES[_name]] = getattr(_ml_dtypes, _ml_name) if _ml_dtypes else _raw
# Dtypes the runtime stores packed, ceil(n * bits / 8) bytes, element i in the low bits first;
# set_tensor and get_tensor pack and unpack (NumPy holds them a byte each). Signed ones sign-extend.
_PACKED = {_DTYPE_VALUES["EDGE_FLOAT4_E2M1FN"]: (4, False), _DTYPE_VALUES["EDGE_INT4"]: (4, True),
           _DTYPE_VALUES["EDGE_UINT4"]: (4, False), _DTYPE_VALUES["EDGE_INT2"]: (2, True),
           _DTYPE_VALUES["EDGE_UINT2"]: (2, False)}


def _pack(array: np.ndarray, bits: int) -> np.ndarray:
    codes = array.reshape(-1).view(np.uint8) & np.uint8((1 << bits) - 1)
    per_byte = 8 // bits
    codes = np.concatenate([codes, np.zeros(-codes.size % per_byte, np.uint8)]).reshape(-1, per_byte)
    return np.bitwise_or.reduce(codes << (np.arange(per_byte, dtype=np.uint8) * bits), axis=1).astype(np.uint8)


def _unpack(packed: np.ndarray, bits: int, signed: bool, shape, dtype) -> np.ndarray:
    per_byte = 8 // bits
    codes = (packed[:, None] >> (np.arange(per_byte, dtype=np.uint8) * bits)) & np.uint8((1 << bits) - 1)
    codes = codes.reshape(-1)[:int(np.prod(shape, dtype=np.int64))]
    if signed:  # sign-extend to int8, from which ml_dtypes converts by value
        values = codes.astype(np.int8) - (codes >= (1 << (bits - 1))).astype(np.int8) * np.int8(1 << bits)
        return values.astype(dtype).reshape(shape)
    return codes.view(dtype).reshape(shape)
_TENSOR_KIND_VALUES = ffi.typeof("edge_tensor_kind").relements
_TENSOR_KINDS = {value: name.removeprefix("EDGE_TENSOR_").lower() for name, value in _TENSOR_KIND_VALUES.items()}


def _string(pointer) -> str:
    if pointer == ffi.NULL:
        return ""
    return ffi.string(pointer).decode("utf-8", "replace")


def _last_error() -> str:
    return _string(load_library().edge_last_error())


def _raise_for(status: int, message: str) -> None:
    if status != 0:
        raise error_for_status(status, message or f"{_string(load_library().edge_status_name(status))} (no message)")


def _format_shape(shape: Iterable[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


class _TensorMemory:
    """The owner numpy sees behind a ``tensor()`` view.

    It holds the C interpreter so the memory cannot be freed while a view (or any slice of one,
    whose base chain ends here) is alive, and the Interpreter tracks it by weak reference to refuse
    a re-allocation that would move the memory under a live view.
    """

    def __init__(self, handle, pointer, shape: tuple[int, ...], dtype: np.dtype, read_only: bool):
        self.handle = handle
        address = int(ffi.cast("uintptr_t", pointer))
        self.__array_interface__ = {"shape": shape, "typestr": dtype.str, "data": (address, read_only),
                                    "version": 3}


class Interpreter:
    """Runs a .edge model.

    ``Interpreter(model_path=None, model_content=None, num_threads=1)`` mirrors tf.lite.Interpreter.
    ``model_content`` (bytes-like) is borrowed by the runtime and the Interpreter keeps a reference
    to it (the runtime itself copies bytes that are not 64-byte aligned, so weights can be used in place).
    ``profiling=True`` records per-op times from the first invoke (see ``profile()``).

    ``backend``: "cpu" (default); "opencl" runs the ops the OpenCL backend has on the GPU (the rest on
    the CPU; an error when OpenCL cannot be used); "auto" uses the GPU only where it is expected to
    pay, and the CPU where there is no OpenCL or only a CPU OpenCL device. ``gpu_precision``:
    "fp32" or "fp16" activation storage (arithmetic stays fp32). ``gpu_device``: 0 for the first
    GPU (else the first OpenCL device), k for entry k - 1 of ``edge.opencl.devices()``.
    ``placement()`` says where each op ran. ``opencl_queue``: a caller's in-order pyopencl
    CommandQueue (anything with ``int_ptr``) to run on, so tensors can stay on the device between
    the caller's kernels and the model's (``gpu_buffer``, ``gpu_written``).
    """

    BACKENDS = {"cpu": 0, "opencl": 1, "auto": 2}
    PRECISIONS = {"fp32": 0, "fp16": 1}

    def __init__(self, model_path: str | os.PathLike | None = None, model_content: bytes | None = None,
                 num_threads: int = 1, *, profiling: bool = False, backend: str = "cpu", gpu_precision: str = "fp32",
                 gpu_device: int = 0, opencl_queue=None):
        if (model_path is None) == (model_content is None):
            raise InvalidArgumentError("pass exactly one of model_path or model_content")
        try:
            threads = operator.index(num_threads)
        except TypeError:
            raise InvalidArgumentError(f"num_threads must be an integer >= 1, got {num_threads!r}") from None
        if threads < 1:
            raise InvalidArgumentError(f"num_threads must be an integer >= 1, got {threads}")
        if backend not in self.BACKENDS:
            raise InvalidArgumentError(f"backend must be one of {sorted(self.BACKENDS)}, got {backend!r}")
        if gpu_precision not in self.PRECISIONS:
            raise InvalidArgumentError(f"gpu_precision must be one of {sorted(self.PRECISIONS)}, got {gpu_precision!r}")
        try:
            device = operator.index(gpu_device)
        except TypeError:
            raise InvalidArgumentError(f"gpu_device must be an integer >= 0, got {gpu_device!r}") from None
        self.backend = backend
        lib = load_library()
        self._lib = lib
        self._num_threads = threads
        self._profiling = bool(profiling)
        self._views: list[weakref.ref] = []
        self._allocated = False
        self._model_content = None
        self._interp = None

        model_out = ffi.new("edge_model **")
        if model_path is not None:
            self.model_path = os.fspath(model_path)
            status = lib.edge_model_load_file(os.fsencode(self.model_path), model_out)
            _raise_for(status, _last_error())
            keep_alive = None
        else:
            self.model_path = None
            content = self._borrowable(model_content)
            keep_alive = ffi.from_buffer(content)
            status = lib.edge_model_load_buffer(keep_alive, len(keep_alive), 0, model_out)
            _raise_for(status, _last_error())
            self._model_content = content
        # The destructor's default argument keeps the borrowed bytes alive as long as the C model.
        self._model = ffi.gc(model_out[0], lambda model, _bytes=keep_alive: lib.edge_model_free(model))

        self._opencl_queue = opencl_queue  # kept alive as long as the interpreter (the runtime retains it too)
        queue_pointer = ffi.NULL
        if opencl_queue is not None:
            if backend == "cpu":
                raise InvalidArgumentError("opencl_queue needs backend='opencl' or 'auto'")
            queue_pointer = ffi.cast("void *", int(getattr(opencl_queue, "int_ptr", opencl_queue)))
        options = ffi.new("edge_interpreter_options *", {
            "num_threads": threads, "profiling": int(self._profiling), "backend": self.BACKENDS[backend],
            "gpu_precision": self.PRECISIONS[gpu_precision], "gpu_device": device, "opencl_queue": queue_pointer})
        interp_out = ffi.new("edge_interpreter **")
        status = lib.edge_interpreter_create(self._model, options, interp_out)
        if status != 0:
            message = _last_error()
            ffi.release(self._model)
            _raise_for(status, message)
        # Likewise the interpreter's destructor holds the model, so the model is freed after it.
        self._interp = ffi.gc(interp_out[0], lambda interp, _model=self._model: lib.edge_interpreter_free(interp))
        self._num_tensors = lib.edge_interpreter_num_tensors(self._interp)
        self._num_ops = lib.edge_interpreter_num_ops(self._interp)
        self._inputs = [lib.edge_interpreter_input(self._interp, i)
                        for i in range(lib.edge_interpreter_num_inputs(self._interp))]
        self._outputs = [lib.edge_interpreter_output(self._interp, i)
                         for i in range(lib.edge_interpreter_num_outputs(self._interp))]
        self._signatures = self._read_signatures()
        if backend == "auto":  # a placement measured by `edge tune` for this model and device, if any
            from edge import opencl

            tuned = opencl.tuned_placement(self._model_content if model_content is not None else self.model_path,
                                           gpu_precision, device)
            if tuned is not None and len(tuned) == self._num_ops:
                self.set_op_devices(tuned)

    @staticmethod
    def _borrowable(content) -> Any:
        if isinstance(content, str):
            raise InvalidArgumentError("model_content must be bytes-like, got str (pass model_path for a file name)")
        try:
            view = memoryview(content)
        except TypeError:
            raise InvalidArgumentError(f"model_content must be bytes-like, got {type(content).__name__}") from None
        return content if view.c_contiguous else view.tobytes()


    def close(self) -> None:
        """Frees the C interpreter and model now (later, once the last ``tensor()`` view is gone)."""
        interp, model = self._interp, getattr(self, "_model", None)
        self._interp = None
        self._model = None
        if interp is None:
            return
        if not self._live_views():
            ffi.release(interp)
            ffi.release(model)

    def __enter__(self) -> "Interpreter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._interp is None

    def _handle(self):
        if self._interp is None:
            raise BadStateError("the interpreter is closed")
        return self._interp

    def _check(self, status: int) -> None:
        if status != 0:
            _raise_for(status, _string(self._lib.edge_interpreter_error(self._interp)))

    def _live_views(self) -> int:
        self._views = [ref for ref in self._views if ref() is not None]
        return len(self._views)


    @property
    def num_threads(self) -> int:
        return self._num_threads

    @property
    def description(self) -> str:
        self._handle()
        return _string(self._lib.edge_model_description(self._model))

    def metadata(self) -> dict[str, str]:
        self._handle()
        entries = {}
        name, value = ffi.new("const char **"), ffi.new("const char **")
        for i in range(self._lib.edge_model_num_metadata(self._model)):
            _raise_for(self._lib.edge_model_metadata(self._model, i, name, value), _last_error())
            entries[_string(name[0])] = _string(value[0])
        return entries

    def _tensor_index(self, index) -> int:
        try:
            value = operator.index(index)
        except TypeError:
            raise InvalidArgumentError(f"tensor index must be an integer, got {index!r}") from None
        if not 0 <= value < self._num_tensors:
            raise InvalidArgumentError(
                f"tensor index {value} is out of range: the model has {self._num_tensors} tensors")
        return value

    def _info(self, index: int):
        info = ffi.new("edge_tensor_info *")
        self._check(self._lib.edge_interpreter_tensor_info(self._handle(), index, info))
        return info

    def _tensor_name(self, index: int, info=None) -> str:
        info = info if info is not None else self._info(index)
        return _string(info.name) or f"#{index}"

    @staticmethod
    def _shape(info) -> tuple[int, ...]:
        return tuple(ffi.unpack(info.shape, info.rank)) if info.rank else ()

    @staticmethod
    def _numpy_type(info) -> type:
        try:
            return NUMPY_TYPES[int(info.dtype)]
        except KeyError:
            raise BadStateError(f"tensor '{_string(info.name)}' has dtype code {int(info.dtype)}, "
                                "which this binding does not know") from None

    def _details(self, index: int) -> dict[str, Any]:
        info = self._info(index)
        count = int(info.num_quant_params)
        scales = np.array(ffi.unpack(info.scales, count) if count else [], dtype=np.float32)
        zero_points = np.array(ffi.unpack(info.zero_points, count) if count else [], dtype=np.int32)
        per_tensor = (float(scales[0]), int(zero_points[0])) if count == 1 else (0.0, 0)
        signature = tuple(ffi.unpack(info.shape_signature, info.rank)) if info.rank else ()
        return {
            "name": _string(info.name),
            "index": index,
            "shape": np.array(self._shape(info), dtype=np.int32),
            "shape_signature": np.array(signature, dtype=np.int32),
            "dtype": self._numpy_type(info),
            "quantization": per_tensor,
            "quantization_parameters": {"scales": scales, "zero_points": zero_points,
                                        "quantized_dimension": int(info.quantized_dimension)},
            "sparsity_parameters": {},
            "kind": _TENSOR_KINDS.get(int(info.kind), str(int(info.kind))),
            "nbytes": int(info.nbytes),
        }

    def get_input_details(self) -> list[dict[str, Any]]:
        self._handle()
        return [self._details(i) for i in self._inputs]

    def get_output_details(self) -> list[dict[str, Any]]:
        self._handle()
        return [self._details(i) for i in self._outputs]

    def get_tensor_details(self) -> list[dict[str, Any]]:
        self._handle()
        return [self._details(i) for i in range(self._num_tensors)]


    def resize_tensor_input(self, input_index, tensor_size: Sequence[int]) -> None:
        """Changes an input's shape within its shape_signature; takes effect at allocate_tensors()."""
        index = self._tensor_index(input_index)
        try:
            dims = [operator.index(d) for d in np.asarray(tensor_size).reshape(-1).tolist()]
        except TypeError:
            raise InvalidArgumentError(f"shape must be a sequence of integers, got {tensor_size!r}") from None
        max_rank = int(self._lib.EDGE_MAX_RANK)
        if len(dims) > max_rank:
            raise InvalidArgumentError(f"tensor '{self._tensor_name(index)}': rank {len(dims)} exceeds the "
                                       f"runtime's maximum of {max_rank}")
        shape = ffi.new("int64_t[]", dims or [0])
        self._check(self._lib.edge_interpreter_resize_input(self._handle(), index, len(dims), shape))
        self._allocated = False

    def allocate_tensors(self) -> None:
        handle = self._handle()
        live = self._live_views()
        if live:
            raise BadStateError(
                f"there are {live} live arrays from tensor() pointing into the arena, which allocate_tensors() "
                "would move: drop them (keep the function tensor() returns, not its arrays) and try again")
        self._check(self._lib.edge_interpreter_allocate(handle))
        self._allocated = True

    def memory_info(self) -> dict[str, int]:
        memory = ffi.new("edge_memory_info *")
        self._check(self._lib.edge_interpreter_memory(self._handle(), memory))
        return {"arena_bytes": int(memory.arena_bytes), "naive_bytes": int(memory.naive_bytes),
                "persistent_bytes": int(memory.persistent_bytes), "scratch_bytes": int(memory.scratch_bytes),
                "model_bytes": int(memory.model_bytes)}


    def set_tensor(self, tensor_index, value) -> None:
        """Copies ``value`` into the tensor; its dtype and shape must match the tensor's exactly."""
        index = self._tensor_index(tensor_index)
        info = self._info(index)
        expected_type = self._numpy_type(info)
        array = np.asarray(value)
        name = self._tensor_name(index, info)
        if array.dtype != np.dtype(expected_type):
            raise InvalidArgumentError(f"tensor '{name}' (index {index}): expected dtype "
                                       f"{np.dtype(expected_type).name}, got {array.dtype.name}")
        expected_shape = self._shape(info)
        if array.shape != expected_shape:
            hint = ""
            if any(d == -1 for d in ffi.unpack(info.shape_signature, info.rank) if info.rank):
                hint = " (call resize_tensor_input() and allocate_tensors() to change a dynamic dimension)"
            raise InvalidArgumentError(f"tensor '{name}' (index {index}): expected shape "
                                       f"{_format_shape(expected_shape)}, got {_format_shape(array.shape)}{hint}")
        array = np.ascontiguousarray(array)
        if int(info.dtype) in _PACKED:
            array = _pack(array, _PACKED[int(info.dtype)][0])
        self._check(self._lib.edge_interpreter_set_tensor(self._handle(), index, ffi.from_buffer(array),
                                                          array.nbytes))

    def get_tensor(self, tensor_index) -> np.ndarray:
        """A copy of the tensor's current value."""
        index = self._tensor_index(tensor_index)
        info = self._info(index)
        shape, dtype = self._shape(info), self._numpy_type(info)
        packed = _PACKED.get(int(info.dtype))
        out = np.empty(int(info.nbytes) if packed else shape, dtype=np.uint8 if packed else dtype)
        self._check(self._lib.edge_interpreter_get_tensor(self._handle(), index,
                                                          ffi.from_buffer(out, require_writable=True), out.nbytes))
        return _unpack(out, *packed, shape, dtype) if packed else out

    def tensor(self, tensor_index) -> Callable[[], np.ndarray]:
        """A function returning a zero-copy view of the tensor (TFLite semantics).

        Each view stays valid until the next allocate_tensors(), which refuses to run while one is
        alive; hold on to the function, not to its arrays. Views of constants are read-only.
        """
        index = self._tensor_index(tensor_index)
        interpreter_ref = weakref.ref(self)

        def view() -> np.ndarray:
            interpreter = interpreter_ref()
            if interpreter is None:
                raise BadStateError("the interpreter behind this tensor() function is gone")
            return interpreter._view(index)

        return view

    def _view(self, index: int) -> np.ndarray:
        handle = self._handle()
        info = self._info(index)
        if int(info.dtype) in _PACKED:
            raise InvalidArgumentError(f"tensor '{self._tensor_name(index, info)}' (index {index}) is packed "
                                       f"({_string(self._lib.edge_dtype_name(info.dtype))}), which NumPy cannot "
                                       "view in place: use get_tensor() and set_tensor()")
        pointer = ffi.new("void **")
        self._check(self._lib.edge_interpreter_tensor_data(handle, index, pointer))
        # Constants live in the model bytes, which may be a read-only mapping of the file.
        read_only = int(info.kind) == _TENSOR_KIND_VALUES["EDGE_TENSOR_CONSTANT"]
        memory = _TensorMemory(handle, pointer[0], self._shape(info), np.dtype(self._numpy_type(info)), read_only)
        self._views.append(weakref.ref(memory))
        return np.asarray(memory)


    def _require_allocated(self, what: str) -> None:
        if not self._allocated:
            raise BadStateError(f"{what} before allocate_tensors(): call allocate_tensors() first "
                                "(and again after resize_tensor_input())")

    def invoke(self) -> None:
        handle = self._handle()
        self._require_allocated("invoke()")
        self._check(self._lib.edge_interpreter_invoke(handle))

    def invoke_ops(self, ops: Sequence[int]) -> None:
        """Runs the given ops in the given order; the caller has set every tensor they read that none
        of them writes (split execution)."""
        handle = self._handle()
        self._require_allocated("invoke_ops()")
        try:
            indices = [operator.index(op) for op in ops]
        except TypeError:
            raise InvalidArgumentError(f"ops must be a sequence of op indices, got {ops!r}") from None
        bad = [op for op in indices if not 0 <= op < self._num_ops]
        if bad:
            raise InvalidArgumentError(f"op indices {bad} are out of range: the model has {self._num_ops} ops")
        array = ffi.new("int32_t[]", indices or [0])
        self._check(self._lib.edge_interpreter_invoke_ops(handle, array, len(indices)))

    def reset_variables(self) -> None:
        """Puts every variable tensor back to the value stored in the model."""
        self._check(self._lib.edge_interpreter_reset_variables(self._handle()))


    def _read_signatures(self) -> dict[str, dict[str, Any]]:
        signatures = {}
        info = ffi.new("edge_signature_info *")
        for i in range(self._lib.edge_model_num_signatures(self._model)):
            _raise_for(self._lib.edge_model_signature(self._model, i, info), _last_error())
            signatures[_string(info.key)] = {
                "index": i,
                "inputs": {_string(info.input_names[k]): int(info.input_tensors[k]) for k in range(info.num_inputs)},
                "outputs": {_string(info.output_names[k]): int(info.output_tensors[k])
                            for k in range(info.num_outputs)},
            }
        return signatures

    def get_signature_list(self) -> dict[str, dict[str, list[str]]]:
        return {key: {"inputs": list(sig["inputs"]), "outputs": list(sig["outputs"])}
                for key, sig in self._signatures.items()}

    def get_signature_runner(self, signature_key: str | None = "infer") -> "SignatureRunner":
        if signature_key is None:
            if len(self._signatures) != 1:
                raise InvalidArgumentError(f"the model has {len(self._signatures)} signatures "
                                           f"({sorted(self._signatures)}): name one")
            signature_key = next(iter(self._signatures))
        if signature_key not in self._signatures:
            raise InvalidArgumentError(f"no signature '{signature_key}': the model has {sorted(self._signatures)}")
        return SignatureRunner(self, signature_key, self._signatures[signature_key])

    def _invoke_signature(self, signature_index: int) -> None:
        handle = self._handle()
        self._require_allocated("invoking a signature")
        self._check(self._lib.edge_interpreter_invoke_signature(handle, signature_index))


    @property
    def profiling(self) -> bool:
        return self._profiling

    @profiling.setter
    def profiling(self, enabled: bool) -> None:
        self._lib.edge_interpreter_set_profiling(self._handle(), int(bool(enabled)))
        self._profiling = bool(enabled)

    def reset_profile(self) -> None:
        self._lib.edge_interpreter_reset_profile(self._handle())

    def op_details(self) -> list[dict[str, Any]]:
        """Every op: index, op name, opcode, version, input/output tensor indices and shapes, flops."""
        return [self._op_entry(i)[0] for i in range(self._num_ops)]

    def _op_entry(self, op: int) -> tuple[dict[str, Any], Any]:
        info = ffi.new("edge_op_info *")
        self._check(self._lib.edge_interpreter_op_info(self._handle(), op, info))
        inputs = [int(t) for t in ffi.unpack(info.inputs, info.num_inputs)] if info.num_inputs else []
        outputs = [int(t) for t in ffi.unpack(info.outputs, info.num_outputs)] if info.num_outputs else []
        entry = {
            "index": op,
            "op": _string(info.op_name),
            "opcode": int(info.opcode),
            "version": int(info.version),
            "inputs": inputs,
            "outputs": outputs,
            "input_shapes": [self._shape(self._info(t)) if t >= 0 else None for t in inputs],
            "output_shapes": [self._shape(self._info(t)) if t >= 0 else None for t in outputs],
            "flops": int(info.flops),
        }
        return entry, info

    def set_op_devices(self, devices: Sequence[str] | None) -> None:
        """Which ops the GPU may take, per op "cpu" or "gpu" (None: the backend decides); takes
        effect at the next ``allocate_tensors()``. ``edge.opencl.plan_placement`` computes one from
        measured times, ``edge tune`` stores one that ``backend="auto"`` then follows."""
        handle = self._handle()
        if devices is None:
            self._check(self._lib.edge_interpreter_set_op_devices(handle, ffi.NULL, 0))
        else:
            codes = []
            for device in devices:
                if device not in ("cpu", "gpu"):
                    raise InvalidArgumentError(f"op devices are 'cpu' or 'gpu', got {device!r}")
                codes.append(1 if device == "gpu" else 0)
            array = ffi.new("uint8_t[]", codes or [0])
            self._check(self._lib.edge_interpreter_set_op_devices(handle, array, len(codes)))
        self._allocated = False

    def gpu_buffer(self, tensor_index):
        """(pyopencl.Buffer, byte offset) of an activation's device memory (uploaded first if only the
        host holds it). fp16 storage holds float32 tensors as halves. Needs pyopencl (the ``gpu``
        extra); write it only through the queue the interpreter runs on, then call ``gpu_written``."""
        import pyopencl

        self._require_allocated("gpu_buffer")
        index = self._tensor_index(tensor_index)
        buffer, offset = ffi.new("void **"), ffi.new("size_t *")
        self._check_global(self._lib.edge_interpreter_tensor_gpu_buffer(self._handle(), index, buffer, offset))
        return pyopencl.Buffer.from_int_ptr(int(ffi.cast("uintptr_t", buffer[0])), retain=True), int(offset[0])

    def gpu_written(self, tensor_index) -> None:
        """The caller wrote the tensor's device memory: the model reads it there from now on."""
        self._require_allocated("gpu_written")
        self._check_global(self._lib.edge_interpreter_tensor_gpu_written(self._handle(), self._tensor_index(tensor_index)))

    def _check_global(self, status: int) -> None:
        if status != 0:
            _raise_for(status, _last_error())

    def placement(self) -> dict[str, Any]:
        """Where the ops run after ``allocate_tensors()``: ``devices`` (per op, "cpu" or "gpu"),
        ``partitions`` (runs of consecutive ops on one device: device, first op, last op) and
        ``transfers`` (host/GPU copies and kernel launches so far, with their bytes) and ``kernels``
        (per op, the first GPU kernel's name and work-group size, 0s where the driver picks; None
        on the CPU)."""
        self._require_allocated("placement")
        devices = ["gpu" if self._lib.edge_interpreter_op_device(self._handle(), op) else "cpu"
                   for op in range(self._num_ops)]
        partitions = []
        for op, device in enumerate(devices):
            if partitions and partitions[-1]["device"] == device:
                partitions[-1]["last_op"] = op
            else:
                partitions.append({"device": device, "first_op": op, "last_op": op})
        info = ffi.new("edge_gpu_transfer_info *")
        self._check(self._lib.edge_interpreter_gpu_transfers(self._handle(), info))
        transfers = {name: int(getattr(info, name)) for name in
                     ("uploads", "downloads", "upload_bytes", "download_bytes", "launches")}
        kernels = []
        name, local = ffi.new("char[64]"), ffi.new("uint64_t[3]")
        for op, device in enumerate(devices):
            found = device == "gpu" and self._lib.edge_interpreter_gpu_kernel(self._handle(), op, name, 64, local) == 0
            kernels.append({"name": ffi.string(name).decode(), "local": [int(v) for v in local]} if found else None)
        return {"backend": self.backend, "devices": devices, "partitions": partitions, "transfers": transfers,
                "kernels": kernels}

    def profile(self) -> list[dict[str, Any]]:
        """Per-op times recorded since the last reset_profile(), in graph order.

        ``ms`` is the mean time of one run of the op, ``last_ms`` its latest run, ``runs`` how many
        runs were recorded; needs profiling on (``profiling=True`` or ``interpreter.profiling = True``).
        """
        self._handle()
        if not self._profiling:
            raise BadStateError("profiling is off: create the Interpreter with profiling=True "
                                "or set interpreter.profiling = True, then invoke()")
        entries = []
        for op in range(self._num_ops):
            entry, info = self._op_entry(op)
            runs = int(info.runs)
            entry.update(runs=runs, total_ms=info.total_ns / 1e6, last_ms=info.last_ns / 1e6,
                         ms=(info.total_ns / runs / 1e6) if runs else 0.0)
            entries.append(entry)
        return entries


class SignatureRunner:
    """Runs one named signature: ``runner(x=array, ...)`` returns ``{output name: array}``.

    Inputs whose shape differs from the tensor's current shape are resized (within their
    shape_signature) and the interpreter re-allocated, as TFLite's SignatureRunner does.
    """

    def __init__(self, interpreter: Interpreter, key: str, signature: Mapping[str, Any]):
        self._interpreter = interpreter
        self.key = key
        self._index = signature["index"]
        self._inputs: dict[str, int] = dict(signature["inputs"])
        self._outputs: dict[str, int] = dict(signature["outputs"])

    def get_input_details(self) -> dict[str, dict[str, Any]]:
        return {name: self._interpreter._details(t) for name, t in self._inputs.items()}

    def get_output_details(self) -> dict[str, dict[str, Any]]:
        return {name: self._interpreter._details(t) for name, t in self._outputs.items()}

    def __call__(self, **inputs) -> dict[str, np.ndarray]:
        missing = [name for name in self._inputs if name not in inputs]
        unknown = [name for name in inputs if name not in self._inputs]
        if missing or unknown:
            problems = []
            if missing:
                problems.append(f"missing inputs {missing}")
            if unknown:
                problems.append(f"unknown inputs {unknown}")
            raise InvalidArgumentError(f"signature '{self.key}': {'; '.join(problems)} "
                                       f"(it takes {list(self._inputs)})")
        interpreter = self._interpreter
        arrays = {name: np.asarray(value) for name, value in inputs.items()}
        resized = False
        for name, array in arrays.items():
            tensor = self._inputs[name]
            current = tuple(int(d) for d in interpreter._details(tensor)["shape"])
            if array.shape != current:
                interpreter.resize_tensor_input(tensor, array.shape)
                resized = True
        if resized or not interpreter._allocated:
            interpreter.allocate_tensors()
        for name, array in arrays.items():
            interpreter.set_tensor(self._inputs[name], array)
        interpreter._invoke_signature(self._index)
        return {name: interpreter.get_tensor(t) for name, t in self._outputs.items()}

    invoke = __call__
