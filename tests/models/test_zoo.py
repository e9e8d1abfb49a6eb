"""The model zoo (tests/fixtures/zoo.py): each architecture, exported by torch from a transformers
config, converts (float32) and its output matches onnxruntime: max |edge - onnxruntime| <= 1e-4 x
max |onnxruntime|.

Models with a dynamic sequence axis are converted once at their declared length, the longest they
run at; the second test resizes the input to shorter lengths and back (resize_tensor_input +
allocate_tensors) and compares again at each, and checks that a longer one is refused.

A model listed in MISSING_OPS must make the converter raise UnsupportedOpsError naming exactly
those ops; the test then xfails, so it is never counted as passing.

By default CI runs the fast, representative subset (``zoo.FAST``). ``EDGESPLIT_ZOO=all`` runs every
model; ``EDGESPLIT_ZOO=gpt2,t5_encoder`` runs the named ones. ``pytest -s`` prints the errors.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from tests.fixtures import zoo
from tests.fixtures.harness import max_abs_diff, run_interpreter, run_onnxruntime

pytest.importorskip("onnxruntime")
if zoo.missing():
    pytest.skip(zoo.missing(), allow_module_level=True)

RELATIVE = 1e-4
# Models the converter cannot take yet -> the op keys UnsupportedOpsError must name.
MISSING_OPS: dict[str, set[str]] = {}


def _selected() -> set[str]:
    wanted = os.environ.get("EDGESPLIT_ZOO", "").strip()
    if wanted == "all":
        return set(zoo.ZOO)
    if wanted:
        names = {name.strip() for name in wanted.split(",") if name.strip()}
        unknown = names - set(zoo.ZOO)
        if unknown:
            raise ValueError(f"EDGESPLIT_ZOO names {sorted(unknown)}, not in the zoo ({', '.join(zoo.ZOO)})")
        return names
    return set(zoo.FAST)


SELECTED = _selected()


def _params(names):
    return [pytest.param(name, marks=() if name in SELECTED else pytest.mark.skip(
        reason="not in the CI subset; EDGESPLIT_ZOO=all runs it")) for name in names]


@pytest.fixture(scope="module")
def converted():
    """name -> (onnx model, converter result), converted once per module."""
    return {}


def _convert(name: str, cache: dict):
    import onnx

    import converter
    from converter.errors import UnsupportedOpsError

    if name not in cache:
        model = zoo.ZOO[name]
        proto = onnx.load(str(zoo.export_onnx(model)))
        if name in MISSING_OPS:
            with pytest.raises(UnsupportedOpsError) as raised:
                converter.convert(proto, input_shapes=zoo.input_shapes(model))
            assert set(raised.value.ops) == MISSING_OPS[name], raised.value
            pytest.xfail(f"{name}: the converter lacks {sorted(MISSING_OPS[name])}")
        cache[name] = (proto, converter.convert(proto, input_shapes=zoo.input_shapes(model)))
    return cache[name]


def _assert_matches(name: str, got: dict, want: dict, what: str) -> None:
    for output, expected in want.items():
        actual = got[output]
        assert actual.shape == expected.shape, f"{name} {what}: shape {actual.shape} vs onnxruntime {expected.shape}"
        scale = float(np.max(np.abs(expected)))
        assert scale > 0, f"{name} {what}: onnxruntime's output is all zeros; the zoo's weights are degenerate"
        error = max_abs_diff(actual, expected)
        print(f"\n{name} {what}: max abs diff {error:.3g}, max |onnxruntime| {scale:.3g}, ratio {error / scale:.3g}")
        assert error <= RELATIVE * scale, f"{name} {what}: max abs diff {error:.3g} > {RELATIVE} x {scale:.3g}"


@pytest.mark.parametrize("name", _params(zoo.ZOO))
def test_zoo_model_matches_onnxruntime(name: str, converted):
    import edge

    model = zoo.ZOO[name]
    proto, result = _convert(name, converted)
    feeds = zoo.feeds(model)
    interpreter = edge.Interpreter(model_content=result.data)
    interpreter.allocate_tensors()
    _assert_matches(name, run_interpreter(interpreter, feeds), run_onnxruntime(proto, feeds),
                    f"at its declared shape {model.shape}")


DYNAMIC = [name for name, model in zoo.ZOO.items() if len(model.lengths) > 1]


@pytest.mark.parametrize("name", _params(DYNAMIC))
def test_zoo_model_at_another_sequence_length(name: str, converted):
    """Converted once at the declared length, the model runs at shorter ones after
    resize_tensor_input + allocate_tensors (its length-dependent constants are sliced at run
    time), back at the declared one, and refuses a longer one with a message saying why. A model
    left with no length-dependent constant (wav2vec2: convolutions, norms over the length as
    ReduceMeans, attention) has no such limit and runs at the longer length too."""
    import edge

    model = zoo.ZOO[name]
    proto, result = _convert(name, converted)
    assert not result.report.length_notes, result.report.length_notes
    interpreter = edge.Interpreter(model_content=result.data)
    interpreter.allocate_tensors()
    shortest = (3,) if model.kind == "tokens" else ()
    for length in (*model.lengths[1:], *shortest, model.declared_length):
        feeds = zoo.feeds(model, length, seed=length)
        for detail in interpreter.get_input_details():
            interpreter.resize_tensor_input(detail["index"], list(feeds[detail["name"]].shape))
        interpreter.allocate_tensors()
        _assert_matches(name, run_interpreter(interpreter, feeds), run_onnxruntime(proto, feeds),
                        f"at sequence length {length} (declared {model.declared_length})")

    longer = zoo.feeds(model, model.declared_length * 5 // 4)
    for detail in interpreter.get_input_details():
        interpreter.resize_tensor_input(detail["index"], list(longer[detail["name"]].shape))
    if not result.report.length_bound:
        interpreter.allocate_tensors()
        _assert_matches(name, run_interpreter(interpreter, longer), run_onnxruntime(proto, longer),
                        f"at sequence length {model.declared_length * 5 // 4} (declared {model.declared_length})")
        return
    with pytest.raises(edge.EdgeError, match="the model was converted for"):
        interpreter.allocate_tensors()
