"""Outputs of a runner over a data set, in batches, and task accuracy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from aire_export.data import SequenceData
from aire_export.runtimes.base import Runner


def predict(
    runner: Runner,
    data: SequenceData,
    *,
    batch_size: int = 64,
    output: str = "y",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """``runner``'s output ``output`` for every row of ``data``, batch by batch."""
    pieces = []
    for start in range(0, data.count, batch_size):
        stop = min(start + batch_size, data.count)
        pieces.append(runner.run(data.feeds(start, stop))[output])
        if progress:
            progress(stop - start)
    return np.concatenate(pieces, axis=0)


@dataclass(frozen=True)
class AccuracyResult:
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> AccuracyResult:
    """Top-1 accuracy of (N, classes) outputs against (N,) labels, or of per-token outputs
    (N, L, classes) against (N, L) labels; negative labels (−100) are not scored."""
    labels = np.asarray(labels)
    scored = labels >= 0
    correct = int(np.sum((np.asarray(outputs).argmax(-1) == labels) & scored))
    return AccuracyResult(correct=correct, total=int(scored.sum()))


@dataclass(frozen=True)
class AccuracySummary:
    """Task accuracy of original and pruned (PyTorch, float32) on one eval set, and the gate:
    the pruned model passes when its drop is within ``budget_pp`` points (None: no gate)."""

    data: str
    samples: int
    original: float
    pruned: float
    budget_pp: float | None = None

    @property
    def drop_pp(self) -> float:
        """Accuracy drop in percentage points (positive = pruned is worse)."""
        return 100 * (self.original - self.pruned)

    @property
    def passed(self) -> bool | None:
        """Within the budget (None without one). 1e-9 absorbs the rounding of 100·(a − b)."""
        return None if self.budget_pp is None else self.drop_pp <= self.budget_pp + 1e-9

    def to_json(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "samples": self.samples,
            "original": self.original,
            "pruned": self.pruned,
            "drop_pp": self.drop_pp,
            "budget_pp": self.budget_pp,
            "passed": self.passed,
        }
