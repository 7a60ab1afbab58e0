"""GPU checks (``-m gpu``): run on a CUDA machine, skipped everywhere else.

NOT RUN YET: no session that built this had a GPU. They hold the GPU side to the same gates as
the CPU side: fp32 parity ≤ 1e-5 relative to the float64 model with TF32 off (issue 6),
the one-command pipeline end to end with ``--target ort-cuda`` (issue 4), CUDA-event latency,
and sweeps evaluated on the GPU agreeing with the CPU (issue 5). TensorRT tests (``-m trt``)
run only where ``import tensorrt`` works.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_s4d, make_s5, rel_err
from lowering import random_input, reference

import aire_export as ax
from aire_export.cli import main
from aire_export.data import SequenceData
from aire_export.graphs.lowering import METHODS
from aire_export.lower import export
from aire_export.runtimes.ort import OrtRunner, SessionLoader, cuda_provider_available
from aire_export.runtimes.torch_runner import TorchRunner
from aire_export.sweep import sweep
from aire_export.validate.latency import measure_latency

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
needs_ort_cuda = pytest.mark.skipif(
    not cuda_provider_available(), reason="needs onnxruntime-gpu (CUDAExecutionProvider)"
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {  # the LTI models (the Mamba LM has its own lowerings and tests, test_mamba.py)
    name: entry
    for name, entry in json.loads((ROOT / "examples" / "models.json").read_text()).items()
    if not name.startswith("mamba")
}
FP32 = 1e-5


def _example(name: str):
    entry = EXAMPLES[name]
    return ax.load(ROOT / "examples" / entry["checkpoint"]), ROOT / "examples" / entry["eval_data"]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_pytorch_on_cuda_matches_the_float64_model(name):
    """PyTorch eager is a baseline, not a gate: its float32 complex scan is looser than the
    exported graphs (on the CPU, T = 1024: 2.0e-6 digits and keywords, 1.4e-5 ListOps)."""
    model, _ = _example(name)
    x = random_input(model, 2, 1024, seed=1)
    got = TorchRunner(model, "cuda").run({"x": x.numpy()})["y"]
    assert rel_err(got, reference(model, x)) <= 1e-4


@needs_ort_cuda
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_onnxruntime_cuda_fp32_parity_with_tf32_off(tmp_path, name, method):
    model, _ = _example(name)
    graph = export(model, tmp_path, scan=method, step=False).sequence.path
    runner = OrtRunner(SessionLoader(graph, "cuda", tf32=False))
    assert runner.details["tf32"] is False
    for length in (1, 17, 1024, 16384):
        x = random_input(model, 1, length, seed=2)
        err = rel_err(runner.run({"x": x.numpy()})["y"], reference(model, x))
        assert err <= FP32, f"length {length}: relative error {err:.2e}"


@needs_ort_cuda
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_pipeline_with_target_ort_cuda_runs_end_to_end(tmp_path, name, capsys):
    model_path = ROOT / "examples" / EXAMPLES[name]["checkpoint"]
    data = ROOT / "examples" / EXAMPLES[name]["eval_data"]
    out = tmp_path / "out"
    args = [model_path, "--ratio", 0.7, "--target", "ort-cuda", "--data", data, "--out", out]
    code = main([str(a) for a in [*args, "--json"]])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    runners = {row["runner"]: row["passed"] for row in report["parity"]}
    assert runners.get("onnxruntime-cuda") is True, runners
    assert any(row["device"] == "cuda" for row in report["latency"])
    assert (out / "report.md").is_file() and (out / "model.onnx").is_file()


def test_latency_on_cuda_uses_cuda_events_and_reports_the_device():
    model = make_s5(seed=3)
    x = random_input(model, 4, 256).numpy()
    runner = TorchRunner(model, "cuda")
    results = measure_latency(
        {"eager": (runner.bind({"x": x}), "cuda")}, batch=4, length=256, runs=10, warmup=2
    )
    assert results["eager"].device == "cuda" and results["eager"].p50_ms > 0


@pytest.mark.parametrize("make", [make_s5, make_s4d])
def test_a_sweep_on_cuda_agrees_with_the_cpu(make):
    model = make(seed=6, state_sizes=(16, 16))
    x = random_input(model, 64, 40, seed=4)
    with torch.no_grad():
        y = model(x).argmax(-1).numpy()
    data = SequenceData(x=x.numpy(), lengths=None, y=y, source="self-labelled")
    on_cpu = sweep(model, data, methods=("aire",), ratios=(0.0, 0.5, 0.9))
    on_gpu = sweep(model, data, methods=("aire",), ratios=(0.0, 0.5, 0.9), device="cuda")
    for a, b in zip(on_cpu.points, on_gpu.points, strict=True):
        assert a.kept_units == b.kept_units
        assert abs(a.accuracy - b.accuracy) <= 2 / 64  # at most two borderline samples flip
        assert np.isclose(a.distortion, b.distortion, rtol=1e-3, atol=1e-6)


@pytest.mark.trt
def test_tensorrt_engine_matches_the_float64_model(tmp_path):
    pytest.importorskip("tensorrt")
    from aire_export.runtimes.shapes import ShapeRange
    from aire_export.runtimes.trt import TrtBuildOptions, TrtRunner, build_engine

    model = make_s5(seed=8)
    graph = export(model, tmp_path, target="trt", step=False).sequence.path
    options = TrtBuildOptions(batch=ShapeRange(1, 2, 4), length=ShapeRange(1, 256, 1024))
    info = build_engine(graph, tmp_path / "model.engine", [("x", ("batch", "length", 3))], options)
    runner = TrtRunner(info.path)
    x = random_input(model, 2, 256, seed=5)
    assert rel_err(runner.run({"x": x.numpy()})["y"], reference(model, x)) <= 1e-4
