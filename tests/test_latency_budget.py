"""--latency-budget (validate/budget.py): the least pruning whose measured latency meets the
budget, the curve it measured in the report, clear errors. The search logic is tested with a
stand-in clock (no timing assertion in a unit test); the real clock runs end to end with
budgets no machine can miss or meet."""

from __future__ import annotations

import json

import jsonschema
import pytest
from conftest import make_s4d, run_cli

import aire_export as ax
from aire_export.errors import InputError
from aire_export.report import REPORT_SCHEMA
from aire_export.validate import budget


@pytest.fixture
def model_path(tmp_path):
    return ax.save(make_s4d(seed=3, state_sizes=(16, 16), d_model=8), tmp_path / "m.pt")


def _size_clock(monkeypatch, calls):
    """Latency ∝ the graph's size: falls as states are pruned, deterministic."""

    def fake(path, runtime, feeds, *, warmup, runs):
        ms = path.stat().st_size / 1e4
        calls.append(ms)
        return ms, 0.9 * ms, 1.1 * ms, runs

    monkeypatch.setattr(budget, "graph_latency", fake)


def test_the_least_pruning_that_meets_the_budget_is_chosen(model_path, monkeypatch):
    _size_clock(monkeypatch, [])
    model = ax.load(model_path)
    full = budget.search_latency_budget(model, 1e9, target="onnx", length=20)
    assert full.ratio == 0.0 and len(full.curve) == 1
    unpruned = full.curve[0].p50_ms
    result = budget.search_latency_budget(model, 0.8 * unpruned, target="onnx", length=20)
    ratios = [p.ratio for p in result.curve]
    assert ratios == sorted(ratios) and ratios[-1] == result.ratio > 0
    assert (
        result.chosen.p50_ms <= result.budget_ms and result.chosen.confirmed_ms <= result.budget_ms
    )
    assert all(p.p50_ms > result.budget_ms for p in result.curve[:-1])
    assert all(p.confirmed_ms is None for p in result.curve[:-1])


def test_a_point_that_does_not_confirm_is_passed_over(model_path, monkeypatch):
    readings = iter([3.0, 0.9, 1.1, 0.8, 0.95])  # ratio 0; 0.05 meets, then fails; 0.1 meets twice

    def fake(path, runtime, feeds, *, warmup, runs):
        ms = next(readings)
        return ms, ms, ms, runs

    monkeypatch.setattr(budget, "graph_latency", fake)
    result = budget.search_latency_budget(ax.load(model_path), 1.0, target="onnx", length=20)
    assert result.ratio == 0.1
    assert [p.confirmed_ms for p in result.curve] == [None, 1.1, 0.95]


def test_no_ratio_fast_enough_is_one_clear_error(model_path, monkeypatch):
    _size_clock(monkeypatch, [])
    with pytest.raises(InputError, match=r"no ratio up to 0\.95 meets"):
        budget.search_latency_budget(ax.load(model_path), 1e-9, target="onnx", length=20)


@pytest.mark.parametrize("target", ["trt", "jetson"])
def test_tensorrt_targets_are_refused(target):
    with pytest.raises(InputError, match="TensorRT"):
        budget.budget_runtime(target)


def test_the_whole_job_records_the_curve_and_refuses_a_ratio_beside_a_budget(
    model_path, tmp_path, capsys
):
    code, out, err = run_cli(
        capsys, model_path, "--latency-budget", "1e6", "--runs", "3", "-o", tmp_path / "out"
    )
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    jsonschema.validate(report, REPORT_SCHEMA)
    search = report["latency_search"]
    assert search["ratio"] == 0.0 and search["batch"] == 1 and search["curve"][0]["runs"] == 100
    assert report["plan"]["ratio_requested"] == 0.0
    assert (
        "latency budget" in out and "Latency budget" in (tmp_path / "out" / "report.md").read_text()
    )

    code, _, err = run_cli(
        capsys, model_path, "--latency-budget", "1e-9", "--runs", "3", "-o", tmp_path / "o2"
    )
    assert code == 2 and "no ratio up to" in err and not (tmp_path / "o2").exists()
    code, _, err = run_cli(
        capsys, model_path, "--latency-budget", "5", "--ratio", "0.5", "-o", tmp_path / "o3"
    )
    assert code == 2 and "chooses the ratio" in err
