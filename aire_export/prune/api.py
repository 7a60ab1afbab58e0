"""``ax.score`` and ``ax.prune``: modal view → score → select → shrink → certify (DESIGN §2, §8).

scores = score(model, method="aire")                 # per layer: energies, normalized scores
pruned, plan = prune(model, ratio=0.7)               # a smaller model of the same class + plan
save_pruned(pruned, plan, "out/pruned.pt")           # pruned.pt and plan.json beside it
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from aire_export.checkpoints import save, write_atomically
from aire_export.errors import InputError, OutputError
from aire_export.models import ModalSystem, SSMNetwork
from aire_export.prune.certificate import certify
from aire_export.prune.plan import LayerPlan, PrunePlan
from aire_export.prune.scores import (
    METHODS,
    LayerScores,
    check_options,
    get_method,
    score_systems,
)
from aire_export.prune.select import (
    Selection,
    check_ratio_threshold,
    select_global,
    select_uniform,
)
from aire_export.prune.select import (
    balance_channels as select_balanced,
)
from aire_export.prune.shrink import shrink_model

PLAN_NAME = "plan.json"


def _modal_systems(model: SSMNetwork, workers: int | None = None) -> list[ModalSystem]:
    if not isinstance(model, SSMNetwork):
        raise InputError(
            f"expected an aire-export model (ax.load / ax.import_checkpoint), got "
            f"{type(model).__name__}"
        )
    systems = model.modal_systems(workers=workers)
    if not any(system.P for system in systems):
        raise InputError(
            "the model has no SSM states to score (no SSM layers, or every layer is already "
            "dropped): nothing to prune"
        )
    return systems


def _unit_channels(system: ModalSystem) -> np.ndarray | None:
    """(U,) channel of each unit when every unit is one SISO mode (per-channel S4D), else None."""
    if system.channels is None or system.units is not None:
        return None
    return system.channels


def score(
    model: SSMNetwork,
    method: str = "aire",
    *,
    eps: float = 0.0,
    score_compat: str = "default",
    seed: int = 0,
) -> list[LayerScores]:
    """Per-layer scores of ``model`` by ``method`` (see :mod:`aire_export.prune.scores`)."""
    check_options(get_method(method), eps, score_compat)
    return score_systems(
        _modal_systems(model), method, eps=eps, score_compat=score_compat, seed=seed
    )


def prune(
    model: SSMNetwork,
    ratio: float | None = None,
    *,
    threshold: float | None = None,
    method: str = "aire",
    eps: float = 0.0,
    score_compat: str = "default",
    seed: int = 0,
    drop_empty_blocks: bool = False,
    certificates: bool = True,
    balance_channels: bool = True,
    workers: int | None = None,
) -> tuple[SSMNetwork, PrunePlan]:
    """Prune ``model`` by a global ``ratio`` ∈ [0, 1) (fraction of states removed) or a score
    ``threshold`` ≥ 0; returns the physically smaller model and its :class:`PrunePlan`.

    The input model is not modified. ``certificates=False`` skips the per-layer H∞/H2
    certificates (their cost grows with the removed states × the width).
    ``balance_channels`` (default) gives every channel of an S4D layer the same kept count (see
    :func:`aire_export.prune.select.balance_channels`), so the stored width really shrinks;
    ``False`` keeps Algorithm 1's exact (channel, mode) selection, padded to the widest channel.
    Layers are scored on up to ``workers`` threads (default: the CPU count; 1: sequential).
    """
    spec = get_method(method)
    check_options(spec, eps, score_compat)
    check_ratio_threshold(ratio, threshold)
    if spec.selection == "uniform" and threshold is not None:
        raise InputError(
            f"method {method!r} keeps the same fraction in every layer: give a ratio, not a "
            "threshold"
        )
    systems = _modal_systems(model, workers)
    layers = score_systems(
        systems, method, eps=eps, score_compat=score_compat, seed=seed, workers=workers
    )
    if spec.selection == "uniform":
        selection = select_uniform(layers, ratio)
    else:
        rule = "official" if score_compat == "official" else "prefix"
        selection = select_global(layers, ratio, threshold=threshold, rule=rule)
    exact = selection
    if balance_channels:
        selection = select_balanced(selection, layers, [_unit_channels(s) for s in systems])

    pruned = shrink_model(model, selection.kept, drop_empty_blocks=drop_empty_blocks)
    sizes = iter(pruned.config.state_sizes)
    layer_plans = []
    for block, system, scores, kept in zip(
        model.layers, systems, layers, selection.kept, strict=True
    ):
        live = np.isin(scores.state_units, kept)
        dropped = not live.any()
        removed_block = dropped and drop_empty_blocks
        layer_plans.append(
            LayerPlan(
                index=scores.index,
                name=scores.name,
                states_before=scores.states,
                states_after=int(live.sum()),
                kept=kept,
                energies=scores.energies,
                scores=scores.scores,
                certificate=certify(system, np.flatnonzero(~live)) if certificates else None,
                dropped=dropped,
                physical_size=0 if removed_block else next(sizes),
                size_before=block.state_size,
                units_before=scores.n_units,
                unstable=scores.unstable.tolist(),
                block_removed=removed_block,
            )
        )
    before = sum(p.states_before for p in layer_plans)
    after = sum(p.states_after for p in layer_plans)
    plan = PrunePlan(
        method=method,
        ratio_requested=None if ratio is None else float(ratio),
        ratio_achieved=1.0 - after / before,
        threshold=selection.threshold,
        eps=float(eps),
        score_compat=score_compat,
        layers=layer_plans,
        seed=int(seed),
        arch=model.arch,
        target_units=selection.target_units,
        drop_empty_blocks=drop_empty_blocks,
        balance_channels=balance_channels,
        warnings=_warnings(
            layers, exact, selection, layer_plans, score_compat, METHODS[method].normalized
        ),
    )
    pruned.meta["pruning"] = {
        "method": method,
        "score_compat": score_compat,
        "ratio_requested": plan.ratio_requested,
        "ratio_achieved": plan.ratio_achieved,
        "states_before": before,
        "states_after": after,
    }
    return pruned, plan


def _warnings(
    layers: list[LayerScores],
    exact: Selection,
    selection: Selection,
    plans: list[LayerPlan],
    score_compat: str,
    normalized: bool,
) -> list[str]:
    out = []
    for scores, plan in zip(layers, plans, strict=True):
        if normalized and plan.states_after < plan.states_before:
            out.extend(_dominant_mode_warning(scores, plan))
        n = len(scores.unstable)
        if n and score_compat == "official":
            out.append(
                f"layer {scores.index}: {n} unit(s) with |λ̄| ≥ 1 (marginal or unstable) scored "
                "by the official formula: AIRE's denominator 1 − |λ̄|² + 1e-8 ≤ 0 makes their "
                "energy negative and the official normalization ranks them as it falls out"
            )
        elif n:
            out.append(
                f"layer {scores.index}: {n} unit(s) with |λ̄| ≥ 1 (marginal or unstable) kept "
                "regardless of score: their energy is infinite"
            )
        if plan.dropped:
            out.append(
                f"layer {scores.index}: no state kept; "
                + (
                    "the whole block was removed (drop_empty_blocks)"
                    if plan.block_removed
                    else "its core is now the feedthrough D·u (no scan)"
                )
            )
    exact_units = sum(len(k) for k in exact.kept)
    if exact.target_units is not None and exact_units > exact.target_units:
        out.append(
            f"ties at the threshold kept {exact_units - exact.target_units} unit(s) more than "
            f"the target {exact.target_units}"
        )
    kept_units = sum(len(k) for k in selection.kept)
    if kept_units > exact_units:
        out.append(
            f"channel balancing kept {kept_units - exact_units} unit(s) more than Algorithm 1 "
            "(each S4D layer's count rounded up to the same number in every channel; "
            "--exact-channels keeps Algorithm 1's selection)"
        )
    return out


DOMINANT_SHARE = 0.9


def _dominant_mode_warning(scores: LayerScores, plan: LayerPlan) -> list[str]:
    """A layer whose top unit holds most of its energy: eq. 11 divides every other unit's energy
    by a prefix sum that includes it, so the layer's other units all score low and the layer is
    pruned hard. Legitimate, but worth a look (a near-marginal mode, |λ̄| → 1, does this)."""
    finite = scores.energies[np.isfinite(scores.energies)]
    if finite.size < 2 or finite.sum() <= 0:
        return []
    share = float(finite.max() / finite.sum())
    if share < DOMINANT_SHARE:
        return []
    top = int(np.argmax(np.where(np.isfinite(scores.energies), scores.energies, -np.inf)))
    return [
        f"layer {scores.index}: one unit holds {share:.1%} of the layer's energy (|λ̄| = "
        f"{scores.max_abs_lambda[top]:.7f}), so the normalization (eq. 11) scores the layer's other units "
        f"low and it keeps {plan.states_after} of {plan.states_before} states; check accuracy "
        "(--data, or `aire-export sweep`) and compare --method last"
    ]


def save_pruned(pruned: SSMNetwork, plan: PrunePlan, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``pruned`` to ``path`` and the plan to ``plan.json`` in the same folder, each
    atomically; the plan is serialized first, so a plan that cannot be written writes nothing."""
    path = Path(path)
    text = plan.dumps().encode()
    plan_path = path.parent / PLAN_NAME
    if path.name == PLAN_NAME:
        raise InputError(f"the model cannot be written to {PLAN_NAME}: choose another name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the folder {path.parent}: {e.strerror}") from None
    save(pruned, path)
    write_atomically(plan_path, lambda f: f.write(text))
    return path, plan_path
