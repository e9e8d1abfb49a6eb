import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import tiny_models  # noqa: E402


@pytest.fixture(scope="session")
def add_relu_model():
    """(model bytes, bias) of y = relu(x + bias) with x: [batch (dynamic), 4]."""
    return tiny_models.add_relu()


@pytest.fixture(scope="session")
def two_inputs_model():
    return tiny_models.two_inputs()


@pytest.fixture
def add_relu_path(tmp_path, add_relu_model):
    path = tmp_path / "add_relu.edge"
    path.write_bytes(add_relu_model[0])
    return path
