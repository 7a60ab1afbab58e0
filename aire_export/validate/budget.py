"""A latency budget: the least-pruned model whose latency, measured on the target's runtime,
meets it (DESIGN §3.6; the protocol is S4oP's latency.py: batch 1, full length, warm-up, then
≥ 100 timed runs, the median).

    for p in the ratio grid, ascending (0, 0.05, …, 0.95):
        prune at p (the job's method and unit), export for the target, time the graph alone
        a median ≤ budget is timed once more: stop at the first p whose two medians both
        meet the budget, the least pruning that is fast enough

Latency falls with the ratio but not strictly (a layer's lowering can change, and the machine
is noisy), so the grid is scanned in order rather than bisected; every point is reported with
its fastest run and 90th percentile, so the spread of the measurement is visible next to the
choice. The confirmation exists because a point just under the budget re-measures above it
about as often as not (benchmarks/latency_budget.py measured it).
The accuracy budget (--max-drop) is then the job's usual gate on the chosen model: pruning
less than the choice cannot meet the latency budget, so if the choice loses too much accuracy,
no ratio of the grid meets both.

Timed on onnxruntime (the CPU provider, or CUDA for ort-cuda); TensorRT timing needs the engine
on its device, so trt and jetson targets are refused here.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from aire_export.data import SequenceData, random_data
from aire_export.errors import InputError
from aire_export.lower import export
from aire_export.models import SSMNetwork
from aire_export.prune import PruneOptions, modal_view, prune_with
from aire_export.runtimes.ort import OrtRunner, SessionLoader
from aire_export.targets import ORT_CUDA, target_named
from aire_export.validate.latency import measure_latency

DEFAULT_GRID = tuple(round(0.05 * i, 2) for i in range(20))
WARMUP, RUNS = 50, 100  # S4oP's latency.py


@dataclass(frozen=True)
class LatencyPoint:
    ratio: float
    ratio_achieved: float
    p50_ms: float
    min_ms: float
    p90_ms: float
    runs: int
    confirmed_ms: float | None = None  # the second median, taken when the first met the budget

    def to_json(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "ratio_achieved": self.ratio_achieved,
            "p50_ms": self.p50_ms,
            "min_ms": self.min_ms,
            "p90_ms": self.p90_ms,
            "runs": self.runs,
            "confirmed_ms": self.confirmed_ms,
        }


@dataclass(frozen=True)
class LatencyBudgetResult:
    """The chosen ratio and the latency-vs-ratio curve measured on the way."""

    budget_ms: float
    runtime: str
    batch: int
    length: int
    warmup: int
    ratio: float
    curve: list[LatencyPoint]

    @property
    def chosen(self) -> LatencyPoint:
        return next(p for p in self.curve if p.ratio == self.ratio)

    def to_json(self) -> dict[str, Any]:
        return {
            "budget_ms": self.budget_ms,
            "runtime": self.runtime,
            "batch": self.batch,
            "length": self.length,
            "warmup": self.warmup,
            "ratio": self.ratio,
            "p50_ms": self.chosen.p50_ms,
            "curve": [p.to_json() for p in self.curve],
        }


def budget_runtime(target: str) -> str:
    """The onnxruntime provider a latency budget is measured on for ``target``."""
    t = target_named(target)
    if t.tensorrt_rules is not None:  # trt, jetson: an engine built on its device
        raise InputError(
            f"--latency-budget times the graph on the target's runtime; for {target} that is a "
            "TensorRT engine on its device, which this run cannot time: use --target onnx or "
            "ort-cuda, or time the bundle there (build.sh, trtexec)"
        )
    return t.profile_runtime


def graph_latency(
    path: Path,
    runtime: str,
    feeds: dict[str, np.ndarray],
    *,
    warmup: int = WARMUP,
    runs: int = RUNS,
) -> tuple[float, float, float, int]:
    """(p50, min, p90 in ms, runs) of one graph alone on ``runtime``, after ``warmup`` calls."""
    provider = "cuda" if runtime == ORT_CUDA else "cpu"
    runner = OrtRunner(SessionLoader(path, provider))
    try:
        fn = runner.bind(feeds)
        timed = measure_latency(
            {"graph": (fn, runner.device)},
            batch=int(feeds["x"].shape[0]),
            length=int(feeds["x"].shape[1]),
            warmup=warmup,
            runs=runs,
            budget_s=1e9,  # every run: the protocol's count, however slow
            rounds=1,
        )["graph"]
    finally:
        runner.close()
    return timed.p50_ms, timed.min_ms, timed.p90_ms, timed.runs


def search_latency_budget(
    model: SSMNetwork,
    budget_ms: float,
    *,
    target: str,
    length: int,
    options: PruneOptions = PruneOptions(),
    ratios: Sequence[float] = DEFAULT_GRID,
    calib: SequenceData | None = None,
    warmup: int = WARMUP,
    runs: int = RUNS,
    progress: Callable[[str], None] | None = None,
) -> LatencyBudgetResult:
    """The smallest grid ratio whose graph meets ``budget_ms`` at batch 1 and ``length``
    steps on ``target``'s runtime (see the module doc)."""
    if not budget_ms > 0 or budget_ms == float("inf"):
        raise InputError(f"--latency-budget is a time in milliseconds > 0, got {budget_ms}")
    runtime = budget_runtime(target)
    feeds = random_data(model, 1, length).feeds()
    systems = modal_view(model, calib=calib)
    curve: list[LatencyPoint] = []
    with tempfile.TemporaryDirectory(prefix="aire-budget-") as tmp:
        for ratio in sorted(set(float(r) for r in ratios)):
            if progress:
                progress(f"latency budget: ratio {ratio:.2f} on {runtime}")
            pruned, plan = prune_with(
                model, replace(options.with_ratio(ratio), certificates=False), systems=systems
            )
            graph = export(pruned, Path(tmp) / f"{ratio:.4f}", target=target, step=False)
            p50, fastest, p90, count = graph_latency(
                graph.sequence.path, runtime, feeds, warmup=warmup, runs=runs
            )
            confirmed = None
            if p50 <= budget_ms:
                confirmed = graph_latency(
                    graph.sequence.path, runtime, feeds, warmup=warmup, runs=runs
                )[0]
            point = LatencyPoint(ratio, plan.ratio_achieved, p50, fastest, p90, count, confirmed)
            curve.append(point)
            if confirmed is not None and confirmed <= budget_ms:
                return LatencyBudgetResult(budget_ms, runtime, 1, length, warmup, ratio, curve)
    fastest = min(curve, key=lambda p: p.p50_ms)
    raise InputError(
        f"no ratio up to {curve[-1].ratio:.2f} meets {budget_ms:g} ms on {runtime} (batch 1, "
        f"{length} steps): the fastest was {fastest.p50_ms:.3f} ms at ratio {fastest.ratio:.2f}; "
        "raise --latency-budget or prune another unit"
    )
