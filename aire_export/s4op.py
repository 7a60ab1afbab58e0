"""The S4oP search (DESIGN §3.6; S4oP facts: shared/refs/mamba_and_s4op.md Q1): operators
(channels) pruned step by step, every candidate fine-tuned, the best carried forward.

    current = the input model
    for p in schedule (10, 30, 50, 70, 90 %):
        for seed in seeds (7, 42, 123, 2024, 31650):           select = random (S4oP)
            candidate = current with more channels bypassed: S4oP's per-layer budget for p
                        (prune/channels.py), the new ones drawn at random among the active
                        channels with ``seed``, so each step's set contains the previous one
            fine-tune candidate on --train, best epoch on --data (aire_export/finetune.py)
        current = the candidate with the best accuracy on --data
        step folder: current as a normal aire-export output (plan, graphs, parity, accuracy
                     against the input model, latency side by side)

``select = energy`` replaces the draws by our channel scores (the AIRE energy of a channel's
modes, Algorithm 1's normalization and global threshold over the active channels, keeping
every layer's best): one candidate per step, no seeds. ``select = budget`` keeps S4oP's
per-layer budget and bypasses each layer's lowest-energy channels: one candidate, no seeds.
Each step is written when it is done (``s4op.json`` and ``s4op.md`` hold the table so far), so
a stopped search keeps its finished steps. The accuracy on --data chose both the epoch and
the seed: it is optimistic; ``test`` data, when given, is scored once per step and not used
for any choice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from aire_export.checkpoints import load
from aire_export.data import SequenceData, load_data
from aire_export.errors import AireError, InputError
from aire_export.files import check_destination, clear_folder, record_outputs, write_atomically
from aire_export.finetune import FinetuneOptions, FinetuneResult, eval_accuracy, finetune
from aire_export.models import SSMNetwork, family_of, modal_systems
from aire_export.pipeline import Deployment, PipelineOptions, deploy
from aire_export.prune import LayerPlan, PruneOptions, PrunePlan, prune_with, shrink_channels
from aire_export.prune.channels import channel_views, s4op_draw
from aire_export.prune.scores import score_systems
from aire_export.trials import Executor, LocalExecutor

SCHEDULE = (0.1, 0.3, 0.5, 0.7, 0.9)
SEEDS = (7, 42, 123, 2024, 31650)
SELECTIONS = ("random", "energy", "budget")
TABLE_NAME, SUMMARY_NAME = "s4op.json", "s4op.md"


@dataclass(frozen=True)
class S4opOptions:
    """S4oP's schedule and seeds (its pruning_config.py), the selection, the fine-tuning, and
    how each step's best model is deployed (``deploy``: target, validation, gates)."""

    schedule: tuple[float, ...] = SCHEDULE
    seeds: tuple[int, ...] = SEEDS
    select: str = "random"
    finetuning: FinetuneOptions = field(default_factory=FinetuneOptions)
    deploy: PipelineOptions = field(default_factory=PipelineOptions)

    def check(self) -> S4opOptions:
        ratios = list(self.schedule)
        if not ratios or any(not 0 < r < 1 for r in ratios) or ratios != sorted(set(ratios)):
            raise InputError(
                f"the schedule must be increasing ratios in (0, 1), got {', '.join(map(str, ratios))}"
            )
        if self.select not in SELECTIONS:
            raise InputError(f"select must be one of {', '.join(SELECTIONS)}, got {self.select!r}")
        if self.select == "random" and not self.seeds:
            raise InputError("random selection needs at least one seed")
        self.finetuning.check()
        return self


@dataclass(frozen=True)
class Trial:
    step: int
    ratio: float
    seed: int | None
    channels_kept: list[int]  # per layer
    accuracy_before: float  # on --data, before fine-tuning
    accuracy_after: float  # on --data, the best epoch
    best_epoch: int
    seconds: float
    chosen: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class StepResult:
    """The chosen candidate of one step, deployed to ``folder``."""

    step: int
    ratio: float
    seed: int | None
    accuracy: float  # on --data (chose the seed and the epoch)
    test_accuracy: float | None
    parameters: int
    folder: str
    exit_code: int
    latency: dict[str, Any]  # per runtime: p50 original, p50 pruned, reduction

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class S4opResult:
    out: Path
    baseline_accuracy: float
    trials: list[Trial]
    steps: list[StepResult]
    options: S4opOptions
    failed: list[dict] = field(default_factory=list)  # {step, ratio, seed, error}
    executor: str = "local"

    @property
    def exit_code(self) -> int:
        """3 when a step's graphs failed parity, else 0 (accuracy verdicts are the table's)."""
        return 3 if any(s.exit_code == 3 for s in self.steps) else 0

    def to_json(self) -> dict[str, Any]:
        o = self.options
        return {
            "format": "aire-export-s4op/1",
            "select": o.select,
            "schedule": list(o.schedule),
            "seeds": list(o.seeds) if o.select == "random" else [],
            "finetune": {
                "epochs": o.finetuning.epochs,
                "lr": o.finetuning.lr,
                "weight_decay": o.finetuning.weight_decay,
                "patience": o.finetuning.patience,
                "batch_size": o.finetuning.batch_size,
            },
            "baseline_accuracy": self.baseline_accuracy,
            "executor": self.executor,
            "failed": list(self.failed),
            "trials": [t.to_json() for t in self.trials],
            "steps": [s.to_json() for s in self.steps],
        }


# ---- one step -----------------------------------------------------------------------------------
def _channel_counts(model: SSMNetwork) -> list[int]:
    family = family_of(model)
    return [family.channel_width(block) for block in model.layers]


CALIB_ROWS = 32  # training sequences a selective model's channels are scored on


def candidate(
    current: SSMNetwork,
    ratio: float,
    select: str,
    seed: int | None,
    calib: SequenceData | None = None,
) -> SSMNetwork:
    """``current`` with channels pruned up to ``ratio`` of all the model's channels; scores
    of a selective model's channels are measured on ``calib``."""
    width, layers = current.config.operator_width, len(current.layers)
    bypassed = current.config.pruned_operators()
    if select == "random":
        return shrink_channels(
            current, s4op_draw(bypassed, width, ratio, np.random.default_rng(seed))
        )
    if select == "budget":
        views = channel_views(current, modal_systems(current, calib=calib))
        energies = [layer.energies for layer in score_systems(views, "aire")]
        return shrink_channels(current, s4op_draw(bypassed, width, ratio, energies=energies))
    active = sum(_channel_counts(current))
    keep = max(round((1 - ratio) * width * layers), layers)
    if keep >= active:
        return current
    options = PruneOptions(ratio=1 - keep / active, unit="channel", certificates=False)
    return prune_with(current, options, calib)[0]


def s4op_plan(model: SSMNetwork, pruned: SSMNetwork, method: str, ratio: float) -> PrunePlan:
    """The plan of ``pruned`` against ``model``: per layer the channels still active (their
    positions among ``model``'s active channels), states before and after."""
    before, after = modal_systems(model), modal_systems(pruned)
    layers = []
    for index, (old, new) in enumerate(zip(model.layers, pruned.layers, strict=True)):
        was = model.config.active_channels(index) or list(range(model.config.operator_width))
        now = set(pruned.config.active_channels(index) or range(pruned.config.operator_width))
        layers.append(
            LayerPlan(
                index=index,
                name=f"layers.{index}",
                states_before=before[index].P,
                states_after=after[index].P,
                kept=np.array([i for i, h in enumerate(was) if h in now], dtype=np.int64),
                energies=np.zeros(0),
                scores=np.zeros(0),
                certificate=None,
                dropped=after[index].P == 0,
                physical_size=new.state_size,
                size_before=old.state_size,
                units_before=len(was),
            )
        )
    kept = sum(len(layer.kept) for layer in layers)
    return PrunePlan(
        method=method,
        ratio_requested=ratio,
        ratio_achieved=1 - kept / sum(layer.units_before for layer in layers),
        threshold=None,
        eps=0.0,
        score_compat="default",
        layers=layers,
        arch=model.arch,
        unit="channel",
    )


# ---- the search -----------------------------------------------------------------------------------
def run_s4op(
    model_path: str | Path,
    train_path: Path,
    data_path: Path,
    options: S4opOptions,
    *,
    out: Path,
    test_path: Path | None = None,
    executor: Executor | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> S4opResult:
    """S4oP's incremental search on ``model_path`` (see the module doc); writes ``out``. The
    candidates of a step are trials of ``executor`` (default: one after another here)."""
    options.check()
    model_path = Path(model_path)
    out = check_destination(
        out, [model_path, train_path, data_path, test_path], force=options.deploy.force
    )
    model = load(model_path)
    family_of(model).channel_width(model.layers[0])  # InputError for families without channels
    train = load_data(train_path, model, need_labels=True)
    data = load_data(data_path, model, need_labels=True)
    test = load_data(test_path, model, need_labels=True) if test_path else None
    if out.exists():
        clear_folder(out)  # ours (check_destination), or --force
    out.mkdir(parents=True, exist_ok=True)

    baseline = eval_accuracy(model, data, 64, "cpu")
    executor = executor or LocalExecutor()
    result = S4opResult(out, baseline, [], [], options, executor=executor.name)
    current = model
    seeds: tuple[int | None, ...] = options.seeds if options.select == "random" else (None,)
    for step, ratio in enumerate(options.schedule, 1):
        progress(f"step {step}/{len(options.schedule)}: {ratio:.0%} of the channels")
        shared = (current, train, data, step, ratio, options.select, options.finetuning)
        outcomes = executor.map(s4op_trial, seeds, shared=shared)
        best: tuple[Trial, FinetuneResult] | None = None
        for outcome, seed in zip(outcomes, seeds, strict=True):
            if not outcome.ok:
                failure = {"step": step, "ratio": ratio, "seed": seed, "error": outcome.error}
                result.failed.append(failure)
                continue
            trial, tuned = outcome.value
            result.trials.append(trial)
            if best is None or trial.accuracy_after > best[0].accuracy_after:
                best = (trial, tuned)
        if best is None:
            _write_tables(result)
            raise AireError(
                f"every trial of step {step} failed ({result.failed[-1]['error']}); the steps "
                f"before it are in {out}"
            )
        trial, tuned = best
        result.trials[result.trials.index(trial)] = replace(trial, chosen=True)
        current = tuned.model
        result.steps.append(
            _deploy_step(
                model_path, model, current, trial, tuned, data, test, options, out, progress
            )
        )
        _write_tables(result)
    return result


def s4op_trial(shared, seed: int | None) -> tuple[Trial, FinetuneResult]:
    """One candidate of a step, fine-tuned (a trial of the executor, aire_export/trials.py)."""
    current, train, data, step, ratio, select, finetuning = shared
    start = time.perf_counter()
    pruned = candidate(current, ratio, select, seed, train.head(CALIB_ROWS))
    tuning = finetuning if seed is None else replace(finetuning, seed=seed)
    tuned = finetune(pruned, train, data, tuning)
    trial = Trial(
        step, ratio, seed, _channel_counts(pruned), tuned.before, tuned.after, tuned.best_epoch,
        time.perf_counter() - start,
    )  # fmt: skip
    return trial, tuned


def _deploy_step(
    model_path: Path,
    model: SSMNetwork,
    chosen: SSMNetwork,
    trial: Trial,
    tuned: FinetuneResult,
    data: SequenceData,
    test: SequenceData | None,
    options: S4opOptions,
    out: Path,
    progress: Callable[[str], None],
) -> StepResult:
    """Write the step's chosen model as a normal output folder (stages 6–9) and summarize it."""
    method = f"s4op {options.select}" + ("" if options.select == "random" else " (aire energy)")
    plan = s4op_plan(model, chosen, method, trial.ratio)
    folder = out / f"step_{round(100 * trial.ratio):02d}"
    deployed = deploy(
        Deployment(model_path, model, chosen, plan, tuned=tuned),
        folder,
        replace(options.deploy, data=Path(data.source)),
        data=data,
        inputs=None,
        progress=progress,
    )
    record_outputs(out, [str(p.relative_to(out)) for p in folder.rglob("*") if p.is_file()])
    latency = {}
    by_name = {t.name: t for t in deployed.report.validation.latency}
    for s in deployed.report.validation.speedups:
        original, pruned = by_name[s.original], by_name[s.pruned]
        latency[s.runtime] = {
            "p50_ms_original": original.p50_ms,
            "p50_ms_pruned": pruned.p50_ms,
            "reduction": 1 - pruned.p50_ms / original.p50_ms,
            "batch": pruned.batch,
            "length": pruned.length,
            "runs": pruned.runs,
        }
    return StepResult(
        step=trial.step,
        ratio=trial.ratio,
        seed=trial.seed,
        accuracy=trial.accuracy_after,
        test_accuracy=None if test is None else eval_accuracy(chosen, test, 64, "cpu"),
        parameters=sum(p.numel() for p in chosen.parameters()),
        folder=folder.name,
        exit_code=deployed.exit_code,
        latency=latency,
    )


def _write_tables(result: S4opResult) -> None:
    """s4op.json and s4op.md with every trial and step so far, atomically."""
    text = json.dumps(result.to_json(), indent=1) + "\n"
    write_atomically(result.out / TABLE_NAME, lambda f: f.write(text.encode()))
    markdown = render_markdown(result).encode()
    write_atomically(result.out / SUMMARY_NAME, lambda f: f.write(markdown))
    record_outputs(result.out, [TABLE_NAME, SUMMARY_NAME])


def render_markdown(result: S4opResult) -> str:
    o = result.options
    lines = [
        "# S4oP search",
        "",
        f"Selection `{o.select}`, schedule {', '.join(f'{r:.0%}' for r in o.schedule)}"
        + (f", seeds {', '.join(map(str, o.seeds))}" if o.select == "random" else "")
        + f"; fine-tuning {o.finetuning.epochs} epoch(s) at most, lr {o.finetuning.lr:g}, "
        f"weight decay {o.finetuning.weight_decay:g}, patience {o.finetuning.patience}. "
        f"Unpruned accuracy on --data {100 * result.baseline_accuracy:.2f} %. The --data accuracy "
        "chose the epoch and the seed, so it is optimistic (the test column is not).",
        "",
        "| step | ratio | seed | channels kept per layer | accuracy before fine-tune | after | chosen |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in result.trials:
        lines.append(
            f"| {t.step} | {t.ratio:.0%} | {'–' if t.seed is None else t.seed} | "
            f"{', '.join(map(str, t.channels_kept))} | {100 * t.accuracy_before:.2f} % | "
            f"{100 * t.accuracy_after:.2f} % | {'yes' if t.chosen else ''} |"
        )
    lines += ["", "| step | ratio | accuracy | test | parameters | latency (p50, reduction) | folder |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for s in result.steps:
        test = "–" if s.test_accuracy is None else f"{100 * s.test_accuracy:.2f} %"
        latency = "; ".join(
            f"{name} {v['p50_ms_pruned']:.3f} ms ({100 * v['reduction']:+.1f} %)"
            for name, v in s.latency.items()
        )
        lines.append(
            f"| {s.step} | {s.ratio:.0%} | {100 * s.accuracy:.2f} % | {test} | "
            f"{s.parameters:,} | {latency or '–'} | `{s.folder}/` |"
        )
    return "\n".join(lines) + "\n"
