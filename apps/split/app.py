"""The split dashboard's Kivy side. Requests run on a worker thread (RequestLoop); the UI thread
applies only the newest result each frame, so gRPC calls never hold a frame."""
from __future__ import annotations

import pathlib

from kivy.clock import Clock
from kivy.lang import Builder
from kivy.properties import BooleanProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.label import Label

from apps.shared import FrameMeter, Latest
from apps.split.logic import RequestLoop, SplitDashboard

Builder.load_file(str(pathlib.Path(__file__).with_name("split.kv")))


def format_bps(bps: float) -> str:
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.3g} {unit}"
    return f"{bps:.0f} bit/s"


class LayerCell(Label):
    where = StringProperty("device")


class SplitScreen(BoxLayout):
    bandwidth_text = StringProperty("")
    cut_text = StringProperty("")
    latency_text = StringProperty("no request yet")
    fallback = BooleanProperty(False)

    def __init__(self, dashboard: SplitDashboard, **kwargs):
        super().__init__(**kwargs)
        self.dashboard = dashboard
        self.frames = FrameMeter()
        self.results = Latest()
        self.last_result = None
        self.results_shown = 0
        self.cells: list[LayerCell] = []
        for layer in dashboard.layers(None):
            cell = LayerCell(text=f"{layer.index}\n{layer.op}")
            self.cells.append(cell)
            self.ids.strip.add_widget(cell)
        self.requests = RequestLoop(dashboard, self.results.put)
        self.link_changed()
        self._event = Clock.schedule_interval(self.update, 0)

    @property
    def bandwidth_bps(self) -> float:
        return 10 ** float(self.ids.bandwidth_slider.value)

    @property
    def rtt_ms(self) -> float:
        try:
            return max(0.0, float(self.ids.rtt_input.text))
        except ValueError:
            return 0.0

    def link_changed(self) -> None:
        self.bandwidth_text = format_bps(self.bandwidth_bps)
        self.dashboard.set_link(self.bandwidth_bps, self.rtt_ms)
        self.show_plan(self.dashboard.plan_for(self.bandwidth_bps, self.rtt_ms))

    def show_plan(self, plan) -> None:
        self.plan = plan
        for cell, layer in zip(self.cells, self.dashboard.layers(plan)):
            cell.where = layer.where
            cell.text = f"{layer.index}\n{layer.op}" + (f"\n{layer.cut_bytes:,} B up" if layer.cut_bytes else "")
        sent = self.dashboard.input_upload_bytes(plan)
        device = sum(1 for layer in self.dashboard.layers(plan) if layer.where == "device")
        self.cut_text = (f"plan '{plan.kind}': {device} layers on the device, {len(self.cells) - device} on the server"
                         + (f"; input {sent:,} B up" if sent else "")
                         + f"; estimated {plan.predicted.total_ms:.1f} ms")

    def toggle_requests(self, on: bool) -> None:
        if on:
            self.requests.start()
        else:
            self.requests.stop()

    def stop_service(self) -> None:
        self.dashboard.stop_server()
        self.ids.service_button.text = "Service stopped"
        self.ids.service_button.disabled = True

    def update(self, _dt) -> None:
        self.frames.tick()
        result = self.results.take()
        if result is None:
            return
        self.last_result = result
        self.results_shown += 1
        self.fallback = result.fallback
        estimated = f"{result.estimated_ms:.1f} ms" if result.estimated_ms is not None else "-"
        self.latency_text = (f"last request: [b]{result.kind}[/b], {result.device_layers} layers on the device\n"
                             f"estimated {estimated}, measured {result.measured_ms:.1f} ms"
                             + (f"\n{result.upload_bytes:,} B up" if result.upload_bytes else ""))

    def stop(self) -> None:
        self._event.cancel()
        self.requests.stop()


def build_screen(server: str | None = None, model_dir: pathlib.Path | None = None) -> SplitScreen:
    from apps.split.logic import ensure_model

    return SplitScreen(SplitDashboard(ensure_model(model_dir), server=server))
