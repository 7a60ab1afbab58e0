"""TensorRT: build an engine from our ONNX graph with the Python API, and run it.

**Unverified in this project's CI**: TensorRT cannot be installed from PyPI alone (its wheels
fetch the libraries from NVIDIA's index). This module is written against the documented
TensorRT 10 and 11 Python APIs, imports ``tensorrt`` lazily, and its own logic (shape
profiles, precision policy, version branches) is tested against a stand-in module.

Precision policy (DESIGN §4, refs/deployment.md §0):

- TensorRT 11 is strongly typed: the precision is what the graph says. For fp16/bf16 we build the
  graph exported with that precision (projections in fp16/bf16, Casts around an fp32 scan).
- TensorRT 10 can do the same (``STRONGLY_TYPED`` network flag, the default here), or the weakly
  typed route (``weak_typing=True``): the fp32 graph, ``BuilderFlag.FP16``/``BF16``, and every
  layer whose name carries the scan prefix pinned to fp32 with ``OBEY_PRECISION_CONSTRAINTS``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aire_export.errors import InputError, OutputError, RuntimeBuildError, RuntimeMissingError
from aire_export.runtimes.base import Runner
from aire_export.runtimes.shapes import ShapeRange, profile_shapes

INSTALL_HINT = (
    "TensorRT is not installed. On a machine with an NVIDIA GPU: pip install 'aire-export[trt]' "
    "(the tensorrt wheels download NVIDIA's libraries from pypi.nvidia.com), or use the edge bundle's "
    "build.sh with trtexec. The ONNX graph, check and bundle were still written"
)

#: ONNX node names of the recurrence start with this; TensorRT names layers after ONNX nodes.
SCAN_PREFIX = "scan"


def import_tensorrt():
    """``import tensorrt``, or RuntimeMissingError naming how to install it."""
    try:
        import tensorrt
    except ImportError:
        raise RuntimeMissingError(INSTALL_HINT) from None
    return tensorrt


def tensorrt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


@dataclass(frozen=True)
class TrtBuildOptions:
    precision: str = "fp32"  # fp32 | fp16 | bf16
    batch: ShapeRange = ShapeRange(1, 1, 1)
    length: ShapeRange = ShapeRange(1, 1024, 1024)
    workspace_bytes: int = 4 << 30
    timing_cache: Path | None = None
    version_compatible: bool = False
    hardware_compatible: bool = False  # Ampere+; caps shared memory, disables cuDNN/cuBLAS tactics
    weak_typing: bool = False  # TensorRT 10 only: FP16/BF16 builder flag + fp32 scan constraints
    optimization_level: int | None = None


@dataclass
class EngineInfo:
    path: Path
    tensorrt_version: str
    precision: str
    strongly_typed: bool
    profile: dict[str, tuple]
    pinned_fp32_layers: list[str] = field(default_factory=list)


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    inputs: list[tuple[str, tuple[int | str, ...]]],
    options: TrtBuildOptions,
    *,
    trt=None,
    log: Callable[[str], None] | None = None,
) -> EngineInfo:
    """Parse ``onnx_path`` with TensorRT's ONNX parser and write a serialized engine.

    ``onnx_path`` must already carry the requested precision for strongly typed builds (the
    fp16/bf16 export); for ``weak_typing`` it is the fp32 export.
    """
    trt = trt or import_tensorrt()
    major = tensorrt_major(trt)
    if options.weak_typing and major >= 11:
        raise InputError("TensorRT 11 is always strongly typed: drop --trt-weak-typing")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = not options.weak_typing
    flags = 0
    typed_flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed and typed_flag is not None and major < 11:
        flags |= 1 << int(typed_flag)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeBuildError(
            f"TensorRT {trt.__version__} could not parse {onnx_path}: " + "; ".join(errors[:5])
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    if options.optimization_level is not None:
        config.builder_optimization_level = options.optimization_level
    pinned: list[str] = []
    if options.weak_typing and options.precision != "fp32":
        config.set_flag(
            trt.BuilderFlag.FP16 if options.precision == "fp16" else trt.BuilderFlag.BF16
        )
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = pin_scan_layers_fp32(network, trt)
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS

    shapes = profile_shapes(inputs, options.batch, options.length)
    profile = builder.create_optimization_profile()
    for name, (lo, mid, hi) in shapes.items():
        profile.set_shape(name, lo, mid, hi)
    config.add_optimization_profile(profile)

    cache = None
    if options.timing_cache is not None:
        old = options.timing_cache.read_bytes() if options.timing_cache.exists() else b""
        cache = config.create_timing_cache(old)
        config.set_timing_cache(cache, ignore_mismatch=False)

    if log:
        log(
            f"building TensorRT {trt.__version__} engine ({options.precision}, "
            f"{'strongly' if strongly_typed else 'weakly'} typed)"
        )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeBuildError(
            f"TensorRT {trt.__version__} failed to build an engine from {onnx_path} (see the log "
            "above)"
        )
    engine_path = Path(engine_path)
    try:
        engine_path.write_bytes(bytes(serialized))
        if cache is not None and options.timing_cache is not None:
            options.timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    except OSError as e:
        raise OutputError(f"cannot write {engine_path}: {e.strerror}") from None
    return EngineInfo(
        path=engine_path,
        tensorrt_version=str(trt.__version__),
        precision=options.precision,
        strongly_typed=strongly_typed,
        profile={k: [list(s) for s in v] for k, v in shapes.items()},
        pinned_fp32_layers=pinned,
    )


def pin_scan_layers_fp32(network, trt) -> list[str]:
    """Weak typing: keep every recurrence layer (name contains the scan prefix) in fp32."""
    pinned = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if re.search(rf"(^|/){SCAN_PREFIX}", layer.name or ""):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned.append(layer.name)
    return pinned


class TrtRunner(Runner):
    """Runs a serialized engine with torch CUDA tensors as I/O (``execute_async_v3``)."""

    def __init__(self, engine_path: str | os.PathLike, *, trt=None) -> None:
        self.trt = trt or import_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise RuntimeMissingError("TensorRT needs a CUDA GPU, and PyTorch sees none")
        self.torch = torch
        self.device = "cuda"
        self.name = "tensorrt"
        logger = self.trt.Logger(self.trt.Logger.WARNING)
        self.engine = self.trt.Runtime(logger).deserialize_cuda_engine(
            Path(engine_path).read_bytes()
        )
        if self.engine is None:
            raise RuntimeBuildError(
                f"{engine_path} is not an engine this TensorRT ({self.trt.__version__}) can load"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self.details = {"tensorrt": str(self.trt.__version__)}

    def _prepare(self, inputs: dict[str, np.ndarray]) -> dict:
        torch = self.torch
        tensors = {}
        for name in self.input_names:
            if name not in inputs:
                raise InputError(f"the engine needs input {name!r}")
            t = torch.from_numpy(np.ascontiguousarray(inputs[name])).cuda()
            tensors[name] = t
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))
            t = torch.empty(shape, dtype=getattr(torch, dtype.name), device="cuda")
            tensors[name] = t
            self.context.set_tensor_address(name, t.data_ptr())
        return tensors

    def bind(self, inputs: dict[str, np.ndarray]) -> Callable[[], None]:
        self._tensors = self._prepare(inputs)
        stream = self.torch.cuda.current_stream()
        return lambda: self.context.execute_async_v3(stream.cuda_stream)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        execute = self.bind(inputs)
        execute()
        self.torch.cuda.current_stream().synchronize()
        return {n: self._tensors[n].float().cpu().numpy() for n in self.output_names}
