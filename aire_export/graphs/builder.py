"""A small ONNX graph builder, so each lowering reads like its math.

Every method adds one node (or one initializer) and returns the name of its output, so a
formula is written as nested calls: ``g.add(x, g.matmul(u, W))``. Constants are float64 numpy
arrays cast to the dtype the consumer asks for; integer constants used for shapes and axes are
shared. Node names carry a scope (``layers.0.recurrence/MatMul_3``) so that build recipes can
address groups of nodes, e.g. to keep the recurrence in float32 on TensorRT 10.

Opset differences handled here (17 ≤ opset ≤ 21): ReduceMean/ReduceMax take ``axes`` as an
attribute before opset 18 and as an input from 18 on (ReduceSum takes an input since 13).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DTYPES = {
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "bfloat16": TensorProto.BFLOAT16,
    "float64": TensorProto.DOUBLE,
    "int64": TensorProto.INT64,
    "bool": TensorProto.BOOL,
}
NUMPY_DTYPES = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float64": np.dtype(np.float64),
    "int64": np.dtype(np.int64),
    "bool": np.dtype(np.bool_),
}
INT64_MAX = np.iinfo(np.int64).max


class GraphBuilder:
    """Accumulates nodes, initializers and graph I/O of one ONNX graph (or a Scan body)."""

    def __init__(self, name: str, opset: int, parent: GraphBuilder | None = None) -> None:
        self.name = name
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._parent = parent
        self._counts: dict[str, int] = {} if parent is None else parent._counts
        self._scope: list[str] = [] if parent is None else list(parent._scope)
        self._int_consts: dict[tuple, str] = {}

    # ---- naming ----------------------------------------------------------------------------
    @contextmanager
    def scope(self, name: str) -> Iterator[None]:
        """Prefix the names of the nodes and constants created inside with ``name/``."""
        self._scope.append(name)
        try:
            yield
        finally:
            self._scope.pop()

    def fresh(self, hint: str) -> str:
        prefix = "/".join([*self._scope, hint])
        n = self._counts.get(prefix, 0)
        self._counts[prefix] = n + 1
        return f"{prefix}_{n}"

    # ---- graph I/O -------------------------------------------------------------------------
    def input(self, name: str, dtype: str, shape: Sequence[int | str | None]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, DTYPES[dtype], list(shape)))
        return name

    def output(self, name: str, value: str, dtype: str, shape: Sequence[int | str | None]) -> str:
        """Expose ``value`` as graph output ``name`` (through an Identity when names differ)."""
        if value != name:
            self.nodes.append(helper.make_node("Identity", [value], [name], name=self.fresh("out")))
        self.outputs.append(helper.make_tensor_value_info(name, DTYPES[dtype], list(shape)))
        return name

    # ---- constants ---------------------------------------------------------------------------
    def const(self, value: np.ndarray | float, dtype: str, hint: str = "c") -> str:
        """An initializer holding ``value`` (computed in float64) cast to ``dtype``."""
        array = np.asarray(value)
        if array.dtype.kind == "c":
            raise TypeError("complex constants cannot enter a graph: split them into real parts")
        name = self.fresh(hint)
        self.initializers.append(
            numpy_helper.from_array(np.ascontiguousarray(array.astype(NUMPY_DTYPES[dtype])), name)
        )
        return name

    def ints(self, values: Sequence[int] | int) -> str:
        """A shared int64 constant (shapes, axes, pads, indices); scalar when given an int."""
        scalar = isinstance(values, (int, np.integer))
        key = (scalar, (int(values),) if scalar else tuple(int(v) for v in values))
        if self._parent is not None:
            return self._parent.ints(values)
        if key not in self._int_consts:
            array = np.array(key[1][0] if scalar else key[1], dtype=np.int64)
            name = self.fresh("i64")
            self.initializers.append(numpy_helper.from_array(array, name))
            self._int_consts[key] = name
        return self._int_consts[key]

    # ---- generic node ------------------------------------------------------------------------
    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs) -> str | list[str]:
        """Add a node; returns its output name (a list when ``outputs > 1``)."""
        node_name = self.fresh(op_type)
        names = [f"{node_name}:{i}" if outputs > 1 else node_name for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=node_name, **attrs))
        return names if outputs > 1 else names[0]

    # ---- arithmetic ----------------------------------------------------------------------------
    def add(self, a: str, b: str) -> str:
        return self.op("Add", a, b)

    def sub(self, a: str, b: str) -> str:
        return self.op("Sub", a, b)

    def mul(self, a: str, b: str) -> str:
        return self.op("Mul", a, b)

    def div(self, a: str, b: str) -> str:
        return self.op("Div", a, b)

    def matmul(self, a: str, b: str) -> str:
        return self.op("MatMul", a, b)

    def cast(self, x: str, dtype: str) -> str:
        return self.op("Cast", x, to=DTYPES[dtype])

    def cast_if(self, x: str, from_dtype: str, to_dtype: str) -> str:
        """Cast only when the dtypes differ (explicit Casts where precision changes)."""
        return x if from_dtype == to_dtype else self.cast(x, to_dtype)

    # ---- shapes ----------------------------------------------------------------------------------
    def reshape(self, x: str, shape: Sequence[int] | str) -> str:
        """Reshape to a constant shape (0 copies a dim, −1 infers one) or a shape tensor."""
        return self.op("Reshape", x, shape if isinstance(shape, str) else self.ints(shape))

    def transpose(self, x: str, perm: Sequence[int]) -> str:
        return self.op("Transpose", x, perm=list(perm))

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        return self.op("Unsqueeze", x, self.ints(axes))

    def squeeze(self, x: str, axes: Sequence[int]) -> str:
        return self.op("Squeeze", x, self.ints(axes))

    def concat(self, parts: Sequence[str], axis: int) -> str:
        return self.op("Concat", *parts, axis=axis)

    def slice(self, x: str, starts, ends, axes: Sequence[int]) -> str:
        """Slice along constant ``axes``; starts/ends are int lists or int64 tensors (names)."""
        s = starts if isinstance(starts, str) else self.ints(starts)
        e = ends if isinstance(ends, str) else self.ints(ends)
        return self.op("Slice", x, s, e, self.ints(axes))

    def pad(self, x: str, pads: Sequence[int] | str, value: str | None = None) -> str:
        """Constant padding (zeros, or the scalar tensor ``value``); ``pads`` = [begin_0 …
        begin_{r−1}, end_0 … end_{r−1}] (list or tensor)."""
        pads = pads if isinstance(pads, str) else self.ints(pads)
        return self.op("Pad", x, pads) if value is None else self.op("Pad", x, pads, value)

    def shape(self, x: str, start: int, end: int | None = None) -> str:
        """int64 (end − start,) slice of the shape of ``x`` (Shape with start/end, opset ≥ 15)."""
        attrs = {"start": start} if end is None else {"start": start, "end": end}
        return self.op("Shape", x, **attrs)

    # ---- reductions --------------------------------------------------------------------------
    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: bool = False) -> str:
        takes_input = op_type == "ReduceSum" or self.opset >= 18
        if takes_input:
            return self.op(op_type, x, self.ints(axes), keepdims=int(keepdims))
        return self.op(op_type, x, axes=list(axes), keepdims=int(keepdims))

    # ---- subgraphs and the model ------------------------------------------------------------
    def body(self, name: str) -> GraphBuilder:
        """A builder for a subgraph (Scan body) that shares this graph's shared int constants."""
        return GraphBuilder(name, self.opset, parent=self)

    def graph(self) -> onnx.GraphProto:
        return helper.make_graph(
            self.nodes, self.name, self.inputs, self.outputs, initializer=self.initializers
        )

    def model(self, producer: str, doc: str = "") -> onnx.ModelProto:
        model = helper.make_model(
            self.graph(),
            opset_imports=[helper.make_opsetid("", self.opset)],
            producer_name=producer,
            doc_string=doc,
        )
        model.ir_version = min(model.ir_version, 9)  # readable by onnxruntime ≥ 1.16
        return model


def complex_right(z: np.ndarray) -> np.ndarray:
    """(…, 2, 2) real R with [re(w), im(w)] @ R = [re(zw), im(zw)] for complex z (…)."""
    z = np.asarray(z, dtype=complex)
    a, b = z.real, z.imag
    return np.stack([np.stack([a, b], -1), np.stack([-b, a], -1)], -2)
