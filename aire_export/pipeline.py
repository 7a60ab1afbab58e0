"""The whole job, as the paper's Algorithm 1 followed by deployment (DESIGN §2):

    load → modal view → score → select → shrink [→ fine-tune] → lower → build → validate → report

``run_pipeline`` reads top to bottom in that order; every stage is a library call on typed
values. The outputs are built in a staging folder beside the destination and renamed into
place when complete (a failed run leaves the previous output, or nothing); the input
checkpoint is only read. The exit code is the report's verdict.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from aire_export.checkpoints import load, save
from aire_export.data import SequenceData, load_data
from aire_export.errors import InputError
from aire_export.files import REPORT_NAME, check_destination, commit, file_sha256, staged_folder
from aire_export.finetune import FinetuneOptions, FinetuneResult, finetune
from aire_export.graphs.export import SEQUENCE_FILE, STEP_FILE
from aire_export.lower import check_frame, export
from aire_export.models import SSMNetwork, family_of, modal_systems, parameter_count
from aire_export.prune import (
    PLAN_NAME,
    PruneOptions,
    PrunePlan,
    choose_units,
    modal_view,
    plan_pruning,
    score_layers,
    shrink_selected,
    unit_views,
)
from aire_export.report import ModelRecord, Report, environment, verdict, write_report
from aire_export.runtimes.bundle import BUNDLE_NAME, bundle_model
from aire_export.sweep import MaxDropResult, search_max_drop
from aire_export.targets import target_named
from aire_export.validate.budget import LatencyBudgetResult, search_latency_budget
from aire_export.validate.validation import (
    ValidateOptions,
    accuracy_budget,
    build_runners,
    check_streamable,
    validate,
)

PRUNED_NAME = "pruned.pt"
FINETUNE_SELECTION_NOTE = (
    "fine-tuning kept its best epoch on {data}, so the pruned accuracy measured on that set is "
    "optimistic by the selection: measure it on held-out data with `aire-export validate`"
)
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class PipelineOptions:
    """Everything the one command can be told, by stage.

    prune: how to prune: a ratio or a threshold; or neither, and ``max_drop``: the largest
        ratio whose accuracy drop on ``data`` stays within ``max_drop`` percentage points; or
        neither, and ``latency_budget``: the least pruning whose graph meets that many
        milliseconds on the target's runtime (validate/budget.py; then ``max_drop`` gates it).
    max_drop: also the accuracy gate (default DEFAULT_MAX_DROP points when ``data`` has
        labels): a pruned model that loses more is not fit to ship (exit 7);
        ``accuracy_gate=False`` reports accuracy without gating it.
    validate: target, precision and lowering of the graphs, and how they are validated.
    data: eval set (x, y, lengths) for accuracy and parity inputs; inputs: parity inputs
        (x, lengths) instead; calib: calibration sequences (x) that selective layers (Mamba)
        are scored on. bundle: write bundle/ even when the target does not.
    frame: steps per call of the step graph (``--frame K``; graphs/step.py).
    finetune: labelled training sequences: fine-tune the pruned model on them, keeping the
        best epoch on ``data`` (aire_export/finetune.py; ``finetuning`` says how).
    fail_on_parity: a failed parity gate exits 3 (the report is written either way).
    out: the output folder; force: replace it even when it holds files aire-export did not
        write there (an input inside it is refused all the same).
    """

    prune: PruneOptions = field(default_factory=PruneOptions)
    validate: ValidateOptions = field(default_factory=ValidateOptions)
    max_drop: float | None = None
    latency_budget: float | None = None
    accuracy_gate: bool = True
    data: Path | None = None
    calib: Path | None = None
    inputs: Path | None = None
    finetune: Path | None = None
    finetuning: FinetuneOptions = field(default_factory=FinetuneOptions)
    bundle: bool = False
    frame: int = 1
    fail_on_parity: bool = True
    out: Path | None = None
    force: bool = False
    command: str = ""

    def check(self) -> PipelineOptions:
        """InputError for options that contradict each other or a stage's own checks."""
        given = sum(x is not None for x in (self.prune.ratio, self.prune.threshold))
        if given > 1 or (given == 0 and self.max_drop is None and self.latency_budget is None):
            raise InputError(
                "give exactly one of --ratio or --threshold, or --max-drop alone to prune as "
                "much as the accuracy budget allows, or --latency-budget to prune as little as "
                "the latency budget allows"
            )
        if given and self.latency_budget is not None:
            raise InputError(
                "--latency-budget chooses the ratio: leave out --ratio and --threshold"
            )
        if self.max_drop is not None and (self.data is None or not 0 <= self.max_drop < 1e308):
            raise InputError(
                "--max-drop is an accuracy budget: it needs --data eval.npz (with labels y) and "
                "a number of points ≥ 0"
            )
        if self.finetune is not None and self.data is None:
            raise InputError(
                "--finetune keeps the best epoch on the eval set: give --data eval.npz (with "
                "labels y) too"
            )
        (self.prune if given else self.prune.with_ratio(0.0)).check()
        self.validate.check()
        if self.finetune is not None:
            self.finetuning.check()
        return self

    @property
    def searches_ratio(self) -> bool:
        """No ratio, threshold or latency budget: the largest ratio within ``max_drop`` is
        searched for."""
        return (
            self.prune.ratio is None
            and self.prune.threshold is None
            and self.latency_budget is None
        )

    def destination(self, model_path: Path) -> Path:
        """``--out``, or the model's path without its suffix plus ``.aire``."""
        return self.out or model_path.with_name(model_path.name.rsplit(".", 1)[0] + ".aire")


@dataclass
class PipelineResult:
    out: Path
    report: Report
    exit_code: int


def run_pipeline(
    model_path: str | Path, options: PipelineOptions, progress: Progress = _quiet
) -> PipelineResult:
    """Prune, shrink, export, build, validate and report ``model_path`` (DESIGN §1)."""
    options.check()
    model_path = Path(model_path)
    out = options.destination(model_path)
    inputs_read = [model_path, options.data, options.inputs, options.calib, options.finetune]
    out = check_destination(out, inputs_read, force=options.force)

    progress("load")
    model = load(model_path)
    check_frame(model, options.frame)  # before any pruning (K ≥ 1, a model that streams)
    data = (
        load_data(options.data, model, need_labels=options.max_drop is not None)
        if options.data
        else None
    )
    inputs = load_data(options.inputs, model) if options.inputs else None
    calib = load_data(options.calib, model) if options.calib else None
    train = load_data(options.finetune, model, need_labels=True) if options.finetune else None
    if train is not None and data.y is None:
        raise InputError(f"--finetune needs labels in --data {options.data} (array y)")
    check_streamable(options.frame, options.validate, data, inputs)  # before any pruning

    progress("modal view")
    systems = modal_view(model, calib=calib)
    prune, search, latency_search = options.prune, None, None
    if options.latency_budget is not None:
        progress(f"select: the least pruning that meets {options.latency_budget:g} ms")
        latency_search = search_latency_budget(
            model,
            options.latency_budget,
            target=options.validate.target,
            length=options.validate.lengths_for(data).opt,
            options=options.prune,
            calib=calib,
            progress=progress,
        )
        prune = prune.with_ratio(latency_search.ratio)
    elif options.searches_ratio:
        progress(f"select: the largest ratio within {options.max_drop} accuracy points")
        search = search_max_drop(
            model, data, options.max_drop, options=options.prune, calib=calib, progress=progress
        )
        prune = prune.with_ratio(search.ratio)

    progress("score")
    systems = unit_views(model, systems, prune)
    layers = score_layers(systems, prune)

    progress("select")
    exact, selection = choose_units(model, layers, prune)

    progress("shrink")
    pruned = shrink_selected(model, selection, prune)
    plan = plan_pruning(model, pruned, systems, layers, exact, selection, prune)
    tuned = None
    if train is not None:
        progress("fine-tune")
        tuned = finetune(pruned, train, data, options.finetuning, progress=progress)
        pruned = tuned.model

    return deploy(
        Deployment(model_path, model, pruned, plan, search, latency_search, tuned),
        out,
        options,
        data=data,
        inputs=inputs,
        progress=progress,
    )


@dataclass
class Deployment:
    """A pruned model ready for stages 6–9, and how it was made."""

    model_path: Path
    model: SSMNetwork
    pruned: SSMNetwork
    plan: PrunePlan
    search: MaxDropResult | None = None
    latency_search: LatencyBudgetResult | None = None
    tuned: FinetuneResult | None = None


def deploy(
    job: Deployment,
    out: Path,
    options: PipelineOptions,
    *,
    data: SequenceData | None,
    inputs: SequenceData | None,
    progress: Progress = _quiet,
) -> PipelineResult:
    """Stages 6–9 for a pruned model: write it and its plan, lower, build, validate, report,
    bundle, all staged and committed to ``out`` at once (``run_pipeline`` and the S4oP search
    share it)."""
    model_path, model, pruned, plan = job.model_path, job.model, job.pruned, job.plan
    v = replace(options.validate, max_drop=accuracy_budget(options.max_drop, options.accuracy_gate))
    with staged_folder(out) as stage:
        progress("write pruned.pt and plan.json")
        save(pruned, stage / PRUNED_NAME, meta={"source": str(model_path), "plan": PLAN_NAME})
        plan.save(stage / PLAN_NAME)

        progress("lower to ONNX")
        exported = export(
            pruned,
            stage,
            target=v.target,
            scan=v.scan,
            precision=v.precision,
            lengths_input=any(d is not None and d.lengths is not None for d in (data, inputs)),
            frame=options.frame,
        )

        progress("build the runtimes")
        runtimes = build_runners(exported.sequence.path, v, stage, progress)

        try:
            validation = validate(
                model,
                pruned,
                exported,
                v,
                data=data,
                inputs=inputs,
                runtimes=runtimes,
                work=stage,
                progress=progress,
            )
        finally:
            runtimes.close()

        progress("write the report")
        report = Report(
            command=options.command,
            verdict=verdict(validation, fail_on_parity=options.fail_on_parity),
            validation=validation,
            model=_model_record(model_path, model, pruned, plan),
            plan=plan,
            export=exported,
            target=v.target,
            environment=environment(),
            warnings=[*validation.warnings, *plan.warnings, *exported.warnings]
            + ([] if job.tuned is None else [FINETUNE_SELECTION_NOTE.format(data=options.data)]),
            search=job.search,
            latency_search=None if job.latency_search is None else job.latency_search.to_json(),
            finetune=None if job.tuned is None else job.tuned.to_json(),
        )
        if options.bundle or target_named(v.target).bundle:
            progress("write the edge bundle")
            bundle_model(
                stage / BUNDLE_NAME,
                pruned,
                exported,
                source=model_path,
                plan=plan.summary(),
                target=v.target,
                scan=v.scan,
                batch=v.batch,
                length=v.lengths_for(None),
                seed=v.seed,
                default_precision=v.precision,
            )
        write_report(report, stage)
        commit(stage, out)
    return PipelineResult(out=out, report=report, exit_code=report.verdict.exit_code)


def revalidate(
    folder: str | Path,
    original: str | Path,
    options: ValidateOptions,
    *,
    data: Path | None = None,
    inputs: Path | None = None,
    max_drop: float | None = None,
    accuracy_gate: bool = True,
    fail_on_parity: bool = True,
    command: str = "",
    progress: Progress = _quiet,
) -> Report:
    """Validate an output folder (its pruned.pt, model.onnx and model.step.onnx) against the
    original model again: stages 7–9 (build, validate, report) without pruning, with the same
    gates as the whole job. Nothing is written."""
    folder = Path(folder)
    for name in (PRUNED_NAME, SEQUENCE_FILE):
        if not (folder / name).is_file():
            raise InputError(f"{folder} has no {name}: give a folder written by aire-export")
    model, pruned = load(original), load(folder / PRUNED_NAME)
    warnings = _check_provenance(folder, Path(original), model, pruned)
    step = folder / STEP_FILE
    validation = validate(
        model,
        pruned,
        folder / SEQUENCE_FILE,
        replace(options, max_drop=accuracy_budget(max_drop, accuracy_gate)),
        data=load_data(data, pruned) if data else None,
        inputs=load_data(inputs, pruned) if inputs else None,
        step_graph=step if step.is_file() else None,
        progress=progress,
    )
    return Report(
        command=command,
        verdict=verdict(validation, fail_on_parity=fail_on_parity),
        validation=validation,
        environment=environment(),
        warnings=[*warnings, *validation.warnings],
    )


def _check_provenance(folder: Path, original: Path, model: SSMNetwork, pruned: SSMNetwork):
    """InputError unless ``original`` can be what ``folder`` was pruned from (architecture,
    inputs and outputs, and the per-layer states plan.json records); a warning when its bytes
    differ from those the report recorded (the same model re-saved, or another one)."""
    keys = ("input_kind", "d_input", "d_output", "d_model")
    mine = (model.arch, *(getattr(model.config, k) for k in keys))
    theirs = (pruned.arch, *(getattr(pruned.config, k) for k in keys))
    plan_path = folder / PLAN_NAME
    states = [s.P for s in modal_systems(model)]
    planned = None
    if plan_path.is_file():
        planned = [layer.states_before for layer in PrunePlan.load(plan_path).layers]
    if mine != theirs or (planned is not None and planned != states):
        raise InputError(
            f"--original {original} is not the model {folder} was pruned from ("
            + (
                f"{mine[0]} {mine[1:]} vs {theirs[0]} {theirs[1:]}"
                if mine != theirs
                else f"states per layer {states} vs {planned} in plan.json"
            )
            + "): pass the checkpoint the folder was made from"
        )
    try:
        recorded = json.loads((folder / REPORT_NAME).read_text())["model"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if recorded != file_sha256(original):
        return [
            f"--original {original} is not byte for byte the file {folder} was pruned from "
            "(sha256 differs from report.json): the distortion and accuracy compare against it"
        ]
    return []


def _model_record(
    path: Path, model: SSMNetwork, pruned: SSMNetwork, plan: PrunePlan
) -> ModelRecord:
    family = family_of(pruned)
    return ModelRecord(
        path=str(path),
        sha256=file_sha256(path),
        arch=model.arch,
        states_before=plan.states_before,
        states_after=plan.states_after,
        physical_states_after=sum(len(family.units(b).ids) for b in pruned.layers),
        parameters_before=parameter_count(model),
        parameters_after=parameter_count(pruned),
    )


__all__ = ["PipelineOptions", "PipelineResult", "revalidate", "run_pipeline"]
