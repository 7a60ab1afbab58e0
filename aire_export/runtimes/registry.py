"""Runners by runtime name: what a target's ``runtimes`` (aire_export/targets.py) turn into.

    onnxruntime-cpu    the CPU provider (bf16 graphs run emulated: no bf16 CPU kernels)
    onnxruntime-cuda   the CUDA provider, TF32 off (the fp32 gate)
    tensorrt           an engine built from the graph into the work folder, then run

A runtime that is not installed raises RuntimeMissingError; one that refuses the graph
raises RuntimeBuildError. Validation decides what either means for the verdict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aire_export.errors import InputError
from aire_export.runtimes.base import Runner
from aire_export.runtimes.ort import OrtRunner, SessionLoader
from aire_export.runtimes.shapes import ShapeRange
from aire_export.runtimes.trt import TrtBuildOptions, TrtRunner, build_engine
from aire_export.targets import ORT_CPU, ORT_CUDA, TENSORRT

ENGINE_FILE = "model.engine"


@dataclass(frozen=True)
class RunnerRequest:
    """What a runtime needs to run one graph: the graph and its precision, a folder for what
    it builds (engines), the shape ranges and build options of engines, and a progress line."""

    graph: Path
    precision: str
    work: Path
    batch: ShapeRange
    length: ShapeRange
    trt: TrtBuildOptions = TrtBuildOptions()
    progress: Callable[[str], None] = lambda _: None


def _ort_cpu(request: RunnerRequest) -> Runner:
    return OrtRunner(SessionLoader(request.graph, "cpu", emulate_bf16=request.precision == "bf16"))


def _ort_cuda(request: RunnerRequest) -> Runner:
    return OrtRunner(SessionLoader(request.graph, "cuda", tf32=False))


def _tensorrt(request: RunnerRequest) -> Runner:
    request.progress("build the TensorRT engine")
    options = dataclasses.replace(
        request.trt, precision=request.precision, batch=request.batch, length=request.length
    )
    engine = request.work / ENGINE_FILE
    build_engine(request.graph, engine, graph_inputs(request.graph), options, log=request.progress)
    return TrtRunner(engine)


RUNTIMES: dict[str, tuple[str, Callable[[RunnerRequest], Runner]]] = {
    ORT_CPU: ("onnxruntime CPU", _ort_cpu),
    ORT_CUDA: ("onnxruntime CUDA", _ort_cuda),
    TENSORRT: ("TensorRT engine", _tensorrt),
}


def build_runner(runtime: str, request: RunnerRequest) -> Runner:
    """The runner of ``runtime`` for ``request`` (RuntimeMissingError, RuntimeBuildError)."""
    return RUNTIMES[runtime][1](request)


def not_run(runtime: str, reason: object) -> str:
    """The report line for a runtime that did not run."""
    return f"{RUNTIMES[runtime][0]} not run: {reason}"


def graph_inputs(path: Path) -> list[tuple[str, tuple[int | str, ...]]]:
    """(name, shape) of a graph's inputs, symbolic dims by name, read from the ONNX file."""
    graph = read_graph(path)
    initializers = {t.name for t in graph.initializer}
    return [_spec(v) for v in graph.input if v.name not in initializers]


def graph_outputs(path: Path) -> list[tuple[str, tuple[int | str, ...]]]:
    """(name, shape) of a graph's outputs."""
    return [_spec(v) for v in read_graph(path).output]


def _spec(value) -> tuple[str, tuple[int | str, ...]]:
    return value.name, tuple(d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim)


def read_graph(path: Path):
    """The GraphProto of an ONNX file; InputError (exit 2) for a file that is not one."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(path), load_external_data=False).graph
    except (DecodeError, OSError, ValueError, RuntimeError) as e:
        raise InputError(
            f"{path} is not a readable ONNX graph ({e.__class__.__name__}): export it again"
        ) from None
