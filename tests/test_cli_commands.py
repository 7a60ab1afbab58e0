"""sweep, validate and profile from the command line."""

from __future__ import annotations

import csv
import json

import numpy as np
from conftest import run_cli as run

import aire_export as ax


def test_sweep_writes_one_csv_row_per_method_and_ratio(tmp_path, labelled, capsys):
    model, data = labelled
    code, out, err = run(
        capsys, "sweep", model, "--data", data, "--methods", "aire,last", "--ratios", "0,0.5,0.9"
    )
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "m.sweep" / "sweep.csv").open()))
    assert len(rows) == 6 and {r["method"] for r in rows} == {"aire", "last"}
    assert (tmp_path / "m.sweep" / "accuracy.png").stat().st_size > 0
    assert "largest grid ratio within 1.0 pp" in out
    assert "sweep 6/6: last at ratio 0.900" in err  # not a terminal: one progress line per point


def test_sweep_refuses_unknown_methods_and_missing_labels(tmp_path, labelled, capsys):
    model, data = labelled
    assert run(capsys, "sweep", model, "--data", data, "--methods", "aire,nope")[0] == 2
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((2, 5, 3), np.float32))
    code, _, err = run(capsys, "sweep", model, "--data", tmp_path / "nolabels.npz")
    assert code == 2 and "no labels" in err


def test_validate_rechecks_an_output_folder(tmp_path, labelled, capsys):
    model, data = labelled
    assert run(capsys, model, "--ratio", "0.5", "--length", "30", "--no-latency")[0] == 0
    folder = tmp_path / "m.aire"
    code, out, err = run(
        capsys, "validate", folder, "--original", model, "--data", data, "--no-latency", "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["parity"][0]["outputs"][0]["passed"] and result["accuracy"]["samples"] == 24
    code, _, _ = run(
        capsys,
        "validate",
        folder,
        "--original",
        model,
        "--atol",
        "1e-30",
        "--rtol",
        "1e-30",
        "--no-latency",
        "--length",
        "30",
    )
    assert code == 3
    code, _, err = run(capsys, "validate", tmp_path, "--original", model)
    assert code == 2 and "written by aire-export" in err


def test_profile_compares_models_side_by_side(tmp_path, labelled, capsys):
    model, _ = labelled
    pruned, _ = ax.prune(ax.load(model), 0.5)
    small = ax.save(pruned, tmp_path / "small.pt")
    code, out, err = run(
        capsys, "profile", model, small, "--length", "32", "--batch", "2", "--runs", "3", "--json"
    )
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 4 and all(r["runs"] == 3 and r["p50_ms"] > 0 for r in rows)
    assert {r["name"].split(" ", 1)[0] for r in rows} == {"m.pt", "small.pt"}
