"""Deployment targets: the one registry of where a graph will run (DESIGN §4, §5).

A :class:`Target` says everything the rest of the package needs to know about a target, so no
module branches on target names: the export reads its opsets, the TensorRT parser rules it is
checked against and its device (which picks the ``auto`` lowering rules); validation reads the
runtimes it must run the graph on (after onnxruntime on the CPU, which always runs: the graph's
own fidelity) and where PyTorch eager is timed; the pipeline reads whether it writes the edge
bundle; the command line reads the names and their help.

==========  =======  =========================================================================
target      device   runs the graph on
==========  =======  =========================================================================
onnx        cpu      onnxruntime CPU
ort-cuda    gpu      onnxruntime CPU and CUDA (required: exit 4 when the provider is missing)
trt         gpu      onnxruntime CPU, CUDA if present, a TensorRT engine (required); bundle/
jetson      gpu      onnxruntime CPU; bundle/ is built and checked on the device (not run here)
==========  =======  =========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from aire_export.errors import InputError

#: runtime names (runtimes/registry.py builds their runners)
ORT_CPU, ORT_CUDA, TENSORRT = "onnxruntime-cpu", "onnxruntime-cuda", "tensorrt"


@dataclass(frozen=True)
class RuntimeUse:
    """A runtime a target validates on. ``required``: when it is missing the verdict fails with
    exit code 4; otherwise the report lists it as not verified."""

    runtime: str
    required: bool


@dataclass(frozen=True)
class Target:
    name: str
    summary: str  # one line of --help
    device: str  # "cpu" | "gpu": the auto lowering rules; where PyTorch eager is timed
    opsets: tuple[int, int]  # ONNX opsets accepted (inclusive)
    tensorrt_rules: str | None  # TensorRT ONNX-parser generation the graphs are checked for
    runtimes: tuple[RuntimeUse, ...]  # beyond onnxruntime CPU, which always runs
    bundle: bool  # writes bundle/ for building on the device
    not_run_here: str | None = None  # what this target always leaves to the user

    @property
    def profile_runtime(self) -> str:
        """The onnxruntime provider ``profile`` times graphs on for this target."""
        return ORT_CUDA if any(use.runtime == ORT_CUDA for use in self.runtimes) else ORT_CPU


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "onnx",
            "onnxruntime on the CPU",
            device="cpu",
            opsets=(17, 21),
            tensorrt_rules=None,
            runtimes=(),
            bundle=False,
        ),
        Target(
            "ort-cuda",
            "onnxruntime's CUDA provider (TF32 off for the fp32 gate)",
            device="gpu",
            opsets=(17, 21),
            tensorrt_rules=None,
            runtimes=(RuntimeUse(ORT_CUDA, required=True),),
            bundle=False,
        ),
        Target(
            "trt",
            "a TensorRT engine (plus the edge bundle); graphs checked for the TensorRT 11 parser",
            device="gpu",
            opsets=(17, 21),
            tensorrt_rules="11",
            runtimes=(RuntimeUse(ORT_CUDA, required=False), RuntimeUse(TENSORRT, required=True)),
            bundle=True,
        ),
        Target(
            "jetson",
            "the edge bundle only, built on the device; graphs checked for TensorRT 10.3 (JetPack 6)",
            device="gpu",
            opsets=(17, 20),  # TensorRT 10.3 parses opsets 9..20
            tensorrt_rules="10.3",
            runtimes=(),
            bundle=True,
            not_run_here="edge GPU (Jetson) not run: copy bundle/ to the device and run build.sh",
        ),
    )
}
DEFAULT_TARGET = "onnx"


def target_named(name: str) -> Target:
    """The registered target ``name``; InputError listing the choices otherwise."""
    try:
        return TARGETS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}") from None


def targets_help() -> str:
    """``--target`` help: every target and what it runs."""
    return " ".join(f"{t.name}: {t.summary}." for t in TARGETS.values())
