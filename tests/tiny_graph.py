"""A tiny hand-built ONNX classifier (mean over time, then Dense) for runtime tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_classifier(path: Path, d_input: int = 3, classes: int = 4, seed: int = 0) -> np.ndarray:
    """Writes y = mean_t(x) @ W to ``path``; returns W."""
    W = np.random.default_rng(seed).standard_normal((d_input, classes)).astype(np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "W"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "length", d_input])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", classes])],
        initializer=[
            numpy_helper.from_array(W, "W"),
            numpy_helper.from_array(np.array([1], np.int64), "axes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return W
