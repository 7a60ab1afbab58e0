"""S5 (Smith, Warrington & Linderman 2023), matching lindermanlab/S5 and the AIRE-Prune fork.

Glossary (S5 paper §2–3, reference `s5/ssm.py`):

    H           d_model, the block width
    P           stored states of a layer (``ssm_size_base/2`` when conj_sym)
    Λ           continuous eigenvalues, Lambda_re + i·Lambda_im (P,); clipped to Re ≤ −1e-4 at
                forward time when ``clip_eigs`` (the stored value may be positive)
    B̃           input matrix, complex (P, H), stored as B (P, H, 2) = [re, im]
    C̃           output matrix, complex (H, P), stored as C (H, P, 2); a bidirectional layer has
                C1 (forward) and C2 (backward)
    D           feedthrough (H,)
    Δ           step_rescale · exp(log_step[:, 0]), one step per state (P,)

Core (``S5SSM``), with (λ̄, B̄) from :mod:`discretize`:

    x_k = λ̄ ⊙ x_{k−1} + B̄ u_k
    y_k = s·Re(C̃ x_k) + D ⊙ u_k,            s = 2 if conj_sym else 1
    bidirectional: y_k = s·Re(C1 x_k + C2 x^b_k) + D ⊙ u_k,  x^b_k = λ̄ ⊙ x^b_{k+1} + B̄ u_k

Block (reference `SequenceLayer`), x (B, L, H):

    skip = x; x = norm(x) if prenorm; x = ssm(x)
    full_glu:  x = gelu(x); x = out1(x) · σ(out2(x))
    half_glu1: x = gelu(x); x = x · σ(out2(x))
    half_glu2: x1 = gelu(x); x = x · σ(out2(x1))         (x is the raw SSM output)
    gelu:      x = gelu(x)
    x = skip + x; x = norm(x) if not prenorm

GELU is the tanh approximation (flax `nn.gelu`), LayerNorm eps 1e-6, BatchNorm eps 1e-5.

``S5Family`` (the adapter, models/family.py): the modal view is the core's (λ̄, B̄, C̃), every
stored state (a conjugate pair when conj_sym) is its own unit, and the core lowers as a dense
MIMO system (``ir.DenseLTI``); checkpoints of the official code import as ``s5-flax``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from aire_export import ir
from aire_export.models.blocks import (
    NetworkConfig,
    SSMBlock,
    SSMNetwork,
    as_complex,
    as_real,
    check_choices,
    complex_numpy,
    gelu,
    make_norm,
    place_channels,
    take_channels,
    take_states,
    to_numpy64,
    zero_states,
)
from aire_export.models.discretize import METHODS, discretize
from aire_export.models.family import ClassifierFamily, Importer, UnitPolicy, dense_ir, gelu_ir
from aire_export.models.modal import ModalSystem, conj_scale
from aire_export.models.scan import scan_chunked

ACTIVATIONS = ("full_glu", "half_glu1", "half_glu2", "gelu")
CLIP_MAX = -1e-4


@dataclass(kw_only=True)
class S5Config(NetworkConfig):
    """S5 network; field names follow the reference `run_train.py` flags where one exists."""

    conj_sym: bool = True
    clip_eigs: bool = False
    bidirectional: bool = False
    discretization: str = "zoh"
    step_rescale: float = 1.0
    activation: str = "half_glu1"
    bn_momentum: float = 0.95

    def validate(self) -> None:
        super().validate()
        check_choices(self, discretization=METHODS, activation=ACTIVATIONS)


class S5SSM(nn.Module):
    """The S5 SSM core: one MIMO diagonal system of P states over H channels.

    With pruned operators (``active``: the kept channels, S4oP's unit on a MIMO core) the
    system reads and writes the active channels only, B̃ (P, H_a), C̃ (H_a, P), D (H_a), and
    every other channel passes its input through, y_h = u_h."""

    def __init__(self, config: S5Config, state_size: int, active: list[int] | None = None) -> None:
        super().__init__()
        self.active = None if active is None else tuple(int(h) for h in active)
        H = config.d_model if active is None else len(active)
        P = state_size
        self.config = config
        self.Lambda_re = nn.Parameter(torch.full((P,), -0.5))
        self.Lambda_im = nn.Parameter(torch.zeros(P))
        self.B = nn.Parameter(torch.zeros(P, H, 2))
        if config.bidirectional:
            self.C1 = nn.Parameter(torch.zeros(H, P, 2))
            self.C2 = nn.Parameter(torch.zeros(H, P, 2))
        else:
            self.C = nn.Parameter(torch.zeros(H, P, 2))
        self.D = nn.Parameter(torch.zeros(H))
        self.log_step = nn.Parameter(torch.full((P, 1), float(np.log(0.01))))

    @property
    def state_size(self) -> int:
        return int(self.Lambda_re.shape[0])

    @property
    def output_scale(self) -> float:
        return conj_scale(self.config.conj_sym)

    def _param(self, name: str, dtype: torch.dtype | None) -> torch.Tensor:
        value = getattr(self, name)
        return value if dtype is None else value.to(dtype)

    def continuous_lambda(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Λ (P,) complex; Re Λ clipped to ≤ −1e-4 when clip_eigs (applied at forward time)."""
        re, im = self._param("Lambda_re", dtype), self._param("Lambda_im", dtype)
        return torch.complex(re.clamp(max=CLIP_MAX) if self.config.clip_eigs else re, im)

    def discrete(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(λ̄ (P,), B̄ (P, H)) complex, by the configured discretization.

        ``dtype=torch.float64`` computes from the parameters cast to float64 (the modal view).
        """
        lam_bar, gain = self.discrete_gain(dtype)
        return lam_bar, gain[:, None] * as_complex(self._param("B", dtype))

    def discrete_gain(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(λ̄ (P,), g (P,)) complex with B̄ = g ⊙ B̃ (row-wise)."""
        step = self.config.step_rescale * torch.exp(self._param("log_step", dtype)[:, 0])
        return discretize(self.continuous_lambda(dtype), step, self.config.discretization)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Parameter names of C̃ per direction: ("C",) or ("C1", "C2")."""
        return ("C1", "C2") if self.config.bidirectional else ("C",)

    def output_matrices(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
        """C̃ per direction, complex (H, P): (C,) or (C1, C2)."""
        return tuple(as_complex(self._param(n, dtype)) for n in self.output_names)

    def state_axes(self) -> dict[str, int]:
        """Every parameter indexed by state, with its state axis: Λ, B̃ rows, log Δ rows, the
        columns of every C̃ (pruning a state removes it from both directions)."""
        axes = {"Lambda_re": 0, "Lambda_im": 0, "B": 0, "log_step": 0}
        return axes | {name: 1 for name in self.output_names}

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (B, L, H) real → y (B, L, H) real."""
        if self.active == ():
            return u
        u_a = take_channels(u, self.active)
        y = self.D * u_a
        if self.state_size == 0:
            return place_channels(u, y, self.active)
        lam_bar, B_bar = self.discrete()
        v = torch.complex(u_a @ B_bar.real.t(), u_a @ B_bar.imag.t())  # B̄ u_k: (B, L, P)
        for direction, C in enumerate(self.output_matrices()):
            x = scan_chunked(lam_bar, v, reverse=direction == 1)  # (B, L, P)
            y = y + self.output_scale * (x.real @ C.real.t() - x.imag @ C.imag.t())
        return place_channels(u, y, self.active)

    def init_state(self, batch: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """(B, P, 2) zeros; (B, 0, 2) once every channel is bypassed (no input reaches the
        states, no output reads them)."""
        P = 0 if self.active == () else self.state_size
        return torch.zeros(batch, P, 2, dtype=dtype, device=device)

    def step(self, u: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u (B, H), state (B, P, 2) → y (B, H), new state: x' = λ̄x + B̄u; y = s·Re(C̃x') + Du
        (on the active channels; y_h = u_h on bypassed ones)."""
        if self.active == ():
            return u, state
        u_a = take_channels(u, self.active)
        if self.state_size == 0:
            return place_channels(u, self.D * u_a, self.active), state
        lam_bar, B_bar = self.discrete()
        x = lam_bar * as_complex(state) + torch.complex(u_a @ B_bar.real.t(), u_a @ B_bar.imag.t())
        (C,) = self.output_matrices()
        y = self.output_scale * (x.real @ C.real.t() - x.imag @ C.imag.t()) + self.D * u_a
        return place_channels(u, y, self.active), as_real(x)


class S5Block(SSMBlock):
    """Reference `SequenceLayer`: norm, S5 core, gated activation, residual."""

    def __init__(self, config: S5Config, state_size: int, index: int = 0) -> None:
        super().__init__()
        self.config = config
        self.index = index
        self.seq = S5SSM(config, state_size, config.active_channels(index))
        self.norm = make_norm(config, momentum=config.bn_momentum)
        if config.activation == "full_glu":
            self.out1 = nn.Linear(config.d_model, config.d_model)
        if config.activation != "gelu":
            self.out2 = nn.Linear(config.d_model, config.d_model)
        self.drop = nn.Dropout(config.dropout)

    @property
    def state_size(self) -> int:
        return self.seq.state_size

    def pointwise(self, y: torch.Tensor) -> torch.Tensor:
        """The gated activation on the SSM output y (pointwise in time)."""
        kind, approx = self.config.activation, self.config.gelu_approximate
        g = self.drop(gelu(y, approx))
        if kind == "full_glu":
            g = self.out1(g) * torch.sigmoid(self.out2(g))
        elif kind == "half_glu1":
            g = g * torch.sigmoid(self.out2(g))
        elif kind == "half_glu2":
            g = y * torch.sigmoid(self.out2(g))
        return self.drop(g) if kind != "gelu" else g

    def core_forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.seq(z)

    def core_step(self, z: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.seq.step(z, state)

    def init_state(self, batch: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return self.seq.init_state(batch, dtype, device)


class S5Model(SSMNetwork):
    """S5 classifier (reference `ClassificationModel` over `StackedEncoderModel`)."""

    arch = "s5"
    config_class = S5Config
    block_class = S5Block
    config: S5Config

    @property
    def bidirectional(self) -> bool:
        return self.config.bidirectional


class S5Family(ClassifierFamily):
    """The S5 adapter: one MIMO core per layer, every stored state (a conjugate pair when
    conj_sym) its own unit, lowered as a dense diagonal system."""

    name = S5Model.arch
    model_class = S5Model
    importers = (
        Importer(
            "s5-flax",
            "aire_export.checkpoints.s5_flax",
            "import_s5_flax",
            "the official S5 / AIRE-Prune / LAST code's flax checkpoint (best_state.msgpack)",
            needs_config=True,
            config_hint="pass --config run_args.json (the run_train.py flags as a JSON object)",
        ),
    )

    def modal_system(self, block: S5Block, *, calib=None) -> ModalSystem:
        """The float64 modal view. B̄ = g ⊙ B̃ is formed by numpy straight from the stored
        (P, H, 2) parameter in one pass (float64 copies in torch first cost 3× more on CPU);
        C̃ is a view of the stored parameter (complex64 for float32 weights, see ModalSystem)."""
        seq = block.seq
        with torch.no_grad():
            lam_bar, gain = seq.discrete_gain(torch.float64)
            return ModalSystem(
                lam=to_numpy64(lam_bar),
                B=to_numpy64(gain)[:, None] * complex_numpy(seq.B),
                C=tuple(complex_numpy(getattr(seq, n)) for n in seq.output_names),
                D=to_numpy64(seq.D),
                conj_sym=seq.config.conj_sym,
                name=f"layers.{block.index}.seq",
            )

    def units(self, block: S5Block) -> UnitPolicy:
        return UnitPolicy(ids=np.arange(block.seq.state_size))  # each stored state is a unit

    def shrunk_parameters(self, block: S5Block, kept_units: np.ndarray):
        return len(kept_units), {
            f"seq.{name}": take_states(getattr(block.seq, name).detach(), axis, kept_units)
            for name, axis in block.seq.state_axes().items()
        }

    def masked_parameters(self, block: S5Block, kept_units: np.ndarray):
        drop = np.ones(block.seq.state_size, dtype=bool)
        drop[kept_units] = False
        reach = {"B": 0} | {name: 1 for name in block.seq.output_names}  # B̃ rows, C̃ columns
        return {
            f"seq.{name}": zero_states(getattr(block.seq, name).detach(), axis, drop)
            for name, axis in reach.items()
        }

    def activation_ir(self, block: S5Block) -> ir.GatedActivation:
        kind = block.config.activation
        return ir.GatedActivation(
            gelu=gelu_ir(block.config.gelu_approximate),
            gate="none" if kind == "gelu" else kind,
            out1=dense_ir(block.out1) if kind == "full_glu" else None,
            out2=dense_ir(block.out2) if kind != "gelu" else None,
        )

    def core_ir(self, block: S5Block) -> ir.Core:
        """The core as a dense diagonal system (complex128), or the feedthrough D·u when the
        layer has no states left; with pruned operators widened to every channel by
        ir.with_bypass (zero B̄ columns and C̃ rows, D_h = 1 on the bypassed ones)."""
        system = self.modal_system(block)
        active = block.seq.active
        if system.P == 0 or active == ():
            core = ir.Feedthrough(D=system.D)
        else:
            core = ir.DenseLTI(
                lam=system.lam,
                B=system.B,
                C=tuple(system.dense_C(d) for d in range(len(system.C))),
                D=system.D,
                scale=system.output_scale,
            )
        return ir.with_bypass(core, active, block.config.d_model)

    # ---- operators (S4oP on a MIMO core): channel h's input column and output row ---------------
    def channel_width(self, block: S5Block) -> int:
        return int(block.seq.D.shape[0])

    def channel_pruned_parameters(self, block: S5Block, kept: np.ndarray):
        """The kept channels' columns of B̃, rows of every C̃ and entries of D; Λ and Δ stay
        (the states are shared by every channel)."""
        seq, index = block.seq, np.asarray(kept, dtype=np.int64)
        reach = {"B": 1, "D": 0} | {name: 0 for name in seq.output_names}
        return {
            f"seq.{name}": take_states(getattr(seq, name).detach(), axis, index)
            for name, axis in reach.items()
        }

    def channel_masked_parameters(self, block: S5Block, kept: np.ndarray):
        """The other channels cut off the states (B̃ column and C̃ rows zero) and D = 1:
        y_h = u_h, and u_h no longer reaches the kept channels."""
        seq = block.seq
        drop = ~np.isin(np.arange(self.channel_width(block)), kept)
        reach = {"B": 1} | {name: 0 for name in seq.output_names}
        out = {
            f"seq.{name}": zero_states(getattr(seq, name).detach(), axis, drop)
            for name, axis in reach.items()
        }
        out["seq.D"] = torch.where(torch.as_tensor(drop), torch.ones_like(seq.D), seq.D.detach())
        return out


FAMILY = S5Family()
