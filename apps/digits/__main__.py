"""python3 -m apps.digits [--threads N] [--work DIR] [--selftest]"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile


def selftest(threads: int) -> dict:
    """The app's logic without a window: a drawn stroke classifies, and teaching a rotated, sheared,
    thickened style raises its accuracy while the original test set holds."""
    import numpy as np

    from apps.digits import logic, model

    directory = model.ensure_model()
    x_train, y_train, x_test, y_test = model.load_digits()
    sketch = logic.Sketch()
    sketch.begin(0.5, 0.9)
    for t in np.linspace(0, 1, 20):
        sketch.extend(0.5, 0.9 - 0.8 * t)
    with tempfile.TemporaryDirectory() as work:
        teacher = logic.Teacher(directory, work, num_threads=threads)
        classifier = logic.Classifier(directory / model.MODEL_FILE, num_threads=threads)
        drawn = classifier.classify(sketch.image())
        style = dict(angle=-35.0, thicken=3, shear=0.3)
        style_train, style_test = logic.user_style(x_train, **style), logic.user_style(x_test, **style)
        before = {"original": classifier.accuracy(x_test, y_test), "style": classifier.accuracy(style_test, y_test)}
        rng = np.random.default_rng(1)
        for digit in range(10):
            for k in rng.choice(np.flatnonzero(y_train == digit), 10, replace=False):
                teacher.add_sample(style_train[k], digit)
        teacher.start()
        result = teacher.wait()
        if result.error:
            raise RuntimeError(result.error)
        classifier.load(result.exported)
        after = {"original": classifier.accuracy(x_test, y_test), "style": classifier.accuracy(style_test, y_test)}
        teacher.close()
    return {"drawn_stroke_top": drawn.top, "before": before, "after": after, "teach_seconds": result.seconds,
            "first_loss": result.losses[0], "last_loss": result.losses[-1]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Draw digits, classify them, teach the model your handwriting.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", help="where taught models and checkpoints go (default: a temporary directory)")
    parser.add_argument("--selftest", action="store_true", help="run the logic without a window and print figures")
    args = parser.parse_args(argv)
    if args.selftest:
        print(json.dumps(selftest(args.threads), indent=1))
        return 0
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    from kivy.app import App

    from apps.digits.app import build_screen

    class DigitsApp(App):
        title = "edgesplit digits"

        def build(self):
            return build_screen(work_dir=args.work, num_threads=args.threads)

    DigitsApp().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
