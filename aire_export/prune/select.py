"""Which units to keep: global selection (AIRE-Prune Algorithm 1) and per-layer uniform selection.

Global, ratio p over N units in all layers (DESIGN §3):

    K = max(⌊N (1 − p)⌋, 1)
    τ = the K-th largest score
    layer ℓ keeps its longest prefix (along ``LayerScores.order``) with s ≥ τ

Ties: every unit scoring exactly τ is kept, so the plan may keep a few more than K (notably the
score-1 heads of the layers, all tied at 1 when ε = 0: no layer empties) and states the ratio
it achieved. Within a layer, equal scores are already ordered by unit index (scores.py), so the
result is deterministic. Always-kept units (|λ̄| ≥ 1, score +inf) count toward K; τ is the
max(K − #always-kept, 1)-th largest finite score, so with ε = 0 no layer empties either.

Threshold mode skips K: τ is given and every layer keeps its prefix with s ≥ τ.

Official compat reproduces the official sweep: ``th = sort(all scores)[−K]``, ``mask = s ≥ th``
per unit (the evaluated mask; the official code also saves an exact top-k mask whose ties differ,
see tests/fixtures/s5_official_a/README.md).

Uniform: layer ℓ with U_ℓ units keeps its first max(⌊U_ℓ (1 − p)⌋, 1) units along ``order``
(and every always-kept unit).

⌊N (1 − p)⌋ is computed as ⌊round(N (1 − p), 9)⌋, so p = 0.9 with N = 10 keeps 1 (plain floating
point gives 0.99999…): the official ``int(N·(100 − r)/100)`` for integer percentages r.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from aire_export.errors import InputError
from aire_export.prune.scores import LayerScores, ScoreMethod


@dataclass(frozen=True)
class Selection:
    """Kept unit ids per layer (sorted), the threshold τ used (None for uniform), the target K."""

    kept: list[np.ndarray]
    threshold: float | None
    target_units: int | None


def kept_count(total: int, ratio: float) -> int:
    """K = max(⌊N (1 − p)⌋, 1) for N = ``total`` units (0 when there are none)."""
    if total == 0:
        return 0
    return max(math.floor(round(total * (1.0 - ratio), 9)), 1)


def check_ratio_threshold(ratio: float | None, threshold: float | None) -> None:
    """Exactly one of ratio ∈ [0, 1) or threshold ≥ 0, finite; InputError otherwise."""
    if (ratio is None) == (threshold is None):
        raise InputError("give exactly one of ratio (fraction of units to prune) or threshold")
    if ratio is not None and (
        isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio < 1
    ):
        raise InputError(
            f"ratio is the fraction of units (states, or channels) to prune and must be in [0, 1), "
            f"got {ratio!r} "
            "(e.g. 0.7 prunes 70 %)"
        )
    if threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not math.isfinite(threshold)
        or threshold < 0
    ):
        raise InputError(f"threshold must be a finite score ≥ 0, got {threshold!r}")


def select_global(
    layers: list[LayerScores],
    ratio: float | None = None,
    *,
    threshold: float | None = None,
    rule: str = "prefix",
) -> Selection:
    """Algorithm 1: one threshold τ over all layers; ``rule="official"`` for the official mask."""
    check_ratio_threshold(ratio, threshold)
    scores = np.concatenate([layer.scores for layer in layers]) if layers else np.zeros(0)
    forced = np.concatenate([layer.forced for layer in layers]) if layers else np.zeros(0, bool)
    target = None
    if threshold is not None:
        tau = float(threshold)
    else:
        target = kept_count(scores.size, ratio)
        if rule == "official":
            tau = float(np.sort(scores)[-target]) if target else math.inf
        else:
            finite = np.sort(scores[~forced])
            k_free = max(target - int(forced.sum()), 1)
            tau = float(finite[-min(k_free, finite.size)]) if finite.size else math.inf
    if rule == "official":
        kept = [np.flatnonzero(layer.scores >= tau) for layer in layers]
    else:
        kept = [np.sort(layer.order[: _prefix_length(layer, tau)]) for layer in layers]
    return Selection(kept, tau, target)


def _prefix_length(layer: LayerScores, tau: float) -> int:
    """Length of the longest prefix of ``layer.order`` whose scores are all ≥ τ."""
    above = layer.scores[layer.order] >= tau
    return int(above.size if above.all() else np.argmin(above))


def select_uniform(layers: list[LayerScores], ratio: float) -> Selection:
    """The same fraction in every layer: its first max(⌊U (1 − p)⌋, 1) units along ``order``."""
    check_ratio_threshold(ratio, None)
    kept = []
    for layer in layers:
        count = max(kept_count(layer.n_units, ratio), int(layer.forced.sum()))
        kept.append(np.sort(layer.order[:count]))
    total = sum(layer.n_units for layer in layers)
    return Selection(kept, None, kept_count(total, ratio))


def balance_channels(
    selection: Selection, layers: list[LayerScores], channels: list[np.ndarray | None]
) -> Selection:
    """Per-channel balance for SISO banks (S4D): the same kept count in every channel.

    Algorithm 1 fixes how many units K_ℓ a layer keeps; exact selection spreads them unevenly
    over the H channels, and a shrunk S4D layer stores max_h(kept_h) modes per channel (the
    others padded), so the stored width barely falls. Balanced: every channel h keeps its own
    top c = ⌈K_ℓ / H⌉ modes by energy (and every always-kept one), so the layer stores exactly
    c modes per channel. A layer keeps at least what Algorithm 1 gave it, and because K_ℓ only
    falls as the ratio grows, kept sets stay nested across ratios.

    ``channels[ℓ]`` is the (U,) channel of each unit of layer ℓ, or None for layers that are not
    per-channel banks (S5 cores, S4D with shared A); those keep their selection unchanged.
    """
    kept = []
    for layer, chosen, channel in zip(layers, selection.kept, channels, strict=True):
        if channel is None or len(chosen) == 0:
            kept.append(chosen)
            continue
        width = int(channel.max()) + 1
        per_channel = -(-len(chosen) // width)  # ⌈K / H⌉
        rank = np.empty(layer.n_units, dtype=np.int64)
        rank[layer.order] = np.arange(layer.n_units)  # 0 = most important in the layer
        keep = layer.forced.copy()
        for h in range(width):
            units = np.flatnonzero(channel == h)
            keep[units[np.argsort(rank[units], kind="stable")[:per_channel]]] = True
        kept.append(np.flatnonzero(keep))
    return Selection(kept, selection.threshold, selection.target_units)


def select_units(
    layers: list[LayerScores],
    method: ScoreMethod,
    ratio: float | None,
    threshold: float | None,
    *,
    score_compat: str = "default",
    channels: list[np.ndarray | None] | None = None,
) -> tuple[Selection, Selection]:
    """The select stage: (Algorithm 1's selection, the one kept after channel balancing).

    Global methods select by one τ (the official rule with ``score_compat="official"``),
    uniform methods by a fraction per layer. ``channels[ℓ]`` (the family's unit policy) is
    the channel of each unit of layer ℓ where it may be balanced; None skips balancing.
    """
    if method.selection == "uniform":
        if threshold is not None:
            raise InputError(
                f"method {method.name!r} keeps the same fraction in every layer: give a ratio, "
                "not a threshold"
            )
        exact = select_uniform(layers, ratio)
    else:
        rule = "official" if score_compat == "official" else "prefix"
        exact = select_global(layers, ratio, threshold=threshold, rule=rule)
    if channels is None:
        return exact, exact
    return exact, balance_channels(exact, layers, channels)
