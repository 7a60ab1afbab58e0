"""S4D (Gu et al. 2022), matching state-spaces/s4 `models/s4/s4d.py` and `example.py`.

Glossary (S4D paper §3; reference `S4DKernel`, `S4D`, `S4Model`):

    H           d_model; every channel h is its own SISO system (multi-SISO layer)
    N           stored modes per channel (``d_state/2``: conjugate symmetry, output 2·Re)
    A           −exp(log_A_real) + i·A_imag, (H, N), or (1, N) when ``shared_A`` (one set of
                continuous modes for all channels, like S4's ``n_ssm = 1``)
    Δ           exp(log_dt) (H,)
    B           1 in the standalone S4D (no parameter); (H, N, 2) when ``learn_B``
    C           (H, N, 2) = [re, im]
    D           feedthrough (H,)

Discrete system of channel h, mode n (ZOH or bilinear, :mod:`discretize`): λ̄_hn, b̄_hn = g_hn·B_hn,

    x_{hn,k} = λ̄_hn x_{hn,k−1} + b̄_hn u_{h,k},     y_{h,k} = 2·Re Σ_n C_hn x_{hn,k} + D_h u_{h,k}

Sequence mode is the reference's FFT convolution with the kernel K_h[l] = 2·Re Σ_n C_hn b̄_hn λ̄_hn^l
(Vandermonde evaluated in float64, so long kernels keep their phase); step mode runs the
recurrence. Core output: GELU (exact erf, as nn.GELU), then the output GLU (Conv1d(H, 2H, 1) in
the reference, a Linear here). Block (``S4Model``): prenorm LayerNorm (eps 1e-5), core,
dropout, residual; postnorm when ``prenorm`` is off.

``S4DFamily`` (the adapter, models/family.py): the modal view flattens the bank channel-major
(h, n); a unit is one (channel, mode), or one mode across every channel with a shared A;
channels may be balanced to one kept count; the core lowers as a SISO bank
(``ir.SisoBankLTI``); state-spaces checkpoints import as ``s4d-state-spaces``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aire_export import ir
from aire_export.models.blocks import (
    NetworkConfig,
    SSMBlock,
    SSMNetwork,
    as_complex,
    as_real,
    check_choices,
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

KERNEL_BLOCK = 1024  # kernel positions evaluated at once (bounds the Vandermonde's memory)


@dataclass(kw_only=True)
class S4DConfig(NetworkConfig):
    """S4D network (defaults follow state-spaces/s4 `example.py`)."""

    norm: str = "layer"
    norm_eps: float = 1e-5
    gelu_approximate: str = "none"
    output: str = "logits"
    conj_sym: bool = True
    discretization: str = "zoh"
    shared_A: bool = False
    learn_B: bool = False

    def validate(self) -> None:
        super().validate()
        check_choices(self, discretization=METHODS)


def s4d_kernel(lam_bar: torch.Tensor, w: torch.Tensor, length: int, scale: float) -> torch.Tensor:
    """K[h, l] = scale·Re Σ_n w_hn λ̄_hn^l for l < length, real (H, length), in float64."""
    log_lam = torch.log(lam_bar.to(torch.complex128))
    w = w.to(torch.complex128)
    pieces = []
    for start in range(0, length, KERNEL_BLOCK):
        l = torch.arange(
            start, min(length, start + KERNEL_BLOCK), dtype=torch.float64, device=w.device
        )
        vandermonde = torch.exp(log_lam[..., None] * l)  # (H, N, l)
        pieces.append(scale * torch.einsum("hn,hnl->hl", w, vandermonde).real)
    return torch.cat(pieces, -1) if pieces else w.real.new_zeros(w.shape[0], 0)


def causal_conv(u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """y[b, l, h] = Σ_{m ≤ l} K[h, m] u[b, l − m, h] by FFT (zero-padded to 2L: no wrap-around)."""
    length = u.shape[1]
    n = 2 * length
    u_f = torch.fft.rfft(u.transpose(1, 2), n=n)
    k_f = torch.fft.rfft(kernel, n=n)
    return torch.fft.irfft(u_f * k_f, n=n)[..., :length].transpose(1, 2)


class S4DKernel(nn.Module):
    """The diagonal SSM parameters of one S4D layer (reference `S4DKernel`), for its
    ``channels`` active channels (all H unless operators were pruned, S4oP)."""

    def __init__(self, config: S4DConfig, state_size: int, channels: int | None = None) -> None:
        super().__init__()
        H = config.d_model if channels is None else channels
        N = state_size
        self.config = config
        self.channels = H
        a_rows = 1 if config.shared_A else H
        self.log_dt = nn.Parameter(torch.full((H,), float(np.log(0.01))))
        self.log_A_real = nn.Parameter(torch.full((a_rows, N), float(np.log(0.5))))
        self.A_imag = nn.Parameter(torch.zeros(a_rows, N))
        self.C = nn.Parameter(torch.zeros(H, N, 2))
        if config.learn_B:
            self.B = nn.Parameter(torch.zeros(H, N, 2))

    @property
    def state_size(self) -> int:
        return int(self.C.shape[1])

    def discrete(
        self, dtype: torch.dtype | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(λ̄, b̄, C) complex, each (H, N)."""

        def param(name: str) -> torch.Tensor:
            value = getattr(self, name)
            return value if dtype is None else value.to(dtype)

        H = self.channels
        A = torch.complex(-torch.exp(param("log_A_real")), param("A_imag")).expand(H, -1)
        dt = torch.exp(param("log_dt"))[:, None]
        lam_bar, gain = discretize(A, dt, self.config.discretization)
        b_bar = gain * as_complex(param("B")) if self.config.learn_B else gain
        return lam_bar, b_bar, as_complex(param("C"))

    def unit_ids(self) -> np.ndarray:
        """(H·N,) unit of state (h, n) (flattened h-major): n when ``shared_A`` (a continuous
        mode is pruned from every channel), else h·N + n (each SISO mode on its own)."""
        H, N = self.channels, self.state_size
        return np.tile(np.arange(N), H) if self.config.shared_A else np.arange(H * N)

    def state_axes(self) -> dict[str, int]:
        """Parameters indexed by mode n, with the mode axis (axis 0 is the channel, or one row
        for a shared A). An inert padding mode gets 0 in each: A = −1, no input, no output."""
        names = ["log_A_real", "A_imag", "C"] + (["B"] if self.config.learn_B else [])
        return {name: 1 for name in names}

    def shrunk_parameters(self, kept_units: np.ndarray) -> tuple[int, dict[str, torch.Tensor]]:
        """New N′ and mode-indexed parameters keeping ``kept_units``.

        shared A: the kept modes n, the same for every channel (N′ = their count).
        Per channel: the selection is exact over all (h, n); channel h keeps its own modes and
        N′ = max_h (kept count of h). Channels keeping fewer are padded with inert modes: C = 0
        (and B = 0), A = −1 (log_A_real = 0, A_imag = 0), so the output equals the masked model
        exactly and the modes are stable. Forcing one common count per channel instead would
        change Algorithm 1's global choice; padding changes nothing but the width.
        """
        H, N = self.channels, self.state_size
        if self.config.shared_A:
            index, pad = np.asarray(kept_units, dtype=np.int64), None
            size = len(index)
        else:
            keep = np.zeros(H * N, dtype=bool)
            keep[kept_units] = True
            keep = keep.reshape(H, N)
            counts = keep.sum(1)
            size = int(counts.max()) if H else 0
            index = np.argsort(~keep, axis=1, kind="stable")[:, :size]  # kept modes first, in order
            pad = np.arange(size)[None, :] >= counts[:, None]  # (H, N′) inert padding
        return size, {
            name: take_states(getattr(self, name).detach(), axis, index, pad)
            for name, axis in self.state_axes().items()
        }


class S4DCore(nn.Module):
    """Reference `S4D`: the SSM (kernel + D), GELU, output GLU.

    With pruned operators (``active``: the kept channels, S4oP's structural layer) the SSM
    runs on the active channels only and every other channel passes its input through,
    y_h = u_h; the GELU and the output GLU stay full width."""

    def __init__(self, config: S4DConfig, state_size: int, active: list[int] | None = None) -> None:
        super().__init__()
        self.config = config
        self.active = None if active is None else tuple(int(h) for h in active)
        channels = config.d_model if active is None else len(active)
        self.kernel = S4DKernel(config, state_size, channels)
        self.D = nn.Parameter(torch.zeros(channels))
        self.drop = nn.Dropout(config.dropout)
        self.output_linear = nn.Linear(config.d_model, 2 * config.d_model)

    @property
    def output_scale(self) -> float:
        return conj_scale(self.config.conj_sym)

    def ssm(self, u: torch.Tensor) -> torch.Tensor:
        """u (B, L, H) → SSM output (B, L, H), before the activation."""
        if self.active == ():
            return u
        v = take_channels(u, self.active)
        if self.kernel.state_size == 0:
            return place_channels(u, self.D * v, self.active)
        lam_bar, b_bar, C = self.kernel.discrete()
        K = s4d_kernel(lam_bar, C * b_bar, u.shape[1], self.output_scale).to(u.dtype)
        return place_channels(u, causal_conv(v, K) + self.D * v, self.active)

    def activate(self, y: torch.Tensor) -> torch.Tensor:
        y = self.drop(gelu(y, self.config.gelu_approximate))
        return F.glu(self.output_linear(y), dim=-1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.activate(self.ssm(u))

    def step(self, u: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u (B, H), state (B, H_active, N, 2) → output (B, H), new state."""
        if self.active == ():
            return self.activate(u), state
        v = take_channels(u, self.active)
        if self.kernel.state_size == 0:
            return self.activate(place_channels(u, self.D * v, self.active)), state
        lam_bar, b_bar, C = self.kernel.discrete()
        x = lam_bar * as_complex(state) + b_bar * v[..., None]
        y = self.output_scale * (C * x).real.sum(-1) + self.D * v
        return self.activate(place_channels(u, y, self.active)), as_real(x)


class S4DBlock(SSMBlock):
    """One residual block of the reference `S4Model`."""

    def __init__(self, config: S4DConfig, state_size: int, index: int = 0) -> None:
        super().__init__()
        self.config = config
        self.index = index
        self.norm = make_norm(config)
        self.ssm = S4DCore(config, state_size, config.active_channels(index))
        self.drop = nn.Dropout(config.dropout)

    @property
    def state_size(self) -> int:
        return self.ssm.kernel.state_size

    def pointwise(self, y: torch.Tensor) -> torch.Tensor:
        return self.drop(y)

    def core_forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.ssm(z)

    def core_step(self, z: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ssm.step(z, state)

    def init_state(self, batch: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return torch.zeros(
            batch, self.ssm.kernel.channels, self.state_size, 2, dtype=dtype, device=device
        )


class S4DModel(SSMNetwork):
    """S4D classifier (reference `example.py` `S4Model`)."""

    arch = "s4d"
    config_class = S4DConfig
    block_class = S4DBlock
    config: S4DConfig


class S4DFamily(ClassifierFamily):
    """The S4D adapter: H SISO systems per layer (a SISO bank), a unit per (channel, mode), or
    per mode across channels with a shared A; channels can be balanced to one kept count."""

    name = S4DModel.arch
    model_class = S4DModel
    importers = (
        Importer(
            "s4d-state-spaces",
            "aire_export.checkpoints.s4d_state_spaces",
            "import_s4d_state_spaces",
            "an S4D model trained with state-spaces/s4 example.py (its saved state_dict); "
            "--config gives prenorm, dropout, input_kind, pooling",
        ),
    )

    def modal_system(self, block: S4DBlock, *, calib=None) -> ModalSystem:
        """The float64 modal view of the bank, states flattened channel-major (h, n)."""
        core = block.ssm
        with torch.no_grad():
            lam_bar, b_bar, C = core.kernel.discrete(torch.float64)
            H, N = lam_bar.shape
            return ModalSystem(
                lam=to_numpy64(lam_bar).reshape(-1),
                B=to_numpy64(b_bar).reshape(-1, 1),
                C=(to_numpy64(C).reshape(1, -1),),
                D=to_numpy64(core.D),
                conj_sym=core.config.conj_sym,
                channels=np.repeat(np.arange(H), N),
                units=core.kernel.unit_ids() if core.config.shared_A else None,
                name=f"layers.{block.index}.ssm",
            )

    def units(self, block: S4DBlock) -> UnitPolicy:
        """Per-channel A: each (channel, mode) is a unit, and channels may be balanced; a shared
        A: a unit is one mode across every channel (nothing to balance)."""
        kernel = block.ssm.kernel
        H, N = kernel.channels, kernel.state_size
        channels = None if block.config.shared_A else np.repeat(np.arange(H), N)
        return UnitPolicy(ids=kernel.unit_ids(), channels=channels)

    def shrunk_parameters(self, block: S4DBlock, kept_units: np.ndarray):
        size, params = block.ssm.kernel.shrunk_parameters(kept_units)
        return size, {f"ssm.kernel.{name}": value for name, value in params.items()}

    def masked_parameters(self, block: S4DBlock, kept_units: np.ndarray):
        kernel = block.ssm.kernel
        drop = ~np.isin(kernel.unit_ids(), kept_units).reshape(kernel.channels, -1)  # (H, N)
        names = ["C"] + (["B"] if block.config.learn_B else [])  # b̄ and C of the dropped modes
        return {
            f"ssm.kernel.{name}": zero_states(getattr(kernel, name).detach(), 1, drop)
            for name in names
        }

    def activation_ir(self, block: S4DBlock) -> ir.GatedActivation:
        """The output GLU (Linear(H, 2H), GLU) is the full_glu gate on the Linear's halves; the
        dropout after it is the identity at inference."""
        H, linear = block.config.d_model, block.ssm.output_linear
        return ir.GatedActivation(
            gelu=gelu_ir(block.config.gelu_approximate),
            gate="full_glu",
            out1=dense_ir(linear, slice(0, H)),
            out2=dense_ir(linear, slice(H, 2 * H)),
        )

    def core_ir(self, block: S4DBlock) -> ir.Core:
        """The bank as (H, N) arrays with the output scale folded into c, or the feedthrough
        D·u when the layer has no modes left. With pruned operators the bank covers the
        active channels (ir.Bypassed); without modes the bypassed channels get D = 1."""
        system = self.modal_system(block)
        active = block.ssm.active
        if system.P == 0 or active == ():
            core = ir.Feedthrough(D=system.D)
        else:
            H = system.H
            core = ir.SisoBankLTI(
                lam=system.lam.reshape(H, -1),
                b=system.B[:, 0].reshape(H, -1),
                c=(system.output_scale * np.asarray(system.C[0][0], complex).reshape(H, -1),),
                D=system.D,
            )
        return ir.with_bypass(core, active, block.config.d_model)

    # ---- operators (S4oP): a channel's whole SISO system ---------------------------------------
    def channel_width(self, block: S4DBlock) -> int:
        return block.ssm.kernel.channels

    def channel_pruned_parameters(self, block: S4DBlock, kept: np.ndarray):
        """S4oP's structural layer: C, log Δ, A (unless shared), B and D of the kept channels."""
        kernel, index = block.ssm.kernel, np.asarray(kept, dtype=np.int64)
        names = ["log_dt", "C"] + (["B"] if block.config.learn_B else [])
        names += [] if block.config.shared_A else ["log_A_real", "A_imag"]
        out = {f"ssm.kernel.{n}": take_states(getattr(kernel, n).detach(), 0, index) for n in names}
        out["ssm.D"] = take_states(block.ssm.D.detach(), 0, index)
        return out

    def channel_masked_parameters(self, block: S4DBlock, kept: np.ndarray):
        """The other channels' kernels zeroed (C = 0) and D = 1: y_h = u_h exactly."""
        drop = ~np.isin(np.arange(block.ssm.kernel.channels), kept)
        C = zero_states(block.ssm.kernel.C.detach(), 0, drop)
        D = torch.where(torch.as_tensor(drop), torch.ones_like(block.ssm.D), block.ssm.D.detach())
        return {"ssm.kernel.C": C, "ssm.D": D}


FAMILY = S4DFamily()


def init_s4d(
    model: S4DModel, dt_min: float = 0.001, dt_max: float = 0.1, seed: int = 0
) -> S4DModel:
    """Initialize the SSM parameters as the reference S4DKernel does (S4D-Lin), in place.

    log Δ ~ U[log dt_min, log dt_max]; C ~ CN(0, 1); A = −1/2 + iπn; D ~ N(0, 1); B = 1.
    """
    rng = np.random.default_rng(seed)
    H = model.config.d_model
    with torch.no_grad():
        for block in model.layers:
            kernel = block.ssm.kernel
            N = kernel.state_size
            kernel.log_dt.copy_(torch.from_numpy(rng.uniform(np.log(dt_min), np.log(dt_max), H)))
            kernel.log_A_real.fill_(float(np.log(0.5)))
            kernel.A_imag.copy_(
                torch.pi * torch.arange(N, dtype=torch.float64).expand_as(kernel.A_imag)
            )
            kernel.C.copy_(torch.from_numpy(rng.normal(0, np.sqrt(0.5), (H, N, 2))))
            if model.config.learn_B:
                kernel.B.copy_(torch.from_numpy(np.stack([np.ones((H, N)), np.zeros((H, N))], -1)))
            block.ssm.D.copy_(torch.from_numpy(rng.standard_normal(H)))
    return model
