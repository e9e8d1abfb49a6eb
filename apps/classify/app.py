"""The classify app's Kivy side: each frame reads the source, classifies it (a few hundred
microseconds for this model, so on the UI thread), and shows top-3 and the latency overlay."""
from __future__ import annotations

import pathlib

from kivy.clock import Clock
from kivy.graphics.texture import Texture
from kivy.lang import Builder
from kivy.properties import StringProperty
from kivy.uix.boxlayout import BoxLayout

from apps.classify.logic import LiveClassifier, open_source
from apps.shared import FrameMeter

Builder.load_file(str(pathlib.Path(__file__).with_name("classify.kv")))


class ClassifyScreen(BoxLayout):
    overlay_text = StringProperty("")
    top_text = StringProperty("")
    source_text = StringProperty("")

    def __init__(self, classifier: LiveClassifier, source, **kwargs):
        super().__init__(**kwargs)
        self.classifier, self.source = classifier, source
        self.frames = FrameMeter()
        self.processed = 0
        self.last_result = None
        self._texture = None
        self.source_text = f"source: {source.kind}   ISA: {classifier.isa}"
        self._event = Clock.schedule_interval(self.update, 0)

    def set_precision(self, precision: str) -> None:
        self.classifier.configure(precision, self.classifier.num_threads)

    def set_threads(self, threads: int) -> None:
        self.classifier.configure(self.classifier.precision, threads)

    def update(self, _dt) -> None:
        self.frames.tick()
        frame = self.source.read()
        if frame is None:
            return
        result = self.classifier.classify(frame)
        self.last_result = result
        self.processed += 1
        self._show(frame)
        overlay = self.classifier.overlay()
        self.overlay_text = (f"{self.classifier.precision}, {self.classifier.num_threads} thread(s), "
                             f"{self.classifier.isa}\np50 {overlay['p50_ms']:.2f} ms  p95 {overlay['p95_ms']:.2f} ms "
                             f"(last {overlay['frames']})")
        name, p = result.top[0]
        self.top_text = (f"[size=28sp][b]{name}[/b][/size] {p:.0%}    "
                         + "   ".join(f"{n} {q:.0%}" for n, q in result.top[1:]))

    def _show(self, frame) -> None:
        height, width = frame.shape[:2]
        if self._texture is None or tuple(self._texture.size) != (width, height):
            self._texture = Texture.create(size=(width, height), colorfmt="rgb")
            self._texture.flip_vertical()
            self.ids.frame_view.texture = self._texture
        self._texture.blit_buffer(frame.tobytes(), colorfmt="rgb", bufferfmt="ubyte")
        self.ids.frame_view.canvas.ask_update()

    def stop(self) -> None:
        self._event.cancel()
        self.source.close()
        self.classifier.close()


def build_screen(model_dir: pathlib.Path | None = None, folder: pathlib.Path | None = None,
                 camera: bool = True) -> ClassifyScreen:
    from apps.classify.model import IMAGES, ensure_model

    model_dir = ensure_model(model_dir)
    return ClassifyScreen(LiveClassifier(model_dir), open_source(folder or model_dir / IMAGES, camera=camera))
