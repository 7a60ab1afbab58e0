"""Sweeps over ratios and methods, and the accuracy-budget search (--max-drop)."""

from __future__ import annotations

import csv
import io
import itertools
import json

import numpy as np
import pytest
import torch
from conftest import make_s5

from aire_export.data import SequenceData
from aire_export.errors import InputError
from aire_export.sweep import (
    SweepResult,
    parse_ratios,
    plot_accuracy_panels,
    search_max_drop,
    sweep,
    write_sweep,
)


@pytest.fixture(scope="module")
def task():
    """A model and inputs labelled by the model itself: the unpruned accuracy is exactly 1."""
    model = make_s5(seed=5, state_sizes=(16, 16), d_model=8)
    x = np.random.default_rng(0).standard_normal((96, 40, 3)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(-1).numpy()
    return model, SequenceData(x=x, lengths=None, y=y, source="self-labelled")


RATIOS = (0.0, 0.25, 0.5, 0.75, 0.9)


def test_sweep_is_deterministic_with_one_row_per_method_and_ratio(task):
    model, data = task
    methods = ("aire", "last", "random")
    first = sweep(model, data, methods=methods, ratios=RATIOS, seed=3)
    again = sweep(model, data, methods=methods, ratios=RATIOS, seed=3)
    assert first.to_csv() == again.to_csv()
    rows = list(csv.DictReader(io.StringIO(first.to_csv())))
    assert [(r["method"], float(r["ratio"])) for r in rows] == [
        (m, r) for m in methods for r in RATIOS
    ]
    assert first.baseline_accuracy == 1.0
    zero = next(p for p in first.points if p.method == "aire" and p.ratio == 0.0)
    assert zero.accuracy == 1.0 and zero.distortion < 1e-6 and zero.states_kept == first.states


@pytest.mark.parametrize("method", ["aire", "last", "hinf-global", "magnitude-global"])
def test_kept_sets_shrink_as_the_ratio_grows(task, method):
    model, data = task
    points = sweep(model, data, methods=(method,), ratios=RATIOS).points
    for smaller, larger in itertools.pairwise(points):
        for kept_small, kept_large in zip(smaller.kept_units, larger.kept_units, strict=True):
            assert set(kept_large) <= set(kept_small)
        assert larger.states_kept <= smaller.states_kept


def test_max_drop_returns_a_ratio_within_budget_and_the_next_grid_step_is_not(task):
    model, data = task
    budget = 5.0
    found = search_max_drop(model, data, budget, ratios=RATIOS, bisections=3)
    assert found.drop_pp <= budget
    assert found.ratio >= 0
    if found.next_grid_ratio is not None:
        assert found.next_grid_drop_pp > budget
        assert found.ratio < found.next_grid_ratio
    assert any(p.ratio == found.ratio for p in found.curve)
    grid_within = [p.ratio for p in found.curve[: len(RATIOS)] if p.drop_pp <= budget]
    assert found.ratio >= max(grid_within)


def test_max_drop_with_an_impossible_budget_is_explained(task):
    model, data = task
    with pytest.raises(InputError, match="no ratio of the grid"):
        search_max_drop(model, data, 0.0, ratios=(0.9, 0.95))


def test_sweep_files_and_plots_are_written(tmp_path, task):
    model, data = task
    result = sweep(model, data, methods=("aire", "last"), ratios=(0.0, 0.5), seed=7)
    written = write_sweep(result, tmp_path)
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["seed"] == 7 and saved["balance_channels"] is True  # reproducible from the file
    assert {"sweep.csv", "sweep.json", "accuracy.png", "kept_states.png"} <= set(written)
    for name in written:
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_ratio_grids_parse():
    assert (
        parse_ratios("0:0.95:0.05")[-1] == pytest.approx(0.95)
        and len(parse_ratios("0:0.95:0.05")) == 20
    )
    assert parse_ratios("0.7,0.1") == (0.1, 0.7)
    for bad in ("0:1:0.5", "a,b", "0:0.5:0", "1.2"):
        with pytest.raises(InputError):
            parse_ratios(bad)
    with pytest.raises(InputError, match="holds no ratio: START:STOP:STEP needs START ≤ STOP"):
        parse_ratios("0.5:0.1:0.1")


def test_a_sweep_reads_back_from_its_json_and_plots_as_panels(tmp_path, task):
    model, data = task
    result = sweep(model, data, methods=("aire", "random"), ratios=(0.0, 0.5))
    again = SweepResult.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result
    plot_accuracy_panels({"a": result, "b": again}, tmp_path / "all.png")
    assert (tmp_path / "all.png").read_bytes()[:4] == b"\x89PNG"


def test_a_sweep_evaluates_each_distinct_pruned_model_once(task, monkeypatch):
    """Every method keeps every unit at ratio 0: that model is evaluated once, not per method
    (a digits sweep of 5 methods spent 4 of its 15 evaluations on it)."""
    from aire_export.validate.evaluate import Evaluator

    calls = []
    real = Evaluator.outputs
    monkeypatch.setattr(Evaluator, "outputs", lambda self, m: calls.append(1) or real(self, m))
    model, data = task
    result = sweep(model, data, methods=("aire", "last", "random"), ratios=(0.0, 0.5))
    distinct = {tuple(map(tuple, p.kept_units)) for p in result.points}
    assert len(calls) == 1 + len(distinct) < 1 + len(result.points)
    assert {p.accuracy for p in result.points if p.ratio == 0.0} == {1.0}
