"""Recovery fine-tuning after pruning (DESIGN §3.6; S4oP fine-tunes after every pruning step).

    for epoch in 1..E:   one pass over the training set in shuffled batches (seeded),
                         AdamW(lr, weight decay), cross-entropy (per position for a language
                         model, labels < 0 not scored), gradients clipped to norm ``clip``
                         then the eval accuracy; the best model so far is kept
    stop early           after ``patience`` epochs without a better eval accuracy

The model that comes back is the best one measured, the pruned model itself included (epoch 0):
fine-tuning never returns a model that scores worse on the eval set than its input. The
pruned structure is fixed: only the values of the remaining parameters change, so the result
shrinks, exports and validates like any pruned model.

S4oP's settings for S4D (its pruning_config.py): ListOps 5 epochs, lr 1e-4, weight decay 1e-5,
patience 2; Pathfinder and ECG 20 epochs, patience 6. The defaults here are ListOps'.

The eval set chooses the epoch, so the accuracy reported on that same set after fine-tuning is
optimistic by the selection; the report says so (give a held-out --data to measure it cleanly).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aire_export.data import SequenceData
from aire_export.errors import InputError, RuntimeMissingError
from aire_export.runtimes.torch_runner import TorchRunner
from aire_export.validate.accuracy import accuracy, predict


@dataclass(frozen=True)
class FinetuneOptions:
    """How to fine-tune: S4oP's ListOps settings by default (5 epochs, lr 1e-4, wd 1e-5,
    patience 2); ``device`` "cpu" or "cuda"."""

    epochs: int = 5
    lr: float = 1e-4
    weight_decay: float = 1e-5
    patience: int = 2
    batch_size: int = 32
    clip: float | None = 1.0
    seed: int = 0
    device: str = "cpu"

    def check(self) -> FinetuneOptions:
        if isinstance(self.epochs, bool) or int(self.epochs) < 1:
            raise InputError(f"fine-tuning epochs must be ≥ 1, got {self.epochs}")
        if int(self.batch_size) < 1 or int(self.patience) < 1:
            raise InputError("fine-tuning batch size and patience must be ≥ 1")
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (name == "lr" and value == 0):
                raise InputError(f"fine-tuning {name} must be a finite number > 0, got {value}")
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"fine-tuning device must be cpu or cuda, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeMissingError("--finetune-device cuda: PyTorch sees no CUDA GPU")
        return self


@dataclass(frozen=True)
class EpochRecord:
    epoch: int  # 0: the input model, before any update
    train_loss: float | None
    eval_accuracy: float
    seconds: float


@dataclass
class FinetuneResult:
    """The best model measured and the record of every epoch."""

    model: nn.Module
    history: list[EpochRecord]
    best_epoch: int
    options: FinetuneOptions
    train_source: str
    eval_source: str
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def before(self) -> float:
        return self.history[0].eval_accuracy

    @property
    def after(self) -> float:
        return self.history[self.best_epoch].eval_accuracy

    def to_json(self) -> dict[str, Any]:
        o = self.options
        return {
            "train_data": self.train_source,
            "eval_data": self.eval_source,
            "epochs": o.epochs,
            "lr": o.lr,
            "weight_decay": o.weight_decay,
            "patience": o.patience,
            "batch_size": o.batch_size,
            "seed": o.seed,
            "device": o.device,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "accuracy_before": self.before,
            "accuracy_after": self.after,
            "history": [
                {
                    "epoch": r.epoch,
                    "train_loss": r.train_loss,
                    "eval_accuracy": r.eval_accuracy,
                    "seconds": round(r.seconds, 3),
                }
                for r in self.history
            ],
        }


def _tensors(data: SequenceData, rows: np.ndarray, device: str):
    x = torch.from_numpy(np.ascontiguousarray(data.x[rows])).to(device)
    lengths = None if data.lengths is None else torch.from_numpy(data.lengths[rows]).to(device)
    return x, lengths


def _forward(model: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    return model(x) if lengths is None else model(x, lengths)


def eval_accuracy(model: nn.Module, data: SequenceData, batch_size: int, device: str) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (labels < 0 not scored), PyTorch float32."""
    runner = TorchRunner(model, device)
    return accuracy(predict(runner, data, batch_size=batch_size), data.y).accuracy


def finetune(
    model: nn.Module,
    train: SequenceData,
    held_out: SequenceData,
    options: FinetuneOptions = FinetuneOptions(),
    *,
    progress: Callable[[str], None] | None = None,
) -> FinetuneResult:
    """Fine-tune a copy of ``model`` on ``train`` (labelled), keeping the best epoch on
    ``held_out`` (labelled); the input model is not modified."""
    options.check()
    for name, data in (("training", train), ("eval", held_out)):
        if data.y is None:
            raise InputError(f"fine-tuning needs labels: the {name} data has no 'y'")
    device = options.device
    work = copy.deepcopy(model).to(device=device, dtype=torch.float32)
    rng = np.random.default_rng(options.seed)
    optimizer = torch.optim.AdamW(
        work.parameters(), lr=options.lr, weight_decay=options.weight_decay
    )
    start = time.perf_counter()
    history = [EpochRecord(0, None, eval_accuracy(work, held_out, 64, device), 0.0)]
    best_state = copy.deepcopy(work.state_dict())
    best_epoch, waited, stopped = 0, 0, False
    if progress:
        progress(f"fine-tune: eval accuracy before {100 * history[0].eval_accuracy:.2f} %")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)  # dropout masks
        for epoch in range(1, options.epochs + 1):
            loss = _train_epoch(work, train, optimizer, options, rng)
            score = eval_accuracy(work, held_out, 64, device)
            history.append(EpochRecord(epoch, loss, score, time.perf_counter() - start))
            better = score > history[best_epoch].eval_accuracy
            if better:
                best_epoch, waited = epoch, 0
                best_state = copy.deepcopy(work.state_dict())
            else:
                waited += 1
            if progress:
                progress(
                    f"fine-tune epoch {epoch}/{options.epochs}: loss {loss:.4f}, eval accuracy "
                    f"{100 * score:.2f} %" + (" (best)" if better else "")
                )
            if waited >= options.patience and epoch < options.epochs:
                stopped = True
                break
    work.load_state_dict(best_state)
    best = work.to(device="cpu", dtype=next(model.parameters()).dtype).eval()
    best.meta = copy.deepcopy(getattr(model, "meta", {}))
    return FinetuneResult(
        model=best,
        history=history,
        best_epoch=best_epoch,
        options=options,
        train_source=train.source,
        eval_source=held_out.source,
        stopped_early=stopped,
    )


def _train_epoch(
    model: nn.Module,
    data: SequenceData,
    optimizer: torch.optim.Optimizer,
    options: FinetuneOptions,
    rng: np.random.Generator,
) -> float:
    """One shuffled pass; returns the mean loss per scored label."""
    model.train()
    order = rng.permutation(data.count)
    total, count = 0.0, 0
    for start in range(0, data.count, options.batch_size):
        rows = order[start : start + options.batch_size]
        x, lengths = _tensors(data, rows, options.device)
        y = torch.from_numpy(np.asarray(data.y[rows], dtype=np.int64)).to(options.device)
        out = _forward(model, x, lengths)
        # per sequence (B, C) or per position (B, L, V); log_softmax outputs are fine too
        labels = torch.where(y < 0, -100, y).flatten()  # every negative label: not scored
        loss = F.cross_entropy(out.flatten(0, -2), labels, ignore_index=-100)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if options.clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), options.clip)
        optimizer.step()
        scored = int((y >= 0).sum())
        total += float(loss.detach()) * scored
        count += scored
    return total / max(count, 1)
