"""Accuracy-aware pruning: sweeps over ratios and methods, and the largest ratio within a budget.

A sweep prunes the model at every ratio of a grid with every method, physically shrinks it, and
evaluates task accuracy and output distortion on an eval set (the paper's Fig. 4), plus the kept
states per layer (Fig. 5). ``search_max_drop`` finds the paper's elbow: the largest ratio whose
accuracy drop stays within a budget of percentage points, by a scan of the grid refined by
bisection between the last grid ratio within the budget and the next one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from aire_export.data import SequenceData
from aire_export.errors import InputError
from aire_export.files import commit, staged_folder
from aire_export.models import SSMNetwork, family_of, parameter_count
from aire_export.prune import METHODS, PruneOptions, modal_view, prune_with
from aire_export.trials import Executor, LocalExecutor
from aire_export.validate.evaluate import Evaluator

DEFAULT_RATIOS = tuple(round(0.05 * i, 2) for i in range(20))  # 0, 0.05, …, 0.95


def parse_ratios(text: str) -> tuple[float, ...]:
    """``"0:0.95:0.05"`` (start:stop:step, stop included) or ``"0.1,0.5,0.7"``."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if step <= 0:
                raise ValueError
            count = int(np.floor((stop - start) / step + 1e-9)) + 1
            values = tuple(round(start + i * step, 10) for i in range(count))
        else:
            values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(
            f"--ratios must be START:STOP:STEP or a comma list, got {text!r}"
        ) from None
    if not values:
        raise InputError(
            f"--ratios {text!r} holds no ratio: START:STOP:STEP needs START ≤ STOP (e.g. 0:0.9:0.1)"
        )
    if any(not 0 <= v < 1 for v in values):
        raise InputError(f"every ratio must lie in [0, 1), got {text!r}")
    return tuple(sorted(set(values)))


def parse_methods(text: str) -> tuple[str, ...]:
    """``"aire,last"``: scoring methods by name, each one known (prune/scores.py)."""
    chosen = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise InputError(
            f"unknown method(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(METHODS)}"
        )
    return chosen


def default_folder(model_path: Path) -> Path:
    """Where a sweep of ``model_path`` is written by default: MODEL.sweep/."""
    return model_path.with_name(model_path.name.rsplit(".", 1)[0] + ".sweep")


@dataclass(frozen=True)
class SweepPoint:
    method: str
    ratio: float  # requested
    ratio_achieved: float
    states_kept: int
    kept_per_layer: list[int]
    kept_units: list[list[int]]  # kept unit ids per layer (JSON only; the CSV has the counts)
    parameters: int
    accuracy: float
    drop_pp: float  # 100 · (baseline − accuracy)
    distortion: float  # ||y_pruned − y_original|| / ||y_original|| on the eval set


@dataclass
class SweepResult:
    data: str
    samples: int
    baseline_accuracy: float
    states: int
    parameters: int
    points: list[SweepPoint] = field(default_factory=list)
    # how every point was pruned, so that a sweep can be reproduced from its JSON alone (the
    # defaults are what files written before these fields meant)
    eps: float = 0.0
    score_compat: str = "default"
    seed: int = 0
    balance_channels: bool = False
    unit: str = "state"  # or "channel": ratios count bypassed operators (S4oP)
    failed: list[dict] = field(default_factory=list)  # {method, ratio, error}: trials that failed
    executor: str = "local"

    def to_csv(self) -> str:
        buffer = io.StringIO()
        fields = [
            f for f in SweepPoint.__dataclass_fields__ if f not in ("kept_per_layer", "kept_units")
        ]
        fields.append("kept_per_layer")
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for p in self.points:
            row = asdict(p)
            row["kept_per_layer"] = " ".join(map(str, p.kept_per_layer))
            del row["kept_units"]
            writer.writerow(row)
        return buffer.getvalue()

    def to_json(self) -> dict:
        """Everything, with each point's kept unit ids per layer as a hex bit mask
        (``kept_units_hex``: bit u of the little-endian bytes is unit u): an S4D sweep keeps
        thousands of ids per point, 9 MB as a JSON list, 0.3 MB as masks."""
        data = asdict(self)
        for point in data["points"]:
            point["kept_units_hex"] = [_mask_hex(units) for units in point.pop("kept_units")]
        return data

    @classmethod
    def from_json(cls, data: dict) -> SweepResult:
        """The inverse of :meth:`to_json` (a sweep.json written by ``aire-export sweep``)."""
        data = dict(data)
        points = []
        for p in data.pop("points"):
            p = dict(p)
            if "kept_units_hex" in p:  # files before the masks hold plain "kept_units" lists
                p["kept_units"] = [_mask_units(h) for h in p.pop("kept_units_hex")]
            points.append(SweepPoint(**p))
        return cls(**data, points=points)

    def best_within(self, method: str, max_drop_pp: float) -> SweepPoint | None:
        """The largest grid ratio of ``method`` whose drop is within the budget."""
        ok = [p for p in self.points if p.method == method and p.drop_pp <= max_drop_pp + 1e-12]
        return max(ok, key=lambda p: p.ratio) if ok else None


def _mask_hex(units: list[int]) -> str:
    mask = np.zeros(max(units, default=-1) + 1, dtype=bool)
    mask[units] = True
    return np.packbits(mask, bitorder="little").tobytes().hex()


def _mask_units(text: str) -> list[int]:
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(text), np.uint8), bitorder="little")
    return [int(u) for u in np.flatnonzero(bits)]


def _point(
    evaluator: Evaluator, model: SSMNetwork, options: PruneOptions, ratio: float, systems
) -> SweepPoint:
    """Prune at ``ratio`` (no certificates: only accuracy matters here) and evaluate."""
    options = replace(options.with_ratio(ratio), certificates=False)
    pruned, plan = prune_with(model, options, systems=systems)
    kept = tuple(tuple(int(u) for u in layer.kept) for layer in plan.layers)
    acc, distortion = evaluator.evaluate(
        pruned, key=(kept, options.drop_empty_blocks, options.unit)
    )
    kept = [layer.states_after for layer in plan.layers]
    return SweepPoint(
        method=options.method,
        ratio=float(ratio),
        ratio_achieved=float(plan.ratio_achieved),
        states_kept=int(sum(kept)),
        kept_per_layer=[int(k) for k in kept],
        kept_units=[[int(u) for u in layer.kept] for layer in plan.layers],
        parameters=parameter_count(pruned),
        accuracy=acc,
        drop_pp=100 * (evaluator.baseline - acc),
        distortion=distortion,
    )


def sweep(
    model: SSMNetwork,
    data: SequenceData,
    *,
    methods: Sequence[str] = ("aire",),
    ratios: Sequence[float] = DEFAULT_RATIOS,
    eps: float = 0.0,
    score_compat: str = "default",
    seed: int = 0,
    balance_channels: bool = True,
    unit: str = "state",
    batch_size: int = 64,
    device: str = "cpu",
    calib: SequenceData | None = None,
    progress: Callable[[str], None] | None = None,
    executor: Executor | None = None,
) -> SweepResult:
    """Accuracy and distortion for every (method, ratio), physically shrunk each time; the
    modal view (selective layers: measured on ``calib``) is computed once. The points are
    trials of ``executor`` (aire_export/trials.py; default: one after another here); a point
    that fails is listed in ``failed``, and the others are kept."""
    evaluator = Evaluator(model, data, batch_size=batch_size, device=device)
    systems = modal_view(model, calib=calib)
    shared = dict(
        eps=eps, score_compat=score_compat, seed=seed, balance_channels=balance_channels, unit=unit
    )
    result = SweepResult(
        data=data.source,
        samples=data.count,
        baseline_accuracy=evaluator.baseline,
        states=sum(len(family_of(model).units(block).ids) for block in model.layers),
        parameters=parameter_count(model),
        **shared,
    )
    executor = executor or LocalExecutor()
    result.executor = executor.name
    items = [(PruneOptions(method=m, **shared), float(r)) for m in methods for r in ratios]
    outcomes = executor.map(
        sweep_trial,
        items,
        shared=(evaluator, model, systems),
        progress=None
        if progress is None
        else lambda i: progress(f"{items[i][0].method} at ratio {items[i][1]:.3f}"),
    )
    for outcome, (options, ratio) in zip(outcomes, items, strict=True):
        if outcome.ok:
            result.points.append(outcome.value)
        else:
            result.failed.append({"method": options.method, "ratio": ratio, "error": outcome.error})
    return result


def sweep_trial(shared, item: tuple[PruneOptions, float]) -> SweepPoint:
    """One sweep point as a trial: ``shared`` = (evaluator, model, modal view)."""
    evaluator, model, systems = shared
    options, ratio = item
    return _point(evaluator, model, options, ratio, systems)


@dataclass(frozen=True)
class MaxDropResult:
    """The largest ratio within an accuracy budget, and the curve that led to it."""

    ratio: float
    accuracy: float
    drop_pp: float
    budget_pp: float
    baseline_accuracy: float
    next_grid_ratio: (
        float | None
    )  # the grid step above (not within budget), None if at the grid's end
    next_grid_drop_pp: float | None
    curve: list[SweepPoint]  # every evaluated point, in evaluation order

    def to_json(self) -> dict:
        """The search as the report records it (kept units left out: the plan has them)."""
        return {
            "budget_pp": self.budget_pp,
            "ratio": self.ratio,
            "accuracy": self.accuracy,
            "drop_pp": self.drop_pp,
            "baseline_accuracy": self.baseline_accuracy,
            "next_grid_ratio": self.next_grid_ratio,
            "next_grid_drop_pp": self.next_grid_drop_pp,
            "curve": [
                {
                    "ratio": p.ratio,
                    "ratio_achieved": p.ratio_achieved,
                    "states_kept": p.states_kept,
                    "accuracy": p.accuracy,
                    "drop_pp": p.drop_pp,
                }
                for p in self.curve
            ],
        }


def search_max_drop(
    model: SSMNetwork,
    data: SequenceData,
    max_drop_pp: float,
    *,
    options: PruneOptions = PruneOptions(),
    ratios: Sequence[float] = DEFAULT_RATIOS,
    bisections: int = 4,
    batch_size: int = 64,
    device: str = "cpu",
    calib: SequenceData | None = None,
    progress: Callable[[str], None] | None = None,
) -> MaxDropResult:
    """Largest ratio whose accuracy drop is ≤ ``max_drop_pp`` points (grid scan + bisection),
    each point pruned with ``options`` (method, eps, …) at its ratio.

    The whole grid is evaluated; r_k is its largest ratio within the budget and r_{k+1} the
    next grid ratio (outside it by construction). Bisection then narrows [r_k, r_{k+1}] and keeps
    the largest ratio found within the budget, which is finally re-evaluated.
    """
    if max_drop_pp < 0:
        raise InputError(f"--max-drop must be ≥ 0 points, got {max_drop_pp}")
    grid = sorted(set(float(r) for r in ratios))
    evaluator = Evaluator(model, data, batch_size=batch_size, device=device)
    systems = modal_view(model, calib=calib)
    curve = []
    for ratio in grid:
        if progress:
            progress(f"max-drop: {options.method} at ratio {ratio:.3f}")
        curve.append(_point(evaluator, model, options, ratio, systems))
    within = [p for p in curve if p.drop_pp <= max_drop_pp + 1e-12]
    if not within:
        raise InputError(
            f"no ratio of the grid keeps the accuracy drop within {max_drop_pp} points (even ratio "
            f"{grid[0]} drops {curve[0].drop_pp:.2f}); raise --max-drop"
        )
    best = max(within, key=lambda p: p.ratio)
    above = [p for p in curve if p.ratio > best.ratio]
    nxt = min(above, key=lambda p: p.ratio) if above else None
    if nxt is not None:
        lo, hi = best.ratio, nxt.ratio
        for _ in range(bisections):
            mid = (lo + hi) / 2
            if progress:
                progress(f"max-drop: bisection at ratio {mid:.4f}")
            point = _point(evaluator, model, options, mid, systems)
            curve.append(point)
            if point.drop_pp <= max_drop_pp + 1e-12:
                lo, best = mid, point
            else:
                hi = mid
    final = _point(evaluator, model, options, best.ratio, systems)  # re-evaluated
    return MaxDropResult(
        ratio=final.ratio,
        accuracy=final.accuracy,
        drop_pp=final.drop_pp,
        budget_pp=max_drop_pp,
        baseline_accuracy=evaluator.baseline,
        next_grid_ratio=None if nxt is None else nxt.ratio,
        next_grid_drop_pp=None if nxt is None else nxt.drop_pp,
        curve=curve,
    )


def write_sweep(result: SweepResult, out: Path, *, plot_method: str = "aire") -> list[str]:
    """``out``/: sweep.csv, sweep.json and the two plots, built in a staging folder and renamed
    into place (aire_export/files.py: never half-written, never over someone else's files);
    returns the file names written."""
    with staged_folder(out) as stage:
        written = _write_sweep_files(result, stage, plot_method)
        commit(stage, out)
    return written


def _write_sweep_files(result: SweepResult, folder: Path, plot_method: str) -> list[str]:
    (folder / "sweep.csv").write_text(result.to_csv())
    (folder / "sweep.json").write_text(json.dumps(result.to_json(), indent=1))
    written = ["sweep.csv", "sweep.json"]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return written
    _line_plot(
        plt,
        folder / "accuracy.png",
        accuracy_series(result),
        ylabel="accuracy (%)",
        title=f"accuracy vs pruning ratio ({Path(result.data).name})",
        baseline=100 * result.baseline_accuracy,
    )
    written.append("accuracy.png")
    pts = sorted((p for p in result.points if p.method == plot_method), key=lambda p: p.ratio)
    if pts:
        kept = np.array([p.kept_per_layer for p in pts])
        ratios = [100 * p.ratio for p in pts]
        _line_plot(
            plt,
            folder / "kept_states.png",
            {f"layer {i}": (ratios, kept[:, i]) for i in range(kept.shape[1])},
            ylabel="kept states",
            title=f"kept states per layer ({plot_method})",
        )
        written.append("kept_states.png")
    return written


def accuracy_series(result: SweepResult) -> dict[str, tuple[list[float], list[float]]]:
    """Per method, (ratios %, accuracies %) in increasing ratio: one curve of Fig. 4."""
    methods = dict.fromkeys(p.method for p in result.points)
    series = {}
    for m in methods:
        pts = sorted((p for p in result.points if p.method == m), key=lambda p: p.ratio)
        series[m] = ([100 * p.ratio for p in pts], [100 * p.accuracy for p in pts])
    return series


def plot_accuracy_panels(results: dict[str, SweepResult], path: Path) -> None:
    """The paper's Fig. 4: accuracy vs ratio per method, one panel per model (``results``
    maps a panel title to its sweep). Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 3.8), squeeze=False)
    for ax, (title, result) in zip(axes[0], results.items(), strict=True):
        _draw(
            ax,
            accuracy_series(result),
            ylabel="accuracy (%)",
            title=title,
            baseline=100 * result.baseline_accuracy,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _line_plot(
    plt, path: Path, series: dict, *, ylabel: str, title: str, baseline: float | None = None
) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    _draw(ax, series, ylabel=ylabel, title=title, baseline=baseline)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw(ax, series: dict, *, ylabel: str, title: str, baseline: float | None = None) -> None:
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker=".", label=label)
    if baseline is not None:
        ax.axhline(baseline, color="k", linestyle=":", label="unpruned")
    ax.set_xlabel("pruning ratio (%)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
