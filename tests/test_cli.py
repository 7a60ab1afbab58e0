"""The command line: inspect, import, and exit codes for user mistakes."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import OFFICIAL, make_s5
from conftest import run_cli as run

import aire_export as ax


def test_help_teaches_the_commands(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for word in ("inspect", "import", "Exit codes"):
        assert word in out


def test_import_then_inspect_official_checkpoint(tmp_path, capsys):
    target = tmp_path / "model.pt"
    code, out, err = run(
        capsys,
        "import",
        "s5-flax",
        str(OFFICIAL / "best_state.msgpack"),
        "--config",
        str(OFFICIAL / "config.json"),
        "-o",
        str(target),
    )
    assert code == 0, err
    assert "48 states" in out and target.exists()
    code, out, _ = run(capsys, "inspect", str(target))
    assert code == 0
    assert "S5, 3 layers" in out and "bidirectional" in out
    code, out, _ = run(capsys, "inspect", str(target), "--json")
    data = json.loads(out)
    assert data["arch"] == "s5" and data["states"] == 48 and data["unstable"] == 0
    assert [layer["states"] for layer in data["layers"]] == [16, 16, 16]
    assert all(0.99 < layer["max_abs_lambda"] < 1 for layer in data["layers"])


def test_inspect_counts_unstable_states(tmp_path, capsys):
    model = make_s5(clip_eigs=False)
    with torch.no_grad():
        model.layers[1].seq.Lambda_re[:2] = 0.5
    ax.save(model, tmp_path / "m.pt")
    code, out, _ = run(capsys, "inspect", str(tmp_path / "m.pt"), "--json")
    assert code == 0
    data = json.loads(out)
    assert [layer["unstable"] for layer in data["layers"]] == [0, 2]
    assert data["layers"][1]["slowest_decay_steps"] is None  # infinite
    code, out, _ = run(capsys, "inspect", str(tmp_path / "m.pt"))
    assert "2 state(s) have |λ̄| ≥ 1" in out


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["inspect", "missing.pt"], 2, "no such file"),
        (["inspect", "--bogus"], 2, "No such option"),
        (
            ["import", "s5-flax", str(OFFICIAL / "best_state.msgpack"), "-o", "x.pt"],
            2,
            "run_args.json",
        ),
        (["import", "tf-keras", "x", "-o", "y.pt"], 2, "Invalid value"),
    ],
)
def test_user_mistakes_exit_with_a_one_line_message(
    tmp_path, monkeypatch, capsys, args, code, message
):
    monkeypatch.chdir(tmp_path)
    got, out, err = run(capsys, *args)
    assert got == code
    assert message in err
    assert "Traceback" not in err + out
    assert not (tmp_path / "x.pt").exists()


def test_pickle_with_code_exits_2(tmp_path, capsys):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    code, _, err = run(capsys, "inspect", str(tmp_path / "evil.pt"))
    assert code == 2 and "could run code" in err


def test_a_stable_mode_near_one_never_reads_as_one_in_inspect():
    from aire_export.cli.render import _magnitude

    assert _magnitude(0.9999999) == "1 − 1.0e-07" and _magnitude(0.5) == "0.500000"
    assert _magnitude(1.0) == "1.000000" and _magnitude(1.0000001) == "1.000000"
