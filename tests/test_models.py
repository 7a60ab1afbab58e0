"""S5 and S4D models: parallel forward vs sequential float64 reference, step mode, modal view."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import S4D_CORE_OPTIONS, S5_CORE_OPTIONS, make_s4d, make_s5, option_id, rel_err
from reference import s4d_ssm, s5_core

from aire_export.errors import InputError
from aire_export.models import modal_systems

LENGTHS = [1, 7, 1024, 16384]


def _params(module) -> dict[str, np.ndarray]:
    return {k: v.detach().double().numpy() for k, v in module.named_parameters()}


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("options", S5_CORE_OPTIONS, ids=option_id)
def test_s5_core_float32_matches_float64_sequential_reference(options, length):
    model = make_s5(seed=length, clip_eigs=True, **options)
    core = model.layers[0].seq
    u = torch.randn(2, length, model.config.d_model, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = core(u).numpy()
    ref = s5_core(_params(core), model.config, u.double().numpy())
    assert rel_err(out, ref) <= 1e-5


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("options", S4D_CORE_OPTIONS, ids=option_id)
def test_s4d_ssm_float32_matches_float64_sequential_reference(options, length):
    model = make_s4d(seed=length, **options)
    core = model.layers[0].ssm
    u = torch.randn(2, length, model.config.d_model, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = core.ssm(u).numpy()
    params = _params(core.kernel) | {"D": core.D.detach().double().numpy()}
    ref = s4d_ssm(params, model.config, u.double().numpy())
    assert rel_err(out, ref) <= 1e-5


def test_clip_eigs_is_applied_at_forward_time():
    """A stored positive Re Λ is clipped to −1e-4 when clip_eigs, used as is otherwise."""
    clipped, raw = make_s5(clip_eigs=True), make_s5(clip_eigs=False)
    for m in (clipped, raw):
        with torch.no_grad():
            m.layers[0].seq.Lambda_re[0] = 0.3
    lam_clip = modal_systems(clipped)[0].lam[0]
    lam_raw = modal_systems(raw)[0].lam[0]
    step = float(torch.exp(clipped.layers[0].seq.log_step[0, 0].detach()))
    assert abs(lam_clip) == pytest.approx(np.exp(-1e-4 * step), rel=1e-9)
    assert abs(lam_raw) == pytest.approx(np.exp(0.3 * step), rel=1e-6)


S5_NETWORK_OPTIONS = [
    dict(activation=a, norm=n, prenorm=p, pooling=pool, norm_eps=1e-5 if n == "batch" else 1e-6)
    for a, n, p, pool in itertools.product(
        ["full_glu", "half_glu1", "half_glu2", "gelu"],
        ["batch", "layer"],
        [True, False],
        ["pool", "last"],
    )
]


@pytest.mark.parametrize("options", S5_NETWORK_OPTIONS, ids=option_id)
def test_s5_step_reproduces_sequence_output(options):
    model = make_s5(seed=3, conj_sym=True, **options)
    x = torch.randn(2, 23, model.config.d_input, generator=torch.Generator().manual_seed(2))
    _assert_step_matches_prefixes(model, x)


@pytest.mark.parametrize("options", [*S5_CORE_OPTIONS[:4]], ids=option_id)
def test_s5_core_options_step_reproduces_sequence_output(options):
    model = make_s5(seed=4, **options)
    x = torch.randn(2, 19, model.config.d_input, generator=torch.Generator().manual_seed(3))
    _assert_step_matches_prefixes(model, x)


@pytest.mark.parametrize("options", S4D_CORE_OPTIONS, ids=option_id)
@pytest.mark.parametrize("prenorm", [True, False])
def test_s4d_step_reproduces_sequence_output(options, prenorm):
    model = make_s4d(seed=5, prenorm=prenorm, **options)
    x = torch.randn(2, 21, model.config.d_input, generator=torch.Generator().manual_seed(4))
    _assert_step_matches_prefixes(model, x)


def _assert_step_matches_prefixes(model, x) -> None:
    """After t steps the streamed output equals the sequence output on the first t inputs."""
    model = model.double()
    x = x.double()
    state = model.init_state(x.shape[0])
    with torch.no_grad():
        for t in range(x.shape[1]):
            y_step, state = model.step(x[:, t], state)
            if t in (0, 5, x.shape[1] - 1):
                y_seq = model(x[:, : t + 1])
                assert rel_err(y_step, y_seq) <= 1e-10, f"step {t}"


def test_bidirectional_model_refuses_streaming():
    model = make_s5(bidirectional=True)
    with pytest.raises(InputError, match="unidirectional"):
        model.step(torch.zeros(1, 3), model.init_state(1))


@pytest.mark.parametrize(
    "make, options",
    [(make_s5, o) for o in S5_CORE_OPTIONS] + [(make_s4d, o) for o in S4D_CORE_OPTIONS],
    ids=[f"s5-{option_id(o)}" for o in S5_CORE_OPTIONS]
    + [f"s4d-{option_id(o)}" for o in S4D_CORE_OPTIONS],
)
def test_modal_impulse_response_equals_layer_output(make, options):
    """Feeding an impulse to the core gives D·δ plus the modal Markov parameters (both directions)."""
    model = make(seed=7, **options).double()
    block = model.layers[0]
    core = getattr(block, "seq", None)
    run = core if core is not None else block.ssm.ssm
    system = modal_systems(model)[0]
    H, T, t0 = model.config.d_model, 40, 15
    for channel in range(H):
        u = torch.zeros(1, T, H, dtype=torch.float64)
        u[0, t0, channel] = 1.0
        with torch.no_grad():
            y = run(u)[0].numpy()
        expected = np.zeros((T, H))
        expected[t0] = system.D * u[0, t0].numpy()
        h_fwd = system.impulse_response(T - t0, direction=0)[:, :, channel]
        expected[t0:] += h_fwd
        if system.bidirectional:
            h_bwd = system.impulse_response(t0 + 1, direction=1)[:, :, channel]
            expected[: t0 + 1] += h_bwd[::-1]
        np.testing.assert_allclose(y, expected, atol=1e-10, rtol=1e-9)


def test_s4d_modal_view_units_follow_shared_A():
    per_channel = modal_systems(make_s4d(shared_A=False))[0]
    shared = modal_systems(make_s4d(shared_A=True))[0]
    H, N = 5, 6
    assert per_channel.P == shared.P == H * N
    assert per_channel.n_units == H * N
    assert shared.n_units == N and list(shared.units[:N]) == list(range(N))
    assert list(per_channel.channels[: N + 1]) == [0] * N + [1]


def test_token_ids_equal_one_hot_features():
    model = make_s5(d_input=7, input_kind="tokens", bidirectional=True)
    tokens = torch.randint(0, 7, (3, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        by_id = model(tokens)
        by_one_hot = model(torch.nn.functional.one_hot(tokens, 7).float())
    assert torch.allclose(by_id, by_one_hot, atol=1e-5)


def test_masked_mean_pool_ignores_padding_in_causal_models():
    model = make_s5(seed=2)
    x = torch.randn(2, 30, 3, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([30, 17])
    with torch.no_grad():
        padded = model(x, lengths)
        short = model(x[1:, :17])
    assert torch.allclose(padded[1], short[0], atol=1e-5)


def test_empty_layer_is_feedthrough():
    model = make_s5(state_sizes=(0, 4))
    core = model.layers[0].seq
    u = torch.randn(1, 9, model.config.d_model)
    with torch.no_grad():
        assert torch.allclose(core(u), core.D * u)
    assert modal_systems(model)[0].P == 0
    with torch.no_grad():
        model(torch.randn(1, 9, 3))
