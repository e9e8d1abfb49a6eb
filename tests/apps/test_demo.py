"""The README's promises: its two commands, the demo the first one runs, the generated ops table,
and .ci/run running exactly the README's test command."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

# The demo's split step plans from link and server times measured live; it runs in the worker of
# the Ray tests (one after another, never beside a Ray cluster's processes on this 2-core machine),
# whose load once made loopback look slow enough to keep the model on the device.
pytestmark = pytest.mark.xdist_group("ray")

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```(?:sh|bash)?\n(.*?)```", text, re.S)
    assert block, "README.md has no code block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_title_sentence_and_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    head = text.split("```", 1)[0].strip().splitlines()
    assert head[0].startswith("# "), "README.md must start with the project title"
    assert len([line for line in head[1:] if line.strip()]) == 1, "one sentence between the title and the commands"
    commands = readme_commands()
    assert len(commands) == 2, commands
    assert "apps.demo" in commands[0] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert script.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script
    executed = [line.strip() for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert readme_commands()[1] in executed, "the README's test command is not a line of .ci/run"


def test_readme_ops_table_is_current():
    pytest.importorskip("onnx")
    from tests.fixtures import ops_table

    assert ops_table.main(["--check", str(ROOT / "README.md")]) == 0, \
        "run: python3 -m tests.fixtures.ops_table --write README.md"


def test_demo_converts_runs_and_matches(tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from apps import demo

    assert demo.main(["--out", str(tmp_path), "--runs", "3"]) == 0
    printed = capsys.readouterr().out
    assert (tmp_path / "small_cnn.edge").stat().st_size > 0
    diff = float(re.search(r"max abs diff (\S+)", printed).group(1))
    assert diff <= 1e-5, printed
    assert re.search(r"median \d+\.\d+ ms, p90 \d+\.\d+ ms", printed), printed
    # The split steps: offloaded over loopback, kept local on a 3G uplink, answered after the
    # service stopped, each equal to the local result within fp16's error.
    assert re.search(r"loopback: plan '(server|split)'", printed), printed
    assert re.search(r"1\.1 Mbit/s: plan 'device'", printed), printed
    # The request meets the stopped server and falls back; should a probe have noticed first, the
    # runner plans for the device outright. Either way the answer comes from the device.
    assert re.search(r"service stopped: the answer still came from the device "
                     r"\((fell back|plan 'device \(server unavailable\)')", printed), printed
    for diff in re.findall(r"max abs diff from local (\S+)", printed):
        assert float(diff) <= 1e-3, printed
