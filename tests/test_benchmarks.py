"""The benchmarks cannot be timed in a unit test, but their own logic can: a smoke run on tiny
sizes on the CPU must finish, check what it compares and write its JSON, so a session that gets
a GPU (or an idle machine) does not spend its time on a script error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _benchmark(script: str, *args: str, **env: str) -> None:
    """Run benchmarks/<script> with one thread; fail with its stderr if it fails."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]


def _needs_commit(commit: str, holding: str) -> None:
    """Skip unless the git history holds ``commit`` (a shallow clone lacks the old code)."""
    if subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT).returncode:
        pytest.skip(f"needs the git history holding {commit} ({holding})")


def test_gpu_suite_smoke_run_on_the_cpu(tmp_path):
    _benchmark(
        "gpu_suite.py",
        "--smoke",
        "--workloads",
        "stream",
        "listops",
        "--keeps",
        "1.0",
        "--no-compile",
        "--no-jax",
        OUT=str(tmp_path),
    )
    result = json.loads((tmp_path / "gpu_suite.json").read_text())
    rows = result["rows"]
    assert {r["workload"] for r in rows} == {"stream", "listops"}
    parities = [r["parity"] for r in rows if r.get("parity") is not None]
    assert parities and max(parities) <= 1e-5


def test_the_mamba_benchmark_smoke_run_writes_every_contender(tmp_path):
    out = tmp_path / "mamba.json"
    _benchmark("mamba_cpu.py", "--quick", "--lengths", "40", "--rounds", "1", "--out", str(out))
    result = json.loads(out.read_text())
    assert result["decode_tokens_agree"] is True
    contenders = {(r["mode"], r["contender"]) for r in result["timings"]}
    for mode in ("sequence", "decode"):
        for name in ("transformers", "eager", "onnx unpruned", "onnx 50%", "onnx 25%"):
            assert (mode, name) in contenders
    sizes = result["size"]
    assert sizes["50%"]["parameters"] < sizes["unpruned"]["parameters"]
    assert sum(sizes["25%"]["d_state_per_layer"]) < sum(sizes["50%"]["d_state_per_layer"])


def test_the_selective_forms_benchmark_checks_every_form_against_float64(tmp_path):
    out = tmp_path / "forms.json"
    _benchmark("selective_forms.py", "--lengths", "37", "--rounds", "1", "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert {r["form"] for r in rows} == {"chunked", "scan", "chunked (E,N)", "hillis-steele"}
    assert max(r["max_rel_error"] for r in rows) <= 1e-5


def test_the_latency_budget_benchmark_re_measures_each_choice(tmp_path):
    out = tmp_path / "budget.json"
    _benchmark(
        "latency_budget.py", "--fractions", "1000", "--repeats", "2", "--runs", "3", "--warmup",
        "1", "--out", str(out),
    )  # fmt: skip
    (row,) = json.loads(out.read_text())["rows"]
    assert row["ratio"] == 0.0 and row["points_measured"] == 1  # 1000 × the unpruned time
    assert row["repeats"] == 2 and row["remeasured_median_ms"]["min"] > 0


def test_the_channel_latency_benchmark_times_every_ratio_against_the_unpruned_graph(tmp_path):
    out = tmp_path / "channels.json"
    _benchmark(
        "channel_latency.py", "--models", "s4d_keywords", "--ratios", "0.3,0.6", "--rounds", "1",
        "--out", str(out),
    )  # fmt: skip
    (result,) = json.loads(out.read_text())["results"]
    assert [p["ratio"] for p in result["points"]] == [0.3, 0.6] and result["length"] == 100
    assert all(p["median_ms"] > 0 and p["speedup"] > 0 for p in result["points"])


@pytest.mark.parametrize("workload", ["stream", "text-s4d"])
def test_the_streaming_benchmark_smoke_run_times_every_contender_after_checking_it(
    tmp_path, workload
):
    out = tmp_path / "streaming.json"
    chunked = ["--chunked"] if workload == "stream" else []  # the S5 frames before factoring
    _benchmark(
        "streaming.py", "--smoke", "--workload", workload, "--rounds", "2", "--steps", "32",
        "--out", str(out), *chunked,
    )  # fmt: skip
    result = json.loads(out.read_text())
    rows = result["rows"]
    kinds = (("eager", 1), ("onnx", 1), ("onnx", 8), ("onnx", 32))
    kinds += (("chunked", 8), ("chunked", 32)) if chunked else ()
    assert {(r["kept"], r["contender"], r["frame"]) for r in rows} == {
        (kept, kind, frame) for kept in ("100%", "50%", "30%") for kind, frame in kinds
    }
    assert max(r["max_rel_error"] for r in rows if r["contender"] != "eager") <= 1e-5
    assert all(r["us_per_step"] > 0 for r in rows)
    assert "100%: K=1 / K=32" in result["ratios"] and "100% / 30% at K=32" in result["ratios"]
    if chunked:  # a different graph: the per-state boundary map is there
        nodes = {(r["contender"], r["frame"]): r.get("nodes") for r in rows if r["kept"] == "100%"}
        assert nodes["chunked", 32] != nodes["onnx", 32]
        assert "100%: K=32 chunked / factored" in result["ratios"]


def test_the_certificate_benchmark_smoke_run_compares_old_and_new(tmp_path):
    _needs_commit("0d45a51", "the old certificates")
    out = tmp_path / "certificates.json"
    _benchmark("certificates.py", "--quick", "--repeats", "1", "--ratios", "0.7", "--out", str(out))
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["model"] == "s5_digits" and len(row["layers"]) == 4
    assert max(row["max_relative"][f] for f in ("bound", "measured_hinf", "h2")) <= 1e-9
    stage = result["prune_stage"]["median_ms"]
    assert set(stage) == {"new certificates", "old certificates", "no certificates"}


def test_the_auto_choice_benchmark_times_every_lowering_and_names_autos_choice(tmp_path):
    out = tmp_path / "auto.json"
    _benchmark(
        "auto_choice.py", "--workloads", "listops", "--keeps", "1.0", "--threads", "1",
        "--rounds", "1", "--max-length", "64", "--out", str(out),
    )  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert [(r["batch"], r["length"]) for r in rows] == [(1, 64), (32, 64)]
    for row in rows:
        assert set(row["median_ms"]) == {"chunked", "scan", "toeplitz"}
        assert row["auto"] in row["median_ms"] and row["auto_vs_fastest"] >= 1.0


def test_the_graph_size_benchmark_smoke_run_compares_old_and_new_graphs(tmp_path):
    _needs_commit("9797b4e", "the stored Q×Q tables")
    out = tmp_path / "graph_size.json"
    _benchmark("graph_size.py", "--quick", "--repeats", "1", "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["lowering"]) for r in rows] == [
        ("s5_digits", "auto"),
        ("s5_digits", "scan"),
    ]
    for row in rows:
        assert row["new_fp32_bytes"] < row["old_fp32_bytes"]
        assert row["new_fp16_bytes"] <= row["new_fp32_bytes"]
        assert row["new_loaded_nodes"] < row["new_nodes"]
        assert row["new_unfolded_nodes"] == 0  # the power tables fold at session creation
        assert row["max_rel_difference"] <= 1e-6
        assert row["load_ms"]["new"] > 0 and row["run_ms"]["new"] > 0


def test_the_chunk_layout_benchmark_smoke_run_compares_the_layouts(tmp_path):
    _needs_commit("3bea52a", "the pair layout")
    out = tmp_path / "chunk_layout.json"
    _benchmark("chunk_layout.py", "--quick", "--repeats", "1", "--out", str(out))
    result = json.loads(out.read_text())
    assert len(result["transposes"]) == 5 and all(r["ms"] > 0 for r in result["transposes"])
    rows = result["models"]
    assert [(r["keep"], r["lowering"]) for r in rows] == [
        (1.0, "auto"), (1.0, "scan"), (0.3, "auto"), (0.3, "scan"),
    ]  # fmt: skip
    for row in rows[:2]:  # pathx: 2P = 256 ≥ H = 128, time last; 6 bidirectional layers
        assert row["transpose_nodes"] == {"old": 6 * 3, "new": 6 * 6}
        assert 0 < row["max_rel_difference"] <= 1e-6
        assert "speedup_forced_over_old" not in row
    for row in rows[2:]:  # at 30 %, 2P = 76 < H: the pair layout as before, and a forced contender
        assert row["transpose_nodes"] == {"old": 6 * 3, "new": 6 * 3, "forced": 6 * 6}
        assert row["max_rel_difference"] == 0.0 and row["speedup_forced_over_old"] > 0


def test_the_frame_kernels_benchmark_smoke_run_times_every_contender(tmp_path):
    out = tmp_path / "frame_kernels.json"
    _benchmark("frame_kernels.py", "--rounds", "2", "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [r["contender"] for r in rows] == [
        "bounds", "bounds, operator left", "chunks", "one GEMM per state", "grouped Conv",
        "input map", "empty",
    ]  # fmt: skip
    assert all(r["us"] > 0 for r in rows)
