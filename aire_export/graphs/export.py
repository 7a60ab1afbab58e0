"""``export_network``: the export IR of a model → ``model.onnx`` and ``model.step.onnx``.

The IR (aire_export/ir.py) comes from the model's family adapter (``ax.export`` in
aire_export/lower.py does both steps); the sequence graph lowers each core with the chosen
method (graphs/core.py dispatches on the core type), the step graph runs one step with
explicit state (graphs/step.py). Both are pure real arithmetic: no complex dtype, no unrolled
time loop, so the node count does not depend on the sequence length.

Opset: 17 by default, the lowest with LayerNormalization (one fused node instead of seven),
parsed by TensorRT 8.6 through 11 and onnxruntime ≥ 1.14; each target states the range it
accepts (aire_export/targets.py: ≤ 20 for Jetson, whose TensorRT 10.3 parses 9..20).

Precision: fp32, fp16 or bf16 for projections and pointwise work; λ̄ and the states stay
float32 with explicit Casts (TensorRT 11 is strongly typed); graph I/O stays float32.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from aire_export import ir
from aire_export.errors import InputError, OutputError
from aire_export.files import write_atomically
from aire_export.graphs import auto, language
from aire_export.graphs.builder import NUMPY_DTYPES
from aire_export.graphs.check import CheckReport, check_tensorrt, nonfinite_initializers
from aire_export.graphs.core import lowering_for
from aire_export.graphs.lowering import (
    CHUNKED_MIN_LENGTH,
    FEEDTHROUGH,
    METHODS,
    LayerLowering,
    growth_of,
)
from aire_export.graphs.sequence import sequence_graph
from aire_export.graphs.step import frame_problem, step_graph
from aire_export.targets import DEFAULT_TARGET, target_named

PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
SCANS = ("auto", *METHODS)
DEFAULT_OPSET = 17
DEFAULT_MAX_LENGTH = {"logdepth": 1 << 14}  # others: any length (scan) or ≥ 2^20 (chunked)
SEQUENCE_FILE, STEP_FILE = "model.onnx", "model.step.onnx"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name, e.g. "float32", "int64"
    shape: tuple[int | str, ...]  # symbolic dims as strings: "batch", "length"


@dataclass(frozen=True)
class ExportedGraph:
    path: Path
    mode: str  # "sequence" | "step"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    scan: str  # the lowering of every layer ("chunked"), or per layer ("toeplitz,chunked")
    precision: str
    opset: int
    node_count: int  # nodes in the graph and its subgraphs
    max_length: int | None  # None = any length; else the longest sequence the graph accepts
    frame: int | None = None  # a step graph: the steps per call (K of --frame); None: sequence
    bytes: int = 0  # the size of the serialized graph (the file written)

    def to_json(self) -> dict:
        return {
            "path": str(self.path),
            "mode": self.mode,
            "scan": self.scan,
            "precision": self.precision,
            "opset": self.opset,
            "node_count": self.node_count,
            "max_length": self.max_length,
            "frame": self.frame,
            "bytes": self.bytes,
            **{
                key: [
                    {"name": t.name, "dtype": t.dtype, "shape": list(t.shape)}
                    for t in getattr(self, key)
                ]
                for key in ("inputs", "outputs")
            },
        }


@dataclass(frozen=True)
class ExportResult:
    sequence: ExportedGraph
    step: ExportedGraph | None
    step_skipped: str | None  # why no step graph (e.g. "bidirectional model")
    check: CheckReport | None  # TensorRT op support, when the target needs it
    warnings: tuple[str, ...] = ()  # e.g. the float32 reach of an unstable layer

    def to_json(self) -> dict:
        return {
            "sequence": self.sequence.to_json(),
            "step": None if self.step is None else self.step.to_json(),
            "step_skipped": self.step_skipped,
            "check": None if self.check is None else self.check.to_json(),
            "warnings": list(self.warnings),
        }


def export_network(
    net: ir.Graphable,
    out_dir: str | os.PathLike,
    *,
    target: str = DEFAULT_TARGET,
    scan: str = "auto",
    precision: str = "fp32",
    opset: int | None = None,
    step: bool | None = None,
    lengths_input: bool = False,
    max_length: int | None = None,
    rules: Sequence[ir.LoweringRule] = (),
    frame: int = 1,
) -> ExportResult:
    """Write ``out_dir/model.onnx`` (and ``model.step.onnx``) for the network ``net``.

    target: a target of aire_export/targets.py ("onnx", "ort-cuda", "trt", "jetson"): its
        device decides ``auto``; targets with TensorRT parser rules get the op-support check.
    scan: "auto" (``rules``, then graphs/auto.py's table) or one of chunked, toeplitz,
        logdepth, scan.
    rules: lowering rules tried before the generic ``auto`` table (the family's own).
    precision: fp32, fp16 or bf16 for projections and pointwise work (recurrence: float32).
    max_length: the longest sequence the graph must accept; default 2^14 for logdepth, whose
        graph grows with log2 of it. Chunked and Toeplitz graphs accept ≥ 2^20 steps whatever
        it is, scan any length. ``ExportedGraph.max_length`` states what the graph accepts.
    step: None = a step graph for unidirectional models, skipped for bidirectional ones.
    frame: steps per call of the step graph (graphs/step.py): 1 one step, K > 1 a frame of K
        steps (x (batch, K, …), y after every step); LTI layers only (S5, S4D).
    lengths_input: add a ``lengths`` input (valid steps per sequence) for masked pooling
        (a language model takes none: it is causal and predicts at every position).
    """
    opset, compute = check_lowering(target, scan, precision, opset, max_length)
    if step and net.bidirectional:
        raise InputError(
            "no step graph for a bidirectional model (its backward scan reads the future); "
            "drop --step"
        )
    problem = frame_problem(net, frame)
    if problem is None and frame > 1 and step is False:
        problem = f"--frame {frame} sets the steps per call of model.step.onnx: drop --no-step"
    if problem is not None:
        raise InputError(problem)
    device = target_named(target).device
    lowerings = _lowerings(net, device, scan, max_length, (*rules, *auto.AUTO_TABLE))
    _check_frame_growth(lowerings, frame)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {out}: {e.strerror}") from None
    if isinstance(net, ir.TokenLM):  # per-token and causal: no lengths input, no pooling
        seq_model = language.sequence_graph(net, lowerings, compute, opset)
    else:
        seq_model = sequence_graph(net, lowerings, compute, opset, lengths_input)
    limits = [lw.accepted_length for lw in lowerings if lw.accepted_length is not None]
    sequence = _write(
        seq_model,
        out / SEQUENCE_FILE,
        "sequence",
        _scan_label(lowerings),
        precision,
        opset,
        min(limits) if limits else None,
    )
    step_result, skipped = None, None
    if step is False:
        skipped = "not requested"
    elif net.bidirectional:
        skipped = "bidirectional model: the backward scan reads the future"
    else:
        if isinstance(net, ir.TokenLM):
            step_model = language.step_graph(net, compute, opset)
        else:
            step_model = step_graph(net, compute, opset, frame)
        step_result = _write(
            step_model, out / STEP_FILE, "step", "step", precision, opset, None, frame
        )
    check = None
    rules_version = target_named(target).tensorrt_rules
    if rules_version is not None:
        check = check_tensorrt(seq_model, rules_version)
        if step_result is not None:
            check = check.merged(check_tensorrt(step_model, rules_version))
    return ExportResult(sequence, step_result, skipped, check, tuple(_growth_warnings(lowerings)))


def check_lowering(
    target: str,
    scan: str,
    precision: str,
    opset: int | None = None,
    max_length: int | None = None,
) -> tuple[int, str]:
    """(opset, compute dtype) for these export options; InputError naming the bad one."""
    low, high = target_named(target).opsets
    if scan not in SCANS:
        raise InputError(f"unknown scan lowering {scan!r}; choose one of {', '.join(SCANS)}")
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if not low <= opset <= high:
        raise InputError(f"opset {opset} is not supported for target {target}: use {low}..{high}")
    if max_length is not None and int(max_length) < 1:
        raise InputError(f"max_length must be ≥ 1, got {max_length}")
    return opset, PRECISIONS[precision]


def _lowerings(
    net: ir.Graphable, device: str, scan: str, max_length: int | None, rules
) -> list[LayerLowering]:
    """Per layer: the method (``auto``: from the rules), its chunks and its length limit."""
    result = []
    for block in net.blocks:
        if not lowering_for(block.core).recurrent:
            result.append(LayerLowering(FEEDTHROUGH))  # dropped layer: no recurrence
            continue
        if scan == "auto":
            rule = auto.auto_rule(block.core, device, rules)
            method, chunks = (
                rule.method,
                {"chunk": rule.chunk, "toeplitz_chunk": rule.toeplitz_chunk},
            )
        else:
            method, chunks = scan, {}
        length = max_length or DEFAULT_MAX_LENGTH.get(method, CHUNKED_MIN_LENGTH)
        layout = lowering_for(block.core)
        growth = growth_of(*layout.modes(block.core))
        states = block.core.states if layout.per_state_constants else 0
        lowering = LayerLowering(method, max_length=length, states=states, growth=growth, **chunks)
        if growth is not None and growth.power_limit < max(lowering.chunk, lowering.toeplitz_chunk):
            raise InputError(
                f"layer {len(result)} has a mode with |λ̄| = {growth.rho:.6g}: λ̄^"
                f"{max(lowering.chunk, lowering.toeplitz_chunk)} overflows float32, so no "
                "lowering can hold it; retrain with eigenvalue clipping (clip_eigs)"
            )
        result.append(lowering)
    return result


def _check_frame_growth(lowerings: list[LayerLowering], frame: int) -> None:
    """InputError when a frame's powers λ̄^1..λ̄^K of an unstable layer overflow float32."""
    for index, lowering in enumerate(lowerings):
        growth = lowering.growth
        if frame > 1 and growth is not None and growth.power_limit < frame:
            raise InputError(
                f"layer {index} has a mode with |λ̄| = {growth.rho:.6g}: λ̄^{frame} overflows "
                f"float32, so a frame of {frame} steps cannot hold it; use --frame "
                f"{growth.power_limit} or less, or retrain with eigenvalue clipping (clip_eigs)"
            )


def _growth_warnings(lowerings: list[LayerLowering]) -> list[str]:
    """What an unstable layer means for the graph: how far its output stays finite."""
    out = []
    for index, lowering in enumerate(lowerings):
        growth = lowering.growth
        if growth is not None:
            out.append(
                f"layer {index} is unstable (|λ̄| up to {growth.rho:.7g} > 1): its output grows "
                f"like |λ̄|^T and stays finite in float32 for about {growth.output_limit:,} "
                f"steps (inputs of magnitude ≤ 1); the graph accepts up to "
                f"{lowering.accepted_length:,} steps"
            )
    return out


def _scan_label(lowerings: list[LayerLowering]) -> str:
    methods = [lw.method for lw in lowerings if lw.method != FEEDTHROUGH] or [FEEDTHROUGH]
    return methods[0] if len(set(methods)) == 1 else ",".join(methods)


def _specs(values) -> tuple[TensorSpec, ...]:
    specs = []
    for vi in values:
        t = vi.type.tensor_type
        dtype = NUMPY_DTYPES_BY_ONNX[t.elem_type]
        shape = tuple(d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim)
        specs.append(TensorSpec(vi.name, dtype, shape))
    return tuple(specs)


NUMPY_DTYPES_BY_ONNX = {
    onnx.helper.np_dtype_to_tensor_dtype(dtype): name for name, dtype in NUMPY_DTYPES.items()
}


def count_nodes(graph: onnx.GraphProto) -> int:
    """Nodes of a graph, subgraphs (Scan bodies) included."""
    total = 0
    for node in graph.node:
        total += 1
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                total += count_nodes(attr.g)
    return total


def _write(
    model, path: Path, mode, scan, precision, opset, max_length, frame=None
) -> ExportedGraph:
    bad = nonfinite_initializers(model.graph)
    if bad:  # every lowering keeps its constants finite: this is a bug, never a shipped graph
        raise RuntimeError(f"{path.name} would hold non-finite constants: {', '.join(bad[:3])}")
    data = model.SerializeToString()
    onnx.checker.check_model(data)
    write_atomically(path, lambda f: f.write(data))
    return ExportedGraph(
        path=path,
        mode=mode,
        inputs=_specs(model.graph.input),
        outputs=_specs(model.graph.output),
        scan=scan,
        precision=precision,
        opset=opset,
        node_count=count_nodes(model.graph),
        max_length=max_length,
        frame=frame,
        bytes=len(data),
    )
