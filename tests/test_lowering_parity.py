"""Lowering fidelity: onnxruntime (CPU) on the exported graph vs the float64 PyTorch model.

Every lowering, models covering every architecture option, lengths 1, 17, 1024 and 16384,
relative error ≤ 1e-5 in float32 (issue 6). The default run covers every lowering × every
option at lengths 1 and 17, and every lowering at 1024 and 16384 on an S5 (bidirectional)
and an S4D model; the full option × lowering × length product and the shipped example models
at 16384 steps are ``-m slow`` (the examples at 1, 17 and 1024: test_export.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import OFFICIAL, make_s4d, make_s5, rel_err
from lowering import ReferenceCache, random_input, reference, run_sequence, session

import aire_export as ax
from aire_export.graphs import selective
from aire_export.graphs.lowering import METHODS
from aire_export.lower import export

FP32_TOLERANCE = 1e-5

# Every value of every architecture option appears at least once.
OPTIONS = {
    "s5-default": (make_s5, {}),
    "s5-bidir-bilinear": (make_s5, dict(bidirectional=True, discretization="bilinear")),
    "s5-full_glu-layernorm-postnorm-last-nonconj": (
        make_s5,
        dict(
            conj_sym=False,
            activation="full_glu",
            norm="layer",
            norm_eps=1e-6,
            prenorm=False,
            pooling="last",
        ),
    ),
    "s5-half_glu2-tokens-bidir-nonconj": (
        make_s5,
        dict(
            activation="half_glu2",
            input_kind="tokens",
            d_input=7,
            bidirectional=True,
            conj_sym=False,
        ),
    ),
    "s5-gelu-clip-rescale-dropped-layer": (
        make_s5,
        dict(activation="gelu", clip_eigs=True, step_rescale=2.0, state_sizes=(0, 4)),
    ),
    "s5-erf-gelu-bidir-last": (
        make_s5,
        dict(gelu_approximate="none", pooling="last", bidirectional=True, output="logits"),
    ),
    "s4d-default": (make_s4d, {}),
    "s4d-sharedA-learnB-bilinear-postnorm": (
        make_s4d,
        dict(
            shared_A=True,
            learn_B=True,
            discretization="bilinear",
            prenorm=False,
            output="log_softmax",
        ),
    ),
    "s4d-batchnorm-last-tanh-tokens-dropped-layer": (
        make_s4d,
        dict(
            norm="batch",
            pooling="last",
            gelu_approximate="tanh",
            input_kind="tokens",
            d_input=7,
            state_sizes=(6, 0),
        ),
    ),
}
LONG_MODELS = ("s5-bidir-bilinear", "s4d-default")


CASES = ReferenceCache(
    {
        name: (lambda seed, m=make, o=options: m(seed=seed, **o))
        for name, (make, options) in OPTIONS.items()
    }
)


def _check(tmp_path, name: str, method: str, lengths, batch=2, seed=0):
    model = CASES.model(name, seed)
    graph = session(export(model, tmp_path, scan=method, step=False).sequence.path)
    for length in lengths:
        x, ref = CASES.case(name, batch, length, seed)
        err = rel_err(graph.run(["y"], {"x": x.numpy()})[0], ref)
        assert err <= FP32_TOLERANCE, f"length {length}: relative error {err:.2e}"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", OPTIONS)
def test_every_lowering_matches_float64_model_on_short_sequences(tmp_path, name, method):
    _check(tmp_path, name, method, [1, 17])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", LONG_MODELS)
def test_every_lowering_matches_float64_model_on_long_sequences(tmp_path, name, method):
    _check(tmp_path, name, method, [1024, 16384], batch=1, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", OPTIONS)
def test_every_lowering_every_option_every_length(tmp_path, name, method):
    _check(tmp_path, name, method, [1, 17, 1024, 16384], seed=2)


@pytest.mark.parametrize("method", METHODS)
def test_lengths_around_chunk_boundaries_stay_exact(tmp_path, method):
    """Lengths that chunks do not divide, over two chunked levels, with a batch of 3."""
    _check(tmp_path, "s5-bidir-bilinear", method, [15, 257], batch=3, seed=3)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", ["s5-default", "s5-erf-gelu-bidir-last", "s4d-default"])
def test_lengths_input_masks_pooling_like_the_model(tmp_path, name, method):
    model = CASES.model(name, seed=4)
    result = export(model, tmp_path, scan=method, step=False, lengths_input=True)
    x, _ = CASES.case(name, 3, 40, seed=4)
    lengths = torch.tensor([40, 17, 1])
    if name not in _MASKED:
        _MASKED[name] = reference(model, x, lengths)
    out = run_sequence(result.sequence.path, x, lengths)
    assert rel_err(out, _MASKED[name]) <= FP32_TOLERANCE


_MASKED: dict[str, np.ndarray] = {}  # float64 outputs with lengths, computed once per model


@pytest.fixture(scope="module")
def official():
    """The official AIRE-Prune S5 (bidirectional, tokens), its fixture batch, float64 output."""
    from aire_export.checkpoints.s5_flax import import_s5_flax

    model = import_s5_flax(OFFICIAL / "best_state.msgpack", OFFICIAL / "config.json")
    tokens = torch.from_numpy(np.load(OFFICIAL / "tokens.npy"))
    return model, tokens, reference(model, tokens)


@pytest.mark.parametrize("method", METHODS)
def test_official_checkpoint_exports_faithfully(tmp_path, official, method):
    model, tokens, ref = official
    result = export(model, tmp_path, scan=method)
    out = run_sequence(result.sequence.path, tokens)
    assert rel_err(out, ref) <= FP32_TOLERANCE
    assert np.abs(out - np.load(OFFICIAL / "logits_full.npy")).max() <= 1e-4  # official float32


EXAMPLES = sorted((Path(__file__).parents[1] / "examples" / "checkpoints").glob("*.pt"))


@pytest.mark.slow
@pytest.mark.skipif(not EXAMPLES, reason="no example checkpoints (examples/checkpoints/*.pt)")
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_models_at_16384_steps(tmp_path, path, method):
    """The shipped models, every lowering, T = 16384 (lengths 1, 17, 1024: test_export.py)."""
    model = ax.load(path)
    if model.arch == "mamba" and method not in selective.METHODS:
        pytest.skip(f"{method} lowers LTI layers only")
    graph = session(export(model, tmp_path, scan=method, step=False).sequence.path)
    x = random_input(model, 1, 16384, seed=3)
    err = rel_err(graph.run(["y"], {"x": x.numpy()})[0], reference(model, x))
    assert err <= FP32_TOLERANCE, f"relative error {err:.2e}"
