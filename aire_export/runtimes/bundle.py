"""The edge bundle: everything a Jetson (or any TensorRT box) needs to build, check and time the model.

Engines are not portable across TensorRT versions or GPUs, so the host ships ONNX and a recipe,
and the engine is built on the device (refs/deployment.md §4). The folder holds:

    model.onnx            fp32 sequence graph (TensorRT 10 weak typing uses it with --fp16)
    model.fp16.onnx       fp16 projections around an fp32 scan, explicit Casts (strongly typed builds)
    model.step.onnx       streaming graph (unidirectional models), one step or a frame of K steps
                          per call as exported (``--frame K``; manifest.json records K)
    inputs.npz, inputs/*.bin     validation inputs (raw little-endian files for trtexec --loadInputs)
    ref_outputs.npz       float64 PyTorch outputs of the pruned model on those inputs (as float32)
    polygraphy_inputs.json, polygraphy_outputs.json
                          the same inputs and reference outputs in NVIDIA Polygraphy's JSON format
                          (``polygraphy run --load-inputs ... --load-outputs ...``)
    check_outputs.py      compares trtexec's --exportOutput JSON with ref_outputs.npz (numpy only)
    build.sh              detects TensorRT 10 vs 11 from `trtexec --help`, builds, benchmarks, checks
                          (with check_outputs.py, or with Polygraphy: CHECK=polygraphy or old trtexec)
    manifest.json         provenance, plan summary, graphs, profile, tolerances

**Unverified here**: no TensorRT or Jetson is available to this project's CI; the script's logic is
tested, its run on a device is not.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aire_export.data import random_data, with_full_lengths
from aire_export.files import file_sha256
from aire_export.graphs.export import ExportedGraph, ExportResult
from aire_export.lower import export
from aire_export.models import SSMNetwork, family_of
from aire_export.runtimes.shapes import ShapeRange, profile_shapes
from aire_export.runtimes.torch_runner import TorchRunner
from aire_export.runtimes.trt import SCAN_PREFIX
from aire_export.tolerance import Tolerance

BUNDLE_NAME = "bundle"
POLYGRAPHY_INPUTS = "polygraphy_inputs.json"
POLYGRAPHY_OUTPUTS = "polygraphy_outputs.json"
REFERENCE_RUNNER = "pytorch-float64-reference"


@dataclass(frozen=True)
class BundleGraph:
    """One ONNX graph to ship: where it is, its role, and its inputs (name, shape)."""

    source: Path
    role: str  # "sequence" | "sequence-fp16" | "step"
    precision: str
    inputs: tuple[tuple[str, tuple[int | str, ...]], ...]
    details: dict[str, Any]

    @property
    def filename(self) -> str:
        return {
            "sequence": "model.onnx",
            "sequence-fp16": "model.fp16.onnx",
            "step": "model.step.onnx",
        }[self.role]

    @classmethod
    def of(cls, graph: ExportedGraph, role: str) -> BundleGraph:
        """The bundle entry of an exported graph (sequence graphs record their lowering, step
        graphs their steps per call)."""
        details = {"scan": graph.scan} if graph.mode == "sequence" else {"frame": graph.frame}
        inputs = tuple((spec.name, spec.shape) for spec in graph.inputs)
        return cls(graph.path, role, graph.precision, inputs, details)


def scan_node_names(onnx_path: Path) -> list[str]:
    """Names of the recurrence nodes of a graph (their name has a path component starting "scan")."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return [n.name for n in graph.node if any(p.startswith(SCAN_PREFIX) for p in n.name.split("/"))]


def _shape_spec(shapes: dict[str, tuple[int, ...]]) -> str:
    """trtexec's shape syntax: name:AxBxC,name2:D."""
    return ",".join(f"{name}:{'x'.join(str(d) for d in shape)}" for name, shape in shapes.items())


def _polygraphy_array(array: np.ndarray) -> dict[str, str]:
    """An array as ``polygraphy.json.save_json`` encodes it (polygraphy/json/serde.py, the
    ``np.ndarray`` encoder): the base64 of its ``np.save`` bytes, tagged with its class."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return {"array": base64.b64encode(buffer.getvalue()).decode(), "polygraphy_class": "ndarray"}


def polygraphy_inputs_json(feeds: dict[str, np.ndarray]) -> str:
    """What ``polygraphy run --load-inputs`` reads: a list of feed dicts (one per iteration; here
    one), written as ``save_json([feeds], path)`` writes it (indent 4)."""
    return json.dumps([{name: _polygraphy_array(v) for name, v in feeds.items()}], indent=4)


def polygraphy_outputs_json(outputs: dict[str, np.ndarray], runner: str = REFERENCE_RUNNER) -> str:
    """What ``polygraphy run --load-outputs`` reads: a ``polygraphy.comparator.RunResults`` with
    one runner holding one iteration, written as ``RunResults.save`` writes it (encoders of
    RunResults, IterationResult and LazyArray in polygraphy/comparator/struct.py)."""
    iteration = {
        "outputs": {
            name: {"values": _polygraphy_array(v), "polygraphy_class": "LazyArray"}
            for name, v in outputs.items()
        },
        "runtime": None,
        "runner_name": runner,
        "polygraphy_class": "IterationResult",
    }
    return json.dumps({"lst": [[runner, [iteration]]], "polygraphy_class": "RunResults"}, indent=4)


def _polygraphy_tolerance(t: Tolerance) -> str:
    """``polygraphy run``'s options for a tolerance (both use the same elementwise rule)."""
    return f"--atol {float(t.atol)!r} --rtol {float(t.rtol)!r}"


def _tolerance_lines(tolerances: dict[str, Tolerance]) -> str:
    """The Polygraphy check's --atol/--rtol per precision, as shell assignments."""
    lines = []
    for precision, t in tolerances.items():
        if not precision.isidentifier():
            raise ValueError(f"not a precision name: {precision!r}")
        lines.append(f'  TOLERANCES_{precision}="{_polygraphy_tolerance(t)}"')
    return "\n".join(lines)


def bundle_model(
    folder: Path,
    pruned: SSMNetwork,
    exported: ExportResult,
    *,
    source: Path,
    plan: dict[str, Any],
    target: str,
    scan: str,
    batch: ShapeRange,
    length: ShapeRange,
    seed: int = 0,
    default_precision: str = "fp32",
) -> Path:
    """The edge bundle of a pruned model: its exported fp32 graphs, an fp16 graph lowered the
    same way (``target``, ``scan``), random inputs at ``opt`` shapes, float64 PyTorch
    reference outputs, the family's tolerances, build.sh and the manifest (``source`` and
    ``plan``: provenance)."""
    fp16_dir = Path(tempfile.mkdtemp(prefix="fp16-", dir=folder.parent))
    try:
        lengths_input = any(s.name == "lengths" for s in exported.sequence.inputs)
        fp16 = export(
            pruned,
            fp16_dir,
            target=target,
            scan=scan,
            precision="fp16",
            lengths_input=lengths_input,
            step=False,
        )
        samples = random_data(pruned, batch.opt, length.opt, seed=seed)
        if lengths_input:
            samples = with_full_lengths(samples)
        feeds = samples.feeds()
        graphs = [
            BundleGraph.of(exported.sequence, "sequence"),
            BundleGraph.of(fp16.sequence, "sequence-fp16"),
        ]
        if exported.step is not None:
            graphs.append(BundleGraph.of(exported.step, "step"))
        family = family_of(pruned)
        return write_bundle(
            folder,
            graphs,
            feeds,
            TorchRunner(pruned, dtype=torch.float64).run(feeds),
            {p: family.tolerance(p, samples.length) for p in ("fp32", "fp16")},
            batch=batch,
            length=length,
            manifest={
                "source": {"path": str(source), "sha256": file_sha256(source)},
                "plan": plan,
                "opset": exported.sequence.opset,
            },
            default_precision="fp16" if default_precision != "fp32" else "fp32",
        )
    finally:
        shutil.rmtree(fp16_dir, ignore_errors=True)


def write_bundle(
    folder: Path,
    graphs: list[BundleGraph],
    feeds: dict[str, np.ndarray],
    references: dict[str, np.ndarray],
    tolerances: dict[str, Tolerance],
    *,
    batch: ShapeRange,
    length: ShapeRange,
    manifest: dict[str, Any],
    default_precision: str = "fp16",
) -> Path:
    """Write the bundle into ``folder`` (which must exist and be empty or new)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "inputs").mkdir(exist_ok=True)
    shipped = {}
    for graph in graphs:
        target = folder / graph.filename
        shutil.copyfile(graph.source, target)
        data = graph.source.with_name(graph.source.name + ".data")
        if data.exists():  # external weights travel beside the graph
            shutil.copyfile(data, folder / (graph.filename + ".data"))
        shipped[graph.role] = graph
    sequence = shipped["sequence"]
    np.savez(folder / "inputs.npz", **feeds)
    ref32 = {k: np.asarray(v, dtype=np.float32) for k, v in references.items()}
    np.savez(folder / "ref_outputs.npz", **ref32)
    (folder / POLYGRAPHY_INPUTS).write_text(polygraphy_inputs_json(feeds))
    (folder / POLYGRAPHY_OUTPUTS).write_text(polygraphy_outputs_json(ref32))
    for name, value in feeds.items():
        np.ascontiguousarray(value).tofile(folder / "inputs" / f"{name}.bin")

    profile = profile_shapes(list(sequence.inputs), batch, length)
    test_shapes = {name: tuple(value.shape) for name, value in feeds.items()}
    full_manifest = {
        **manifest,
        "graphs": {
            g.filename: {
                "role": g.role,
                "precision": g.precision,
                "inputs": [list(map(str, s)) for _, s in g.inputs],
                **g.details,
            }
            for g in graphs
        },
        "profile": {
            "batch": str(batch),
            "length": str(length),
            "shapes": {k: [list(s) for s in v] for k, v in profile.items()},
        },
        "validation_shapes": {k: list(v) for k, v in test_shapes.items()},
        "tolerances": {p: asdict(t) for p, t in tolerances.items()},
        "tensorrt": {
            "tested": False,
            "expected": "10.3 (JetPack 6) to 11.x",
            "scan_layer_prefix": SCAN_PREFIX,
        },
    }
    (folder / "manifest.json").write_text(json.dumps(full_manifest, indent=2, default=str))
    (folder / "check_outputs.py").write_text(CHECK_OUTPUTS)
    script = BUILD_SH.format(
        default_precision=default_precision,
        min_shapes=_shape_spec({k: v[0] for k, v in profile.items()}),
        opt_shapes=_shape_spec({k: v[1] for k, v in profile.items()}),
        max_shapes=_shape_spec({k: v[2] for k, v in profile.items()}),
        test_shapes=_shape_spec(test_shapes),
        load_inputs=",".join(f"{n}:inputs/{n}.bin" for n in feeds),
        has_fp16="1" if "sequence-fp16" in shipped else "0",
        scan_layers=",".join(f"{n}:fp32" for n in scan_node_names(sequence.source)) or "*:fp16",
        tolerances=_tolerance_lines(tolerances),
        polygraphy_inputs=POLYGRAPHY_INPUTS,
        polygraphy_outputs=POLYGRAPHY_OUTPUTS,
    )
    build = folder / "build.sh"
    build.write_text(script)
    build.chmod(0o755)
    readme = README.format(
        default_precision=default_precision,
        polygraphy_tolerances="; ".join(
            f"{p}: `{_polygraphy_tolerance(t)}`" for p, t in tolerances.items()
        ),
        fp32_tolerance=_polygraphy_tolerance(tolerances["fp32"])
        if "fp32" in tolerances
        else "--atol ATOL --rtol RTOL",
    )
    (folder / "README.md").write_text(readme)
    return folder


BUILD_SH = r"""#!/usr/bin/env bash
# Build, check and benchmark this model with TensorRT on this machine (written by aire-export).
# Usage: ./build.sh                 (default precision: {default_precision})
#        PRECISION=fp32 ./build.sh  (or PRECISION=fp16: choose the precision)
#        TRTEXEC=/usr/src/tensorrt/bin/trtexec ./build.sh      (JetPack's location)
#        WEAK_TYPING=1 ./build.sh   (TensorRT 10 only: fp32 graph + --fp16, scan layers pinned to fp32)
#        CHECK=polygraphy ./build.sh   (check the engine with NVIDIA Polygraphy instead of trtexec
#                                     --loadInputs; the default where trtexec lacks --loadInputs;
#                                     POLYGRAPHY=/path/to/polygraphy chooses which one)
# Exit codes: 0 built and parity passed, 3 parity failed, 4 trtexec missing (or polygraphy missing
# where the check needs it: pip install polygraphy).
# For stable Jetson timings first run: sudo nvpmodel -m 0 && sudo jetson_clocks
set -euo pipefail
cd "$(dirname "$0")"
PRECISION="${{PRECISION:-{default_precision}}}"
TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}"
[ -x "$TRTEXEC" ] || {{ echo "trtexec not found: set TRTEXEC=/path/to/trtexec" >&2; exit 4; }}
HELP=$("$TRTEXEC" --help 2>&1 || true)
VERSION=$(printf '%s\n' "$HELP" | grep -o 'TensorRT v[0-9]*' | head -n1 | tr -dc '0-9')
[ -n "$VERSION" ] || {{ echo "could not read the TensorRT version from trtexec --help" >&2; exit 4; }}
MAJOR=$(( VERSION / 10000 ))
has() {{ printf '%s\n' "$HELP" | grep -q -- "$1"; }}
echo "TensorRT $MAJOR (v$VERSION), precision $PRECISION"

# the parity check: trtexec --loadInputs/--exportOutput + check_outputs.py, or Polygraphy
CHECK="${{CHECK:-trtexec}}"
case "$CHECK" in
  trtexec)
    if ! has '--loadInputs'; then
      echo "this trtexec has no --loadInputs: checking with polygraphy"; CHECK=polygraphy
    fi ;;
  polygraphy) ;;
  *) echo "CHECK must be trtexec or polygraphy" >&2; exit 2 ;;
esac
if [ "$CHECK" = polygraphy ]; then
  if [ -n "${{POLYGRAPHY:-}}" ]; then
    POLY=("$POLYGRAPHY")
    command -v "$POLYGRAPHY" >/dev/null \
      || {{ echo "polygraphy not found at POLYGRAPHY=$POLYGRAPHY: pip install polygraphy" >&2; exit 4; }}
  elif command -v polygraphy >/dev/null; then
    POLY=(polygraphy)
  elif python3 -c 'import polygraphy' >/dev/null 2>&1; then
    POLY=(python3 -c 'import sys; from polygraphy.tools import main; sys.exit(main())')
  else
    echo "polygraphy not found (the parity check needs it): pip install polygraphy" >&2; exit 4
  fi
  # the tolerances of manifest.json, per precision
{tolerances}
  TOL_VAR="TOLERANCES_$PRECISION"
  [ -n "${{!TOL_VAR:-}}" ] || {{ echo "manifest.json has no $PRECISION tolerance" >&2; exit 2; }}
  read -r -a TOL <<< "${{!TOL_VAR}}"
fi

ONNX=model.onnx
FLAGS=()
case "$PRECISION" in
  fp32)
    # fp32 parity: no TF32 where trtexec can say so
    if has '--noTF32'; then FLAGS+=(--noTF32); fi ;;
  fp16)
    if [ "{has_fp16}" != 1 ]; then echo "this bundle has no fp16 graph" >&2; exit 2; fi
    if [ "$MAJOR" -lt 11 ] && [ "${{WEAK_TYPING:-0}}" = 1 ]; then
      # weak typing: fp32 graph, fp16 allowed, every scan layer pinned to fp32 by name
      # TensorRT names layers after ONNX nodes; trtexec 10.x takes exact names ("*" only as default)
      FLAGS+=(--fp16 --precisionConstraints=obey "--layerPrecisions={scan_layers}")
    else
      ONNX=model.fp16.onnx   # Casts in the graph: strongly typed on 10.x, always on 11.x
      if [ "$MAJOR" -lt 11 ] && has '--stronglyTyped'; then FLAGS+=(--stronglyTyped); fi
    fi ;;
  *) echo "PRECISION must be fp32 or fp16" >&2; exit 2 ;;
esac
BUILD_ONLY=--skipInference
if ! has '--skipInference'; then BUILD_ONLY=--buildOnly; fi

"$TRTEXEC" --onnx="$ONNX" "${{FLAGS[@]}}" \
  --minShapes={min_shapes} --optShapes={opt_shapes} --maxShapes={max_shapes} \
  --timingCacheFile=timing.cache --saveEngine=model.$PRECISION.engine $BUILD_ONLY | tee build.log

BENCH=(--shapes={test_shapes})
if has '--loadInputs'; then BENCH+=("--loadInputs={load_inputs}"); fi
if [ "$CHECK" = trtexec ]; then BENCH+=(--exportOutput=outputs.$PRECISION.json); fi
"$TRTEXEC" --loadEngine=model.$PRECISION.engine "${{BENCH[@]}}" \
  --percentile=50,90,99 --exportTimes=times.$PRECISION.json --warmUp=500 --duration=5 \
  | tee benchmark.$PRECISION.log

if [ "$CHECK" = polygraphy ]; then
  # the engine just built, on the bundle's inputs, against its reference outputs
  if "${{POLY[@]}}" run model.$PRECISION.engine --model-type engine --trt \
      --load-inputs {polygraphy_inputs} --load-outputs {polygraphy_outputs} "${{TOL[@]}}" \
      2>&1 | tee check.$PRECISION.log; then
    PASSED=1
  else
    PASSED=0
  fi
elif python3 check_outputs.py outputs.$PRECISION.json "$PRECISION"; then
  PASSED=1
else
  PASSED=0
fi
if [ "$PASSED" = 1 ]; then
  echo "engine: model.$PRECISION.engine; timings: times.$PRECISION.json, benchmark.$PRECISION.log"
else
  exit 3
fi
"""

CHECK_OUTPUTS = r'''"""Compare trtexec --exportOutput JSON with ref_outputs.npz.

Polygraphy's rule: an element fails where abs > atol AND rel > rtol.
Usage: python3 check_outputs.py outputs.json [precision]
"""
import json
import sys

import numpy as np

outputs = {o["name"]: o for o in json.load(open(sys.argv[1]))}
precision = sys.argv[2] if len(sys.argv) > 2 else "fp32"
tol = json.load(open("manifest.json"))["tolerances"][precision]
refs = np.load("ref_outputs.npz")
ok = True
for name in refs.files:
    ref = refs[name].astype(np.float64)
    got = np.asarray(outputs[name]["values"], dtype=np.float64).reshape(ref.shape)
    diff = np.abs(got - ref)
    rel = np.where(diff == 0, 0.0, diff / np.maximum(np.abs(ref), 1e-300))
    failing = int(np.sum((diff > tol["atol"]) & (rel > tol["rtol"])) + np.sum(~np.isfinite(got)))
    verdict = "PASSED" if failing == 0 else f"FAILED ({failing} elements)"
    print(f"{verdict} | Output: {name!r} | atol={tol['atol']:.3g} rtol={tol['rtol']:.3g} | "
          f"minimum required tolerance: [abs={diff.max():.3g}] OR [rel={rel.max():.3g}]")
    ok &= failing == 0
sys.exit(0 if ok else 3)
'''

README = """# Edge bundle (aire-export)

Copy this folder to the device (Jetson Orin with JetPack 6 = TensorRT 10.3, or JetPack 7.2 /
x86 with TensorRT 11) and run:

    ./build.sh                   # default precision: {default_precision}
    PRECISION=fp32 ./build.sh    # choose the precision: PRECISION=fp32 or PRECISION=fp16

It reads the TensorRT version from `trtexec --help`, builds an engine for this GPU (engines are
not portable between TensorRT versions or GPUs), runs it on `inputs/`, checks the outputs against
`ref_outputs.npz` with the tolerances in `manifest.json`, and reports latency percentiles.

## Checking with NVIDIA Polygraphy

`polygraphy_inputs.json` and `polygraphy_outputs.json` hold the same inputs and reference
outputs in Polygraphy's own format (`pip install polygraphy`). `CHECK=polygraphy ./build.sh`
checks the engine with it instead of `trtexec --loadInputs` (the default where this trtexec has
no `--loadInputs`). By hand, with the tolerances of `manifest.json` for the precision
({polygraphy_tolerances}):

    # the fp32 ONNX graph, on a CPU (onnxruntime)
    polygraphy run model.onnx --onnxrt \\
      --load-inputs polygraphy_inputs.json --load-outputs polygraphy_outputs.json \\
      {fp32_tolerance}
    # an engine built by ./build.sh (model.fp32.engine or model.fp16.engine), with TensorRT
    polygraphy run model.fp32.engine --model-type engine --trt \\
      --load-inputs polygraphy_inputs.json --load-outputs polygraphy_outputs.json \\
      {fp32_tolerance}

(`polygraphy run model.onnx --trt ...` builds its own engine from the graph instead; for fp16
use `model.fp16.onnx` with `--strongly-typed`.)

**Not verified by aire-export's own tests on TensorRT or a Jetson**: the graphs pass aire-export's
static TensorRT operator check, but no engine was built here. Please report results.
"""
