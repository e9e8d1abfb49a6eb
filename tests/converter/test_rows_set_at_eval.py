"""NonMaxSuppression's data-dependent row count through converter and runtime: the file declares the
most rows with a dynamic leading dim, each invoke sets the real count, and an output with such a
count can only be a model output (the writer and the runtime's allocate both refuse a reader)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import converter
import converter.writer
from converter.errors import ConversionError
from converter.ops import OPS

edge = pytest.importorskip("edge")


def nms_model(extra_nodes=(), output="selected"):
    constants = [numpy_helper.from_array(np.array([4], np.int64), "max_out"),
                 numpy_helper.from_array(np.array([0.5], np.float32), "iou")]
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou"], ["selected"])
    out_type = TensorProto.INT64 if output == "selected" else TensorProto.FLOAT
    graph = helper.make_graph(
        [node, *extra_nodes], "nms",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 6, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 6])],
        [helper.make_tensor_value_info(output, out_type, ["rows", 3])], constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


BOXES = np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, -0.1, 1, 0.9], [0, 10, 1, 11], [0, 10.1, 1, 11.1],
                   [0, 100, 1, 101]]], np.float32)


def test_each_invoke_sets_the_row_count():
    result = converter.convert(nms_model())
    interpreter = edge.Interpreter(model_content=result.data)
    interpreter.allocate_tensors()
    detail = interpreter.get_output_details()[0]
    assert list(detail["shape"]) == [4, 3] and list(detail["shape_signature"]) == [-1, 3]
    runs = [(np.array([[[0.9, 0.75, 0.6, 0.95, 0.5, 0.3]]], np.float32), [[0, 0, 3], [0, 0, 0], [0, 0, 5]]),
            (np.array([[[0.9, 0.1, 0.1, 0.1, 0.1, 0.1]]], np.float32), [[0, 0, 0], [0, 0, 3], [0, 0, 5]]),
            (np.array([[[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]], np.float32), [[0, 0, 5], [0, 0, 4], [0, 0, 2]])]
    for scores, expected in runs:  # no allocate between runs: the count shrinks and grows again
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], BOXES)
        interpreter.set_tensor(interpreter.get_input_details()[1]["index"], scores)
        interpreter.invoke()
        got = interpreter.get_tensor(detail["index"])
        np.testing.assert_array_equal(got, np.array(expected, np.int64))
        ref = OPS["NonMaxSuppression"].reference([BOXES, scores], {"max_output_boxes_per_class": 4,
                                                                   "iou_threshold": 0.5})[0]
        np.testing.assert_array_equal(got, ref)


def test_a_reader_of_the_rows_is_refused_by_the_writer():
    cast = helper.make_node("Cast", ["selected"], ["as_float"], to=TensorProto.FLOAT)
    with pytest.raises(ConversionError, match="row count known only at run time.*Cast"):
        converter.convert(nms_model([cast], output="as_float"))


def test_a_reader_of_the_rows_is_refused_by_the_runtime(monkeypatch):
    """A file written without the writer's check: allocate refuses it instead of running the
    reader on rows that were never written."""
    monkeypatch.setattr(converter.writer, "_check_rows_set_at_eval_unread", lambda graph: None)
    cast = helper.make_node("Cast", ["selected"], ["as_float"], to=TensorProto.FLOAT)
    data = converter.convert(nms_model([cast], output="as_float")).data
    interpreter = edge.Interpreter(model_content=data)
    with pytest.raises(edge.errors.UnsupportedError, match="known only after the run.*CAST"):
        interpreter.allocate_tensors()
