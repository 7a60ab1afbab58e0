"""Lowering of one SSM core (a :class:`ModalSystem`) in sequence mode: u (B, L, H) → y (B, L, H).

    y_t = s·Re(C̃ x_t) [+ s·Re(C̃_b x^b_t)] + D ⊙ u_t,   x_t = λ̄ ⊙ x_{t−1} + B̄ u_t   (S5 eq. 3)

Four lowerings (DESIGN §4), picked per layer by :class:`LayerLowering`:

``chunked``   states materialized; intra-chunk decay MatMul + recursive carry (recurrence.py)
``logdepth``  states materialized; Hillis–Steele with Pad/Slice/MatMul/Add
``toeplitz``  no per-step states: block-Toeplitz MatMul inside chunks, states only at chunk
              boundaries (carried by the chunked recurrence on λ^Q)
``scan``      one ONNX Scan node carries the state from chunk to chunk (any length, smallest
              graph); inside a chunk as ``chunked`` (dense S5) or ``toeplitz`` (S4D banks).
              A Scan over single steps would be simpler, but its float32 rounding accumulates
              over the ~2000-step memory of slow modes: 4e-5 relative error on S4D networks at
              16384 steps (measured), against ≤ 3e-6 when only chunk-to-chunk steps are
              sequential.

A dense (MIMO, S5) system keeps its states as (B, P, L, 2); a SISO bank (S4D) as
(B, H, N, L, 2), so no dense (HN × H) matrix is ever built. Projections run in the compute
dtype; λ and the states stay float32 (RECURRENCE_DTYPE) with explicit Casts in between.
A layer without states (dropped by pruning) lowers to D ⊙ u: no recurrence at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from aire_export.graphs.builder import GraphBuilder
from aire_export.graphs.forms import (
    SisoBank,
    input_matrix,
    output_matrix,
    siso_bank,
    toeplitz_forms,
)
from aire_export.graphs.recurrence import (
    RECURRENCE_DTYPE,
    chunked_recurrence,
    levels_for,
    logdepth_recurrence,
    pad_time,
    scan_recurrence,
    shift_time,
    steps_for,
)
from aire_export.models.modal import ModalSystem

METHODS = ("chunked", "toeplitz", "logdepth", "scan")
CHUNKED_MIN_LENGTH = 1 << 20
CARRY_CONSTANTS = 1 << 20  # floats of per-state chunk matrices allowed per chunked level
F32 = RECURRENCE_DTYPE


@dataclass(frozen=True)
class LayerLowering:
    """How one layer's recurrence is lowered.

    method: one of METHODS ("feedthrough" for a layer without states).
    chunk: Q of the chunked scan (also of the carry across Toeplitz chunks).
    toeplitz_chunk: Q of the block-Toeplitz chunks.
    max_length: the longest sequence the graph must accept. It sets the Hillis–Steele steps
        (log2 of it); chunked levels always cover at least CHUNKED_MIN_LENGTH steps (the deep
        levels work on tiny tensors), so their graphs do not depend on it below that.
    states: stored states of the layer. Each chunked level holds a (2Q × 2Q) matrix per
        state; above CARRY_CONSTANTS floats per level (S4D: H·N = 8192 states) the states
        are carried across chunks by an ONNX Scan instead of more levels.
    """

    method: str
    chunk: int = 16
    toeplitz_chunk: int = 16
    max_length: int = CHUNKED_MIN_LENGTH
    states: int = 0

    @property
    def carry_by_scan(self) -> bool:
        """Chunk-to-chunk carry by one ONNX Scan node (else by recursive chunked levels)."""
        return self.method == "scan" or self.states * (2 * self.chunk) ** 2 > CARRY_CONSTANTS

    @property
    def levels(self) -> int:
        """Levels of the chunked scan (of the carry across Toeplitz chunks)."""
        if self.carry_by_scan:
            return 2  # chunks, then the Scan across them
        length = max(self.max_length, CHUNKED_MIN_LENGTH)
        if self.method == "toeplitz":
            length = -(-length // self.toeplitz_chunk)
        return levels_for(length, self.chunk)

    @property
    def accepted_length(self) -> int | None:
        """The longest sequence the lowered graph is exact for (None: any length)."""
        if self.method == "feedthrough" or (self.method != "logdepth" and self.carry_by_scan):
            return None
        if self.method == "logdepth":
            return 2 ** steps_for(self.max_length)
        q = self.toeplitz_chunk if self.method == "toeplitz" else 1
        return q * self.chunk**self.levels

    def time_multiple(self, system: ModalSystem) -> int:
        """The length multiple this layer pads its input to (1: none)."""
        if system.P == 0 or self.method in ("logdepth", "feedthrough"):
            return 1
        if _uses_toeplitz(system, self):
            return self.toeplitz_chunk
        return self.chunk


def _uses_toeplitz(system: ModalSystem, lowering: LayerLowering) -> bool:
    """Block-Toeplitz chunks: asked for, or ``scan`` on a SISO bank (Toeplitz + Scan carry)."""
    siso = siso_bank(system) is not None
    return lowering.method == "toeplitz" or (lowering.method == "scan" and siso)


class _Layer(NamedTuple):
    """What lowering one core needs: its system, its SISO bank view (or None), how, dtype,
    and whether u's length is already a multiple of the lowering's chunk (``padded``)."""

    system: ModalSystem
    bank: SisoBank | None
    lowering: LayerLowering
    compute: str
    padded: bool


def lower_core(
    g: GraphBuilder,
    system: ModalSystem,
    u: str,
    lowering: LayerLowering,
    compute: str,
    padded: bool = False,
) -> str:
    """y (B, L, H) in ``compute`` dtype for u (B, L, H) in ``compute`` dtype.

    ``padded``: L is a multiple of ``lowering.time_multiple(system)`` already (a causal
    network pads its input once and slices once instead of in every layer).
    """
    bank = siso_bank(system)
    layer = _Layer(system, bank, lowering, compute, padded)
    if system.P and _uses_toeplitz(system, lowering):
        return _toeplitz(g, layer, u)  # D sits on T's diagonal
    feedthrough = g.mul(u, g.const(system.D, compute, "D"))
    if system.P == 0:
        return feedthrough  # dropped layer: no recurrence is emitted
    return g.add(_state_space(g, layer, u), feedthrough)


# ---- state-space form: input map → recurrence per direction → output map -------------------
def _recurrence(
    g: GraphBuilder, v: str, lam, rank: int, lowering: LayerLowering, reverse: bool, padded: bool
):
    """States of the recurrence on v; ``padded``: T is a multiple of lowering.chunk already."""
    if lowering.method == "logdepth":
        return logdepth_recurrence(g, v, lam, rank, steps_for(lowering.max_length), reverse)
    return chunked_recurrence(  # chunked, and scan (one level, carried by a Scan node)
        g,
        v,
        lam,
        rank,
        lowering.chunk,
        lowering.levels,
        reverse,
        carry_scan=lowering.carry_by_scan,
        padded=padded,
    )


def _state_space(g: GraphBuilder, layer: _Layer, u: str) -> str:
    system, bank, lowering, compute, padded = layer
    directions = range(len(system.C))
    if bank is not None:
        # v[b, h, n, t] = b_hn u[b, t, h]:  (B, H, 1, L, 1) ⊙ (H, N, 1, 2) → (B, H, N, L, 2)
        u_t = g.unsqueeze(g.transpose(g.cast_if(u, compute, F32), [0, 2, 1]), [2, 4])
        v = g.mul(u_t, g.const(_pairs(bank.b)[:, :, None, :], F32, "b"))
        terms = []
        for d in directions:
            with g.scope(f"scan{d}"):
                x = _recurrence(g, v, bank.lam, 5, lowering, reverse=d == 1, padded=padded)
            c = _pairs(np.conj(bank.c[d]))  # y = Re(c x) = c_re x_re − c_im x_im
            terms.append(g.mul(x, g.const(c[:, :, None, :], F32, "c")))
        total = terms[0] if len(terms) == 1 else g.add(*terms)
        y = g.transpose(g.reduce("ReduceSum", total, [2, 4]), [0, 2, 1])  # (B, L, H)
        return g.cast_if(y, F32, compute)
    # dense: v = u @ W_in (B, L, 2P) → (B, P, L, 2). Chunked lowerings pad u (H wide) rather
    # than the states (2P wide) and slice y at the end.
    P = system.P
    chunked = lowering.method in ("chunked", "scan")
    pad_here = chunked and not padded
    if pad_here:
        u, length = pad_time(g, u, 3, 1, lowering.chunk)
    v = g.matmul(u, g.const(input_matrix(system.dense_B()), compute, "B"))
    v = g.transpose(g.reshape(g.cast_if(v, compute, F32), [0, 0, P, 2]), [0, 2, 1, 3])
    y = None
    for d in directions:  # y = Σ_d s·Re(C_d x_d): one readout MatMul per direction
        with g.scope(f"scan{d}"):
            x = _recurrence(g, v, system.lam, 4, lowering, d == 1, padded=chunked)
        x = g.reshape(g.transpose(x, [0, 2, 1, 3]), [0, 0, -1])  # (B, L, 2P)
        C = output_matrix(system.dense_C(d), system.output_scale)
        y_d = g.matmul(g.cast_if(x, F32, compute), g.const(C, compute, "C"))
        y = y_d if y is None else g.add(y, y_d)
    return g.slice(y, [0], length, [1]) if pad_here else y


def _pairs(z: np.ndarray) -> np.ndarray:
    """(…, 2) float64 [re, im] of a complex array."""
    return np.stack([z.real, z.imag], -1)


# ---- block-Toeplitz chunks -----------------------------------------------------------------
def _carry(g, ends: str, lam: np.ndarray, rank: int, lowering: LayerLowering, reverse: bool):
    """States entering each chunk: h_{c−1} (h_{c+1} in reverse) for chunk-boundary states e_c
    carried by h_c = λ^Q h_{c∓1} + e_c (the chunked recurrence on λ^Q)."""
    q = lowering.toeplitz_chunk
    if lowering.carry_by_scan:
        carried = scan_recurrence(g, ends, lam**q, rank, reverse)
    else:
        carried = chunked_recurrence(
            g, ends, lam**q, rank, lowering.chunk, lowering.levels, reverse
        )
    return shift_time(g, carried, rank, 1, reverse)


def _toeplitz(g: GraphBuilder, layer: _Layer, u: str) -> str:
    system, bank, lowering, compute, already_padded = layer
    q = lowering.toeplitz_chunk
    forms = toeplitz_forms(system, q)
    dirs = len(system.C)
    padded, length = (u, None) if already_padded else pad_time(g, u, 3, 1, q)
    if bank is not None:
        H, N = bank.H, bank.N
        chunks = g.transpose(g.reshape(padded, [0, -1, q, H]), [0, 3, 1, 2])  # (B, H, n, Q)
        y = g.matmul(chunks, g.const(forms.T, compute, "T"))  # (B, H, n, Q)
        ends = g.cast_if(g.matmul(chunks, g.const(forms.W_in, compute, "W_in")), compute, F32)
        entering = []
        for d in range(dirs):
            e = g.slice(ends, [2 * N * d], [2 * N * (d + 1)], [3])  # (B, H, n, 2N)
            e = g.transpose(g.reshape(e, [0, 0, 0, N, 2]), [0, 1, 3, 2, 4])  # (B, H, N, n, 2)
            with g.scope(f"scan{d}"):
                h = _carry(g, e, bank.lam, 5, lowering, reverse=d == 1)
            entering.append(g.reshape(g.transpose(h, [0, 1, 3, 2, 4]), [0, 0, 0, -1]))
        h = entering[0] if dirs == 1 else g.concat(entering, axis=3)  # (B, H, n, 2N·dirs)
        y = g.add(y, g.matmul(g.cast_if(h, F32, compute), g.const(forms.W_out, compute, "W_out")))
        y = g.reshape(g.transpose(y, [0, 2, 3, 1]), [0, -1, H])  # (B, nQ, H)
        return y if already_padded else g.slice(y, [0], length, [1])
    H, P = system.H, system.P
    chunks = g.reshape(padded, [0, -1, q * H])  # (B, n, QH)
    y = g.matmul(chunks, g.const(forms.T, compute, "T"))
    ends = g.cast_if(g.matmul(chunks, g.const(forms.W_in, compute, "W_in")), compute, F32)
    entering = []
    for d in range(dirs):
        e = g.slice(ends, [2 * P * d], [2 * P * (d + 1)], [2])  # (B, n, 2P)
        e = g.transpose(g.reshape(e, [0, 0, P, 2]), [0, 2, 1, 3])  # (B, P, n, 2)
        with g.scope(f"scan{d}"):
            h = _carry(g, e, system.lam, 4, lowering, reverse=d == 1)
        entering.append(g.reshape(g.transpose(h, [0, 2, 1, 3]), [0, 0, -1]))
    h = entering[0] if dirs == 1 else g.concat(entering, axis=2)  # (B, n, 2P·dirs)
    y = g.add(y, g.matmul(g.cast_if(h, F32, compute), g.const(forms.W_out, compute, "W_out")))
    y = g.reshape(y, [0, -1, H])
    return y if already_padded else g.slice(y, [0], length, [1])


__all__ = ["METHODS", "LayerLowering", "lower_core"]
