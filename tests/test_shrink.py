"""Physical shrink: the shrunk model equals the masked model, for every architecture option."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from conftest import S4D_CORE_OPTIONS, S5_CORE_OPTIONS, make_s4d, make_s5, option_id, rel_err

import aire_export as ax
from aire_export.cli import main
from aire_export.errors import InputError
from aire_export.models import modal_systems
from aire_export.prune import mask_model, prune, shrink_model

RATIOS = (0.0, 0.3, 0.7, 0.95)
S5_BLOCK_OPTIONS = [
    dict(activation=a, norm=n, prenorm=p, norm_eps=1e-5 if n == "batch" else 1e-6)
    for a, n, p in itertools.product(
        ["full_glu", "half_glu1", "half_glu2", "gelu"], ["batch", "layer"], [True, False]
    )
]
CASES = (
    [(make_s5, o) for o in S5_CORE_OPTIONS]
    + [(make_s5, o) for o in S5_BLOCK_OPTIONS]
    + [(make_s4d, dict(o, prenorm=p)) for o in S4D_CORE_OPTIONS for p in (True, False)]
    + [(make_s5, dict(pooling="last", input_kind="tokens"))]
)
IDS = [f"{make.__name__[5:]}-{option_id(o)}" for make, o in CASES]


def _inputs(model, length: int = 23) -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    if model.config.input_kind == "tokens":
        return torch.randint(0, model.config.d_input, (3, length), generator=g)
    return torch.randn(3, length, model.config.d_input, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("make, options", CASES, ids=IDS)
def test_shrunk_model_matches_masked_model(make, options):
    model = make(seed=2, state_sizes=(8, 6, 4), **options).double()
    x = _inputs(model)
    for ratio in RATIOS:
        pruned, plan = ax.prune(model, ratio, certificates=False)
        masked = mask_model(model, [layer.kept for layer in plan.layers])
        with torch.no_grad():
            assert rel_err(pruned(x), masked(x)) <= 1e-6, ratio
        assert type(pruned) is type(model)
        assert pruned.config.state_sizes == [layer.physical_size for layer in plan.layers]
        live = [s.P - _dead_states(s) for s in modal_systems(pruned)]
        assert live == [layer.states_after for layer in plan.layers]
        if ratio == 0:
            with torch.no_grad():
                assert rel_err(pruned(x), model(x)) <= 1e-12


def _dead_states(system) -> int:
    """States that cannot reach the output (S4D padding modes have C = 0)."""
    return int(sum(np.all(c == 0, axis=0) for c in system.C).astype(bool).sum())


def test_masking_really_changes_the_output():
    """The reference is not vacuous: pruning 70 % changes a random model's output."""
    model = make_s5(seed=2).double()
    _, plan = ax.prune(model, 0.7, certificates=False)
    masked = mask_model(model, [layer.kept for layer in plan.layers])
    x = _inputs(model)
    with torch.no_grad():
        assert rel_err(masked(x), model(x)) > 1e-3


def test_s4d_per_channel_width_is_the_largest_kept_count_with_inert_padding():
    model = make_s4d(seed=3, shared_A=False, state_sizes=(6,)).double()
    H, N = 5, 6
    kept = [np.array([0, 1, 2, 7, 13, 14, 15, 16])]  # channel 0: 3, channel 1: 1, channel 2: 4
    pruned = shrink_model(model, kept)
    assert pruned.config.state_sizes == [4]
    kernel = pruned.layers[0].ssm.kernel
    C = kernel.C.detach()
    assert torch.all(C[0, 3] == 0) and torch.all(C[1, 1:] == 0) and torch.all(C[3:] == 0)
    original = model.layers[0].ssm.kernel
    assert torch.equal(kernel.A_imag[2], original.A_imag[2, [1, 2, 3, 4]])
    lam = modal_systems(pruned)[0].lam
    assert np.all(np.abs(lam) < 1)  # padding modes are stable
    x = _inputs(model)
    with torch.no_grad():
        assert rel_err(pruned(x), mask_model(model, kept)(x)) <= 1e-12
    assert H * N == modal_systems(model)[0].P


def test_s4d_shared_A_keeps_the_same_modes_in_every_channel():
    model = make_s4d(seed=4, shared_A=True, learn_B=True, state_sizes=(6,)).double()
    pruned = shrink_model(model, [np.array([1, 4])])
    kernel, original = pruned.layers[0].ssm.kernel, model.layers[0].ssm.kernel
    assert kernel.log_A_real.shape == (1, 2)
    assert torch.equal(kernel.C, original.C[:, [1, 4]])
    assert torch.equal(kernel.B, original.B[:, [1, 4]])


def test_s5_shrink_slices_every_state_parameter_of_both_directions():
    model = make_s5(seed=5, bidirectional=True, state_sizes=(8,)).double()
    keep = np.array([0, 3, 6])
    seq, original = shrink_model(model, [keep]).layers[0].seq, model.layers[0].seq
    for name in ("Lambda_re", "Lambda_im", "B", "log_step"):
        assert torch.equal(getattr(seq, name), getattr(original, name)[keep])
    for name in ("C1", "C2"):
        assert torch.equal(getattr(seq, name), getattr(original, name)[:, keep])
    assert torch.equal(seq.D, original.D)


@pytest.mark.parametrize("make", [make_s5, make_s4d])
def test_a_dropped_layer_is_feedthrough_and_drop_empty_blocks_removes_it(make):
    model = make(seed=6, state_sizes=(4, 4, 4)).double()
    kept = [np.array([0, 1]), np.array([], dtype=np.int64), np.array([2])]
    pruned = shrink_model(model, kept)
    assert pruned.config.state_sizes[1] == 0
    x = _inputs(model)
    with torch.no_grad():
        assert rel_err(pruned(x), mask_model(model, kept)(x)) <= 1e-12
    without = shrink_model(model, kept, drop_empty_blocks=True)
    assert without.config.n_layers == 2
    assert torch.equal(
        without.layers[1].state_dict()[next(iter(pruned.layers[2].state_dict()))],
        pruned.layers[2].state_dict()[next(iter(pruned.layers[2].state_dict()))],
    )
    with torch.no_grad():
        without(x)  # runs; its effect on the output is measured by validation, not assumed


def test_prune_drop_empty_blocks_marks_the_plan():
    model = make_s5(seed=1, state_sizes=(8, 8, 8))
    with torch.no_grad():
        model.layers[1].seq.B.mul_(1e-3)
    pruned, plan = ax.prune(model, 0.7, eps=1e-3, drop_empty_blocks=True, certificates=False)
    assert plan.layers[1].block_removed and plan.layers[1].physical_size == 0
    assert pruned.config.n_layers == 2
    assert pruned.config.state_sizes == [plan.layers[0].physical_size, plan.layers[2].physical_size]


@pytest.mark.parametrize("make", [make_s5, make_s4d])
def test_shrunk_models_save_and_load_exactly(tmp_path, make):
    model = make(seed=7, state_sizes=(6, 4, 4))
    kept = [np.array([0, 2, 5]), np.array([], dtype=np.int64), np.array([1])]
    pruned = shrink_model(model, kept)
    ax.save(pruned, tmp_path / "p.pt")
    loaded = ax.load(tmp_path / "p.pt")
    assert loaded.config.state_sizes == pruned.config.state_sizes
    x = _inputs(model).float()
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned(x))


def test_prune_leaves_the_input_model_untouched_and_records_meta():
    model = make_s5(seed=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, plan = ax.prune(model, 0.5, certificates=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert pruned.meta["pruning"]["ratio_achieved"] == plan.ratio_achieved
    assert pruned.training == model.training
    assert next(pruned.parameters()).dtype == next(model.parameters()).dtype


def test_shrunk_unidirectional_model_streams():
    model = make_s5(seed=9, state_sizes=(8, 4)).double()
    pruned, _ = ax.prune(model, 0.5, certificates=False)
    x = _inputs(model, length=9)
    state = pruned.init_state(x.shape[0])
    with torch.no_grad():
        for t in range(x.shape[1]):
            y, state = pruned.step(x[:, t], state)
        assert rel_err(y, pruned(x)) <= 1e-10


@pytest.mark.parametrize(
    "kept, message",
    [
        ([np.array([0]), np.array([9])], "outside"),
        ([np.array([0])], "2 SSM layers"),
        ([np.array([[0]]), np.array([0])], "1-D"),
    ],
)
def test_bad_kept_sets_are_refused(kept, message):
    with pytest.raises(InputError, match=message):
        shrink_model(make_s5(state_sizes=(8, 4)), kept)


@pytest.mark.parametrize("ratio", [0.3, 0.6, 0.9])
def test_balanced_channels_keep_the_same_count_per_channel_and_shrink_the_width(ratio):
    model = make_s4d(seed=11, state_sizes=(8, 8), d_model=4)
    _exact, exact_plan = prune(model, ratio, certificates=False, balance_channels=False)
    balanced, plan = prune(model, ratio, certificates=False, balance_channels=True)
    H = model.config.d_model
    for layer_exact, layer in zip(exact_plan.layers, plan.layers, strict=True):
        channels = np.asarray(layer.kept) // 8  # per-channel S4D: unit h·N + n
        counts = np.bincount(channels, minlength=H)
        assert (counts == counts[0]).all()  # the same count in every channel
        assert layer.states_after >= layer_exact.states_after  # at least Algorithm 1's count
        assert layer.physical_size == counts[0] <= layer_exact.physical_size
    assert plan.balance_channels and not exact_plan.balance_channels
    x = torch.randn(2, 15, model.config.d_input)
    with torch.no_grad():  # the balanced shrink is still exact for the states it keeps
        assert torch.allclose(
            balanced(x), mask_model(model, [np.asarray(l.kept) for l in plan.layers])(x), atol=1e-5
        )


def test_balanced_kept_sets_are_nested_across_ratios():
    model = make_s4d(seed=12, state_sizes=(8,), d_model=3)
    kept = [
        set(prune(model, r, certificates=False, balance_channels=True)[1].layers[0].kept)
        for r in (0.2, 0.5, 0.8)
    ]
    assert kept[2] <= kept[1] <= kept[0]


def test_balance_leaves_s5_layers_alone():
    model = make_s5(seed=3)
    a = prune(model, 0.5, certificates=False)[1]
    b = prune(model, 0.5, certificates=False, balance_channels=True)[1]
    assert [list(l.kept) for l in a.layers] == [list(l.kept) for l in b.layers]


def test_s4d_is_balanced_by_default_and_exact_on_request(tmp_path):
    model = make_s4d(seed=13, state_sizes=(8,), d_model=4)
    _, plan = prune(model, 0.5, certificates=False)
    counts = np.bincount(np.asarray(plan.layers[0].kept) // 8, minlength=4)
    assert plan.balance_channels and (counts == counts[0]).all()
    ax.save(model, tmp_path / "m.pt")
    out = tmp_path / "exact.pt"
    assert (
        main(
            ["prune", str(tmp_path / "m.pt"), "--ratio", "0.5", "--exact-channels", "-o", str(out)]
        )
        == 0
    )
    assert json.loads((tmp_path / "plan.json").read_text())["balance_channels"] is False


def test_balancing_names_its_extra_states_instead_of_blaming_ties():
    model = make_s4d(seed=13, state_sizes=(8,), d_model=4)
    _, plan = prune(model, 0.3, certificates=False)  # Algorithm 1: 22 of 32; 4 channels × 6 = 24
    assert plan.states_after == 24
    assert any(w.startswith("channel balancing kept 2 unit(s) more") for w in plan.warnings)
    assert not any("ties" in w for w in plan.warnings)
