"""The chunked S5 scan with time last (issue 14 item 4): chunks (…, n, 2Q) with (re/im, step)
columns equal the sequential recurrence, and a layer whose states are at least as wide as its
channels (2P ≥ H) transposes only u, y and blocks of Q floats, never (re, im) pairs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import make_s5, rel_err
from lowering import random_input, reference, session
from onnx import helper

import aire_export as ax
from aire_export.graphs.builder import GraphBuilder
from aire_export.graphs.lti_dense import time_last
from aire_export.graphs.recurrence import planar_chunked_recurrence
from aire_export.models import family_of


def sequential(lam: np.ndarray, v: np.ndarray, reverse: bool) -> np.ndarray:
    """x_t = λ ⊙ x_{t∓1} + v_t in complex128 over the time axis (−1) of v (S, T)."""
    x, state = np.zeros_like(v), np.zeros(v.shape[:-1], dtype=complex)
    for t in reversed(range(v.shape[-1])) if reverse else range(v.shape[-1]):
        state = lam * state + v[..., t]
        x[..., t] = state
    return x


def to_chunks(z: np.ndarray, q: int) -> np.ndarray:
    """(S, T) complex → (1, S, n, 2q) float32 [re of the chunk's q steps, im of them]."""
    S, T = z.shape
    parts = np.stack([z.real, z.imag], 1).reshape(S, 2, T // q, q)  # (S, c, n, k)
    return parts.transpose(0, 2, 1, 3).reshape(1, S, T // q, 2 * q).astype(np.float32)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(
    ("length", "levels", "carry_scan"),
    [(8, 1, False), (8 * 5, 2, False), (8 * 8 * 3 + 8, 3, False), (8 * 13, 2, True)],
)
def test_planar_chunks_equal_the_sequential_recurrence(reverse, length, levels, carry_scan):
    q, S = 8, 5
    rng = np.random.default_rng(length + levels)
    radius = rng.choice([0.3, 0.95, 0.9995], size=S)
    lam = radius * np.exp(1j * rng.uniform(-np.pi, np.pi, size=S))
    v = rng.standard_normal((S, length)) + 1j * rng.standard_normal((S, length))
    g = GraphBuilder("planar", 17)
    chunks = g.input("chunks", "float32", [1, S, length // q, 2 * q])
    x = planar_chunked_recurrence(g, chunks, lam, 4, q, levels, reverse, carry_scan)
    g.output("x", x, "float32", [1, S, length // q, 2 * q])
    graph = ort.InferenceSession(
        g.model("test").SerializeToString(), providers=["CPUExecutionProvider"]
    )
    (out,) = graph.run(None, {"chunks": to_chunks(v, q)})
    ref = to_chunks(sequential(lam, v, reverse), q)
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()


def _transposes(path) -> list[list[int]]:
    nodes = onnx.load(str(path)).graph.node
    return [
        list(helper.get_attribute_value(n.attribute[0])) for n in nodes if n.op_type == "Transpose"
    ]


@pytest.mark.parametrize("method", ["chunked", "scan"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_wide_states_run_time_last_and_narrow_ones_in_pairs(tmp_path, method, bidirectional):
    wide = make_s5(state_sizes=(8, 4), d_model=6, bidirectional=bidirectional)  # 2P ≥ 6
    narrow = make_s5(state_sizes=(2, 2), d_model=6, bidirectional=bidirectional)  # 2P < 6
    assert all(time_last(b.core) for b in family_of(wide).export_ir(wide).blocks)
    assert not any(time_last(b.core) for b in family_of(narrow).export_ir(narrow).blocks)
    perms, loaded = {}, {}
    for name, model in (("wide", wide), ("narrow", narrow)):
        result = ax.export(model, tmp_path / name, scan=method, step=False)
        perms[name] = _transposes(result.sequence.path)
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / f"{name}-loaded.onnx")
        ort.InferenceSession(str(result.sequence.path), options, providers=["CPUExecutionProvider"])
        loaded[name] = _transposes(options.optimized_model_filepath)
    pair = [0, 2, 1, 3]  # (B, L, P, 2) ↔ (B, P, L, 2)
    assert pair not in perms["wide"]
    directions = 1 + bidirectional  # per layer: u and each x_d (fused into the MatMuls) ...
    assert perms["wide"].count([0, 2, 1]) == 2 * (1 + directions)
    assert perms["wide"].count([0, 1, 3, 2, 4]) == 2 * (1 + directions)  # ... and Q-blocks
    assert len(perms["wide"]) == 2 * 2 * (1 + directions)
    assert loaded["wide"] == [[0, 1, 3, 2, 4]] * (2 * (1 + directions))  # the others fused
    assert perms["narrow"].count(pair) == 2 * (2 + bidirectional)


@pytest.mark.parametrize("method", ["chunked", "scan"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_both_layouts_match_the_float64_model(tmp_path, method, bidirectional):
    """One layer time last (2P = 8 ≥ H = 6), one in pairs (2P = 4): lengths around chunks."""
    model = make_s5(seed=4, state_sizes=(4, 2), d_model=6, bidirectional=bidirectional)
    graph = session(ax.export(model, tmp_path, scan=method, step=False).sequence.path)
    for length in (1, 16, 17, 300, 1024):
        x = random_input(model, 2, length, seed=length)
        err = rel_err(graph.run(["y"], {"x": x.numpy()})[0], reference(model, x))
        assert err <= 1e-5, f"length {length}: relative error {err:.2e}"
