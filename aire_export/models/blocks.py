"""What S5 and S4D networks share: config fields, norms, pooling, the network skeleton, streaming.

Network (S5 `StackedEncoderModel` + `ClassificationModel`; S4D `example.py` `S4Model`):

    h = encoder(x)                               (B, L, H)   Dense, or an embedding for tokens
    for each block:  h = block(h)                (B, L, H)   residual block around an SSM core
    z = pool(h, lengths)                         (B, H)      mean (masked by lengths) or last
    y = decoder(z)                               (B, d_output), then log_softmax if configured

Streaming (``step``): the same network one time step at a time with explicit state. After t
steps, the output equals the sequence output on the first t inputs (unidirectional models).

What differs between architectures lives in their modules (s5.py, s4d.py): the core, and the
family adapter that exposes it to the rest of the package (family.py).
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aire_export.errors import InputError

INPUT_KINDS = ("features", "tokens")
POOLINGS = ("pool", "last")
OUTPUTS = ("log_softmax", "logits")
NORMS = ("batch", "layer")


@dataclass(kw_only=True)
class ModelConfig:
    """What every architecture's config shares: the width, one state size per layer, and
    (de)serialization. It also states the model's I/O contract, which generic code (data
    checks, graph checks, the pipeline) reads instead of architecture fields:

    input_kind: "features" (x float (N, L, d_input)) or "tokens" (x int (N, L) < d_input).
    d_input: features per step, or the vocabulary size for tokens.
    d_output: classes, or the vocabulary of a language model.
    per_token: outputs and labels per step (B, L, d_output) / (N, L), not per sequence.
    """

    d_model: int
    state_sizes: list[int]
    per_token: ClassVar[bool] = False
    # the field listing, per layer, the operators (channels) pruned (S4oP, DESIGN §3.6), and
    # the field giving how many a layer has; None: the architecture has no operator pruning
    operators_field: ClassVar[str | None] = None
    operator_width_field: ClassVar[str] = "d_model"

    @property
    def n_layers(self) -> int:
        return len(self.state_sizes)

    def validate(self) -> None:
        """Raise InputError naming the first bad field."""
        if int(self.d_model) < 1:
            raise InputError(f"config.d_model must be ≥ 1, got {self.d_model}")
        if any(int(p) < 0 for p in self.state_sizes):
            raise InputError(f"config.state_sizes must be ≥ 0, got {self.state_sizes}")
        self._check_operators()

    # ---- pruned operators --------------------------------------------------------------------
    @property
    def operator_width(self) -> int:
        """The channels (operators) a layer has before any is pruned."""
        return int(getattr(self, self.operator_width_field))

    def pruned_operators(self) -> list[list[int]]:
        """Per layer, the pruned channels, ascending (empty lists when none is)."""
        lists = getattr(self, self.operators_field) if self.operators_field else []
        return [list(c) for c in lists] if lists else [[] for _ in range(self.n_layers)]

    def active_channels(self, layer: int) -> list[int] | None:
        """The channels of ``layer`` whose operator is kept, ascending; None when all are."""
        pruned = set(self.pruned_operators()[layer])
        if not pruned:
            return None
        return [h for h in range(self.operator_width) if h not in pruned]

    def with_operators_kept(self, kept: list[np.ndarray]):
        """This config with each layer keeping only the operators at positions ``kept[i]``
        among its active channels (the ones pruned before stay pruned)."""
        pruned = []
        for index, (before, positions) in enumerate(
            zip(self.pruned_operators(), kept, strict=True)
        ):
            active = self.active_channels(index) or list(range(self.operator_width))
            pruned.append(sorted(set(before) | set(active) - {active[c] for c in positions}))
        return self.replace(**{self.operators_field: pruned if any(pruned) else []})

    def _check_operators(self) -> None:
        name = self.operators_field
        lists = getattr(self, name) if name else None
        if not lists:
            return
        if len(lists) != self.n_layers:
            raise InputError(
                f"config.{name} lists {len(lists)} layers, the model has {self.n_layers}"
            )
        width = self.operator_width
        for index, channels in enumerate(lists):
            if sorted(set(channels)) != list(channels) or any(
                not 0 <= int(h) < width for h in channels
            ):
                raise InputError(
                    f"config.{name}[{index}] must be ascending distinct channels in 0..{width - 1}"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                f"unknown {cls.__name__} field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        missing = sorted(
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in data
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        )
        if missing:
            raise InputError(f"{cls.__name__} is missing field(s) {', '.join(missing)}")
        config = cls(**{**data, "state_sizes": [int(p) for p in data["state_sizes"]]})
        config.validate()
        return config

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclass(kw_only=True)
class NetworkConfig(ModelConfig):
    """Architecture of a sequence classifier around diagonal SSM layers.

    d_input: features per step, or the vocabulary size when ``input_kind == "tokens"``
        (token ids are one-hot encoded, as the reference does, so the encoder Dense is an
        embedding lookup plus bias).
    d_model: H, the width of every block.
    d_output: number of classes.
    state_sizes: stored states per layer (S5: P, halved when conj_sym; S4D: modes per channel).
        A layer with 0 states has no scan left (its core is the feedthrough D·u).
    bypassed_channels: per layer, the channels whose SSM operator was pruned (S4oP, DESIGN
        §3.6): on them the core's output is its input, y_h = u_h, and the layer holds SSM
        parameters for the other (active) channels only. Empty: no channel is bypassed.
    """

    d_input: int
    d_output: int
    input_kind: str = "features"
    pooling: str = "pool"
    output: str = "log_softmax"
    prenorm: bool = True
    norm: str = "batch"
    norm_eps: float = 1e-5
    dropout: float = 0.0
    gelu_approximate: str = "tanh"
    bypassed_channels: list[list[int]] = dataclasses.field(default_factory=list)
    operators_field: ClassVar[str | None] = "bypassed_channels"

    def validate(self) -> None:
        super().validate()
        for name in ("d_input", "d_output"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"config.{name} must be ≥ 1, got {getattr(self, name)}")
        check_choices(
            self,
            input_kind=INPUT_KINDS,
            pooling=POOLINGS,
            output=OUTPUTS,
            norm=NORMS,
            gelu_approximate=("tanh", "none"),
        )


def check_choices(config: Any, **allowed: tuple[str, ...]) -> None:
    """InputError naming the first field of ``config`` whose value is not among its choices."""
    for name, choices in allowed.items():
        if getattr(config, name) not in choices:
            raise InputError(
                f"config.{name} must be one of {', '.join(choices)}, got {getattr(config, name)!r}"
            )


class SequenceBatchNorm(nn.Module):
    """BatchNorm over the feature axis with statistics over (batch, time), flax conventions.

    Inference: (x − mean) / sqrt(var + eps) · scale + bias. Training updates the running
    statistics as ra = m·ra + (1 − m)·batch with the biased batch variance (flax BatchNorm).
    Parameter names follow flax (`scale`, `bias`, `mean`, `var`) so imports are renames.
    """

    def __init__(self, width: int, eps: float = 1e-5, momentum: float = 0.95) -> None:
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.scale = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("var", torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            dims = tuple(range(x.dim() - 1))
            mean = x.mean(dims)
            var = x.var(dims, unbiased=False)
            with torch.no_grad():
                self.mean.mul_(self.momentum).add_((1 - self.momentum) * mean)
                self.var.mul_(self.momentum).add_((1 - self.momentum) * var)
        else:
            mean, var = self.mean, self.var
        return (x - mean) * torch.rsqrt(var + self.eps) * self.scale + self.bias


def make_norm(config: NetworkConfig, momentum: float = 0.95) -> nn.Module:
    if config.norm == "batch":
        return SequenceBatchNorm(config.d_model, eps=config.norm_eps, momentum=momentum)
    return nn.LayerNorm(config.d_model, eps=config.norm_eps)


@dataclass
class StreamState:
    """Explicit state for streaming: per-layer SSM states plus what pooling needs.

    layers: one real tensor per layer, the complex states as a trailing axis of 2 (re, im).
    pooled_sum: (B, H) running sum of the top features (mean pooling).
    steps: number of steps taken so far (a float tensor of shape (1,)).
    """

    layers: list[torch.Tensor]
    pooled_sum: torch.Tensor
    steps: torch.Tensor


class SSMBlock(nn.Module, metaclass=abc.ABCMeta):
    """A residual block around an SSM core (S5 ``SequenceLayer``, S4D ``S4Model`` block):

        z = norm(h) if prenorm else h;   y = core(z);   out = h + pointwise(y)
        out = out if prenorm else norm(out)

    Subclasses provide ``norm``, ``core_forward`` (B, L, H) → (B, L, H), ``core_step`` (one
    step with explicit state), ``pointwise`` and ``init_state``. Everything a pruning or
    export step needs to know about a block is asked of its family (models/family.py).
    """

    config: NetworkConfig
    norm: nn.Module

    @property
    @abc.abstractmethod
    def state_size(self) -> int:
        """The config's state size of this layer (S5: P; S4D: modes per channel)."""

    @abc.abstractmethod
    def core_forward(self, z: torch.Tensor) -> torch.Tensor:
        """The core in sequence mode, (B, L, H) → (B, L, H)."""

    @abc.abstractmethod
    def core_step(self, z: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The core on one step (B, H) with explicit state → (output, new state)."""

    @abc.abstractmethod
    def pointwise(self, y: torch.Tensor) -> torch.Tensor:
        """What follows the core before the residual add (pointwise in time)."""

    @abc.abstractmethod
    def init_state(self, batch: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The zero streaming state of the core."""

    def _residual(self, h: torch.Tensor, core) -> tuple[torch.Tensor, object]:
        z = self.norm(h) if self.config.prenorm else h
        y, extra = core(z)
        out = h + self.pointwise(y)
        return (out if self.config.prenorm else self.norm(out)), extra

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, L, H) -> (B, L, H)
        return self._residual(h, lambda z: (self.core_forward(z), None))[0]

    def step(self, h: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._residual(h, lambda z: self.core_step(z, state))


def take_states(
    value: torch.Tensor, axis: int, index: np.ndarray, pad: np.ndarray | None = None, fill=0.0
) -> torch.Tensor:
    """Gather ``value`` along its state ``axis``.

    ``index`` is (K,): the same states for every row; or (R, K) with ``axis == 1``: per row of
    axis 0 (S4D channels), where ``pad`` (R, K) marks entries set to ``fill`` instead.
    """
    index = np.asarray(index, dtype=np.int64)
    if index.ndim == 1 and value.device.type == "cpu" and value.dtype != torch.bfloat16:
        # numpy's take is several times faster than index_select off the leading axis
        return torch.from_numpy(np.take(value.detach().numpy(), index, axis=axis))
    idx = torch.as_tensor(index, device=value.device)
    if idx.dim() == 1:
        return value.index_select(axis, idx)  # a new tensor
    tail = [1] * (value.dim() - 2)
    out = torch.gather(
        value, 1, idx.reshape(*idx.shape, *tail).expand(*idx.shape, *value.shape[2:])
    )
    if pad is not None:
        mask = torch.as_tensor(np.asarray(pad, dtype=bool), device=value.device)
        out = torch.where(mask.reshape(*mask.shape, *tail), torch.full_like(out, fill), out)
    return out


def take_channels(u: torch.Tensor, active: tuple[int, ...] | None) -> torch.Tensor:
    """The ``active`` channels of u (…, H) (all of them when None), for a core whose other
    operators are bypassed (S4oP, DESIGN §3.6)."""
    if active is None:
        return u
    return u.index_select(-1, torch.as_tensor(active, device=u.device))


def place_channels(
    u: torch.Tensor, y: torch.Tensor, active: tuple[int, ...] | None
) -> torch.Tensor:
    """y (…, |active|) on the ``active`` channels of u (…, H), u passed through on the others
    (y_h = u_h, a bypassed operator)."""
    if active is None:
        return y
    return u.index_copy(-1, torch.as_tensor(active, device=u.device), y)


def zero_states(value: torch.Tensor, axis: int, drop: np.ndarray) -> torch.Tensor:
    """A copy of ``value`` with the entries of the states marked in ``drop`` zeroed.

    ``drop`` is (N,) over ``axis`` or (R, N) over (axis 0, axis 1) (S4D channels × modes).
    """
    mask = torch.as_tensor(np.asarray(drop, dtype=bool), device=value.device)
    if mask.dim() == 1:
        shape = [1] * value.dim()
        shape[axis] = mask.shape[0]
        mask = mask.reshape(shape)
    else:
        mask = mask.reshape(*mask.shape, *([1] * (value.dim() - 2)))
    return torch.where(mask, torch.zeros_like(value), value)


class SSMNetwork(nn.Module):
    """Encoder → SSM blocks → pooling → decoder. Subclasses name their ``arch`` and give the
    config class and the block class (built as ``block_class(config, state_size, index)``)."""

    arch: ClassVar[str]
    config_class: ClassVar[type[NetworkConfig]]
    block_class: ClassVar[type[SSMBlock]]

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.meta: dict[
            str, Any
        ] = {}  # provenance (source file, import options); saved with the model
        self.encoder = nn.Linear(config.d_input, config.d_model)
        self.layers = nn.ModuleList(self.make_block(i, p) for i, p in enumerate(config.state_sizes))
        self.decoder = nn.Linear(config.d_model, config.d_output)

    def make_block(self, index: int, state_size: int) -> SSMBlock:
        return self.block_class(self.config, state_size, index)

    @property
    def bidirectional(self) -> bool:
        return False

    # ---- sequence mode ---------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids or (B, L, d_input) features → (B, L, H)."""
        if not torch.is_floating_point(x):
            if self.config.input_kind != "tokens":
                raise InputError("this model takes float features (B, L, d_input), not token ids")
            return F.embedding(x, self.encoder.weight.t()) + self.encoder.bias
        return self.encoder(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Top-layer features (B, L, H) before pooling."""
        h = self.encode(x)
        for block in self.layers:
            h = block(h)
        return h

    def pool(self, h: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, H) → (B, H): mean over valid steps ("pool") or the last valid step ("last")."""
        if self.config.pooling == "last":
            if lengths is None:
                return h[:, -1]
            return h[torch.arange(h.shape[0], device=h.device), lengths.long() - 1]
        if lengths is None:
            return h.mean(1)
        valid = torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None]
        return (h * valid[..., None]).sum(1) / lengths[:, None].to(h.dtype)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        y = self.decoder(z)
        return F.log_softmax(y, dim=-1) if self.config.output == "log_softmax" else y

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.pool(self.features(x), lengths))

    # ---- streaming ---------------------------------------------------------------------------
    def init_state(self, batch: int) -> StreamState:
        p = self.decoder.weight
        return StreamState(
            layers=[b.init_state(batch, p.dtype, p.device) for b in self.layers],
            pooled_sum=p.new_zeros(batch, self.config.d_model),
            steps=p.new_zeros(1),
        )

    def step(self, x: torch.Tensor, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        """One step: x (B,) token ids or (B, d_input) → output for the sequence so far."""
        if self.bidirectional:
            raise InputError(
                "streaming needs a unidirectional model: a bidirectional layer reads the future"
            )
        h = self.encode(x[:, None])[:, 0]
        new_layers = []
        for block, s in zip(self.layers, state.layers, strict=True):
            h, s = block.step(h, s)
            new_layers.append(s)
        pooled_sum = state.pooled_sum + h
        steps = state.steps + 1
        z = h if self.config.pooling == "last" else pooled_sum / steps
        return self.head(z), StreamState(new_layers, pooled_sum, steps)


def as_real(x: torch.Tensor) -> torch.Tensor:
    """Complex tensor → real with a trailing (re, im) axis."""
    return torch.view_as_real(x.contiguous())


def as_complex(x: torch.Tensor) -> torch.Tensor:
    """Real tensor with a trailing (re, im) axis → complex."""
    if x.numel() == 0:  # view_as_complex refuses empty tensors (a layer without channels)
        return torch.complex(x[..., 0], x[..., 0])
    return torch.view_as_complex(x.contiguous())


def gelu(x: torch.Tensor, approximate: str) -> torch.Tensor:
    return F.gelu(x, approximate=approximate)


def complex_numpy(x: torch.Tensor) -> np.ndarray:
    """Real tensor with a trailing (re, im) axis → complex numpy array (a view: complex64 for
    float32, complex128 for float64)."""
    x = x.detach().cpu().contiguous()
    if x.dtype not in (torch.float32, torch.float64) or x.shape[-1] != 2:
        raise ValueError(f"expected a float tensor with a trailing (re, im) axis, got {x.shape}")
    return x.numpy().view(np.complex64 if x.dtype == torch.float32 else np.complex128)[..., 0]


def to_numpy64(x: torch.Tensor) -> np.ndarray:
    """A float64 (complex128) copy: never a view of the model's memory, which may move (torch
    moves tensors into shared memory when a process pool pickles them)."""
    x = x.detach().cpu()
    return x.to(torch.complex128 if x.is_complex() else torch.float64, copy=True).numpy()
