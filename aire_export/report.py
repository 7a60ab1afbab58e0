"""The report: ``report.json`` (stable keys, for CI gates), ``report.md`` and PNG plots (DESIGN §9).

The JSON keys are part of the interface: ``verdict``, ``model``, ``plan``, ``distortion``,
``accuracy``, ``export``, ``parity``, ``latency``, ``speedups``, ``environment``, ``warnings``,
``unverified``. Plots need matplotlib (the ``plots`` extra); without it they are skipped and the
report says so.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aire_export.validate.latency import LatencyResult
from aire_export.validate.parity import DistortionResult, ParityResult

SCHEMA = "aire-export-report/1"


@dataclass
class AccuracySummary:
    data: str
    samples: int
    original: float
    pruned: float
    runtimes: dict[str, float] = field(default_factory=dict)

    @property
    def drop_pp(self) -> float:
        """Accuracy drop in percentage points (positive = pruned is worse)."""
        return 100 * (self.original - self.pruned)


@dataclass
class Speedup:
    runtime: str
    original: str
    pruned: str
    ratio: float  # p50 original / p50 pruned, measured side by side


@dataclass
class Report:
    command: str
    verdict_passed: bool
    exit_code: int
    reasons: list[str]
    model: dict[str, Any]
    plan: dict[str, Any]
    export: dict[str, Any]
    distortion: DistortionResult | None = None
    accuracy: AccuracySummary | None = None
    parity: list[ParityResult] = field(default_factory=list)
    latency: list[LatencyResult] = field(default_factory=list)
    speedups: list[Speedup] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        def plain(value):
            if dataclasses.is_dataclass(value):
                out = dataclasses.asdict(value)
                for name in dir(type(value)):  # include computed properties (throughput, required…)
                    attr = getattr(type(value), name, None)
                    if isinstance(attr, property):
                        out[name] = getattr(value, name)
                return plain(out)
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [plain(v) for v in value]
            if isinstance(value, np.generic):
                return value.item()
            if isinstance(value, float) and not math.isfinite(value):
                return None
            return value

        return plain(
            {
                "schema": SCHEMA,
                "verdict": {
                    "passed": self.verdict_passed,
                    "exit_code": self.exit_code,
                    "reasons": self.reasons,
                },
                "command": self.command,
                "model": self.model,
                "plan": self.plan,
                "distortion": self.distortion,
                "accuracy": self.accuracy,
                "export": self.export,
                "parity": self.parity,
                "latency": self.latency,
                "speedups": self.speedups,
                "environment": self.environment,
                "warnings": self.warnings,
                "unverified": self.unverified,
                "plots": self.plots,
            }
        )

    def to_markdown(self) -> str:
        return render_markdown(self)


def environment() -> dict[str, Any]:
    """Versions and machine, so a figure can be traced to where it was measured."""
    import onnx
    import onnxruntime
    import torch

    from aire_export import __version__

    env = {
        "aire_export": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import tensorrt

        env["tensorrt"] = tensorrt.__version__
    except ImportError:
        env["tensorrt"] = None
    return env


def _fmt(value: float | None, spec: str = ".3g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, spec)


def render_markdown(report: Report) -> str:
    r = report
    plan = r.plan
    lines = [
        f"# aire-export report: {Path(r.model.get('path', 'model')).name}",
        "",
        f"**Verdict: {'PASSED' if r.verdict_passed else 'FAILED'}** (exit code {r.exit_code})"
        + ("" if not r.reasons else ": " + "; ".join(r.reasons)),
        "",
        f"Command: `{r.command}`",
        "",
        "## Summary",
        "",
        "| | original | pruned |",
        "|---|---|---|",
        f"| states | {r.model.get('states_before')} | {r.model.get('states_after')} |",
        f"| stored state slots | {r.model.get('states_before')} | {r.model.get('physical_states_after')} |",
        f"| parameters | {r.model.get('parameters_before'):,} | {r.model.get('parameters_after'):,} |",
    ]
    if r.accuracy:
        lines.append(
            f"| accuracy ({r.accuracy.samples} samples) | {100 * r.accuracy.original:.2f} % | "
            f"{100 * r.accuracy.pruned:.2f} % ({-r.accuracy.drop_pp:+.2f} pp) |"
        )
    for s in r.speedups:
        lines.append(f"| latency speedup, {s.runtime} | 1.00× | {s.ratio:.2f}× |")
    lines += [
        "",
        f"Method `{plan.get('method')}`, ratio requested {plan.get('ratio_requested')}, achieved "
        f"{_fmt(plan.get('ratio_achieved'), '.4f')}, threshold τ = {_fmt(plan.get('threshold'))}, "
        f"eps = {plan.get('eps')}.",
        "",
        "## Pruning plan",
        "",
        "| layer | states before | after | certificate bound ‖G−G̃‖∞ | measured H∞ | exact H2 |",
        "|---|---|---|---|---|---|",
    ]
    for layer in plan.get("layers", []):
        cert = layer.get("certificate") or {}
        after = layer.get("states_after")
        lines.append(
            f"| {layer.get('index')} | {layer.get('states_before')} | "
            f"{after}{' (dropped)' if after == 0 else ''} | {_fmt(cert.get('bound'))} | "
            f"{_fmt(cert.get('measured_hinf'))} | {_fmt(cert.get('h2'))} |"
        )
    if r.distortion:
        d = r.distortion
        lines += [
            "",
            "## Pruning distortion (original vs pruned, both PyTorch float64)",
            "",
            f"Relative output error {_fmt(d.normwise_rel)}, max abs {_fmt(d.max_abs)}, top-1 agreement "
            f"{_fmt(d.top1_agreement, '.4f')} over {d.samples} samples.",
        ]
    lines += ["", "## Lowering fidelity (pruned PyTorch float64 vs each runtime)", ""]
    if r.parity:
        lines += [
            "| runtime | precision | output | max abs | max rel | cosine | top-1 | atol / rtol | verdict |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for p in r.parity:
            for o in p.outputs:
                lines.append(
                    f"| {p.runner} | {p.precision} | {o.name} | {_fmt(o.max_abs)} | {_fmt(o.max_rel)} | "
                    f"{_fmt(o.cosine, '.6f')} | {_fmt(o.top1_agreement, '.4f')} | "
                    f"{o.atol:.3g} / {o.rtol:.3g} | "
                    f"{'PASSED' if o.passed else f'FAILED ({o.failing})'} |"
                )
        lines.append("")
        lines += [f"- {o.verdict()}" for p in r.parity for o in p.outputs]
    else:
        lines.append("No runtime was run.")
    if r.latency:
        lines += [
            "",
            "## Latency",
            "",
            "| runner | device | batch × length | p50 ms | p90 ms | p99 ms | mean ms | sequences/s | runs |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for t in r.latency:
            lines.append(
                f"| {t.name} | {t.device} | {t.batch} × {t.length} | {t.p50_ms:.3f} | {t.p90_ms:.3f} | "
                f"{t.p99_ms:.3f} | {t.mean_ms:.3f} | {t.sequences_per_s:,.1f} | {t.runs} |"
            )
        lines.append("")
        lines.append("Original and pruned were timed in the same process, interleaved in rounds.")
    exp = r.export
    if exp:
        lines += ["", "## Export", ""]
        for key in ("target", "scan", "precision", "opset"):
            if key in exp:
                lines.append(f"- {key}: {exp[key]}")
        for name, info in (exp.get("graphs") or {}).items():
            lines.append(f"- `{name}`: {info}")
        check = exp.get("tensorrt_check")
        if check:
            lines.append(f"- TensorRT operator check: {check}")
    if r.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in r.warnings]
    if r.unverified:
        lines += ["", "## Not verified", ""] + [f"- {u}" for u in r.unverified]
    if r.plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in r.plots]
    env = r.environment
    if env:
        lines += [
            "",
            "## Environment",
            "",
            ", ".join(
                f"{k} {v}" for k, v in env.items() if v is not None and not isinstance(v, list)
            ),
        ]
    return "\n".join(lines) + "\n"


def write_plots(report: Report, folder: Path) -> tuple[list[str], str | None]:
    """kept_states.png, scores.png, latency.png; returns (file names, reason if skipped)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "plots skipped: matplotlib is not installed (pip install 'aire-export[plots]')"
    written = []
    layers = report.plan.get("layers", [])
    if layers:
        fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(layers) + 2), 3.2))
        idx = np.arange(len(layers))
        ax.bar(
            idx - 0.2,
            [layer["states_before"] for layer in layers],
            0.4,
            label="before",
            color="#bbbbbb",
        )
        ax.bar(
            idx + 0.2,
            [layer["states_after"] for layer in layers],
            0.4,
            label="after",
            color="#1f77b4",
        )
        ax.set_xticks(idx, [str(layer["index"]) for layer in layers])
        ax.set_xlabel("layer")
        ax.set_ylabel("states")
        achieved = _fmt(report.plan.get("ratio_achieved"), ".3f")
        ax.set_title(f"kept states ({report.plan.get('method')}, ratio {achieved})")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "kept_states.png", dpi=110)
        plt.close(fig)
        written.append("kept_states.png")

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        tau = report.plan.get("threshold")
        for layer in layers:
            scores = np.sort(np.asarray(layer.get("scores") or [], dtype=float))[::-1]
            energies = np.sort(np.asarray(layer.get("energies") or [], dtype=float))[::-1]
            if scores.size:
                axes[0].plot(
                    np.arange(1, scores.size + 1),
                    scores,
                    marker=".",
                    label=f"layer {layer['index']}",
                )
            if energies.size:
                axes[1].plot(
                    np.arange(1, energies.size + 1),
                    np.where(energies > 0, energies, np.nan),
                    marker=".",
                )
        if tau is not None and math.isfinite(tau):
            axes[0].axhline(tau, color="k", linestyle="--", label="τ")
        axes[0].set_yscale("log")
        axes[0].set_xlabel("rank in layer")
        axes[0].set_ylabel("normalized score s (eq. 11)")
        axes[0].legend(fontsize=7)
        axes[1].set_yscale("log")
        axes[1].set_xlabel("rank in layer")
        axes[1].set_ylabel("energy E (eq. 10)")
        fig.suptitle("per-layer spectrum: a layer keeps its prefix with s ≥ τ")
        fig.tight_layout()
        fig.savefig(folder / "scores.png", dpi=110)
        plt.close(fig)
        written.append("scores.png")
    if report.latency:
        fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(report.latency) + 2), 3.4))
        names = [t.name for t in report.latency]
        p50 = [t.p50_ms for t in report.latency]
        err = [t.p90_ms - t.p50_ms for t in report.latency]
        colors = ["#bbbbbb" if "original" in n else "#1f77b4" for n in names]
        ax.bar(range(len(names)), p50, yerr=[np.zeros(len(err)), err], color=colors, capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=8)
        ax.set_ylabel("latency p50 (ms), whisker p90")
        ax.set_title("original (grey) vs pruned (blue)")
        fig.tight_layout()
        fig.savefig(folder / "latency.png", dpi=110)
        plt.close(fig)
        written.append("latency.png")
    return written, None


def write_report(report: Report, folder: Path) -> None:
    """report.json, report.md and the plots, into ``folder``."""
    plots, skipped = write_plots(report, folder)
    report.plots = plots
    if skipped:
        report.warnings.append(skipped)
    (folder / "report.json").write_text(json.dumps(report.to_json(), indent=2, allow_nan=False))
    (folder / "report.md").write_text(report.to_markdown())
