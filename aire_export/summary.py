"""What is in a model: architecture, layers, states, parameters, eigenvalue stability."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from aire_export.json_values import finite_or_none
from aire_export.models import SelectiveView, modal_systems, parameter_count


@dataclass(frozen=True)
class LayerSummary:
    index: int
    name: str
    states: int  # stored states (S4D: modes over all channels)
    state_size: int  # the config's per-layer size (S5: P; S4D: modes per channel)
    bidirectional: bool
    max_abs_lambda: float  # max |λ̄| (0 for a layer without states)
    unstable: int  # states with |λ̄| ≥ 1 (energy 1/(1 − |λ̄|²) is infinite)
    slowest_decay_steps: (
        float  # steps for the slowest mode to decay by e: −1/log|λ̄|max (inf if ≥ 1)
    )
    parameters: int
    selective: bool = False  # λ̄ depends on the input: the figures are at a zero input's Δ


@dataclass(frozen=True)
class ModelSummary:
    arch: str
    config: dict[str, Any]
    layers: list[LayerSummary]
    parameters: int
    meta: dict[str, Any]
    input_kind: str  # the model's I/O contract (ModelConfig)
    d_input: int
    d_output: int
    per_token: bool

    @property
    def states(self) -> int:
        return sum(layer.states for layer in self.layers)

    @property
    def unstable(self) -> int:
        return sum(layer.unstable for layer in self.layers)

    def to_json(self) -> dict[str, Any]:
        """Strict JSON: an infinite decay time (a marginal mode) is null."""
        out = dataclasses.asdict(self)
        out["states"] = self.states
        out["unstable"] = self.unstable
        for layer in out["layers"]:
            layer["slowest_decay_steps"] = finite_or_none(layer["slowest_decay_steps"])
        return out


def summarize(model) -> ModelSummary:
    layers = []
    for index, (block, system) in enumerate(zip(model.layers, modal_systems(model), strict=True)):
        mags = np.abs(system.lam)
        max_abs = float(mags.max()) if system.P else 0.0
        decay = (
            float(-1 / np.log(max_abs))
            if 0 < max_abs < 1
            else (float("inf") if max_abs >= 1 else 0.0)
        )
        layers.append(
            LayerSummary(
                index=index,
                name=system.name,
                states=system.P,
                state_size=block.state_size,
                bidirectional=system.bidirectional,
                max_abs_lambda=max_abs,
                unstable=int((mags >= 1).sum()),
                slowest_decay_steps=decay,
                parameters=parameter_count(block),
                selective=isinstance(system, SelectiveView),
            )
        )
    return ModelSummary(
        arch=model.arch,
        config=model.config.to_dict(),
        layers=layers,
        parameters=parameter_count(model),
        meta=dict(model.meta),
        input_kind=model.config.input_kind,
        d_input=int(model.config.d_input),
        d_output=int(model.config.d_output),
        per_token=bool(model.config.per_token),
    )
