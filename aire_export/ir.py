"""The export IR: a framework-neutral float64 description of a network (DESIGN §2, step 6).

It is the contract between ``models/`` and ``graphs/``: a family adapter
(``models/family.py``) describes its model in these types, the lowerings in ``graphs/``
consume them, and neither package imports the other. S5 and S4D share one residual template;
what differs is data (norm kind, GELU form, gate variant) and the core's layout:

    h = encoder(x)                                    Dense, or a table lookup for token ids
    per block:  z = norm(h) if prenorm else h
                y = core(z)                            the SSM core, D ⊙ z included
                a = activation(y)                      pointwise (GatedActivation)
                h = h + a;  h = norm(h) if not prenorm
    p = pool(h, lengths)                              mean (masked by lengths) or last
    out = decoder(p), then log_softmax if configured

Core types (graphs/ has one lowering module per type and dispatches on it):

    DenseLTI       a MIMO diagonal system over all H channels (S5)
    SisoBankLTI    H independent SISO systems of N modes each (S4D); never expanded to (HN × H)
    Feedthrough    no state left, y = D ⊙ u (a layer pruned to nothing: no recurrence is emitted)
    Bypassed       a SISO bank on some channels, the others pass through (pruned operators)
    SelectiveCore  a Mamba-1 mixer: the input-dependent scan with its projections and conv

Networks: ``Network`` (a classifier, pooled over time) and ``TokenLM`` (a causal language
model, per token). The scoring views (``models/modal.py``) are separate and never enter a
graph.

The S4D output GLU (Linear(H, 2H) then GLU) is the ``full_glu`` gate with out1/out2 the two
halves of the Linear. All arrays are float64 (complex128 for complex ones); matrices act on
row vectors (y = x @ W + b).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

GELUS = ("tanh", "erf")
GATES = ("full_glu", "half_glu1", "half_glu2", "none")
POOLINGS = ("mean", "last")
DEVICES = ("cpu", "gpu")


# ---- dense and pointwise parts -----------------------------------------------------------------
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


@dataclass(frozen=True, eq=False)
class RMSNorm:
    """y = x / sqrt(mean(x²) + eps) ⊙ weight over the feature axis (Mamba)."""

    weight: np.ndarray
    eps: float


Norm = Affine | LayerNorm | RMSNorm


@dataclass(frozen=True, eq=False)
class GatedActivation:
    """The pointwise part after the core: g = gelu(y);  full_glu: out1(g)·σ(out2(g));
    half_glu1: g·σ(out2(g));  half_glu2: y·σ(out2(g));  none: g."""

    gelu: str
    gate: str
    out1: Dense | None = None
    out2: Dense | None = None

    def __post_init__(self) -> None:
        if self.gelu not in GELUS or self.gate not in GATES:
            raise ValueError(f"unknown activation {self.gelu!r} / gate {self.gate!r}")


# ---- SSM cores -----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class DenseLTI:
    """A MIMO diagonal system of P states over H channels (S5 eq. 3), with x_{−1} = 0:

        x_t = λ̄ ⊙ x_{t−1} + B̄ u_t,          y_t = Σ_d s·Re(C̃_d x^d_t) + D ⊙ u_t

    lam (P,), B (P, H) and every C (H, P) complex; one C per direction (the backward state
    x^b_t = λ̄ ⊙ x^b_{t+1} + B̄ u_t includes the current input); s the output scale (2 when a
    stored state stands for a conjugate pair)."""

    lam: np.ndarray
    B: np.ndarray
    C: tuple[np.ndarray, ...]
    D: np.ndarray
    scale: float

    def __post_init__(self) -> None:
        P, H = self.B.shape
        if self.lam.shape != (P,) or P == 0 or not 1 <= len(self.C) <= 2:
            raise ValueError(f"DenseLTI needs P ≥ 1 states and 1 or 2 C's, got {self.B.shape}")
        if any(c.shape != (H, P) for c in self.C) or self.D.shape != (H,):
            raise ValueError(f"DenseLTI: C must be ({H}, {P}) and D ({H},)")

    @property
    def H(self) -> int:
        return int(self.D.shape[0])

    @property
    def P(self) -> int:
        return int(self.lam.shape[0])

    @property
    def states(self) -> int:
        return self.P

    @property
    def bidirectional(self) -> bool:
        return len(self.C) == 2


@dataclass(frozen=True, eq=False)
class SisoBankLTI:
    """H independent SISO systems of N modes each (S4D), per channel h and mode n:

        x_{hn,t} = λ̄_hn x_{hn,t−1} + b̄_hn u_{h,t},     y_{h,t} = Σ_d Re Σ_n c^d_hn x^d_{hn,t} + D_h u_{h,t}

    lam, b and every c are complex (H, N); the output scale is folded into c."""

    lam: np.ndarray
    b: np.ndarray
    c: tuple[np.ndarray, ...]
    D: np.ndarray

    def __post_init__(self) -> None:
        H, N = self.lam.shape
        if N == 0 or self.b.shape != (H, N) or any(c.shape != (H, N) for c in self.c):
            raise ValueError(f"SisoBankLTI needs (H, N ≥ 1) arrays, got {self.lam.shape}")
        if not 1 <= len(self.c) <= 2 or self.D.shape != (H,):
            raise ValueError("SisoBankLTI: 1 or 2 c's and D (H,)")

    @property
    def H(self) -> int:
        return int(self.lam.shape[0])

    @property
    def N(self) -> int:
        return int(self.lam.shape[1])

    @property
    def states(self) -> int:
        return self.H * self.N

    @property
    def bidirectional(self) -> bool:
        return len(self.c) == 2


@dataclass(frozen=True, eq=False)
class Feedthrough:
    """A core without states: y = D ⊙ u."""

    D: np.ndarray

    @property
    def H(self) -> int:
        return int(self.D.shape[0])

    @property
    def states(self) -> int:
        return 0

    @property
    def bidirectional(self) -> bool:
        return False


@dataclass(frozen=True, eq=False)
class SelectiveCore:
    """A Mamba-1 mixer: the selective scan with its projections (models/mamba.py), on the
    normed residual stream h (…, H):

        x, z = split(h @ in_proj, [E, E]);  x = silu(causal depthwise conv of x)
        Δ_raw, B, C = split(x @ x_proj, [R, N, N]);  Δ = softplus(Δ_raw @ dt_proj)
        s_t = exp(Δ_t ⊙ A) ⊙ s_{t−1} + (Δ_t ⊙ x_t) ⊗ B_t;  y_t = s_t C_t + D ⊙ x_t
        out = (y ⊙ silu(z)) @ out_proj

    conv_weight (E, K): out_t = Σ_k w[:, k] x_{t−K+1+k} + conv_bias; A (E, N) real, negative."""

    in_proj: Dense
    conv_weight: np.ndarray
    conv_bias: np.ndarray
    x_proj: Dense
    dt_proj: Dense
    A: np.ndarray
    D: np.ndarray
    out_proj: Dense
    dt_rank: int

    @property
    def H(self) -> int:
        return int(self.in_proj.weight.shape[0])

    @property
    def E(self) -> int:
        return int(self.A.shape[0])

    @property
    def N(self) -> int:
        return int(self.A.shape[1])

    @property
    def K(self) -> int:
        return int(self.conv_weight.shape[1])

    @property
    def states(self) -> int:
        return self.E * self.N

    @property
    def bidirectional(self) -> bool:
        return False


@dataclass(frozen=True, eq=False)
class Bypassed:
    """A SISO bank on some channels only, the others passing through (S4oP's pruned operators,
    DESIGN §3.6; a dense core is widened instead, :func:`with_bypass`): with u (…, H) and
    ``active`` the kept channels (ascending, 1 ≤ |active| < H),

        y[…, active] = core(u[…, active]),     y_h = u_h for every other channel h

    ``core`` acts on the |active| channels (its H is their count)."""

    core: SisoBankLTI
    active: np.ndarray
    width: int

    def __post_init__(self) -> None:
        active = np.asarray(self.active)
        if not 1 <= active.size < self.width or np.any(np.diff(active) <= 0):
            raise ValueError("Bypassed needs 1 ≤ |active| < width ascending channels")
        if active[0] < 0 or active[-1] >= self.width or self.core.H != active.size:
            raise ValueError(
                f"Bypassed: active channels of 0..{self.width - 1}, one per core channel"
            )

    @property
    def H(self) -> int:
        return self.width

    @property
    def states(self) -> int:
        return self.core.states

    @property
    def bidirectional(self) -> bool:
        return self.core.bidirectional

    @property
    def bypassed(self) -> np.ndarray:
        return np.setdiff1d(np.arange(self.width), self.active)


Core = DenseLTI | SisoBankLTI | Feedthrough | SelectiveCore | Bypassed


def with_bypass(core: Core, active: tuple[int, ...] | None, width: int) -> Core:
    """The core of a layer whose operators outside ``active`` are bypassed (y_h = u_h), from
    ``core`` on the active channels. A feedthrough widens to all ``width`` channels with
    D_h = 1 on the bypassed ones; so does a dense core (S5), with zero columns of B̄ and zero
    rows of every C̃ there: its states serve every channel, so gathering the active channels
    saves no scan work (measured on the digits model at half its channels, onnxruntime CPU,
    1 thread, 1024 steps: the gathered graph 1.56× slower than the unpruned one, the widened
    graph 1.00×). A SISO bank (S4D) is wrapped in ``Bypassed``: its scan shrinks."""
    if active is None:
        return core
    index = list(active)
    D = np.ones(width)
    D[index] = core.D
    if isinstance(core, Feedthrough):
        return Feedthrough(D=D)
    if isinstance(core, DenseLTI):
        B = np.zeros((core.P, width), dtype=core.B.dtype)
        B[:, index] = core.B
        C = tuple(np.zeros((width, core.P), dtype=c.dtype) for c in core.C)
        for full, c in zip(C, core.C, strict=True):
            full[index] = c
        return replace(core, B=B, C=C, D=D)
    return Bypassed(core, np.asarray(active), width)


# ---- blocks and the network ----------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ResidualBlock:
    norm: Norm
    prenorm: bool
    core: Core
    activation: GatedActivation | None  # None: the core's output is added as it is


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

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; one of {', '.join(POOLINGS)}")

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


@dataclass(frozen=True, eq=False)
class TokenLM:
    """A causal language model: one next-token prediction per position.

    h = embedding[x]                                   (B, L, H) from token ids (B, L)
    per block:  h = h + core(norm(h))                  (float32 residual if asked)
    logits = norm_f(h) @ lm_head                       (B, L, V); lm_head (H, V)

    tied: lm_head is the embedding transposed (a graph may store the table once).
    """

    embedding: np.ndarray
    blocks: tuple[ResidualBlock, ...]
    norm_f: RMSNorm
    lm_head: np.ndarray
    residual_in_fp32: bool
    tied: bool = False

    @property
    def d_input(self) -> int:
        return int(self.embedding.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.embedding.shape[1])

    @property
    def d_output(self) -> int:
        return int(self.lm_head.shape[1])

    @property
    def tokens(self) -> bool:
        return True

    @property
    def bidirectional(self) -> bool:
        return False


Graphable = Network | TokenLM


# ---- how a core is lowered -------------------------------------------------------------------------
@dataclass(frozen=True)
class LoweringRule:
    """One row of ``scan="auto"``: cores of type ``core`` on ``device`` with at most
    ``max_states`` states (None: any) get ``method`` with these chunk sizes. ``source`` names
    the measurement the row comes from. Families may contribute rules that are tried before
    the generic table (``Family.lowering_rules``)."""

    device: str
    core: type
    max_states: int | None
    method: str
    chunk: int
    toeplitz_chunk: int
    source: str

    def matches(self, core: Core, device: str) -> bool:
        """The rule applies to ``core`` on ``device`` (a Bypassed core by its inner core)."""
        if isinstance(core, Bypassed):
            core = core.core
        return (
            self.device == device
            and isinstance(core, self.core)
            and (self.max_states is None or core.states <= self.max_states)
        )
