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

from aire_export.models.modal import ModalSystem

GRID_POINTS = 1024  # uniform frequencies on [0, π]
PEAK_MODES = 64  # modes (largest individual gain) whose resonance gets extra points
PEAK_OFFSETS = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)  # in units of the resonance width
REFINE_PEAKS = 8  # local maxima zoomed into
REFINE_ROUNDS = 8
REFINE_POINTS = 17
CHUNK = 256  # frequencies per batched evaluation


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
            "bound": _json_float(self.bound),
            "measured_hinf": _json_float(self.measured_hinf),
            "h2": _json_float(self.h2),
            "removed_states": self.removed_states,
            "rho": self.rho,
            "omega_peak": self.omega_peak,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Certificate:
        def num(key: str) -> float:
            value = data.get(key)
            return math.inf if value is None else float(value)

        return cls(
            bound=num("bound"),
            measured_hinf=num("measured_hinf"),
            h2=num("h2"),
            removed_states=int(data.get("removed_states", 0)),
            rho=float(data.get("rho", 0.0)),
            omega_peak=float(data.get("omega_peak", 0.0)),
        )


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


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
    omega = np.asarray(omega, dtype=np.float64)
    if system.P == 0:
        return np.zeros(omega.size)
    evaluate = _siso_gain if system.channels is not None else _mimo_gain
    return np.concatenate(
        [evaluate(system, omega[i : i + CHUNK]) for i in range(0, omega.size, CHUNK)]
    )


def _mimo_gain(system: ModalSystem, omega: np.ndarray) -> np.ndarray:
    lam_hat, B_hat = _hat_modes(system)
    dirs = _directions(system)
    # G(ω) = L diag(w(ω)) R with the directions stacked along the mode axis
    L = np.concatenate([_hat_outputs(system, d) for d, _ in dirs], axis=1)  # (H_out, M)
    R = np.concatenate([B_hat for _ in dirs], axis=0)  # (M, H_in)
    W = np.concatenate([_resolvents(lam_hat, omega, sign) for _, sign in dirs], axis=1)
    # σ(L diag(w) R) = σ(R_L diag(w) R_Rᵀ) with thin QRs, when M is smaller than H
    if L.shape[1] < L.shape[0]:
        L = np.linalg.qr(L, mode="r")
    if R.shape[0] < R.shape[1]:
        R = np.linalg.qr(R.T, mode="r").T
    G = (L[None, :, :] * W[:, None, :]) @ R  # (F, a, b), one batched BLAS product
    Gh = G.conj().transpose(0, 2, 1)
    gram = G @ Gh if G.shape[1] <= G.shape[2] else Gh @ G  # σ_max² = λ_max of the smaller Gram
    return np.sqrt(np.maximum(np.linalg.eigvalsh(gram)[:, -1], 0.0))


def _siso_gain(system: ModalSystem, omega: np.ndarray) -> np.ndarray:
    lam_hat, b_hat = _hat_modes(system)  # b̂ (2P, 1)
    channels = np.concatenate([system.channels, system.channels])
    order = np.argsort(channels, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(channels[order]) != 0])
    g = 0.0
    for direction, sign in _directions(system):
        coef = _hat_outputs(system, direction)[0] * b_hat[:, 0]  # (2P,)
        terms = (_resolvents(lam_hat, omega, sign) * coef)[:, order]
        g = g + np.add.reduceat(terms, starts, axis=1)  # (F, channels present)
    return np.abs(g).max(axis=1)


def hinf_norm(system: ModalSystem, grid: int = GRID_POINTS) -> tuple[float, float]:
    """(sup_ω σ_max G(e^{iω}), the ω of the peak), ω ∈ [0, π]; see the module docstring."""
    if system.P == 0:
        return 0.0, 0.0
    mags = np.abs(system.lam)
    if mags.max() >= 1:
        return math.inf, 0.0
    omega = np.concatenate([np.linspace(0.0, np.pi, grid), _resonances(system)])
    omega = np.unique(np.clip(omega, 0.0, np.pi))
    values = gain(system, omega)
    best = int(np.argmax(values))
    peak, at = float(values[best]), float(omega[best])
    padded = np.concatenate([[-np.inf], values, [-np.inf]])
    maxima = np.flatnonzero((values >= padded[:-2]) & (values >= padded[2:]))  # endpoints too
    top = maxima[np.argsort(-values[maxima], kind="stable")][:REFINE_PEAKS]
    last = omega.size - 1
    value, where = _zoom(system, omega[np.maximum(top - 1, 0)], omega[np.minimum(top + 1, last)])
    return (value, where) if value > peak else (peak, at)


def _resonances(system: ModalSystem) -> np.ndarray:
    """Frequencies at and around |arg λ̄_j| for the modes with the largest individual gains."""
    mags = np.abs(system.lam)
    c2 = np.max(np.stack(system.c_norm2()), axis=0)
    individual = np.sqrt(c2 * system.b_norm2()) / (1 - mags)
    top = np.argsort(-individual, kind="stable")[:PEAK_MODES]
    centre = np.abs(np.angle(system.lam[top]))
    width = np.maximum(1 - mags[top], 1e-12)
    return (centre[:, None] + width[:, None] * np.array(PEAK_OFFSETS)[None, :]).ravel()


def _zoom(system: ModalSystem, lo: np.ndarray, hi: np.ndarray) -> tuple[float, float]:
    """Best (value, ω) within the brackets [lo_k, hi_k], all zoomed together: each round samples
    every bracket and shrinks it to the neighbours of its best sample."""
    best, at = -math.inf, 0.0
    for _ in range(REFINE_ROUNDS):
        omega = np.linspace(lo, hi, REFINE_POINTS, axis=1)  # (brackets, points)
        values = gain(system, omega.ravel()).reshape(omega.shape)
        i = np.argmax(values, axis=1)
        rows = np.arange(omega.shape[0])
        k = int(np.argmax(values[rows, i]))
        if values[k, i[k]] > best:
            best, at = float(values[k, i[k]]), float(omega[k, i[k]])
        step = omega[:, 1] - omega[:, 0]
        centre = omega[rows, i]
        lo, hi = np.maximum(centre - step, 0.0), np.minimum(centre + step, np.pi)
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
