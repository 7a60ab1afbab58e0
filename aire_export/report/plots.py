"""The report's plots (matplotlib, the ``plots`` extra): kept states per layer, the per-layer
score and energy spectra, latency side by side. Without matplotlib they are skipped and the
report says so."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aire_export.json_values import finite_or_none
from aire_export.report.markdown import fmt

if TYPE_CHECKING:
    from aire_export.report.record import Report


def _descending_finite(values: np.ndarray) -> np.ndarray:
    """Values sorted largest first, non-finite ones (always-kept units) as NaN (not drawn)."""
    values = np.asarray(values, dtype=float)
    return np.sort(np.where(np.isfinite(values), values, np.nan))[::-1]


def write_plots(report: Report, folder: Path) -> tuple[list[str], str | None]:
    """kept_states.png, scores.png, latency.png; returns (file names, reason if skipped)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "plots skipped: matplotlib is not installed (pip install 'aire-export[plots]')"
    written = []
    layers = report.plan.layers if report.plan is not None else []
    if layers:
        fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(layers) + 2), 3.2))
        idx = np.arange(len(layers))
        ax.bar(
            idx - 0.2,
            [layer.states_before for layer in layers],
            0.4,
            label="before",
            color="#bbbbbb",
        )
        ax.bar(
            idx + 0.2,
            [layer.states_after for layer in layers],
            0.4,
            label="after",
            color="#1f77b4",
        )
        ax.set_xticks(idx, [str(layer.index) for layer in layers])
        ax.set_xlabel("layer")
        ax.set_ylabel("states")
        achieved = fmt(report.plan.ratio_achieved, ".3f")
        ax.set_title(f"kept states ({report.plan.method}, ratio {achieved})")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "kept_states.png", dpi=110)
        plt.close(fig)
        written.append("kept_states.png")

        if any(layer.scores.size for layer in layers):  # an S4oP draw has no scores
            fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
            tau = finite_or_none(report.plan.threshold)
            for layer in layers:
                scores = _descending_finite(layer.scores)
                energies = _descending_finite(layer.energies)
                if scores.size:
                    axes[0].plot(
                        np.arange(1, scores.size + 1),
                        scores,
                        marker=".",
                        label=f"layer {layer.index}",
                    )
                if energies.size:
                    axes[1].plot(
                        np.arange(1, energies.size + 1),
                        np.where(energies > 0, energies, np.nan),
                        marker=".",
                    )
            if tau is not None:
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
    latency = report.validation.latency
    if latency:
        fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(latency) + 2), 3.4))
        names = [t.name for t in latency]
        p50 = [t.p50_ms for t in latency]
        err = [t.p90_ms - t.p50_ms for t in latency]
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
