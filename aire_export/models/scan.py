"""Diagonal linear recurrences in PyTorch: a parallel chunked scan and a sequential reference.

Both compute, for complex λ (shape S) and inputs v (B, L, *S), with x_{-1} = 0:

    x_k = λ ⊙ x_{k-1} + v_k                                                   (S5 eq. 3, diagonal)

``reverse=True`` runs the recurrence from the end, x_k = λ ⊙ x_{k+1} + v_k (the backward
direction of a bidirectional layer, which includes the current input).

The chunked scan (DESIGN §4, lowering 1) splits time into chunks of Q steps. Inside a chunk the
states are one batched product with the lower-triangular decay matrix L[k, j] = λ^(k−j); the
chunk-end states are carried across chunks by the same scan with λ^Q (recursively); finally
λ^(k+1)·(carried state) is added. Only powers λ^0..λ^Q appear, computed in float64 and then
cast, so the scan is stable for |λ| ≤ 1 at any length (the cumsum shortcut λ^k Σ λ^-j v_j
would overflow for fast modes).
"""

from __future__ import annotations

import torch

DEFAULT_CHUNK = 64


def lam_powers(lam: torch.Tensor, n: int) -> torch.Tensor:
    """(n, *lam.shape) complex128: λ^0, λ^1, …, λ^(n−1), by cumulative product in float64."""
    lam64 = lam.to(torch.complex128)
    ones = torch.ones_like(lam64).unsqueeze(0)
    if n <= 1:
        return ones[:n]
    return torch.cat([ones, torch.cumprod(lam64.unsqueeze(0).expand(n - 1, *lam64.shape), 0)])


def scan_sequential(lam: torch.Tensor, v: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """Reference scan, one step at a time (slow; used by tests at float64)."""
    xs = torch.empty_like(v)
    x = torch.zeros_like(v[:, 0])
    steps = range(v.shape[1] - 1, -1, -1) if reverse else range(v.shape[1])
    for k in steps:
        x = lam * x + v[:, k]
        xs[:, k] = x
    return xs


def scan_chunked(
    lam: torch.Tensor, v: torch.Tensor, reverse: bool = False, chunk: int = DEFAULT_CHUNK
) -> torch.Tensor:
    """Parallel scan of x_k = λ ⊙ x_{k−1} + v_k over axis 1 of v (B, L, *S); λ has shape S."""
    if reverse:
        return scan_chunked(lam, v.flip(1), chunk=chunk).flip(1)
    batch, length = v.shape[:2]
    state_shape = v.shape[2:]
    if length == 0 or v[0, 0].numel() == 0:
        return v.clone()
    v = v.reshape(batch, length, -1)  # (B, L, P)
    lam = lam.expand(state_shape).reshape(-1)  # (P,)
    q = min(max(chunk, 2), length)  # chunks of ≥ 2 steps, so the carry recursion shrinks
    n_chunks = -(-length // q)
    pad = n_chunks * q - length
    if pad:
        v = torch.cat([v, v.new_zeros(batch, pad, v.shape[-1])], dim=1)
    v = v.reshape(batch, n_chunks, q, -1)  # (B, n, Q, P)

    powers = lam_powers(lam, q + 1)  # (Q+1, P) float64: λ^0..λ^Q
    k = torch.arange(q, device=v.device)
    lag = k[:, None] - k[None, :]  # (Q, Q): k − j
    decay = powers[lag.clamp(min=0)] * (lag >= 0)[..., None]  # (Q, Q, P): L[k, j] = λ^(k−j)
    x = torch.einsum("kjp,bcjp->bckp", decay.to(v.dtype), v)  # intra-chunk states (B, n, Q, P)

    if n_chunks > 1:
        ends = x[:, :, -1, :]  # (B, n, P) chunk-end states from a zero start
        carried = scan_chunked(powers[q], ends, chunk=chunk)  # h_c = λ^Q h_{c−1} + ends_c
        entering = torch.cat([torch.zeros_like(carried[:, :1]), carried[:, :-1]], dim=1)
        x = x + powers[1:].to(v.dtype)[None, None] * entering[:, :, None, :]  # + λ^(k+1) h_{c−1}
    return x.reshape(batch, n_chunks * q, -1)[:, :length].reshape(batch, length, *state_shape)
