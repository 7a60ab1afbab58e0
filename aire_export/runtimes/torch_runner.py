"""The PyTorch runner: the model itself, in float64 as the parity reference and as the eager
latency baseline."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch

from aire_export.errors import InputError, RuntimeMissingError
from aire_export.models import SSMNetwork
from aire_export.runtimes.base import Runner

DEVICES = ("cpu", "cuda")


class TorchRunner(Runner):
    """Runs ``model(x, lengths)``; inputs ``x`` (and ``lengths``), output ``y``.

    ``dtype=torch.float64`` gives the reference every parity is measured against.
    """

    def __init__(
        self,
        model: SSMNetwork,
        device: str = "cpu",
        *,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if device not in DEVICES:
            raise InputError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeMissingError(
                "PyTorch sees no CUDA GPU: run on a GPU machine with a CUDA build of torch"
            )
        self.device = device
        self.model = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
        precision = {torch.float64: "fp64", torch.float32: "fp32"}.get(dtype, str(dtype))
        self.name = f"pytorch-eager-{device}" + ("" if precision == "fp32" else f"-{precision}")
        self.details = {"torch": torch.__version__, "dtype": precision}
        self.dtype = dtype

    def _tensors(self, inputs: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if "x" not in inputs:
            raise InputError("inputs need 'x'")
        x = torch.from_numpy(np.ascontiguousarray(inputs["x"])).to(self.device)
        if x.is_floating_point():
            x = x.to(self.dtype)
        lengths = inputs.get("lengths")
        if lengths is not None:
            lengths = torch.from_numpy(np.asarray(lengths)).to(self.device)
        return x, lengths

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x, lengths = self._tensors(inputs)
        with torch.inference_mode():
            y = self.model(x, lengths)
        return {"y": y.float().cpu().numpy() if self.dtype != torch.float64 else y.cpu().numpy()}

    def bind(self, inputs: dict[str, np.ndarray]) -> Callable[[], None]:
        x, lengths = self._tensors(inputs)

        def execute() -> None:
            with torch.inference_mode():
                self.model(x, lengths)

        return execute
