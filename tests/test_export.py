"""The export API and CLI: options, files, errors, the auto choice, and the example models."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from conftest import make_s4d, make_s5, rel_err
from lowering import random_input, reference, run_sequence

import aire_export as ax
from aire_export.cli import main
from aire_export.errors import InputError
from aire_export.graphs import auto, selective
from aire_export.graphs.lowering import METHODS
from aire_export.lower import export
from aire_export.models import export_ir

EXAMPLES = sorted((Path(__file__).parents[1] / "examples" / "checkpoints").glob("*.pt"))


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(target="tpu"), "target"),
        (dict(scan="fft"), "scan"),
        (dict(precision="int8"), "precision"),
        (dict(opset=13), "opset"),
        (dict(target="jetson", opset=21), "opset"),
        (dict(max_length=0), "max_length"),
    ],
)
def test_bad_options_are_input_errors(tmp_path, options, message):
    with pytest.raises(InputError, match=message):
        export(make_s5(), tmp_path, **options)
    assert not (tmp_path / "model.onnx").exists()


def test_export_writes_both_graphs_and_describes_them(tmp_path):
    result = ax.export(make_s5(seed=1), tmp_path / "out", scan="logdepth", max_length=300)
    assert result.sequence.path == tmp_path / "out" / "model.onnx"
    assert result.step.path == tmp_path / "out" / "model.step.onnx"
    assert result.sequence.path.is_file() and result.step.path.is_file()
    assert result.sequence.scan == "logdepth" and result.sequence.max_length == 512
    assert result.step.mode == "step" and result.step.max_length is None
    assert result.check is None and result.step_skipped is None
    assert not list((tmp_path / "out").glob(".*tmp"))  # written atomically
    data = result.to_json()
    assert data["sequence"]["inputs"][0] == {
        "name": "x",
        "dtype": "float32",
        "shape": ["batch", "length", 3],
    }


def test_auto_follows_the_table_per_target_and_layer(tmp_path):
    """Each layer gets the first matching row of AUTO_TABLE for its device, core type and state
    count: on the CPU dense cores are chunked; on a GPU target P ≤ 64 is chunked and larger P
    block-Toeplitz (DESIGN §4's H100 crossover); S4D banks on the CPU get Toeplitz chunks
    with a Scan carry (Q = 32)."""
    model = make_s5(seed=2, state_sizes=(40, 100))  # pruned to 40 and 100 stored states
    assert export(model, tmp_path / "onnx", target="onnx", step=False).sequence.scan == "chunked"
    trt = export(model, tmp_path / "trt", target="trt", step=False).sequence
    assert trt.scan == "chunked,toeplitz"
    assert all(rule.source for rule in auto.AUTO_TABLE)
    s4d = make_s4d(seed=2)
    (block,) = export_ir(s4d).blocks[:1]
    rule = auto.auto_rule(block.core, "cpu")
    assert (rule.method, rule.toeplitz_chunk) == ("scan", 32)
    graph = onnx.load(export(s4d, tmp_path / "s4d", step=False).sequence.path)
    ops = {node.op_type for node in graph.graph.node}
    assert "Scan" in ops and "MatMul" in ops


def test_cli_export_writes_graphs_and_reports_json(tmp_path, capsys):
    ax.save(make_s5(seed=3), tmp_path / "m.pt")
    code = main(["export", str(tmp_path / "m.pt"), "-o", str(tmp_path / "out"), "--target", "trt"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "model.onnx" in out and "model.step.onnx" in out and "check passed" in out
    code = main(
        ["export", str(tmp_path / "m.pt"), "-o", str(tmp_path / "j"), "--scan", "scan", "--json"]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["sequence"]["scan"] == "scan" and data["step"]["mode"] == "step"


def test_cli_export_of_bidirectional_model_with_step_is_a_bad_input(tmp_path, capsys):
    ax.save(make_s5(bidirectional=True), tmp_path / "m.pt")
    code = main(["export", str(tmp_path / "m.pt"), "-o", str(tmp_path / "o"), "--step"])
    assert code == 2 and "bidirectional" in capsys.readouterr().err
    code = main(["export", str(tmp_path / "m.pt"), "-o", str(tmp_path / "o")])
    assert code == 0 and "no step graph: bidirectional" in capsys.readouterr().out


@pytest.mark.skipif(not EXAMPLES, reason="no example checkpoints (examples/checkpoints/*.pt)")
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_models_export_faithfully(tmp_path, path):
    """Every lowering of every shipped model at lengths 1, 17 and 1024 (16384: -m slow, in
    test_lowering_parity.py). Export time is a benchmark (benchmarks/export_cost.py)."""
    model = ax.load(path)
    for method in selective.METHODS if model.arch == "mamba" else METHODS:
        result = export(model, tmp_path / method, scan=method)
        for length in (1, 17, 1024):
            x = random_input(model, 1, length, seed=9)
            err = rel_err(run_sequence(result.sequence.path, x), reference(model, x))
            assert err <= 1e-5, f"{method} at length {length}: relative error {err:.2e}"


@pytest.mark.parametrize("make", [make_s5, make_s4d])
def test_export_leaves_the_model_unchanged(tmp_path, make):
    model = make(seed=4)
    x = random_input(model, 1, 20)
    with torch.no_grad():
        before = model(x)
    export(model, tmp_path)
    with torch.no_grad():
        assert torch.equal(model(x), before)
