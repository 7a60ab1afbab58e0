"""Scores: the AIRE energy and its normalization, the baselines, units, unstable modes, bad options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import S4D_CORE_OPTIONS, S5_CORE_OPTIONS, make_s4d, make_s5, option_id
from reference import _disc

import aire_export as ax
from aire_export.errors import InputError
from aire_export.models import ModalSystem, modal_systems
from aire_export.prune.scores import METHODS, prefix_normalize, score_systems
from aire_export.threads import map_layers

ALL_MODELS = [(make_s5, o) for o in S5_CORE_OPTIONS] + [(make_s4d, o) for o in S4D_CORE_OPTIONS]
ALL_IDS = [f"s5-{option_id(o)}" for o in S5_CORE_OPTIONS] + [
    f"s4d-{option_id(o)}" for o in S4D_CORE_OPTIONS
]


def _s5_discrete_from_weights(model, layer: int):
    """(λ̄, B̄, C̃s) from the state_dict with the test reference discretization (no model code)."""
    sd = {k: v.double().numpy() for k, v in model.state_dict().items()}
    p = f"layers.{layer}.seq."
    lam = sd[p + "Lambda_re"] + 1j * sd[p + "Lambda_im"]
    lam_bar, gain = _disc(lam, np.exp(sd[p + "log_step"][:, 0]), model.config.discretization)
    B = gain[:, None] * (sd[p + "B"][..., 0] + 1j * sd[p + "B"][..., 1])
    names = ("C1", "C2") if model.config.bidirectional else ("C",)
    return lam_bar, B, [sd[p + n][..., 0] + 1j * sd[p + n][..., 1] for n in names]


@pytest.mark.parametrize("options", S5_CORE_OPTIONS, ids=option_id)
def test_aire_energy_is_paper_eq_10_on_the_discrete_system(options):
    model = make_s5(seed=3, **options)
    for layer in ax.score(model, "aire"):
        lam, B, Cs = _s5_discrete_from_weights(model, layer.index)
        c2 = np.mean([np.sum(np.abs(C) ** 2, 0) for C in Cs], axis=0)
        expected = c2 * np.sum(np.abs(B) ** 2, 1) / (1 - np.abs(lam) ** 2)
        np.testing.assert_allclose(layer.energies, expected, rtol=1e-6)


def test_aire_energy_is_the_energy_of_each_complex_mode_impulse_response():
    """E_i = Σ_m ‖C_i λ̄_i^m B_iᵀ‖²_F: the asymptotic impulse-response energy of mode i."""
    model = make_s5(seed=5, conj_sym=False)
    system = modal_systems(model)[0]
    m = np.arange(20000)[:, None]
    per_mode = (np.abs(system.lam)[None, :] ** (2 * m)).sum(0)
    expected = system.c_norm2()[0] * system.b_norm2() * per_mode
    np.testing.assert_allclose(ax.score(model)[0].energies, expected, rtol=1e-9)


@pytest.mark.parametrize("make, options", ALL_MODELS, ids=ALL_IDS)
def test_prefix_scores_start_at_one_and_never_increase_along_the_order(make, options):
    model = make(seed=1, **options)
    for method in ("aire", "last", "lamp"):
        for layer in ax.score(model, method):
            ordered = layer.scores[layer.order]
            assert ordered[0] == 1.0
            assert np.all(np.diff(ordered) <= 0)
            energies = layer.energies[layer.order]
            assert np.all(np.diff(energies) <= 0)  # the order is by energy


def test_eps_lowers_every_score_below_one():
    model = make_s5(seed=2)
    for eps in (1e-6, 1e-2, 1.0):
        for layer, plain in zip(ax.score(model, eps=eps), ax.score(model), strict=True):
            assert np.all(layer.scores < plain.scores)
            assert np.all(layer.scores < 1)
            e = layer.energies[layer.order]
            np.testing.assert_allclose(layer.scores[layer.order], e / (np.cumsum(e) + eps))


def test_prefix_normalization_is_eq_11_with_ties_broken_by_index():
    energies = np.array([1.0, 5.0, 5.0, 2.0])
    order = np.lexsort((np.arange(4), -energies))
    assert list(order) == [1, 2, 3, 0]  # equal energies: the earlier index first
    np.testing.assert_allclose(
        prefix_normalize(energies, order, 0.0), [1 / 13, 1.0, 5 / 10, 2 / 12]
    )
    # all-zero layer: 1/i, so its first unit still scores 1
    np.testing.assert_allclose(prefix_normalize(np.zeros(3), np.arange(3), 0.0), [1, 1 / 2, 1 / 3])


def test_last_is_the_squared_hinf_norm_of_each_state():
    model = make_s5(seed=4)
    system = modal_systems(model)[1]
    expected = system.c_norm2()[0] * system.b_norm2() / (1 - np.abs(system.lam)) ** 2
    layer = ax.score(model, "last")[1]
    np.testing.assert_allclose(layer.energies, expected, rtol=1e-12)
    np.testing.assert_allclose(ax.score(model, "hinf-global")[1].scores, expected, rtol=1e-12)


def test_magnitude_and_lamp_use_the_eigenvalue_magnitude():
    model = make_s5(seed=6)
    system = modal_systems(model)[0]
    mags = np.abs(system.lam)
    np.testing.assert_allclose(ax.score(model, "magnitude-global")[0].scores, mags)
    lamp = ax.score(model, "lamp")[0]
    order = np.argsort(-mags, kind="stable")
    e = mags[order] ** 2
    np.testing.assert_allclose(lamp.scores[order], e / np.cumsum(e))


def test_random_scores_are_reproducible_by_seed():
    model = make_s5(seed=7)
    a = ax.score(model, "random", seed=3)
    b = ax.score(model, "random", seed=3)
    c = ax.score(model, "random", seed=4)
    assert all(np.array_equal(x.scores, y.scores) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x.scores, y.scores) for x, y in zip(a, c, strict=True))
    assert all(np.all((x.scores >= 0) & (x.scores < 1)) for x in a)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("make, options", ALL_MODELS, ids=ALL_IDS)
def test_every_method_scores_every_architecture(make, options, method):
    model = make(seed=8, **options)
    for layer, system in zip(ax.score(model, method), modal_systems(model), strict=True):
        assert layer.states == system.P
        assert layer.energies.shape == layer.scores.shape == (system.n_units,)
        assert sorted(layer.order) == list(range(system.n_units))
        assert np.all(np.diff(layer.scores[layer.order]) <= 0)
        assert np.isfinite(layer.scores).all()


def test_shared_A_units_add_the_energies_of_a_mode_across_channels():
    model = make_s4d(seed=2, shared_A=True, state_sizes=(6,))
    system = modal_systems(model)[0]
    per_state = system.c_norm2()[0] * system.b_norm2() / (1 - np.abs(system.lam) ** 2)
    layer = ax.score(model)[0]
    assert layer.n_units == 6 and layer.states == 5 * 6
    np.testing.assert_allclose(layer.energies, per_state.reshape(5, 6).sum(0))
    assert list(layer.unit_states) == [5] * 6
    # H∞-type scores take the largest channel
    hinf = system.c_norm2()[0] * system.b_norm2() / (1 - np.abs(system.lam)) ** 2
    np.testing.assert_allclose(ax.score(model, "last")[0].energies, hinf.reshape(5, 6).max(0))


def _with_unstable_states(states: int = 2):
    model = make_s5(seed=9, clip_eigs=False)
    with torch.no_grad():
        model.layers[1].seq.Lambda_re[:states] = 0.05  # Re Λ > 0: |λ̄| > 1
    return model


def test_unstable_modes_are_always_kept_by_default_and_warned_about():
    model = _with_unstable_states()
    layer = ax.score(model)[1]
    assert list(layer.unstable) == [0, 1]
    assert np.isinf(layer.energies[:2]).all() and np.isinf(layer.scores[:2]).all()
    assert set(layer.order[:2]) == {0, 1}
    assert layer.scores[layer.order[2]] == 1.0  # the prefix sums skip the infinite energies
    _, plan = ax.prune(model, 0.95, certificates=False)
    assert {0, 1} <= set(plan.layers[1].kept)
    assert plan.layers[1].unstable == [0, 1]
    assert plan.layers[0].states_after >= 1  # eps = 0: no layer empties
    assert any("|λ̄| ≥ 1" in w and "kept" in w for w in plan.warnings)


def test_official_compat_reproduces_the_negative_energy_of_unstable_modes():
    """Official: 1 − |λ̄|² + 1e-8 < 0 gives negative energies, then the official normalization
    runs on them as is (negative sums can even give such states scores near or above 1)."""
    model = _with_unstable_states()
    system = modal_systems(model)[1]
    layer = ax.score(model, score_compat="official")[1]
    lam = np.abs(system.lam)
    expected = system.c_norm2()[0] * system.b_norm2() / ((1 - lam**2) + 1e-8)
    np.testing.assert_allclose(layer.energies, expected)
    assert np.all(layer.energies[:2] < 0) and np.all(layer.energies[2:] > 0)
    ascending = np.sort(expected)
    official = ascending / np.cumsum(ascending[::-1])[::-1]
    np.testing.assert_allclose(np.sort(layer.scores), np.sort(official))
    assert not layer.forced.any()
    _, plan = ax.prune(model, 0.5, score_compat="official", certificates=False)
    all_scores = np.concatenate([s.scores for s in ax.score(model, score_compat="official")])
    th = np.sort(all_scores)[-plan.target_units]
    assert list(plan.layers[1].kept) == list(np.flatnonzero(layer.scores >= th))
    assert any("official formula" in w for w in plan.warnings)


def test_certificate_of_a_removed_unstable_mode_is_infinite():
    model = _with_unstable_states()
    _, plan = ax.prune(model, 0.5, score_compat="official")
    layer = plan.layers[1]
    removed_unstable = set(layer.unstable) - set(layer.kept)
    assert removed_unstable  # this model prunes one of its two unstable states
    assert np.isinf(layer.certificate.bound) and np.isinf(layer.certificate.h2)
    assert plan.to_json()["layers"][1]["certificate"]["bound"] is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="magnitude"), "unknown scoring method"),
        (dict(score_compat="paper"), "score_compat"),
        (dict(method="lamp", score_compat="official"), "aire and last"),
        (dict(eps=-1.0), "eps"),
        (dict(eps=float("nan")), "eps"),
        (dict(method="random", eps=0.1), "leave eps at 0"),
    ],
)
def test_bad_scoring_options_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        ax.score(make_s5(), **kwargs)


def test_a_model_without_states_cannot_be_scored():
    with pytest.raises(InputError, match="no SSM states"):
        ax.score(make_s5(state_sizes=(0, 0)))
    with pytest.raises(InputError, match="aire-export model"):
        ax.score(torch.nn.Linear(2, 2))


def test_synthetic_modal_system_scores_are_its_energies():
    """The helper the selection tests use: λ̄ = 0, C = 1, B = √E gives AIRE energies E."""
    energies = np.array([3.0, 0.5, 2.0])
    system = ModalSystem(
        lam=np.zeros(3, complex),
        B=np.sqrt(energies)[:, None].astype(complex),
        C=(np.ones((1, 3), complex),),
        D=np.zeros(1),
        conj_sym=False,
    )
    from aire_export.prune.scores import get_method, score_layer

    layer = score_layer(system, get_method("aire"))
    np.testing.assert_allclose(layer.energies, energies)
    assert list(layer.order) == [0, 2, 1]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_layer_threads_change_nothing(method):
    """Layers scored side by side give exactly the sequential result, random draws included."""
    model = make_s5(seed=21, state_sizes=(12, 8, 16))
    one = score_systems(modal_systems(model, workers=1), method, seed=4, workers=1)
    many = score_systems(modal_systems(model, workers=3), method, seed=4, workers=3)
    for a, b in zip(one, many, strict=True):
        assert np.array_equal(a.scores, b.scores) and np.array_equal(a.order, b.order)
    kept_one = ax.prune(model, 0.5, method=method, certificates=False, workers=1)[1]
    kept_many = ax.prune(model, 0.5, method=method, certificates=False, workers=3)[1]
    assert [list(l.kept) for l in kept_one.layers] == [list(l.kept) for l in kept_many.layers]


def test_map_layers_keeps_order_and_raises_what_a_layer_raises():
    assert map_layers(lambda x: x * x, list(range(7)), workers=3) == [x * x for x in range(7)]

    def fail(x):
        raise InputError(f"layer {x}")

    with pytest.raises(InputError, match="layer"):
        map_layers(fail, [1, 2], workers=2)
