"""The family adapter: one small object per SSM architecture (STYLE: Optimum's export configs).

Every per-architecture fact lives in a :class:`Family`; generic code (scores, selection, the
shrink, the export, validation, the pipeline, the command line) asks the model's family and
never branches on architecture names or infers a layout from the data:

    fact                 hook
    ----                 ----
    identity             ``name`` (the ``arch`` of our checkpoints), ``model_class``
    importers            ``importers``: checkpoint kinds that produce this family
    modal view           ``modal_system(block, calib=None)`` → ModalSystem (DESIGN §2 step 2)
    unit policy          ``units(block)`` → UnitPolicy: the unit of each state, and the channel
                         of each unit where units may be balanced per channel (S4D)
    shrink and mask      ``shrunk_parameters(block, kept)``, ``masked_parameters(block, kept)``
    operators (S4oP)     ``channel_width``, ``channel_pruned_parameters``,
                         ``channel_masked_parameters``: a channel's whole SSM pruned, y_h = u_h
    IR export            ``core_ir(block)`` (its layout), ``activation_ir(block)``; the
                         residual template ``block_ir`` and ``export_ir(model)`` → ir.Network
    step-state layout    ``state_layout(model)``: per layer the streaming state's shape
    preferred lowering   ``lowering_rules``: tried before the generic ``auto`` table
    sweep methods        ``sweep_methods``: what ``aire-export sweep`` compares by default
    tolerances           ``tolerance(precision, length)``: the parity gate for this family

A new architecture is one module that defines its model and one Family subclass, and one
:func:`register_family` call (``models/__init__.py`` registers S5 and S4D). The registry maps
checkpoint ``arch`` names to families; it is the only place families are looked up.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from aire_export import ir
from aire_export.errors import InputError
from aire_export.models.blocks import SequenceBatchNorm, SSMBlock, SSMNetwork, to_numpy64
from aire_export.models.modal import ScoringView
from aire_export.threads import map_layers
from aire_export.tolerance import Tolerance, default_tolerance


@dataclass(frozen=True)
class Importer:
    """A foreign checkpoint format this family can be imported from (``aire-export import``).

    ``module:function`` is imported only when used and called as ``function(path, options)``
    with the options of ``--config`` (a dict); ``needs_config``: the format cannot be read
    without them (what ``config_hint`` tells the user to pass)."""

    kind: str
    module: str
    function: str
    summary: str
    needs_config: bool = False
    config_hint: str = ""


@dataclass(frozen=True, eq=False)
class UnitPolicy:
    """How a layer's states are pruned together.

    ids: (P,) the unit of each state of the layer's modal view, values 0..U−1 (a state, a
        conjugate pair, or an S4D mode shared by every channel).
    channels: (U,) the channel of each unit when every unit lives on one channel and a layer
        may keep the same count in every channel (per-channel S4D), else None.
    """

    ids: np.ndarray
    channels: np.ndarray | None = None

    @property
    def n_units(self) -> int:
        return int(self.ids.max()) + 1 if self.ids.size else 0


class Family(abc.ABC):
    """The adapter of one architecture. Subclasses set the class attributes and implement the
    hooks; :class:`ClassifierFamily` implements the export of classifier networks built on
    :class:`SSMNetwork` (S5, S4D), a language-model family its own (Mamba)."""

    name: ClassVar[str]
    model_class: ClassVar[type[nn.Module]]
    importers: ClassVar[tuple[Importer, ...]] = ()
    lowering_rules: ClassVar[tuple[ir.LoweringRule, ...]] = ()
    sweep_methods: ClassVar[tuple[str, ...]] = (
        "aire", "last", "hinf-global", "magnitude-global", "random"
    )  # fmt: skip

    # ---- modal view (scores, certificates, plots) ------------------------------------------
    def calibrate(self, model: nn.Module, calib: Any) -> list[Any]:
        """Per layer, what :meth:`modal_system` needs of the calibration data ``calib`` (a
        SequenceData; None: none given). LTI layers need none."""
        return [None] * len(model.layers)

    @abc.abstractmethod
    def modal_system(self, block: nn.Module, *, calib: Any = None) -> ScoringView:
        """The layer's scoring view in float64: its discrete diagonal system (ModalSystem) for
        an LTI layer, which ignores ``calib``; statistics of its states over the calibration
        data (SelectiveView) for a selective one (DESIGN §3.5)."""

    # ---- pruning units, shrink and mask ----------------------------------------------------
    @abc.abstractmethod
    def units(self, block: nn.Module) -> UnitPolicy:
        """Which states of the block's modal view are pruned together (see UnitPolicy)."""

    @abc.abstractmethod
    def shrunk_parameters(
        self, block: nn.Module, kept_units: np.ndarray
    ) -> tuple[int, dict[str, torch.Tensor]]:
        """(new state size, {parameter name relative to the block: new value}) of the block
        that keeps only ``kept_units`` (sorted unit ids); other parameters are unchanged."""

    @abc.abstractmethod
    def masked_parameters(
        self, block: nn.Module, kept_units: np.ndarray
    ) -> dict[str, torch.Tensor]:
        """Same shapes, with every other unit's states cut off from the output (their input
        rows and/or output columns zeroed): the reference a shrunk block must equal."""

    # ---- operator (channel) pruning, S4oP (DESIGN §3.6) ---------------------------------------
    def channel_width(self, block: nn.Module) -> int:
        """How many operators (active channels) the block has."""
        raise InputError(f"{self.name} models have no operator (channel) pruning")

    def channel_pruned_parameters(
        self, block: nn.Module, kept: np.ndarray
    ) -> dict[str, torch.Tensor]:
        """{parameter name: new value} of the block keeping the operators ``kept`` (sorted
        positions among its active channels) and bypassing the others (y_h = u_h)."""
        raise InputError(f"{self.name} models have no operator (channel) pruning")

    def channel_masked_parameters(
        self, block: nn.Module, kept: np.ndarray
    ) -> dict[str, torch.Tensor]:
        """Same shapes, the other operators turned into the identity: the reference a
        channel-pruned block must equal."""
        raise InputError(f"{self.name} models have no operator (channel) pruning")

    # ---- export IR ---------------------------------------------------------------------------
    @abc.abstractmethod
    def export_ir(self, model: nn.Module) -> ir.Graphable:
        """The whole network as float64 IR (what graphs/ lowers)."""

    # ---- streaming, validation ----------------------------------------------------------------
    @abc.abstractmethod
    def state_layout(self, model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
        """The streaming state as the step graph takes it: (input name, shape without the
        batch axis) of every state input, in the graph's order."""

    def tolerance(self, precision: str, length: int) -> Tolerance:
        """The lowering-fidelity gate for this family's graphs (default: by precision)."""
        return default_tolerance(precision, length)


class ClassifierFamily(Family):
    """A family of :class:`SSMNetwork` classifiers: encoder → residual blocks (norm, core,
    pointwise activation) → pooling → decoder. It gives its core and activation IR; the
    network skeleton and the streaming state (one ``state_i`` per layer with states) are
    shared."""

    model_class: ClassVar[type[SSMNetwork]]

    @abc.abstractmethod
    def core_ir(self, block: nn.Module) -> ir.Core:
        """The block's SSM core in its layout (float64), or ir.Feedthrough without states."""

    @abc.abstractmethod
    def activation_ir(self, block: nn.Module) -> ir.GatedActivation:
        """The pointwise part between the core and the residual add, at inference."""

    def block_ir(self, block: SSMBlock) -> ir.ResidualBlock:
        """The block as float64 IR: the residual template of :class:`SSMBlock`."""
        return ir.ResidualBlock(
            norm=norm_ir(block.norm),
            prenorm=block.config.prenorm,
            core=self.core_ir(block),
            activation=self.activation_ir(block),
        )

    def export_ir(self, model: SSMNetwork) -> ir.Network:
        """The network as float64 IR: the classifier skeleton of :class:`SSMNetwork`."""
        cfg = model.config
        return ir.Network(
            encoder=dense_ir(model.encoder),
            tokens=cfg.input_kind == "tokens",
            blocks=tuple(self.block_ir(block) for block in model.layers),
            pooling="last" if cfg.pooling == "last" else "mean",
            decoder=dense_ir(model.decoder),
            log_softmax=cfg.output == "log_softmax",
        )

    def state_layout(self, model: SSMNetwork) -> list[tuple[str, tuple[int, ...]]]:
        """``state_i`` of every layer with states, shaped like ``model.init_state``."""
        return [
            (f"state_{i}", tuple(s.shape[1:]))
            for i, s in enumerate(model.init_state(1).layers)
            if s.numel()
        ]


# ---- IR helpers shared by the adapters ---------------------------------------------------------
def dense_ir(linear: nn.Linear, rows: slice = slice(None)) -> ir.Dense:
    """``ir.Dense`` of a Linear (optionally of a slice of its output features)."""
    return ir.Dense(
        weight=to_numpy64(linear.weight[rows]).T.copy(), bias=to_numpy64(linear.bias[rows])
    )


def norm_ir(norm: nn.Module) -> ir.Norm:
    """The IR form of a norm at inference: BatchNorm folds to an affine map."""
    if isinstance(norm, SequenceBatchNorm):
        scale = to_numpy64(norm.scale) / np.sqrt(to_numpy64(norm.var) + norm.eps)
        return ir.Affine(scale=scale, shift=to_numpy64(norm.bias) - to_numpy64(norm.mean) * scale)
    if isinstance(norm, nn.LayerNorm):
        return ir.LayerNorm(
            weight=to_numpy64(norm.weight), bias=to_numpy64(norm.bias), eps=float(norm.eps)
        )
    raise TypeError(f"no export form for {type(norm).__name__}")


def gelu_ir(approximate: str) -> str:
    """The IR name of a GELU: "tanh" approximation or the exact "erf" form."""
    return "tanh" if approximate == "tanh" else "erf"


# ---- the registry ----------------------------------------------------------------------------------
FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Make ``family`` known by its name (the ``arch`` its checkpoints carry)."""
    if family.name in FAMILIES and FAMILIES[family.name] is not family:
        raise ValueError(f"a family named {family.name!r} is already registered")
    kinds = {imp.kind for f in FAMILIES.values() if f is not family for imp in f.importers}
    clash = kinds & {imp.kind for imp in family.importers}
    if clash:
        raise ValueError(f"importer kind(s) {', '.join(sorted(clash))} already registered")
    FAMILIES[family.name] = family
    return family


def unregister_family(name: str) -> None:
    FAMILIES.pop(name, None)


def family_named(name: str) -> Family:
    """The family of an architecture name ("s5", "s4d")."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown architecture {name!r}; supported: {', '.join(sorted(FAMILIES))}"
        ) from None


def family_of(model: Any) -> Family:
    """The family of a model (InputError for anything that is not one of ours)."""
    family = FAMILIES.get(getattr(model, "arch", None))
    if family is None or not isinstance(model, family.model_class):
        raise InputError(
            f"expected an aire-export model (ax.load / ax.import_checkpoint), got "
            f"{type(model).__name__}"
        )
    return family


def importers() -> dict[str, Importer]:
    """Every registered importer by kind."""
    return {imp.kind: imp for family in FAMILIES.values() for imp in family.importers}


def modal_systems(
    model: nn.Module, *, calib: Any = None, workers: int | None = None
) -> list[ScoringView]:
    """The scoring view of every layer, in float64 (DESIGN §2, step 2): an LTI layer's modal
    system, a selective layer's statistics over ``calib`` (SequenceData of token ids or
    features, as --data). Layers are built side by side on up to ``workers`` threads
    (default: the CPU count)."""
    family = family_of(model)
    traces = family.calibrate(model, calib)
    return map_layers(
        lambda item: family.modal_system(item[0], calib=item[1]),
        list(zip(model.layers, traces, strict=True)),
        workers=workers,
    )


def export_ir(model: SSMNetwork) -> ir.Network:
    """The model as export IR, from its family."""
    return family_of(model).export_ir(model)


def parameter_count(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))
