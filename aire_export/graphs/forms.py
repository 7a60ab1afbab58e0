"""Real-arithmetic forms of a :class:`ModalSystem`, computed in float64 at export time.

A layer's complex system (λ̄ (P,), B̄ (P, H), C̃ (H, P), D (H,), scale s; see models/modal.py)
enters a graph only through the real matrices built here. States travel with a trailing
(re, im) axis, so a vector of P complex states flattens to 2P reals ordered (p, re/im).

    input map    v_t = B̄ u_t                 u (H,) @ W_in (H, 2P)
    output map   y_t = s·Re(C̃ x_t)           x (2P,) @ W_out (2P, H),
                 W_out[(p, re), h] = s·Re C̃[h, p],  W_out[(p, im), h] = −s·Im C̃[h, p]

SISO banks (S4D): when the states are H channels × N modes in channel-major order, the layer is
kept as (H, N) arrays (:class:`SisoBank`) so graphs never build dense (HN × H) matrices.

Block-Toeplitz chunks (DESIGN §4, lowering 4) use the Markov parameters
K_m = s·Re(C̃ diag(λ̄^m) B̄) (H × H, m ≥ 0), the chunk-boundary maps from inputs to the state
at a chunk's end (start, for the backward direction) and from the entering state to outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aire_export.models.modal import ModalSystem


def interleave(re: np.ndarray, im: np.ndarray, axis: int) -> np.ndarray:
    """Stack re/im right after ``axis`` and merge: (…, P, …) → (…, 2P, …) ordered (p, re/im)."""
    axis = axis % re.ndim
    stacked = np.stack([re, im], axis=axis + 1)
    shape = list(re.shape)
    shape[axis] *= 2
    return stacked.reshape(shape)


@dataclass(frozen=True, eq=False)
class SisoBank:
    """H independent SISO systems of N modes each: x_{hn} ← λ_{hn} x_{hn} + b_{hn} u_h."""

    lam: np.ndarray  # (H, N) complex
    b: np.ndarray  # (H, N) complex
    c: tuple[np.ndarray, ...]  # per direction (H, N) complex, the output scale s folded in
    D: np.ndarray  # (H,)

    @property
    def H(self) -> int:
        return int(self.lam.shape[0])

    @property
    def N(self) -> int:
        return int(self.lam.shape[1])

    def kernel(self, length: int, direction: int) -> np.ndarray:
        """(H, length) K_h[m] = Re Σ_n c_hn b_hn λ_hn^m (the scale is already in c)."""
        m = np.arange(length)
        powers = self.lam[..., None] ** m  # (H, N, length)
        return np.einsum("hn,hnm->hm", self.c[direction] * self.b, powers).real


def siso_bank(system: ModalSystem) -> SisoBank | None:
    """The (H, N) bank view when ``system`` is H channels × N modes in channel-major order."""
    if system.channels is None or system.P == 0 or system.P % system.H:
        return None
    H, N = system.H, system.P // system.H
    if not np.array_equal(system.channels, np.repeat(np.arange(H), N)):
        return None
    scale = system.output_scale
    return SisoBank(
        lam=system.lam.reshape(H, N),
        b=system.B[:, 0].reshape(H, N),
        c=tuple(scale * c[0].reshape(H, N) for c in system.C),
        D=system.D,
    )


def input_matrix(B: np.ndarray) -> np.ndarray:
    """W_in (H, 2P) with u @ W_in = B̄ u as interleaved (p, re/im) reals."""
    return interleave(B.real.T, B.imag.T, axis=1)


def output_matrix(C: np.ndarray, scale: float) -> np.ndarray:
    """W_out (2P, H) with x @ W_out = s·Re(C̃ x) for interleaved states x."""
    return interleave(scale * C.real.T, -scale * C.imag.T, axis=0)


def markov(system: ModalSystem, length: int, direction: int) -> np.ndarray:
    """(length, H_out, H_in) K_m = s·Re(C̃ diag(λ̄^m) B̄) of a dense (MIMO) system."""
    powers = system.lam[None, :] ** np.arange(length)[:, None]  # (m, P)
    C = system.dense_C(direction)
    weighted = (C[None] * powers[:, None, :]).reshape(-1, system.P)  # (m·H, P): C diag(λ^m)
    K = (weighted @ system.dense_B()).reshape(length, C.shape[0], -1)  # one 2-D GEMM
    return system.output_scale * K.real


@dataclass(frozen=True, eq=False)
class ToeplitzForms:
    """Matrices of the block-Toeplitz lowering for chunks of Q steps (row-vector convention).

    MIMO: u chunk flattened as (j, h) → ``T`` (QH, QH), ``W_in`` (QH, 2P·dirs),
    ``W_out`` (2P·dirs, QH). SISO: per channel ``T`` (H, Q, Q), ``W_in`` (H, Q, 2N·dirs),
    ``W_out`` (H, 2N·dirs, Q). Directions are concatenated forward first.
    """

    T: np.ndarray
    W_in: np.ndarray
    W_out: np.ndarray


def _toeplitz(kernels: list[np.ndarray], D: np.ndarray, q: int) -> np.ndarray:
    """SISO: (H, Q, Q) with [h, j, k] = K_fwd[h, k−j] (k ≥ j) + K_bwd[h, j−k] (j ≥ k) + D_h δ_jk
    for per-channel scalar kernels K (H, Q)."""
    j, k = np.meshgrid(np.arange(q), np.arange(q), indexing="ij")
    out = np.zeros((*kernels[0].shape[:-1], q, q))
    for direction, K in enumerate(kernels):
        lag = (k - j) if direction == 0 else (j - k)
        out += np.where(lag >= 0, K[..., np.maximum(lag, 0)], 0.0)
    return out + D[..., None, None] * np.eye(q)


def _block_toeplitz(kernels: list[np.ndarray], D: np.ndarray, q: int) -> np.ndarray:
    """(QH, QH) with block [(j, ·), (k, ·)] = K_fwd[k−j]ᵀ (k ≥ j) + K_bwd[j−k]ᵀ (j ≥ k) + diag(D)."""
    H = D.shape[0]
    out = np.zeros((q, H, q, H))
    for direction, K in enumerate(kernels):  # K (Q, H_out, H_in)
        for j in range(q):
            for k in range(q):
                lag = k - j if direction == 0 else j - k
                if lag >= 0:
                    out[j, :, k, :] += K[lag].T
    for j in range(q):
        out[j, :, j, :] += np.diag(D)
    return out.reshape(q * H, q * H)


def toeplitz_forms(system: ModalSystem, q: int) -> ToeplitzForms:
    """Block-Toeplitz matrices of ``system`` for chunks of ``q`` steps (dense or SISO bank).

    Chunk-boundary maps, per direction, with k, j = 0..Q−1 inside a chunk:
      forward:  state at the chunk end   e = Σ_j λ^(Q−1−j) B̄ u_j;  y_k += s·Re(C̃ λ^(k+1) h_{c−1})
      backward: state at the chunk start e = Σ_j λ^j B̄ u_j;        y_k += s·Re(C̃ λ^(Q−k) h_{c+1})
    """
    k = np.arange(q)
    in_pow = [q - 1 - k, k]  # exponent per input position j, per direction
    out_pow = [k + 1, q - k]  # exponent per output position k, per direction
    bank = siso_bank(system)
    dirs = range(len(system.C))
    if bank is not None:
        lam = bank.lam[..., None]  # (H, N, 1)
        T = _toeplitz([bank.kernel(q, d) for d in dirs], bank.D, q)
        w_in, w_out = [], []
        for d in dirs:
            z_in = bank.b[..., None] * lam ** in_pow[d]  # (H, N, Q)
            w_in.append(interleave(z_in.real, z_in.imag, axis=1).transpose(0, 2, 1))  # (H,Q,2N)
            z_out = bank.c[d][..., None] * lam ** out_pow[d]  # (H, N, Q)
            w_out.append(interleave(z_out.real, -z_out.imag, axis=1))  # (H, 2N, Q)
        return ToeplitzForms(T, np.concatenate(w_in, -1), np.concatenate(w_out, 1))
    H = system.H
    T = _block_toeplitz([markov(system, q, d) for d in dirs], system.D, q)
    B = system.dense_B()  # (P, H)
    w_in, w_out = [], []
    for d in dirs:
        z_in = system.lam[None, :, None] ** in_pow[d][:, None, None] * B[None]  # (Q, P, H)
        w = interleave(z_in.real, z_in.imag, axis=1)  # (Q, 2P, H)
        w_in.append(w.transpose(0, 2, 1).reshape(q * H, -1))  # rows (j, h)
        C = system.output_scale * system.dense_C(d)  # (H, P)
        z_out = C.T[None] * system.lam[None, :, None] ** out_pow[d][:, None, None]  # (Q, P, H)
        w = interleave(z_out.real, -z_out.imag, axis=1)  # (Q, 2P, H)
        w_out.append(w.transpose(1, 0, 2).reshape(-1, q * H))  # cols (k, h)
    return ToeplitzForms(T, np.concatenate(w_in, 1), np.concatenate(w_out, 0))
