"""The parallel chunked scan equals the sequential recurrence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import rel_err
from hypothesis import given, settings
from hypothesis import strategies as st

from aire_export.models.scan import lam_powers, scan_chunked, scan_sequential


def _modes(P: int, seed: int) -> torch.Tensor:
    """A mix of slow (|λ| ≈ 0.9995) and fast modes, like trained S5 layers."""
    g = torch.Generator().manual_seed(seed)
    decay = torch.cat([torch.rand(P // 2, generator=g) * 1e-3, torch.rand(P - P // 2, generator=g)])
    return torch.exp(torch.complex(-decay, 3 * torch.randn(P, generator=g))).to(torch.complex64)


@pytest.mark.parametrize("length", [1, 7, 1024, 16384])
@pytest.mark.parametrize("reverse", [False, True])
def test_chunked_scan_float32_matches_float64_sequential(length, reverse):
    lam = _modes(12, seed=length)
    g = torch.Generator().manual_seed(1)
    v = torch.complex(
        torch.randn(2, length, 12, generator=g), torch.randn(2, length, 12, generator=g)
    )
    ref = scan_sequential(lam.to(torch.complex128), v.to(torch.complex128), reverse=reverse)
    out = scan_chunked(lam, v, reverse=reverse)
    assert out.dtype == torch.complex64
    assert rel_err(torch.view_as_real(out), torch.view_as_real(ref)) <= 1e-5


@settings(max_examples=60, deadline=None)
@given(
    length=st.integers(1, 300),
    chunk=st.integers(1, 70),
    P=st.integers(1, 5),
    reverse=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_chunked_scan_is_exact_for_any_chunking(length, chunk, P, reverse, seed):
    rng = np.random.default_rng(seed)
    lam = torch.from_numpy(rng.uniform(0, 1, P) * np.exp(1j * rng.uniform(-np.pi, np.pi, P)))
    v = torch.from_numpy(
        rng.standard_normal((2, length, P)) + 1j * rng.standard_normal((2, length, P))
    )
    ref = scan_sequential(lam, v, reverse=reverse)
    out = scan_chunked(lam, v, reverse=reverse, chunk=chunk)
    assert torch.allclose(out, ref, rtol=1e-10, atol=1e-10)


def test_chunked_scan_handles_state_shapes_and_empty_states():
    lam = _modes(6, 0).reshape(2, 3).to(torch.complex128)
    v = torch.randn(1, 50, 2, 3, dtype=torch.complex128)
    ref = scan_sequential(lam, v)
    assert torch.allclose(scan_chunked(lam, v, chunk=8), ref)
    empty = torch.zeros(1, 5, 0, dtype=torch.complex64)
    assert scan_chunked(torch.zeros(0, dtype=torch.complex64), empty).shape == (1, 5, 0)


def test_lam_powers_are_float64_powers():
    lam = _modes(5, 2)
    pw = lam_powers(lam, 70)
    assert pw.dtype == torch.complex128
    expected = lam.to(torch.complex128)[None] ** torch.arange(70, dtype=torch.float64)[:, None]
    assert torch.allclose(pw, expected, rtol=1e-12)


def test_chunked_scan_backpropagates():
    lam = _modes(3, 1).clone().requires_grad_(True)
    v = torch.randn(1, 100, 3, dtype=torch.complex64, requires_grad=True)
    scan_chunked(lam, v, chunk=16).abs().sum().backward()
    assert lam.grad is not None and torch.isfinite(torch.view_as_real(lam.grad)).all()
    assert v.grad is not None and torch.isfinite(torch.view_as_real(v.grad)).all()
