"""The modal view: every SSM layer as a discrete-time diagonal system (DESIGN §2, step 2).

Scores, selection, certificates and plots only ever see this view, so a new architecture needs
only an adapter that produces it. Glossary (paper notation):

    P       number of stored states (modes) of the layer
    lam     discrete eigenvalues λ̄_i, complex (P,)
    B       discrete input matrix B̄, complex (P, H_in)   (row B_i drives state i)
    C       output matrices C̃, complex (H_out, P); two of them (C_fwd, C_bwd) when bidirectional.
            C̃ is not discretized, so it may stay in the model's own precision (complex64 for
            float32 weights: the same values, no float64 copy); ``dense_C`` and the norms
            compute in float64
    D       feedthrough, real (H,), diagonal
    s       output scale: 2 when ``conj_sym`` (each stored state stands for a conjugate pair and
            the layer outputs 2·Re(C x)), else 1 (the layer outputs Re(C x))

Recurrence (forward direction), with x_{-1} = 0:

    x_k = λ̄ ⊙ x_{k-1} + B̄ u_k,        y_k = s·Re(C x_k) + D ⊙ u_k

A bidirectional layer adds a backward scan over the same λ̄ and B̄u that includes the current
input, x^b_k = λ̄ ⊙ x^b_{k+1} + B̄ u_k, read out with its own C.

SISO banks (S4D): each state reads one input channel and writes the same output channel. Such
a system sets ``channels`` (P,) and stores only the scalar gains: B is (P, 1) and each C is
(1, P). :meth:`dense_B` / :meth:`dense_C` give the equivalent dense matrices.

Units: states that must be pruned together share a unit id (``units``, values 0..U-1). For
S5 and per-channel S4D every state is its own unit; for S4D with A shared across channels a
unit is one continuous mode n across all channels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def conj_scale(conj_sym: bool) -> float:
    """s in y = s·Re(C x) + D u: 2 when each stored state stands for a conjugate pair, else 1."""
    return 2.0 if conj_sym else 1.0


@dataclass(frozen=True, eq=False)
class ModalSystem:
    lam: np.ndarray
    B: np.ndarray
    C: tuple[np.ndarray, ...]
    D: np.ndarray
    conj_sym: bool
    channels: np.ndarray | None = None
    units: np.ndarray | None = None
    name: str = ""
    # per unit: energy the unit's removal changes besides its states' (a bypassed channel's
    # feedthrough D_h → 1, prune/channels.py); None: nothing besides the states
    unit_feedthrough_energy: np.ndarray | None = None

    def __post_init__(self) -> None:
        P = self.lam.shape[0]
        if self.lam.ndim != 1:
            raise ValueError(f"lam must be (P,), got {self.lam.shape}")
        if self.B.shape[0] != P:
            raise ValueError(f"B must have P={P} rows, got {self.B.shape}")
        if not 1 <= len(self.C) <= 2:
            raise ValueError("C must be a tuple of one (forward) or two (forward, backward) arrays")
        for c in self.C:
            if c.shape[1] != P:
                raise ValueError(f"C must have P={P} columns, got {c.shape}")
        if self.channels is not None and self.channels.shape != (P,):
            raise ValueError(f"channels must be (P,)={P}, got {self.channels.shape}")
        if self.units is not None and self.units.shape != (P,):
            raise ValueError(f"units must be (P,)={P}, got {self.units.shape}")

    # ---- sizes -------------------------------------------------------------------------
    @property
    def P(self) -> int:
        """Number of stored states."""
        return int(self.lam.shape[0])

    @property
    def H(self) -> int:
        """Model width (input and output channels)."""
        return int(self.D.shape[0])

    @property
    def bidirectional(self) -> bool:
        return len(self.C) == 2

    @property
    def output_scale(self) -> float:
        """s in y = s·Re(C x) + D u: 2 for conjugate-symmetric storage, else 1."""
        return conj_scale(self.conj_sym)

    @property
    def unit_ids(self) -> np.ndarray:
        """(P,) unit id of each state; identity when every state is its own unit."""
        return np.arange(self.P) if self.units is None else self.units

    @property
    def n_units(self) -> int:
        return int(self.unit_ids.max()) + 1 if self.P else 0

    # ---- norms used by scores ------------------------------------------------------------
    def b_norm2(self) -> np.ndarray:
        """(P,) ||B_i||², the squared norm of the row driving state i."""
        return _squared_norms(self.B, axis=1)

    def c_norm2(self) -> tuple[np.ndarray, ...]:
        """Per direction, (P,) ||C_i||², the squared norm of the column reading state i."""
        return tuple(_squared_norms(c, axis=0) for c in self.C)

    # ---- dense forms -----------------------------------------------------------------------
    def dense_B(self) -> np.ndarray:
        """(P, H) dense B̄ (expands a SISO bank)."""
        if self.channels is None:
            return self.B
        out = np.zeros((self.P, self.H), dtype=complex)
        out[np.arange(self.P), self.channels] = self.B[:, 0]
        return out

    def dense_C(self, direction: int = 0) -> np.ndarray:
        """(H, P) dense C̃ of one direction (expands a SISO bank), complex128."""
        c = np.asarray(self.C[direction], dtype=np.complex128)  # no copy when already so
        if self.channels is None:
            return c
        out = np.zeros((self.H, self.P), dtype=complex)
        out[self.channels, np.arange(self.P)] = c[0]
        return out

    def subsystem(self, states: np.ndarray) -> ModalSystem:
        """The system restricted to the given state indices (D is kept as is)."""
        states = np.asarray(states, dtype=np.int64)
        return ModalSystem(
            lam=self.lam[states],
            B=self.B[states],
            C=tuple(c[:, states] for c in self.C),
            D=self.D,
            conj_sym=self.conj_sym,
            channels=None if self.channels is None else self.channels[states],
            units=None if self.units is None else self.units[states],
            name=self.name,
        )

    def impulse_response(self, T: int, direction: int = 0) -> np.ndarray:
        """Markov parameters h_m = s·Re(C λ̄^m B̄), m = 0..T-1, real (T, H_out, H_in).

        For the forward direction, y_k = Σ_m h_m u_{k-m} + D u_k. For the backward direction
        (bidirectional layers) the same kernel acts anti-causally, y_k += Σ_m h^b_m u_{k+m}.
        The feedthrough D is not included.
        """
        powers = self.lam[None, :] ** np.arange(T)[:, None]  # (T, P)
        B = self.dense_B()  # (P, H)
        C = self.dense_C(direction)  # (H, P)
        h = np.einsum("hp,tp,pj->thj", C, powers, B)
        return self.output_scale * h.real


def _squared_norms(x: np.ndarray, axis: int) -> np.ndarray:
    """Σ |x|² along ``axis`` of a 2-D complex array, accumulated in float64, in one pass over
    memory when contiguous (a real view: re and im interleaved), without np.abs's square roots."""
    if x.dtype not in (np.complex64, np.complex128) or not x.flags.c_contiguous:
        x = np.asarray(x, dtype=np.complex128)
        return np.sum(x.real**2 + x.imag**2, axis=axis)
    v = x.view(x.real.dtype)  # (rows, 2·cols)
    if axis == 1:
        return np.einsum("ij,ij->i", v, v, dtype=np.float64)
    s = np.einsum("ij,ij->j", v, v, dtype=np.float64)
    return s[0::2] + s[1::2]


@dataclass(frozen=True, eq=False)
class SelectiveView:
    """The scoring view of a selective layer (Mamba, DESIGN §3.5): its B_t, C_t and Δ_t depend
    on the input, so the LTI quantities of :class:`ModalSystem` have no closed form and are
    measured instead, per state n (one state spans the layer's d_inner channels d: it is
    removed for the whole layer), in float64, over calibration sequences (b, t):

        λ̄_{t,d,n} = exp(Δ_{t,d} A_{d,n}),   x_{t,d,n} = λ̄_{t,d,n} x_{t−1,d,n} + Δ_{t,d} B_{t,n} u_{t,d}
        y_{t,d} = Σ_n C_{t,n} x_{t,d,n} + D_d u_{t,d}

    energy (N,)     E_n = E_{b,t}[Σ_d (C_{t,n} x_{t,d,n})²]: the expected output energy state n
                    contributes, eq. 10's AIRE energy generalized to the time-varying system
                    (for an LTI mode driven by white noise it is ‖C_n‖²‖B_n‖²/(1 − |λ̄_n|²))
    hankel (N,)     σ_n = Σ_d √(P_{d,n} Q_{d,n}), the diagonal of balanced truncation from
                    forward-pass statistics (GHOST, arXiv 2602.11408): controllability
                    P_{d,n} = E[x_{t,d,n}²] and observability Q_{d,n} = E[q_{t,d,n}] with the
                    backward recursion q_t = C_{t,n}² + λ̄_{t+1,d,n}² q_{t+1} (the energy a unit
                    state at t sends to all later outputs)
    magnitude (N,)  E_{b,t,d}[λ̄_{t,d,n}] (slow states first)
    max_abs_lambda (N,)  the largest λ̄_{t,d,n} seen (< 1: A < 0 and Δ > 0)

    Without calibration data (``calibrated`` False) only the nominal magnitudes are known,
    taken at Δ = softplus(dt_proj.bias) (the time step of a zero input); energy and hankel
    are NaN. ``distortion(removed)``: the measured relative change of the layer's output on
    the calibration data when the states ``removed`` are cut off (what the plan reports in
    place of the LTI certificate).

    ``operators``: the same statistics per inner channel d instead (S4oP's Mamba unit: the
    channel is cut out of the mixer), measured on the same data, None without calibration:

    energy (E,)     E_d = E_{b,t}[(y_{t,d} silu(z_{t,d}))²] ‖W_out[:, d]‖²: what channel d sends
                    into the residual stream (its gated output through out_proj; cross terms
                    between channels ignored, as eq. 10 ignores them between modes)
    hankel (E,)     Σ_n √(P_{d,n} Q_{d,n}), GHOST's statistic over the channel's states
    magnitude, max_abs_lambda (E,)   E_{b,t,n}[λ̄_{t,d,n}], max_{b,t,n} λ̄_{t,d,n}
    distortion      ‖Σ_{d ∈ removed} W_out[:, d] g_d‖ / ‖Σ_d W_out[:, d] g_d‖, g = y ⊙ silu(z):
                    the mixer's output change by the channels' own path (their share of Δ_t,
                    B_t and C_t through x_proj is not counted)
    """

    energy: np.ndarray
    hankel: np.ndarray
    magnitude: np.ndarray
    max_abs_lambda: np.ndarray
    calibrated: bool
    name: str = ""
    distortion: Callable[[np.ndarray], float] | None = None
    operators: SelectiveView | None = None

    @property
    def P(self) -> int:
        return int(self.magnitude.shape[0])

    @property
    def units(self) -> None:
        return None  # every state n is its own unit

    @property
    def unit_ids(self) -> np.ndarray:
        return np.arange(self.P)

    @property
    def n_units(self) -> int:
        return self.P

    @property
    def bidirectional(self) -> bool:
        return False

    @property
    def lam(self) -> np.ndarray:
        """|λ̄| per state for summaries (the largest seen, real)."""
        return self.max_abs_lambda


ScoringView = ModalSystem | SelectiveView
