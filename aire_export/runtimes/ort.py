"""onnxruntime: a session loader per graph and provider, and the runner of its session.

The CUDA provider runs fp32 MatMuls in TF32 unless told otherwise (``use_tf32``); the fp32 parity
gate turns TF32 off, and a run with TF32 on is labelled as such in ``details``. When torch with
CUDA is importable, onnxruntime is given torch's current CUDA stream (``user_compute_stream``), so
CUDA events recorded by the latency code time onnxruntime's kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aire_export.errors import InputError, RuntimeMissingError
from aire_export.runtimes.base import Runner

PROVIDERS = ("cpu", "cuda")
CUDA_INSTALL_HINT = (
    "install onnxruntime-gpu on a machine with an NVIDIA GPU: pip install 'aire-export[gpu]' "
    "(onnxruntime-gpu ≥ 1.27 needs CUDA 13 and cuDNN 9)"
)


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:  # pragma: no cover - a core dependency
        raise RuntimeMissingError("onnxruntime is not installed: pip install onnxruntime") from None
    return onnxruntime


def cuda_provider_available() -> bool:
    return "CUDAExecutionProvider" in _onnxruntime().get_available_providers()


@dataclass(frozen=True)
class SessionLoader:
    """Builds an onnxruntime session for one graph (Polygraphy's ``SessionFromOnnx``): the
    provider and its options live here, the runner only runs what it is given.

    provider: "cpu" or "cuda". tf32: the CUDA provider's TF32 MatMuls (off for the fp32
    gate). emulate_bf16: onnxruntime's CPU provider has no bf16 kernels, so the graph is
    rewritten to round every bf16 value in float32 (graphs/emulate.py; timings mean nothing).
    spin=False (default) stops the CPU thread pool from busy-waiting after each run.
    Side-by-side timing keeps several sessions open: spinning threads of the idle ones took
    the cores from the one being timed (measured on the keywords example, 2 cores: pruned
    48 ms with spinning vs 21 ms without, and the ranking of lowerings flipped). A service
    that runs one session back to back may prefer ``spin=True``.
    """

    path: Path
    provider: str = "cpu"
    tf32: bool = False
    threads: int | None = None
    device_id: int = 0
    emulate_bf16: bool = False
    spin: bool = False

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise InputError(
                f"unknown onnxruntime provider {self.provider!r}; use {' or '.join(PROVIDERS)}"
            )
        object.__setattr__(self, "path", Path(self.path))

    @property
    def device(self) -> str:
        return self.provider

    @property
    def details(self) -> dict:
        ort = _onnxruntime()
        details = {"provider": self.provider, "onnxruntime": ort.__version__, "spin": self.spin}
        if self.provider == "cuda":
            details["tf32"] = self.tf32
        if self.emulate_bf16:
            details["bf16"] = "emulated: float32 compute, every bf16 value rounded where produced"
        return details

    def __call__(self):
        """A new ``onnxruntime.InferenceSession`` (RuntimeMissingError without the provider)."""
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        if not self.spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.provider == "cuda":
            if not cuda_provider_available():
                raise RuntimeMissingError(
                    f"onnxruntime's CUDA provider is not available: {CUDA_INSTALL_HINT}"
                )
            cuda_options = {"device_id": str(self.device_id), "use_tf32": "1" if self.tf32 else "0"}
            stream = _torch_cuda_stream()
            if stream is not None:
                cuda_options["user_compute_stream"] = str(stream)
            providers = [("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        source = str(self.path)
        if self.emulate_bf16:
            import onnx

            from aire_export.graphs.emulate import emulate_reduced_precision

            source = emulate_reduced_precision(onnx.load(source)).SerializeToString()
        try:
            session = ort.InferenceSession(source, options, providers=providers)
        except Exception as e:  # onnxruntime's own error types: a graph it cannot load
            raise InputError(
                f"onnxruntime cannot load {self.path}: {str(e).splitlines()[0][:300]}"
            ) from None
        if self.provider == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
            raise RuntimeMissingError(
                f"onnxruntime could not start its CUDA provider (CUDA or cuDNN libraries missing?): "
                f"{CUDA_INSTALL_HINT}"
            )
        return session


class OrtRunner(Runner):
    """Runs the session a :class:`SessionLoader` builds: ``run`` host to host, ``bind`` with
    device-resident I/O on CUDA."""

    def __init__(self, loader: SessionLoader) -> None:
        self.loader = loader
        self.path = loader.path
        self.device = loader.device
        self.name = f"onnxruntime-{self.device}" + ("-bf16-emulated" if loader.emulate_bf16 else "")
        #: an emulated graph computes like the real one but its timings mean nothing
        self.emulated = loader.emulate_bf16
        self.details = loader.details
        self.session = loader()
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_shapes = {i.name: tuple(i.shape) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _feed(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise InputError(f"{self.path.name} needs input(s) {', '.join(missing)}")
        return {n: inputs[n] for n in self.input_names}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, self._feed(inputs))
        return dict(zip(self.output_names, outputs, strict=True))

    def bind(self, inputs: dict[str, np.ndarray]) -> Callable[[], None]:
        feed = self._feed(inputs)
        if self.device == "cpu":
            return lambda: self.session.run(self.output_names, feed)
        ort = _onnxruntime()
        binding = self.session.io_binding()
        self._bound = [ort.OrtValue.ortvalue_from_numpy(v, "cuda", 0) for v in feed.values()]
        for name, value in zip(feed, self._bound, strict=True):
            binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            binding.bind_output(name, "cuda")
        return lambda: self.session.run_with_iobinding(binding)


def _torch_cuda_stream() -> int | None:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.current_stream().cuda_stream
