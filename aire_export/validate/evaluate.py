"""Accuracy and output distortion of many models on one eval set (the sweep's evaluation).

The original's outputs are computed once; every pruned model is run by the same
:class:`TorchRunner` (float32, batch by batch) and scored with the same functions as
validation: top-1 accuracy (accuracy.py) and the normwise relative distortion (parity.py).
"""

from __future__ import annotations

import numpy as np

from aire_export.data import SequenceData
from aire_export.errors import InputError
from aire_export.models import SSMNetwork
from aire_export.runtimes.torch_runner import TorchRunner
from aire_export.validate.accuracy import accuracy, predict
from aire_export.validate.parity import pruning_distortion


class Evaluator:
    """Accuracy and distortion of models on ``data``, against ``original``."""

    def __init__(
        self, original: SSMNetwork, data: SequenceData, *, batch_size: int = 64, device: str = "cpu"
    ) -> None:
        if data.y is None:
            raise InputError(f"{data.source} has no labels 'y': sweeps need them")
        self.data = data
        self.batch_size = batch_size
        self.device = device
        self.reference = self.outputs(original)
        self.baseline = accuracy(self.reference, data.y).accuracy
        self._seen: dict[object, tuple[float, float]] = {}

    def outputs(self, model: SSMNetwork) -> np.ndarray:
        return predict(TorchRunner(model, self.device), self.data, batch_size=self.batch_size)

    def evaluate(self, model: SSMNetwork, key: object = None) -> tuple[float, float]:
        """(accuracy, distortion) of ``model``. Models given the same ``key`` (e.g. the units
        a prune kept: every method keeps every unit at ratio 0) are evaluated once."""
        if key is not None and key in self._seen:
            return self._seen[key]
        out = self.outputs(model)
        distortion = pruning_distortion(self.reference, out).normwise_rel
        result = accuracy(out, self.data.y).accuracy, distortion
        if key is not None:
            self._seen[key] = result
        return result
