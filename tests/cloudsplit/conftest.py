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

import edge  # noqa: E402
from cloudsplit import execution, transfer  # noqa: E402
from cloudsplit.protos import split_pb2 as pb  # noqa: E402
from tests.fixtures import models  # noqa: E402
from tests.fixtures.models import OnnxModelBuilder  # noqa: E402


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


class DevicePart:
    """The device side of a cut after op ``cut - 1``: ops [0, cut) run locally, the rest remotely."""

    def __init__(self, model, cut: int):
        self.model = model
        self.interpreter = edge.Interpreter(model_content=model.data)
        self.interpreter.allocate_tensors()
        self.ops = self.interpreter.op_details()
        details = self.interpreter.get_tensor_details()
        self.kinds = [d["kind"] for d in details]
        self.producer = {t: op["index"] for op in self.ops for t in op["outputs"] if t >= 0}
        self.inputs = {d["index"]: model.feeds[d["name"]] for d in self.interpreter.get_input_details()}
        self.outputs = [d["index"] for d in self.interpreter.get_output_details()]
        self.server_ops = list(range(cut, len(self.ops)))
        written = {t for op in self.server_ops for t in self.ops[op]["outputs"]}
        self.cut_tensors = sorted({t for op in self.server_ops for t in self.ops[op]["inputs"]
                                   if t >= 0 and self.kinds[t] == "activation" and t not in written})

    def local_outputs(self) -> dict[int, np.ndarray]:
        for t, array in self.inputs.items():
            self.interpreter.set_tensor(t, array)
        self.interpreter.invoke()
        return {t: self.interpreter.get_tensor(t) for t in self.outputs}

    def cut_values(self) -> dict[int, np.ndarray]:
        for t, array in self.inputs.items():
            self.interpreter.set_tensor(t, array)
        device_ops = range(self.server_ops[0])
        provided = {t: a for t, a in self.inputs.items() if t in self.cut_tensors}
        return execution.run_capturing(self.interpreter, device_ops, self.cut_tensors, self.producer, provided)

    def request(self, mode: str = "none", request_id: int = 1):
        tensors = [transfer.encode_tensor(t, array, mode) for t, array in self.cut_values().items()]
        header = pb.InferHeader(request_id=request_id, model_sha256=self.model.sha256, server_ops=self.server_ops,
                                uploads=[h for h, _ in tensors], outputs=self.outputs)
        return header, tensors


def mlp_onnx(widths=(64, 256, 256, 10), seed: int = 3):
    """Dense layers with a dynamic batch dimension, so the server can batch it."""
    b = OnnxModelBuilder(seed)
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
