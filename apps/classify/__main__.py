"""python3 -m apps.classify [--folder DIR] [--no-camera] [--selftest]"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys


def selftest() -> dict:
    """The folder source through fp32 and int8 at 1 and 2 threads, without a window."""
    from apps.classify import logic, model

    directory = model.ensure_model()
    source = logic.FolderSource(directory / model.IMAGES)
    report = {"int8_size_ratio": (directory / model.INT8_FILE).stat().st_size
              / (directory / model.FP32_FILE).stat().st_size,
              "top1_agreement": logic.agreement(directory, source.frames)}
    correct = {}
    for precision in ("fp32", "int8"):
        for threads in (1, 2):
            classifier = logic.LiveClassifier(directory, precision, threads)
            hits = [classifier.classify(frame).top[0][0] in name for frame, name in zip(source.frames, source.names)]
            correct[f"{precision}/{threads}"] = {"accuracy": sum(hits) / len(hits), **classifier.overlay()}
            classifier.close()
    report["runs"] = correct
    report["isa"] = classifier.isa
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="A live classifier over the camera or a folder of images.")
    parser.add_argument("--folder", type=pathlib.Path, help="images to read when no camera opens "
                                                            "(default: the generated samples)")
    parser.add_argument("--no-camera", action="store_true")
    parser.add_argument("--selftest", action="store_true", help="run the logic without a window and print figures")
    args = parser.parse_args(argv)
    if args.selftest:
        print(json.dumps(selftest(), indent=1))
        return 0
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    from kivy.app import App

    from apps.classify.app import build_screen

    class ClassifyApp(App):
        title = "edgesplit classify"

        def build(self):
            self.screen = build_screen(folder=args.folder, camera=not args.no_camera)
            return self.screen

        def on_stop(self):
            self.screen.stop()

    ClassifyApp().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
