"""The standard benchmark workloads of BENCHMARKS.md, as models with random weights.

S5 options unless stated: conj_sym, zoh, prenorm, BatchNorm, half_glu2, mean pooling; S5
eigenvalues initialized as the reference does (HiPPO-LegS blocks). "P" in BENCHMARKS.md is
the reference ``ssm_size_base``; the stored states per layer are P/2. A pruned variant keeps
a fraction of the stored states in every layer (uniform per layer, as BENCHMARKS.md allows
for timing): the model is built directly at the smaller size, which times exactly like a
physically shrunk one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from aire_export.models import S4DConfig, S4DModel, S5Config, S5Model
from aire_export.models.s4d import init_s4d
from aire_export.models.s5_init import init_s5


@dataclass(frozen=True)
class Workload:
    name: str
    arch: str
    d_model: int
    stored_states: int  # per layer, unpruned (S5: ssm_size_base / 2; S4D: modes per channel)
    n_layers: int
    bidirectional: bool
    d_input: int
    tokens: bool
    length: int  # T; 1 for the step-mode workload
    batch: int
    step: bool = False

    def scaled(self, **changes) -> Workload:
        return replace(self, **changes)


WORKLOADS = {
    w.name: w
    for w in (
        Workload("pathx", "s5", 128, 128, 6, True, 1, False, 16384, 8),
        Workload("pathfinder", "s5", 192, 128, 6, True, 1, False, 1024, 64),
        Workload("listops", "s5", 128, 8, 8, True, 17, True, 2048, 32),
        Workload("text-s4d", "s4d", 256, 32, 6, False, 1, False, 4096, 16),
        Workload("stream", "s5", 128, 128, 6, False, 1, False, 1, 1, step=True),
    )
}
KEEPS = (1.0, 0.5, 0.3)


def kept_states(workload: Workload, keep: float) -> int:
    return max(1, round(workload.stored_states * keep))


def build(workload: Workload, keep: float = 1.0, seed: int = 0):
    """The workload's model (eval mode) with ``keep`` of the stored states in every layer."""
    torch.manual_seed(seed)  # the Linear layers draw from torch's global generator
    states = [kept_states(workload, keep)] * workload.n_layers
    common = dict(
        d_input=workload.d_input,
        d_model=workload.d_model,
        d_output=10,
        state_sizes=states,
        input_kind="tokens" if workload.tokens else "features",
    )
    if workload.arch == "s4d":
        return init_s4d(S4DModel(S4DConfig(**common)), seed=seed).eval()
    config = S5Config(
        **common, bidirectional=workload.bidirectional, activation="half_glu2", conj_sym=True
    )
    blocks = _blocks(states[0])
    return init_s5(S5Model(config), blocks=blocks, seed=seed).eval()


def _blocks(stored: int) -> int:
    """The largest J ≤ 8 that splits 2·stored states into blocks of conjugate pairs."""
    return next(j for j in (8, 4, 2, 1) if stored % j == 0)


def example_input(workload: Workload, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if workload.tokens:
        return torch.randint(0, workload.d_input, (batch, length), generator=g)
    return torch.randn(batch, length, workload.d_input, generator=g)
