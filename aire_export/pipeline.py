"""The whole job, as the paper's Algorithm 1 followed by deployment (DESIGN §2):

    load → modal view → score → select → shrink → lower → build → validate → report

``run_pipeline`` reads top to bottom in that order. Every stage is a library call; this module
only sequences them, stages the outputs in a temporary folder beside the destination and
renames it into place when complete (a failed run leaves the previous output, or nothing), and
turns gate failures into the documented exit codes. The input checkpoint is only read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from aire_export.checkpoints import load, save
from aire_export.errors import (
    EXIT_OK,
    EXIT_PARITY,
    EXIT_RUNTIME_MISSING,
    InputError,
    OutputError,
    RuntimeMissingError,
)
from aire_export.graphs import export
from aire_export.graphs.export import PRECISIONS, TARGETS
from aire_export.models import SSMNetwork
from aire_export.prune import prune
from aire_export.report import AccuracySummary, Report, Speedup, environment, write_report
from aire_export.runtimes.base import Runner
from aire_export.runtimes.bundle import BundleGraph, write_bundle
from aire_export.runtimes.ort import OrtRunner
from aire_export.runtimes.torch_runner import TorchRunner
from aire_export.runtimes.trt import ShapeRange, TrtBuildOptions, TrtRunner, build_engine
from aire_export.validate.accuracy import accuracy, predict
from aire_export.validate.inputs import (
    SequenceData,
    load_data,
    prepare_data,
    random_data,
    with_full_lengths,
)
from aire_export.validate.latency import measure_latency
from aire_export.validate.parity import (
    Tolerance,
    compare_outputs,
    default_tolerance,
    pruning_distortion,
)

DEFAULT_LENGTH = 1024
DEFAULT_BATCH = ShapeRange(1, 8, 32)


@dataclass(frozen=True)
class PipelineOptions:
    """Everything the one command can be told (CLI flags map one to one)."""

    ratio: float | None = None
    threshold: float | None = None
    max_drop: float | None = None  # percentage points, with data
    data: Path | None = None  # eval npz (x, y, lengths): accuracy, and parity inputs
    inputs: Path | None = None  # npz (x, lengths) used for parity instead of data/random
    method: str = "aire"
    eps: float = 0.0
    score_compat: str = "default"
    drop_empty_blocks: bool = False
    balance_channels: bool = True  # S4D: the same kept count in every channel (see ax.prune)
    seed: int = 0
    target: str = "onnx"
    precision: str = "fp32"
    scan: str = "auto"
    bundle: bool = False
    out: Path | None = None
    batch: ShapeRange = DEFAULT_BATCH
    length: ShapeRange | None = None  # default: the data's length, else 1024
    atol: float | None = None
    rtol: float | None = None
    fail_on_parity: bool = True
    parity_samples: int = 32
    latency: bool = True
    latency_runs: int = 20
    latency_budget_s: float = 20.0
    trt: TrtBuildOptions | None = None  # workspace, timing cache, compatibility flags
    command: str = ""

    def validate(self) -> None:
        chosen = [x is not None for x in (self.ratio, self.threshold, self.max_drop)]
        if sum(chosen) != 1:
            raise InputError("give exactly one of --ratio, --threshold or --max-drop")
        if self.ratio is not None and not 0 <= self.ratio < 1:
            raise InputError(f"--ratio must lie in [0, 1), got {self.ratio}")
        if self.threshold is not None and self.threshold < 0:
            raise InputError(f"--threshold must be ≥ 0, got {self.threshold}")
        if self.max_drop is not None and (self.data is None or self.max_drop < 0):
            raise InputError(
                "--max-drop needs --data eval.npz (with labels y) and a budget ≥ 0 points"
            )
        if self.target not in TARGETS:
            raise InputError(f"--target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.precision not in PRECISIONS:
            raise InputError(
                f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )


@dataclass
class PipelineResult:
    out: Path
    report: Report
    exit_code: int


@dataclass
class Validation:
    """What validate() found; becomes part of the report."""

    parity: list = field(default_factory=list)
    latency: list = field(default_factory=list)
    speedups: list[Speedup] = field(default_factory=list)
    distortion: object = None
    accuracy: AccuracySummary | None = None
    missing: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def run_pipeline(
    model_path: str | Path, options: PipelineOptions, progress: Progress = _quiet
) -> PipelineResult:
    """Prune, shrink, export, build, validate and report ``model_path`` (DESIGN §1)."""
    options.validate()
    model_path = Path(model_path)
    out = (
        Path(options.out)
        if options.out
        else model_path.with_name(model_path.name.rsplit(".", 1)[0] + ".aire")
    )
    _check_destination(out)

    progress("load")
    model = load(model_path)
    data = (
        load_data(options.data, model, need_labels=options.max_drop is not None)
        if options.data
        else None
    )
    inputs = load_data(options.inputs, model) if options.inputs else None

    progress("score and select")
    ratio = options.ratio
    if options.max_drop is not None:
        from aire_export.sweep import search_max_drop  # accuracy-aware pruning (the paper's elbow)

        ratio = search_max_drop(
            model,
            data,
            options.max_drop,
            method=options.method,
            eps=options.eps,
            score_compat=options.score_compat,
            seed=options.seed,
            balance_channels=options.balance_channels,
            progress=progress,
        ).ratio
    pruned, plan = prune(
        model,
        ratio,
        threshold=options.threshold,
        method=options.method,
        eps=options.eps,
        score_compat=options.score_compat,
        seed=options.seed,
        drop_empty_blocks=options.drop_empty_blocks,
        balance_channels=options.balance_channels,
    )

    stage = _staging_folder(out)
    try:
        progress("shrink: write pruned.pt and plan.json")
        save(pruned, stage / "pruned.pt", meta={"source": str(model_path), "plan": "plan.json"})
        plan.save(stage / "plan.json")

        progress("lower to ONNX")
        lengths_input = any(d is not None and d.lengths is not None for d in (data, inputs))
        exported = export(
            pruned,
            stage,
            target=options.target,
            scan=options.scan,
            precision=options.precision,
            lengths_input=lengths_input,
        )
        outcome = validate(
            model,
            pruned,
            exported,
            options,
            data=data,
            inputs=inputs,
            work=stage,
            progress=progress,
        )
        report = _report(model_path, model, pruned, plan, exported, options, outcome)
        if options.bundle or options.target in ("trt", "jetson"):
            progress("write the edge bundle")
            _bundle(pruned, exported, options, outcome, stage, model_path, plan)
        progress("write the report")
        write_report(report, stage)
        _commit(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return PipelineResult(out=out, report=report, exit_code=report.exit_code)


# ---- validate ------------------------------------------------------------------------------


def validate(
    original: SSMNetwork,
    pruned: SSMNetwork,
    graph,
    options: PipelineOptions | None = None,
    *,
    data: SequenceData | None = None,
    inputs: SequenceData | np.ndarray | None = None,
    work: Path | None = None,
    progress: Progress = _quiet,
) -> Validation:
    """Pruning distortion, lowering fidelity per runtime, accuracy, latency (DESIGN §5).

    ``graph`` is the pruned model's sequence graph: an ``ExportResult``, an ``ExportedGraph`` or
    the path of ``model.onnx``. ``inputs`` (an array ``x`` or a SequenceData) replaces the parity
    inputs that would otherwise come from ``data`` or be drawn at random.
    """
    options = options or PipelineOptions(ratio=0.0)
    if work is None:
        with tempfile.TemporaryDirectory(prefix="aire-validate-") as tmp:
            return validate(
                original,
                pruned,
                graph,
                options,
                data=data,
                inputs=inputs,
                work=Path(tmp),
                progress=progress,
            )
    graph_path = Path(getattr(getattr(graph, "sequence", graph), "path", graph))
    if not graph_path.is_file():
        raise InputError(f"no such graph: {graph_path}")
    result = Validation()
    default = data.length if data else DEFAULT_LENGTH
    length = options.length or ShapeRange(1, default, default)
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

    progress("validate: float64 reference")
    reference = TorchRunner(pruned, dtype=torch.float64).run(samples.feeds())
    original_out = TorchRunner(original, dtype=torch.float64).run(samples.feeds())
    result.distortion = pruning_distortion(original_out["y"], reference["y"])

    if data is not None and data.y is not None:
        progress("validate: accuracy of original and pruned")
        acc_o = accuracy(predict(TorchRunner(original), data), data.y)
        acc_p = accuracy(predict(TorchRunner(pruned), data), data.y)
        result.accuracy = AccuracySummary(
            data=data.source, samples=data.count, original=acc_o.accuracy, pruned=acc_p.accuracy
        )

    gate = default_tolerance(options.precision, samples.length)
    gate = Tolerance(
        options.atol if options.atol is not None else gate.atol,
        options.rtol if options.rtol is not None else gate.rtol,
    )
    runners = _runners(graph_path, options, work, result, progress)
    try:
        for runner in runners:
            progress(f"validate: parity of {runner.name}")
            actual = runner.run(samples.feeds())
            result.parity.append(
                compare_outputs(runner.name, actual, reference, gate, precision=options.precision)
            )
        if options.latency:
            _latency(original, pruned, runners, options, samples, length, work, result, progress)
    finally:
        for runner in runners:
            runner.close()
    return result


def graph_inputs(path: Path) -> list[tuple[str, tuple[int | str, ...]]]:
    """(name, shape) of a graph's inputs, symbolic dims by name, read from the ONNX file."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    return [
        (v.name, tuple(d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim))
        for v in graph.input
        if v.name not in initializers
    ]


def _parity_inputs(
    model: SSMNetwork, options: PipelineOptions, data: SequenceData | None, length: ShapeRange
) -> SequenceData:
    if options.inputs is not None:
        return load_data(options.inputs, model)
    if data is not None:
        return data.head(options.parity_samples)
    return random_data(model, options.batch.opt, length.opt, seed=options.seed)


def _runners(
    graph: Path, options: PipelineOptions, work: Path, result: Validation, progress: Progress
) -> list[Runner]:
    """onnxruntime CPU always (the graph's own fidelity), plus the target's runtime."""
    emulate = options.precision == "bf16"
    runners: list[Runner] = [OrtRunner(graph, "cpu", emulate_bf16=emulate)]
    if emulate:
        result.unverified.append(
            "bf16 on the CPU: onnxruntime has no bf16 kernels, so parity ran with emulated bf16 "
            "rounding (float32 compute) and the CPU latency of the bf16 graph was not measured"
        )
    if options.target in ("ort-cuda", "trt"):
        try:
            runners.append(OrtRunner(graph, "cuda", tf32=False))
        except RuntimeMissingError as e:
            if options.target == "ort-cuda":
                result.missing.append(str(e))
            else:
                result.unverified.append(f"onnxruntime CUDA not run: {e}")
    if options.target == "trt":
        progress("build the TensorRT engine")
        base = options.trt or TrtBuildOptions()
        trt_options = dataclasses.replace(
            base,
            precision=options.precision,
            batch=options.batch,
            length=options.length or base.length,
        )
        try:
            build_engine(
                graph, work / "model.engine", graph_inputs(graph), trt_options, log=progress
            )
            runners.append(TrtRunner(work / "model.engine"))
        except RuntimeMissingError as e:
            result.missing.append(str(e))
            result.unverified.append(
                "TensorRT engine not built or run: TensorRT is not installed here"
            )
    if options.target == "jetson":
        result.unverified.append(
            "edge GPU (Jetson) not run: copy bundle/ to the device and run build.sh"
        )
    return runners


def _latency(original, pruned, runners, options, samples, length, work, result, progress) -> None:
    """Original vs pruned, per runtime, measured side by side (interleaved)."""
    progress("profile: export the original for side-by-side timing")
    baseline_dir = Path(tempfile.mkdtemp(prefix="baseline-", dir=work))
    try:
        baseline = export(
            original,
            baseline_dir,
            target=options.target,
            scan=options.scan,
            precision=options.precision,
            lengths_input=samples.lengths is not None,
            step=False,
        )
        timed = random_data(pruned, options.batch.opt, length.opt, seed=options.seed + 1)
        if samples.lengths is not None:  # the graphs take lengths: time full-length sequences
            timed = with_full_lengths(timed)
        feeds = timed.feeds()
        candidates = {}
        pairs = []
        device = "cuda" if torch.cuda.is_available() and options.target != "onnx" else "cpu"
        eager = (TorchRunner(original, device), TorchRunner(pruned, device))
        for label, (o, p) in [(f"pytorch-eager-{device}", eager)]:
            candidates[f"{label} original"] = (o.bind(feeds), o.device)
            candidates[f"{label} pruned"] = (p.bind(feeds), p.device)
            pairs.append(label)
        for runner in runners:
            if isinstance(runner, OrtRunner) and not runner.emulated:
                base = OrtRunner(
                    baseline.sequence.path, "cuda" if runner.device == "cuda" else "cpu"
                )
                candidates[f"{runner.name} original"] = (base.bind(feeds), base.device)
                candidates[f"{runner.name} pruned"] = (runner.bind(feeds), runner.device)
                pairs.append(runner.name)
        results = measure_latency(
            candidates,
            batch=timed.count,
            length=timed.length,
            runs=options.latency_runs,
            budget_s=options.latency_budget_s,
            progress=progress,
        )
        result.latency = list(results.values())
        for label in pairs:
            o, p = results[f"{label} original"], results[f"{label} pruned"]
            result.speedups.append(
                Speedup(runtime=label, original=o.name, pruned=p.name, ratio=o.p50_ms / p.p50_ms)
            )
    finally:
        shutil.rmtree(baseline_dir, ignore_errors=True)


# ---- report and files ----------------------------------------------------------------------


def _report(model_path, model, pruned, plan, exported, options, outcome: Validation) -> Report:
    failed = [f"parity failed for {p.runner}" for p in outcome.parity if not p.passed]
    if failed and options.fail_on_parity:
        code = EXIT_PARITY
    elif outcome.missing:
        code = EXIT_RUNTIME_MISSING
    else:
        code = EXIT_OK
    reasons = failed + outcome.missing
    plan_json = plan.to_json()
    warnings = list(outcome.warnings) + list(plan_json.get("warnings", []))
    return Report(
        command=options.command,
        verdict_passed=code == EXIT_OK,
        exit_code=code,
        reasons=reasons,
        model={
            "path": str(model_path),
            "sha256": file_sha256(model_path),
            "arch": model.arch,
            "states_before": sum(layer["states_before"] for layer in plan_json["layers"]),
            "states_after": sum(layer["states_after"] for layer in plan_json["layers"]),
            # stored slots after the shrink: above states_after when S4D channels are padded
            "physical_states_after": sum(s.P for s in pruned.modal_systems()),
            "parameters_before": sum(p.numel() for p in model.parameters()),
            "parameters_after": sum(p.numel() for p in pruned.parameters()),
        },
        plan=plan_json,
        export=_export_summary(exported, options),
        distortion=outcome.distortion,
        accuracy=outcome.accuracy,
        parity=outcome.parity,
        latency=outcome.latency,
        speedups=outcome.speedups,
        environment=environment(),
        warnings=warnings,
        unverified=outcome.unverified,
    )


def _export_summary(exported, options: PipelineOptions) -> dict:
    graphs = {}
    for graph in (exported.sequence, exported.step):
        if graph is not None:
            graphs[graph.path.name] = {
                "mode": graph.mode,
                "scan": graph.scan,
                "precision": graph.precision,
                "opset": graph.opset,
                "nodes": graph.node_count,
                "max_length": graph.max_length,
            }
    summary = {
        "target": options.target,
        "scan": exported.sequence.scan,
        "precision": options.precision,
        "opset": exported.sequence.opset,
        "graphs": graphs,
    }
    if exported.step is None:
        summary["step_skipped"] = exported.step_skipped
    if exported.check is not None:
        summary["tensorrt_check"] = {
            "ok": exported.check.ok,
            "problems": [str(p) for p in exported.check.problems],
        }
    return summary


def _bundle(
    pruned,
    exported,
    options: PipelineOptions,
    outcome: Validation,
    stage: Path,
    model_path: Path,
    plan,
) -> None:
    """bundle/: fp32 and fp16 graphs, inputs, float64 reference outputs, build.sh, manifest."""
    folder = stage / "bundle"
    fp16_dir = Path(tempfile.mkdtemp(prefix="fp16-", dir=stage))
    try:
        lengths_input = any(s.name == "lengths" for s in exported.sequence.inputs)
        fp16 = export(
            pruned,
            fp16_dir,
            target="trt",
            scan=exported.sequence.scan,
            precision="fp16",
            lengths_input=lengths_input,
            step=False,
        )
        length = options.length or ShapeRange(1, DEFAULT_LENGTH, DEFAULT_LENGTH)
        samples = random_data(pruned, options.batch.opt, length.opt, seed=options.seed)
        feeds = samples.feeds()
        if lengths_input:
            feeds["lengths"] = np.full(samples.count, samples.length, dtype=np.int64)
        reference = TorchRunner(pruned, dtype=torch.float64).run(feeds)
        inputs = tuple((s.name, s.shape) for s in exported.sequence.inputs)
        graphs = [
            BundleGraph(
                exported.sequence.path, "sequence", "fp32", inputs, {"scan": exported.sequence.scan}
            ),
            BundleGraph(
                fp16.sequence.path, "sequence-fp16", "fp16", inputs, {"scan": fp16.sequence.scan}
            ),
        ]
        if exported.step is not None:
            graphs.append(
                BundleGraph(
                    exported.step.path,
                    "step",
                    exported.step.precision,
                    tuple((s.name, s.shape) for s in exported.step.inputs),
                    {},
                )
            )
        tolerances = {p: default_tolerance(p, samples.length) for p in ("fp32", "fp16")}
        plan_json = plan.to_json()
        write_bundle(
            folder,
            graphs,
            feeds,
            reference,
            tolerances,
            batch=options.batch,
            length=length,
            manifest={
                "source": {"path": str(model_path), "sha256": file_sha256(model_path)},
                "plan": {
                    k: plan_json.get(k)
                    for k in ("method", "ratio_requested", "ratio_achieved", "threshold", "eps")
                }
                | {"kept_per_layer": [layer["states_after"] for layer in plan_json["layers"]]},
                "opset": exported.sequence.opset,
            },
            default_precision="fp16" if options.precision != "fp32" else "fp32",
        )
    finally:
        shutil.rmtree(fp16_dir, ignore_errors=True)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_destination(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is a file: choose another --out")
    if (
        out.is_dir()
        and any(out.iterdir())
        and not (out / "report.json").exists()
        and not (out / "plan.json").exists()
    ):
        raise OutputError(
            f"{out} exists and is not an aire-export output folder: choose another --out"
        )
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"cannot write {out}: folder {parent} does not exist")


def _staging_folder(out: Path) -> Path:
    try:
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise OutputError(f"cannot write {out}: {e.strerror}") from None


def _commit(stage: Path, out: Path) -> None:
    """Move the finished staging folder into place, replacing an earlier aire-export output."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{stage.name}")
        out.rename(old)
    stage.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["PipelineOptions", "PipelineResult", "Validation", "run_pipeline", "validate"]
