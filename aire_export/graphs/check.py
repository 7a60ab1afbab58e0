"""Static TensorRT compatibility check of an ONNX graph (DESIGN §4, last item).

Lists every operator, attribute and dtype in a graph (Scan/Loop/If bodies included) that
TensorRT's ONNX parser does not support, before anyone tries to build an engine. The rules
are data in :mod:`trt_support` (per parser generation: "10.3" for JetPack 6 / Jetson Orin,
"11" for current x86). Passing is necessary, not sufficient: some restrictions can only be
seen by the parser itself.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from aire_export.errors import InputError
from aire_export.graphs import trt_support
from aire_export.graphs.trt_support import RULES, ParserRules

TRT_VERSIONS = tuple(RULES)


@dataclass(frozen=True)
class Problem:
    """One finding. severity "error": the parser rejects it; "warning": it is accepted with a
    loss (e.g. float64 cast down to float32)."""

    node: str
    op: str
    kind: str  # "op" | "dtype" | "attribute" | "opset" | "domain"
    detail: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.op} node {self.node!r}" if self.node else "graph"
        return f"{self.severity}: {where}: {self.detail}"


@dataclass(frozen=True)
class CheckReport:
    trt_version: str
    problems: list[Problem]
    ops: dict[str, int] = field(default_factory=dict)  # op type → count (bodies included)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def to_json(self) -> dict:
        return {
            "trt_version": self.trt_version,
            "ok": self.ok,
            "problems": [p.__dict__ for p in self.problems],
            "ops": dict(self.ops),
            "notes": list(self.notes),
        }

    def merged(self, other: CheckReport) -> CheckReport:
        ops = Counter(self.ops)
        ops.update(other.ops)
        return CheckReport(
            self.trt_version,
            self.problems + other.problems,
            dict(ops),
            self.notes + [n for n in other.notes if n not in self.notes],
        )


def _dtype_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type)


class _Checker:
    def __init__(self, rules: ParserRules) -> None:
        self.rules = rules
        self.problems: list[Problem] = []
        self.ops: Counter[str] = Counter()
        self.notes: list[str] = []

    def add(self, node, kind: str, detail: str, severity: str = "error") -> None:
        name = node.name if node is not None else ""
        op = node.op_type if node is not None else ""
        self.problems.append(Problem(name, op, kind, detail, severity))

    # ---- types of every value, subgraphs included -----------------------------------------
    def collect_types(self, graph: onnx.GraphProto, types: dict[str, str]) -> None:
        for vi in [*graph.input, *graph.output, *graph.value_info]:
            if vi.type.HasField("tensor_type"):
                types[vi.name] = _dtype_name(vi.type.tensor_type.elem_type)
        for init in graph.initializer:
            types[init.name] = _dtype_name(init.data_type)
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    self.collect_types(attr.g, types)
                elif attr.type == onnx.AttributeProto.TENSOR and node.op_type == "Constant":
                    types[node.output[0]] = _dtype_name(attr.t.data_type)

    def check_graph(self, graph: onnx.GraphProto, types: dict[str, str], constants: set) -> None:
        constants = constants | {init.name for init in graph.initializer}
        for vi in [*graph.input, *graph.output]:
            self.check_dtype(None, vi.name, types.get(vi.name))
        for node in graph.node:
            if node.op_type == "Constant":
                constants |= set(node.output)
            self.check_node(node, types, constants)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    self.check_graph(attr.g, types, constants)

    def check_dtype(self, node, name: str, dtype: str | None, allowed=None) -> bool:
        """Flag a dtype TensorRT lacks (or that the op does not take); True when flagged."""
        if dtype is None:
            return False
        if dtype in trt_support.NO_TRT_TYPE:
            what = "complex" if dtype.startswith("COMPLEX") else dtype
            self.add(
                node, "dtype", f"tensor {name!r} has dtype {dtype}: TensorRT has no {what} type"
            )
            return True
        if dtype in trt_support.CAST_DOWN:
            self.add(
                node, "dtype", f"tensor {name!r} is {dtype}: TensorRT casts it to FLOAT", "warning"
            )
            return True
        if allowed is not None and dtype not in allowed:
            self.add(node, "dtype", f"{node.op_type} does not take {dtype} (tensor {name!r})")
            return True
        return False

    def check_node(self, node, types: dict[str, str], constants: set) -> None:
        op = node.op_type
        self.ops[op] += 1
        if node.domain not in ("", "ai.onnx"):
            self.add(node, "domain", f"custom domain {node.domain!r} needs a TensorRT plugin")
            return
        if op in self.rules.unsupported or op not in self.rules.ops:
            listed = "is listed as unsupported" if op in self.rules.unsupported else "is not listed"
            self.add(node, "op", f"{op} {listed} by the TensorRT {self.rules.version} ONNX parser")
            return
        if op in self.rules.plugins:
            note = f"{op} is provided by a plugin: {self.rules.plugins[op]}"
            if note not in self.notes:
                self.notes.append(note)
        allowed = self.rules.ops[op]
        index_inputs = trt_support.INDEX_INPUTS.get(op, ())
        bool_inputs = trt_support.BOOL_INPUTS.get(op, ())
        for i, name in enumerate(node.input):
            if not name:
                continue
            ok = set(allowed)
            if i in index_inputs:
                ok |= {"INT32", "INT64"}
            if i in bool_inputs:
                ok.add("BOOL")
            self.check_dtype(node, name, types.get(name), ok)
        out_ok = set(allowed) | ({"BOOL"} if op in trt_support.BOOL_OUTPUTS else set())
        if op in ("Shape", "Size", "ArgMax", "ArgMin"):
            out_ok |= {"INT32", "INT64"}
        for name in node.output:
            if name:
                self.check_dtype(node, name, types.get(name), out_ok)
        for i in trt_support.CONSTANT_INPUTS.get(op, ()):
            if i < len(node.input) and node.input[i] and node.input[i] not in constants:
                self.add(node, "attribute", f"input {i} (axes) of {op} must be an initializer")
        self.check_attributes(node)

    def check_attributes(self, node) -> None:
        op = node.op_type
        if op == "LayerNormalization" and sum(1 for o in node.output if o) > 1:
            self.add(node, "attribute", "only the first output of LayerNormalization is supported")
        if op == "Einsum" and not self.rules.einsum_full:
            eq = next((a.s.decode() for a in node.attribute if a.name == "equation"), "")
            operands = eq.split("->")[0].split(",")
            if "..." in eq or any(len(set(t)) != len(t) for t in operands):
                self.add(
                    node, "attribute", f"Einsum {eq!r}: ellipsis/diagonal need TensorRT ≥ 10.12"
                )
        if op == "Loop":
            body = next(a.g for a in node.attribute if a.name == "body")
            n_state = len(node.input) - 2
            if len(body.output) - 1 > n_state:
                self.add(node, "attribute", "Loop scan outputs need a static trip count (TensorRT)")
        if op == "Dropout" and len(node.input) > 2 and node.input[2]:
            self.add(node, "attribute", "Dropout's training_mode must be a False initializer")


def nonfinite_initializers(graph: onnx.GraphProto) -> list[str]:
    """Names of the float initializers (subgraphs included) holding NaN or inf: no runtime
    computes anything useful from them, and TensorRT folds them silently."""
    bad = []
    for init in graph.initializer:
        if init.data_type in FLOAT_TYPES:
            values = onnx.numpy_helper.to_array(init).astype(np.float64)
            if not np.isfinite(values).all():
                bad.append(init.name)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                bad += nonfinite_initializers(attr.g)
    return bad


def _without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose large float initializers are graph inputs of the same type and shape:
    types are all the check needs, and shape inference then skips serializing the weights."""
    light = onnx.ModelProto()
    light.CopyFrom(model)
    graph = light.graph
    kept = []
    for init in graph.initializer:
        if init.data_type in FLOAT_TYPES and int(np.prod(init.dims)) > 64:
            graph.input.append(
                onnx.helper.make_tensor_value_info(init.name, init.data_type, init.dims)
            )
        else:
            kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return light


FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}


def check_tensorrt(
    model_or_path: onnx.ModelProto | str | os.PathLike, trt_version: str = "10.3"
) -> CheckReport:
    """Problems TensorRT ``trt_version`` ("10.3" or "11") would have parsing the graph."""
    if trt_version not in RULES:
        raise InputError(
            f"unknown TensorRT version {trt_version!r}; choose one of {', '.join(TRT_VERSIONS)}"
        )
    if isinstance(model_or_path, onnx.ModelProto):
        model = model_or_path
    else:
        path = Path(model_or_path)
        if not path.is_file():
            raise InputError(f"no such ONNX file: {path}")
        model = onnx.load(str(path))
    rules = RULES[trt_version]
    checker = _Checker(rules)
    for name in nonfinite_initializers(model.graph):
        checker.add(None, "value", f"initializer {name!r} holds NaN or inf")
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and not 9 <= opset.version <= rules.max_opset:
            checker.add(
                None,
                "opset",
                f"opset {opset.version} is outside 9..{rules.max_opset} (TensorRT {trt_version}); "
                f"re-export with --opset {min(max(opset.version, 9), rules.max_opset)}",
            )
    try:
        inferred = onnx.shape_inference.infer_shapes(_without_weights(model))
    except onnx.shape_inference.InferenceError:
        inferred = model  # keep what the graph declares
    types: dict[str, str] = {}
    checker.collect_types(inferred.graph, types)
    checker.check_graph(inferred.graph, types, set())
    return CheckReport(trt_version, checker.problems, dict(checker.ops), checker.notes)
