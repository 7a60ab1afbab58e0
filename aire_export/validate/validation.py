"""``ax.validate``: pruning distortion, lowering fidelity per runtime, accuracy, latency (DESIGN §5).

    check = validate(original, pruned, exported, inputs=x)        # a Validation

Stage 7 (build) and stage 8 (validate) of the pipeline: :func:`build_runners` turns the
target's runtimes (aire_export/targets.py) into runners, noting what is missing or refused;
:func:`validate` measures. The verdict (exit code) is the report's business
(``aire_export.report.verdict``), so ``run`` and ``validate`` share it.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from aire_export.data import SequenceData, prepare_data, random_data, with_full_lengths
from aire_export.errors import InputError, RuntimeBuildError, RuntimeMissingError
from aire_export.graphs.export import STEP_FILE, check_lowering
from aire_export.models import SSMNetwork, family_of
from aire_export.runtimes.base import Runner
from aire_export.runtimes.ort import OrtRunner, SessionLoader
from aire_export.runtimes.registry import (
    RunnerRequest,
    build_runner,
    graph_inputs,
    graph_outputs,
    not_run,
)
from aire_export.runtimes.shapes import ShapeRange
from aire_export.runtimes.torch_runner import TorchRunner
from aire_export.runtimes.trt import TrtBuildOptions
from aire_export.targets import DEFAULT_TARGET, ORT_CPU, target_named
from aire_export.tolerance import Tolerance
from aire_export.validate.accuracy import AccuracySummary, accuracy, predict
from aire_export.validate.latency import LatencyResult, Speedup, noise_warnings
from aire_export.validate.parity import (
    DistortionResult,
    ParityResult,
    compare_outputs,
    pruning_distortion,
)
from aire_export.validate.speed import side_by_side

DEFAULT_LENGTH = 1024
DEFAULT_MAX_DROP = 1.0  # accuracy points a pruned model may lose before it is not fit to ship
DEFAULT_BATCH = ShapeRange(1, 8, 32)
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class ValidateOptions:
    """How to validate.

    target: where the graph will run (its runtimes are built and checked). precision: the
    graph's precision (picks the default gate). scan: the lowering of the original model's
    graph for side-by-side timing (the pruned graph's own lowering is whatever it was
    exported with). batch, length: shape ranges (TensorRT profile); parity inputs and timing
    use ``opt``, length defaults to the data's length, else 1024. atol, rtol: the lowering
    gate (default: the family's tolerance for the precision and length). max_drop: the
    accuracy gate, the largest drop in points the pruned model may show on labelled data
    (None: accuracy is reported, not gated). parity_samples: rows of the eval set used for
    parity. latency: time original and pruned side by side, ``latency_runs`` timed runs each
    within ``latency_budget_s``.
    """

    target: str = DEFAULT_TARGET
    precision: str = "fp32"
    scan: str = "auto"
    batch: ShapeRange = DEFAULT_BATCH
    length: ShapeRange | None = None
    atol: float | None = None
    rtol: float | None = None
    max_drop: float | None = None
    parity_samples: int = 32
    seed: int = 0
    latency: bool = True
    latency_runs: int = 20
    latency_budget_s: float = 20.0
    trt: TrtBuildOptions = TrtBuildOptions()

    def check(self) -> ValidateOptions:
        """InputError for a value no validation can use; returns the options."""
        check_lowering(self.target, self.scan, self.precision)
        for name in ("atol", "rtol", "max_drop"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                flag = name.replace("_", "-")
                raise InputError(f"--{flag} must be a finite number ≥ 0, got {value}")
        if self.latency_runs < 1:
            raise InputError(f"--runs must be ≥ 1, got {self.latency_runs}")
        if self.parity_samples < 1:
            raise InputError(f"parity_samples must be ≥ 1, got {self.parity_samples}")
        return self

    def lengths_for(self, data: SequenceData | None) -> ShapeRange:
        default = data.length if data is not None else DEFAULT_LENGTH
        return self.length or ShapeRange(1, default, default)


def accuracy_budget(max_drop: float | None, gate: bool = True) -> float | None:
    """The accuracy gate: ``max_drop`` points, DEFAULT_MAX_DROP when not given, None (report
    only) when the gate is off."""
    if not gate:
        return None
    return DEFAULT_MAX_DROP if max_drop is None else max_drop


@dataclass
class Runtimes:
    """Stage 7: the runners a target validates on, and what could not be run."""

    runners: list[Runner]
    missing: list[str] = field(default_factory=list)  # required and not installed: exit 4
    build_failures: list[str] = field(default_factory=list)  # refused the graph: exit 6
    unverified: list[str] = field(default_factory=list)

    def close(self) -> None:
        for runner in self.runners:
            runner.close()


@dataclass
class Validation:
    """What validation found; the report's verdict reads ``parity``, ``missing`` and
    ``build_failures``."""

    parity: list[ParityResult] = field(default_factory=list)
    latency: list[LatencyResult] = field(default_factory=list)
    speedups: list[Speedup] = field(default_factory=list)
    distortion: DistortionResult | None = None
    accuracy: AccuracySummary | None = None
    missing: list[str] = field(default_factory=list)
    build_failures: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def build_runners(
    graph: Path,
    options: ValidateOptions,
    work: Path,
    progress: Progress = _quiet,
) -> Runtimes:
    """onnxruntime CPU always (the graph's own fidelity), then the target's runtimes."""
    target = target_named(options.target)
    request = RunnerRequest(
        graph=graph,
        precision=options.precision,
        work=work,
        batch=options.batch,
        length=options.length or options.trt.length,
        trt=options.trt,
        progress=progress,
    )
    runtimes = Runtimes([build_runner(ORT_CPU, request)])
    if options.precision == "bf16":
        runtimes.unverified.append(
            "bf16 on the CPU: onnxruntime has no bf16 kernels, so parity ran with emulated bf16 "
            "rounding (float32 compute) and the CPU latency of the bf16 graph was not measured"
        )
    for use in target.runtimes:
        try:
            runtimes.runners.append(build_runner(use.runtime, request))
        except RuntimeMissingError as e:
            runtimes.unverified.append(not_run(use.runtime, e))
            if use.required:
                runtimes.missing.append(str(e))
        except RuntimeBuildError as e:
            runtimes.unverified.append(not_run(use.runtime, e))
            runtimes.build_failures.append(str(e))
    if target.not_run_here:
        runtimes.unverified.append(target.not_run_here)
    return runtimes


def validate(
    original: SSMNetwork,
    pruned: SSMNetwork,
    graph,
    options: ValidateOptions | None = None,
    *,
    data: SequenceData | None = None,
    inputs: SequenceData | np.ndarray | None = None,
    step_graph: Path | None = None,
    runtimes: Runtimes | None = None,
    work: Path | None = None,
    progress: Progress = _quiet,
) -> Validation:
    """Pruning distortion, lowering fidelity per graph and runtime, accuracy, latency (DESIGN §5).

    ``graph`` is the pruned model's export: an ``ExportResult`` (its step graph is checked too),
    an ``ExportedGraph`` or the path of ``model.onnx``; ``step_graph`` the path of
    ``model.step.onnx`` when ``graph`` is a path. ``inputs`` (an array ``x`` or a SequenceData)
    replaces the parity inputs that would otherwise come from ``data`` or be drawn at random.
    ``runtimes``: runners built already (stage 7); by default they are built here.
    """
    options = (options or ValidateOptions()).check()
    if work is None:
        with tempfile.TemporaryDirectory(prefix="aire-validate-") as tmp:
            return validate(
                original,
                pruned,
                graph,
                options,
                data=data,
                inputs=inputs,
                step_graph=step_graph,
                runtimes=runtimes,
                work=Path(tmp),
                progress=progress,
            )
    graph_path = Path(getattr(getattr(graph, "sequence", graph), "path", graph))
    if not graph_path.is_file():
        raise InputError(f"no such graph: {graph_path}")
    if step_graph is None and getattr(graph, "step", None) is not None:
        step_graph = graph.step.path
    check_graph_io(graph_path, pruned)
    length = options.lengths_for(data)
    if isinstance(inputs, np.ndarray):
        inputs = SequenceData(x=inputs, lengths=None, y=None, source="inputs")
    if inputs is not None:
        inputs = prepare_data(inputs, original)
    if data is not None:
        data = prepare_data(data, original)
    samples = inputs if inputs is not None else _parity_inputs(pruned, options, data, length)
    if any(name == "lengths" for name, _ in graph_inputs(graph_path)):
        samples = with_full_lengths(samples)
    elif samples.lengths is not None:
        raise InputError(
            f"{samples.source} has lengths but {graph_path.name} takes none: export with "
            "lengths_input=True (the CLI does when --data or --inputs has lengths)"
        )

    result = Validation()
    progress("validate: float64 reference")
    reference = TorchRunner(pruned, dtype=torch.float64).run(samples.feeds())
    original_out = TorchRunner(original, dtype=torch.float64).run(samples.feeds())
    result.distortion = pruning_distortion(original_out["y"], reference["y"])

    if data is not None and data.y is not None:
        progress("validate: accuracy of original and pruned")
        acc_o = accuracy(predict(TorchRunner(original), data), data.y)
        acc_p = accuracy(predict(TorchRunner(pruned), data), data.y)
        result.accuracy = AccuracySummary(
            data=data.source,
            samples=data.count,
            original=acc_o.accuracy,
            pruned=acc_p.accuracy,
            budget_pp=options.max_drop,
        )
    else:
        result.unverified.append(
            "accuracy not checked: give --data with an eval set that has labels y"
            + (f" ({data.source} has none)" if data is not None else "")
        )

    gate = parity_gate(pruned, options, samples.length)
    built_here = runtimes is None
    if runtimes is None:
        runtimes = build_runners(graph_path, options, work, progress)
    result.missing += runtimes.missing
    result.build_failures += runtimes.build_failures
    result.unverified += runtimes.unverified
    try:
        for runner in runtimes.runners:
            progress(f"validate: parity of {runner.name}")
            actual = runner.run(samples.feeds())
            result.parity.append(
                compare_outputs(
                    runner.name,
                    actual,
                    reference,
                    gate,
                    precision=options.precision,
                    graph=graph_path.name,
                    inputs=samples.source,
                    length=samples.length,
                )
            )
        if step_graph is not None:
            progress("validate: the step graph, step by step")
            result.parity.append(step_parity(Path(step_graph), pruned, samples, options))
        if options.latency:
            result.latency, result.speedups = side_by_side(
                original,
                pruned,
                runtimes.runners,
                target=options.target,
                scan=options.scan,
                precision=options.precision,
                batch=options.batch.opt,
                length=length.opt,
                lengths_input=samples.lengths is not None,
                seed=options.seed,
                runs=options.latency_runs,
                budget_s=options.latency_budget_s,
                work=work,
                progress=progress,
            )
            result.warnings += noise_warnings(result.latency)
    finally:
        if built_here:
            runtimes.close()
    return result


def check_graph_io(graph: Path, model: SSMNetwork) -> None:
    """InputError unless ``graph`` takes the model's inputs and gives its outputs (a graph of
    another model is a bad input, not a parity failure)."""
    cfg = model.config
    inputs, outputs = dict(graph_inputs(graph)), dict(graph_outputs(graph))
    want_x = ("batch", "length") if cfg.input_kind == "tokens" else ("batch", "length", cfg.d_input)
    problems = []
    if inputs.get("x") != want_x:
        problems.append(f"takes x {inputs.get('x')}, the model {want_x}")
    want_y = ("batch", "length", cfg.d_output) if cfg.per_token else ("batch", cfg.d_output)
    if outputs.get("y") != want_y:
        problems.append(f"gives y {outputs.get('y')}, the model {want_y}")
    if problems:
        raise InputError(
            f"{graph} is not a graph of this model: it " + "; ".join(problems) + ": export the "
            "model again (aire-export export MODEL -o FOLDER)"
        )


STEP_PARITY_STEPS = 4096  # streamed steps at most (one session run per step or frame)


def check_streamable(
    frame: int, options: ValidateOptions, data: SequenceData | None, inputs: SequenceData | None
) -> None:
    """InputError unless the parity sequences (``inputs``, else ``data``, else random ones of
    --length) hold one whole frame of ``frame`` steps: checked before a job prunes."""
    if frame > 1:
        source = inputs if inputs is not None else data
        if source is None:
            _streamable(options.lengths_for(None).opt, None, frame, STEP_FILE, None)
        else:
            _streamable(source.length, source.lengths, frame, STEP_FILE, source.source)


def _streamable(
    length: int, lengths: np.ndarray | None, frame: int, graph: str, source: str | None
) -> int:
    """The steps the step parity streams (before rounding down to whole frames): the
    parity length, up to the shortest valid length, at most STEP_PARITY_STEPS; ``source``
    names the sequences (None: random ones of --length)."""
    available = min(length, STEP_PARITY_STEPS)
    if lengths is not None:
        available = min(available, int(lengths.min()))
    if available < frame:
        remedy = (
            f"give --length ≥ {frame}"
            if source is None
            else f"give sequences at least {frame} steps long (not {source})"
        )
        raise InputError(
            f"{graph} takes frames of {frame} steps but the parity sequences have "
            f"{available}: use --frame ≤ {available}, or {remedy}"
        )
    return available


def step_parity(
    graph: Path, pruned: SSMNetwork, samples: SequenceData, options: ValidateOptions
) -> ParityResult:
    """Lowering fidelity of the streaming graph: ``model.step.onnx`` driven from the zero state
    over the parity sequences, one call per step or per frame of K steps (its ``x`` says
    which), against the float64 model's output after every step (:func:`stepwise_reference`).

    Streamed: the parity length (up to the shortest valid length, at most STEP_PARITY_STEPS)
    rounded down to whole frames, since a frame graph takes whole frames only; sequences
    shorter than one frame are a bad input (give --length ≥ K)."""
    runner = OrtRunner(SessionLoader(graph, "cpu", emulate_bf16=options.precision == "bf16"))
    frame = frame_of(runner, pruned)
    random = samples.source.startswith("random")
    available = _streamable(
        samples.length, samples.lengths, frame, graph.name, None if random else samples.source
    )
    steps = available - available % frame
    x = samples.x[:, :steps]
    return compare_outputs(
        runner.name,
        {"y": stream(runner, x, frame)},
        {"y": stepwise_reference(pruned, x)},
        parity_gate(pruned, options, steps),
        precision=options.precision,
        graph=graph.name,
        inputs=samples.source,
        length=steps,
    )


def frame_of(runner: OrtRunner, model: SSMNetwork) -> int:
    """Steps per call of a step graph: 1 when its x is one step ((batch,) token ids or
    (batch, d_input)), else the length K of its time axis ((batch, K[, d_input]))."""
    shape = runner.input_shapes["x"]
    one_step = 1 if model.config.input_kind == "tokens" else 2
    return 1 if len(shape) == one_step else int(shape[1])


def stream(runner: OrtRunner, x: np.ndarray, frame: int = 1) -> np.ndarray:
    """Run a step graph over x (B, T[, d]) from the zero state, ``frame`` steps per call (T a
    multiple of it), feeding every ``name_out`` back as ``name``; ``y`` after every step
    (B, T, d_output)."""
    batch = x.shape[0]
    feeds = {
        name: np.zeros([batch if d == "batch" else d for d in shape], np.float32)
        for name, shape in runner.input_shapes.items()
        if name != "x"
    }
    ys = []
    for t in range(0, x.shape[1], frame):
        outputs = runner.run({**feeds, "x": x[:, t] if frame == 1 else x[:, t : t + frame]})
        feeds = {name: outputs[f"{name}_out"] for name in feeds}
        ys.append(outputs["y"][:, None] if frame == 1 else outputs["y"])
    return np.concatenate(ys, 1)


def stepwise_reference(model: SSMNetwork, x: np.ndarray) -> np.ndarray:
    """The float64 model's output after every step of x (B, T[, d]), (B, T, d_output): what a
    step graph streamed over x gives. A classifier's is the head of its pooling so far
    (mean: the running mean of the top features; last: the current ones)."""
    runner = TorchRunner(model, dtype=torch.float64)
    if model.config.per_token:
        return runner.run({"x": x})["y"]
    inputs = torch.from_numpy(np.ascontiguousarray(x))
    net = runner.model
    with torch.inference_mode():
        h = net.features(inputs.double() if inputs.is_floating_point() else inputs)
        if net.config.pooling != "last":
            h = h.cumsum(1) / torch.arange(1, h.shape[1] + 1, dtype=h.dtype)[:, None]
        return net.head(h).numpy()


def parity_gate(model: SSMNetwork, options: ValidateOptions, length: int) -> Tolerance:
    """The family's gate for the precision and length, with the user's atol/rtol over it."""
    default = family_of(model).tolerance(options.precision, length)
    return Tolerance(
        options.atol if options.atol is not None else default.atol,
        options.rtol if options.rtol is not None else default.rtol,
    )


def _parity_inputs(
    model: SSMNetwork, options: ValidateOptions, data: SequenceData | None, length: ShapeRange
) -> SequenceData:
    if data is not None:
        return data.head(options.parity_samples)
    return random_data(model, options.batch.opt, length.opt, seed=options.seed)
