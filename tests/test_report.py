"""report.json follows its schema (report/schema.py), and one verdict decides every exit code.

Deliberate changes, each pinned here: ``schema_version`` is new (2: the verdict lists its
checks, parity says what it covered, accuracy is gated, the --max-drop search is recorded);
``accuracy.runtimes`` (never filled) is gone; ``validate`` takes ``--fail-on-parity`` and
reports its environment; a runtime that refuses the graph exits 6 with the report written; a
model whose accuracy drops past the budget exits 7; ``--atol``/``--rtol`` < 0 and ``--runs``
< 1 are refused.
"""

from __future__ import annotations

import copy
import json
import sys
import types
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from conftest import make_s4d, make_s5
from conftest import run_cli as run

import aire_export as ax
from aire_export.report import REPORT_SCHEMA, SCHEMA_VERSION, verdict
from aire_export.runtimes import trt as trt_module
from aire_export.validate.parity import ParityResult, compare_output
from aire_export.validate.validation import Validation


def check(report: dict) -> dict:
    jsonschema.validate(report, REPORT_SCHEMA)
    return report


def test_a_run_report_follows_the_schema_and_is_the_file_written(tmp_path, labelled, capsys):
    model, data = labelled
    code, out, err = run(capsys, model, "--ratio", "0.5", "--data", data, "--runs", "3", "--json")
    assert code == 0, err
    report = check(json.loads(out))
    assert report == json.loads((tmp_path / "m.aire" / "report.json").read_text())
    assert report["schema_version"] == SCHEMA_VERSION
    assert set(report["accuracy"]) == {
        *("data", "samples", "original", "pruned", "drop_pp", "budget_pp", "passed")
    }
    assert report["latency"] and report["plots"]


@pytest.mark.parametrize(
    "make, args",
    [
        (make_s5, ["--target", "trt", "--no-latency"]),  # exit 4, TensorRT check, bundle
        (lambda: make_s5(bidirectional=True), ["--no-latency"]),  # no step graph
        (make_s4d, ["--precision", "bf16", "--no-latency"]),  # emulated bf16
    ],
)
def test_other_reports_follow_the_schema(tmp_path, capsys, make, args):
    path = ax.save(make(), tmp_path / "m.pt")
    code, out, _ = run(capsys, path, "--ratio", "0.5", "--length", "16", "--json", *args)
    report = check(json.loads(out))
    assert report["verdict"]["exit_code"] == code


def test_validate_json_follows_the_schema_without_model_plan_and_export(tmp_path, labelled, capsys):
    model, data = labelled
    assert run(capsys, model, "--ratio", "0.5", "--length", "24", "--no-latency")[0] == 0
    code, out, _ = run(
        capsys, "validate", tmp_path / "m.aire", "--original", model, "--data", data, "--json"
    )
    report = check(json.loads(out))
    assert code == 0 and not {"model", "plan", "export", "plots"} & set(report)
    assert report["environment"]["python"] and report["latency"]


def test_the_schema_refuses_unknown_keys_and_half_reports(tmp_path, labelled, capsys):
    model, _ = labelled
    _, out, _ = run(capsys, model, "--ratio", "0.5", "--length", "16", "--no-latency", "--json")
    report = check(json.loads(out))
    extra = copy.deepcopy(report)
    extra["parity"][0]["outputs"][0]["new_metric"] = 1.0
    half = {k: v for k, v in report.items() if k != "plan"}
    for bad in (extra, half, {**report, "schema_version": SCHEMA_VERSION + 1}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, REPORT_SCHEMA)


def _parity(passed: bool) -> ParityResult:
    ref = np.ones((2, 3))
    got = ref + (0 if passed else 1.0)
    output = compare_output("y", got, ref, ax.tolerance.Tolerance(1e-3, 1e-3))
    return ParityResult("onnxruntime-cpu", "pytorch-fp64", "fp32", [output])


@pytest.mark.parametrize(
    "validation, fail_on_parity, code",
    [
        (Validation(parity=[_parity(True)]), True, 0),
        (Validation(parity=[_parity(False)]), True, 3),
        (Validation(parity=[_parity(False)]), False, 0),
        (Validation(parity=[_parity(True)], build_failures=["refused"], missing=["gone"]), True, 6),
        (Validation(parity=[_parity(True)], missing=["gone"]), True, 4),
        (Validation(parity=[_parity(False)], missing=["gone"]), True, 3),
    ],
)
def test_one_verdict_orders_parity_then_refused_then_missing(validation, fail_on_parity, code):
    v = verdict(validation, fail_on_parity=fail_on_parity)
    assert v.exit_code == code and v.passed == (code == 0)
    expected = len([p for p in validation.parity if not p.passed])
    assert len(v.reasons) == expected + len(validation.build_failures) + len(validation.missing)


def test_validate_honours_fail_on_parity(tmp_path, labelled, capsys):
    model, _ = labelled
    assert run(capsys, model, "--ratio", "0.5", "--length", "16", "--no-latency")[0] == 0
    tight = ["--atol", "1e-30", "--rtol", "1e-30", "--no-latency", "--length", "16"]
    folder = tmp_path / "m.aire"
    assert run(capsys, "validate", folder, "--original", model, *tight)[0] == 3
    code, out, _ = run(
        capsys, "validate", folder, "--original", model, *tight, "--no-fail-on-parity", "--json"
    )
    report = json.loads(out)
    assert code == 0 and report["verdict"]["passed"]
    assert report["verdict"]["reasons"] == [
        "parity failed for model.onnx on onnxruntime-cpu",
        "parity failed for model.step.onnx on onnxruntime-cpu",
    ]


@pytest.mark.parametrize(
    "args, message",
    [(["--atol", "-1"], "--atol"), (["--rtol", "nan"], "--rtol"), (["--runs", "0"], "--runs")],
)
def test_gate_and_timing_options_out_of_range_are_bad_input(
    tmp_path, labelled, capsys, args, message
):
    model, _ = labelled
    code, _, err = run(capsys, model, "--ratio", "0.5", *args)
    assert code == 2 and message in err and not (tmp_path / "m.aire").exists()


def _refusing_tensorrt():
    """A stand-in of TensorRT's Python API whose ONNX parser refuses every graph."""

    class Parser:
        num_errors = 1

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            return False

        def get_error(self, i):
            return "In node 3 (importScan): UNSUPPORTED_NODE"

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return object()

    return types.SimpleNamespace(
        __version__="10.3.0",
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Builder=Builder,
        OnnxParser=Parser,
        NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=1),
    )


@pytest.mark.skipif("tensorrt" in sys.modules, reason="TensorRT installed")
def test_a_graph_tensorrt_refuses_exits_6_with_the_report_written(
    tmp_path, labelled, capsys, monkeypatch
):
    """Our handling of a parser failure, driven through a stand-in (not TensorRT itself)."""
    monkeypatch.setattr(trt_module, "import_tensorrt", _refusing_tensorrt)
    model, _ = labelled
    code, out, _ = run(
        capsys,
        model,
        "--ratio",
        "0.5",
        "--target",
        "trt",
        "--length",
        "16",
        "--no-latency",
        "--json",
    )
    report = check(json.loads(out))
    assert code == 6 and report["verdict"]["exit_code"] == 6
    assert any(
        "could not parse" in r and "UNSUPPORTED_NODE" in r for r in report["verdict"]["reasons"]
    )
    assert any(u.startswith("TensorRT engine not run") for u in report["unverified"])
    assert (tmp_path / "m.aire" / "bundle" / "build.sh").is_file()


def test_the_trt_bundle_lowers_like_the_export_when_layers_differ(tmp_path, capsys):
    """Layers of 40 and 100 states get different auto lowerings on a GPU target; the bundle's
    fp16 graph once was exported with that per-layer label as --scan and failed (exit 2)."""
    path = ax.save(make_s5(seed=2, state_sizes=(40, 100)), tmp_path / "mixed.pt")
    code, _, err = run(
        capsys, path, "--ratio", "0", "--target", "trt", "--length", "16", "--no-latency", "--json"
    )
    assert code == 4, err
    manifest = json.loads((tmp_path / "mixed.aire" / "bundle" / "manifest.json").read_text())
    scans = {g["role"]: g.get("scan") for g in manifest["graphs"].values()}
    assert scans["sequence"] == scans["sequence-fp16"] == "chunked,toeplitz"


def test_the_report_warns_of_an_unstable_layer_and_its_float32_reach(tmp_path, capsys):
    model = make_s5(seed=1, clip_eigs=False, state_sizes=(8, 4))
    with torch.no_grad():
        model.layers[1].seq.Lambda_re[:2] = 0.05
    path = ax.save(model, tmp_path / "m.pt")
    code, out, _ = run(capsys, path, "--ratio", "0.25", "--length", "32", "--no-latency", "--json")
    report = check(json.loads(out))
    assert code == 0
    assert any(w.startswith("layer 1 is unstable") for w in report["warnings"])
    assert any("|λ̄| ≥ 1" in w for w in report["warnings"])  # the plan's: kept regardless


def test_the_max_drop_search_is_recorded_in_the_report(tmp_path, labelled, capsys):
    model, data = labelled
    code, out, err = run(capsys, model, "--max-drop", "5", "--data", data, "--no-latency", "--json")
    assert code == 0, err
    report = check(json.loads(out))
    search = report["search"]
    assert search["budget_pp"] == 5 and search["ratio"] == report["plan"]["ratio_requested"]
    assert len(search["curve"]) >= 20 and search["drop_pp"] <= 5
    assert report["accuracy"]["budget_pp"] == 5 and report["accuracy"]["passed"]
    summary = (Path(model).with_suffix(".aire") / "report.md").read_text()
    chosen = f"{search['ratio']:.4g}"
    assert f"ratio chosen by the --max-drop search {chosen}" in summary
    assert "## Accuracy budget search (--max-drop)" in summary
    assert summary.count(f"| {chosen} (chosen) |") == 1
    code, out, _ = run(capsys, model, "--max-drop", "5", "--data", data, "--no-latency")
    assert f"--max-drop 5: ratio {chosen} is the largest" in out
    rows = [line for line in summary.split("## Accuracy budget search")[1].splitlines()
            if line.startswith("| 0") or line.startswith("| 1")]  # fmt: skip
    ratios = [float(row.split("|")[1].split()[0]) for row in rows]
    assert ratios == sorted(set(ratios))  # each evaluated ratio once, in order


def test_the_markdown_parity_table_names_each_graph_and_its_inputs(tmp_path, capsys):
    path = ax.save(make_s5(), tmp_path / "m.pt")
    assert run(capsys, path, "--ratio", "0.5", "--length", "16", "--no-latency")[0] == 0
    report = json.loads((tmp_path / "m.aire" / "report.json").read_text())
    summary = (tmp_path / "m.aire" / "report.md").read_text()
    parity = report["parity"]
    assert {p["graph"] for p in parity} == {"model.onnx", "model.step.onnx"}
    for p in parity:
        row = f"| {p['graph']} | {p['runner']} | {p['precision']} | {p['samples']} × 16 steps of"
        assert summary.count(row) == 1, row


def test_the_report_gives_graph_bytes_next_to_parameter_bytes(tmp_path, capsys):
    model = make_s5()
    path = ax.save(model, tmp_path / "m.pt")
    code, out, err = run(capsys, path, "--ratio", "0.5", "--length", "16", "--no-latency", "--json")
    assert code == 0, err
    report = check(json.loads(out))
    folder = tmp_path / "m.aire"
    assert report["model"]["parameter_bytes_before"] == 4 * report["model"]["parameters_before"]
    assert report["model"]["parameter_bytes_after"] == 4 * report["model"]["parameters_after"]
    assert report["model"]["parameter_bytes_after"] < report["model"]["parameter_bytes_before"]
    graphs = report["export"]["graphs"]
    assert set(graphs) == {"model.onnx", "model.step.onnx"}
    for name, graph in graphs.items():
        assert graph["bytes"] == (folder / name).stat().st_size
    summary = (folder / "report.md").read_text()
    assert f"| parameter bytes (fp32) | {report['model']['parameter_bytes_before']:,} |" in summary
    assert f"| model.onnx bytes | | {graphs['model.onnx']['bytes']:,} |" in summary
    export = summary.split("## Export")[1].split("\n## ")[0]
    assert f"- `model.onnx`: sequence graph, {graphs['model.onnx']['scan']} lowering" in export
    assert f"{graphs['model.step.onnx']['bytes']:,} bytes" in export and "{" not in export
