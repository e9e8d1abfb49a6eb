"""The digits app's Kivy side: a drawing pad, top-3 predictions with latency, and "Teach", which
fine-tunes the model on the user's samples on a worker thread with a live loss curve.

All widget updates happen on the UI thread in ``DigitsScreen.update`` (one call per frame): the
worker only writes into ``Latest`` mailboxes, and only the newest loss curve and result are shown.
"""
from __future__ import annotations

import pathlib
import tempfile
import time

import numpy as np
from kivy.clock import Clock
from kivy.graphics import Color, Line
from kivy.lang import Builder
from kivy.properties import ObjectProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.widget import Widget
from kivy_garden.graph import Graph, MeshLinePlot  # noqa: F401  (Graph is used by digits.kv)

from apps.digits.logic import Classifier, Sketch, Teacher
from apps.shared import FrameMeter, Latest

Builder.load_file(str(pathlib.Path(__file__).with_name("digits.kv")))


class DrawingPad(Widget):
    """Turns touches into strokes of ``sketch`` (normalised coordinates) and draws them."""

    sketch = ObjectProperty(None, allownone=True)

    def _normalised(self, touch) -> tuple[float, float]:
        return ((touch.x - self.x) / max(self.width, 1), (touch.y - self.y) / max(self.height, 1))

    def on_touch_down(self, touch):
        if not self.collide_point(*touch.pos) or self.sketch is None:
            return super().on_touch_down(touch)
        touch.grab(self)
        self.sketch.begin(*self._normalised(touch))
        with self.canvas:
            Color(1, 1, 1, 1)
            touch.ud["digits_line"] = Line(points=[touch.x, touch.y], width=max(2.0, self.width / 40))
        return True

    def on_touch_move(self, touch):
        if touch.grab_current is not self:
            return super().on_touch_move(touch)
        self.sketch.extend(*self._normalised(touch))
        touch.ud["digits_line"].points += [touch.x, touch.y]
        return True

    def on_touch_up(self, touch):
        if touch.grab_current is not self:
            return super().on_touch_up(touch)
        touch.ungrab(self)
        return True

    def clear(self) -> None:
        self.canvas.clear()


class DigitsScreen(BoxLayout):
    prediction_text = StringProperty("Draw a digit")
    counts_text = StringProperty("")
    status_text = StringProperty("")

    def __init__(self, classifier: Classifier, teacher: Teacher, **kwargs):
        super().__init__(**kwargs)
        self.classifier, self.teacher = classifier, teacher
        self.sketch = Sketch()
        self.ids.pad.sketch = self.sketch
        self.frames = FrameMeter()
        self.last_prediction = None
        self.predicted_version = self.sketch.version
        self.losses: list[float] = []
        self._losses = Latest()
        self._done = Latest()
        self.plot_interval_s = 0.4
        self._plotted_at = 0.0
        self.plot = MeshLinePlot(color=[0.3, 0.8, 1, 1])
        self.ids.loss_graph.add_plot(self.plot)
        self._show_counts()
        self._event = Clock.schedule_interval(self.update, 0)

    def stop(self) -> None:
        self._event.cancel()

    # ---- actions (buttons) ----

    def clear(self) -> None:
        self.sketch.clear()
        self.ids.pad.clear()
        self.prediction_text = "Draw a digit"
        self.predicted_version = self.sketch.version

    def add_sample(self) -> None:
        if self.sketch.empty:
            self.status_text = "Draw the digit first"
            return
        label = int(self.ids.label_spinner.text)
        self.teacher.add_sample(self.sketch.image(), label)
        self._show_counts()
        self.clear()

    def teach(self) -> None:
        if self.teacher.running:
            self.teacher.stop()
            return
        if not self.teacher.samples:
            self.status_text = "Add a few samples per digit first"
            return
        self.losses = []
        self.plot.points = []
        self.ids.loss_graph.ymax = 2.0
        self.ids.loss_graph.xmax = max(10, self.teacher.steps)
        self.frames.mark()
        self.teacher.start(on_loss=lambda step, loss: self._losses.put(step), on_done=self._done.put)
        self.ids.teach_button.text = "Stop"
        self.status_text = "Teaching..."

    # ---- the frame ----

    def update(self, _dt) -> None:
        self.frames.tick()
        if len(self.teacher.samples) != self._shown_samples:
            self._show_counts()
        if self.sketch.version != self.predicted_version and not self.sketch.empty:
            version = self.sketch.version
            prediction = self.classifier.classify(self.sketch.image(), version=version)
            self.last_prediction, self.predicted_version = prediction, version
            best = "   ".join(f"{digit}: {p:.0%}" for digit, p in prediction.top[1:])
            self.prediction_text = (f"[size=48sp][b]{prediction.top[0][0]}[/b][/size]  {prediction.top[0][1]:.0%}\n"
                                    f"{best}\n{prediction.latency_ms:.2f} ms")
        # The graph redraws its whole plot on each change (tens of ms at 300 points under software
        # GL), so the running curve is refreshed a few times a second, not every frame.
        now = time.perf_counter()
        if now - self._plotted_at >= self.plot_interval_s and self._losses.take() is not None:
            self._plotted_at = now
            self._plot(list(self.teacher.live_losses))
        done = self._done.take()
        if done is not None:
            self._plot(done.losses)
            self.ids.teach_button.text = "Teach"
            if done.error:
                self.status_text = f"Teaching failed: {done.error}"
            else:
                self.classifier.load(done.exported)
                self.predicted_version = -1  # classify the drawing on the pad again with the taught model
                self.status_text = (f"Taught {len(done.losses)} steps in {done.seconds:.1f} s, "
                                    f"loss {done.losses[-1]:.3f}; saved {done.exported.name}")

    def _plot(self, losses) -> None:
        self.losses = list(losses)
        self.plot.points = list(enumerate(self.losses))
        # Rescaling redraws the graph's tick labels (text rendering, milliseconds): only ever grow it.
        top = max(self.losses, default=0.0)
        if top > self.ids.loss_graph.ymax:
            self.ids.loss_graph.ymax = float(np.ceil(top))

    def _show_counts(self) -> None:
        counts = self.teacher.counts()
        self._shown_samples = sum(counts)
        self.counts_text = "samples: " + "  ".join(f"{d}:{n}" for d, n in enumerate(counts))


def build_screen(model_dir: pathlib.Path | None = None, work_dir: pathlib.Path | None = None,
                 num_threads: int = 1) -> DigitsScreen:
    from apps.digits.model import MODEL_FILE, ensure_model

    model_dir = ensure_model(model_dir)
    work_dir = pathlib.Path(work_dir or tempfile.mkdtemp(prefix="digits-app-"))
    teacher = Teacher(model_dir, work_dir, num_threads=num_threads)
    classifier = Classifier(teacher.current_model if teacher.current_model.exists() else model_dir / MODEL_FILE,
                            num_threads=num_threads)
    return DigitsScreen(classifier, teacher)
