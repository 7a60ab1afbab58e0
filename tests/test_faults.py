"""User and environment faults: each maps to its documented exit code with one line that says
what to do, no traceback, nothing written, the input unchanged; "internal error" (exit 1) is
only for bugs. (Checkpoint, data and output faults: test_checkpoints.py, test_validate.py,
test_outputs.py, test_pipeline.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import make_s5
from conftest import run_cli as run

import aire_export as ax

FAST = ["--ratio", "0.5", "--length", "16", "--no-latency"]


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line and not line.startswith("·")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(("error: ", "Error: ")), err
    return lines[0]


@pytest.fixture
def folder(tmp_path, capsys):
    """(original.pt, its output folder) after one successful run."""
    path = ax.save(make_s5(seed=1, state_sizes=(8, 8)), tmp_path / "original.pt")
    assert run(capsys, path, *FAST)[0] == 0
    return path, tmp_path / "original.aire"


def _validate(capsys, folder: Path, original: Path, *extra):
    return run(capsys, "validate", folder, "--original", original, "--length", "16",
               "--no-latency", *extra)  # fmt: skip


@pytest.mark.parametrize(
    "other, message",
    [
        (dict(d_model=5), "is not the model"),  # another width: not its original
        (dict(state_sizes=(6, 8)), "states per layer [6, 8] vs [8, 8] in plan.json"),
    ],
)
def test_validate_with_another_models_original_is_bad_input(
    tmp_path, capsys, folder, other, message
):
    _, out = folder
    options = dict(seed=1, state_sizes=(8, 8)) | other
    stranger = ax.save(make_s5(**options), tmp_path / "stranger.pt")
    code, _, err = _validate(capsys, out, stranger)
    assert code == 2 and message in _one_error_line(err)


def test_validate_with_a_resaved_original_warns_that_its_bytes_differ(tmp_path, capsys, folder):
    original, out = folder
    model = ax.load(original)
    model.meta["note"] = "re-saved"
    resaved = ax.save(model, tmp_path / "resaved.pt")
    code, out_text, _ = _validate(capsys, out, resaved, "--json")
    assert code == 0
    assert any("sha256 differs" in w for w in json.loads(out_text)["warnings"])


def test_validate_with_a_corrupt_graph_is_bad_input(capsys, folder):
    original, out = folder
    (out / "model.onnx").write_bytes(b"\x08\x07garbage" * 50)
    code, _, err = _validate(capsys, out, original)
    assert code == 2 and "not a readable ONNX graph" in _one_error_line(err)


def test_validate_with_another_models_graph_is_bad_input_or_a_failed_gate(tmp_path, capsys, folder):
    """A graph with other inputs is a bad input (2); one with the same inputs and outputs but
    other weights is what the parity gate exists for (3)."""
    original, out = folder
    other = ax.save(make_s5(seed=1, state_sizes=(8, 8), d_input=5), tmp_path / "o.pt")
    ax.export(ax.load(other), tmp_path / "o", step=False)
    shutil.copy(tmp_path / "o" / "model.onnx", out / "model.onnx")
    code, _, err = _validate(capsys, out, original)
    assert code == 2 and "is not a graph of this model" in _one_error_line(err)
    twin = ax.save(make_s5(seed=9, state_sizes=(4, 4)), tmp_path / "t.pt")
    ax.export(ax.load(twin), tmp_path / "t", step=False)
    shutil.copy(tmp_path / "t" / "model.onnx", out / "model.onnx")
    code, out_text, _ = _validate(capsys, out, original, "--json")
    assert (
        code == 3
        and "parity failed for model.onnx" in json.loads(out_text)["verdict"]["reasons"][0]
    )


@pytest.mark.parametrize(
    "typo, command", [("inpsect", "inspect"), ("sweeep", "sweep"), ("profle", "profile")]
)
def test_a_mistyped_command_names_the_command_meant(tmp_path, capsys, monkeypatch, typo, command):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, typo, "model.pt")
    assert code == 2 and f"did you mean `aire-export {command}`" in _one_error_line(err)


def test_a_missing_model_that_looks_like_no_command_says_no_such_file(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "my_model.pt", "--ratio", "0.5")
    assert code == 2 and "no such file" in _one_error_line(err)
