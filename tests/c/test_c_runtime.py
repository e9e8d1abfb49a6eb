"""The C test runner (cruntime's `make test`: unit tests of kernels, loader and planner over generated
seed models) as part of the pytest suite. The ASan+UBSan run is `make -C cruntime asan`, which the
README's test command runs before pytest."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CRUNTIME = Path(__file__).resolve().parents[2] / "cruntime"


@pytest.mark.skipif(shutil.which("make") is None or shutil.which(os.environ.get("CC", "cc")) is None,
                    reason="needs make and a C compiler")
def test_c_test_runner_passes():
    completed = subprocess.run(["make", "-C", str(CRUNTIME), f"PYTHON={sys.executable}", "test"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200)
    tail = "\n".join(completed.stdout.splitlines()[-60:])
    print(tail)
    assert completed.returncode == 0, f"make -C cruntime test exited with {completed.returncode}:\n{tail}"
