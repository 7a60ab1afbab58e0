"""A labelled set of sequences as the examples store it: ``x``, ``y`` and, when padded, ``lengths``.

The eval files (``examples/data/*_eval.npz``) hold exactly these keys, the format that
``aire-export --data`` reads:

    x        (N, L, d_input) float features, or (N, L) integer token ids padded with 0
    y        (N,) int64 class labels, or (N, L) per-position labels (a language model)
    lengths  (N,) int64 valid steps per sequence (padded sets only; the model's masked pooling)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class SequenceSet:
    x: np.ndarray
    y: np.ndarray
    lengths: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} sequences but y has {len(self.y)} labels")
        if self.lengths is not None and self.lengths.shape != self.y.shape:
            raise ValueError(f"lengths must be ({len(self.y)},), got {self.lengths.shape}")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: np.ndarray) -> SequenceSet:
        return SequenceSet(
            self.x[index], self.y[index], None if self.lengths is None else self.lengths[index]
        )

    def majority_accuracy(self) -> float:
        """Accuracy of always answering this set's most frequent class (the constant baseline)."""
        labels = self.y[self.y >= 0]  # per-position labels: every scored position counts
        return float(np.bincount(labels.ravel()).max() / labels.size)

    def save(self, path: str | Path) -> Path:
        """Write the compressed npz (``x``, ``y``, and ``lengths`` when padded)."""
        arrays = {"x": self.x, "y": self.y}
        if self.lengths is not None:
            arrays["lengths"] = self.lengths
        path = Path(path)
        np.savez_compressed(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SequenceSet:
        with np.load(path) as data:
            lengths = data["lengths"] if "lengths" in data.files else None
            return cls(data["x"], data["y"], lengths)

    def batch(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(x, y, lengths) tensors of the given rows: float32 features or int64 token ids."""
        x = torch.from_numpy(self.x[index])
        x = x.float() if x.is_floating_point() else x.long()
        lengths = None if self.lengths is None else torch.from_numpy(self.lengths[index]).long()
        return x, torch.from_numpy(self.y[index]).long(), lengths


def predict(model: torch.nn.Module, data: SequenceSet, batch_size: int = 64) -> np.ndarray:
    """Predicted classes (N,) of ``model`` in eval mode, batch by batch without gradients."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            x, _, lengths = data.batch(np.arange(start, min(start + batch_size, len(data))))
            lengths = None if lengths is None else lengths.to(device)
            out.append(model(x.to(device), lengths).argmax(-1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def accuracy(model: torch.nn.Module, data: SequenceSet, batch_size: int = 64) -> float:
    """Fraction of ``data``'s labels (sequences, or positions of a language model) that
    ``model`` predicts correctly."""
    return float(np.mean(predict(model, data, batch_size) == data.y))


def write_eval_set(
    make: Callable[[int, int], SequenceSet],
    name: str,
    count: int,
    seed: int,
    argv: list[str] | None = None,
) -> None:
    """The command line of every generator: write ``make(count, seed)`` to ``--out``."""
    parser = argparse.ArgumentParser(description=f"Write the {name} eval set.")
    parser.add_argument("--out", default=f"examples/data/{name}_eval.npz")
    parser.add_argument("--count", type=int, default=count)
    parser.add_argument("--seed", type=int, default=seed)
    args = parser.parse_args(argv)
    data = make(args.count, args.seed)
    print(f"wrote {data.save(args.out)}: {len(data)} sequences, x {data.x.shape} {data.x.dtype}")
