"""Lowering of a SISO bank, :class:`ir.SisoBankLTI` (S4D): sequence, step, Toeplitz.

    x_{hn,t} = λ̄_hn x_{hn,t−1} + b̄_hn u_{h,t},     y_{h,t} = Σ_d Re Σ_n c^d_hn x^d_{hn,t} + D_h u_{h,t}

Layout: states as (B, H, N, L, 2) in sequence mode, (B, H, N, 2) in the step graph, so no
dense (HN × H) matrix is ever built: the input map is a broadcast product with b̄, the readout
a product with c̄ and a sum over n.

Block-Toeplitz chunks of Q steps act per channel on (B, H, n, Q) chunks with

    T (H, Q, Q),  [h, j, k] = K_fwd[h, k−j] (k ≥ j) + K_bwd[h, j−k] (j ≥ k) + D_h δ_jk,
    K_h[m] = Re Σ_n c_hn b̄_hn λ̄_hn^m      (the channel's scalar kernel)

and ``scan`` on a bank means Toeplitz chunks with the carry across chunks in one Scan
(``LayerLowering.carry_by_scan``): a bank's H·N states make per-step states the costly part.
"""

from __future__ import annotations

import numpy as np

from aire_export import ir
from aire_export.graphs.builder import GraphBuilder
from aire_export.graphs.forms import (
    ToeplitzForms,
    boundary_exponents,
    interleave,
    pairs,
    real_forms,
    toeplitz_index,
)
from aire_export.graphs.lowering import (
    CoreLowering,
    LayerLowering,
    entering_states,
    recurrence_states,
)
from aire_export.graphs.recurrence import RECURRENCE_DTYPE, pad_time, step_states

F32 = RECURRENCE_DTYPE
TOEPLITZ_METHODS = ("toeplitz", "scan")  # lowered as block-Toeplitz chunks on a bank


def kernel(core: ir.SisoBankLTI, length: int, direction: int) -> np.ndarray:
    """(H, length) K_h[m] = Re Σ_n c_hn b̄_hn λ̄_hn^m (the output scale is already in c)."""
    m = np.arange(length)
    powers = core.lam[..., None] ** m  # (H, N, length)
    return np.einsum("hn,hnm->hm", core.c[direction] * core.b, powers).real


def _toeplitz(kernels: list[np.ndarray], D: np.ndarray, q: int) -> np.ndarray:
    """(H, Q, Q) with [h, j, k] = K_fwd[h, k−j] (k ≥ j) + K_bwd[h, j−k] (j ≥ k) + D_h δ_jk
    for per-channel scalar kernels K (H, Q)."""
    j, k = np.meshgrid(np.arange(q), np.arange(q), indexing="ij")
    out = np.zeros((*kernels[0].shape[:-1], q, q))
    for direction, K in enumerate(kernels):
        lag = (k - j) if direction == 0 else (j - k)
        out += np.where(lag >= 0, K[..., np.maximum(lag, 0)], 0.0)
    return out + D[..., None, None] * np.eye(q)


def toeplitz_forms(core: ir.SisoBankLTI, q: int) -> ToeplitzForms:
    """Per-channel block-Toeplitz matrices of ``core`` for chunks of ``q`` steps."""
    dirs = range(len(core.c))
    in_pow, out_pow = boundary_exponents(q)
    lam = core.lam[..., None]  # (H, N, 1)
    T = _toeplitz([kernel(core, q, d) for d in dirs], core.D, q)
    w_in, w_out = [], []
    for d in dirs:
        z_in = core.b[..., None] * lam ** in_pow[d]  # (H, N, Q)
        w_in.append(interleave(z_in.real, z_in.imag, axis=1).transpose(0, 2, 1))  # (H, Q, 2N)
        z_out = core.c[d][..., None] * lam ** out_pow[d]  # (H, N, Q)
        w_out.append(interleave(z_out.real, -z_out.imag, axis=1))  # (H, 2N, Q)
    return ToeplitzForms(T, np.concatenate(w_in, -1), np.concatenate(w_out, 1))


def kernel_table(core: ir.SisoBankLTI, q: int) -> np.ndarray:
    """(H, 2q) float64 [K_fwd[0] + K_bwd[0] + D, K_fwd[1..q−1], K_bwd[1..q−1], 0] (no K_bwd
    on a forward core): every entry of :func:`_toeplitz` is one of these, sums included."""
    kernels = [kernel(core, q, d) for d in range(len(core.c))]
    diagonal = sum(K[:, 0] for K in kernels) + core.D
    backward = kernels[1][:, 1:] if len(kernels) == 2 else np.zeros((core.H, q - 1))
    zero = np.zeros((core.H, 1))
    return np.concatenate([diagonal[:, None], kernels[0][:, 1:], backward, zero], axis=1)


def binary_powers(lam: np.ndarray, count: int) -> np.ndarray:
    """(…, bits) complex float64 λ^(2^i), i = 0..bits−1, 2^bits ≥ count: λ^m for m < count is
    the product of the factors of m's binary digits (at most bits − 1 float32 products)."""
    bits = max(int(np.ceil(np.log2(count))), 1)
    return np.asarray(lam, dtype=complex)[..., None] ** (2 ** np.arange(bits))


def graph_powers(g: GraphBuilder, lam: np.ndarray, count: int) -> str:
    """[Re λ^m, Im λ^m], m = 0..2^bits − 1 ≥ count − 1, float32 (…, 2^bits, 2), built in the
    graph from the float32 λ^(2^i) (:func:`binary_powers`) by doubling: [λ^0 … λ^(2^i − 1)]
    is extended by itself times λ^(2^i), one MatMul by the real form R(λ^(2^i)) per digit."""
    factors = binary_powers(lam, count)
    lead, bits = factors.ndim - 1, factors.shape[-1]
    R = real_forms(g, factors, "lam_2i")  # (…, bits, 2, 2)
    steps = [g.op("Gather", R, g.ints(i), axis=lead) for i in range(bits)]  # (…, 2, 2) each
    row = g.slice(steps[0], [0], [1], [lead])  # (…, 1, 2): its shape for λ^0 = [1, 0]
    x = g.add(g.mul(row, g.const(0.0, F32, "zero")), g.const([1.0, 0.0], F32, "one"))
    for step in steps:
        x = g.concat([x, g.matmul(x, step)], lead)
    return x


def toeplitz_operators(
    g: GraphBuilder, core: ir.SisoBankLTI, q: int, compute: str, weights: str
) -> ToeplitzForms:
    """The :func:`toeplitz_forms` of ``core`` built in the graph (names, not arrays): T in
    ``compute`` by one Gather from :func:`kernel_table` (equal to the float64 T cast, bit for
    bit); W_in, W_out in ``weights`` from b̄, c̄ and λ̄^m in float32 (:func:`graph_powers`:
    2⌈log2(Q + 1)⌉ floats per state instead of 4Q·dirs), within a few float32 roundings of
    the float64 forms (measured: benchmarks/RESULTS.md, graph size). All inputs are
    initializers: the nodes fold when the graph is loaded, at a cost in session creation."""
    H, N = core.H, core.N
    table = g.const(kernel_table(core, q), compute, "kernel")
    T = g.op("Gather", table, g.ints(toeplitz_index(q).ravel().tolist()), axis=1)
    T = g.reshape(T, [H, q, q])
    powers = graph_powers(g, core.lam, q + 1)  # [Re, Im] λ̄^m (H, N, ≥ q + 1, 2), m = 0..
    in_pow, out_pow = boundary_exponents(q)
    w_in, w_out = [], []
    for d in range(len(core.c)):
        p_in = g.op("Gather", powers, g.ints(in_pow[d].tolist()), axis=2)  # (H, N, Q, 2)
        z = g.matmul(p_in, real_forms(g, core.b, "b"))
        w_in.append(g.reshape(g.transpose(z, [0, 2, 1, 3]), [H, q, 2 * N]))  # (H, Q, 2N)
        p_out = g.op("Gather", powers, g.ints(out_pow[d].tolist()), axis=2)
        z = g.matmul(p_out, real_forms(g, core.c[d], "c", conjugate_output=True))
        w_out.append(g.reshape(g.transpose(z, [0, 1, 3, 2]), [H, 2 * N, q]))  # (H, 2N, Q)
    W_in = w_in[0] if len(w_in) == 1 else g.concat(w_in, -1)
    W_out = w_out[0] if len(w_out) == 1 else g.concat(w_out, 1)
    return ToeplitzForms(T, g.cast_if(W_in, F32, weights), g.cast_if(W_out, F32, weights))


def sequence(
    g: GraphBuilder,
    core: ir.SisoBankLTI,
    u: str,
    lowering: LayerLowering,
    compute: str,
    padded: bool = False,
) -> str:
    """y (B, L, H) in ``compute`` for u (B, L, H) in ``compute``."""
    if lowering.method in TOEPLITZ_METHODS:
        return _toeplitz_chunks(g, core, u, lowering, compute, padded)  # D on T's diagonal
    feedthrough = g.mul(u, g.const(core.D, compute, "D"))
    return g.add(_state_space(g, core, u, lowering, compute, padded), feedthrough)


def _state_space(g, core: ir.SisoBankLTI, u, lowering: LayerLowering, compute, padded) -> str:
    # v[b, h, n, t] = b_hn u[b, t, h]:  (B, H, 1, L, 1) ⊙ (H, N, 1, 2) → (B, H, N, L, 2)
    u_t = g.unsqueeze(g.transpose(g.cast_if(u, compute, F32), [0, 2, 1]), [2, 4])
    v = g.mul(u_t, g.const(pairs(core.b)[:, :, None, :], F32, "b"))
    terms = []
    for d in range(len(core.c)):
        with g.scope(f"scan{d}"):
            x = recurrence_states(g, v, core.lam, 5, lowering, reverse=d == 1, padded=padded)
        c = pairs(np.conj(core.c[d]))  # y = Re(c x) = c_re x_re − c_im x_im
        terms.append(g.mul(x, g.const(c[:, :, None, :], F32, "c")))
    total = terms[0] if len(terms) == 1 else g.add(*terms)
    y = g.transpose(g.reduce("ReduceSum", total, [2, 4]), [0, 2, 1])  # (B, L, H)
    return g.cast_if(y, F32, compute)


def _toeplitz_chunks(g, core: ir.SisoBankLTI, u, lowering: LayerLowering, compute, padded) -> str:
    q = lowering.toeplitz_chunk
    forms = toeplitz_operators(g, core, q, compute, compute)
    H, N = core.H, core.N
    chunks_in, length = (u, None) if padded else pad_time(g, u, 3, 1, q)
    chunks = g.transpose(g.reshape(chunks_in, [0, -1, q, H]), [0, 3, 1, 2])  # (B, H, n, Q)
    y = g.matmul(chunks, forms.T)  # (B, H, n, Q)
    ends = g.cast_if(g.matmul(chunks, forms.W_in), compute, F32)
    entering = []
    for d in range(len(core.c)):
        e = g.slice(ends, [2 * N * d], [2 * N * (d + 1)], [3])  # (B, H, n, 2N)
        e = g.transpose(g.reshape(e, [0, 0, 0, N, 2]), [0, 1, 3, 2, 4])  # (B, H, N, n, 2)
        with g.scope(f"scan{d}"):
            h = entering_states(g, e, core.lam, 5, lowering, reverse=d == 1)
        entering.append(g.reshape(g.transpose(h, [0, 1, 3, 2, 4]), [0, 0, 0, -1]))
    h = entering[0] if len(entering) == 1 else g.concat(entering, axis=3)  # (B, H, n, 2N·dirs)
    y = g.add(y, g.matmul(g.cast_if(h, F32, compute), forms.W_out))
    y = g.reshape(g.transpose(y, [0, 2, 3, 1]), [0, -1, H])  # (B, nQ, H)
    return y if padded else g.slice(y, [0], length, [1])


def step(
    g: GraphBuilder, core: ir.SisoBankLTI, u: str, state: list[str], compute: str
) -> tuple[str, list[str]]:
    """x' = λ̄ ⊙ x + b̄ u (B, H, N, 2); y = Σ_n Re(c x') + D ⊙ u (B, H) in ``compute``."""
    (state,) = state
    feedthrough = g.mul(u, g.const(core.D, compute, "D"))
    u32 = g.unsqueeze(g.cast_if(u, compute, F32), [2, 3])  # (B, H, 1, 1)
    with g.scope("scan"):
        new = step_states(g, state, core.lam, g.mul(u32, g.const(pairs(core.b), F32, "b")), 4)
    c = np.stack([core.c[0].real, -core.c[0].imag], -1)  # Re(c x) = c_re x_re − c_im x_im
    y = g.reduce("ReduceSum", g.mul(new, g.const(c, F32, "c")), [2, 3])
    return g.add(g.cast_if(y, F32, compute), feedthrough), [new]


def frame(
    g: GraphBuilder, core: ir.SisoBankLTI, u: str, state: list[str], compute: str, steps: int
) -> tuple[str, list[str]]:
    """K = ``steps`` steps from the entering state x_{−1} (B, H, N, 2), u (B, K, H) in
    ``compute``, by the block-Toeplitz forms of one chunk of K steps (``toeplitz_forms``):

        y_k = Σ_j T[h, j, k] u_j + Re Σ_n c_hn λ̄_hn^(k+1) x_{−1}     (u_j @ T, x_{−1} @ W_out)
        x_{K−1} = λ̄^K ⊙ x_{−1} + e,   e = Σ_j λ̄^(K−1−j) b̄ u_j       (e = u @ W_in)

    so no per-step state is materialized; the carry by λ̄^K is elementwise, split hi + lo
    (recurrence.step_states). T holds D on its diagonal."""
    (state,) = state
    forms = toeplitz_operators(g, core, steps, compute, F32)
    u_t = g.unsqueeze(g.transpose(u, [0, 2, 1]), [2])  # (B, H, 1, K)
    y = g.matmul(u_t, forms.T)  # (B, H, 1, K)
    u32 = g.cast_if(u_t, compute, F32)
    with g.scope("scan"):
        e = g.matmul(u32, forms.W_in)  # (B, H, 1, 2N)
        flat = g.reshape(state, [0, 0, 1, -1])  # (B, H, 1, 2N), ordered (n, re/im)
        entering = g.matmul(flat, forms.W_out)  # (B, H, 1, K)
        new = step_states(g, state, core.lam**steps, g.reshape(e, [0, 0, core.N, 2]), 4)
    y = g.add(y, g.cast_if(entering, F32, compute))
    return g.transpose(g.squeeze(y, [2]), [0, 2, 1]), [new]


def states(core: ir.SisoBankLTI) -> list[tuple[str, list[int | str]]]:
    return [("", ["batch", core.H, core.N, 2])]


def time_multiple(core: ir.SisoBankLTI, lowering: LayerLowering) -> int:
    """The length multiple the sequence form pads u to (1: none)."""
    if lowering.method == "logdepth":
        return 1
    return lowering.toeplitz_chunk if lowering.method in TOEPLITZ_METHODS else lowering.chunk


def modes(core: ir.SisoBankLTI) -> tuple[np.ndarray, np.ndarray]:
    """λ̄ and each mode's gain |b̄_hn|·Σ_d|c^d_hn| (flattened channel-major)."""
    return core.lam.ravel(), (np.abs(core.b) * sum(np.abs(c) for c in core.c)).ravel()


LOWERING = CoreLowering(sequence, step, states, time_multiple, modes, frame=frame)
