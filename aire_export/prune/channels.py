"""Operators (channels) as the pruning unit: S4oP's bypass, scored from our modal view or
drawn as S4oP draws them (DESIGN §3.6; S4oP facts: shared/refs/mamba_and_s4op.md Q1).

Bypassing channel h replaces the layer's transfer matrix G(z) (H × H, modes i of λ̄_i, rows B_i
of B̄, columns C_i of C̃) by G′ with row h and column h those of the identity: y_h = u_h, and u_h
no longer reaches the other channels (prune/shrink.py ``shrink_channels``). What changes is

    ΔG_h(z) = G(z) − G′(z) = Σ_i r_i(z) [ C_hi e_h B_i  +  C_{−h,i} B_ih e_hᵀ ] + (D_h − 1) e_h e_hᵀ,

r_i(z) = 1/(1 − λ̄_i z⁻¹), C_{−h,i} the column C_i with its entry h zeroed: channel h's output
row fed by every input, and its input column feeding the other outputs. That is an LTI system
of 2P modes with (input, output) vectors (B_i, C_hi e_h) and (B_ih e_h, C_{−h,i}), plus a
feedthrough. On a SISO bank (S4D) both pieces are channel h's own modes (nothing couples
channels), so ΔG_h is its modes and D_h − 1: S4oP's operator.

Every LTI score reads a mode through λ̄_i, ‖B_i‖ and ‖C_i‖ only, so ``channel_views`` writes ΔG_h
of every channel as a SISO bank with those norms (one unit per channel, its modes together)
and the state scores carry over: GHOST's Σ σ, LAST's max H, and AIRE's energy of what the
bypass changes,

    E_h = Σ_i (|C_hi|² ‖B_i‖² + ‖C_{−h,i}‖² |B_ih|²) / (1 − |λ̄_i|²) + (D_h − 1)²
                                   (eq. 10 over ΔG_h's modes, plus the feedthrough change:
                                    a state with λ̄ = 0, c b = D_h − 1)

(cross terms ignored, as eq. 10 ignores them between modes; on a SISO bank the first sum is
Σ_n E_hn). Without the D term a channel with weak modes but D far from 1 looks free to bypass:
on the keyword model (S4D) 10 % of the channels then took accuracy from 95.3 % to 29.7 %, with
it to 95.3 %. Then Algorithm 1 as for states: the prefix normalization of eq. 11 per layer and
one threshold τ across layers, which keeps every layer's top channel.

Mamba (S4oP's Mamba unit): an inner channel d of a mixer is cut out (its rows of in_proj, its
conv filter, x_proj's column, dt_proj's row, A_log, D, out_proj's column); it is scored on
calibration data by what it sends into the residual stream (models/modal.py,
``SelectiveView.operators``), or drawn at random.

``s4op``   S4oP's own rule: a target of round(p·H·L) bypassed channels in all, split over
           layers 1…L−1 with weights ∝ 2^i (deeper layers pruned more; layer 0 only once the
           others are full), every layer keeping ≥ 1 channel; within a layer, the channels to
           bypass are drawn at random among the still-active ones (seeded).
"""

from __future__ import annotations

import numpy as np
from torch import nn

from aire_export.errors import InputError
from aire_export.models import ModalSystem, ScoringView, SelectiveView, family_of


def channel_views(model: nn.Module, systems: list[ScoringView]) -> list[ScoringView]:
    """Per layer, the view with one unit per active channel: for an LTI layer the bypass
    changes ΔG_h as one SISO bank of norms (see the module docstring), for a selective one
    (Mamba) its inner channels measured on the calibration data (SelectiveView.operators)."""
    family = family_of(model)
    views = []
    for block, system in zip(model.layers, systems, strict=True):
        width = family.channel_width(block)  # InputError for a family without operators
        if isinstance(system, ModalSystem):
            views.append(bypass_view(system))
        elif system.operators is not None:  # measured on --calib
            views.append(system.operators)
        else:
            views.append(_nominal_channels(system, width))
    return views


def _nominal_channels(system: SelectiveView, width: int) -> SelectiveView:
    """An uncalibrated selective layer's channels: nothing is known (random draws only)."""
    nan = np.full(width, np.nan)
    return SelectiveView(nan, nan.copy(), nan.copy(), np.zeros(width), False, system.name)


def bypass_view(system: ModalSystem) -> ModalSystem:
    """The SISO bank of norms of every ΔG_h (H_a active channels, channel-major): a SISO bank's
    own modes per channel; a MIMO system's 2P modes per channel, (‖B_i‖, |C_hi|) then
    (|B_ih|, ‖C_{−h,i}‖) per direction. Units are the channels, the feedthrough change
    (D_h − 1)² is ``unit_feedthrough_energy``."""
    change = (np.asarray(system.D, dtype=np.float64) - 1.0) ** 2  # (H_a,)
    if system.channels is not None:  # SISO bank: channel h's modes are its operator
        lam, b, c, channels = system.lam, system.B, system.C, system.channels
    else:
        H, P = system.H, system.P
        B = np.abs(system.B)  # (P, H)
        row_b = np.broadcast_to(np.sqrt((B**2).sum(axis=1)), (H, P))  # ‖B_i‖ for every h
        col_b = B.T  # |B_ih|, (H, P)
        c = []
        for C in system.C:
            C = np.abs(C)  # (H, P)
            others = np.sqrt(np.maximum((C**2).sum(axis=0)[None, :] - C**2, 0.0))  # ‖C_{−h,i}‖
            c.append(np.concatenate([C, others], axis=1).reshape(1, -1))
        b = np.concatenate([row_b, col_b], axis=1).reshape(-1, 1)
        lam = np.tile(np.concatenate([system.lam, system.lam]), H)
        channels = np.repeat(np.arange(H), 2 * P)
        c = tuple(c)
    return ModalSystem(
        lam=lam,
        B=b,
        C=tuple(c),
        D=system.D,
        conj_sym=system.conj_sym,
        channels=channels,
        units=channels,
        name=system.name,
        unit_feedthrough_energy=change,
    )


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
