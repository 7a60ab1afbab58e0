"""Runners (onnxruntime, PyTorch), the TensorRT builder's own logic, and the edge bundle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_s5
from tiny_graph import tiny_classifier

from aire_export.errors import InputError, RuntimeMissingError
from aire_export.runtimes.bundle import (
    BundleGraph,
    polygraphy_inputs_json,
    polygraphy_outputs_json,
    write_bundle,
)
from aire_export.runtimes.ort import OrtRunner, SessionLoader, cuda_provider_available
from aire_export.runtimes.shapes import ShapeRange, profile_shapes
from aire_export.runtimes.torch_runner import TorchRunner
from aire_export.runtimes.trt import TrtBuildOptions, build_engine, import_tensorrt
from aire_export.tolerance import Tolerance


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.onnx"
    W = tiny_classifier(path)
    return path, W


def test_ort_cpu_runner_runs_and_binds(tiny):
    path, W = tiny
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    with OrtRunner(SessionLoader(path)) as runner:
        out = runner.run({"x": x, "unused": np.zeros(1)})
        assert np.allclose(out["y"], x.mean(1) @ W, atol=1e-5)
        runner.bind({"x": x})()  # executes without error
        with pytest.raises(InputError, match="needs input"):
            runner.run({})
    assert runner.name == "onnxruntime-cpu"


@pytest.mark.skipif(cuda_provider_available(), reason="CUDA provider present")
def test_ort_cuda_without_the_provider_names_the_install(tiny):
    with pytest.raises(RuntimeMissingError, match="onnxruntime-gpu"):
        OrtRunner(SessionLoader(tiny[0], provider="cuda"))


def test_torch_runner_fp64_reference_and_fp32():
    model = make_s5()
    x = np.random.default_rng(1).standard_normal((2, 9, 3)).astype(np.float32)
    ref = TorchRunner(model, dtype=torch.float64).run({"x": x})["y"]
    fp32 = TorchRunner(model).run({"x": x})["y"]
    assert ref.dtype == np.float64 and np.allclose(ref, fp32, atol=1e-5)
    with torch.no_grad():
        assert np.allclose(fp32, model(torch.from_numpy(x)).numpy())


# ---- TensorRT: our call sequence, against a stand-in of the documented API (not TensorRT) -------


def test_shape_ranges_parse_and_refuse_nonsense():
    assert ShapeRange.parse("1:8:32", "batch") == ShapeRange(1, 8, 32)
    assert ShapeRange.parse("16", "batch") == ShapeRange(16, 16, 16)
    for bad in ("8:1:32", "0", "a:b:c", "1:2"):
        with pytest.raises(InputError):
            ShapeRange.parse(bad, "batch")


def test_profile_shapes_resolve_symbolic_dims():
    shapes = profile_shapes(
        [("x", ("batch", "length", 3)), ("lengths", ("batch",))],
        ShapeRange(1, 4, 8),
        ShapeRange(16, 1024, 4096),
    )
    assert shapes["x"] == ((1, 16, 3), (4, 1024, 3), (8, 4096, 3))
    assert shapes["lengths"] == ((1,), (4,), (8,))
    with pytest.raises(InputError, match="no range"):
        profile_shapes([("x", ("time",))], ShapeRange(1, 1, 1), ShapeRange(1, 1, 1))


@pytest.mark.skipif("tensorrt" in sys.modules, reason="TensorRT installed")
def test_missing_tensorrt_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(RuntimeMissingError, match=r"aire-export\[trt\]"):
        import_tensorrt()


def _fake_trt(version: str, log: list):
    """A stand-in with the TensorRT 10/11 Python API surface build_engine uses; records calls."""

    class Layer:
        def __init__(self, name):
            self.name, self.num_outputs, self.precision = name, 1, None

        def set_output_type(self, i, t):
            log.append(("output_type", self.name, t))

    class Network:
        num_layers = 3

        def get_layer(self, i):
            return [Layer("layers.0/in_proj"), Layer("layers.0/scan/intra"), Layer("scan_carry")][i]

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            log.append(("parse", Path(path).name))
            return True

    class Cache:
        def serialize(self):
            return b"cache-bytes"

    class Config:
        def set_memory_pool_limit(self, pool, size):
            log.append(("workspace", size))

        def set_flag(self, flag):
            log.append(("flag", flag))

        def add_optimization_profile(self, p):
            log.append(("profile", dict(p.shapes)))

        def create_timing_cache(self, data):
            return Cache()

        def set_timing_cache(self, cache, ignore_mismatch):
            log.append(("timing_cache",))

        def get_timing_cache(self):
            return Cache()

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (lo, opt, hi)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            log.append(("network_flags", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"engine-bytes"

    trt = types.SimpleNamespace(
        __version__=version,
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Builder=Builder,
        OnnxParser=Parser,
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="workspace"),
        BuilderFlag=types.SimpleNamespace(
            FP16="FP16", BF16="BF16", OBEY_PRECISION_CONSTRAINTS="OBEY", VERSION_COMPATIBLE="VC"
        ),
        float32="float32",
    )
    if version.startswith("10"):
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    else:
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace()
    return trt


def test_our_calls_for_a_strongly_typed_tensorrt10_build_on_a_stand_in(tmp_path):
    log: list = []
    opts = TrtBuildOptions(
        precision="fp16",
        batch=ShapeRange(1, 8, 32),
        length=ShapeRange(64, 1024, 4096),
        timing_cache=tmp_path / "timing.cache",
        version_compatible=True,
    )
    info = build_engine(
        tmp_path / "model.fp16.onnx",
        tmp_path / "model.engine",
        [("x", ("batch", "length", 1))],
        opts,
        trt=_fake_trt("10.3.0", log),
    )
    assert ("network_flags", 1 << 1) in log  # STRONGLY_TYPED
    assert ("flag", "FP16") not in log  # precision comes from the graph
    assert ("flag", "VC") in log
    assert ("profile", {"x": ((1, 64, 1), (8, 1024, 1), (32, 4096, 1))}) in log
    assert (tmp_path / "model.engine").read_bytes() == b"engine-bytes"
    assert (tmp_path / "timing.cache").read_bytes() == b"cache-bytes"
    assert info.strongly_typed and info.pinned_fp32_layers == []


def test_our_weak_typing_calls_pin_the_scan_to_fp32_on_a_tensorrt10_stand_in(tmp_path):
    log: list = []
    info = build_engine(
        tmp_path / "model.onnx",
        tmp_path / "model.engine",
        [("x", ("batch", "length", 1))],
        TrtBuildOptions(precision="fp16", weak_typing=True),
        trt=_fake_trt("10.3.0", log),
    )
    assert ("network_flags", 0) in log
    assert ("flag", "FP16") in log and ("flag", "OBEY") in log
    assert info.pinned_fp32_layers == ["layers.0/scan/intra", "scan_carry"]


def test_our_calls_treat_a_tensorrt11_stand_in_as_always_strongly_typed(tmp_path):
    log: list = []
    build_engine(
        tmp_path / "m.onnx",
        tmp_path / "m.engine",
        [("x", ("batch", "length", 1))],
        TrtBuildOptions(precision="fp16"),
        trt=_fake_trt("11.1.0", log),
    )
    assert ("network_flags", 0) in log and ("flag", "FP16") not in log
    with pytest.raises(InputError, match="always strongly typed"):
        build_engine(
            tmp_path / "m.onnx",
            tmp_path / "m.engine",
            [],
            TrtBuildOptions(weak_typing=True),
            trt=_fake_trt("11.1.0", []),
        )


# ---- edge bundle ------------------------------------------------------------------------------


def _bundle(tmp_path, tiny):
    path, W = tiny
    x = np.random.default_rng(2).standard_normal((2, 6, 3)).astype(np.float32)
    ref = x.astype(np.float64).mean(1) @ W
    graph = BundleGraph(
        source=path,
        role="sequence",
        precision="fp32",
        inputs=(("x", ("batch", "length", 3)),),
        details={},
    )
    fp16 = BundleGraph(
        source=path, role="sequence-fp16", precision="fp16", inputs=graph.inputs, details={}
    )
    folder = write_bundle(
        tmp_path / "bundle",
        [graph, fp16],
        {"x": x},
        {"y": ref},
        {"fp32": Tolerance(1e-4, 1e-3), "fp16": Tolerance(1e-2, 1e-2)},
        batch=ShapeRange(1, 2, 8),
        length=ShapeRange(1, 6, 64),
        manifest={"source": {"sha256": "abc"}},
    )
    return folder, ref


FAKE_TRTEXEC = r"""#!/usr/bin/env bash
# stands in for trtexec: prints a version banner, logs its arguments, writes --exportOutput
echo "$@" >> "$FAKE_LOG"
if [ "$1" = "--help" ]; then
  echo "&&&& RUNNING TensorRT.trtexec [TensorRT v${FAKE_VERSION}] # trtexec --help"; echo "$FAKE_HELP"; exit 0
fi
for a in "$@"; do case "$a" in --exportOutput=*) python3 - "${a#--exportOutput=}" <<'PY'
import json, os, sys
import numpy as np
ref = np.load("ref_outputs.npz")
scale = float(os.environ.get("FAKE_ERROR", "0"))
out = [{"name": n, "values": (ref[n] + scale).ravel().tolist()} for n in ref.files]
json.dump(out, open(sys.argv[1], "w"))
PY
;; esac; done
"""


def _bundle_with_fake_trtexec(tmp_path, tiny, **settings):
    folder, _ = _bundle(tmp_path, tiny)
    fake = tmp_path / "trtexec"
    fake.write_text(FAKE_TRTEXEC)
    fake.chmod(0o755)
    return folder, {
        **os.environ,
        "TRTEXEC": str(fake),
        "FAKE_LOG": str(tmp_path / "log"),
        **settings,
    }


@pytest.mark.parametrize(
    "version, help_text, precision, expect, absent",
    [
        (
            "100300",
            "--stronglyTyped --skipInference --noTF32 --loadInputs",
            "fp16",
            ["--onnx=model.fp16.onnx", "--stronglyTyped"],
            ["--fp16"],
        ),
        (
            "110100",
            "--skipInference --loadInputs",
            "fp16",
            ["--onnx=model.fp16.onnx"],
            ["--stronglyTyped", "--fp16"],
        ),
        (
            "100300",
            "--noTF32 --buildOnly --loadInputs",
            "fp32",
            ["--onnx=model.onnx", "--noTF32", "--buildOnly"],
            ["--fp16"],
        ),
    ],
)
def test_build_script_branches_on_the_version_a_fake_trtexec_reports(
    tmp_path, tiny, version, help_text, precision, expect, absent
):
    folder, env = _bundle_with_fake_trtexec(
        tmp_path, tiny, FAKE_VERSION=version, FAKE_HELP=help_text, PRECISION=precision
    )
    run = subprocess.run(
        ["bash", str(folder / "build.sh")], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    calls = (tmp_path / "log").read_text().splitlines()
    build = next(c for c in calls if "--saveEngine" in c)
    for flag in expect:
        assert flag in build
    for flag in absent:
        assert flag not in build.split()
    bench = next(c for c in calls if "--loadEngine" in c)
    assert "--loadInputs=x:inputs/x.bin" in bench and "--shapes=x:2x6x3" in bench
    assert "PASSED" in run.stdout
    assert np.array_equal(
        np.fromfile(folder / "inputs" / "x.bin", np.float32).reshape(2, 6, 3),
        np.load(folder / "inputs.npz")["x"],
    )


def test_build_script_fails_parity_with_exit_3_and_without_trtexec_with_exit_4(tmp_path, tiny):
    folder, env = _bundle_with_fake_trtexec(
        tmp_path,
        tiny,
        FAKE_VERSION="110100",
        FAKE_HELP="--loadInputs",
        FAKE_ERROR="0.5",
        PRECISION="fp32",
    )
    run = subprocess.run(
        ["bash", str(folder / "build.sh")], env=env, capture_output=True, text=True
    )
    assert run.returncode == 3 and "FAILED" in run.stdout
    env["TRTEXEC"] = str(tmp_path / "nope")
    assert (
        subprocess.run(["bash", str(folder / "build.sh")], env=env, capture_output=True).returncode
        == 4
    )


def test_bundle_manifest_records_profile_and_tolerances(tmp_path, tiny):
    folder, _ = _bundle(tmp_path, tiny)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["source"]["sha256"] == "abc"
    assert manifest["profile"]["shapes"]["x"] == [[1, 1, 3], [2, 6, 3], [8, 64, 3]]
    assert manifest["tolerances"]["fp16"] == {"atol": 1e-2, "rtol": 1e-2}
    assert manifest["tensorrt"]["tested"] is False
    assert {
        "model.onnx",
        "model.fp16.onnx",
        "build.sh",
        "check_outputs.py",
        "README.md",
        "polygraphy_inputs.json",
        "polygraphy_outputs.json",
    } <= {p.name for p in folder.iterdir()}


# ---- the bundle for NVIDIA Polygraphy ----------------------------------------------------------


def _polygraphy_command() -> list[str]:
    """This environment's polygraphy CLI (the console script, else its entry point)."""
    script = Path(sys.executable).parent / "polygraphy"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from polygraphy.tools import main; sys.exit(main())"]


def _polygraphy_run_onnxrt(folder: Path, tolerance: Tolerance) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            *_polygraphy_command(),
            "run",
            "model.onnx",
            "--onnxrt",
            "--load-inputs",
            "polygraphy_inputs.json",
            "--load-outputs",
            "polygraphy_outputs.json",
            "--atol",
            repr(tolerance.atol),
            "--rtol",
            repr(tolerance.rtol),
        ],
        cwd=folder,
        capture_output=True,
        text=True,
    )


def _corrupt_polygraphy_references(folder: Path, offset: float = 1.0) -> None:
    """Rewrite polygraphy_outputs.json with the reference values + offset (with polygraphy)."""
    from polygraphy.comparator import RunResults

    results = RunResults.load(str(folder / "polygraphy_outputs.json"))
    for _, iterations in results.items():
        for iteration in iterations:
            for name in list(iteration.keys()):
                iteration[name] = iteration[name] + np.float32(offset)
    results.save(str(folder / "polygraphy_outputs.json"))


def test_polygraphy_files_are_what_polygraphys_own_writers_write(tmp_path, tiny):
    pytest.importorskip("polygraphy")
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json, to_json

    folder, ref = _bundle(tmp_path, tiny)
    feeds = dict(np.load(folder / "inputs.npz"))
    refs = dict(np.load(folder / "ref_outputs.npz"))
    # byte for byte what save_json([feeds]) and RunResults.save write
    assert (folder / "polygraphy_inputs.json").read_text() == to_json([feeds])
    expected = RunResults()
    expected.add([refs], runner_name="pytorch-float64-reference")
    assert (folder / "polygraphy_outputs.json").read_text() == expected.to_json()
    # and polygraphy reads back the bundle's arrays
    (loaded,) = load_json(str(folder / "polygraphy_inputs.json"))
    assert list(loaded) == ["x"] and np.array_equal(loaded["x"], feeds["x"])
    assert loaded["x"].dtype == np.float32
    results = RunResults.load(str(folder / "polygraphy_outputs.json"))
    ((runner, (iteration,)),) = results.items()
    assert runner == "pytorch-float64-reference"
    assert iteration["y"].dtype == np.float32
    assert np.array_equal(iteration["y"], ref.astype(np.float32))


def test_polygraphy_encoding_without_polygraphy_keeps_dtype_shape_and_values():
    # the format itself (polygraphy/json/serde.py): base64 of the np.save bytes, tagged "ndarray"
    import base64
    import io

    lengths = np.array([5, 3], dtype=np.int64)
    x = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    (feed,) = json.loads(polygraphy_inputs_json({"x": x, "lengths": lengths}))
    assert list(feed) == ["x", "lengths"]
    for name, value in (("x", x), ("lengths", lengths)):
        assert feed[name]["polygraphy_class"] == "ndarray"
        decoded = np.load(io.BytesIO(base64.b64decode(feed[name]["array"])), allow_pickle=False)
        assert decoded.dtype == value.dtype and np.array_equal(decoded, value)
    results = json.loads(polygraphy_outputs_json({"y": x[0]}, runner="ref"))
    assert results["polygraphy_class"] == "RunResults"
    ((runner, (iteration,)),) = results["lst"]
    assert runner == iteration["runner_name"] == "ref"
    assert iteration["polygraphy_class"] == "IterationResult"
    assert iteration["outputs"]["y"]["polygraphy_class"] == "LazyArray"
    encoded = iteration["outputs"]["y"]["values"]["array"]
    assert np.array_equal(np.load(io.BytesIO(base64.b64decode(encoded))), x[0])


def test_polygraphy_run_passes_on_the_bundle_and_fails_on_corrupted_references(tmp_path, tiny):
    pytest.importorskip("polygraphy")
    folder, _ = _bundle(tmp_path, tiny)
    fp32 = Tolerance(1e-4, 1e-3)  # the bundle's fp32 tolerance
    run = _polygraphy_run_onnxrt(folder, fp32)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PASSED" in run.stdout + run.stderr
    _corrupt_polygraphy_references(folder)
    run = _polygraphy_run_onnxrt(folder, fp32)
    assert run.returncode != 0, run.stdout + run.stderr
    assert "FAILED" in run.stdout + run.stderr


FAKE_POLYGRAPHY = r"""#!/usr/bin/env bash
# stands in for polygraphy: logs its arguments and exits with FAKE_POLY_RC; with REAL_PYTHON it
# runs the real polygraphy with those arguments, the engine swapped for model.onnx on onnxruntime
echo "$@" >> "$FAKE_POLY_LOG"
if [ -n "${REAL_PYTHON:-}" ]; then
  args=(); skip=0
  for a in "$@"; do
    if [ "$skip" = 1 ]; then skip=0; continue; fi
    case "$a" in
      *.engine) args+=(model.onnx) ;;
      --trt) args+=(--onnxrt) ;;
      --model-type) skip=1 ;;
      *) args+=("$a") ;;
    esac
  done
  exec "$REAL_PYTHON" -c 'import sys; from polygraphy.tools import main; sys.exit(main())' "${args[@]}"
fi
exit "${FAKE_POLY_RC:-0}"
"""


def _bundle_with_fake_polygraphy(tmp_path, tiny, **settings):
    folder, env = _bundle_with_fake_trtexec(tmp_path, tiny, **settings)
    fake = tmp_path / "polygraphy"
    fake.write_text(FAKE_POLYGRAPHY)
    fake.chmod(0o755)
    return folder, {**env, "POLYGRAPHY": str(fake), "FAKE_POLY_LOG": str(tmp_path / "poly_log")}


@pytest.mark.parametrize(
    "help_text, check, precision, onnx, atol, rtol",
    [
        ("--skipInference --noTF32", None, "fp32", "model.onnx", "0.0001", "0.001"),
        ("--skipInference --stronglyTyped", None, "fp16", "model.fp16.onnx", "0.01", "0.01"),
        ("--skipInference --loadInputs", "polygraphy", "fp32", "model.onnx", "0.0001", "0.001"),
    ],
)
def test_build_script_checks_with_polygraphy_without_load_inputs_or_when_asked(
    tmp_path, tiny, help_text, check, precision, onnx, atol, rtol
):
    settings = {"FAKE_VERSION": "100300", "FAKE_HELP": help_text, "PRECISION": precision}
    if check:
        settings["CHECK"] = check
    folder, env = _bundle_with_fake_polygraphy(tmp_path, tiny, **settings)
    run = subprocess.run(
        ["bash", str(folder / "build.sh")], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    calls = (tmp_path / "log").read_text().splitlines()
    build = next(c for c in calls if "--saveEngine" in c)
    assert f"--onnx={onnx}" in build.split() and f"--saveEngine=model.{precision}.engine" in build
    bench = next(c for c in calls if "--loadEngine" in c)
    assert "--exportOutput" not in bench  # the trtexec check is not used
    assert ("--loadInputs=x:inputs/x.bin" in bench) == ("--loadInputs" in help_text)
    (poly,) = (tmp_path / "poly_log").read_text().splitlines()
    assert poly.split() == [
        "run",
        f"model.{precision}.engine",
        "--model-type",
        "engine",
        "--trt",
        "--load-inputs",
        "polygraphy_inputs.json",
        "--load-outputs",
        "polygraphy_outputs.json",
        "--atol",
        atol,
        "--rtol",
        rtol,
    ]
    # a failing polygraphy check is a failed parity check
    env["FAKE_POLY_RC"] = "1"
    run = subprocess.run(["bash", str(folder / "build.sh")], env=env, capture_output=True)
    assert run.returncode == 3


def test_build_script_keeps_the_trtexec_check_where_trtexec_loads_inputs(tmp_path, tiny):
    folder, env = _bundle_with_fake_polygraphy(
        tmp_path, tiny, FAKE_VERSION="110100", FAKE_HELP="--loadInputs", PRECISION="fp32"
    )
    run = subprocess.run(
        ["bash", str(folder / "build.sh")], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert not (tmp_path / "poly_log").exists()
    bench = next(c for c in (tmp_path / "log").read_text().splitlines() if "--loadEngine" in c)
    assert "--exportOutput=outputs.fp32.json" in bench


def test_build_script_polygraphy_check_passes_and_fails_with_the_real_polygraphy(tmp_path, tiny):
    pytest.importorskip("polygraphy")
    folder, env = _bundle_with_fake_polygraphy(
        tmp_path, tiny, FAKE_VERSION="100300", FAKE_HELP="--skipInference", PRECISION="fp32"
    )
    env["REAL_PYTHON"] = sys.executable
    run = subprocess.run(
        ["bash", str(folder / "build.sh")], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PASSED" in (folder / "check.fp32.log").read_text()
    _corrupt_polygraphy_references(folder, offset=0.01)  # 100 atol, 10 rtol and more
    run = subprocess.run(
        ["bash", str(folder / "build.sh")], env=env, capture_output=True, text=True
    )
    assert run.returncode == 3, run.stdout + run.stderr
    assert "FAILED" in (folder / "check.fp32.log").read_text()


def test_build_script_without_polygraphy_where_it_is_needed_exits_4_naming_the_pip_install(
    tmp_path, tiny
):
    folder, env = _bundle_with_fake_trtexec(
        tmp_path, tiny, FAKE_VERSION="100300", FAKE_HELP="--skipInference", PRECISION="fp32"
    )
    # a PATH with the shell tools build.sh uses, no polygraphy, and a python3 that lacks it
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "grep", "head", "tr", "tee", "cat"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    (bin_dir / "python3").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "python3").chmod(0o755)
    env = {**env, "PATH": str(bin_dir)}
    env.pop("POLYGRAPHY", None)
    run = subprocess.run(
        [str(bin_dir / "bash"), str(folder / "build.sh")], env=env, capture_output=True, text=True
    )
    assert run.returncode == 4, run.stdout + run.stderr
    (message,) = run.stderr.strip().splitlines()
    assert "polygraphy" in message and "pip install polygraphy" in message
    calls = (tmp_path / "log").read_text().splitlines()
    assert not any("--saveEngine" in c for c in calls)  # it stops before building
    # an explicit POLYGRAPHY that is not there, asked for with CHECK=polygraphy
    env = {**os.environ, **env, "PATH": os.environ["PATH"], "POLYGRAPHY": str(tmp_path / "nope")}
    env.update(CHECK="polygraphy", FAKE_HELP="--skipInference --loadInputs")
    run = subprocess.run(
        ["bash", str(folder / "build.sh")], env=env, capture_output=True, text=True
    )
    assert run.returncode == 4 and "pip install polygraphy" in run.stderr
