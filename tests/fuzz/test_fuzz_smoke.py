"""CI's fuzz smoke: builds the libFuzzer targets (clang, ASan+UBSan) with `make -C cruntime fuzz` and
runs each for EDGE_FUZZ_SECONDS (default 60 under CI=true, 10 otherwise); then each Python parser
target of tests/fuzz/python_fuzz.py under atheris for the same time. Fails on any crash, sanitizer
report, contract violation or input over 1 s (the C targets; 10 s for Python)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CRUNTIME = ROOT / "cruntime"
FUZZ_CC = os.environ.get("FUZZ_CC", "clang-15")
SECONDS = int(os.environ.get("EDGE_FUZZ_SECONDS") or (60 if os.environ.get("CI") == "true" else 10))
FINDINGS = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer)"
                      r"|runtime error:|contract violation|Traceback")
C_TARGETS = ("model", "run")
PYTHON_TARGETS = ("onnx", "tflite", "checkpoint", "calibration", "cut_tensor")


def _executions(log: str) -> int:
    runs = re.findall(r"stat::number_of_executed_units: (\d+)", log)
    return int(runs[-1]) if runs else 0


@pytest.fixture(scope="module")
def c_campaign():
    if shutil.which(FUZZ_CC) is None or shutil.which("make") is None:
        pytest.skip(f"needs make and {FUZZ_CC} with libFuzzer (apt-get install clang-15)")
    completed = subprocess.run(["make", "-C", str(CRUNTIME), "-j2", "fuzz", f"FUZZ_SECONDS={SECONDS}",
                                f"FUZZ_CC={FUZZ_CC}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=3600 + 4 * SECONDS)
    return completed


@pytest.mark.parametrize("target", C_TARGETS)
def test_c_fuzz_target_survives_its_smoke(c_campaign, target):
    assert c_campaign.returncode == 0, c_campaign.stdout[-6000:]
    log = (CRUNTIME / "build-fuzz" / f"fuzz_{target}.log").read_text(errors="replace")
    assert not FINDINGS.search(log), log[-6000:]
    assert _executions(log) > 0, log[-3000:]
    print(f"fuzz_{target}: {_executions(log)} executions in {SECONDS} s")


@pytest.mark.parametrize("target", PYTHON_TARGETS)
def test_python_parser_survives_its_smoke(target, tmp_path):
    pytest.importorskip("atheris", reason="atheris (pip install atheris) runs the Python parser fuzzers")
    completed = subprocess.run([sys.executable, "-m", "tests.fuzz.python_fuzz", target, f"-max_total_time={SECONDS}",
                                "-timeout=10", "-print_final_stats=1", f"-artifact_prefix={tmp_path}/"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600 + 4 * SECONDS)
    log = completed.stdout
    assert completed.returncode == 0 and not FINDINGS.search(log), log[-6000:]
    assert _executions(log) > 0, log[-3000:]
