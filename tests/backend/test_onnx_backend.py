"""The ONNX backend test suite (``onnx.backend.test``) run through converter + C runtime.

What runs and what is left out (with reasons) is decided in ``tests/backend/selection.py``;
``python -m tests.backend.report`` prints the passing/attempted figures.
"""
from __future__ import annotations

import re

import pytest

pytest.importorskip("onnx")

import onnx.backend.test  # noqa: E402

from tests.backend import selection  # noqa: E402
from tests.backend.edge_backend import EdgeBackend  # noqa: E402

attempted, excluded = selection.classified()

backend_test = onnx.backend.test.BackendTest(EdgeBackend, __name__)
backend_test.include("^(" + "|".join(re.escape(n) for n in attempted) + ")_cpu$")
backend_test.include("^test_(" + "|".join(selection.REAL_MODELS) + ")_cpu$")
for name in excluded:
    backend_test.exclude("^" + re.escape(name) + "_cpu$")



def _only_selected(test_class: type, wanted: set[str]) -> type:
    for attribute in [a for a in vars(test_class) if a.startswith("test_") and a not in wanted]:
        delattr(test_class, attribute)
    return test_class


# The suite makes one unittest.TestCase class per category, holding every test (those not included
# as skips). Only the tests we run are kept, so a report lists them and not thousands of skips.
_wanted = {f"{name}_cpu" for name in attempted} | {f"test_{name}_cpu" for name in selection.REAL_MODELS}
_test_cases = backend_test.test_cases
OnnxBackendNodeModelTest = _only_selected(_test_cases["OnnxBackendNodeModelTest"], _wanted)
OnnxBackendRealModelTest = _only_selected(_test_cases["OnnxBackendRealModelTest"], _wanted)
