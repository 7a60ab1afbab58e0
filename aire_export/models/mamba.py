"""Mamba-1 (Gu & Dao 2023), matching state-spaces/mamba `mamba_simple.py` and transformers'
`MambaForCausalLM`.

Glossary (Mamba paper §3, Algorithm 2; reference `Mamba`, `selective_scan_ref`):

    H       d_model, the width of the residual stream
    E       d_inner = expand·H, the width inside a mixer
    N       d_state, states per channel (the prunable state dimension: state n is shared by
            all E channels, because B_t and C_t are)
    R       dt_rank, the rank of the Δ projection
    K       d_conv, the causal depthwise convolution's width
    A       −exp(A_log), real (E, N)

Block (``MambaBlock``), h (B, L, H), residual in float32 when ``residual_in_fp32``:

    x, z = split(in_proj(rmsnorm(h)))                       (B, L, E) each
    x = silu(causal_depthwise_conv(x))                      kernel (E, K), bias (E,)
    Δ_raw, B, C = split(x_proj(x), [R, N, N])               (B, L, R), (B, L, N), (B, L, N)
    Δ = softplus(dt_proj(Δ_raw))                            (B, L, E)
    λ̄_t = exp(Δ_t ⊙ A)  (ZOH for A),  b_t = Δ_t B_t u_t   (Euler for B)      (B, L, E, N)
    s_t = λ̄_t ⊙ s_{t−1} + b_t,   y_t = s_t C_t + D ⊙ x_t   (the selective scan, s_{−1} = 0)
    h = h + out_proj(y ⊙ silu(z))

Network (``MambaLM``): embedding (V, H) → blocks → rmsnorm → lm_head (tied to the embedding
unless the config says otherwise), one next-token prediction per position (B, L, V).

``MambaFamily`` (the adapter, models/family.py): a unit is one state n of a layer (column n of
A_log, rows n of x_proj's B and C parts); the scoring view is measured on calibration data
(:class:`SelectiveView`); the export IR is a token language model with selective cores.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aire_export import ir
from aire_export.errors import InputError
from aire_export.models.blocks import ModelConfig, take_states, to_numpy64, zero_states
from aire_export.models.family import Family, Importer, UnitPolicy, dense_ir
from aire_export.models.modal import SelectiveView

SCAN_CHUNK = 32  # steps per chunk of the PyTorch scan


@dataclass(kw_only=True)
class MambaConfig(ModelConfig):
    """A Mamba-1 language model (names of mamba_ssm's config where one exists).

    state_sizes: d_state per layer (the same in a trained model, different after pruning).
    removed_channels: per layer, the inner channels (of d_inner) pruned as operators (S4oP's
        Mamba unit, DESIGN §3.6); the layer's mixer holds the other E_ℓ = d_inner − |removed|.
    """

    vocab_size: int
    d_inner: int
    dt_rank: int
    d_conv: int = 4
    norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    tie_embeddings: bool = True
    conv_bias: bool = True
    proj_bias: bool = False
    removed_channels: list[list[int]] = dataclasses.field(default_factory=list)
    per_token: ClassVar[bool] = True
    operators_field: ClassVar[str | None] = "removed_channels"
    operator_width_field: ClassVar[str] = "d_inner"

    def inner_width(self, layer: int) -> int:
        """E_ℓ, the inner channels layer ``layer`` keeps."""
        return self.d_inner - len(self.pruned_operators()[layer])

    input_kind: ClassVar[str] = "tokens"

    @property
    def d_input(self) -> int:
        return self.vocab_size

    @property
    def d_output(self) -> int:
        return self.vocab_size

    def validate(self) -> None:
        super().validate()
        for name in ("vocab_size", "d_inner", "dt_rank"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"config.{name} must be ≥ 1, got {getattr(self, name)}")
        if int(self.d_conv) < 2:
            raise InputError(f"config.d_conv must be ≥ 2 (a causal conv), got {self.d_conv}")


class RMSNorm(nn.Module):
    """y = x / √(mean(x²) + eps) ⊙ weight over the feature axis, computed in float32."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float() if x.dtype != torch.float64 else x
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def linear_scan(a: torch.Tensor, b: torch.Tensor, chunk: int = SCAN_CHUNK) -> torch.Tensor:
    """s_t = a_t ⊙ s_{t−1} + b_t over axis 1 of a, b (B, L, *S), s_{−1} = 0, without a loop
    over time (the ONNX ``chunked`` form, graphs/selective.py): time in chunks of at most
    ``chunk`` steps; a sweep through the chunk positions, vectorized over all chunks, gives each chunk's
    end state from zero and its decay Π a (only products of a ≤ 1: no exp of a cumulative
    sum); the end states are carried across chunks by this scan one level up; a second sweep
    starts every chunk from the state entering it.

    Differentiable with its own backward (:class:`_LinearScan`): the adjoint of the scan is the
    same scan in reverse, so training keeps no per-step autograd graph."""
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        return _LinearScan.apply(a, b, chunk)
    return _scan(a, b, chunk)


class _LinearScan(torch.autograd.Function):
    """Backward of s_t = a_t s_{t−1} + b_t for the loss gradient g_t = ∂ℓ/∂s_t:

        μ_t = g_t + a_{t+1} μ_{t+1}  (μ_{L−1} = g_{L−1}),   ∂ℓ/∂b_t = μ_t,   ∂ℓ/∂a_t = μ_t s_{t−1}

    μ is the forward scan run on the time-reversed sequence."""

    @staticmethod
    def forward(ctx, a, b, chunk):
        states = _scan(a, b, chunk)
        ctx.save_for_backward(a, states)
        ctx.chunk = chunk
        return states

    @staticmethod
    def backward(ctx, grad):
        a, states = ctx.saved_tensors
        following = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], 1)  # a_{t+1}, 0 at the end
        mu = _scan(following.flip(1), grad.flip(1), ctx.chunk).flip(1)
        previous = torch.cat([torch.zeros_like(states[:, :1]), states[:, :-1]], 1)
        return mu * previous, mu, None


def _scan(a: torch.Tensor, b: torch.Tensor, chunk: int) -> torch.Tensor:
    length = a.shape[1]
    if length <= chunk:
        return torch.stack(
            _sweep(a.movedim(1, 0).contiguous(), b.movedim(1, 0).contiguous(), None), 1
        )
    n = -(-length // chunk)
    chunk = -(-length // n)  # the same number of chunks, as little padding as possible
    pad = n * chunk - length
    if pad:
        a = torch.cat([a, a.new_ones(a.shape[0], pad, *a.shape[2:])], 1)
        b = torch.cat([b, b.new_zeros(b.shape[0], pad, *b.shape[2:])], 1)
    shape = (a.shape[0], n, chunk, *a.shape[2:])
    # chunk position first, so that each step's slice (B, n, *S) is contiguous
    a_k = a.reshape(shape).movedim(2, 0).contiguous()
    b_k = b.reshape(shape).movedim(2, 0).contiguous()
    ends = _sweep(a_k, b_k, None)[-1]
    decay = a_k.prod(0)  # Π_k a_k per chunk
    carried = _scan(decay, ends, chunk)  # (B, n, *S) states at the chunk ends
    entering = torch.cat([torch.zeros_like(carried[:, :1]), carried[:, :-1]], 1)
    states = torch.stack(_sweep(a_k, b_k, entering), 2)
    return states.reshape(a.shape[0], n * chunk, *a.shape[2:])[:, :length]


def selective_scan(
    delta: torch.Tensor,
    inputs: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    A: torch.Tensor,
    chunk: int = SCAN_CHUNK,
) -> torch.Tensor:
    """y_t = C_t s_t (B, L, E) of s_t = exp(δ_t ⊗ A) ⊙ s_{t−1} + B_t ⊗ (δ ⊙ u)_t for δ and
    δ ⊙ u (B, L, E), B and C (B, L, N), A (N, E): graphs/selective.py's ``chunked`` form in
    PyTorch, for inference. Each chunk position's decays and drives are made from its own
    slice and y is read out step by step, so the states are never stacked into (B, L, N, E):
    measured 1.5-2x faster than :func:`linear_scan` plus a readout (benchmarks/mamba_cpu.py)."""
    batch, length, width = delta.shape
    n = -(-length // chunk)
    chunk = -(-length // n)
    pad = n * chunk - length

    def positions(t: torch.Tensor) -> torch.Tensor:  # (B, L, w) → (Q, B, n, w), contiguous
        t = F.pad(t, (0, 0, 0, pad)) if pad else t
        return t.reshape(batch, n, chunk, -1).movedim(2, 0).contiguous()

    d, u, b, c = (positions(t) for t in (delta, inputs, B, C))
    decays = [torch.exp(d_k[:, :, None, :] * A) for d_k in d]  # (B, n, N, E) each
    drives = [b_k[..., None] * u_k[:, :, None, :] for b_k, u_k in zip(b, u, strict=True)]
    ends = _sweep(decays, drives, None)[-1]  # each chunk's end state from zero
    spans = torch.exp(d.sum(0)[:, :, None, :] * A)  # the chunk's decay exp(A Σ δ)
    carried = _scan(spans, ends, chunk) if n > 1 else ends
    entering = torch.cat([torch.zeros_like(carried[:, :1]), carried[:, :-1]], 1)
    states = _sweep(decays, drives, entering)
    ys = [(c_k[:, :, None, :] @ s).squeeze(2) for c_k, s in zip(c, states, strict=True)]
    return torch.stack(ys, 2).reshape(batch, n * chunk, width)[:, :length]


def _sweep(a, b, start):
    """[s_k] with s_k = a_k ⊙ s_{k−1} + b_k, s_{−1} = start (None: zeros)."""
    states, s = [], start
    for a_k, b_k in zip(a, b, strict=True):
        s = b_k if s is None else a_k * s + b_k
        states.append(s)
    return states


def sequential_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The reference: s_t = a_t ⊙ s_{t−1} + b_t one step at a time (tests, float64)."""
    out = torch.empty_like(b)
    s = torch.zeros_like(b[:, 0])
    for t in range(b.shape[1]):
        s = a[:, t] * s + b[:, t]
        out[:, t] = s
    return out


@dataclass
class MixerTrace:
    """What a mixer computed on a sequence, for scores: the scan's input u (B, L, E), Δ
    (B, L, E), B_t and C_t (B, L, N), and the gate z (B, L, E)."""

    u: torch.Tensor
    delta: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    z: torch.Tensor


class MambaMixer(nn.Module):
    """The selective SSM with its projections (reference `Mamba`)."""

    def __init__(self, config: MambaConfig, d_state: int, d_inner: int | None = None) -> None:
        super().__init__()
        E = config.d_inner if d_inner is None else d_inner
        H, R, K = config.d_model, config.dt_rank, config.d_conv
        self.config = config
        self.in_proj = nn.Linear(H, 2 * E, bias=config.proj_bias)
        self.conv1d = nn.Conv1d(E, E, K, groups=E, padding=K - 1, bias=config.conv_bias)
        self.x_proj = nn.Linear(E, R + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.A_log = nn.Parameter(torch.zeros(E, d_state))
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, H, bias=config.proj_bias)

    @property
    def d_state(self) -> int:
        return int(self.A_log.shape[1])

    @property
    def d_inner(self) -> int:
        """E, this mixer's inner channels (fewer than the config's once operators are pruned)."""
        return int(self.A_log.shape[0])

    def _selective(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(Δ, B, C) for the conv output x (…, E)."""
        R, N = self.config.dt_rank, self.d_state
        dt, B, C = torch.split(self.x_proj(x), [R, N, N], dim=-1)
        return F.softplus(self.dt_proj(dt)), B, C

    def trace(self, h: torch.Tensor) -> MixerTrace:
        """The scan's inputs on h (B, L, H) (after the norm)."""
        x, z = self.in_proj(h).chunk(2, dim=-1)
        L = x.shape[1]
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :L].transpose(1, 2))
        delta, B, C = self._selective(x)
        return MixerTrace(x, delta, B, C, z)

    def discretize(self, t: MixerTrace) -> tuple[torch.Tensor, torch.Tensor]:
        """(λ̄, b) of the scan s_t = λ̄_t ⊙ s_{t−1} + b_t, each (B, L, N, E):
        λ̄_t = exp(Δ_t ⊗ A) (ZOH for A), b_t = B_t ⊗ (Δ_t ⊙ u_t) (Euler for B). States are
        laid out (N, E), E innermost: the broadcasts run along the long axis (2-4× faster)."""
        A = -torch.exp(self.A_log.to(t.delta.dtype)).t()  # (N, E)
        decay = torch.exp(t.delta[:, :, None, :] * A)
        drive = t.B[..., None] * (t.delta * t.u)[:, :, None, :]
        return decay, drive

    def scan(self, t: MixerTrace, scan=None) -> torch.Tensor:
        """The selective scan's output y_t = C_t s_t + D ⊙ u_t (B, L, E), before the gate.

        ``scan``: a linear scan of (λ̄, b) → states (sequential_scan in tests); None: without
        gradients :func:`selective_scan` (no (B, L, N, E) states kept), with them
        :func:`linear_scan` (its own backward)."""
        if scan is None and not torch.is_grad_enabled():
            A = -torch.exp(self.A_log.to(t.delta.dtype)).t()
            return selective_scan(t.delta, t.delta * t.u, t.B, t.C, A) + self.D * t.u
        states = (scan or linear_scan)(*self.discretize(t))  # (B, L, N, E)
        return (t.C[:, :, None, :] @ states).squeeze(2) + self.D * t.u

    def forward(self, h: torch.Tensor, scan=None) -> torch.Tensor:
        t = self.trace(h)
        return self.out_proj(self.scan(t, scan) * F.silu(t.z))

    def init_state(self, batch: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        E, K = self.d_inner, self.config.d_conv
        return (
            torch.zeros(batch, E, K - 1, dtype=dtype, device=device),
            torch.zeros(batch, E, self.d_state, dtype=dtype, device=device),
        )

    def step(self, h: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        """h (B, H) → out (B, H), (conv_state (B, E, K−1), ssm_state (B, E, N))."""
        conv, ssm = state
        x, z = self.in_proj(h).chunk(2, dim=-1)
        window = torch.cat([conv, x[..., None]], -1)  # (B, E, K): the last K inputs
        x = (window * self.conv1d.weight[:, 0]).sum(-1)
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias
        x = F.silu(x)
        delta, B, C = self._selective(x)
        A = -torch.exp(self.A_log.to(delta.dtype))
        ssm = torch.exp(delta[..., None] * A) * ssm + (delta * x)[..., None] * B[:, None, :]
        y = (ssm * C[:, None, :]).sum(-1) + self.D * x
        return self.out_proj(y * F.silu(z)), (window[..., 1:], ssm)


class MambaBlock(nn.Module):
    """h + mixer(rmsnorm(h)), the residual in float32 when the config says so."""

    def __init__(self, config: MambaConfig, d_state: int, index: int = 0) -> None:
        super().__init__()
        self.config, self.index = config, index
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.mixer = MambaMixer(config, d_state, config.inner_width(index))

    @property
    def state_size(self) -> int:
        return self.mixer.d_state

    def _residual(self, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.config.residual_in_fp32 and h.dtype != torch.float64:
            return (h.float() + out.float()).to(h.dtype)
        return h + out

    def forward(self, h: torch.Tensor, scan=None) -> torch.Tensor:
        return self._residual(h, self.mixer(self.norm(h), scan))

    def step(self, h: torch.Tensor, state):
        out, state = self.mixer.step(self.norm(h), state)
        return self._residual(h, out), state


@dataclass
class MambaState:
    """The streaming state: per layer (conv_state (B, E, K−1), ssm_state (B, E, N))."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]


class MambaLM(nn.Module):
    """Embedding → Mamba blocks → RMSNorm → LM head: next-token logits at every position."""

    arch: ClassVar[str] = "mamba"
    config_class: ClassVar[type[MambaConfig]] = MambaConfig

    def __init__(self, config: MambaConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.meta: dict[str, Any] = {}
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(
            MambaBlock(config, n, i) for i, n in enumerate(config.state_sizes)
        )
        self.norm_f = RMSNorm(config.d_model, config.norm_eps)
        if not config.tie_embeddings:
            self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    def head_weight(self) -> torch.Tensor:
        """(V, H): the LM head, tied to the embedding unless the config says otherwise."""
        return self.embedding.weight if self.config.tie_embeddings else self.lm_head.weight

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_floating_point(x):
            raise InputError("a Mamba language model takes token ids (B, L), not features")
        return x

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, scan=None
    ) -> torch.Tensor:
        """x (B, L) token ids → logits (B, L, V). ``lengths`` changes nothing: the model is
        causal, so the outputs at valid positions do not see the padding after them."""
        h = self.embedding(self._tokens(x))
        for block in self.layers:
            h = block(h, scan)
        return self.norm_f(h) @ self.head_weight().t()

    def init_state(self, batch: int) -> MambaState:
        p = self.embedding.weight
        return MambaState(
            [block.mixer.init_state(batch, p.dtype, p.device) for block in self.layers]
        )

    def step(self, x: torch.Tensor, state: MambaState) -> tuple[torch.Tensor, MambaState]:
        """x (B,) token ids → logits (B, V) of the next token, and the new state."""
        h = self.embedding(self._tokens(x))
        layers = []
        for block, s in zip(self.layers, state.layers, strict=True):
            h, s = block.step(h, s)
            layers.append(s)
        return self.norm_f(h) @ self.head_weight().t(), MambaState(layers)


def init_mamba(model: MambaLM, seed: int = 0, dt_min: float = 1e-3, dt_max: float = 0.1) -> MambaLM:
    """Initialize as the reference does, in place: A = 1..N (S4D-Real, A_log = log A), D = 1,
    Δ's bias the inverse softplus of log-uniform [dt_min, dt_max], dt_proj's weight uniform in
    ±dt_rank^−½; other weights normal(0, 0.02) (seeded)."""
    g = torch.Generator().manual_seed(seed)
    R = model.config.dt_rank
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("A_log", "D", "dt_proj.weight", "dt_proj.bias", "norm.weight")):
                continue
            p.copy_(
                0.02 * torch.randn(p.shape, generator=g) if p.dim() > 1 else torch.zeros(p.shape)
            )
        for block in model.layers:
            m = block.mixer
            E, N = m.A_log.shape
            m.A_log.copy_(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).expand(E, N))
            m.D.fill_(1.0)
            m.dt_proj.weight.copy_(
                (torch.rand(m.dt_proj.weight.shape, generator=g) * 2 - 1) * R**-0.5
            )
            dt = torch.exp(
                torch.rand(E, generator=g) * (math.log(dt_max) - math.log(dt_min))
                + math.log(dt_min)
            ).clamp(min=1e-4)
            m.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
    return model


# ---- the adapter --------------------------------------------------------------------------------
def _rms_ir(norm: RMSNorm) -> ir.RMSNorm:
    return ir.RMSNorm(weight=to_numpy64(norm.weight), eps=float(norm.eps))


class MambaFamily(Family):
    """The Mamba-1 adapter: states scored on calibration data, a unit per state n of a layer,
    exported as a token language model of selective cores."""

    name = MambaLM.arch
    model_class = MambaLM
    sweep_methods = ("aire", "ghost", "magnitude-global", "random")  # the selective scores
    importers = (
        Importer(
            "hf-mamba",
            "aire_export.checkpoints.hf_mamba",
            "import_hf_mamba",
            "a Hugging Face transformers MambaForCausalLM / MambaModel folder or a mamba_ssm "
            "one (config.json + model.safetensors or pytorch_model.bin)",
        ),
    )

    # ---- calibration and the scoring view ------------------------------------------------
    def calibrate(self, model: MambaLM, calib: Any) -> list[MixerTrace | None]:
        """Per layer, the trace of its mixer on the calibration sequences (``calib.x`` token
        ids), from one float64 forward pass of the whole model."""
        if calib is None:
            return [None] * len(model.layers)
        x = torch.as_tensor(np.asarray(calib.x), dtype=torch.long)
        net = copy.deepcopy(model).double().eval()
        traces = []
        with torch.no_grad():
            h = net.embedding(x)
            for block in net.layers:
                traces.append(block.mixer.trace(block.norm(h)))
                h = block(h)
        return traces

    def modal_system(self, block: MambaBlock, *, calib: MixerTrace | None = None) -> SelectiveView:
        m = block.mixer
        name = f"layers.{block.index}.mixer"
        with torch.no_grad():
            A = -torch.exp(m.A_log.double())  # (E, N)
            if calib is None:
                nominal = torch.exp(F.softplus(m.dt_proj.bias.double())[:, None] * A)
                nan = np.full(m.d_state, np.nan)
                return SelectiveView(
                    energy=nan,
                    hankel=nan.copy(),
                    magnitude=to_numpy64(nominal.mean(0)),
                    max_abs_lambda=to_numpy64(nominal.max(0).values),
                    calibrated=False,
                    name=name,
                )
            return _measured_view(m, calib, A, name)

    # ---- units, shrink, mask -------------------------------------------------------------------
    def units(self, block: MambaBlock) -> UnitPolicy:
        return UnitPolicy(ids=np.arange(block.mixer.d_state))

    def _state_rows(self, block: MambaBlock, units: np.ndarray) -> np.ndarray:
        """Rows of x_proj.weight that belong to states ``units``: the B and the C part."""
        R, N = block.config.dt_rank, block.mixer.d_state
        return np.concatenate([R + units, R + N + units])

    def shrunk_parameters(self, block: MambaBlock, kept_units: np.ndarray):
        m, R = block.mixer, block.config.dt_rank
        rows = np.concatenate([np.arange(R), self._state_rows(block, np.asarray(kept_units))])
        return len(kept_units), {
            "mixer.A_log": take_states(m.A_log.detach(), 1, kept_units),
            "mixer.x_proj.weight": take_states(m.x_proj.weight.detach(), 0, rows),
        }

    def masked_parameters(self, block: MambaBlock, kept_units: np.ndarray):
        m = block.mixer
        drop = np.ones(m.x_proj.weight.shape[0], dtype=bool)
        drop[: block.config.dt_rank] = False
        drop[self._state_rows(block, np.asarray(kept_units, dtype=np.int64))] = False
        return {"mixer.x_proj.weight": zero_states(m.x_proj.weight.detach(), 0, drop)}

    # ---- operators (S4oP's Mamba unit): inner channels ---------------------------------------------
    def channel_width(self, block: MambaBlock) -> int:
        return block.mixer.d_inner

    def channel_pruned_parameters(self, block: MambaBlock, kept: np.ndarray):
        """The kept inner channels d of every parameter indexed by d (S4oP's ``convert_layer_
        mamba``): in_proj's x and z rows, the conv's filters, x_proj's columns, dt_proj's rows,
        A_log, D and out_proj's columns. Δ_t, B_t and C_t then read the kept channels only."""
        m, index = block.mixer, np.asarray(kept, dtype=np.int64)
        rows = np.concatenate([index, m.d_inner + index])  # x part, then z part
        axes = {
            "in_proj.weight": (0, rows),
            "in_proj.bias": (0, rows),
            "conv1d.weight": (0, index),
            "conv1d.bias": (0, index),
            "x_proj.weight": (1, index),
            "dt_proj.weight": (0, index),
            "dt_proj.bias": (0, index),
            "A_log": (0, index),
            "D": (0, index),
            "out_proj.weight": (1, index),
        }
        params = dict(m.named_parameters())
        return {
            f"mixer.{name}": take_states(params[name].detach(), axis, at)
            for name, (axis, at) in axes.items()
            if name in params
        }

    def channel_masked_parameters(self, block: MambaBlock, kept: np.ndarray):
        """Same shapes, the other channels cut off: their columns of x_proj (they no longer
        reach Δ, B, C) and of out_proj (nor the output) zeroed."""
        m = block.mixer
        drop = ~np.isin(np.arange(m.d_inner), kept)
        return {
            f"mixer.{name}.weight": zero_states(getattr(m, name).weight.detach(), 1, drop)
            for name in ("x_proj", "out_proj")
        }

    # ---- export and streaming ---------------------------------------------------------------------
    def export_ir(self, model: MambaLM) -> ir.TokenLM:
        blocks = []
        for block in model.layers:
            m = block.mixer
            E, K = m.d_inner, model.config.d_conv
            conv_bias = m.conv1d.bias if m.conv1d.bias is not None else torch.zeros(E)
            blocks.append(
                ir.ResidualBlock(
                    norm=_rms_ir(block.norm),
                    prenorm=True,
                    core=ir.SelectiveCore(
                        in_proj=dense_ir(m.in_proj)
                        if m.in_proj.bias is not None
                        else _dense_without_bias(m.in_proj),
                        conv_weight=to_numpy64(m.conv1d.weight).reshape(E, K),
                        conv_bias=to_numpy64(conv_bias),
                        x_proj=_dense_without_bias(m.x_proj),
                        dt_proj=dense_ir(m.dt_proj),
                        A=-np.exp(to_numpy64(m.A_log)),
                        D=to_numpy64(m.D),
                        out_proj=dense_ir(m.out_proj)
                        if m.out_proj.bias is not None
                        else _dense_without_bias(m.out_proj),
                        dt_rank=model.config.dt_rank,
                    ),
                    activation=None,
                )
            )
        return ir.TokenLM(
            embedding=to_numpy64(model.embedding.weight),
            blocks=tuple(blocks),
            norm_f=_rms_ir(model.norm_f),
            lm_head=to_numpy64(model.head_weight()).T.copy(),
            residual_in_fp32=model.config.residual_in_fp32,
            tied=model.config.tie_embeddings,
        )

    def state_layout(self, model: MambaLM) -> list[tuple[str, tuple[int, ...]]]:
        out = []
        for i, (conv, ssm) in enumerate(model.init_state(1).layers):
            out += [
                (f"state_{i}_conv", tuple(conv.shape[1:])),
                (f"state_{i}_ssm", tuple(ssm.shape[1:])),
            ]
        return out


def _dense_without_bias(linear: nn.Linear) -> ir.Dense:
    weight = to_numpy64(linear.weight).T.copy()
    return ir.Dense(weight=weight, bias=np.zeros(weight.shape[1]))


def _measured_view(m: MambaMixer, t: MixerTrace, A: torch.Tensor, name: str) -> SelectiveView:
    """The SelectiveView of a mixer from its float64 trace on calibration data."""
    decay, drive = m.discretize(t)  # (B, L, N, E)
    states = linear_scan(decay, drive)
    contribution = states * t.C[..., None]  # each state's share of y_{t,d}
    energy = contribution.pow(2).sum(3).mean((0, 1))  # (N,): E_{b,t} Σ_d (C x)²
    # observability: q_t = C_t² + λ̄_{t+1}² q_{t+1}, a reverse scan of the same kind
    c2 = t.C.pow(2)[..., None].expand_as(decay)
    next_decay = torch.cat([decay[:, 1:], torch.zeros_like(decay[:, :1])], 1)
    q = linear_scan(next_decay.flip(1).pow(2), c2.flip(1)).flip(1)
    sigma = torch.sqrt(states.pow(2).mean((0, 1)) * q.mean((0, 1)))  # (N, E)
    reference = m.scan(t)  # y before the gate, every state

    def distortion(removed: np.ndarray) -> float:
        """‖Σ_{n ∈ removed} C_n x_n‖ / ‖y‖ on the calibration data (the layer's scan output)."""
        removed = torch.as_tensor(np.asarray(removed, dtype=np.int64))
        cut = contribution[:, :, removed].sum(2)
        return float(cut.norm() / reference.norm().clamp_min(1e-300))

    view = _calibrated_view(energy, sigma.sum(1), decay, (0, 1, 3), name, distortion)
    return dataclasses.replace(view, operators=_operator_view(m, t, reference, decay, sigma, name))


def _operator_view(m: MambaMixer, t: MixerTrace, y, decay, sigma, name: str) -> SelectiveView:
    """The SelectiveView of a mixer's inner channels (see SelectiveView.operators)."""
    gated = y * F.silu(t.z)  # (B, L, E)
    W = m.out_proj.weight.detach().double()  # (H, E)
    output = gated @ W.t()

    def distortion(removed: np.ndarray) -> float:
        removed = torch.as_tensor(np.asarray(removed, dtype=np.int64))
        cut = gated[..., removed] @ W[:, removed].t()
        return float(cut.norm() / output.norm().clamp_min(1e-300))

    energy = gated.pow(2).mean((0, 1)) * W.pow(2).sum(0)
    return _calibrated_view(energy, sigma.sum(0), decay, (0, 1, 2), name, distortion)


def _calibrated_view(energy, hankel, decay, others, name, distortion) -> SelectiveView:
    """A measured SelectiveView whose units are the axis of λ̄ (B, L, N, E) not in ``others``."""
    return SelectiveView(
        energy=to_numpy64(energy),
        hankel=to_numpy64(hankel),
        magnitude=to_numpy64(decay.mean(others)),
        max_abs_lambda=to_numpy64(decay.amax(others)),
        calibrated=True,
        name=name,
        distortion=distortion,
    )


FAMILY = MambaFamily()
