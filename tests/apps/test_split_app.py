"""apps.split in a real Kivy window over a real gRPC service on 127.0.0.1: the bandwidth slider
drives the partitioner, requests offload over loopback and stay on the device on a 3G-like link,
and a stopped service shows the fallback badge while answers keep coming."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def split_model(tmp_path_factory):
    pytest.importorskip("grpc")
    pytest.importorskip("onnx")
    from apps.split.logic import ensure_model

    return ensure_model(tmp_path_factory.mktemp("split-model"))


@pytest.fixture
def screen(kivy_window, split_model):
    from apps.split.app import SplitScreen
    from apps.split.logic import SplitDashboard

    dashboard = SplitDashboard(split_model)
    widget = SplitScreen(dashboard)
    kivy_window.show(widget)
    yield widget
    widget.stop()
    dashboard.close()


def _device_layers(screen) -> int:
    return sum(1 for cell in screen.cells if cell.where == "device")


def test_lowering_bandwidth_never_moves_layers_off_the_device(kivy_window, screen):
    slider = screen.ids.bandwidth_slider
    counts = []
    for value in np.arange(9.0, 4.99, -0.25):
        slider.value = float(value)
        kivy_window.frames(1)
        counts.append((round(10 ** value), _device_layers(screen)))
    print(f"split device layers by bandwidth (bit/s, RTT 0.2 ms): {counts}")
    layers = [n for _, n in counts]
    assert all(later >= earlier for earlier, later in zip(layers, layers[1:])), counts
    assert layers[0] < len(screen.cells), "loopback did not offload anything"
    assert layers[-1] == len(screen.cells)

    # 3G-like: 1.1 Mbit/s and a 100 ms round trip keep every layer on the device.
    slider.value = math.log10(1.1e6)
    screen.ids.rtt_input.text = "100"
    screen.link_changed()
    kivy_window.frames(2)
    assert _device_layers(screen) == len(screen.cells) and screen.plan.kind == "device"
    kivy_window.screenshot(screen, "split_3g")


def test_loopback_offloads_and_a_stopped_service_falls_back(kivy_window, screen):
    dashboard = screen.dashboard
    local = dashboard.run_local(screen.requests.image)
    screen.ids.run_button.state = "down"
    screen.frames.mark()
    frames = kivy_window.until(lambda: screen.last_result is not None and screen.last_result.offloaded
                               and screen.results_shown >= 40, max_frames=3000)
    assert frames <= 3000, f"no offloaded answer (errors: {screen.requests.errors})"
    result = screen.last_result
    assert result.device_layers < len(screen.cells) and not screen.fallback
    assert max(float(np.max(np.abs(result.outputs[k] - local[k]))) for k in local) <= 1e-4
    intervals = screen.frames.summary()
    print(f"split frame intervals during gRPC requests ({screen.results_shown} answers shown): {intervals}; "
          f"last request estimated {result.estimated_ms:.2f} ms, measured {result.measured_ms:.2f} ms")
    assert intervals["max_ms"] <= 250.0, intervals
    kivy_window.screenshot(screen, "split_loopback")

    stopped_at = time.monotonic()
    screen.stop_service()
    kivy_window.until(lambda: screen.fallback, max_frames=2000)
    waited = time.monotonic() - stopped_at
    print(f"split fallback badge shown {waited * 1e3:.0f} ms after the service stopped "
          f"(runner deadline {dashboard.deadline_s} s)")
    assert screen.fallback and screen.ids.fallback_badge.opacity == 1
    assert waited <= dashboard.deadline_s, waited
    shown = screen.results_shown
    kivy_window.until(lambda: screen.results_shown >= shown + 3, max_frames=600)
    result = screen.last_result
    assert screen.results_shown >= shown + 3, "answers stopped coming after the service went down"
    assert result.fallback and not result.offloaded and not screen.requests.errors
    assert max(float(np.max(np.abs(result.outputs[k] - local[k]))) for k in local) <= 1e-4
    assert screen.frames.summary()["max_ms"] <= 250.0, screen.frames.summary()
    kivy_window.screenshot(screen, "split_fallback")


def test_selftest_runs_without_a_window(split_model, monkeypatch):
    from apps.split import __main__ as split_main

    monkeypatch.setattr("apps.split.logic.ensure_model", lambda directory=None: split_model)
    import edge

    report = split_main.selftest()
    ops = len(edge.Interpreter(model_path=str(split_model)).op_details())
    assert report["loopback"]["offloaded"] and report["3g"]["device_layers"] == ops
    assert report["service_stopped"]["fallback"]
