"""The score and prune commands, plan.json, and bad input (clear error, exit code, nothing written)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_s4d, make_s5

import aire_export as ax
from aire_export.cli import main
from aire_export.prune import PrunePlan

DESIGN_KEYS = {"method", "ratio_requested", "ratio_achieved", "threshold", "eps", "layers"}
DESIGN_LAYER_KEYS = {"index", "states_before", "states_after", "kept", "energies", "scores"}


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "model.pt"
    ax.save(make_s5(seed=1, state_sizes=(8, 8, 4)), path)
    return path


def test_score_prints_a_table_and_json(model_path, capsys):
    code, out, _ = run(capsys, "score", str(model_path))
    assert code == 0
    assert "energy head" in out and "max |λ̄|" in out
    code, out, _ = run(capsys, "score", str(model_path), "--method", "last", "--json")
    data = json.loads(out)
    assert data["method"] == "last" and data["states"] == 20
    assert [layer["states"] for layer in data["layers"]] == [8, 8, 4]
    expected = ax.score(ax.load(model_path), "last")
    for layer, ref in zip(data["layers"], expected, strict=True):
        np.testing.assert_allclose(layer["scores"], ref.scores)
        assert layer["order"] == ref.order.tolist()


def test_score_shows_units_of_shared_modes(tmp_path, capsys):
    ax.save(make_s4d(shared_A=True), tmp_path / "s4d.pt")
    code, out, _ = run(capsys, "score", str(tmp_path / "s4d.pt"))
    assert code == 0 and "30 (6)" in out and "units" in out


def test_prune_writes_the_model_and_plan_json(model_path, tmp_path, capsys):
    target = tmp_path / "out" / "pruned.pt"
    code, out, err = run(capsys, "prune", str(model_path), "--ratio", "0.5", "-o", str(target))
    assert code == 0, err
    assert "pruned 50.0%" in out and "H∞ bound" in out
    plan = json.loads((target.parent / "plan.json").read_text())
    assert DESIGN_KEYS <= set(plan)
    for layer in plan["layers"]:
        assert DESIGN_LAYER_KEYS | {"certificate"} <= set(layer)
        assert set(layer["certificate"]) >= {"bound", "measured_hinf", "h2"}
    pruned = ax.load(target)
    assert pruned.config.state_sizes == [layer["physical_size"] for layer in plan["layers"]]
    assert sum(pruned.config.state_sizes) == plan["states_after"] == 10
    # the CLI is the library: same plan, same model
    api_model, api_plan = ax.prune(ax.load(model_path), 0.5)
    assert [layer["kept"] for layer in plan["layers"]] == [
        layer.kept.tolist() for layer in api_plan.layers
    ]
    x = torch.randn(2, 11, 3)
    with torch.no_grad():
        assert torch.equal(pruned(x), api_model(x))


def test_prune_json_threshold_and_method_options(model_path, tmp_path, capsys):
    target = tmp_path / "p.pt"
    code, out, _ = run(
        capsys,
        "prune",
        str(model_path),
        "--threshold",
        "0.2",
        "--method",
        "lamp",
        "--no-certificates",
        "--json",
        "-o",
        str(target),
    )
    assert code == 0
    data = json.loads(out)
    assert data["method"] == "lamp" and data["threshold"] == 0.2
    assert data["ratio_requested"] is None
    assert all(layer["certificate"] is None for layer in data["layers"])
    assert json.loads((tmp_path / "plan.json").read_text()) == data


def test_plan_json_round_trips(tmp_path):
    model = make_s5(seed=2, clip_eigs=False)
    with torch.no_grad():
        model.layers[0].seq.Lambda_re[0] = 0.2  # an unstable mode: infinite energy → null
    _, plan = ax.prune(model, 0.6)
    path = plan.save(tmp_path / "plan.json")
    data = json.loads(path.read_text())
    assert data["layers"][0]["energies"][0] is None and data["layers"][0]["unstable"] == [0]
    again = PrunePlan.load(path)
    assert again.to_json() == data
    assert np.isinf(again.layers[0].energies[0])
    assert again.layers[0].certificate == plan.layers[0].certificate


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ratio", "1.0"], r"\[0, 1\)"),
        (["--ratio", "-0.2"], r"\[0, 1\)"),
        (["--threshold", "-1"], "threshold"),
        ([], "exactly one"),
        (["--ratio", "0.5", "--threshold", "0.1"], "exactly one"),
        (["--ratio", "0.5", "--method", "bogus"], "Invalid value"),
        (["--ratio", "0.5", "--eps", "-1"], "eps"),
        (["--ratio", "0.5", "--method", "random", "--score-compat", "official"], "aire and last"),
    ],
)
def test_bad_prune_input_exits_2_and_writes_nothing(model_path, tmp_path, capsys, args, message):
    target = tmp_path / "out" / "pruned.pt"
    code, out, err = run(capsys, "prune", str(model_path), *args, "-o", str(target))
    assert code == 2
    assert message in err or message.replace("\\", "") in err
    assert "Traceback" not in out + err
    assert not (tmp_path / "out").exists()


def test_model_without_ssm_states_is_refused(tmp_path, capsys):
    ax.save(make_s5(state_sizes=(0, 0)), tmp_path / "empty.pt")
    for command in (["score"], ["prune", "--ratio", "0.5", "-o", str(tmp_path / "p.pt")]):
        code, _, err = run(capsys, command[0], str(tmp_path / "empty.pt"), *command[1:])
        assert code == 2 and "no SSM states" in err
    assert not (tmp_path / "p.pt").exists() and not (tmp_path / "plan.json").exists()


def test_missing_model_file_exits_2(tmp_path, capsys):
    code, _, err = run(capsys, "score", str(tmp_path / "nope.pt"))
    assert code == 2 and "no such file" in err


def test_help_lists_the_new_commands(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "score" in out and "prune" in out
    code, out, _ = run(capsys, "prune", "--help")
    assert code == 0 and "--score-compat" in out and "plan.json" in out
