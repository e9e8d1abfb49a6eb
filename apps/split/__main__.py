"""python3 -m apps.split [--server HOST:PORT] [--selftest]"""
from __future__ import annotations

import argparse
import json
import os
import sys


def selftest(server: str | None = None) -> dict:
    """Plans along a falling bandwidth, requests over loopback and on a 3G-like link, then with the
    service stopped; all without a window."""
    import numpy as np

    from apps.split.logic import LOOPBACK, THREE_G, SplitDashboard

    dashboard = SplitDashboard(server=server)
    try:
        sweep = {f"{bps:.0e}": len(dashboard.plan_for(bps, LOOPBACK[1]).device_ops) for bps in np.logspace(9, 5, 9)}
        image = dashboard.sample_input()
        local = dashboard.run_local(image)
        report = {"device_layers_by_bandwidth": sweep}
        for name, link in (("loopback", LOOPBACK), ("3g", THREE_G)):
            dashboard.set_link(*link)
            for _ in range(3):
                result = dashboard.request(image)
            report[name] = {"kind": result.kind, "device_layers": result.device_layers, "offloaded": result.offloaded,
                            "measured_ms": result.measured_ms,
                            "max_abs_diff": max(float(np.max(np.abs(result.outputs[k] - local[k]))) for k in local)}
        dashboard.set_link(*LOOPBACK)
        dashboard.request(image)
        dashboard.stop_server()
        result = dashboard.request(image)
        report["service_stopped"] = {"kind": result.kind, "fallback": result.fallback,
                                     "max_abs_diff": max(float(np.max(np.abs(result.outputs[k] - local[k])))
                                                         for k in local)}
        return report
    finally:
        dashboard.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Where each layer runs: a live split-execution dashboard.")
    parser.add_argument("--server", help="host:port of a running `cloudsplit serve` (default: start one on 127.0.0.1)")
    parser.add_argument("--selftest", action="store_true", help="run the logic without a window and print figures")
    args = parser.parse_args(argv)
    if args.selftest:
        print(json.dumps(selftest(args.server), indent=1))
        return 0
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    from kivy.app import App

    from apps.split.app import build_screen

    class SplitApp(App):
        title = "edgesplit split"

        def build(self):
            self.screen = build_screen(args.server)
            return self.screen

        def on_stop(self):
            self.screen.stop()
            self.screen.dashboard.close()

    SplitApp().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
