"""Prints the ONNX backend suite's figures: node tests passing / attempted for the supported ops (by
op, with the exclusions and their reasons), and which real models match.

    python3 -m tests.backend.report [-v] [-k REGEX] [--no-models]

Each test runs in a forked child, so a crash or a hang in one is counted and reported instead of
ending the run.
"""
from __future__ import annotations

import argparse
import collections
import os
import pickle
import re
import signal
import sys
import time
import unittest

TIMEOUT_S = 300


def _outcome(test: unittest.TestCase) -> tuple[str, str]:
    result = unittest.TestResult()
    test.run(result)
    if result.errors or result.failures:
        text = (result.errors or result.failures)[0][1].strip().splitlines()
        return "fail", text[-1][:300] if text else "?"
    if result.skipped:
        return "skip", result.skipped[0][1]
    return "pass", ""


def run_isolated(test: unittest.TestCase) -> tuple[str, str]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        signal.alarm(TIMEOUT_S)
        try:
            outcome = _outcome(test)
        except BaseException as error:  # noqa: BLE001  (the child must always answer)
            outcome = ("fail", f"{type(error).__name__}: {error}")
        with os.fdopen(write_fd, "wb") as pipe:
            pickle.dump(outcome, pipe)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if data:
        return pickle.loads(data)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return "crash", "timeout" if sig == signal.SIGALRM else f"killed by {signal.Signals(sig).name}"
    return "crash", f"exit status {os.WEXITSTATUS(status)}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="list every failing test with its error")
    parser.add_argument("-k", dest="pattern", help="only tests whose name matches this regex")
    parser.add_argument("--no-models", action="store_true", help="node tests only")
    args = parser.parse_args(argv)

    import onnx

    from tests.backend import selection
    from tests.backend import test_onnx_backend as suite

    attempted, excluded = selection.classified()
    node_ops = {name: sorted({n.op_type for n in case.model.graph.node}) for name, case in selection.node_tests()}
    keep = re.compile(args.pattern) if args.pattern else None

    started = time.time()
    node_results: dict[str, tuple[str, str]] = {}
    node_class = suite.OnnxBackendNodeModelTest
    for name in attempted:
        if keep and not keep.search(name):
            continue
        node_results[name] = run_isolated(node_class(f"{name}_cpu"))
    model_results: dict[str, tuple[str, str]] = {}
    if not args.no_models:
        model_class = suite.OnnxBackendRealModelTest
        for name in selection.REAL_MODELS:
            if keep and not keep.search(name):
                continue
            model_results[name] = run_isolated(model_class(f"test_{name}_cpu"))

    counts = collections.Counter(status for status, _ in node_results.values())
    print(f"ONNX backend suite (onnx {onnx.__version__}), node tests whose ops are all supported: "
          f"{len(node_ops)}")
    print(f"  excluded by design: {len(excluded)}")
    by_reason = collections.Counter(reason.split(" | ")[0] for reason in excluded.values())
    for reason, n in by_reason.most_common():
        print(f"    {n:4d}  {reason}")
    print(f"  attempted: {len(node_results)}   passing: {counts['pass']}   failing: {counts['fail']}   "
          f"crashed/hung: {counts['crash']}   skipped: {counts['skip']}")

    per_op: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, (status, _) in node_results.items():
        ops = node_ops[name]
        key = ops[0] if len(ops) == 1 else "(multi-op graphs)"
        per_op[key][status] += 1
    print("  by op (passing/attempted):")
    for op in sorted(per_op):
        c = per_op[op]
        print(f"    {op:24s} {c['pass']:4d}/{sum(c.values()):<4d}")

    failures = {n: r for n, r in node_results.items() if r[0] in ("fail", "crash")}
    if failures:
        print("  failures grouped by error:")
        grouped = collections.defaultdict(list)
        for name, (_, message) in failures.items():
            grouped[re.sub(r"\d+(\.\d+)?(e-?\d+)?", "#", message)[:160]].append(name)
        for message, names in sorted(grouped.items(), key=lambda kv: -len(kv[1])):
            shown = names if args.verbose else names[:4]
            more = "" if len(shown) == len(names) else f" ... (+{len(names) - len(shown)})"
            print(f"    {len(names):4d}  {message}\n          {' '.join(shown)}{more}")

    if model_results:
        matching = [n for n, (s, _) in model_results.items() if s == "pass"]
        print(f"real models (light_* copies shipped with onnx): {len(matching)}/{len(model_results)} match")
        for name, (status, message) in model_results.items():
            print(f"    {name:14s} {status}{'  ' + message if message else ''}")
    print(f"({time.time() - started:.0f} s)")
    return 0 if not failures and all(s == "pass" for s, _ in model_results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
