"""How a core's recurrence is lowered: the methods, their chunk sizes, the lengths they accept.

    y_t = s·Re(C̃ x_t) [+ s·Re(C̃_b x^b_t)] + D ⊙ u_t,   x_t = λ̄ ⊙ x_{t−1} + B̄ u_t   (S5 eq. 3)

Four lowerings (DESIGN §4), picked per layer by :class:`LayerLowering`; each core layout
(graphs/lti_dense.py, graphs/lti_bank.py) implements them on its own tensor layout:

``chunked``   states materialized; intra-chunk decay MatMul + recursive carry (recurrence.py)
``logdepth``  states materialized; Hillis–Steele with Pad/Slice/MatMul/Add
``toeplitz``  no per-step states: block-Toeplitz MatMul inside chunks, states only at chunk
              boundaries (carried by the chunked recurrence on λ^Q)
``scan``      one ONNX Scan node carries the state from chunk to chunk (any length, smallest
              graph); inside a chunk as ``chunked`` (dense layout) or ``toeplitz`` (SISO
              banks). A Scan over single steps would be simpler, but its float32 rounding
              accumulates over the ~2000-step memory of slow modes: 4e-5 relative error on S4D
              networks at 16384 steps (measured), against ≤ 3e-6 when only chunk-to-chunk
              steps are sequential.

Projections run in the compute dtype; λ and the states stay float32 (RECURRENCE_DTYPE) with
explicit Casts in between. A core without states lowers to D ⊙ u: no recurrence at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from aire_export.graphs.builder import GraphBuilder
from aire_export.graphs.recurrence import (
    chunked_recurrence,
    levels_for,
    logdepth_recurrence,
    scan_recurrence,
    shift_time,
    steps_for,
)

METHODS = ("chunked", "toeplitz", "logdepth", "scan")
FEEDTHROUGH = "feedthrough"  # the "method" of a core without states
CHUNKED_MIN_LENGTH = 1 << 20
CARRY_CONSTANTS = 1 << 20  # floats of per-state chunk matrices allowed per chunked level
LOG_F32_MAX = float(np.log(np.finfo(np.float32).max))


@dataclass(frozen=True)
class Growth:
    """How far an unstable core (a mode with ρ = |λ̄| > 1, a model trained without eigenvalue
    clipping) can be lowered in float32.

    power_limit: the largest m with ρ^m finite in float32, ⌊ln(F32_MAX) / ln ρ⌋: no constant
        λ^m beyond it may enter a graph (chunked and Toeplitz carries and Hillis–Steele steps
        hold λ^(Q^k), λ^(2^s)).
    output_limit: the length up to which the output stays finite in float32 for inputs of
        magnitude ≤ 1 per channel: the state of mode i grows like g_i ρ_i^T / (ρ_i − 1) with
        g_i the mode's gain (its ‖B_i‖·‖C_i‖ and the output scale), so
        T_i = ⌊(ln F32_MAX − ln(g_i / (ρ_i − 1))) / ln ρ_i⌋ and the limit is min_i T_i.
    rho: the largest |λ̄|.
    """

    power_limit: int
    output_limit: int
    rho: float


def growth_of(lam: np.ndarray, gain: np.ndarray) -> Growth | None:
    """The Growth of a core with modes ``lam`` and gains ``gain`` (flat arrays), None when
    every mode has |λ̄| ≤ 1."""
    rho = np.abs(np.asarray(lam).ravel())
    gain = np.asarray(gain, dtype=np.float64).ravel()
    unstable = rho > 1
    if not unstable.any():
        return None
    rho, gain = rho[unstable], np.maximum(gain[unstable], 1e-300)
    log_rho = np.log(rho)
    power = int(np.floor(LOG_F32_MAX / log_rho.max()))
    reach = (LOG_F32_MAX - np.maximum(np.log(gain / (rho - 1)), 0.0)) / log_rho
    return Growth(power, max(int(np.floor(reach.min())), 1), float(rho.max()))


@dataclass(frozen=True)
class LayerLowering:
    """How one layer's recurrence is lowered.

    method: one of METHODS (FEEDTHROUGH for a core without states).
    chunk: Q of the chunked scan (also of the carry across Toeplitz chunks).
    toeplitz_chunk: Q of the block-Toeplitz chunks.
    max_length: the longest sequence the graph must accept. It sets the Hillis–Steele steps
        (log2 of it); chunked levels always cover at least CHUNKED_MIN_LENGTH steps (the deep
        levels work on tiny tensors), so their graphs do not depend on it below that.
    states: stored states of the layer with chunk constants of their own (0 for a selective
        core). Each chunked level holds a (2Q × 2Q) matrix per such state; above
        CARRY_CONSTANTS floats per level (S4D: H·N = 8192 states) the states are carried
        across chunks by an ONNX Scan instead of more levels.
    growth: for an unstable core, its float32 limits: levels and steps stop before a power
        of λ̄ overflows, and the accepted length is capped where the output stays finite.
    """

    method: str
    chunk: int = 16
    toeplitz_chunk: int = 16
    max_length: int = CHUNKED_MIN_LENGTH
    states: int = 0
    growth: Growth | None = None

    @property
    def carry_by_scan(self) -> bool:
        """Chunk-to-chunk carry by one ONNX Scan node (else by recursive chunked levels)."""
        return self.method == "scan" or self.states * (2 * self.chunk) ** 2 > CARRY_CONSTANTS

    @property
    def _inner(self) -> int:
        """Steps per outer chunk: Q of the Toeplitz chunks, 1 for the chunked scan."""
        return self.toeplitz_chunk if self.method == "toeplitz" else 1

    @property
    def levels(self) -> int:
        """Levels of the chunked scan (of the carry across Toeplitz chunks). The deepest
        holds λ^(inner·chunk^levels), so an unstable core gets no more levels than keep it
        finite in float32."""
        if self.carry_by_scan:
            return 2  # chunks, then the Scan across them
        length = -(-max(self.max_length, CHUNKED_MIN_LENGTH) // self._inner)
        levels = levels_for(length, self.chunk)
        if self.growth is not None:
            while levels > 1 and self._inner * self.chunk**levels > self.growth.power_limit:
                levels -= 1
        return levels

    @property
    def steps(self) -> int:
        """Hillis–Steele steps: log2 of the maximum length, no more than keep λ^(2^s) finite."""
        steps = steps_for(self.max_length)
        if self.growth is not None:
            while steps > 1 and 2**steps > self.growth.power_limit:
                steps -= 1
        return steps

    @property
    def accepted_length(self) -> int | None:
        """The longest sequence the lowered graph is exact for (None: any length); for an
        unstable core also no longer than its output stays finite in float32."""
        if self.method == FEEDTHROUGH:
            return None
        if self.method == "logdepth":
            exact = 2**self.steps
        elif self.carry_by_scan:
            exact = None
        else:
            exact = self._inner * self.chunk**self.levels
        if self.growth is None:
            return exact
        return self.growth.output_limit if exact is None else min(exact, self.growth.output_limit)


@dataclass(frozen=True)
class CoreLowering:
    """What graphs/ does with one core type; each layout module provides one (graphs/core.py
    dispatches on the core's type).

    sequence(g, core, u, lowering, compute, padded) → y: u (B, L, H) → y (B, L, H) in the
        compute dtype; ``padded``: L is already a multiple of ``time_multiple``.
    step(g, core, u, states, compute) → (y, new states): one step, u (B, H); ``states`` the
        names of the step graph's state inputs of this layer, in the order ``states`` lists.
    states(core): the layer's step-graph states, (name suffix, shape with "batch" first)
        each: "" (``state_i``) for an LTI core's state (float32, (re, im) last), none
        without states, two for a selective core (``state_i_conv``, ``state_i_ssm``).
    time_multiple(core, lowering): the length multiple the sequence form pads its input to.
    modes(core) → (λ̄, gain): every mode's eigenvalue and output gain (flat arrays), what the
        float32 limits of an unstable core are computed from (:func:`growth_of`).
    frame(g, core, u, states, compute, steps) → (y, new states): ``steps`` = K steps in one
        call, u (B, K, H) → y (B, K, H), states as for ``step`` (those after the K steps);
        None: the layout has no frame form (the step graph refuses K > 1 for it).
    recurrent: False for a core without states (its lowering is FEEDTHROUGH).
    per_state_constants: each chunked level holds a (2Q × 2Q) matrix per state (LTI cores),
        so big layers carry across chunks by a Scan (``LayerLowering.states``); a selective
        core computes its decays in the graph and has none.
    """

    sequence: Callable[..., str]
    step: Callable[..., tuple[str, list[str]]]
    states: Callable[..., list[tuple[str, list[int | str]]]]
    time_multiple: Callable[..., int]
    modes: Callable[..., tuple[np.ndarray, np.ndarray]] = lambda core: (np.zeros(0), np.zeros(0))
    recurrent: bool = True
    per_state_constants: bool = True
    frame: Callable[..., tuple[str, list[str]]] | None = None


def recurrence_states(
    g: GraphBuilder,
    v: str,
    lam: np.ndarray,
    rank: int,
    lowering: LayerLowering,
    reverse: bool,
    padded: bool,
) -> str:
    """States x_t = λ ⊙ x_{t∓1} + v_t on the layout (*lead, T, 2) (recurrence.py), by the
    lowering's method; ``padded``: T is a multiple of ``lowering.chunk`` already."""
    if lowering.method == "logdepth":
        return logdepth_recurrence(g, v, lam, rank, lowering.steps, reverse)
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


def entering_states(
    g: GraphBuilder, ends: str, lam: np.ndarray, rank: int, lowering: LayerLowering, reverse: bool
) -> str:
    """States entering each block-Toeplitz chunk: h_{c−1} (h_{c+1} in reverse) for the
    chunk-boundary states e_c carried by h_c = λ^Q h_{c∓1} + e_c (Q = toeplitz_chunk), by one
    Scan or by the chunked recurrence on λ^Q."""
    q = lowering.toeplitz_chunk
    if lowering.carry_by_scan:
        carried = scan_recurrence(g, ends, lam**q, rank, reverse)
    else:
        carried = chunked_recurrence(
            g, ends, lam**q, rank, lowering.chunk, lowering.levels, reverse
        )
    return shift_time(g, carried, rank, 1, reverse)
