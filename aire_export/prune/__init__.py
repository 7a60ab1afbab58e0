"""Pruning: scores (AIRE and baselines), global selection (Algorithm 1), physical shrink,
certificates, and the plan that records it all (DESIGN §2 steps 3–5, §3); whole operators
(channels, S4oP) as a second unit (DESIGN §3.6)."""

from aire_export.prune.api import (
    PLAN_NAME,
    UNITS,
    PruneOptions,
    choose_units,
    modal_view,
    plan_pruning,
    prune,
    prune_with,
    save_pruned,
    score,
    score_layers,
    shrink_selected,
    unit_views,
)
from aire_export.prune.certificate import Certificate, certify, h2_norm, hinf_bound, hinf_norm
from aire_export.prune.plan import LayerPlan, PrunePlan
from aire_export.prune.scores import COMPAT, METHODS, LayerScores, ScoreMethod, score_systems
from aire_export.prune.select import (
    Selection,
    kept_count,
    select_global,
    select_uniform,
    select_units,
)
from aire_export.prune.shrink import mask_channels, mask_model, shrink_channels, shrink_model

__all__ = [
    "COMPAT",
    "METHODS",
    "PLAN_NAME",
    "UNITS",
    "Certificate",
    "LayerPlan",
    "LayerScores",
    "PruneOptions",
    "PrunePlan",
    "ScoreMethod",
    "Selection",
    "certify",
    "choose_units",
    "h2_norm",
    "hinf_bound",
    "hinf_norm",
    "kept_count",
    "mask_channels",
    "mask_model",
    "modal_view",
    "plan_pruning",
    "prune",
    "prune_with",
    "save_pruned",
    "score",
    "score_layers",
    "score_systems",
    "select_global",
    "select_uniform",
    "select_units",
    "shrink_channels",
    "shrink_model",
    "shrink_selected",
    "unit_views",
]
