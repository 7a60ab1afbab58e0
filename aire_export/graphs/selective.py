"""Lowering of a Mamba-1 mixer, :class:`ir.SelectiveCore`: sequence and step (DESIGN §3.5, §4).

    x, z = h @ W_x, h @ W_z                                  (B, L, E) each (in_proj halves)
    x = silu(Σ_k w_k ⊙ x_{t−K+1+k} + conv_bias)              causal depthwise conv, Pad + Mul
    Δ_raw, B, C = split(x @ x_proj, [R, N, N])
    δ = softplus(Δ_raw @ W_dt + b_dt)                        (B, L, E), float32
    s_t = exp(δ_t ⊗ A) ⊙ s_{t−1} + (δ_t ⊙ x_t) ⊗ B_t          (B, L, E, N), float32, s_{−1} = 0
    y_t = s_t C_t + D ⊙ x_t,   out = (y ⊙ silu(z)) @ out_proj

The decay exp(δ_t A) changes with t, so the LTI lowerings (powers of a fixed λ̄, Toeplitz
kernels) do not apply. What does, with δ ≥ 0 and A < 0 so that every factor is ≤ 1:

``chunked``   time in chunks of Q steps. Inside a chunk the recurrence runs as Q steps, each
              one Mul and one Add on the (B, n, 1, N, E) slice of *all* n = L/Q chunks at once
              (the graph has O(Q) nodes whatever L is: nothing is unrolled over time). A first
              sweep gives each chunk's end state from a zero start, e_c; the chunk-to-chunk
              carry h_c = exp(A ⊙ Σ_{t∈c} δ_t) ⊙ h_{c−1} + e_c is the same scheme one level up
              (levels cover Q^levels steps); a second sweep starts every chunk from h_{c−1} and
              reads y out step by step (one batched MatMul C_k s_k). Only decays of the form
              exp(A ⊙ (a sum of δ ≥ 0)) ≤ 1 appear: never exp(+cumsum). No Scan node.
``scan``      one ONNX Scan iteration per chunk of Q steps carries the state (B, N, E) to the
              next chunk, and inside it the Q steps run from that state one after the other,
              each a few elementwise nodes over (B, N, E): half the arithmetic of the sweeps
              (no end states from zero), tensors that stay in cache, any length. Its cost is
              per-node dispatch, Q·~8 nodes per chunk: 1.85-1.96x faster than ``chunked`` on
              mamba-small at 1 thread (E·N = 8192), a tie once E·N is down to 2048
              (benchmarks/mamba_cpu.py); the iterations run one after another, so it leaves a
              GPU idle where ``chunked`` has work for all of it.

States are laid out (…, N, E): the broadcasts δ ⊗ A and (δ ⊙ x) ⊗ B then run along E = 512
instead of N = 16, which makes the whole chunked core 1.2× faster in onnxruntime. Projections,
the conv and the gate run in the compute dtype; δ, the decays, the states and the readout stay
float32 with explicit Casts (DESIGN §4). Hillis–Steele inside chunks (log2 Q passes over
(B, L, N, E)) measured 5.8× slower than the sweeps on the CPU and is not offered. The scan core
alone (benchmarks/selective_forms.py, E = 512, N = 16, 1 thread): ``scan`` 2.6× (T = 1024) and
3.0× (T = 4096) faster than ``chunked``, every form within 1.6e-7 of float64.

Step graph (``model.step.onnx``), per layer, conv_state (B, E, K−1) the last K−1 inputs of the
conv and ssm_state (B, E, N):

    window = [conv_state, x_t];  x = silu(Σ_k w_k window_k + b);  conv_state' = window[1:]
    ssm_state' = exp(δ ⊗ A) ⊙ ssm_state + (δ ⊙ x) ⊗ B;  y = ssm_state' C + D ⊙ x
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from aire_export import ir
from aire_export.errors import InputError
from aire_export.graphs import layers
from aire_export.graphs.builder import INT64_MAX, GraphBuilder
from aire_export.graphs.lowering import CoreLowering, LayerLowering
from aire_export.graphs.recurrence import RECURRENCE_DTYPE, pad_time

F32 = RECURRENCE_DTYPE
METHODS = ("chunked", "scan")


# ---- the projections around the scan ---------------------------------------------------------
def _halves(layer: ir.Dense, width: int) -> tuple[ir.Dense, ir.Dense]:
    """in_proj split into its x and z parts (columns [0, E) and [E, 2E))."""
    w, b = layer.weight, layer.bias
    return ir.Dense(w[:, :width], b[:width]), ir.Dense(w[:, width:], b[width:])


def _conv(g: GraphBuilder, core: ir.SelectiveCore, x: str, compute: str) -> str:
    """Causal depthwise conv over time of x (B, L, E): out_t = Σ_k w[:, k] x_{t−K+1+k} + b,
    as Pad (K−1 zeros in front) and K shifted slices."""
    K = core.K
    padded = g.pad(x, [0, K - 1, 0, 0, 0, 0])
    total = None
    for k in range(K):
        end = k - (K - 1) if k < K - 1 else INT64_MAX
        term = g.mul(g.slice(padded, [k], [end], [1]), g.const(core.conv_weight[:, k], compute))
        total = term if total is None else g.add(total, term)
    return g.add(total, g.const(core.conv_bias, compute, "conv_bias"))


def _selection(g: GraphBuilder, core: ir.SelectiveCore, x: str, compute: str):
    """(δ, B, C) in float32 for the conv output x (…, E) in ``compute``:
    Δ_raw, B, C = split(x @ x_proj);  δ = softplus(Δ_raw @ W_dt + b_dt)."""
    R, N = core.dt_rank, core.N
    last = -1
    proj = layers.dense(g, core.x_proj, x, compute)
    dt = g.slice(proj, [0], [R], [last])
    B = g.cast_if(g.slice(proj, [R], [R + N], [last]), compute, F32)
    C = g.cast_if(g.slice(proj, [R + N], [R + 2 * N], [last]), compute, F32)
    delta = layers.softplus(g, g.cast_if(layers.dense(g, core.dt_proj, dt, compute), compute, F32))
    return delta, B, C


def _gate(g, core: ir.SelectiveCore, y32: str, x: str, z: str, compute: str) -> str:
    """out = ((y + D ⊙ x) ⊙ silu(z)) @ out_proj, y in float32."""
    y = g.add(y32, g.mul(g.cast_if(x, compute, F32), g.const(core.D, F32, "D")))
    gated = g.mul(g.cast_if(y, F32, compute), layers.silu(g, z))
    return layers.dense(g, core.out_proj, gated, compute)


# ---- the chunked selective scan ------------------------------------------------------------------
def _decays(g: GraphBuilder, delta: str, A: str, q: int) -> list[str]:
    """exp(δ_k ⊗ A) (B, n, 1, N, E) at step k of every chunk, for δ chunked (B, n, Q, E) and
    A the (N, E) constant."""
    return [
        g.op("Exp", g.mul(g.unsqueeze(g.slice(delta, [k], [k + 1], [2]), [3]), A)) for k in range(q)
    ]


def _sweep(g: GraphBuilder, decays: list[str], drives: list[str], start: str | None) -> list[str]:
    """s_k = a_k ⊙ s_{k−1} + v_k through one chunk (all chunks at once), s_{−1} = start."""
    states, s = [], start
    for a, v in zip(decays, drives, strict=True):
        s = v if s is None else g.add(g.mul(a, s), v)
        states.append(s)
    return states


Carry = Callable[[str, str], str]
"""(spans Σ_{t∈c} δ_t (B, n, E), end states e_c (B, n, N, E)) → the state entering every
chunk, h_{c−1} (B, n, N, E)."""


def _chunk_states(
    g: GraphBuilder,
    delta: str,
    drive: Callable[[int], str],
    A: str,
    core: ir.SelectiveCore,
    q: int,
    carry: Carry | None,
    start: str | None = None,
) -> list[str]:
    """States (B, n, 1, N, E) at step k = 0..Q−1 of every chunk of x_t = exp(δ_t A) x_{t−1} + v_t,
    for δ (B, nQ, E) and ``drive(k)`` the v at step k of every chunk: a sweep from zero, the
    chunk-to-chunk ``carry`` of the end states, a sweep from the entering states. Without a
    carry (one chunk) a single sweep from ``start`` (B, 1, 1, N, E) (None: zeros)."""
    chunks = g.reshape(delta, [0, -1, q, core.E])  # (B, n, Q, E)
    decays = _decays(g, chunks, A, q)
    drives = [drive(k) for k in range(q)]
    local = _sweep(g, decays, drives, start if carry is None else None)
    if carry is None:
        return local
    ends = g.squeeze(local[-1], [2])  # e_c (B, n, N, E): end states from a zero start
    spans = g.reduce("ReduceSum", chunks, [2])  # Σ_{t∈c} δ_t (B, n, E): the chunk's decay
    return _sweep(g, decays, drives, g.unsqueeze(carry(spans, ends), [2]))


def _level_carry(g: GraphBuilder, A: str, core: ir.SelectiveCore, q: int, levels: int) -> Carry:
    """The carry by the chunked scheme one level up (chunks of q chunks), ``levels`` levels
    deep (covering q^levels chunks)."""
    N, E = core.N, core.E

    def carry(spans: str, ends: str) -> str:
        spans_p, count = pad_time(g, spans, 3, 1, q)
        blocks = g.reshape(pad_time(g, ends, 4, 1, q)[0], [0, -1, q, N, E])
        inner = _level_carry(g, A, core, q, levels - 1) if levels > 1 else None
        states = _chunk_states(
            g, spans_p, lambda k: g.slice(blocks, [k], [k + 1], [2]), A, core, q, inner
        )
        carried = g.slice(g.reshape(g.concat(states, 2), [0, -1, N, E]), [0], count, [1])
        return g.slice(g.pad(carried, [0, 1, 0, 0, 0, 0, 0, 0]), [0], [-1], [1])  # h_{c−1}

    return carry


def _chunk_scan(
    g, core: ir.SelectiveCore, delta, inputs, B, C, q: int, carry_of, start: str | None = None
) -> tuple[str, str]:
    """(y_t = C_t s_t (B, L, E) float32, the last step's states) for δ, δ ⊙ x (B, L, E) and
    B, C (B, L, N), L a multiple of q; ``carry_of(A)`` gives the chunk-to-chunk carry for the
    constant A, or None for one chunk, which starts from ``start`` (B, 1, 1, N, E)."""
    E, N = core.E, core.N
    A = g.const(core.A.T, F32, "A")  # (N, E): states are laid out (…, N, E)
    inputs = g.reshape(inputs, [0, -1, q, E])  # (B, n, Q, E)
    B = g.reshape(B, [0, -1, q, N])
    C = g.reshape(C, [0, -1, q, N])

    def drive(k: int) -> str:  # (δ_k ⊙ x_k) ⊗ B_k: (B, n, 1, 1, E) ⊙ (B, n, 1, N, 1)
        u = g.unsqueeze(g.slice(inputs, [k], [k + 1], [2]), [3])
        return g.mul(u, g.unsqueeze(g.slice(B, [k], [k + 1], [2]), [4]))

    states = _chunk_states(g, delta, drive, A, core, q, carry_of(A), start)
    ys = [  # C_k s_k: (B, n, 1, 1, N) @ (B, n, 1, N, E) → (B, n, 1, 1, E)
        g.matmul(g.unsqueeze(g.slice(C, [k], [k + 1], [2]), [3]), s) for k, s in enumerate(states)
    ]
    return g.reshape(g.concat(ys, 2), [0, -1, E]), states[-1]


def _chunked(g, core: ir.SelectiveCore, delta, inputs, B, C, lowering: LayerLowering) -> str:
    """The ``chunked`` method: carry across chunks by ``levels − 1`` chunked levels."""
    q, levels = lowering.chunk, lowering.levels

    def carry_of(A: str) -> Carry | None:
        return _level_carry(g, A, core, q, levels - 1) if levels > 1 else None

    return _chunk_scan(g, core, delta, inputs, B, C, q, carry_of)[0]


def _stepped(g, core: ir.SelectiveCore, delta, inputs, B, C, lowering: LayerLowering) -> str:
    """The ``scan`` method: one ONNX Scan iteration per chunk of q steps carries the state
    (B, N, E) to the next chunk; inside, the q steps run one after the other from it (a single
    sweep: no end states from zero, no second pass)."""
    q, E, N = lowering.chunk, core.E, core.N
    body = g.body("chunk_body")
    h = body.input("h", F32, [None, N, E])
    spec = [("delta", E), ("inputs", E), ("B", N), ("C", N)]
    chunk_in = [body.input(name, F32, [None, q, width]) for name, width in spec]
    y, last = _chunk_scan(body, core, *chunk_in, q, lambda A: None, body.unsqueeze(h, [1, 2]))
    body.output("h_out", body.squeeze(last, [1, 2]), F32, [None, N, E])
    body.output("y_chunk", y, F32, [None, q, E])
    first = g.slice(g.mul(delta, g.const(0.0, F32, "zero")), [0], [1], [1])  # (B, 1, E) zeros
    zero = g.mul(first, g.const(np.zeros((N, 1)), F32, "zeros"))  # (B, N, E)
    chunks = [
        g.reshape(t, [0, -1, q, width])
        for t, (_, width) in zip((delta, inputs, B, C), spec, strict=True)
    ]
    _, ys = g.op(
        "Scan",
        zero,
        *chunks,
        outputs=2,
        body=body.graph(),
        num_scan_inputs=4,
        scan_input_axes=[1, 1, 1, 1],
        scan_output_axes=[1],
    )
    return g.reshape(ys, [0, -1, E])


def sequence(
    g: GraphBuilder,
    core: ir.SelectiveCore,
    u: str,
    lowering: LayerLowering,
    compute: str,
    padded: bool = False,
) -> str:
    """The mixer's output (B, L, H) in ``compute`` for the normed stream u (B, L, H)."""
    if lowering.method not in METHODS:
        raise InputError(
            f"the {lowering.method} lowering is for linear time-invariant layers; a selective "
            f"(Mamba) layer is lowered with {' or '.join(METHODS)} (--scan)"
        )
    in_x, in_z = _halves(core.in_proj, core.E)
    z = layers.dense(g, in_z, u, compute)
    x = layers.silu(g, _conv(g, core, layers.dense(g, in_x, u, compute), compute))
    delta, B, C = _selection(g, core, x, compute)
    inputs = g.mul(delta, g.cast_if(x, compute, F32))  # δ ⊙ x (B, L, E)
    scan = _stepped if lowering.method == "scan" else _chunked
    if padded:
        y = scan(g, core, delta, inputs, B, C, lowering)
    else:
        q = lowering.chunk
        (delta, length), (inputs, _), (B, _), (C, _) = (
            pad_time(g, t, 3, 1, q) for t in (delta, inputs, B, C)
        )
        y = g.slice(scan(g, core, delta, inputs, B, C, lowering), [0], length, [1])
    return _gate(g, core, y, x, z, compute)


def step(
    g: GraphBuilder, core: ir.SelectiveCore, u: str, states: list[str], compute: str
) -> tuple[str, list[str]]:
    """One step for the normed stream u (B, H): (out (B, H) in ``compute``, [conv_state',
    ssm_state']) from conv_state (B, E, K−1) and ssm_state (B, E, N), both float32."""
    conv_state, ssm_state = states
    in_x, in_z = _halves(core.in_proj, core.E)
    z = layers.dense(g, in_z, u, compute)
    x_t = layers.dense(g, in_x, u, compute)
    window = g.concat([g.cast_if(conv_state, F32, compute), g.unsqueeze(x_t, [2])], axis=2)
    conv = g.reduce("ReduceSum", g.mul(window, g.const(core.conv_weight, compute, "conv_w")), [2])
    x = layers.silu(g, g.add(conv, g.const(core.conv_bias, compute, "conv_bias")))
    new_conv = g.cast_if(g.slice(window, [1], [INT64_MAX], [2]), compute, F32)
    delta, B, C = _selection(g, core, x, compute)
    x32 = g.cast_if(x, compute, F32)
    with g.scope("scan"):
        decay = g.op("Exp", g.mul(g.unsqueeze(delta, [2]), g.const(core.A, F32, "A")))
        drive = g.mul(g.unsqueeze(g.mul(delta, x32), [2]), g.unsqueeze(B, [1]))  # (B, E, N)
        new_ssm = g.add(g.mul(decay, ssm_state), drive)
        y = g.squeeze(g.matmul(new_ssm, g.unsqueeze(C, [2])), [2])  # (B, E)
    return _gate(g, core, y, x, z, compute), [new_conv, new_ssm]


def states(core: ir.SelectiveCore) -> list[tuple[str, list[int | str]]]:
    return [("_conv", ["batch", core.E, core.K - 1]), ("_ssm", ["batch", core.E, core.N])]


def time_multiple(core: ir.SelectiveCore, lowering: LayerLowering) -> int:
    return lowering.chunk


LOWERING = CoreLowering(sequence, step, states, time_multiple, per_state_constants=False)
