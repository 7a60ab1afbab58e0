"""The one small interface every runtime implements (Polygraphy's runner idea).

A runner takes named numpy inputs and returns named numpy outputs (``run``: host to host, used
for parity), and can pre-bind inputs on its device to give a zero-argument callable that only
executes (``bind``: used for latency, so timings exclude host↔device copies). Validation code
knows nothing of any runtime beyond this interface.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import numpy as np


class Runner(abc.ABC):
    """A model that can be run on named inputs."""

    #: short label used in reports, e.g. "onnxruntime-cpu", "pytorch-eager"
    name: str
    #: "cpu" or "cuda": where ``bind``'s callable runs (decides how latency is timed)
    device: str = "cpu"
    #: free-form details for the report (provider options, precision, TF32 …)
    details: dict

    @abc.abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once on host inputs; returns host outputs by name."""

    def bind(self, inputs: dict[str, np.ndarray]) -> Callable[[], None]:
        """A callable that executes on pre-bound device-resident inputs (default: ``run``)."""
        return lambda: self.run(inputs)

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release resources (sessions, engines)."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
