"""Small graphs (issue 14 item 2): constants that are powers of λ̄ are built in the graph from
a short table, so ``model.onnx`` stays within a few times the model's parameter bytes, and the
built matrices equal the float64 tables cast to float32."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
from conftest import make_s4d, make_s5
from onnx import TensorProto, helper

import aire_export as ax
from aire_export.graphs import lti_dense
from aire_export.graphs.builder import GraphBuilder
from aire_export.graphs.lti_bank import toeplitz_forms, toeplitz_operators
from aire_export.graphs.recurrence import chunk_matrices, chunk_operators
from aire_export.models import family_of

GRAPH_BYTES_PER_PARAMETER_BYTE = 4  # the target for the shipped models


def _run_constants(g: GraphBuilder, names: dict[str, str]) -> dict[str, np.ndarray]:
    g.outputs.extend(
        helper.make_tensor_value_info(v, TensorProto.FLOAT, None) for v in names.values()
    )
    session = ort.InferenceSession(
        g.model("test").SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return dict(zip(names, session.run(None, {}), strict=True))


def _modes(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random λ̄ with fast, slow and near-marginal (|λ̄| = 1 − 1e-7) modes."""
    radius = rng.choice([0.2, 0.9, 0.999, 1 - 1e-7], size=shape)
    return radius * np.exp(1j * rng.uniform(-np.pi, np.pi, size=shape))


@pytest.mark.parametrize("planar", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("shape", [(7,), (3, 5)])
@pytest.mark.parametrize("q", [4, 16])
def test_chunk_operators_built_in_the_graph_equal_the_float64_tables(reverse, shape, q, planar):
    lam = _modes(np.random.default_rng(q + len(shape)), shape)
    g = GraphBuilder("chunk", 17)
    M, G = chunk_operators(g, lam, q, reverse, planar)
    built = _run_constants(g, {"M": M, "G": G})
    M64, G64 = chunk_matrices(lam, q, reverse)  # rows and columns (step, re/im)
    if planar:  # (re/im, step)
        M64 = M64.reshape(*shape, q, 2, q, 2).swapaxes(-4, -3).swapaxes(-2, -1)
        M64, G64 = M64.reshape(*shape, 2 * q, 2 * q), G64.reshape(*shape, 2, q, 2).swapaxes(-2, -1)
        G64 = G64.reshape(*shape, 2, 2 * q)
    np.testing.assert_array_equal(built["M"], M64.astype(np.float32))
    np.testing.assert_array_equal(built["G"], G64.astype(np.float32))


def parameter_bytes(model) -> int:
    return 4 * sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("bidirectional", [False, True])
def test_chunked_s5_graph_is_at_most_four_times_its_parameter_bytes(tmp_path, bidirectional):
    model = make_s5(state_sizes=(32, 32), d_model=64, d_input=8, bidirectional=bidirectional)
    result = ax.export(model, tmp_path, scan="chunked", step=False)
    size = result.sequence.path.stat().st_size
    assert result.sequence.bytes == size
    assert size <= GRAPH_BYTES_PER_PARAMETER_BYTE * parameter_bytes(model)


def _bank_cores(bidirectional: bool):
    """The cores of a small S4D model, with a second (backward) readout when bidirectional
    (the SISO bank lowers both; no shipped S4D is bidirectional)."""
    model = make_s4d(seed=3, state_sizes=(8, 4), d_model=6)
    cores = [block.core for block in family_of(model).export_ir(model).blocks]
    if bidirectional:
        return [replace(core, c=(core.c[0], 0.5j * core.c[0][::-1])) for core in cores]
    return cores


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("q", [1, 5, 16])
def test_s4d_toeplitz_operators_built_in_the_graph_match_the_float64_forms(bidirectional, q):
    for core in _bank_cores(bidirectional):
        g = GraphBuilder("forms", 17)
        built = toeplitz_operators(g, core, q, "float32", "float32")
        got = _run_constants(g, {"T": built.T, "W_in": built.W_in, "W_out": built.W_out})
        want = toeplitz_forms(core, q)
        np.testing.assert_array_equal(got["T"], want.T.astype(np.float32))  # one entry each
        for key in ("W_in", "W_out"):  # λ̄^m as a product of two float32 powers, times b̄, c̄
            scale = np.abs(getattr(want, key)).max()
            np.testing.assert_allclose(got[key], getattr(want, key), rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("scan", ["scan", "toeplitz"])
def test_s4d_block_toeplitz_graph_is_at_most_four_times_its_parameter_bytes(tmp_path, scan):
    model = make_s4d(state_sizes=(32, 32), d_model=64, d_input=8)
    result = ax.export(model, tmp_path, scan=scan, step=False)
    assert result.sequence.bytes == result.sequence.path.stat().st_size
    assert result.sequence.bytes <= GRAPH_BYTES_PER_PARAMETER_BYTE * parameter_bytes(model)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("q", [1, 5, 16])
def test_s5_toeplitz_operators_built_in_the_graph_match_the_float64_forms(bidirectional, q):
    model = make_s5(seed=2, state_sizes=(8, 4), d_model=6, bidirectional=bidirectional)
    for block in family_of(model).export_ir(model).blocks:
        g = GraphBuilder("forms", 17)
        built = lti_dense.toeplitz_operators(g, block.core, q, "float32")
        got = _run_constants(g, {"T": built.T, "W_in": built.W_in, "W_out": built.W_out})
        want = lti_dense.toeplitz_forms(block.core, q)
        np.testing.assert_array_equal(got["T"], want.T.astype(np.float32))  # one block each
        for key in ("W_in", "W_out"):  # float32 λ̄^m times B̄, s·C̃
            scale = np.abs(getattr(want, key)).max()
            np.testing.assert_allclose(got[key], getattr(want, key), rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_s5_toeplitz_graph_stores_blocks_once(tmp_path, bidirectional):
    """The block-Toeplitz T (QH × QH) is built from 2Q H × H blocks: its graph is well under
    the Q²H² floats T alone would take."""
    model = make_s5(state_sizes=(32, 32), d_model=64, d_input=8, bidirectional=bidirectional)
    result = ax.export(model, tmp_path, scan="toeplitz", step=False)
    q, H = 16, 64  # the CPU rule's Toeplitz chunk (graphs/auto.py)
    assert result.sequence.bytes < 2 * 4 * (q * H) ** 2 / 4  # a quarter of the two layers' T
