"""``ax.score`` and ``ax.prune``: modal view → score → select → shrink → certify (DESIGN §2, §8).

scores = score(model, method="aire")                 # per layer: energies, normalized scores
pruned, plan = prune(model, ratio=0.7)               # a smaller model of the same class + plan
save_pruned(pruned, plan, "out/pruned.pt")           # pruned.pt and plan.json beside it

Each stage is also a function of its own (``modal_view``, ``score_layers``, ``select_units``
in prune/select.py, ``shrink_model`` in prune/shrink.py, ``plan_pruning``), so the pipeline
can run and report them one by one; :func:`prune` is those stages in order. Everything about
the architecture comes from the model's family (models/family.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from aire_export.checkpoints import save
from aire_export.data import SequenceData, calibration_data
from aire_export.errors import InputError, OutputError
from aire_export.files import write_atomically
from aire_export.models import (
    ModalSystem,
    ScoringView,
    SelectiveView,
    SSMNetwork,
    family_of,
    modal_systems,
)
from aire_export.prune.certificate import certify
from aire_export.prune.channels import channel_views
from aire_export.prune.plan import LayerPlan, PrunePlan
from aire_export.prune.scores import LayerScores, check_options, get_method, score_systems
from aire_export.prune.select import Selection, check_ratio_threshold, select_units
from aire_export.prune.shrink import shrink_channels, shrink_model

PLAN_NAME = "plan.json"
UNITS = ("state", "channel")


@dataclass(frozen=True)
class PruneOptions:
    """How to prune: a global ``ratio`` ∈ [0, 1) (fraction of states removed) or a score
    ``threshold`` ≥ 0, the scoring method and its options, and what to do with empty layers.

    ``balance_channels`` (default) gives every channel of a layer whose family allows it (S4D)
    the same kept count (:func:`aire_export.prune.select.balance_channels`), so the stored
    width really shrinks; ``False`` keeps Algorithm 1's exact selection, padded to the widest
    channel. ``certificates=False`` skips the per-layer H∞/H2 certificates (their cost grows
    with the removed states × the width). Layers are scored on up to ``workers`` threads
    (default: the CPU count; 1: sequential).

    ``unit="channel"`` prunes whole operators instead of states (S4oP, prune/channels.py):
    ``ratio`` is then the fraction of the active channels bypassed, each channel scored by
    its modes together; a bypass changes D too, so no LTI certificate is computed for it.
    """

    ratio: float | None = None
    threshold: float | None = None
    method: str = "aire"
    eps: float = 0.0
    score_compat: str = "default"
    seed: int = 0
    drop_empty_blocks: bool = False
    balance_channels: bool = True
    certificates: bool = True
    workers: int | None = None
    unit: str = "state"

    def check(self) -> PruneOptions:
        """InputError for any option the methods do not take; returns the options."""
        check_options(get_method(self.method), self.eps, self.score_compat)
        check_ratio_threshold(self.ratio, self.threshold)
        if self.unit not in UNITS:
            raise InputError(f"unit must be one of {', '.join(UNITS)}, got {self.unit!r}")
        if self.unit == "channel" and self.score_compat == "official":
            raise InputError(
                "score_compat='official' scores states; channels have no official code"
            )
        return self

    def with_ratio(self, ratio: float) -> PruneOptions:
        return replace(self, ratio=ratio, threshold=None)


def modal_view(
    model: SSMNetwork, workers: int | None = None, calib: SequenceData | None = None
) -> list[ScoringView]:
    """Stage 2: the scoring view of every layer (selective layers measured on ``calib``: a
    SequenceData, an npz path or the array x), refusing a model with nothing to prune."""
    systems = modal_systems(model, calib=calibration_data(calib, model), workers=workers)
    if not any(system.P for system in systems):
        raise InputError(
            "the model has no SSM states to score (no SSM layers, or every layer is already "
            "dropped): nothing to prune"
        )
    return systems


def score_layers(systems: list[ModalSystem], options: PruneOptions) -> list[LayerScores]:
    """Stage 3: per-layer scores by the options' method (prune/scores.py)."""
    return score_systems(
        systems,
        options.method,
        eps=options.eps,
        score_compat=options.score_compat,
        seed=options.seed,
        workers=options.workers,
    )


def choose_units(
    model: SSMNetwork, layers: list[LayerScores], options: PruneOptions
) -> tuple[Selection, Selection]:
    """Stage 4: (Algorithm 1's selection, the kept selection), balanced per channel where the
    family's unit policy allows it and the options ask for it."""
    channels = None
    if options.balance_channels and options.unit == "state":
        family = family_of(model)
        channels = [family.units(block).channels for block in model.layers]
    return select_units(
        layers,
        get_method(options.method),
        options.ratio,
        options.threshold,
        score_compat=options.score_compat,
        channels=channels,
    )


def score(
    model: SSMNetwork,
    method: str = "aire",
    *,
    eps: float = 0.0,
    score_compat: str = "default",
    seed: int = 0,
    calib: SequenceData | None = None,
) -> list[LayerScores]:
    """Per-layer scores of ``model`` by ``method`` (see :mod:`aire_export.prune.scores`);
    selective layers are scored on ``calib``."""
    options = PruneOptions(method=method, eps=eps, score_compat=score_compat, seed=seed)
    return score_layers(modal_view(model, calib=calib), options)


def prune(
    model: SSMNetwork,
    ratio: float | None = None,
    *,
    calib: SequenceData | None = None,
    **options,
) -> tuple[SSMNetwork, PrunePlan]:
    """Prune ``model`` by a global ``ratio`` ∈ [0, 1) or a ``threshold=`` (and the other
    :class:`PruneOptions` as keywords); returns the physically smaller model and its plan.
    Selective layers (Mamba) are scored on the calibration data ``calib``.

    The input model is not modified.
    """
    return prune_with(model, PruneOptions(ratio=ratio, **options), calib=calib)


def prune_with(
    model: SSMNetwork,
    options: PruneOptions,
    calib: SequenceData | None = None,
    *,
    systems: list[ScoringView] | None = None,
) -> tuple[SSMNetwork, PrunePlan]:
    """Stages 2–5 in order: modal view → score → select → shrink, and the plan. ``systems``:
    the modal view computed already (a sweep prunes one model at many ratios)."""
    options.check()
    if systems is None:
        systems = modal_view(model, options.workers, calib)
    systems = unit_views(model, systems, options)
    layers = score_layers(systems, options)
    exact, selection = choose_units(model, layers, options)
    pruned = shrink_selected(model, selection, options)
    return pruned, plan_pruning(model, pruned, systems, layers, exact, selection, options)


def unit_views(
    model: SSMNetwork, systems: list[ScoringView], options: PruneOptions
) -> list[ScoringView]:
    """The views the options' unit is scored on: the layers' own (states), or one unit per
    active channel, what its removal changes (``unit="channel"``, prune/channels.py)."""
    return channel_views(model, systems) if options.unit == "channel" else systems


def shrink_selected(model: SSMNetwork, selection: Selection, options: PruneOptions) -> SSMNetwork:
    """Stage 5: the physically smaller model keeping the selected states or channels."""
    if options.unit == "channel":
        return shrink_channels(model, selection.kept)
    return shrink_model(model, selection.kept, drop_empty_blocks=options.drop_empty_blocks)


def plan_pruning(
    model: SSMNetwork,
    pruned: SSMNetwork,
    systems: list[ModalSystem],
    layers: list[LayerScores],
    exact: Selection,
    selection: Selection,
    options: PruneOptions,
) -> PrunePlan:
    """The plan of a prune (with certificates), recorded in ``pruned.meta`` too."""
    sizes = iter(pruned.config.state_sizes)
    family = family_of(model)
    layer_plans = []
    for index, (block, system, scores, kept) in enumerate(
        zip(model.layers, systems, layers, selection.kept, strict=True)
    ):
        live = np.isin(scores.state_units, kept)
        states = scores.states, int(live.sum())
        if options.unit == "channel":  # the view's modes are per channel: count the layer's own
            states = tuple(family.modal_system(net.layers[index]).P for net in (model, pruned))
        dropped = not live.any()
        removed_block = dropped and options.drop_empty_blocks
        certificate, distortion = None, None
        if isinstance(system, SelectiveView):  # no LTI bound: the measured change instead
            distortion = system.distortion(np.flatnonzero(~live)) if system.distortion else None
        elif options.certificates and options.unit == "state":
            certificate = certify(system, np.flatnonzero(~live))
        layer_plans.append(
            LayerPlan(
                index=scores.index,
                name=scores.name,
                states_before=states[0],
                states_after=states[1],
                kept=kept,
                energies=scores.energies,
                scores=scores.scores,
                certificate=certificate,
                calib_distortion=distortion,
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
    if options.unit == "channel":  # the fraction of (active) channels bypassed
        achieved = 1.0 - sum(len(p.kept) for p in layer_plans) / sum(
            p.units_before for p in layer_plans
        )
    else:
        achieved = 1.0 - after / before
    ratio = options.ratio
    plan = PrunePlan(
        method=options.method,
        ratio_requested=None if ratio is None else float(ratio),
        ratio_achieved=achieved,
        threshold=selection.threshold,
        eps=float(options.eps),
        score_compat=options.score_compat,
        layers=layer_plans,
        seed=int(options.seed),
        arch=model.arch,
        target_units=selection.target_units,
        drop_empty_blocks=options.drop_empty_blocks and options.unit == "state",
        balance_channels=options.balance_channels and options.unit == "state",
        unit=options.unit,
        warnings=_warnings(
            layers,
            exact,
            selection,
            layer_plans,
            options.score_compat,
            get_method(options.method).normalized,
        ),
    )
    pruned.meta["pruning"] = {
        "unit": options.unit,
        "method": options.method,
        "score_compat": options.score_compat,
        "ratio_requested": plan.ratio_requested,
        "ratio_achieved": plan.ratio_achieved,
        "states_before": before,
        "states_after": after,
    }
    return plan


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
                "by the official formula: its denominator 1 − |λ̄|² + 1e-8 is about 1e-8 at "
                "|λ̄| = 1 (a huge energy) and negative above (a negative energy), and the "
                "official normalization ranks them by that"
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
