"""Lowering of a dense (MIMO) diagonal core, :class:`ir.DenseLTI` (S5): sequence, step, Toeplitz.

    x_t = λ̄ ⊙ x_{t−1} + B̄ u_t,     y_t = Σ_d s·Re(C̃_d x^d_t) + D ⊙ u_t        (S5 eq. 3)

Layout: states as (B, P, L, 2) in sequence mode (time second to last, (re, im) last), (B, P, 2)
in the step graph. The input map is one MatMul u @ W_in (H, 2P), the readout one MatMul per
direction x @ W_out (2P, H) (graphs/forms.py). Chunked lowerings pad u (H wide) rather than
the states (2P wide) and slice y at the end. When 2P ≥ H the chunked scan runs with time
last instead, (B, 2P, L) and chunks (B, P, n, 2Q) (:func:`time_last`): the states move
between layouts as blocks of Q floats, never as (re, im) pairs.

Block-Toeplitz chunks of Q steps flatten a chunk of u as (j, h) and use

    T (QH, QH),  block [(j, ·), (k, ·)] = K_fwd[k−j]ᵀ (k ≥ j) + K_bwd[j−k]ᵀ (j ≥ k) + diag(D)
    K_m = s·Re(C̃ diag(λ̄^m) B̄)  (H × H, the Markov parameters)

plus the chunk-boundary maps W_in (QH, 2P·dirs) and W_out (2P·dirs, QH) of graphs/forms.py,
all three built in the graph from the 2Q Markov blocks and the powers λ̄^m
(:func:`toeplitz_operators`).
"""

from __future__ import annotations

import numpy as np

from aire_export import ir
from aire_export.graphs.builder import GraphBuilder
from aire_export.graphs.forms import (
    ToeplitzForms,
    boundary_exponents,
    input_matrix,
    interleave,
    output_matrix,
    pairs,
    planar,
    real_forms,
    toeplitz_index,
)
from aire_export.graphs.lowering import (
    CoreLowering,
    LayerLowering,
    entering_states,
    recurrence_states,
)
from aire_export.graphs.recurrence import (
    RECURRENCE_DTYPE,
    factored_frame_fits,
    factored_frame_recurrence,
    frame_recurrence,
    pad_time,
    planar_chunked_recurrence,
    step_states,
)

F32 = RECURRENCE_DTYPE


def markov(core: ir.DenseLTI, length: int, direction: int) -> np.ndarray:
    """(length, H_out, H_in) K_m = s·Re(C̃ diag(λ̄^m) B̄)."""
    powers = core.lam[None, :] ** np.arange(length)[:, None]  # (m, P)
    C = core.C[direction]
    weighted = (C[None] * powers[:, None, :]).reshape(-1, core.P)  # (m·H, P): C diag(λ^m)
    K = (weighted @ core.B).reshape(length, C.shape[0], -1)  # one 2-D GEMM
    return core.scale * K.real


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


def lag_table(core: ir.DenseLTI, q: int) -> np.ndarray:
    """(2q, H, H) float64 [K_fwd[0]ᵀ + K_bwd[0]ᵀ + diag(D), K_fwd[1..q−1]ᵀ, K_bwd[1..q−1]ᵀ, 0]
    (no K_bwd on a forward core): every block of :func:`_block_toeplitz`, sums included."""
    kernels = [markov(core, q, d).transpose(0, 2, 1) for d in range(len(core.C))]
    diagonal = sum(K[0] for K in kernels) + np.diag(core.D)
    backward = kernels[1][1:] if len(kernels) == 2 else np.zeros((q - 1, core.H, core.H))
    zero = np.zeros((1, core.H, core.H))
    return np.concatenate([diagonal[None], kernels[0][1:], backward, zero], axis=0)


def toeplitz_operators(g: GraphBuilder, core: ir.DenseLTI, q: int, compute: str) -> ToeplitzForms:
    """The :func:`toeplitz_forms` of ``core`` built in the graph (names, not arrays), in
    ``compute``: T by one Gather of blocks from :func:`lag_table` (2q H × H blocks stored
    instead of q², equal to the float64 T cast, bit for bit); W_in, W_out as products of the
    float32 λ̄^m and of B̄, s·C̃ (4Pq·dirs + 2PH·(1 + dirs) floats instead of 4PqH·dirs),
    within a few float32 roundings of the float64 forms. All inputs are initializers: the
    nodes fold when the graph is loaded."""
    H, P = core.H, core.P
    table = g.const(lag_table(core, q), compute, "markov")
    T = g.op("Gather", table, g.ints(toeplitz_index(q).ravel().tolist()), axis=0)
    T = g.reshape(g.transpose(g.reshape(T, [q, q, H, H]), [0, 2, 1, 3]), [q * H, q * H])
    in_pow, out_pow = boundary_exponents(q)
    b = g.const(pairs(core.B), F32, "B")  # (P, H, 2)
    w_in, w_out = [], []
    for d in range(len(core.C)):
        R = real_forms(g, core.lam[None, :] ** in_pow[d][:, None], "lam_in")  # (Q, P, 2, 2)
        z = g.matmul(b, R)  # (Q, P, H, 2): λ̄^(e_j) B̄ as (re, im)
        w_in.append(g.reshape(g.transpose(z, [0, 2, 1, 3]), [q * H, 2 * P]))  # rows (j, h)
        c = g.const(pairs(core.scale * core.C[d].T), F32, "C")  # (P, H, 2)
        R = real_forms(g, core.lam[None, :] ** out_pow[d][:, None], "lam_out", True)
        z = g.matmul(c, R)  # (Q, P, H, 2): [Re, −Im] of λ̄^(e_k) s·C̃
        w_out.append(g.reshape(g.transpose(z, [1, 3, 0, 2]), [2 * P, q * H]))  # cols (k, h)
    W_in = w_in[0] if len(w_in) == 1 else g.concat(w_in, 1)
    W_out = w_out[0] if len(w_out) == 1 else g.concat(w_out, 0)
    return ToeplitzForms(T, g.cast_if(W_in, F32, compute), g.cast_if(W_out, F32, compute))


def toeplitz_forms(core: ir.DenseLTI, q: int) -> ToeplitzForms:
    """Block-Toeplitz matrices of ``core`` for chunks of ``q`` steps."""
    dirs = range(len(core.C))
    in_pow, out_pow = boundary_exponents(q)
    H = core.H
    T = _block_toeplitz([markov(core, q, d) for d in dirs], core.D, q)
    w_in, w_out = [], []
    for d in dirs:
        z_in = core.lam[None, :, None] ** in_pow[d][:, None, None] * core.B[None]  # (Q, P, H)
        w = interleave(z_in.real, z_in.imag, axis=1)  # (Q, 2P, H)
        w_in.append(w.transpose(0, 2, 1).reshape(q * H, -1))  # rows (j, h)
        C = core.scale * core.C[d]  # (H, P)
        z_out = C.T[None] * core.lam[None, :, None] ** out_pow[d][:, None, None]  # (Q, P, H)
        w = interleave(z_out.real, -z_out.imag, axis=1)  # (Q, 2P, H)
        w_out.append(w.transpose(1, 0, 2).reshape(-1, q * H))  # cols (k, h)
    return ToeplitzForms(T, np.concatenate(w_in, 1), np.concatenate(w_out, 0))


def sequence(
    g: GraphBuilder,
    core: ir.DenseLTI,
    u: str,
    lowering: LayerLowering,
    compute: str,
    padded: bool = False,
) -> str:
    """y (B, L, H) in ``compute`` for u (B, L, H) in ``compute``."""
    if lowering.method == "toeplitz":
        return _toeplitz(g, core, u, lowering, compute, padded)  # D sits on T's diagonal
    feedthrough = g.mul(u, g.const(core.D, compute, "D"))
    return g.add(_state_space(g, core, u, lowering, compute, padded), feedthrough)


def _state_space(g, core: ir.DenseLTI, u: str, lowering: LayerLowering, compute, padded) -> str:
    """Input map → recurrence per direction → output map, for u (B, L, H) in ``compute``."""
    if lowering.method != "logdepth" and time_last(core):
        return _time_last(g, core, u, lowering, compute, padded)
    chunked = lowering.method in ("chunked", "scan")
    pad_here = chunked and not padded
    if pad_here:
        u, length = pad_time(g, u, 3, 1, lowering.chunk)
    v = _input_states(g, core, u, compute)  # (B, P, L, 2)
    y = None
    for d in range(len(core.C)):  # y = Σ_d s·Re(C_d x_d): one readout MatMul per direction
        with g.scope(f"scan{d}"):
            x = recurrence_states(g, v, core.lam, 4, lowering, d == 1, padded=chunked)
        y_d = _readout(g, core, x, d, compute)
        y = y_d if y is None else g.add(y, y_d)
    return g.slice(y, [0], length, [1]) if pad_here else y


def time_last(core: ir.DenseLTI) -> bool:
    """Whether the chunked scan runs with time last (:func:`_time_last`): when the states
    are at least as wide as the channels, 2P ≥ H. Measured (benchmarks/chunk_layout.py,
    benchmarks/RESULTS.md 'chunk layout'; whole models, 1 thread, against the pair layout):
    pathx (2P = 256, H = 128) 1.23-1.39x faster, pathfinder (2P = 256, H = 192) 1.02-1.06x;
    narrower states gain nothing from it (0.96-1.03x on pathx and pathfinder at 30 %,
    2P = 76, and listops, 2P = 16), so they keep the pair layout."""
    return 2 * core.P >= core.H


def _time_last(g, core: ir.DenseLTI, u: str, lowering: LayerLowering, compute, padded) -> str:
    """The chunked scan with time last, so that the 2P-wide tensors change layout only by
    Transposes of Q-float blocks:

        v = W_inᵀ uᵀ (B, 2P, L) → chunks (B, P, n, 2Q) (recurrence.planar_chunked_recurrence)
        y = Σ_d x_dᵀ W_out,d (B, L, H),  x_d (B, 2P, L) back from the chunk layout

    onnxruntime folds the transposes of u and of x_d into its MatMul kernels (FusedMatMul)."""
    q, P = lowering.chunk, core.P
    u_padded, length = (u, None) if padded else pad_time(g, u, 3, 1, q)
    u_t = g.transpose(u_padded, [0, 2, 1])  # (B, H, L)
    v = g.matmul(g.const(input_matrix(core.B).T, compute, "B"), u_t)  # (B, 2P, L), rows (p, c)
    v = g.reshape(g.cast_if(v, compute, F32), [0, P, 2, -1, q])
    chunks = g.reshape(g.transpose(v, [0, 1, 3, 2, 4]), [0, P, -1, 2 * q])  # (B, P, n, 2Q)
    y = None
    for d in range(len(core.C)):  # y = Σ_d s·Re(C_d x_d): one readout MatMul per direction
        with g.scope(f"scan{d}"):
            x = planar_chunked_recurrence(
                g, chunks, core.lam, 4, q, lowering.levels, d == 1, lowering.carry_by_scan
            )
        x = g.reshape(g.transpose(g.reshape(x, [0, P, -1, 2, q]), [0, 1, 3, 2, 4]), [0, 2 * P, -1])
        x_t = g.transpose(g.cast_if(x, F32, compute), [0, 2, 1])  # (B, L, 2P)
        y_d = g.matmul(x_t, g.const(output_matrix(core.C[d], core.scale), compute, "C"))
        y = y_d if y is None else g.add(y, y_d)
    return y if padded else g.slice(y, [0], length, [1])


def _input_states(g: GraphBuilder, core: ir.DenseLTI, u: str, compute: str) -> str:
    """v = B̄u for u (B, L, H) in ``compute``: u @ W_in (B, L, 2P) → (B, P, L, 2) float32."""
    v = g.matmul(u, g.const(input_matrix(core.B), compute, "B"))
    return g.transpose(g.reshape(g.cast_if(v, compute, F32), [0, 0, core.P, 2]), [0, 2, 1, 3])


def _readout(g: GraphBuilder, core: ir.DenseLTI, x: str, direction: int, compute: str) -> str:
    """s·Re(C̃_d x) (B, L, H) in ``compute`` for states x (B, P, L, 2) float32."""
    x = g.reshape(g.transpose(x, [0, 2, 1, 3]), [0, 0, -1])  # (B, L, 2P)
    C = output_matrix(core.C[direction], core.scale)
    return g.matmul(g.cast_if(x, F32, compute), g.const(C, compute, "C"))


def _toeplitz(g, core: ir.DenseLTI, u: str, lowering: LayerLowering, compute, padded) -> str:
    q = lowering.toeplitz_chunk
    forms = toeplitz_operators(g, core, q, compute)
    H, P = core.H, core.P
    chunks_in, length = (u, None) if padded else pad_time(g, u, 3, 1, q)
    chunks = g.reshape(chunks_in, [0, -1, q * H])  # (B, n, QH)
    y = g.matmul(chunks, forms.T)
    ends = g.cast_if(g.matmul(chunks, forms.W_in), compute, F32)
    entering = []
    for d in range(len(core.C)):
        e = g.slice(ends, [2 * P * d], [2 * P * (d + 1)], [2])  # (B, n, 2P)
        e = g.transpose(g.reshape(e, [0, 0, P, 2]), [0, 2, 1, 3])  # (B, P, n, 2)
        with g.scope(f"scan{d}"):
            h = entering_states(g, e, core.lam, 4, lowering, reverse=d == 1)
        entering.append(g.reshape(g.transpose(h, [0, 2, 1, 3]), [0, 0, -1]))
    h = entering[0] if len(entering) == 1 else g.concat(entering, axis=2)  # (B, n, 2P·dirs)
    y = g.add(y, g.matmul(g.cast_if(h, F32, compute), forms.W_out))
    y = g.reshape(y, [0, -1, H])
    return y if padded else g.slice(y, [0], length, [1])


def step(
    g: GraphBuilder, core: ir.DenseLTI, u: str, state: list[str], compute: str
) -> tuple[str, list[str]]:
    """x' = λ̄x + B̄u (B, P, 2); y = s·Re(C̃x') + D ⊙ u (B, H) in ``compute``."""
    (state,) = state
    feedthrough = g.mul(u, g.const(core.D, compute, "D"))
    P = core.P
    v = g.matmul(u, g.const(input_matrix(core.B), compute, "B"))  # (B, 2P)
    v = g.reshape(g.cast_if(v, compute, F32), [0, P, 2])
    with g.scope("scan"):
        new = step_states(g, state, core.lam, v, 3)  # (B, P, 2)
    flat = g.cast_if(g.reshape(new, [0, 2 * P]), F32, compute)
    y = g.matmul(flat, g.const(output_matrix(core.C[0], core.scale), compute, "C"))
    return g.add(y, feedthrough), [new]


def frame(
    g: GraphBuilder, core: ir.DenseLTI, u: str, state: list[str], compute: str, steps: int
) -> tuple[str, list[str]]:
    """K = ``steps`` steps from the entering state x_{−1} (B, P, 2), u (B, K, H) in ``compute``:

        x_k = λ̄^(k+1) x_{−1} + Σ_{j ≤ k} λ̄^(k−j) B̄u_j;   y_k = s·Re(C̃x_k) + D ⊙ u_k

    with the states in planes (B, K, 2, P) between an input map and a readout whose columns
    and rows are reordered to match (forms.planar), so nothing is transposed but the (B, P, 2)
    state, around recurrence.factored_frame_recurrence (elementwise scalings and one MatMul
    shared by all states); a layer with a mode outside its range (factored_frame_fits) takes
    :func:`_chunked_frame`. The state after the frame is x_{K−1} (B, P, 2)."""
    if not factored_frame_fits(core.lam, steps):
        return _chunked_frame(g, core, u, state, compute, steps)
    (state,) = state
    P = core.P
    feedthrough = g.mul(u, g.const(core.D, compute, "D"))
    v = g.matmul(u, g.const(planar(input_matrix(core.B), 1), compute, "B"))  # (B, K, 2P)
    v = g.reshape(g.cast_if(v, compute, F32), [0, 0, 2, P])
    with g.scope("scan"):
        start = g.transpose(state, [0, 2, 1])  # (B, 2, P)
        x, last = factored_frame_recurrence(g, v, start, core.lam, steps)
    x = g.cast_if(g.reshape(x, [0, 0, 2 * P]), F32, compute)
    C = planar(output_matrix(core.C[0], core.scale), 0)
    y = g.add(g.matmul(x, g.const(C, compute, "C")), feedthrough)
    return y, [g.transpose(last, [0, 2, 1])]


def _chunked_frame(
    g: GraphBuilder, core: ir.DenseLTI, u: str, state: list[str], compute: str, steps: int
) -> tuple[str, list[str]]:
    """:func:`frame` for any λ̄, as the sequence form's input and output maps around
    recurrence.frame_recurrence (two batched MatMuls: chunk-boundary states, then the states
    inside chunks of 8 steps; states (B, P, K, 2))."""
    (state,) = state
    feedthrough = g.mul(u, g.const(core.D, compute, "D"))
    v = _input_states(g, core, u, compute)  # (B, P, K, 2)
    with g.scope("scan"):
        x, new = frame_recurrence(g, v, state, core.lam, 4, steps)
    return g.add(_readout(g, core, x, 0, compute), feedthrough), [new]


def states(core: ir.DenseLTI) -> list[tuple[str, list[int | str]]]:
    return [("", ["batch", core.P, 2])]


def time_multiple(core: ir.DenseLTI, lowering: LayerLowering) -> int:
    """The length multiple the sequence form pads u to (1: none)."""
    if lowering.method == "logdepth":
        return 1
    return lowering.toeplitz_chunk if lowering.method == "toeplitz" else lowering.chunk


def modes(core: ir.DenseLTI) -> tuple[np.ndarray, np.ndarray]:
    """λ̄ (P,) and each mode's gain s·√H_in·‖B_i‖·Σ_d‖C_d,i‖ (inputs of magnitude ≤ 1 per
    channel), H_in the channels that reach the states (a bypassed channel's column of B̄ is
    zero: ir.with_bypass)."""
    b = np.linalg.norm(core.B, axis=1)
    c = sum(np.linalg.norm(C, axis=0) for C in core.C)
    reaching = np.count_nonzero(np.abs(core.B).sum(axis=0))
    return core.lam, core.scale * np.sqrt(reaching) * b * c


LOWERING = CoreLowering(sequence, step, states, time_multiple, modes, frame=frame)
