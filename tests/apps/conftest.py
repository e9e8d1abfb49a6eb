"""Kivy under a real X display for the app tests (marker ``gui``).

The ``kivy_window`` fixture uses $DISPLAY when there is one, else starts an Xvfb of its own; a
machine with neither (or without kivy) skips the gui tests with a message saying what to install.
Screenshots go to $EDGESPLIT_ARTIFACT_DIR when set, else to a screenshots folder under pytest's
basetemp; each test prints the path it wrote.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import time

import pytest

# Mesa's software GL (llvmpipe, what Xvfb gives Kivy here) and Triton (which torch imports through
# transformers in other test modules of the same worker) each carry an LLVM; when Mesa's is loaded
# first, importing Triton afterwards segfaults the process (seen in CI; reproduced with the split
# app's test followed by `import triton`). Loading Triton first is safe, so the GUI tests do that.
try:
    import triton  # noqa: F401
except Exception:  # not installed, or unusable here: nothing to order
    pass


def pytest_configure(config):
    config.addinivalue_line("markers", "gui: opens real Kivy windows (needs $DISPLAY or Xvfb)")


class KivyHarness:
    def __init__(self, window, shots: pathlib.Path):
        from kivy.base import EventLoop

        self.window, self.shots, self._loop = window, shots, EventLoop

    def show(self, widget) -> None:
        for child in list(self.window.children):
            self.window.remove_widget(child)
        self.window.add_widget(widget)
        self.frames(3)

    def frames(self, count: int = 1) -> None:
        for _ in range(count):
            self._loop.idle()

    def until(self, condition, max_frames: int = 600) -> int:
        """Runs frames until ``condition()`` holds; returns how many it took (max_frames + 1 if never)."""
        for frame in range(max_frames + 1):
            if condition():
                return frame
            self._loop.idle()
        return max_frames + 1

    def screenshot(self, widget, name: str) -> pathlib.Path:
        """The whole window as the user sees it (Kivy numbers the file: <name>0001.png)."""
        self.frames(2)
        path = pathlib.Path(self.window.screenshot(name=str(self.shots / f"{name}.png")))
        print(f"screenshot: {path}")
        return path


def _start_xvfb():
    binary = shutil.which("Xvfb")
    if binary is None:
        return None, None
    for number in range(91, 140):
        if os.path.exists(f"/tmp/.X11-unix/X{number}") or os.path.exists(f"/tmp/.X{number}-lock"):
            continue
        process = subprocess.Popen([binary, f":{number}", "-screen", "0", "1024x720x24", "-nolisten", "tcp"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            if os.path.exists(f"/tmp/.X11-unix/X{number}"):
                return process, f":{number}"
            time.sleep(0.05)
        process.kill()
        process.wait()
    return None, None


@pytest.fixture(scope="session")
def kivy_window(tmp_path_factory):
    import importlib.util

    if importlib.util.find_spec("kivy") is None:
        pytest.skip("kivy is not installed (pip install 'edgesplit[apps]')")
    xvfb = None
    if not os.environ.get("DISPLAY"):
        xvfb, display = _start_xvfb()
        if xvfb is None:
            pytest.skip("no display and no Xvfb to start one (apt-get install xvfb): the gui tests need a window")
        os.environ["DISPLAY"] = display
    home = tmp_path_factory.mktemp("kivy_home")
    os.environ.update(KIVY_NO_ARGS="1", KIVY_NO_CONSOLELOG="1", KIVY_NO_FILELOG="1", KIVY_HOME=str(home))
    os.environ.setdefault("EDGESPLIT_APPS_CACHE", str(tmp_path_factory.getbasetemp() / "apps-cache"))
    shots = pathlib.Path(os.environ.get("EDGESPLIT_ARTIFACT_DIR") or tmp_path_factory.getbasetemp() / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    from kivy.config import Config

    Config.set("graphics", "width", "1000")
    Config.set("graphics", "height", "640")
    from kivy.core.window import Window

    try:
        yield KivyHarness(Window, shots)
    finally:
        if xvfb is not None:
            Window.close()
            xvfb.terminate()
            xvfb.wait(5)


@pytest.fixture(scope="session")
def digits_model_dir(tmp_path_factory) -> pathlib.Path:
    """The digits app's pretrained model, built once per session by the app's own script."""
    pytest.importorskip("sklearn")
    from apps.digits import model

    directory = tmp_path_factory.mktemp("digits-model")
    model.build(directory)
    return directory
