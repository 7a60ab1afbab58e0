"""A framework-neutral float64 description of a network, what the lowerings consume.

Each model class provides it (``SSMNetwork.export_ir()``, ``SSMBlock.export_ir()``): the
adapters know their architecture, the graphs/ code lowers the IR generically and never
branches on architecture names (STYLE: Optimum's one-config-per-architecture). S5 and S4D
share one residual template; what differs is data (norm kind, GELU form, gate variant):

    h = encoder(x)                                    Dense, or a table lookup for token ids
    per block:  z = norm(h) if prenorm else h
                y = core(z)                            diagonal SSM (a ModalSystem), incl. D ⊙ z
                a = gate(gelu(y), y)                   GatedActivation
                h = h + a;  h = norm(h) if not prenorm
    p = pool(h, lengths)                              mean (masked by lengths) or last
    out = decoder(p), then log_softmax if configured

The S4D output GLU (Linear(H, 2H) then GLU) is the ``full_glu`` gate with out1/out2 the two
halves of the Linear. All arrays are float64; matrices act on row vectors (y = x @ W + b).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aire_export.models.modal import ModalSystem

GELUS = ("tanh", "erf")
GATES = ("full_glu", "half_glu1", "half_glu2", "none")
POOLINGS = ("mean", "last")


@dataclass(frozen=True, eq=False)
class Dense:
    """y = x @ weight + bias; weight (d_in, d_out)."""

    weight: np.ndarray
    bias: np.ndarray


@dataclass(frozen=True, eq=False)
class Affine:
    """BatchNorm at inference, folded: y = x ⊙ scale + shift (per feature)."""

    scale: np.ndarray
    shift: np.ndarray


@dataclass(frozen=True, eq=False)
class LayerNorm:
    """y = (x − mean) / sqrt(var + eps) ⊙ weight + bias over the feature axis."""

    weight: np.ndarray
    bias: np.ndarray
    eps: float


Norm = Affine | LayerNorm


@dataclass(frozen=True, eq=False)
class GatedActivation:
    """g = gelu(y);  full_glu: out1(g)·σ(out2(g));  half_glu1: g·σ(out2(g));
    half_glu2: y·σ(out2(g));  none: g."""

    gelu: str
    gate: str
    out1: Dense | None = None
    out2: Dense | None = None

    def __post_init__(self) -> None:
        if self.gelu not in GELUS or self.gate not in GATES:
            raise ValueError(f"unknown activation {self.gelu!r} / gate {self.gate!r}")


@dataclass(frozen=True, eq=False)
class ResidualBlock:
    norm: Norm
    prenorm: bool
    core: ModalSystem
    activation: GatedActivation


@dataclass(frozen=True, eq=False)
class Network:
    """The whole classifier. ``tokens``: the input is int64 token ids and the encoder is a
    table lookup (rows of the encoder weight, plus bias)."""

    encoder: Dense
    tokens: bool
    blocks: tuple[ResidualBlock, ...]
    pooling: str
    decoder: Dense
    log_softmax: bool

    @property
    def d_input(self) -> int:
        return int(self.encoder.weight.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.encoder.weight.shape[1])

    @property
    def d_output(self) -> int:
        return int(self.decoder.weight.shape[1])

    @property
    def bidirectional(self) -> bool:
        return any(block.core.bidirectional for block in self.blocks)
