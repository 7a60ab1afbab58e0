"""The one command: outputs, exit codes, and bad input handled without tracebacks or debris."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import make_s4d, make_s5
from conftest import run_cli as run
from onnx import numpy_helper

import aire_export as ax

SEQUENCE_FILES = {"pruned.pt", "plan.json", "model.onnx", "report.json", "report.md"}
PLOTS = {"kept_states.png", "scores.png", "latency.png"}


@pytest.fixture
def model_file(tmp_path) -> Path:
    return ax.save(make_s5(seed=1, state_sizes=(8, 8), d_model=6), tmp_path / "model.pt")


def _debris(folder: Path) -> list[str]:
    """Temporary or partial outputs left in a folder."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]


def test_bare_form_runs_the_whole_pipeline(tmp_path, model_file, capsys):
    code, out, err = run(capsys, model_file, "--ratio", "0.5", "--length", "64", "--runs", "3")
    assert code == 0, err
    folder = tmp_path / "model.aire"
    assert SEQUENCE_FILES | PLOTS | {"model.step.onnx"} <= {p.name for p in folder.iterdir()}
    report = json.loads((folder / "report.json").read_text())
    verdict = report["verdict"]
    assert (verdict["passed"], verdict["exit_code"], verdict["reasons"]) == (True, 0, [])
    assert report["model"]["states_before"] == 16 and report["model"]["states_after"] == 8
    graphs = {(p["graph"], p["runner"]): p["passed"] for p in report["parity"]}
    assert graphs == {
        ("model.onnx", "onnxruntime-cpu"): True,
        ("model.step.onnx", "onnxruntime-cpu"): True,
    }
    kinds = [c["kind"] for c in verdict["checks"]]
    assert kinds == ["lowering fidelity", "lowering fidelity", "pruning distortion"]
    assert {s["runtime"] for s in report["speedups"]} == {"pytorch-eager-cpu", "onnxruntime-cpu"}
    assert all(s["ratio"] > 0 for s in report["speedups"])
    plan = json.loads((folder / "plan.json").read_text())
    assert [layer["states_after"] for layer in plan["layers"]] == [
        len(l["kept"]) for l in plan["layers"]
    ]
    assert ax.load(folder / "pruned.pt").config.state_sizes == [
        layer["states_after"] for layer in plan["layers"]
    ]
    assert "PASSED" in (folder / "report.md").read_text()
    assert "speedup" in out and _debris(tmp_path) == []


def test_json_report_on_stdout_and_accuracy_with_data(tmp_path, model_file, capsys):
    model = ax.load(model_file)
    x = np.random.default_rng(0).standard_normal((20, 32, 3)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(-1).numpy()
    np.savez(tmp_path / "eval.npz", x=x, y=y)
    code, out, _ = run(
        capsys,
        model_file,
        "--ratio",
        "0.3",
        "--data",
        tmp_path / "eval.npz",
        "--json",
        "--no-latency",
    )
    assert code == 0
    report = json.loads(out)
    assert report["accuracy"]["original"] == 1.0 and report["accuracy"]["samples"] == 20
    assert report["accuracy"]["drop_pp"] == pytest.approx(100 * (1 - report["accuracy"]["pruned"]))
    assert report["latency"] == []


def test_parity_failure_exits_3_and_still_writes_the_report(tmp_path, model_file, capsys):
    code, out, _err = run(
        capsys,
        model_file,
        "--ratio",
        "0.5",
        "--length",
        "32",
        "--atol",
        "1e-30",
        "--rtol",
        "1e-30",
        "--no-latency",
    )
    assert code == 3
    report = json.loads((tmp_path / "model.aire" / "report.json").read_text())
    assert report["verdict"]["exit_code"] == 3 and not report["parity"][0]["passed"]
    assert "FAILED" in out
    code, _, _ = run(
        capsys,
        model_file,
        "--ratio",
        "0.5",
        "--length",
        "32",
        "--atol",
        "1e-30",
        "--rtol",
        "1e-30",
        "--no-latency",
        "--no-fail-on-parity",
    )
    assert code == 0


@pytest.mark.skipif("tensorrt" in sys.modules, reason="TensorRT installed")
def test_trt_target_without_tensorrt_exits_4_with_onnx_and_bundle_written(
    tmp_path, model_file, capsys
):
    code, out, _err = run(
        capsys,
        model_file,
        "--ratio",
        "0.5",
        "--target",
        "trt",
        "--length",
        "1:32:64",
        "--no-latency",
    )
    assert code == 4
    assert "aire-export[trt]" in out  # printed as text, not eaten as rich markup
    folder = tmp_path / "model.aire"
    assert {"model.onnx", "report.json", "bundle"} <= {p.name for p in folder.iterdir()}
    bundle = {p.name for p in (folder / "bundle").iterdir()}
    assert {
        "model.onnx",
        "model.fp16.onnx",
        "build.sh",
        "manifest.json",
        "inputs.npz",
        "ref_outputs.npz",
    } <= bundle
    report = json.loads((folder / "report.json").read_text())
    assert any("aire-export[trt]" in r for r in report["verdict"]["reasons"])
    assert any("TensorRT" in u for u in report["unverified"])
    assert report["export"]["tensorrt_check"]["ok"] is True


def test_step_graph_is_skipped_for_bidirectional_models(tmp_path, capsys):
    path = ax.save(make_s5(bidirectional=True), tmp_path / "bi.pt")
    code, _, err = run(capsys, path, "--ratio", "0.5", "--length", "16", "--no-latency")
    assert code == 0, err
    report = json.loads((tmp_path / "bi.aire" / "report.json").read_text())
    assert "model.step.onnx" not in report["export"]["graphs"] and report["export"]["step_skipped"]


def test_s4d_model_runs_through(tmp_path, capsys):
    path = ax.save(make_s4d(), tmp_path / "s4d.pt")
    code, _, err = run(capsys, path, "--ratio", "0.4", "--length", "24", "--no-latency")
    assert code == 0, err


def test_rerun_replaces_an_earlier_output_folder(tmp_path, model_file, capsys):
    for ratio in ("0.5", "0.25"):
        assert run(capsys, model_file, "--ratio", ratio, "--length", "16", "--no-latency")[0] == 0
    plan = json.loads((tmp_path / "model.aire" / "plan.json").read_text())
    assert plan["ratio_requested"] == 0.25 and _debris(tmp_path) == []


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


class _Evil:
    def __reduce__(self):
        return (os.system, ("true",))


def _bad_model(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "nope.pt"
    if kind == "text":
        return _write(tmp_path / "text.pt", b"just some text\n")
    good = ax.save(make_s5(), tmp_path / "good.pt")
    if kind == "truncated":
        return _write(tmp_path / "trunc.pt", good.read_bytes()[:200])
    if kind == "pickle":
        torch.save({"x": _Evil()}, tmp_path / "evil.pt")
        return tmp_path / "evil.pt"
    payload = torch.load(good, weights_only=True)
    if kind == "nan":
        payload["state_dict"]["layers.0.seq.B"][0, 0, 0] = float("nan")
    if kind == "shape":
        payload["config"]["d_model"] = 7
    torch.save(payload, tmp_path / f"{kind}.pt")
    return tmp_path / f"{kind}.pt"


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "no such file"),
        ("text", "not a readable checkpoint"),
        ("truncated", "truncated or corrupted"),
        ("pickle", "could run code"),
        ("nan", "non-finite"),
        ("shape", "do not match the stated config"),
    ],
)
def test_bad_checkpoints_exit_2_with_one_line_and_no_output(tmp_path, capsys, kind, message):
    path = _bad_model(tmp_path, kind)
    before = set(tmp_path.iterdir())
    code, out, err = run(capsys, path, "--ratio", "0.5")
    assert code == 2
    assert message in err and "Traceback" not in err + out
    assert [line for line in err.splitlines() if not line.startswith("·")] == [err.splitlines()[-1]]
    assert err.splitlines()[-1].startswith("error: ")
    assert set(tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ratio", "1.5"], "[0, 1)"),
        (["--ratio", "-0.1"], "[0, 1)"),
        (["--threshold", "-1"], "≥ 0"),
        ([], "exactly one of"),
        (["--ratio", "0.5", "--threshold", "0.1"], "exactly one of"),
        (["--max-drop", "1"], "--data"),
        (["--ratio", "0.5", "--method", "bogus"], "Invalid value"),
        (["--ratio", "0.5", "--batch", "8:1:2"], "MIN ≤ OPT ≤ MAX"),
    ],
)
def test_bad_options_exit_2_without_output(tmp_path, model_file, capsys, args, message):
    code, out, err = run(capsys, model_file, *args)
    assert code == 2
    assert message in err and "Traceback" not in err + out
    assert not (tmp_path / "model.aire").exists() and _debris(tmp_path) == []


def test_inputs_of_the_wrong_shape_are_refused(tmp_path, model_file, capsys):
    np.savez(tmp_path / "in.npz", x=np.zeros((2, 10, 5), np.float32))
    code, _, err = run(
        capsys, model_file, "--ratio", "0.5", "--inputs", tmp_path / "in.npz", "--no-latency"
    )
    assert code == 2 and "shape (N, L, 3)" in err
    assert not (tmp_path / "model.aire").exists() and _debris(tmp_path) == []


def test_unwritable_output_exits_5(tmp_path, model_file, capsys):
    (tmp_path / "a-file").write_text("x")
    code, _, err = run(capsys, model_file, "--ratio", "0.5", "--out", tmp_path / "a-file" / "out")
    assert code == 5 and "does not exist" in err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    code, _, err = run(capsys, model_file, "--ratio", "0.5", "--out", tmp_path / "other")
    assert code == 5 and "not an aire-export output folder" in err
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"


def test_input_checkpoint_is_never_touched(tmp_path, model_file, capsys):
    before = (model_file.read_bytes(), model_file.stat().st_mtime_ns)
    run(capsys, model_file, "--ratio", "0.5", "--length", "16", "--no-latency")
    assert (model_file.read_bytes(), model_file.stat().st_mtime_ns) == before


def test_a_dominant_near_marginal_mode_is_warned_about(tmp_path, capsys):
    model = make_s5(seed=2, state_sizes=(8, 8), clip_eigs=True)
    with torch.no_grad():  # one almost-marginal mode in layer 1 with a large gain
        model.layers[1].seq.Lambda_re[0] = -1e-4
        model.layers[1].seq.B[0] *= 30
    _, plan = ax.prune(model, 0.5)
    warnings = [w for w in plan.warnings if w.startswith("layer 1: one unit holds")]
    assert len(warnings) == 1 and "--method last" in warnings[0]
    assert not any(w.startswith("layer 0: one unit holds") for w in plan.warnings)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_runs_with_its_own_gate(tmp_path, model_file, capsys, precision):
    code, _, err = run(
        capsys,
        model_file,
        "--ratio",
        "0.5",
        "--length",
        "64",
        "--precision",
        precision,
        "--runs",
        "3",
    )
    assert code == 0, err
    report = json.loads((tmp_path / "model.aire" / "report.json").read_text())
    parity = report["parity"][0]
    assert parity["precision"] == precision and parity["outputs"][0]["passed"]
    assert parity["outputs"][0]["atol"] >= 1e-2  # the reduced-precision gate, not fp32's
    if precision == "bf16":
        assert parity["runner"] == "onnxruntime-cpu-bf16-emulated"
        assert any("bf16" in u for u in report["unverified"])
        assert all("onnxruntime" not in s["runtime"] for s in report["speedups"])


def test_s4d_report_separates_live_states_from_padded_slots(tmp_path, capsys):
    path = ax.save(make_s4d(seed=3, state_sizes=(6, 6)), tmp_path / "s4d.pt")
    assert run(capsys, path, "--ratio", "0.5", "--length", "16", "--no-latency")[0] == 0
    report = json.loads((tmp_path / "s4d.aire" / "report.json").read_text())
    model = report["model"]
    assert model["states_before"] == 2 * 5 * 6  # H = 5 channels × 6 modes × 2 layers
    assert model["states_after"] == sum(layer["states_after"] for layer in report["plan"]["layers"])
    assert model["states_after"] <= model["physical_states_after"] <= model["states_before"]


EXAMPLES = json.loads((Path(__file__).parents[1] / "examples" / "models.json").read_text())


def test_padded_sequences_with_lengths_run_the_whole_job_with_latency(tmp_path, capsys):
    """Data with ``lengths`` makes graphs with a lengths input; every step must feed it
    (the latency step once did not)."""
    model = make_s5(seed=2, state_sizes=(8, 8), input_kind="tokens", d_input=7)
    path = ax.save(model, tmp_path / "tokens.pt")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 7, (12, 20))
    np.savez(tmp_path / "eval.npz", x=x, y=rng.integers(0, 5, 12), lengths=rng.integers(5, 21, 12))
    code, out, err = run(
        capsys, path, "--ratio", "0.5", "--data", tmp_path / "eval.npz", "--runs", "3", "--json"
    )
    assert code == 0, err
    assert len(json.loads(out)["speedups"]) == 2


@pytest.mark.parametrize("inputs_have_lengths", [True, False])
def test_parity_inputs_with_or_without_lengths_match_the_graph(
    tmp_path, capsys, inputs_have_lengths
):
    """--inputs with lengths and no --data gives a graph with a lengths input (it once gave
    none, and parity failed against the masked reference); --inputs without lengths for a
    graph that takes them run at full length."""
    model = make_s5(seed=2, state_sizes=(8, 8), input_kind="tokens", d_input=7, bidirectional=True)
    path = ax.save(model, tmp_path / "tokens.pt")
    rng = np.random.default_rng(1)
    x = rng.integers(0, 7, (4, 20))
    lengths = {"lengths": rng.integers(5, 21, 4)} if inputs_have_lengths else {}
    np.savez(tmp_path / "in.npz", x=x, **lengths)
    extra = []
    if not inputs_have_lengths:  # the eval set has lengths, so the graph takes them
        np.savez(tmp_path / "eval.npz", x=x, y=rng.integers(0, 5, 4), lengths=np.full(4, 20))
        extra = ["--data", tmp_path / "eval.npz"]
    code, out, err = run(
        capsys,
        path,
        "--ratio",
        "0.5",
        "--inputs",
        tmp_path / "in.npz",
        *extra,
        "--json",
        "--no-latency",
    )
    assert code == 0, err
    assert json.loads(out)["parity"][0]["passed"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_shipped_model_runs_the_whole_job_with_its_eval_set(tmp_path, capsys, name):
    """Parity, accuracy and latency on each example as a user runs it (ListOps: padded
    sequences with lengths, which the latency step once fed without them); the verdict fails
    exactly when the accuracy gate does."""
    entry = EXAMPLES[name]
    examples = Path(__file__).parents[1] / "examples"
    code, out, err = run(
        capsys,
        examples / entry["checkpoint"],
        "--ratio",
        "0.5",
        "--data",
        examples / entry["eval_data"],
        *(["--calib", examples / entry["calib_data"]] if "calib_data" in entry else []),
        "--batch",
        "2",
        "--length",
        "64",
        "--out",
        tmp_path / "out",
        "--json",
    )
    report = json.loads(out)
    assert code == (0 if report["accuracy"]["passed"] else 7), err  # digits loses 45 points
    assert all(p["passed"] for p in report["parity"])
    assert report["accuracy"]["samples"] == entry["eval_count"]
    assert {s["runtime"] for s in report["speedups"]} == {"pytorch-eager-cpu", "onnxruntime-cpu"}


DIGITS = Path(__file__).parents[1] / "examples"


def test_a_collapsed_model_is_not_fit_to_ship_unless_the_budget_allows_it(tmp_path, capsys):
    """README's everyday --ratio 0.7 takes the digits model from 98.6 % to 13.9 %: the
    verdict fails on accuracy (exit 7) and says so; a budget of 100 points lets it pass."""
    args = [DIGITS / "checkpoints/s5_digits.pt", "--ratio", "0.7", "--no-latency", "--json"]
    args += ["--data", DIGITS / "data/digits_eval.npz", "--out", tmp_path / "out"]
    code, out, _ = run(capsys, *args)
    report = json.loads(out)
    assert code == 7 and report["verdict"]["exit_code"] == 7
    (reason,) = report["verdict"]["reasons"]
    assert "not fit to ship" in reason and "84.72 points" in reason
    assert report["accuracy"]["passed"] is False and report["accuracy"]["budget_pp"] == 1.0
    assert all(p["passed"] for p in report["parity"])  # the graphs are right; the model is not
    code, out, _ = run(capsys, *args, "--max-drop", "100")
    assert code == 0 and json.loads(out)["accuracy"]["passed"] is True
    code, out, _ = run(capsys, *args, "--no-accuracy-gate")
    assert code == 0 and json.loads(out)["accuracy"]["passed"] is None


def test_a_broken_step_graph_fails_the_gate(tmp_path, model_file, capsys):
    assert run(capsys, model_file, "--ratio", "0.5", "--length", "16", "--no-latency")[0] == 0
    folder = tmp_path / "model.aire"
    step = onnx.load(str(folder / "model.step.onnx"))
    init = next(t for t in step.graph.initializer if t.name.startswith("layers.1/ssm/D"))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 0.5, init.name))
    onnx.save(step, str(folder / "model.step.onnx"))
    code, out, _ = run(
        capsys, "validate", folder, "--original", model_file, "--length", "16", "--no-latency",
        "--json",
    )  # fmt: skip
    report = json.loads(out)
    assert code == 3 and report["verdict"]["reasons"] == [
        "parity failed for model.step.onnx on onnxruntime-cpu"
    ]
