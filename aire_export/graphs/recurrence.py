"""Diagonal linear recurrences in real arithmetic, as ONNX subgraphs (DESIGN §4, lowerings 1–3).

Every function here lowers, for complex λ (shape S) and inputs v, with x_{-1} = 0,

    forward:   x_t = λ ⊙ x_{t−1} + v_t              (S5 eq. 3, diagonal A)
    reverse:   x_t = λ ⊙ x_{t+1} + v_t              (backward direction of a bidirectional layer)

on the layout ``(*lead, T, 2)``: time is the second-to-last axis and the last axis holds
(re, im). λ broadcasts against ``lead`` (S5: lead (B, P), λ (P,); S4D: lead (B, H, N),
λ (H, N)). A complex product z·w is the row-vector product [re w, im w] @ R(z) with the 2×2
block R(z) = [[Re z, Im z], [−Im z, Re z]] (:func:`complex_right`), so one MatMul does it.

All powers λ^m are computed in float64 at export time and only powers with m ≥ 0 appear,
so nothing overflows for fast modes (|λ| ≪ 1) at any length; the one exception, the
factored frame (:func:`factored_frame_recurrence`), is used only where its negative powers
stay within :data:`FACTOR_RANGE`.
"""

from __future__ import annotations

import numpy as np

from aire_export.graphs.builder import INT64_MAX, GraphBuilder, complex_right

RECURRENCE_DTYPE = "float32"  # λ and the state stay in float32 at every precision (DESIGN §4)


def shift_time(g: GraphBuilder, x: str, rank: int, d: int, reverse: bool) -> str:
    """x shifted by d steps along the time axis (rank−2), zeros entering.

    forward: out_t = x_{t−d};  reverse: out_t = x_{t+d}.  Pad then Slice, so d ≥ T gives zeros.
    """
    time = rank - 2
    pads = [0] * (2 * rank)
    pads[time + (rank if reverse else 0)] = d
    padded = g.pad(x, pads)
    if reverse:
        return g.slice(padded, [d], [INT64_MAX], [time])
    return g.slice(padded, [0], [-d], [time])


def pad_time(g: GraphBuilder, x: str, rank: int, axis: int, q: int) -> tuple[str, str]:
    """x zero-padded at the end of ``axis`` to a multiple of q; returns (padded, length (1,))."""
    length = g.shape(x, axis, axis + 1)
    pad = g.op("Mod", g.sub(g.ints([q]), g.op("Mod", length, g.ints([q]))), g.ints([q]))
    pads = g.concat([g.ints([0] * (rank + axis)), pad, g.ints([0] * (rank - axis - 1))], axis=0)
    return g.pad(x, pads), length


def chunk_matrices(lam: np.ndarray, q: int, reverse: bool) -> tuple[np.ndarray, np.ndarray]:
    """Real forms of the intra-chunk decay matrix and of the entering-state map, float64.

    forward, for a chunk of q steps from a zero start:  x_k = Σ_{j ≤ k} λ^(k−j) v_j,
    plus the state entering from the previous chunk:     x_k += λ^(k+1) h_{c−1}.
    reverse:  x_k = Σ_{j ≥ k} λ^(j−k) v_j,  x_k += λ^(q−k) h_{c+1}.

    Returns M (S…, 2q, 2q) acting on a chunk flattened as [(j, re/im)] row vectors, and
    G (S…, 2, 2q) acting on the entering state [re, im].
    """
    lam = np.asarray(lam, dtype=complex)
    k = np.arange(q)
    lag = k[None, :] - k[:, None]  # [j, k] = k − j
    if reverse:
        lag = -lag
    powers = np.where(lag >= 0, lam[..., None, None] ** np.maximum(lag, 0), 0)  # (S…, q, q)
    R = complex_right(powers)  # (S…, j, k, c_in, c_out)
    lead = lam.shape
    M = np.moveaxis(R, -2, -3).reshape(*lead, 2 * q, 2 * q)  # (S…, (j, c_in), (k, c_out))
    entering = lam[..., None] ** ((q - k) if reverse else (k + 1))  # (S…, q)
    G = np.moveaxis(complex_right(entering), -2, -3)  # (S…, c_in, k, c_out)
    return M, G.reshape(*lead, 2, 2 * q)


def power_table(lam: np.ndarray, count: int) -> np.ndarray:
    """(S…, 3·count + 1) float64 [Re λ^m, Im λ^m, −Im λ^m (m = 0..count−1), 0]: every entry
    of the real forms of :func:`chunk_matrices` is one of these (0 for lags below zero)."""
    powers = np.asarray(lam, dtype=complex)[..., None] ** np.arange(count)
    zero = np.zeros((*powers.shape[:-1], 1))
    return np.concatenate([powers.real, powers.imag, -powers.imag, zero], axis=-1)


def chunk_indices(q: int, reverse: bool, planar: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Positions in :func:`power_table` (count = q + 1) of the entries of M (2q, 2q) and
    G (2, 2q) of :func:`chunk_matrices`: R(z) = [[Re z, Im z], [−Im z, Re z]] per block.
    ``planar``: rows and columns ordered (re/im, step) instead of (step, re/im), the chunk
    layout of :func:`planar_chunked_recurrence`."""
    count = q + 1
    k = np.arange(q)
    block = np.array([[0, 1], [2, 0]]) * count  # offsets of Re, Im, −Im in the table

    def blocks(lag: np.ndarray) -> np.ndarray:  # lag (rows, q) → (rows, 2, q, 2) indices
        index = block[None, :, None, :] + lag[:, None, :, None]
        return np.where(lag[:, None, :, None] >= 0, index, 3 * count)  # the zero entry

    lag = k[None, :] - k[:, None]  # [j, k] = k − j
    M = blocks(-lag if reverse else lag)  # (j, c_in, k, c_out)
    G = blocks(((q - k) if reverse else (k + 1))[None, :])[0]  # (c_in, k, c_out)
    if planar:
        M = M.transpose(1, 0, 3, 2)  # (c_in, j, c_out, k)
        G = G.transpose(0, 2, 1)  # (c_in, c_out, k)
    return M.reshape(2 * q, 2 * q), G.reshape(2, 2 * q)


def chunk_operators(
    g: GraphBuilder, lam: np.ndarray, q: int, reverse: bool, planar: bool = False
) -> tuple[str, str]:
    """M (S…, 2q, 2q) and G (S…, 2, 2q) of :func:`chunk_matrices` (``planar``: ordered as
    :func:`chunk_indices` says), float32, built in the graph
    by two Gathers from the float32 powers λ^m, m = 0..q (:func:`power_table`, 3q + 4 floats
    per state instead of 4q² + 4q), so they equal the float64 tables cast to float32 exactly.
    All inputs are initializers: onnxruntime and TensorRT fold the nodes when they load the
    graph (measured, benchmarks/RESULTS.md graph size)."""
    table = g.const(power_table(lam, q + 1), RECURRENCE_DTYPE, "powers")
    lead = list(np.shape(lam))
    axis = len(lead)
    M_index, G_index = chunk_indices(q, reverse, planar)
    M = g.op("Gather", table, g.ints(M_index.ravel().tolist()), axis=axis)
    G = g.op("Gather", table, g.ints(G_index.ravel().tolist()), axis=axis)
    return g.reshape(M, [*lead, 2 * q, 2 * q]), g.reshape(G, [*lead, 2, 2 * q])


def chunked_recurrence(
    g: GraphBuilder,
    v: str,
    lam: np.ndarray,
    rank: int,
    chunk: int,
    levels: int,
    reverse: bool,
    carry_scan: bool = False,
    padded: bool = False,
) -> str:
    """Chunked scan (DESIGN §4 lowering 1) over the time axis of v (*lead, T, 2).

    Time is zero-padded to a multiple of ``chunk`` (padding at the end changes no state at
    the valid steps, in either direction), the states inside every chunk are one batched
    MatMul with the decay matrix, and the chunk-end states are carried across chunks by the
    same scheme on λ^Q, recursively: ``levels`` levels cover T ≤ chunk**levels. With
    ``carry_scan`` the chunk-end states are carried by an ONNX Scan instead (any length).
    ``padded``: T is already a multiple of ``chunk`` (the caller padded a smaller tensor
    upstream and slices downstream), so this level neither pads nor slices.
    """
    time = rank - 2
    q = chunk
    M, G = chunk_operators(g, lam, q, reverse)
    if not padded:
        v, length = pad_time(g, v, rank, time, q)
    chunks = g.reshape(v, [0] * time + [-1, 2 * q])  # (*lead, n, 2q)
    x = g.matmul(chunks, M)  # states from a zero start
    if levels > 1:
        ends = g.slice(x, [0] if reverse else [2 * q - 2], [2] if reverse else [2 * q], [rank - 1])
        x = _add_entering(g, x, ends, G, lam, rank, chunk, levels, reverse, carry_scan)
    states = g.reshape(x, [0] * time + [-1, 2])
    return states if padded else g.slice(states, [0], length, [time])


def planar_chunked_recurrence(
    g: GraphBuilder,
    chunks: str,
    lam: np.ndarray,
    rank: int,
    chunk: int,
    levels: int,
    reverse: bool,
    carry_scan: bool = False,
) -> str:
    """:func:`chunked_recurrence` on chunks laid out (*lead, n, 2q) with columns (re/im, step):

        chunk c = [Re v_{cq} … Re v_{cq+q−1}, Im v_{cq} … Im v_{cq+q−1}]

    and the states returned in the same layout. A sequence layout with time last,
    (*lead, 2, T), turns into it by a Transpose that moves blocks of q floats, where the pair
    layout (*lead, T, 2) needs one that moves pairs of 8 bytes from a (…, T, P, 2) input map:
    on the pathx layer (P = 128, T = 16384, q = 16) 4.4-5.2 ms against 7.8 and 16.7 ms for
    the two pair transposes (benchmarks/chunk_layout.py). The chunk-end states (*lead, n, 2)
    are carried in the pair layout (a tensor q times smaller) by the chunked recurrence on
    λ^q, or by a Scan with ``carry_scan``. ``rank`` is the rank of ``chunks``."""
    q = chunk
    M, G = chunk_operators(g, lam, q, reverse, planar=True)
    x = g.matmul(chunks, M)  # states from a zero start
    if levels == 1:
        return x
    last = rank - 1
    ends = g.op(  # columns (re, im) of the chunk's last step (first in reverse)
        "Slice", x, g.ints([0 if reverse else q - 1]), g.ints([2 * q]), g.ints([last]), g.ints([q])
    )
    return _add_entering(g, x, ends, G, lam, rank, chunk, levels, reverse, carry_scan)


def _add_entering(g, x, ends, G, lam, rank, chunk, levels, reverse, carry_scan) -> str:
    """x + h_{c∓1} @ G: the chunk-end states ``ends`` (*lead, n, 2) of chunks computed from a
    zero start carried across chunks (h_c = λ^Q h_{c∓1} + e_c) by the chunked recurrence on
    λ^Q with ``levels − 1`` levels, or by one Scan with ``carry_scan``."""
    if carry_scan:
        carried = scan_recurrence(g, ends, lam**chunk, rank, reverse)
    else:
        carried = chunked_recurrence(g, ends, lam**chunk, rank, chunk, levels - 1, reverse)
    entering = shift_time(g, carried, rank, 1, reverse)  # h_{c−1} (h_{c+1} in reverse)
    return g.add(x, g.matmul(entering, G))


FRAME_CHUNK = 8  # steps per chunk inside a frame


def frame_recurrence(
    g: GraphBuilder, v: str, start: str, lam: np.ndarray, rank: int, frame: int
) -> tuple[str, str]:
    """One frame of K = ``frame`` steps from the entering state x_{−1} = ``start`` (*lead, 2):

        x_k = λ^(k+1) x_{−1} + Σ_{j ≤ k} λ^(k−j) v_j,   k = 0..K−1

    for v (*lead, K, 2); returns (x (*lead, K, 2), the state after the frame x_{K−1}
    (*lead, 2)). Two batched MatMuls (one small GEMM per state each), all shapes static:

    1. the states entering chunks c = 1..n−1 of Q = FRAME_CHUNK steps, h_{c−1} = x_{cQ−1},
       and the state after the frame x_{K−1}, from [v_0 … v_{K−1}, x_{−1}, x_{−1}] (2K + 4
       wide) at once, the powers λ^m of x_{−1} split hi + lo in float32 (like
       :func:`step_states`: λ^K multiplies the carried state once per frame, so its rounding
       would otherwise accumulate over a long stream);
    2. the states inside every chunk, [v_{cQ} … v_{cQ+Q−1}, h_{c−1}] (2Q + 2 wide, h_{−1} =
       x_{−1}, the frame zero-padded to n·Q) times [M; G] (:func:`chunk_matrices`).

    K ≤ Q is step 2 alone with its entering map split hi + lo. For any λ; where
    :func:`factored_frame_fits`, :func:`factored_frame_recurrence` is 1.3× faster at K = 32
    and takes its place (lti_dense.frame). Measured on the stream
    workload (benchmarks/RESULTS.md, streaming; 1 thread): at K = 32 one (2K × 2K) matrix per
    state 1.5× slower, chunks of 4 or 16 steps 1.2× slower, the entering states added
    elementwise 2× slower; the chunk ends carried one level up by this function (three
    MatMuls) 1.0–1.1× slower at K = 16 and 32, and 24 more nodes."""
    time, last_axis = rank - 2, rank - 1
    q = min(frame, FRAME_CHUNK)
    n = -(-frame // q)
    M, G = chunk_matrices(lam, q, reverse=False)
    x0 = g.unsqueeze(start, [time])  # (*lead, 1, 2)
    if n == 1:
        row = g.concat([g.reshape(v, [0] * time + [1, 2 * q]), x0, x0], axis=last_axis)
        operator = np.concatenate([M, *(p.real for p in split_float32(G))], axis=-2)
        x = g.matmul(row, g.const(operator, RECURRENCE_DTYPE, "frame"))  # (*lead, 1, 2K)
        last = g.squeeze(g.slice(x, [2 * q - 2], [2 * q], [last_axis]), [time])
        return g.reshape(x, [0] * time + [-1, 2]), last
    row = g.concat([g.reshape(v, [0] * time + [1, 2 * frame]), x0, x0], axis=last_axis)
    bounds = g.matmul(row, g.const(boundary_matrix(lam, frame, q), RECURRENCE_DTYPE, "bounds"))
    bounds = g.reshape(bounds, [0] * time + [n, 2])  # h_0 … h_{n−2}, x_{K−1}
    last = g.squeeze(g.slice(bounds, [n - 1], [n], [time]), [time])
    entering = g.concat([x0, g.slice(bounds, [0], [n - 1], [time])], axis=time)  # h_{c−1}
    if n * q > frame:
        v = g.pad(v, [0] * (rank + time) + [n * q - frame, 0])
    chunks = g.concat([g.reshape(v, [0] * time + [n, 2 * q]), entering], axis=last_axis)
    x = g.matmul(chunks, g.const(np.concatenate([M, G], axis=-2), RECURRENCE_DTYPE, "chunks"))
    x = g.reshape(x, [0] * time + [n * q, 2])
    return (x, last) if n * q == frame else (g.slice(x, [0], [frame], [time]), last)


FACTOR_RANGE = 2.0**40  # |λ^e| and |λ^−e| of a factored frame's constants at most this


def factored_frame_reach(frame: int) -> tuple[int, int]:
    """(m, reach) of a factored frame of K = ``frame`` steps: the reference step m = ⌊(K−1)/2⌋
    and the largest |e| among its exponents (a: k − m, b: m − j, q: m + 1)."""
    m = (frame - 1) // 2
    return m, max(m + 1, frame - 1 - m)


def factored_frame_fits(lam: np.ndarray, frame: int) -> bool:
    """Whether every λ^e of :func:`factored_frame_recurrence` has |λ^e|, |λ^−e| ≤ FACTOR_RANGE
    (2^40: with inputs of magnitude 2^−86..2^87 every product stays a normal float32), i.e.
    |ln|λ|| · reach ≤ ln FACTOR_RANGE for every mode: at K = 32 (reach 16) 0.177 ≤ |λ| ≤ 5.66,
    at K = 128 (reach 64) 0.649 ≤ |λ| ≤ 1.54. Modes outside (λ = 0 included) take
    :func:`frame_recurrence`."""
    _, reach = factored_frame_reach(frame)
    with np.errstate(divide="ignore"):
        log = np.abs(np.log(np.abs(np.asarray(lam, dtype=complex))))
    return bool(np.all(log * reach <= np.log(FACTOR_RANGE)))


PLANE_SWAP = [1, 0]  # [re; im] → [im; re]


def planar_product(g: GraphBuilder, x: str, z: np.ndarray, axis: int, hint: str) -> str:
    """z ⊙ x for x (…, 2, P) in planes (re, im on ``axis``) and complex z (…, P) broadcasting
    against x without that axis:

        z ⊙ x = x ⊙ [Re z; Re z] + x[[im, re]] ⊙ [−Im z; Im z]

    (the planes swapped by one Gather: measured as fast as a Slice with step −1 and faster
    than the pair layout's MatMul by a 2 × 2 swap on the frame of benchmarks/streaming.py)."""
    swapped = g.op("Gather", x, g.ints(PLANE_SWAP), axis=axis)
    same = g.const(np.stack([z.real, z.real], -2), RECURRENCE_DTYPE, f"{hint}_re")
    cross = g.const(np.stack([-z.imag, z.imag], -2), RECURRENCE_DTYPE, f"{hint}_im")
    return g.add(g.mul(x, same), g.mul(swapped, cross))


def factored_frame_recurrence(
    g: GraphBuilder, v: str, start: str, lam: np.ndarray, frame: int
) -> tuple[str, str]:
    """One frame of K = ``frame`` steps from x_{−1} = ``start`` (B, 2, P), v (B, K, 2, P), both
    in planes (re, im on axis −2), with no per-state GEMM: λ^(k−j) = λ^(k−m) λ^(m−j) turns

        x_k = λ^(k+1) x_{−1} + Σ_{j ≤ k} λ^(k−j) v_j = a_k ⊙ (Σ_{j ≤ k} b_j ⊙ v_j + q ⊙ x_{−1})
        a_k = λ^(k−m) (float32),  b_j = λ^(m−j),  q = λ^K / a_{K−1} (split hi + lo)

    into two elementwise products around one MatMul shared by all states, the running sum
    [tril(1) | 1 1] (K × K+2) @ [b ⊙ v; q_hi ⊙ x_{−1}; q_lo ⊙ x_{−1}] (B, K+2, 2P); m =
    ⌊(K−1)/2⌋ halves the exponents' range. Returns (x (B, K, 2, P), x_{K−1} (B, 2, P)).

    Rounding: a term's float32 sum error is relative to the terms it holds (j ≤ k), and a_k
    scales it back, so the bound is that of the direct sum, eps·Σ_j |λ|^(k−j) |v_j|. The
    carried state meets λ^K as a_{K−1} ⊙ q, where q absorbs a_{K−1}'s own rounding and is
    split hi + lo (like :func:`step_states`): a long stream does not drift with λ^K's
    rounding. Only where :func:`factored_frame_fits` (the constants within FACTOR_RANGE).
    Measured on the stream workload (benchmarks/RESULTS.md, streaming; 1 thread): 1.33× faster
    per step than :func:`frame_recurrence` at K = 32 unpruned (1.06× pruned to 30 %, P ≈ 38),
    1.3–1.8× unpruned at K = 2..128."""
    K = frame
    m, _ = factored_frame_reach(K)
    lam = np.asarray(lam, dtype=complex)
    k = np.arange(K)[:, None]
    a = (lam ** (k - m)).astype(np.complex64).astype(complex)  # (K, P), as the graph holds it
    q_hi, q_lo = split_float32(lam**K / a[-1])
    entering = g.unsqueeze(start, [1])  # (B, 1, 2, P)
    rows = g.concat([v, entering, entering], axis=1)
    scaled = planar_product(g, rows, np.concatenate([lam ** (m - k), [q_hi], [q_lo]]), 2, "b")
    running = np.concatenate([np.tril(np.ones((K, K))), np.ones((K, 2))], axis=1)
    P = lam.shape[-1]
    sums = g.matmul(
        g.const(running, RECURRENCE_DTYPE, "running"), g.reshape(scaled, [0, K + 2, 2 * P])
    )
    x = planar_product(g, g.reshape(sums, [0, K, 2, P]), a, 2, "a")
    return x, g.op("Gather", x, g.ints(K - 1), axis=1)


def boundary_matrix(lam: np.ndarray, frame: int, q: int) -> np.ndarray:
    """(S…, 2K + 4, 2n) float64: [v_0 … v_{K−1}, x_{−1} (hi), x_{−1} (lo)] ↦ the states at
    steps t = Q−1, 2Q−1, …, (n−1)Q−1 and K−1 (n = ⌈K/Q⌉), x_t = λ^(t+1) x_{−1} +
    Σ_{j ≤ t} λ^(t−j) v_j, as real row-vector blocks (:func:`complex_right`)."""
    lam = np.asarray(lam, dtype=complex)
    n = -(-frame // q)
    t = np.append(q * np.arange(1, n) - 1, frame - 1)  # (n,)
    lag = t[None, :] - np.arange(frame)[:, None]  # [j, c] = t_c − j
    inputs = np.where(lag >= 0, lam[..., None, None] ** np.maximum(lag, 0), 0)  # (S…, K, n)
    entering = [part[..., None, :] for part in split_float32(lam[..., None] ** (t + 1))]
    Z = np.concatenate([inputs, *entering], axis=-2)  # (S…, K + 2, n)
    R = complex_right(Z)  # (S…, rows, n, c_in, c_out)
    return np.moveaxis(R, -2, -3).reshape(*lam.shape, 2 * (frame + 2), 2 * n)


def scaled_pair(g: GraphBuilder, re: str, im: str, lam: np.ndarray) -> tuple[str, str]:
    """λ ⊙ (re + i·im) elementwise, λ split in float32 hi + lo parts (small part first):
    Σ_parts (λr re − λi im, λi re + λr im). λ broadcasts against re/im."""
    out_re = out_im = None
    for part in reversed(split_float32(lam)):
        lr = g.const(part.real, RECURRENCE_DTYPE, "lam_re")
        li = g.const(part.imag, RECURRENCE_DTYPE, "lam_im")
        p_re = g.sub(g.mul(re, lr), g.mul(im, li))
        p_im = g.add(g.mul(re, li), g.mul(im, lr))
        out_re = p_re if out_re is None else g.add(p_re, out_re)
        out_im = p_im if out_im is None else g.add(p_im, out_im)
    return out_re, out_im


SWAP = np.array([[0.0, 1.0], [-1.0, 0.0]])  # [re, im] @ SWAP = [−im, re]: i·(re + i·im)


def step_states(g: GraphBuilder, state: str, lam: np.ndarray, v: str, rank: int) -> str:
    """One step x' = λ ⊙ x + v of states x (…, 2), elementwise on the pairs as they are:

        x' = Σ_parts (x ⊙ [λr, λr] + (x @ SWAP) ⊙ [λi, λi]) + v,   x @ SWAP = [−im, re]

    (one MatMul by a shared 2 × 2 constant: a Gather of the swapped pair measured 3–6× slower
    on S4D's (B, H, N, 2) states), λ split hi + lo in float32 (small part first, as the Scan
    lowering does, so long streams do not drift with λ's rounding). The same products and
    sums as re' = λr re − λi im, im' = λi re + λr im on split parts, in 9 nodes instead of 27
    (no slices, squeezes or concat)."""
    turned = g.matmul(state, g.const(SWAP, RECURRENCE_DTYPE, "swap"))
    total = None
    for part in reversed(split_float32(lam)):
        same = g.const(np.stack([part.real, part.real], -1), RECURRENCE_DTYPE, "lam_re")
        cross = g.const(np.stack([part.imag, part.imag], -1), RECURRENCE_DTYPE, "lam_im")
        term = g.add(g.mul(state, same), g.mul(turned, cross))
        total = term if total is None else g.add(term, total)
    return g.add(total, v)


def split_pair(g: GraphBuilder, x: str, rank: int) -> tuple[str, str]:
    """(re, im) of x (…, 2), each without the trailing axis."""
    last = rank - 1
    return tuple(g.squeeze(g.slice(x, [c], [c + 1], [last]), [last]) for c in (0, 1))


def join_pair(g: GraphBuilder, re: str, im: str, rank: int) -> str:
    """x (…, 2) from its (re, im) parts."""
    return g.concat([g.unsqueeze(re, [rank - 1]), g.unsqueeze(im, [rank - 1])], axis=rank - 1)


def scan_recurrence(g: GraphBuilder, v: str, lam: np.ndarray, rank: int, reverse: bool) -> str:
    """One ONNX Scan node stepping along the time axis of v (*lead, T, 2):

        x_t = λ ⊙ x_{t∓1} + v_t

    re and im travel as separate state variables and the body is elementwise (a batched
    MatMul by 2×2 blocks is ~10× slower here: one tiny GEMM per state and step). λ split in
    float32 hi + lo parts (:func:`split_float32`). Any length; TensorRT builds an ILoop.
    """
    time = rank - 2
    body = g.body("scan_body")
    shape = [None] * (rank - 2)
    x_re, x_im = (body.input(f"x_{c}", RECURRENCE_DTYPE, shape) for c in ("re", "im"))
    v_re, v_im = (body.input(f"v_{c}", RECURRENCE_DTYPE, shape) for c in ("re", "im"))
    new_re, new_im = scaled_pair(body, x_re, x_im, lam)
    new_re, new_im = body.add(new_re, v_re), body.add(new_im, v_im)
    body.output("x_re_out", new_re, RECURRENCE_DTYPE, shape)
    body.output("x_im_out", new_im, RECURRENCE_DTYPE, shape)
    body.output("re_t", body.op("Identity", new_re), RECURRENCE_DTYPE, shape)
    body.output("im_t", body.op("Identity", new_im), RECURRENCE_DTYPE, shape)
    e_re, e_im = split_pair(g, v, rank)  # (*lead, T) each
    first = g.slice(e_re, [0], [1], [time])
    zero = g.squeeze(g.mul(first, g.const(0.0, RECURRENCE_DTYPE, "zero")), [time])
    _, _, re, im = g.op(
        "Scan",
        zero,
        zero,
        e_re,
        e_im,
        outputs=4,
        body=body.graph(),
        num_scan_inputs=2,
        scan_input_axes=[time, time],
        scan_input_directions=[int(reverse)] * 2,
        scan_output_axes=[time, time],
        scan_output_directions=[int(reverse)] * 2,
    )
    return join_pair(g, re, im, rank)


def logdepth_recurrence(
    g: GraphBuilder, v: str, lam: np.ndarray, rank: int, steps: int, reverse: bool
) -> str:
    """Hillis–Steele scan (DESIGN §4 lowering 2): for d = 1, 2, 4, …, 2^(steps−1),

        x_t ← x_t + λ^d ⊙ x_{t−d}      (x_{t+d} in reverse)

    exact for T ≤ 2^steps; each step is one shift (Pad, Slice), one MatMul by R(λ^d), one Add.
    """
    x = v
    lam = np.asarray(lam, dtype=complex)
    for s in range(steps):
        d = 2**s
        shifted = shift_time(g, x, rank, d, reverse)
        x = g.add(x, g.matmul(shifted, g.const(complex_right(lam**d), RECURRENCE_DTYPE, "lam_d")))
    return x


def split_float32(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z = hi + lo with hi = float32(z) and lo = float32(z − hi) (complex parts separately).

    A step-by-step recurrence multiplies by λ thousands of times: λ rounded once to float32
    (relative error δ ≈ 6e-8) gives λ^k an error of about k·δ, 1e-4 after the ~2000-step
    memory of a slow mode. Multiplying by hi and lo separately keeps λ to ~1e-15; what is left
    is the rounding of each step, which grows only like √k (measured: tests/test_lowering_parity).
    """
    z = np.asarray(z, dtype=complex)
    hi = z.astype(np.complex64).astype(complex)
    return hi, (z - hi).astype(np.complex64).astype(complex)


def steps_for(max_length: int) -> int:
    """Hillis–Steele steps needed for sequences of up to ``max_length`` steps."""
    return max(int(np.ceil(np.log2(max(max_length, 1)))), 0)


def levels_for(max_length: int, chunk: int) -> int:
    """Chunked-scan levels needed for sequences of up to ``max_length`` steps."""
    levels, covered = 1, chunk
    while covered < max_length:
        levels, covered = levels + 1, covered * chunk
    return levels
