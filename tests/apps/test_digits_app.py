"""apps.digits in a real Kivy window: strokes to a prediction, its latency, teaching a new
handwriting style on the worker thread while frames keep coming, and the exported model."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui

STYLE = dict(angle=-35.0, thicken=3, shear=0.3)


def _draw(harness, pad, points) -> None:
    """One stroke through ``points`` (normalised pad coordinates) with Kivy's test touches."""
    from kivy.tests.common import UnitTestTouch

    to_window = [(pad.x + x * pad.width, pad.y + y * pad.height) for x, y in points]
    touch = UnitTestTouch(*to_window[0])
    touch.touch_down()
    for x, y in to_window[1:]:
        touch.touch_move(x, y)
    touch.touch_up()


@pytest.fixture
def screen(kivy_window, digits_model_dir, tmp_path):
    from apps.digits.app import build_screen

    widget = build_screen(digits_model_dir, tmp_path / "work")
    kivy_window.show(widget)
    yield widget
    widget.stop()
    widget.teacher.close()


def test_stroke_gives_input_and_prediction_within_ten_frames(kivy_window, screen):
    pad = screen.ids.pad
    before = screen.prediction_text
    _draw(kivy_window, pad, [(0.5, 0.9 - 0.8 * t) for t in np.linspace(0, 1, 25)])
    image = screen.sketch.image()
    assert image.shape == (8, 8, 1) and image.sum() > 1.0, "the stroke left no ink in the model's input"
    frames = kivy_window.until(lambda: screen.last_prediction is not None
                               and screen.last_prediction.version == screen.sketch.version, max_frames=10)
    assert frames <= 10, "the prediction did not follow the drawing within 10 frames"
    assert screen.prediction_text != before
    assert screen.last_prediction.top[0][0] == 1, f"a vertical bar read as {screen.last_prediction.top}"
    kivy_window.screenshot(screen, "digits_stroke")

    # Prediction latency over many drawings (each stroke bumps the sketch; each frame classifies it).
    for k in range(60):
        _draw(kivy_window, pad, [(0.3 + 0.004 * k, 0.2), (0.7, 0.8)])
        kivy_window.frames(1)
    latency = screen.classifier.latency_summary()
    print(f"digits prediction latency: {latency}")
    assert latency["count"] >= 60
    assert latency["p95_ms"] <= 5.0, latency


def test_teaching_a_new_style_keeps_frames_smooth_and_the_old_style(kivy_window, screen, tmp_path):
    from apps.digits import logic, model

    x_train, y_train, x_test, y_test = model.load_digits()
    style_train, style_test = logic.user_style(x_train, **STYLE), logic.user_style(x_test, **STYLE)
    classifier = screen.classifier
    before = {"original": classifier.accuracy(x_test, y_test), "style": classifier.accuracy(style_test, y_test)}

    # One sample through the UI (draw, pick the label, "Add sample"), the rest as images.
    _draw(kivy_window, screen.ids.pad, [(0.5, 0.9), (0.5, 0.1)])
    screen.ids.label_spinner.text = "1"
    screen.add_sample()
    assert screen.teacher.counts()[1] == 1 and screen.sketch.empty
    rng = np.random.default_rng(1)
    for digit in range(10):
        for k in rng.choice(np.flatnonzero(y_train == digit), 10, replace=False):
            screen.teacher.add_sample(style_train[k], digit)

    screen.frames.mark()
    kivy_window.frames(60)
    idle = screen.frames.summary()
    print(f"digits frame intervals before the fit (60 frames, no training): {idle}")

    screen.teach()
    assert screen.teacher.running
    frames = kivy_window.until(lambda: screen.ids.teach_button.text == "Teach", max_frames=3000)
    result = screen.teacher.result
    assert result is not None and result.error is None, result and result.error
    intervals = screen.frames.summary()
    print(f"digits frame intervals during fit ({frames} frames, {result.seconds:.2f} s): {intervals}")
    assert intervals["frames"] >= 10, "too few frames during the fit to judge smoothness"
    assert intervals["p95_ms"] <= 50.0 and intervals["max_ms"] <= 250.0, intervals
    assert len(screen.losses) == screen.teacher.steps, "the loss curve does not show every step"
    assert len(screen.plot.points) == len(screen.losses)
    assert np.mean(screen.losses[-20:]) < 0.5 * np.mean(screen.losses[:20]), "the loss did not fall"
    kivy_window.screenshot(screen, "digits_taught")

    assert classifier.model_path == result.exported, "the UI did not switch to the taught model"
    after = {"original": classifier.accuracy(x_test, y_test), "style": classifier.accuracy(style_test, y_test)}
    print(f"digits accuracy before {before} after {after}")
    assert after["style"] - before["style"] >= 0.20, (before, after)
    assert after["original"] >= before["original"] - 0.03, (before, after)

    # The exported file, run by a plain Interpreter, reproduces the Trainer's own outputs.
    trained = screen.teacher.trainer.predict(x_test)
    exported = classifier.logits(x_test)
    assert np.max(np.abs(trained - exported)) <= 1e-5
    assert result.checkpoint.exists()


def test_selftest_runs_without_a_window(digits_model_dir, monkeypatch):
    from apps.digits import __main__ as digits_main

    monkeypatch.setattr("apps.digits.model.ensure_model", lambda directory=None: digits_model_dir)
    report = digits_main.selftest(threads=1)
    assert report["drawn_stroke_top"][0][0] == 1
    assert report["after"]["style"] > report["before"]["style"]
