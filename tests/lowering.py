"""Helpers of the lowering tests: run exported graphs with onnxruntime, and the float64 reference.

The reference for lowering fidelity is the PyTorch model itself in float64
(``copy.deepcopy(model).double()``), never another lowering.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch


def session(model: str | Path | onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def random_input(model, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    if cfg.input_kind == "tokens":
        return torch.randint(0, cfg.d_input, (batch, length), generator=g)
    return torch.randn(batch, length, cfg.d_input, generator=g)


def reference(model, x: torch.Tensor, lengths: torch.Tensor | None = None) -> np.ndarray:
    """Output of the float64 copy of ``model``."""
    ref = copy.deepcopy(model).double()
    with torch.no_grad():
        return ref(x if not torch.is_floating_point(x) else x.double(), lengths).numpy()


def run_sequence(graph, x: torch.Tensor, lengths: torch.Tensor | None = None) -> np.ndarray:
    feeds = {"x": x.numpy()}
    if lengths is not None:
        feeds["lengths"] = lengths.numpy()
    return session(graph).run(["y"], feeds)[0]


def stream(step_graph, model, x: torch.Tensor) -> list[np.ndarray]:
    """Drive the step graph over x (B, T[, d]) from the zero state; outputs after each step."""
    s = session(step_graph)
    batch = x.shape[0]
    feeds = {}
    for spec in s.get_inputs():
        if spec.name == "x":
            continue
        shape = [batch if d == "batch" else d for d in spec.shape]
        feeds[spec.name] = np.zeros(shape, dtype=np.float32)
    names = [o.name for o in s.get_outputs()]
    outputs = []
    for t in range(x.shape[1]):
        feeds["x"] = x[:, t].numpy()
        result = dict(zip(names, s.run(None, feeds), strict=True))
        outputs.append(result["y"])
        for name in feeds:
            if name != "x":
                feeds[name] = result[f"{name}_out"]
    return outputs


def value_types(model: onnx.ModelProto) -> dict[str, int]:
    """elem_type of every value in the graph and its subgraphs (after shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types: dict[str, int] = {}

    def visit(graph: onnx.GraphProto) -> None:
        for vi in [*graph.input, *graph.output, *graph.value_info]:
            types[vi.name] = vi.type.tensor_type.elem_type
        for init in graph.initializer:
            types[init.name] = init.data_type
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)

    visit(inferred.graph)
    return types


def all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(attr.g)


class ReferenceCache:
    """Models built once per name, and their float64 outputs computed once per input.

    The Linear layers of a fresh model draw from torch's global RNG, so a model must be built
    once and kept; references are the expensive part of these tests (float64, long inputs).
    """

    def __init__(self, factories) -> None:
        self.factories = factories
        self._models: dict = {}
        self._outputs: dict = {}

    def model(self, name: str, seed: int = 0):
        if (name, seed) not in self._models:
            self._models[name, seed] = self.factories[name](seed)
        return self._models[name, seed]

    def case(self, name: str, batch: int, length: int, seed: int = 0):
        """(input, float64 output) of model ``name`` on a seeded random input."""
        key = (name, seed, batch, length)
        if key not in self._outputs:
            model = self.model(name, seed)
            x = random_input(model, batch, length, seed=seed + length)
            self._outputs[key] = (x, reference(model, x))
        return self._outputs[key]
