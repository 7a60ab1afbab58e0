"""Physical shrink: a new model of the same class, state sizes the kept counts (DESIGN §2.5).

Generic over architectures: the model's family says which of a block's parameters are indexed
by state (``Family.shrunk_parameters``, ``Family.masked_parameters``) and what a unit is
(``Family.units``); this module only assembles the new network. ``kept[ℓ]`` holds the unit
ids layer ℓ keeps (a state, a conjugate pair, or an S4D mode shared by all channels).

    shrink_model(model, kept)   state sizes = kept counts; a layer with nothing kept has no scan
                                left (its core is the feedthrough D·u) and is "dropped"
    mask_model(model, kept)     same shapes, pruned states cut off from the output: the reference
                                the shrunk model must equal (tests)

Operators (S4oP, DESIGN §3.6): ``kept[ℓ]`` holds the positions of the channels layer ℓ keeps
among its active channels; every other channel's operator is removed: bypassed (y_h = u_h) in
S4D and S5, cut out of the mixer in Mamba (its inner channel):

    shrink_channels(model, kept)   parameters of the kept channels only, the pruned ones
                                   recorded in the config (``config.operators_field``)
    mask_channels(model, kept)     same shapes, the other operators turned into the identity
                                   (a bypass) or cut off (Mamba)

``drop_empty_blocks=True`` also removes every block whose layer kept nothing (the whole residual
block, not just its scan). That changes the function (the block's D·u, activation and residual
are gone); its effect is measured by validation, not assumed.
"""

from __future__ import annotations

import copy
import itertools
import re

import numpy as np
import torch

from aire_export.errors import InputError
from aire_export.models import SSMNetwork, family_of

_LAYER_KEY = re.compile(r"^layers\.(\d+)\.(.*)$")


def check_kept(model: SSMNetwork, kept: list[np.ndarray], unit: str = "state") -> list[np.ndarray]:
    """``kept`` as sorted int arrays, one per layer, each a set of valid ids: unit ids of
    the layer's states (``unit="state"``), or positions among its active channels."""
    family = family_of(model)
    if len(kept) != len(model.layers):
        raise InputError(
            f"kept lists {len(kept)} layers but the model has {len(model.layers)} SSM layers"
        )
    what = "unit" if unit == "state" else "channel"
    out = []
    for index, (block, units) in enumerate(zip(model.layers, kept, strict=True)):
        units = np.asarray(units)
        count = family.units(block).n_units if unit == "state" else family.channel_width(block)
        if units.size and (units.ndim != 1 or not np.issubdtype(units.dtype, np.integer)):
            raise InputError(f"kept[{index}] must be a 1-D array of {what} indices")
        units = np.unique(units.astype(np.int64))  # sorted, duplicates removed
        if units.size and (units[0] < 0 or units[-1] >= count):
            raise InputError(
                f"kept[{index}] has {what} indices outside 0..{count - 1} (layer {index} has "
                f"{count} {what}s)"
            )
        out.append(units)
    return out


def shrink_model(
    model: SSMNetwork, kept: list[np.ndarray], drop_empty_blocks: bool = False
) -> SSMNetwork:
    """A new model of ``model``'s class keeping only the ``kept`` units of each layer.

    Per-layer state sizes go into the config (``state_sizes``), so ``save``/``load`` handle the
    result like any model. dtype, device, train/eval mode and ``meta`` are carried over.
    """
    kept = check_kept(model, kept)
    family = family_of(model)
    sizes: list[int] = []
    updates: dict[str, torch.Tensor] = {}
    for index, (block, units) in enumerate(zip(model.layers, kept, strict=True)):
        size, params = family.shrunk_parameters(block, units)
        sizes.append(size)
        updates |= {f"layers.{index}.{name}": value for name, value in params.items()}
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if k not in updates}
    state |= updates

    kept_blocks = [i for i, size in enumerate(sizes) if size > 0 or not drop_empty_blocks]
    if drop_empty_blocks:
        state = _renumber_blocks(state, kept_blocks)
    changes = {"state_sizes": [sizes[i] for i in kept_blocks]}
    field = model.config.operators_field
    if drop_empty_blocks and field and getattr(model.config, field):
        changes[field] = [getattr(model.config, field)[i] for i in kept_blocks]
    return _rebuild(model, model.config.replace(**changes), state)


def _rebuild(model: SSMNetwork, config, state: dict[str, torch.Tensor]) -> SSMNetwork:
    """A model of ``model``'s class with ``config``, its tensors taken from ``state``;
    dtype, device, train/eval mode and ``meta`` carried over."""
    with torch.device("meta"):  # no allocation or random init: every tensor comes from `state`
        shrunk = family_of(model).model_class(config)
    shrunk.load_state_dict(state, assign=True)
    if any(t.is_meta for t in itertools.chain(shrunk.parameters(), shrunk.buffers())):
        raise RuntimeError(f"{type(model).__name__} holds tensors outside its state_dict")
    shrunk.meta = copy.deepcopy(model.meta)
    return shrunk.train(model.training)


def mask_model(model: SSMNetwork, kept: list[np.ndarray]) -> SSMNetwork:
    """A copy of ``model`` with the same shapes whose pruned states cannot reach the output."""
    return _masked(model, check_kept(model, kept), family_of(model).masked_parameters)


def _masked(model: SSMNetwork, kept: list[np.ndarray], parameters) -> SSMNetwork:
    """A copy of ``model`` with each block's ``parameters(block, kept)`` loaded into it."""
    masked = copy.deepcopy(model)
    updates: dict[str, torch.Tensor] = {}
    for index, (block, units) in enumerate(zip(model.layers, kept, strict=True)):
        for name, value in parameters(block, units).items():
            updates[f"layers.{index}.{name}"] = value
    masked.load_state_dict(updates, strict=False)
    return masked


def shrink_channels(model: SSMNetwork, kept: list[np.ndarray]) -> SSMNetwork:
    """A new model of ``model``'s class whose layers keep the operators of the ``kept``
    channel positions and bypass every other channel (y_h = u_h)."""
    kept = check_kept(model, kept, unit="channel")
    family = family_of(model)
    updates: dict[str, torch.Tensor] = {}
    for index, (block, channels) in enumerate(zip(model.layers, kept, strict=True)):
        params = family.channel_pruned_parameters(block, channels)
        updates |= {f"layers.{index}.{name}": value for name, value in params.items()}
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if k not in updates}
    state |= updates
    return _rebuild(model, model.config.with_operators_kept(kept), state)


def mask_channels(model: SSMNetwork, kept: list[np.ndarray]) -> SSMNetwork:
    """A copy of ``model`` with the same shapes whose other operators are the identity."""
    kept = check_kept(model, kept, unit="channel")
    return _masked(model, kept, family_of(model).channel_masked_parameters)


def _renumber_blocks(state: dict[str, torch.Tensor], kept_blocks: list[int]) -> dict:
    """Drop the entries of removed blocks and renumber ``layers.{i}.`` keys consecutively."""
    new_index = {old: new for new, old in enumerate(kept_blocks)}
    out = {}
    for key, value in state.items():
        match = _LAYER_KEY.match(key)
        if match is None:
            out[key] = value
        elif int(match.group(1)) in new_index:
            out[f"layers.{new_index[int(match.group(1))]}.{match.group(2)}"] = value
    return out
