"""Models and servers for the split-execution tests (real gRPC on loopback, small models)."""
from __future__ import annotations

import hashlib
import os
import pathlib
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from tests.fixtures import models  # noqa: E402
from tests.fixtures.models import GraphBuilder  # noqa: E402


class Model:
    """A converted model: its .edge bytes, hash, and sample inputs keyed by input name."""

    def __init__(self, name: str, onnx_model, feeds: dict[str, np.ndarray]):
        import converter

        self.name = name
        self.onnx = onnx_model
        self.data = converter.convert(onnx_model).data
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.feeds = feeds

    def write(self, directory: pathlib.Path) -> pathlib.Path:
        path = directory / f"{self.name}.edge"
        path.write_bytes(self.data)
        return path


def mlp_onnx(widths=(64, 256, 256, 10), seed: int = 3):
    """Dense layers with a dynamic batch dimension, so the server can batch it."""
    b = GraphBuilder(seed)
    x = "input"
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        x = b.linear(x, fan_in, fan_out, name=f"fc{i}")
        if i < len(widths) - 2:
            x = b.op("Relu", [x])
    b.nodes[-1].output[0] = "logits"
    return b.model([helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", widths[0]])],
                   [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", widths[-1]])], "mlp")


@pytest.fixture(scope="session", autouse=True)
def cost_cache(tmp_path_factory):
    """Device-cost measurements go to a temporary cache, not the user's."""
    previous = os.environ.get("EDGESPLIT_COST_CACHE")
    os.environ["EDGESPLIT_COST_CACHE"] = str(tmp_path_factory.mktemp("cost-cache"))
    yield
    if previous is None:
        os.environ.pop("EDGESPLIT_COST_CACHE", None)
    else:
        os.environ["EDGESPLIT_COST_CACHE"] = previous


@pytest.fixture(scope="session")
def mlp():
    rng = np.random.default_rng(11)
    return Model("mlp", mlp_onnx(), {"input": rng.standard_normal((1, 64)).astype(np.float32)})


@pytest.fixture(scope="session")
def mobilenet():
    onnx_model = models.mobilenet_v2(width=0.35, resolution=32, num_classes=10)
    return Model("mobilenet_v2", onnx_model, models.sample_inputs(onnx_model))


@pytest.fixture(scope="session")
def resnet():
    onnx_model = models.resnet18(resolution=32, base_width=8, num_classes=10)
    return Model("resnet18", onnx_model, models.sample_inputs(onnx_model))


@pytest.fixture(scope="session")
def bert():
    onnx_model = models.bert_encoder(layers=2, hidden=64, heads=4, batch=1, tokens=16, intermediate=128)
    return Model("bert_encoder", onnx_model, models.sample_inputs(onnx_model))


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory, mlp, mobilenet, resnet, bert):
    directory = tmp_path_factory.mktemp("models")
    for model in (mlp, mobilenet, resnet, bert):
        model.write(directory)
    return directory


@pytest.fixture(scope="session")
def server(models_dir):
    from cloudsplit.server import start_server

    handle = start_server(models_dir, max_concurrency=8)
    yield handle
    handle.stop(0)
