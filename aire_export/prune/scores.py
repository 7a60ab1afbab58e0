"""Per-state importance scores over the modal view: one registry for AIRE and every baseline.

Notation (DESIGN §3; AIRE-Prune paper eq. 10–11): for state i of a layer (:class:`ModalSystem`),
λ̄_i the discrete eigenvalue, B_i the row of B̄ driving it, C_i the column of C̃ reading it
(C_f,i and C_b,i for a bidirectional layer). Everything is computed in float64.

    aire     E_i = ‖C_i‖² ‖B_i‖² / (1 − |λ̄_i|²)                                   (eq. 10)
             bidirectional: ‖C_i‖² := ½ (‖C_f,i‖² + ‖C_b,i‖²)
             s_(i) = E_(i) / (Σ_{j≤i} E_(j) + ε),  E sorted descending in the layer    (eq. 11)
    last     H_i = ‖C_i‖² ‖B_i‖² / (1 − |λ̄_i|)²  (the squared H∞ norm of state i's subsystem),
             with the same prefix normalization (LAST, Gwak et al. 2024)
    ghost    σ_i = ‖C_i‖ ‖B_i‖ / (1 − |λ̄_i|²), the Hankel singular value of state i alone
             (balanced truncation's diagonal), prefix-normalized (GHOST, arXiv 2602.11408)

Selective layers (Mamba, models/modal.py's SelectiveView) have no closed form: aire, ghost and
magnitude read the statistics measured on calibration data (energy, hankel, magnitude),
random draws as everywhere, the other methods refuse them; then the same normalization and
global τ.
    hinf-uniform   H_i, the same fraction kept in every layer
    hinf-global    H_i ranked across layers as is (no normalization)
    magnitude-uniform / magnitude-global   |λ̄_i| (slow modes first), per layer / across layers
    lamp     LAMP (Lee et al. 2021): the prefix normalization of |λ̄_i|²
    random   U[0, 1) draws from a generator seeded with ``seed``, ranked across layers

``ε`` (``eps``) is an absolute energy scale. With ε = 0 the first score of every layer is
exactly 1, so global selection never empties a layer; ε > 0 lets whole low-energy layers go.
It applies to the normalized methods (aire, last, lamp) only.

Units: states pruned together (``ModalSystem.units``; an S4D mode shared by all channels) are
scored as one: energies (aire) add, H∞ norms and magnitudes take the maximum (the H∞ norm of
SISO modes on different channels is the largest of theirs).

Marginal or unstable states (|λ̄| ≥ 1): the energy is infinite. By default such a unit is always
kept: its energy and score are +inf, it heads its layer's order, it is left out of the prefix
sums (it would zero every other score), and the plan warns.

Order and ties: ``order`` lists a layer's units most important first: the always-kept ones,
then by score descending, equal scores by increasing unit index (earlier wins). Scores are
non-increasing along ``order``, so "score ≥ τ" keeps a prefix of it.

``score_compat="official"`` (aire and last only) reproduces the official AIRE-Prune / LAST code
(``s5/ssm.py``) instead, including its quirks:

    unidirectional  E_i = ‖C_i‖² ‖B_i‖² / ((1 − |λ̄_i|²) + 1e-8),  LAST: / ((1 − |λ̄_i|)² + 1e-8)
    bidirectional   the C term is (‖C_f,i‖ + ‖C_b,i‖)/2**2 = (‖C_f,i‖ + ‖C_b,i‖)/4: Python
                    precedence divides by 4 and leaves the norms unsquared
    |λ̄| ≥ 1        no special case: AIRE's denominator goes ≤ 0 and the energy negative.
                    The normalization then runs on it as is: a negative energy smaller than the
                    layer's positive total scores negative (pruned first), a larger one makes
                    the tail sums negative and can score near or above 1 (kept)
    normalization   argsort ascending (stable), s = E_sorted / reverse_cumsum(E_sorted)
                    (+ ε), scattered back: on equal energies the later index scores higher
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from aire_export.errors import InputError
from aire_export.json_values import finite_list
from aire_export.models.modal import ModalSystem, ScoringView, SelectiveView
from aire_export.threads import map_layers

COMPAT = ("default", "official")
OFFICIAL_DENOM_EPS = 1e-8  # the "+ 1e-8" of the official denominators


@dataclass(frozen=True, eq=False)
class LayerScores:
    """Scores of one layer, per unit (a state, or the states pruned together)."""

    index: int
    name: str
    energies: np.ndarray  # (U,) the method's raw quantity (AIRE energy, H∞², |λ̄|, draw)
    scores: np.ndarray  # (U,) what selection thresholds (normalized for aire/last/lamp)
    order: np.ndarray  # (U,) unit ids, most important first
    forced: np.ndarray  # (U,) bool: always kept (|λ̄| ≥ 1, default compat)
    state_units: np.ndarray  # (P,) unit id of each state of the modal view
    max_abs_lambda: np.ndarray  # (U,) largest |λ̄| among the unit's states

    @property
    def n_units(self) -> int:
        return int(self.energies.shape[0])

    @property
    def states(self) -> int:
        return int(self.state_units.shape[0])

    @property
    def unit_states(self) -> np.ndarray:
        """(U,) number of stored states in each unit."""
        return np.bincount(self.state_units, minlength=self.n_units)

    @property
    def unstable(self) -> np.ndarray:
        """Unit ids with a state of |λ̄| ≥ 1 (marginal or unstable)."""
        return np.flatnonzero(self.max_abs_lambda >= 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "states": self.states,
            "units": self.n_units,
            "energies": finite_list(self.energies),
            "scores": finite_list(self.scores),
            "order": self.order.tolist(),
            "unstable": self.unstable.tolist(),
            "max_abs_lambda": float(self.max_abs_lambda.max()) if self.n_units else 0.0,
        }


# ---- per-state quantities -------------------------------------------------------------------
def _c_term(system: ModalSystem, compat: str) -> np.ndarray:
    """(P,) the C factor: ‖C_i‖² (½(‖C_f‖² + ‖C_b‖²) bidirectional); official: see module doc."""
    c2 = system.c_norm2()
    if not system.bidirectional:
        return c2[0]
    if compat == "official":
        return (np.sqrt(c2[0]) + np.sqrt(c2[1])) / 2**2  # sic: the official precedence
    return 0.5 * (c2[0] + c2[1])


def aire_energy(system: ModalSystem, compat: str = "default") -> np.ndarray:
    """(P,) E_i = ‖C_i‖² ‖B_i‖² / (1 − |λ̄_i|²) (eq. 10); +inf where |λ̄_i| ≥ 1 (default)."""
    num = _c_term(system, compat) * system.b_norm2()
    den = 1 - np.abs(system.lam) ** 2
    if compat == "official":
        with np.errstate(divide="ignore", invalid="ignore"):
            return num / (den + OFFICIAL_DENOM_EPS)
    return _divide_or_inf(num, den)


def hinf_energy(system: ModalSystem, compat: str = "default") -> np.ndarray:
    """(P,) H_i = ‖C_i‖² ‖B_i‖² / (1 − |λ̄_i|)², the squared H∞ norm of state i alone (LAST)."""
    num = _c_term(system, compat) * system.b_norm2()
    den = (1 - np.abs(system.lam)) ** 2
    if compat == "official":
        return num / (den + OFFICIAL_DENOM_EPS)
    return _divide_or_inf(num, np.where(np.abs(system.lam) >= 1, 0.0, den))


def _divide_or_inf(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.inf)
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    return out


def hankel_diagonal(system: ModalSystem, compat: str = "default") -> np.ndarray:
    """(P,) σ_i = ‖C_i‖ ‖B_i‖ / (1 − |λ̄_i|²): state i's Hankel singular value when its
    controllability ‖B_i‖²/(1 − |λ̄_i|²) and observability ‖C_i‖²/(1 − |λ̄_i|²) Gramians are
    taken alone (the diagonal of balanced truncation, the LTI form of GHOST's statistic)."""
    num = np.sqrt(_c_term(system, compat) * system.b_norm2())
    return _divide_or_inf(num, 1 - np.abs(system.lam) ** 2)


def magnitude(system: ModalSystem, compat: str = "default") -> np.ndarray:
    """(P,) |λ̄_i|: slowly decaying modes rank first."""
    return np.abs(system.lam)


def magnitude_squared(system: ModalSystem, compat: str = "default") -> np.ndarray:
    """(P,) |λ̄_i|², the squared "weight" LAMP normalizes."""
    return np.abs(system.lam) ** 2


# ---- normalizations ---------------------------------------------------------------------------
def prefix_normalize(energies: np.ndarray, order: np.ndarray, eps: float) -> np.ndarray:
    """s_(i) = E_(i) / (Σ_{j≤i} E_(j) + ε) along ``order`` (eq. 11), scattered back to units.

    A layer whose energies are all 0 (with ε = 0) gets s_(i) = 1/i, the limit of equal
    energies, so its first score is still 1.
    """
    e = energies[order]
    denom = np.cumsum(e) + eps
    ranks = np.arange(1, e.size + 1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(denom > 0, e / denom, 1.0 / ranks)
    out = np.empty_like(energies)
    out[order] = s
    return out


def official_normalize(energies: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(scores, order) as the official code: s = sort(E) / reverse_cumsum(sort(E)) (+ ε)."""
    ascending = np.argsort(energies, kind="stable")
    e = energies[ascending]
    tail = np.cumsum(e[::-1])[::-1]  # Σ_{j ≥ k} of the ascending sort
    with np.errstate(divide="ignore", invalid="ignore"):
        s = e / (tail + eps)
    out = np.empty_like(energies)
    out[ascending] = s
    return out, ascending[::-1].copy()


# ---- the registry -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoreMethod:
    """One scoring method: a per-state quantity, how units combine, normalization, selection.

    ``selective``: the statistic of a selective layer's view (SelectiveView) the method reads
    there (None: the method has no meaning for input-dependent layers, and says so)."""

    name: str
    quantity: Callable[[ModalSystem, str], np.ndarray] | None  # None: random draws per unit
    combine: str  # "sum" or "max" over the states of a unit
    normalized: bool  # prefix normalization (eq. 11) per layer
    selection: str  # "global": one threshold over all layers; "uniform": a fraction per layer
    official: bool  # has an official-code compat mode
    summary: str
    selective: str | None = None


METHODS: dict[str, ScoreMethod] = {
    m.name: m
    for m in [
        ScoreMethod("aire", aire_energy, "sum", True, "global", True,
                    "AIRE-Prune: impulse-response energy, prefix-normalized (default; selective "
                    "layers: the output energy each state contributes on --calib)", "energy"),
        ScoreMethod("ghost", hankel_diagonal, "sum", True, "global", False,
                    "GHOST-style balanced truncation: controllability × observability per "
                    "state, prefix-normalized (selective layers: measured on --calib)", "hankel"),
        ScoreMethod("last", hinf_energy, "max", True, "global", True,
                    "LAST: squared H∞ norm per state, prefix-normalized"),
        ScoreMethod("hinf-uniform", hinf_energy, "max", False, "uniform", False,
                    "H∞ norm per state, the same fraction kept in every layer"),
        ScoreMethod("hinf-global", hinf_energy, "max", False, "global", False,
                    "H∞ norm per state, ranked across layers without normalization"),
        ScoreMethod("magnitude-uniform", magnitude, "max", False, "uniform", False,
                    "|λ̄| per state, the same fraction kept in every layer", "magnitude"),
        ScoreMethod("magnitude-global", magnitude, "max", False, "global", False,
                    "|λ̄| per state, ranked across layers", "magnitude"),
        ScoreMethod("lamp", magnitude_squared, "max", True, "global", False,
                    "LAMP: |λ̄|² prefix-normalized per layer"),
        ScoreMethod("random", None, "max", False, "global", False,
                    "uniform random scores from a seeded generator, ranked across layers"),
    ]
}  # fmt: skip


def get_method(name: str) -> ScoreMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise InputError(
            f"unknown scoring method {name!r}; choose one of {', '.join(METHODS)}"
        ) from None


def check_options(method: ScoreMethod, eps: float, score_compat: str) -> None:
    """Raise InputError for options the method does not take."""
    if score_compat not in COMPAT:
        raise InputError(f"score_compat must be one of {', '.join(COMPAT)}, got {score_compat!r}")
    if score_compat == "official" and not method.official:
        raise InputError(
            f"score_compat='official' reproduces the official AIRE-Prune/LAST code; it applies "
            f"to the methods aire and last, not {method.name!r}"
        )
    if not isinstance(eps, int | float) or not np.isfinite(eps) or eps < 0:
        raise InputError(f"eps must be a finite number ≥ 0, got {eps!r}")
    if eps > 0 and not method.normalized:
        raise InputError(
            f"eps is the energy scale of the prefix normalization (aire, last, lamp); method "
            f"{method.name!r} has none: leave eps at 0"
        )


def _combine(values: np.ndarray, units: np.ndarray | None, n_units: int, how: str) -> np.ndarray:
    """Per-unit values from per-state ones (``units`` None: every state is its own unit)."""
    if units is None:
        return values
    if how == "sum":
        return np.bincount(units, weights=values, minlength=n_units)
    out = np.full(n_units, -np.inf)
    np.maximum.at(out, units, values)
    return out


SELECTIVE_METHODS = ("aire", "ghost", "magnitude-global", "magnitude-uniform", "random")


def _selective_quantity(view: SelectiveView, method: ScoreMethod, score_compat: str) -> np.ndarray:
    """A selective layer's per-state statistic for ``method`` (see SelectiveView)."""
    if score_compat == "official":
        raise InputError(
            "score_compat='official' reproduces the LTI code; selective layers have none"
        )
    if method.selective is None:
        raise InputError(
            f"method {method.name!r} scores LTI layers; for selective layers (Mamba) choose "
            f"one of {', '.join(SELECTIVE_METHODS)}"
        )
    values = getattr(view, method.selective)
    if not np.isfinite(values).all():
        raise InputError(
            f"{view.name} is selective: its states and channels are scored on calibration data: "
            "pass --calib "
            "data.npz (x: token ids or features, like --data)"
        )
    return values


def score_layer(
    system: ScoringView,
    method: ScoreMethod,
    *,
    index: int = 0,
    eps: float = 0.0,
    score_compat: str = "default",
    rng: np.random.Generator | None = None,
) -> LayerScores:
    """The :class:`LayerScores` of one layer's scoring view (LTI or selective)."""
    units = system.units
    n_units = system.n_units
    max_abs = _combine(np.abs(system.lam), units, n_units, "max")
    if method.quantity is None:
        per_unit = (rng or np.random.default_rng(0)).random(n_units)
    elif isinstance(system, SelectiveView):
        per_unit = _selective_quantity(system, method, score_compat)
    else:
        per_unit = _combine(method.quantity(system, score_compat), units, n_units, method.combine)
        if method.quantity is aire_energy and system.unit_feedthrough_energy is not None:
            per_unit = per_unit + system.unit_feedthrough_energy  # a bypass's D change
    units = system.unit_ids

    if score_compat == "official":
        forced = np.zeros(n_units, dtype=bool)  # official methods are all normalized
        scores, order = official_normalize(per_unit, eps)
        return LayerScores(index, system.name, per_unit, scores, order, forced, units, max_abs)

    forced = max_abs >= 1
    energies = np.where(forced, np.inf, per_unit)
    finite = np.where(forced, 0.0, per_unit)
    # forced units first, then descending, then increasing index
    order = np.lexsort((np.arange(n_units), -finite, ~forced))
    if method.normalized:
        free = order[~forced[order]]  # the prefix sums run over the finite units only
        scores = np.full(n_units, np.inf)
        scores[free] = prefix_normalize(finite[free], np.arange(free.size), eps)
    else:
        scores = energies.copy()
    return LayerScores(index, system.name, energies, scores, order, forced, units, max_abs)


def score_systems(
    systems: list[ModalSystem],
    method: str = "aire",
    *,
    eps: float = 0.0,
    score_compat: str = "default",
    seed: int = 0,
    workers: int | None = None,
) -> list[LayerScores]:
    """Scores of every layer, side by side on up to ``workers`` threads (default: the CPU
    count). Random draws come from one generator seeded with ``seed``, layer by layer, so a
    seed fixes the whole plan."""
    spec = get_method(method)
    check_options(spec, eps, score_compat)
    if spec.quantity is None:  # random: one generator drawn layer after layer, in order
        rng = np.random.default_rng(seed)
        return [
            score_layer(s, spec, index=i, eps=float(eps), score_compat=score_compat, rng=rng)
            for i, s in enumerate(systems)
        ]
    return map_layers(
        lambda item: score_layer(
            item[1], spec, index=item[0], eps=float(eps), score_compat=score_compat
        ),
        list(enumerate(systems)),
        workers=workers,
    )


def scores_to_json(
    layers: list[LayerScores], method: str, eps: float, score_compat: str, seed: int
) -> dict[str, Any]:
    """The ``score --json`` document."""
    return {
        "method": method,
        "eps": eps,
        "score_compat": score_compat,
        "seed": seed,
        "states": sum(layer.states for layer in layers),
        "layers": [layer.to_json() for layer in layers],
    }
