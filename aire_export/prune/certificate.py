"""Certificates for a pruned layer: the appendix B.5 H∞ bound, the measured H∞ and the exact H2 error.

The error of pruning the set T from a layer is the removed subsystem G_T (same λ̄, B̄, C̃
restricted to T; D cancels). Notation as in :mod:`aire_export.models.modal`, s the output scale.

Transfer function. The Markov parameters are h_m = s·Re(C λ̄^m B̄), m ≥ 0 (``impulse_response``).
Writing Re(x) = (x + x̄)/2 doubles the modes into "hat" modes (λ̂, Ĉ, B̂) = ((λ̄, λ̄*), [C, C*],
[B̄; B̄*]), and with z = e^{iω}:

    G_f(e^{iω}) = Σ_m h_m e^{−iωm} = (s/2) Σ_j Ĉ_j B̂_jᵀ / (1 − λ̂_j e^{−iω})         (H_out, H_in)

Bidirectional layers: the backward scan adds Σ_m h^b_m u_{k+m} (it includes the current input,
like the forward one: the layer's output has both m = 0 terms, h^f_0 + h^b_0, nothing is
counted twice). Forward plus backward is one non-causal LTI operator with frequency response

    G(e^{iω}) = G_f(e^{iω}) + G_b(e^{−iω})

and its H∞ norm sup_ω σ_max G(e^{iω}) is its gain on ℓ²(ℤ); on a finite window (zero boundary
states) the layer is a compression of that operator, so its gain is no larger.

    measured H∞   sup over ω ∈ [0, π] (h is real, so G(e^{−iω}) = conj G(e^{iω})) of σ_max G,
                  on a uniform grid plus points at and around every mode's resonance
                  ω = |arg λ̄_j| (width 1 − |λ̄_j|), then zoomed around the highest local maxima.
                  Large MIMO layers: branch and bound with ‖G‖_F ≥ σ_max (closed form, cheap):
                  σ_max is computed in decreasing ‖G‖_F order until no remaining grid point
                  can beat the best value (at most MAX_EXACT points).
                  SISO banks (``channels``): G is diagonal, σ_max = max over channels of |g_h|.
                  A lower estimate of the true supremum (which the bound must exceed).

    bound (B.5)   ‖G_T‖∞ ≤ s·κ(ρ)·min(Σ_T √E_i, √|T| √(Σ_T E_i)),  κ(ρ) = √((1+ρ)/(1−ρ)),
                  ρ = max_T |λ̄_i|, E_i = ‖C_i‖²‖B_i‖²/(1 − |λ̄_i|²). Each hat mode j has
                  ‖Ĉ_j B̂_jᵀ/(1 − λ̂_j e^{−iω})‖∞ = ‖C_j‖‖B_j‖/(1 − |λ̄_j|) = κ(|λ̄_j|) √E_j and
                  there are two of them per state, weighted s/2: that is the factor s (2 for
                  conjugate pairs). Bidirectional: the sum of the forward and backward bounds
                  (triangle inequality), each with its own C. SISO banks: the bound of each
                  channel's system, maximized over channels (G is block diagonal).

    H2 (exact)    ‖G_T‖²_H2 = Σ_m ‖h_m‖²_F = (s/2)² Σ_{j,k} (Ĉ^H Ĉ)_{jk} (B̂* B̂ᵀ)_{jk} / (1 − λ̂_j* λ̂_k),
                  all cross terms between modes and conjugates included (AIRE's additive
                  energy keeps only the diagonal). Bidirectional: the two-sided kernel
                  (h^b_{−m}, …, h^f_0 + h^b_0, …, h^f_m): ‖h^f‖² + ‖h^b‖² + 2⟨h^f_0, h^b_0⟩_F.

A removed set containing a state with |λ̄| ≥ 1 (possible only with score_compat="official")
has an unbounded error: bound, measured H∞ and H2 are all +inf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from aire_export.json_values import finite_or_none, floats_or_inf
from aire_export.models.modal import ModalSystem

GRID_POINTS = 1024  # uniform frequencies on [0, π], plus points at every resonance:
PEAK_MODES = 64  # modes (largest individual gain) whose resonance gets extra points,
PEAK_OFFSETS = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)  # in units of the resonance width
EXACT_SIZE = 8  # up to this eigenproblem size σ_max is evaluated on the whole grid
MAX_EXACT = 1024  # else: at most this many exact evaluations, in decreasing ‖G‖_F order
REFINE_PEAKS = 2  # local maxima zoomed into
REFINE_ROUNDS = 12  # each round halves a bracket (2^12 ≈ 4·10³), then one parabolic step
REFINE_POINTS = 5
SCREEN_CHUNK = 16  # exact evaluations per branch-and-bound step
CHUNK = 64  # frequencies per batched evaluation (bounds the (F, r, 2P) temporaries)


@dataclass(frozen=True)
class Certificate:
    """Per-layer guarantee for the removed states (values in the layer's output units)."""

    bound: float  # appendix B.5 upper bound on ‖G − G̃‖∞
    measured_hinf: float  # sup_ω σ_max of the removed subsystem (grid + refinement)
    h2: float  # exact ‖G − G̃‖_H2 (closed form)
    removed_states: int
    rho: float  # max |λ̄| over the removed states (0 if none)
    omega_peak: float  # frequency (rad/step) of the measured peak

    def to_json(self) -> dict[str, Any]:
        return {
            "bound": finite_or_none(self.bound),
            "measured_hinf": finite_or_none(self.measured_hinf),
            "h2": finite_or_none(self.h2),
            "removed_states": self.removed_states,
            "rho": self.rho,
            "omega_peak": self.omega_peak,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Certificate:
        bound, hinf, h2 = floats_or_inf([data.get(k) for k in ("bound", "measured_hinf", "h2")])
        return cls(
            bound=float(bound),
            measured_hinf=float(hinf),
            h2=float(h2),
            removed_states=int(data.get("removed_states", 0)),
            rho=float(data.get("rho", 0.0)),
            omega_peak=float(data.get("omega_peak", 0.0)),
        )


def certify(system: ModalSystem, removed: np.ndarray) -> Certificate:
    """The certificate of removing the states ``removed`` (indices into ``system``)."""
    removed = np.asarray(removed, dtype=np.int64)
    if removed.size == 0:
        return Certificate(0.0, 0.0, 0.0, 0, 0.0, 0.0)
    sub = system.subsystem(removed)
    rho = float(np.abs(sub.lam).max())
    if rho >= 1:
        return Certificate(math.inf, math.inf, math.inf, int(removed.size), rho, 0.0)
    measured, omega = hinf_norm(sub)
    return Certificate(hinf_bound(sub), measured, h2_norm(sub), int(removed.size), rho, omega)


# ---- the bound ---------------------------------------------------------------------------
def hinf_bound(system: ModalSystem) -> float:
    """Appendix B.5: s·κ(ρ)·min(Σ√E_i, √|T|·√ΣE_i) per direction (summed), per SISO channel
    (maximized); +inf if some |λ̄_i| ≥ 1."""
    if system.P == 0:
        return 0.0
    mags = np.abs(system.lam)
    if mags.max() >= 1:
        return math.inf
    b2 = system.b_norm2()
    energies = [c2 * b2 / (1 - mags**2) for c2 in system.c_norm2()]  # per direction (P,)
    groups = _channel_groups(system)
    best = 0.0
    for states in groups:
        rho = mags[states].max()
        kappa = math.sqrt((1 + rho) / (1 - rho))
        terms = 0.0
        for e in energies:
            e = e[states]
            terms += min(np.sqrt(e).sum(), math.sqrt(e.size) * math.sqrt(e.sum()))
        best = max(best, system.output_scale * kappa * terms)
    return float(best)


def _channel_groups(system: ModalSystem) -> list[np.ndarray]:
    """State indices per SISO channel, or all states as one MIMO group."""
    if system.channels is None:
        return [np.arange(system.P)]
    order = np.argsort(system.channels, kind="stable")
    splits = np.flatnonzero(np.diff(system.channels[order])) + 1
    return np.split(order, splits)


# ---- frequency response -----------------------------------------------------------------------
def _hat_modes(system: ModalSystem) -> tuple[np.ndarray, np.ndarray]:
    """(λ̂ (2P,), B̂ (2P, H_in)): the modes and their conjugates."""
    B = system.B if system.channels is not None else system.dense_B()
    return np.concatenate([system.lam, system.lam.conj()]), np.concatenate([B, B.conj()])


def _hat_outputs(system: ModalSystem, direction: int) -> np.ndarray:
    """Ĉ of one direction, scaled by s/2: (H_out, 2P) ((1, 2P) gains for a SISO bank)."""
    C = system.C[direction] if system.channels is not None else system.dense_C(direction)
    C = np.asarray(C, dtype=np.complex128)  # C̃ may be complex64 (see ModalSystem)
    return 0.5 * system.output_scale * np.concatenate([C, C.conj()], axis=1)


def _directions(system: ModalSystem) -> list[tuple[int, int]]:
    """(direction, sign): the forward kernel is evaluated at e^{iω}, the backward at e^{−iω}."""
    return [(0, 1), (1, -1)][: len(system.C)]


def _resolvents(lam_hat: np.ndarray, omega: np.ndarray, sign: int) -> np.ndarray:
    """(F, 2P) 1 / (1 − λ̂_j e^{−i·sign·ω})."""
    return 1.0 / (1.0 - lam_hat[None, :] * np.exp(-1j * sign * omega)[:, None])


def frequency_response(system: ModalSystem, omega: np.ndarray) -> np.ndarray:
    """(F, H_out, H_in) complex G(e^{iω}) = G_f(e^{iω}) [+ G_b(e^{−iω})], dense (small systems)."""
    omega = np.asarray(omega, dtype=np.float64)
    dense = system
    if system.channels is not None:  # expand the SISO bank to dense matrices
        dense = ModalSystem(
            lam=system.lam,
            B=system.dense_B(),
            C=tuple(system.dense_C(d) for d in range(len(system.C))),
            D=system.D,
            conj_sym=system.conj_sym,
        )
    lam_hat, B_hat = _hat_modes(dense)
    out = np.zeros((omega.size, system.H, system.H), dtype=complex)
    for direction, sign in _directions(system):
        W = _resolvents(lam_hat, omega, sign)
        out += np.einsum("hj,fj,jk->fhk", _hat_outputs(dense, direction), W, B_hat)
    return out


def gain(system: ModalSystem, omega: np.ndarray) -> np.ndarray:
    """(F,) σ_max G(e^{iω}): the largest singular value (SISO banks: the largest |g_h|)."""
    return _Response(system).gain(np.asarray(omega, dtype=np.float64))


class _Response:
    """G(e^{iω}) factored once for evaluation at many frequencies.

    MIMO: G(ω) = K(ω) B̂ with K(ω) = Σ_d Ĉ_d diag(w_d(ω)) (Ĉ_d scaled by s/2, w_d the
    resolvents of direction d). Thin QRs [Ĉ_f Ĉ_b] = Q [E_f E_b] and B̂ᴴ = Q′ R give
    σ(G) = σ(Σ_d E_d diag(w_d) Rᴴ), of size at most min(H, 2P·dirs) × min(H, 2P): the exact
    gain costs one small Hermitian eigenvalue problem per frequency. The Frobenius norm is far
    cheaper and needs no H at all: ‖G‖²_F = Σ_{d,e} w_dᴴ (E_dᴴE_e ∘ (RᴴR)ᵀ) w_e.
    SISO banks: per-channel sums of (2P) terms; the exact gain is already cheap.
    """

    def __init__(self, system: ModalSystem) -> None:
        self.siso = system.channels is not None
        self.lam, B_hat = _hat_modes(system)
        self.directions = _directions(system)
        outputs = [_hat_outputs(system, d) for d, _ in self.directions]  # (H_out, 2P) each
        if self.siso:
            channels = np.concatenate([system.channels, system.channels])
            self.order = np.argsort(channels, kind="stable")
            self.starts = np.flatnonzero(np.r_[True, np.diff(channels[self.order]) != 0])
            self.coefs = [c[0] * B_hat[:, 0] for c in outputs]  # (2P,) per direction
            self.size = 1
            return
        modes = self.lam.size
        stacked = np.concatenate(outputs, axis=1)  # (H_out, dirs·2P)
        if stacked.shape[1] < stacked.shape[0]:
            stacked = np.linalg.qr(stacked, mode="r")
        self.left = np.split(stacked, len(outputs), axis=1)  # E_d: (r_L, 2P)
        self.right = (
            np.linalg.qr(B_hat.conj().T, mode="r").conj().T if modes < B_hat.shape[1] else B_hat
        )
        self.size = min(stacked.shape[0], self.right.shape[1])  # the eigenproblem's dimension
        self.left_t = [torch.from_numpy(np.ascontiguousarray(e)) for e in self.left]
        self.right_t = torch.from_numpy(np.ascontiguousarray(self.right))
        gram_right = (self.right @ self.right.conj().T).T  # (RᴴR)ᵀ, (2P, 2P)
        self.frobenius_terms = [
            (d, e, (self.left[d].conj().T @ self.left[e]) * gram_right)
            for d in range(len(outputs))
            for e in range(len(outputs))
        ]

    def resolvents(self, omega: np.ndarray) -> list[np.ndarray]:
        """Per direction, (F, 2P) w_d = 1 / (1 − λ̂ e^{−i·sign·ω})."""
        return [_resolvents(self.lam, omega, sign) for _, sign in self.directions]

    def gain(self, omega: np.ndarray) -> np.ndarray:
        """Exact σ_max per frequency."""
        if self.lam.size == 0:
            return np.zeros(omega.size)
        return np.concatenate(
            [self._gain(omega[i : i + CHUNK]) for i in range(0, omega.size, CHUNK)]
        )

    def _gain(self, omega: np.ndarray) -> np.ndarray:
        W = self.resolvents(omega)
        if self.siso:
            g = sum(
                np.add.reduceat((w * coef)[:, self.order], self.starts, axis=1)
                for w, coef in zip(W, self.coefs, strict=True)
            )
            return np.abs(g).max(axis=1)
        # torch: its batched complex products and eigvalsh are 3-5× faster than numpy's here
        K = sum(
            left[None, :, :] * torch.from_numpy(w)[:, None, :]
            for left, w in zip(self.left_t, W, strict=True)
        )
        G = K @ self.right_t  # (F, r_L, r_R)
        gram = G @ G.mH if G.shape[1] <= G.shape[2] else G.mH @ G  # σ_max² = λ_max(smaller)
        return np.sqrt(np.maximum(torch.linalg.eigvalsh(gram)[:, -1].numpy(), 0.0))

    def frobenius(self, omega: np.ndarray) -> np.ndarray:
        """‖G(e^{iω})‖_F ≥ σ_max (MIMO), for screening many frequencies cheaply."""
        W = self.resolvents(omega)
        total = sum(
            np.einsum("fj,fj->f", W[d].conj() @ terms, W[e]) for d, e, terms in self.frobenius_terms
        )
        return np.sqrt(np.maximum(total.real, 0.0))


def hinf_norm(system: ModalSystem, grid: int = GRID_POINTS) -> tuple[float, float]:
    """(sup_ω σ_max G(e^{iω}), the ω of the peak), ω ∈ [0, π]; see the module docstring."""
    if system.P == 0:
        return 0.0, 0.0
    if np.abs(system.lam).max() >= 1:
        return math.inf, 0.0
    response = _Response(system)
    omega = np.unique(
        np.clip(np.concatenate([np.linspace(0.0, np.pi, grid), _resonances(system)]), 0.0, np.pi)
    )
    if response.size <= EXACT_SIZE:  # exact everywhere is cheap
        values = response.gain(omega)
    else:  # branch and bound: ‖G‖_F ≥ σ_max, so a point whose Frobenius norm is below the
        # best exact value so far cannot hold the grid's maximum
        values = np.full(omega.size, -np.inf)
        upper = response.frobenius(omega)
        order = np.argsort(-upper, kind="stable")
        best = -np.inf
        for start in range(0, min(omega.size, MAX_EXACT), SCREEN_CHUNK):
            batch = order[start : start + SCREEN_CHUNK]
            if upper[batch[0]] <= best:
                break
            values[batch] = response.gain(omega[batch])
            best = max(best, float(values[batch].max()))
    best = int(np.argmax(values))
    peak, at = float(values[best]), float(omega[best])
    top = _top_local_maxima(values, REFINE_PEAKS)
    last = omega.size - 1
    value, where = _zoom(response, omega[np.maximum(top - 1, 0)], omega[np.minimum(top + 1, last)])
    return (value, where) if value > peak else (peak, at)


def _top_local_maxima(values: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` largest local maxima of a sampled curve (endpoints included)."""
    padded = np.concatenate([[-np.inf], values, [-np.inf]])
    maxima = np.flatnonzero((values >= padded[:-2]) & (values >= padded[2:]))
    return maxima[np.argsort(-values[maxima], kind="stable")][:count]


def _resonances(system: ModalSystem) -> np.ndarray:
    """Frequencies at and around |arg λ̄_j| for the modes with the largest individual gains."""
    mags = np.abs(system.lam)
    c2 = np.max(np.stack(system.c_norm2()), axis=0)
    individual = np.sqrt(c2 * system.b_norm2()) / (1 - mags)
    top = np.argsort(-individual, kind="stable")[:PEAK_MODES]
    centre = np.abs(np.angle(system.lam[top]))
    width = np.maximum(1 - mags[top], 1e-12)
    return np.clip(
        (centre[:, None] + width[:, None] * np.array(PEAK_OFFSETS)[None, :]).ravel(), 0, np.pi
    )


def _zoom(response: _Response, lo: np.ndarray, hi: np.ndarray) -> tuple[float, float]:
    """Best (value, ω) within the brackets [lo_k, hi_k], all zoomed together: each round samples
    every bracket and re-centres it, half as wide, on its best sample; a last step evaluates
    the vertex of the parabola through the best sample and its neighbours."""
    best, at = -math.inf, 0.0
    rows = np.arange(lo.size)
    for _ in range(REFINE_ROUNDS):
        omega = np.linspace(lo, hi, REFINE_POINTS, axis=1)  # (brackets, points)
        values = response.gain(omega.ravel()).reshape(omega.shape)
        i = np.clip(np.argmax(values, axis=1), 1, REFINE_POINTS - 2)
        k = int(np.argmax(values.max(axis=1)))
        if values[k].max() > best:
            best, at = float(values[k].max()), float(omega[k, np.argmax(values[k])])
        step = omega[:, 1] - omega[:, 0]
        lo, hi = np.maximum(omega[rows, i] - step, 0.0), np.minimum(omega[rows, i] + step, np.pi)
    # parabolic vertex through (i−1, i, i+1) of the last round
    y0, y1, y2 = values[rows, i - 1], values[rows, i], values[rows, i + 1]
    curvature = y0 - 2 * y1 + y2
    shift = np.where(curvature < 0, 0.5 * (y0 - y2) / np.where(curvature < 0, curvature, 1), 0)
    vertex = np.clip(omega[rows, i] + np.clip(shift, -1, 1) * step, 0.0, np.pi)
    values = response.gain(vertex)
    k = int(np.argmax(values))
    if values[k] > best:
        best, at = float(values[k]), float(vertex[k])
    return best, at


# ---- H2 -------------------------------------------------------------------------------------
def h2_norm(system: ModalSystem) -> float:
    """Exact ‖G‖_H2 of the (possibly two-sided) kernel; see the module docstring."""
    if system.P == 0:
        return 0.0
    if np.abs(system.lam).max() >= 1:
        return math.inf
    total = 0.0
    for states in _channel_groups(system):
        group = system.subsystem(states)
        lam_hat, B_hat = _hat_modes(group)
        gram_B = B_hat.conj() @ B_hat.T  # (B̂* B̂ᵀ)_{jk} = Σ_a conj(B̂_ja) B̂_ka
        decay = 1.0 / (1.0 - lam_hat.conj()[:, None] * lam_hat[None, :])
        first = []
        for direction in range(len(group.C)):
            C_hat = _hat_outputs(group, direction)
            total += float(np.sum((C_hat.conj().T @ C_hat) * gram_B * decay).real)
            first.append((C_hat @ B_hat).real)  # h_0 of this direction (H_out, H_in)
        if len(first) == 2:  # the shared m = 0 position of the two-sided kernel
            total += 2.0 * float(np.sum(first[0] * first[1]))
    return math.sqrt(max(total, 0.0))
