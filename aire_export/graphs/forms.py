"""Real-arithmetic forms of complex systems, computed in float64 at export time.

A core's complex parameters enter a graph only through real matrices. States travel with a
trailing (re, im) axis, so a vector of P complex states flattens to 2P reals ordered
(p, re/im):

    input map    v_t = B̄ u_t                 u (H,) @ W_in (H, 2P)
    output map   y_t = s·Re(C̃ x_t)           x (2P,) @ W_out (2P, H),
                 W_out[(p, re), h] = s·Re C̃[h, p],  W_out[(p, im), h] = −s·Im C̃[h, p]

Block-Toeplitz chunks (DESIGN §4, lowering 4) of Q steps use the Markov parameters
K_m = s·Re(C̃ diag(λ̄^m) B̄) (m ≥ 0) and the chunk-boundary maps, per direction, with
k, j = 0..Q−1 inside a chunk:

    forward:  state at the chunk end   e = Σ_j λ^(Q−1−j) B̄ u_j;  y_k += s·Re(C̃ λ^(k+1) h_{c−1})
    backward: state at the chunk start e = Σ_j λ^j B̄ u_j;        y_k += s·Re(C̃ λ^(Q−k) h_{c+1})

Each core layout builds its own :class:`ToeplitzForms` (graphs/lti_dense.py, lti_bank.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aire_export.graphs.builder import GraphBuilder


def interleave(re: np.ndarray, im: np.ndarray, axis: int) -> np.ndarray:
    """Stack re/im right after ``axis`` and merge: (…, P, …) → (…, 2P, …) ordered (p, re/im)."""
    axis = axis % re.ndim
    stacked = np.stack([re, im], axis=axis + 1)
    shape = list(re.shape)
    shape[axis] *= 2
    return stacked.reshape(shape)


def pairs(z: np.ndarray) -> np.ndarray:
    """(…, 2) float64 [re, im] of a complex array."""
    return np.stack([z.real, z.imag], -1)


def planar(W: np.ndarray, axis: int) -> np.ndarray:
    """W with its interleaved (p, re/im) ``axis`` reordered as planes (re/im, p): 2P entries
    [re_0 … re_{P−1}, im_0 … im_{P−1}]."""
    W = np.moveaxis(W, axis, 0)
    W = W.reshape(-1, 2, *W.shape[1:]).swapaxes(0, 1).reshape(W.shape)
    return np.moveaxis(W, 0, axis)


def input_matrix(B: np.ndarray) -> np.ndarray:
    """W_in (H, 2P) with u @ W_in = B̄ u as interleaved (p, re/im) reals."""
    return interleave(B.real.T, B.imag.T, axis=1)


def output_matrix(C: np.ndarray, scale: float) -> np.ndarray:
    """W_out (2P, H) with x @ W_out = s·Re(C̃ x) for interleaved states x."""
    return interleave(scale * C.real.T, -scale * C.imag.T, axis=0)


def boundary_exponents(q: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per direction (forward, backward): the power of λ applied to input position j on its
    way to the chunk boundary, and to the entering state on its way to output position k."""
    k = np.arange(q)
    return [q - 1 - k, k], [k + 1, q - k]


@dataclass(frozen=True, eq=False)
class ToeplitzForms:
    """Matrices of the block-Toeplitz lowering for chunks of Q steps (row-vector convention).

    Dense: u chunk flattened as (j, h) → ``T`` (QH, QH), ``W_in`` (QH, 2P·dirs),
    ``W_out`` (2P·dirs, QH). SISO bank: per channel ``T`` (H, Q, Q), ``W_in`` (H, Q, 2N·dirs),
    ``W_out`` (H, 2N·dirs, Q). Directions are concatenated forward first. Arrays from
    ``toeplitz_forms``, graph tensor names from ``toeplitz_operators`` (built in the graph).
    """

    T: np.ndarray | str
    W_in: np.ndarray | str
    W_out: np.ndarray | str


def toeplitz_index(q: int) -> np.ndarray:
    """(q, q) positions of block (j, k) of a Toeplitz chunk in a table of 2q kernels ordered
    [lag 0 (both directions and D), forward lags 1..q−1, backward lags 1..q−1, zero]
    (lti_bank.kernel_table, lti_dense.lag_table): lag k − j > 0 forward, j − k > 0 backward
    (a zero on a forward core), the diagonal first."""
    j, k = np.meshgrid(np.arange(q), np.arange(q), indexing="ij")
    return np.where(k >= j, k - j, q - 1 + j - k)


REAL_FORM_INDEX = {False: [0, 1, 3, 0], True: [0, 3, 3, 2]}  # in [re, im, −re, −im]


def real_forms(g: GraphBuilder, z: np.ndarray, hint: str, conjugate_output: bool = False) -> str:
    """(…, 2, 2) float32 M with [Re p, Im p] @ M = [Re zp, Im zp] (builder.complex_right), or
    [Re zp, −Im zp] with ``conjugate_output``, for complex z (…): stored as its float32
    (re, im) pairs, the 2 × 2 forms by one Gather of [re, im, −re, −im] in the graph."""
    stored = g.const(pairs(z), "float32", hint)  # (…, 2)
    table = g.concat([stored, g.op("Neg", stored)], z.ndim)
    M = g.op("Gather", table, g.ints(REAL_FORM_INDEX[conjugate_output]), axis=z.ndim)
    return g.reshape(M, [*z.shape, 2, 2])
