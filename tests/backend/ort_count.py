"""Counts how many node tests of the installed ``onnx`` package's backend suite onnxruntime passes on
this machine, so the edgesplit figure printed by ``tests.backend.report`` can be compared like with
like (same onnx version, same test data, same tolerances).

    python3 -m tests.backend.ort_count [-v] [-k REGEX]

Every node test runs through ``onnx.backend.test.BackendTest`` with ``onnxruntime.backend`` on the
CPU, exactly as the suite's own runner compares outputs (each test's rtol/atol), each in a forked
child like the edgesplit report. A test the backend declares incompatible counts as skipped, not
passing.
"""
from __future__ import annotations

import argparse
import collections
import re
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="list every test that does not pass")
    parser.add_argument("-k", dest="pattern", help="only tests whose name matches this regex")
    args = parser.parse_args(argv)

    import numpy as np
    import onnx
    import onnx.backend.test
    import onnxruntime
    import onnxruntime.backend
    from onnx.backend.test.loader import load_model_tests

    from tests.backend.report import run_isolated

    with np.errstate(all="ignore"):
        names = [case.name for case in load_model_tests(kind="node")]
    keep = re.compile(args.pattern) if args.pattern else None
    names = [n for n in names if not keep or keep.search(n)]

    backend_test = onnx.backend.test.BackendTest(onnxruntime.backend, __name__)
    node_class = backend_test.test_cases["OnnxBackendNodeModelTest"]
    started = time.time()
    results = {name: run_isolated(node_class(f"{name}_cpu")) for name in names}
    counts = collections.Counter(status for status, _ in results.values())
    print(f"onnxruntime {onnxruntime.__version__} on the ONNX backend suite (onnx {onnx.__version__}), "
          f"CPU node tests: {len(results)}")
    print(f"  passing: {counts['pass']}   failing: {counts['fail']}   crashed/hung: {counts['crash']}   "
          f"skipped (incompatible): {counts['skip']}")
    if args.verbose:
        for name, (status, message) in sorted(results.items()):
            if status != "pass":
                print(f"    {status:5s} {name}  {message[:160]}")
    print(f"({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
