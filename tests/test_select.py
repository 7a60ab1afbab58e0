"""Selection (Algorithm 1): kept counts, prefixes, monotonicity, eps, ties, uniform, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_s5
from hypothesis import given, settings
from hypothesis import strategies as st

import aire_export as ax
from aire_export.errors import InputError
from aire_export.models import ModalSystem
from aire_export.prune.scores import LayerScores, get_method, score_layer
from aire_export.prune.select import kept_count, select_global, select_uniform


def layers_from_energies(energies: list[np.ndarray], method="aire", eps=0.0) -> list[LayerScores]:
    """LayerScores whose AIRE energies are ``energies``: λ̄ = 0, C = 1, B = √E (test_scores)."""
    out = []
    for index, e in enumerate(energies):
        system = ModalSystem(
            lam=np.zeros(len(e), complex),
            B=np.sqrt(np.asarray(e, dtype=float))[:, None].astype(complex),
            C=(np.ones((1, len(e)), complex),),
            D=np.zeros(1),
            conj_sym=False,
        )
        out.append(score_layer(system, get_method(method), index=index, eps=eps))
    return out


# energies drawn from a small set too, so ties (across and within layers) happen often
energy = st.one_of(st.floats(1e-6, 1e3, allow_nan=False), st.sampled_from([0.0, 1.0, 2.0, 0.5]))
model_energies = st.lists(
    st.lists(energy, min_size=0, max_size=12).map(np.array), min_size=1, max_size=5
).filter(lambda layers: sum(len(e) for e in layers) > 0)
ratio = st.floats(0.0, 0.999, allow_nan=False)


def _kept_total(selection) -> int:
    return sum(len(k) for k in selection.kept)


@settings(max_examples=200, deadline=None)
@given(model_energies, ratio)
def test_keeps_K_states_up_to_ties_and_a_prefix_of_each_layer(energies, p):
    layers = layers_from_energies(energies)
    selection = select_global(layers, p)
    scores = np.concatenate([layer.scores for layer in layers])
    K = max(math.floor(round(scores.size * (1 - p), 9)), 1)
    tau = selection.threshold
    assert selection.target_units == K
    assert np.sum(scores > tau) < K <= _kept_total(selection)  # exactly K up to ties at τ
    assert _kept_total(selection) == np.sum(scores >= tau)
    for layer, kept in zip(layers, selection.kept, strict=True):
        n = len(kept)
        assert set(kept) == set(layer.order[:n])  # a prefix of the energy order
        assert np.all(np.diff(layer.energies[layer.order]) <= 0)
        if layer.n_units:
            assert n >= 1  # eps = 0: no layer empties


@settings(max_examples=100, deadline=None)
@given(model_energies, ratio, ratio)
def test_kept_sets_shrink_as_the_ratio_grows(energies, p1, p2):
    layers = layers_from_energies(energies)
    low, high = sorted((p1, p2))
    kept_low = select_global(layers, low).kept
    kept_high = select_global(layers, high).kept
    for a, b in zip(kept_low, kept_high, strict=True):
        assert set(b) <= set(a)


@settings(max_examples=100, deadline=None)
@given(model_energies, st.floats(0.0, 1.5, allow_nan=False))
def test_threshold_keeps_every_prefix_score_at_or_above_it(energies, tau):
    layers = layers_from_energies(energies)
    selection = select_global(layers, threshold=tau)
    assert selection.threshold == tau and selection.target_units is None
    for layer, kept in zip(layers, selection.kept, strict=True):
        assert set(kept) == set(np.flatnonzero(layer.scores >= tau))


@settings(max_examples=100, deadline=None)
@given(model_energies, ratio)
def test_uniform_selection_keeps_the_same_fraction_per_layer(energies, p):
    layers = layers_from_energies(energies, method="hinf-uniform")
    selection = select_uniform(layers, p)
    assert selection.threshold is None
    for layer, kept in zip(layers, selection.kept, strict=True):
        expected = max(math.floor(round(layer.n_units * (1 - p), 9)), 1) if layer.n_units else 0
        assert len(kept) == expected
        assert set(kept) == set(layer.order[: len(kept)])


def test_kept_count_matches_the_official_integer_percent_formula():
    for total in range(1, 201):
        for percent in range(100):
            official = max(int(total * (100 - percent) / 100), 1)
            assert kept_count(total, percent / 100) == official, (total, percent)
    assert kept_count(0, 0.5) == 0


def test_ties_at_the_threshold_are_all_kept_and_reported():
    layers = layers_from_energies([np.array([4.0, 1.0]), np.array([4.0, 1.0]), np.array([3.0])])
    selection = select_global(layers, 0.9)  # K = 1, but three layers score 1 at their head
    assert selection.target_units == 1 and selection.threshold == 1.0
    assert [list(k) for k in selection.kept] == [[0], [0], [0]]


def test_equal_energies_within_a_layer_keep_the_earlier_index():
    layers = layers_from_energies([np.array([2.0, 5.0, 5.0, 5.0])])
    assert list(layers[0].order) == [1, 2, 3, 0]
    assert list(select_global(layers, 0.5).kept[0]) == [1, 2]


def test_eps_lets_a_low_energy_layer_empty_but_eps_zero_never_does():
    energies = [np.array([10.0, 8.0, 6.0, 4.0]), np.array([1e-4, 5e-5])]
    kept_plain = select_global(layers_from_energies(energies), 0.6).kept
    assert [len(k) for k in kept_plain] == [1, 1]
    kept_eps = select_global(layers_from_energies(energies, eps=1e-2), 0.6).kept
    assert len(kept_eps[1]) == 0 and len(kept_eps[0]) == 2


def test_eps_drops_whole_layers_of_a_model():
    model = make_s5(seed=1, state_sizes=(8, 8, 8))
    with __import__("torch").no_grad():
        model.layers[1].seq.B.mul_(1e-3)  # a layer with little energy
    _, plain = ax.prune(model, 0.7, certificates=False)
    assert not any(layer.dropped for layer in plain.layers)
    _, plan = ax.prune(model, 0.7, eps=1e-3, certificates=False)
    assert [layer.dropped for layer in plan.layers] == [False, True, False]
    assert any("no state kept" in w for w in plan.warnings)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(ratio=1.0), r"\[0, 1\)"),
        (dict(ratio=-0.1), r"\[0, 1\)"),
        (dict(ratio=float("nan")), r"\[0, 1\)"),
        (dict(threshold=-1.0), "threshold"),
        (dict(threshold=float("inf")), "threshold"),
        (dict(), "exactly one"),
        (dict(ratio=0.5, threshold=0.1), "exactly one"),
        (dict(ratio=0.5, method="bogus"), "unknown scoring method"),
        (dict(threshold=0.1, method="hinf-uniform"), "give a ratio"),
    ],
)
def test_bad_selection_options_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        ax.prune(make_s5(), **kwargs)


def test_ratio_zero_keeps_everything_and_the_plan_reports_the_achieved_ratio():
    model = make_s5(seed=3, state_sizes=(8, 4))
    pruned, plan = ax.prune(model, 0.0, certificates=False)
    assert plan.ratio_achieved == 0.0 and pruned.config.state_sizes == [8, 4]
    _, plan = ax.prune(model, 0.5, certificates=False)
    assert plan.ratio_achieved == pytest.approx(1 - plan.states_after / 12)
    assert plan.states_after == 6
