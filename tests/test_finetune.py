"""Recovery fine-tuning (aire_export/finetune.py): it raises a pruned shipped model's accuracy,
keeps the best epoch (the input included), stops on patience, scores only labels ≥ 0, and the
whole job writes the fine-tuned model and its record."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from conftest import make_s4d, run_cli

import aire_export as ax
from aire_export.data import SequenceData
from aire_export.errors import InputError
from aire_export.finetune import FinetuneOptions, eval_accuracy, finetune
from aire_export.report import REPORT_SCHEMA

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _labelled(model, count: int, length: int, seed: int, source: str) -> SequenceData:
    """Inputs labelled by ``model`` itself: the unpruned model scores 100 % on them."""
    x = np.random.default_rng(seed).standard_normal((count, length, model.config.d_input))
    x = x.astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(-1).numpy()
    return SequenceData(x, None, y, source)


def test_fine_tuning_a_70_percent_pruned_shipped_model_raises_its_accuracy():
    sys.path.insert(0, str(EXAMPLES))
    from data_digits import digit_splits

    train, held_out = digit_splits()
    model = ax.load(EXAMPLES / "checkpoints" / "s5_digits.pt")
    pruned, _ = ax.prune(model, 0.7, certificates=False)
    rows = np.random.default_rng(0).permutation(len(train.y))[:256]
    train = SequenceData(train.x[rows], None, train.y[rows], "digits train")
    held_out = SequenceData(held_out.x[:120], None, held_out.y[:120], "digits eval")
    options = FinetuneOptions(epochs=1, lr=3e-3, seed=0)
    result = finetune(pruned, train, held_out, options)
    assert result.after >= result.before + 0.03  # measured: 9.17 % → 15.83 %
    assert eval_accuracy(result.model, held_out, 64, "cpu") == pytest.approx(result.after)
    assert eval_accuracy(pruned, held_out, 64, "cpu") == pytest.approx(result.before)  # untouched
    assert result.model.config == pruned.config  # the pruned structure is kept


def test_the_best_epoch_is_kept_even_when_it_is_the_input_and_patience_stops_early():
    model = make_s4d(seed=1)
    data = _labelled(model, 48, 20, 0, "self-labelled")
    result = finetune(model, data, data, FinetuneOptions(epochs=6, lr=5.0, patience=2))
    assert result.before == 1.0 and result.best_epoch == 0
    assert result.stopped_early and len(result.history) == 3  # epochs 0, 1, 2
    assert all(h.eval_accuracy < 1.0 for h in result.history[1:])
    for name, value in model.state_dict().items():
        assert torch.equal(result.model.state_dict()[name], value)


def test_a_language_model_is_tuned_per_position_and_negative_labels_are_not_scored():
    from test_mamba import small_mamba

    model = small_mamba()
    x = np.random.default_rng(0).integers(0, model.config.vocab_size, (16, 24))
    y = np.roll(x, -1, axis=1)
    y[:, :12] = -100  # only the second half is scored
    data = SequenceData(x, None, y, "tokens")
    result = finetune(model, data, data, FinetuneOptions(epochs=2, lr=1e-2))
    assert result.after > result.before
    scrambled = SequenceData(x, None, np.where(y < 0, -7, y), "tokens")
    assert eval_accuracy(result.model, scrambled, 8, "cpu") == pytest.approx(result.after)


@pytest.mark.parametrize(
    "options",
    [{"epochs": 0}, {"lr": 0.0}, {"lr": float("nan")}, {"patience": 0}, {"device": "tpu"}],
    ids=lambda o: next(iter(o)),
)
def test_bad_fine_tuning_options_are_refused(options):
    with pytest.raises(InputError):
        FinetuneOptions(**options).check()


def test_the_whole_job_writes_the_fine_tuned_model_and_its_record(tmp_path, capsys):
    model = make_s4d(seed=2)
    path = ax.save(model, tmp_path / "m.pt")
    for name, seed in (("train", 1), ("eval", 2)):
        d = _labelled(model, 40, 16, seed, name)
        np.savez(tmp_path / f"{name}.npz", x=d.x, y=d.y)
    args = [path, "--ratio", "0.6", "--unit", "channel", "--data", tmp_path / "eval.npz"]
    code, out, err = run_cli(
        capsys, *args, "--finetune", tmp_path / "train.npz", "--finetune-epochs", "3",
        "--finetune-lr", "3e-2", "--no-accuracy-gate", "--runs", "3", "-o", tmp_path / "out",
    )  # fmt: skip
    assert code == 0, err
    assert "fine-tuned on" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    jsonschema.validate(report, REPORT_SCHEMA)
    tuned = report["finetune"]
    assert tuned["accuracy_after"] >= tuned["accuracy_before"]
    assert report["accuracy"]["pruned"] == pytest.approx(tuned["accuracy_after"], abs=1e-9)
    assert any("optimistic" in w for w in report["warnings"])
    assert "Recovery fine-tuning" in (tmp_path / "out" / "report.md").read_text()
    written = ax.load(tmp_path / "out" / "pruned.pt")
    plain, _ = ax.prune(model, 0.6, unit="channel")
    differs = [
        not torch.equal(a, b) for a, b in zip(written.parameters(), plain.parameters(), strict=True)
    ]
    assert any(differs) == (tuned["best_epoch"] > 0)

    code, _, err = run_cli(
        capsys, *args[:5], "--finetune", tmp_path / "train.npz", "-o", tmp_path / "x"
    )
    assert code == 2 and "--data" in err  # no eval set to choose the epoch
    np.savez(tmp_path / "unlabelled.npz", x=np.zeros((4, 16, 3), np.float32))
    code, _, err = run_cli(
        capsys, *args, "--finetune", tmp_path / "unlabelled.npz", "-o", tmp_path / "y"
    )
    assert code == 2 and [line for line in err.splitlines() if "error" in line] == [
        err.splitlines()[-1]
    ]
