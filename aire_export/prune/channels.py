"""Operators (channels) as the pruning unit: S4oP's bypass, scored from our modal view or
drawn as S4oP draws them (DESIGN §3.6; S4oP facts: shared/refs/mamba_and_s4op.md Q1).

A channel h of an S4D layer is one SISO operator; pruning it removes its modes, Δ, C (B) and D
and bypasses it, y_h = u_h (prune/shrink.py ``shrink_channels``). Two ways to choose:

``score``  (no seeds) every channel is a unit grouping its modes, so the state scores carry
           over: GHOST's Σ_n σ_hn, LAST's max_n H_hn, …, and AIRE's energy of what the bypass
           changes: it replaces the channel's G_h(z) = K_h(z) + D_h by 1, so

               E_h = Σ_n E_hn + (D_h − 1)²        (eq. 10 over its modes, plus the feedthrough
                                                    change: a state with λ̄ = 0, c b = D_h − 1)

           (cross terms ignored, as eq. 10 ignores them between modes). Without the D term a
           channel with weak modes but D far from 1 looks free to bypass: on the keyword model
           10 % of the channels then took accuracy from 95.3 % to 29.7 %, with it to 95.3 %.
           Then Algorithm 1 as for states: the prefix normalization of eq. 11 per layer and
           one threshold τ across layers, which keeps every layer's top channel.
``s4op``   S4oP's own rule: a target of round(p·H·L) bypassed channels in all, split over
           layers 1…L−1 with weights ∝ 2^i (deeper layers pruned more; layer 0 only once the
           others are full), every layer keeping ≥ 1 channel; within a layer, the channels to
           bypass are drawn at random among the still-active ones (seeded).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from torch import nn

from aire_export.errors import InputError
from aire_export.models import ModalSystem, ScoringView, family_of


def channel_views(model: nn.Module, systems: list[ScoringView]) -> list[ModalSystem]:
    """The layers' modal views with one unit per active channel (its modes together)."""
    family = family_of(model)
    views = []
    for block, system in zip(model.layers, systems, strict=True):
        units = family.channel_units(block)
        if units is None or not isinstance(system, ModalSystem):
            raise InputError(
                f"operator (channel) pruning is implemented for S4D models; this is a "
                f"{family.name} model: prune its states (--unit state)"
            )
        change = (np.asarray(system.D, dtype=np.float64) - 1.0) ** 2  # (H_active,)
        views.append(dataclasses.replace(system, units=units, unit_feedthrough_energy=change))
    return views


def s4op_budget(ratio: float, layers: int, width: int) -> list[int]:
    """Bypassed channels per layer for a total ratio ``ratio`` of ``layers`` × ``width``
    channels, S4oP's exponential split: the remaining target is spread over the unsaturated
    layers 1…L−1 with weights 2^i / Σ 2^j (rounded), a layer reaching width − 1 saturates, and
    layer 0 takes what is left once every other layer is saturated."""
    target = round(ratio * width * layers)
    cap = width - 1
    pruned = [0] * layers
    open_layers = list(range(1, layers))
    while target - sum(pruned) > 0:
        if not open_layers:
            if pruned[0] >= cap:
                break
            open_layers = [0]
        granted = sum(pruned)
        weights = np.array([2.0**i for i in open_layers])
        still_open = []
        for i, w in zip(open_layers, weights / weights.sum(), strict=True):
            grant = round(w * (target - granted))
            if pruned[i] + grant >= cap:
                pruned[i] = cap
            else:
                pruned[i] += grant
                still_open.append(i)
        if sum(pruned) == granted and still_open == open_layers:
            break  # no progress (not reached: the largest weight 2^i / Σ 2^j is ≥ ½)
        open_layers = still_open
    return pruned


def s4op_draw(
    bypassed: list[list[int]],
    width: int,
    ratio: float,
    rng: np.random.Generator | None = None,
    *,
    energies: list[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Kept channel positions per layer (among its active channels) towards ``ratio`` on
    S4oP's budget: layer i bypasses budget_i channels in all, the ones bypassed already
    (``bypassed[i]``) included, so each step's pruned set contains the previous one. The new
    ones are drawn at random with ``rng`` (S4oP), or are the layer's lowest ``energies`` (one
    per active channel; ties by position) when given."""
    budget = s4op_budget(ratio, len(bypassed), width)
    kept = []
    for index, (before, total) in enumerate(zip(bypassed, budget, strict=True)):
        active = width - len(before)
        more = total - len(before)
        if more < 0:
            raise InputError(
                f"layer {index} has {len(before)} channels bypassed already, more than S4oP's "
                f"budget at ratio {ratio:g} ({total}): choose a larger ratio"
            )
        if energies is None:
            dropped = rng.choice(active, size=more, replace=False)
        else:
            dropped = np.argsort(energies[index], kind="stable")[:more]
        kept.append(np.setdiff1d(np.arange(active), dropped))
    return kept
