"""The S4oP search (aire_export/s4op.py): S4oP's loop reproduced from a seed, nested pruned
sets, the best candidate carried forward, every step a normal output folder, the energy
selection without seeds, and what is kept when a search stops."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
import torch
from conftest import make_s4d, make_s5, run_cli

import aire_export as ax
from aire_export import s4op
from aire_export.models.mamba import MambaConfig, MambaLM, init_mamba
from aire_export.prune.channels import s4op_budget
from aire_export.report import REPORT_SCHEMA

COMMON = ["--schedule", "0.3,0.6", "--finetune-epochs", "1", "--finetune-lr", "3e-2", "--runs", "3"]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """An S4D model (3 layers × 8 channels) and train/val/test sets it labels itself."""
    folder = tmp_path_factory.mktemp("s4op")
    model = make_s4d(seed=2, state_sizes=(6, 4, 4), d_model=8)
    path = ax.save(model, folder / "m.pt")
    for name, seed in (("train", 1), ("val", 2), ("test", 3)):
        x = np.random.default_rng(seed).standard_normal((48, 16, 3)).astype(np.float32)
        with torch.no_grad():
            y = model(torch.from_numpy(x)).argmax(-1).numpy()
        np.savez(folder / f"{name}.npz", x=x, y=y)
    return folder, path


def _search(capsys, folder, path, out, *extra):
    code, stdout, err = run_cli(
        capsys, "s4op", path, "--train", folder / "train.npz", "--data", folder / "val.npz",
        "--test", folder / "test.npz", *COMMON, *extra, "-o", out,
    )  # fmt: skip
    return code, stdout, err


def test_the_random_search_follows_s4op_and_is_reproduced_by_its_seeds(task, tmp_path, capsys):
    folder, path = task
    code, out, err = _search(capsys, folder, path, tmp_path / "a", "--seeds", "7,42")
    assert code == 0, err
    table = json.loads((tmp_path / "a" / "s4op.json").read_text())
    trials = table["trials"]
    assert [(t["step"], t["seed"]) for t in trials] == [(1, 7), (1, 42), (2, 7), (2, 42)]
    for step, ratio in ((1, 0.3), (2, 0.6)):
        mine = [t for t in trials if t["step"] == step]
        budget = s4op_budget(ratio, 3, 8)
        assert all(t["channels_kept"] == [8 - b for b in budget] for t in mine)
        chosen = [t for t in mine if t["chosen"]]
        assert len(chosen) == 1
        assert chosen[0]["accuracy_after"] == max(t["accuracy_after"] for t in mine)
    first, second = (ax.load(tmp_path / "a" / f"step_{p}" / "pruned.pt") for p in ("30", "60"))
    for a, b in zip(first.config.bypassed_channels, second.config.bypassed_channels, strict=True):
        assert set(a) <= set(b)  # each step's pruned set contains the previous one
    for step in ("step_30", "step_60"):  # normal output folders
        report = json.loads((tmp_path / "a" / step / "report.json").read_text())
        jsonschema.validate(report, REPORT_SCHEMA)
        assert report["plan"]["unit"] == "channel" and report["finetune"] is not None
        fidelity = [c for c in report["verdict"]["checks"] if c["kind"] == "lowering fidelity"]
        assert len(fidelity) == 2 and all(c["passed"] for c in fidelity)  # sequence and step
    listed = json.loads((tmp_path / "a" / "aire-files.json").read_text())["files"]
    assert {"s4op.json", "s4op.md", "step_30/model.onnx", "step_60/pruned.pt"} <= set(listed)
    assert "step" in out and "test" in out

    code, _, err = _search(capsys, folder, path, tmp_path / "b", "--seeds", "7,42")
    assert code == 0, err
    again = json.loads((tmp_path / "b" / "s4op.json").read_text())["trials"]
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(again) == drop(trials)


def test_the_energy_search_needs_no_seeds(task, tmp_path, capsys):
    folder, path = task
    code, _, err = _search(capsys, folder, path, tmp_path / "e", "--select", "energy")
    assert code == 0, err
    trials = json.loads((tmp_path / "e" / "s4op.json").read_text())["trials"]
    assert [(t["step"], t["seed"]) for t in trials] == [(1, None), (2, None)]
    for t, ratio in zip(trials, (0.3, 0.6), strict=True):
        assert sum(t["channels_kept"]) == round((1 - ratio) * 24)
        assert min(t["channels_kept"]) >= 1  # every layer keeps its best channel


def test_a_stopped_search_keeps_its_finished_steps(task, tmp_path, monkeypatch):
    folder, path = task
    calls = []
    real = s4op.finetune

    def stop_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(s4op, "finetune", stop_on_the_third)
    options = s4op.S4opOptions(schedule=(0.3, 0.6), seeds=(7, 42))
    with pytest.raises(KeyboardInterrupt):
        s4op.run_s4op(path, folder / "train.npz", folder / "val.npz", options, out=tmp_path / "s")
    table = json.loads((tmp_path / "s" / "s4op.json").read_text())
    assert [s["step"] for s in table["steps"]] == [1]
    assert (tmp_path / "s" / "step_30" / "model.onnx").is_file()


@pytest.mark.parametrize(
    "extra, message",
    [(["--schedule", "0,0.5"], "(0, 1)"), (["--seeds", "x"], "seeds")],
    ids=["schedule", "seeds"],
)
def test_bad_search_options_are_one_line_errors(task, tmp_path, capsys, extra, message):
    folder, path = task
    code, _, err = _search(capsys, folder, path, tmp_path / "x", *extra)
    assert code == 2 and message in err


def test_an_s5_model_is_searched_over_its_channels(task, tmp_path, capsys):
    folder, _ = task
    s5 = ax.save(make_s5(seed=3, d_input=3, d_model=8, state_sizes=(4, 4, 4)), tmp_path / "s5.pt")
    code, _, err = _search(
        capsys, folder, s5, tmp_path / "s5", "--seeds", "1", "--select", "budget"
    )
    assert code == 0, err
    table = json.loads((tmp_path / "s5" / "s4op.json").read_text())
    for trial in table["trials"]:
        budget = s4op_budget(trial["ratio"], 3, 8)
        assert trial["channels_kept"] == [8 - b for b in budget]
    final = ax.load(tmp_path / "s5" / "step_60" / "pruned.pt")
    assert [len(b) for b in final.config.bypassed_channels] == s4op_budget(0.6, 3, 8)
    assert final.layers[2].seq.B.shape[1] == 8 - s4op_budget(0.6, 3, 8)[2]


def test_a_mamba_model_is_searched_over_its_inner_channels(tmp_path, capsys):
    config = MambaConfig(vocab_size=9, d_model=8, d_inner=16, dt_rank=2, state_sizes=[4, 4])
    model = init_mamba(MambaLM(config), seed=1)
    path = ax.save(model, tmp_path / "mamba.pt")
    folder = tmp_path / "data"
    folder.mkdir()
    for name, seed in (("train", 1), ("val", 2), ("test", 3)):
        x = np.random.default_rng(seed).integers(0, 9, (40, 24))
        with torch.no_grad():
            y = model(torch.from_numpy(x)).argmax(-1).numpy()
        np.savez(folder / f"{name}.npz", x=x, y=y)
    for select in ("random", "energy"):
        out = tmp_path / select
        code, _, err = _search(capsys, folder, path, out, "--seeds", "1", "--select", select)
        assert code == 0, err
        table = json.loads((out / "s4op.json").read_text())
        for trial in table["trials"]:
            assert sum(trial["channels_kept"]) <= round((1 - trial["ratio"]) * 32) + 2
        final = ax.load(out / "step_60" / "pruned.pt")
        assert [final.layers[i].mixer.d_inner for i in (0, 1)] == table["trials"][-1][
            "channels_kept"
        ]


def test_the_budget_search_bypasses_each_layers_lowest_energy_channels(task):
    from aire_export.models import modal_systems
    from aire_export.prune.channels import channel_views
    from aire_export.prune.scores import score_systems

    _, path = task
    model = ax.load(path)
    pruned = s4op.candidate(model, 0.3, "budget", None)
    views = channel_views(model, modal_systems(model))
    for layer, bypassed in zip(
        score_systems(views, "aire"), pruned.config.bypassed_channels, strict=True
    ):
        lowest = np.argsort(layer.energies, kind="stable")[: len(bypassed)]
        assert sorted(lowest.tolist()) == bypassed
    assert [len(b) for b in pruned.config.bypassed_channels] == s4op_budget(0.3, 3, 8)
