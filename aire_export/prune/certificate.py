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

    measured H∞   sup over ω ∈ [0, π] (h is real, so G(e^{−iω}) = conj G(e^{iω})) of σ_max G.
                  Candidates: a uniform grid plus points at and around the resonances
                  ω = |arg λ̄_j| (width 1 − |λ̄_j|) of the modes with the largest gains.
                  1. Sample. Cheap layers (SISO banks, where G is diagonal and σ_max is
                     max_h |g_h|; eigenproblems up to EXACT_SIZE): σ_max at every candidate.
                     Large MIMO layers: ‖G‖_F ≥ σ_max at every candidate, O(2P) each by
                     partial fractions (``_partial_fractions``), then σ_max only at the local
                     maxima of ‖G‖_F and at 0 and π, in decreasing ‖G‖_F order, until the
                     next ‖G‖_F is below the best σ_max found (after the first batch a
                     Cholesky factorization of γ²I − GGᴴ, γ = ASCENT_WITHIN·best, stands in
                     for the eigenproblem wherever σ_max < γ). Eigenproblems in complex64.
                  2. Ascend from the best sampled local maxima (up to ASCENTS, within
                     ASCENT_WITHIN of the best) in continuous ω with the exact slope
                     σ′ = Re(uᴴ G′ v), (u, v) the top singular pair: steps doubling while σ
                     rises, then regula falsi (Illinois) for σ′ = 0 in the bracket where σ′
                     changes sign, each ascent to convergence. The last steps, and the value
                     returned, in complex128.
                  On the pathx workload (H = 128, ratios 0.3–0.9) that is 26–98 matrices G(ω)
                  per layer, most seeds settled by the Cholesky test, against ~480–560
                  eigenproblems (ratio 0.7) when σ_max was computed at every candidate above
                  the best ‖G‖_F and a 122-point zoom followed: 8.6–10.6× faster at ratios
                  0.5–0.9 (benchmarks/RESULTS.md).
                  What it guarantees: the value is σ_max at the ω returned, so a lower
                  estimate of the true supremum (which the bound must exceed), at least as
                  high as every candidate sampled; that ω is (unless an ascent ran out of
                  REFINE_STEPS) a local maximum of σ_max: σ′ = 0, a kink where singular
                  values cross, or 0 or π. What it does not:
                  that no unsampled candidate is higher; a peak is found when its basin holds
                  a sampled local maximum of ‖G‖_F (or is at 0 or π). On every layer of the
                  shipped models and of the pathx workload at ratios 0.3–0.9 it gives the
                  values of the exhaustive search it replaced to ≤ 1e-12 relative
                  (benchmarks/certificates.py); tests compare it with a dense brute-force grid
                  on random layers with resonances 1e-5 inside the unit circle.

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
ASCENTS = 6  # ascents from the best sampled local maxima,
ASCENT_WITHIN = 0.9  # those within this factor of the best
REFINE_STEPS = 40  # at most this many slope evaluations per ascent
REFINE_WIDTH = 1e-13  # rad: a bracket this narrow is done
REFINE_TOLERANCE = 1e-11  # or one where the peak can gain no more than this, relative
BOUNDARY_PROBE = 1e-3  # a peak at 0 or π is probed this far inside (fraction of a grid step)
SCREEN_CHUNK = 8  # exact evaluations per branch-and-bound step
SINGLE_ERROR = 1e-5  # relative error allowed for σ_max in complex64 (actual: ~1e-7)
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


@dataclass(frozen=True)
class _Peak:
    value: np.ndarray  # (F,) σ_max
    slope: np.ndarray  # (F,) dσ_max/dω (zeros when not asked for)


class _Response:
    """G(e^{iω}) factored once for evaluation at many frequencies.

    MIMO: G(ω) = Σ_d E_d diag(w_d(ω)) R (Ĉ_d scaled by s/2, w_d the resolvents of direction
    d). Thin QRs [Ĉ_f Ĉ_b] = Q [E_f E_b] and B̂ᴴ = Q′ R give σ(G) = σ(Σ_d E_d diag(w_d) R), of
    size at most min(H, 2P·dirs) × min(H, 2P): the exact gain costs one small Hermitian
    eigenvalue problem per frequency (complex64 on request: ~2× faster, ~1e-7 relative). The
    Frobenius norm needs no eigenproblem and no H: O(2P) per frequency (``_partial_fractions``).
    SISO banks: per-channel sums of (2P) terms; the exact gain is already cheap.

    ``peak`` adds the slope dσ/dω of each gain (Hellmann–Feynman): with (u, v) the top
    singular pair, σ′ = Re(uᴴ G′ v) = Re Σ_{d,j} w′_{d,j} (uᴴE_d)_j (Rv)_j,
    w′ = −i·sign·λ̂ e^{−i·sign·ω} w² (SISO: d|g_h|/dω = Re(ḡ_h g′_h)/|g_h|, h the largest).
    """

    def __init__(self, system: ModalSystem) -> None:
        self.siso = system.channels is not None
        self.lam, B_hat = _hat_modes(system)
        self.directions = _directions(system)
        outputs = [_hat_outputs(system, d) for d, _ in self.directions]  # (H_out, 2P) each
        if self.siso:  # modes sorted by channel, so that each channel's sum is one slice
            channels = np.concatenate([system.channels, system.channels])
            order = np.argsort(channels, kind="stable")
            self.lam = self.lam[order]
            self.starts = np.flatnonzero(np.r_[True, np.diff(channels[order]) != 0])
            self.coefs = [c[0, order] * B_hat[order, 0] for c in outputs]  # (2P,) per direction
            self.group = np.searchsorted(self.starts, np.arange(order.size), "right") - 1
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
        self.single_t = (
            [e.to(torch.complex64) for e in self.left_t],
            self.right_t.to(torch.complex64),
        )
        gram_right = (self.right @ self.right.conj().T).T  # (RᴴR)ᵀ, (2P, 2P)
        self.frobenius_terms = _partial_fractions(self.lam, self.left, gram_right)

    def resolvents(self, omega: np.ndarray) -> list[np.ndarray]:
        """Per direction, (F, 2P) w_d = 1 / (1 − λ̂ e^{−i·sign·ω}). The hat modes are (λ̄, λ̄*),
        so the backward ones are the forward ones conjugated, halves swapped:
        1/(1 − λ̂_j e^{+iω}) = conj(1/(1 − λ̂_j* e^{−iω}))."""
        forward = _resolvents(self.lam, omega, 1)
        if len(self.directions) == 1:
            return [forward]
        return [forward, _resolvents(self.lam, omega, -1) if self.siso else self._mirror(forward)]

    def _mirror(self, forward: np.ndarray) -> np.ndarray:
        """The backward direction's (F, 2P) array of a forward one (halves swapped, conj)."""
        half = self.lam.size // 2
        return np.concatenate([forward[:, half:], forward[:, :half]], axis=1).conj()

    def _slopes(self, omega: np.ndarray, W: list[np.ndarray]) -> list[np.ndarray]:
        """Per direction, (F, 2P) w′_d = dw_d/dω = −i·sign·λ̂ e^{−i·sign·ω} w_d²."""
        turn = [
            -1j * sign * self.lam[None, :] * np.exp(-1j * sign * omega)[:, None]
            for _, sign in self.directions
        ]
        return [t * w**2 for t, w in zip(turn, W, strict=True)]

    def gain(self, omega: np.ndarray, single: bool = False) -> np.ndarray:
        """Exact σ_max per frequency (``single``: MIMO in complex64, relative error ~1e-6)."""
        return self.peak(omega, slopes=False, single=single).value

    def peak(self, omega: np.ndarray, slopes: bool = True, single: bool = False) -> _Peak:
        """σ_max per frequency and, with ``slopes``, dσ_max/dω and the probe coefficients."""
        omega = np.asarray(omega, dtype=np.float64)
        parts = [
            self._peak(omega[i : i + CHUNK], slopes, single) for i in range(0, omega.size, CHUNK)
        ]
        if not parts or self.lam.size == 0:
            return _Peak(np.zeros(omega.size), np.zeros(omega.size))
        return _Peak(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("value", "slope")))

    def _peak(self, omega: np.ndarray, slopes: bool, single: bool) -> _Peak:
        W = self.resolvents(omega)
        if self.siso:
            g = sum(
                np.add.reduceat(w * coef, self.starts, axis=1)
                for w, coef in zip(W, self.coefs, strict=True)
            )  # (F, channels)
            top = np.argmax(np.abs(g), axis=1)
            value = np.abs(g[np.arange(omega.size), top])
            if slopes:  # the top channel's own response, turned to be real at ω
                turn = g[np.arange(omega.size), top].conj() / np.maximum(value, 1e-300)
                mine = (self.group[None, :] == top[:, None]) * turn[:, None]  # (F, 2P)
                probes = np.stack([mine * coef[None, :] for coef in self.coefs], axis=1)
        else:
            G, gram, on_left = self._gram(W, single)
            top = torch.linalg.eigvalsh(gram)[:, -1]
            value = np.sqrt(np.maximum(top.numpy().astype(np.float64), 0.0))
            if slopes:
                probes = self._probes(G, gram, top, on_left)
        if not slopes:
            return _Peak(value, np.zeros(omega.size))
        slope = sum(
            np.sum(dw * probes[:, d, :], axis=1) for d, dw in enumerate(self._slopes(omega, W))
        )
        return _Peak(value, slope.real)

    def _gram(self, W: list[np.ndarray], single: bool) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """G (F, r_L, r_R) and the smaller of GGᴴ, GᴴG (σ_max² = its λ_max); whether GGᴴ."""
        # torch: its batched complex products and eigvalsh are 3-5× faster than numpy's here
        lefts, right = self.single_t if single else (self.left_t, self.right_t)
        K = sum(
            left[None, :, :] * torch.from_numpy(w).to(left.dtype)[:, None, :]
            for left, w in zip(lefts, W, strict=True)
        )
        G = K @ right
        on_left = G.shape[1] <= G.shape[2]
        return G, (G @ G.mH if on_left else G.mH @ G), on_left

    def gain_above(self, omega: np.ndarray, level: float) -> np.ndarray:
        """(F,) σ_max where it exceeds ``level``, −inf elsewhere (MIMO, complex64): a Cholesky
        factorization of level²·I − GGᴴ succeeds exactly where σ_max < level, and only the
        other points get an eigenvalue problem."""
        out = np.full(omega.size, -np.inf)
        for i in range(0, omega.size, CHUNK):
            _, gram, _ = self._gram(self.resolvents(omega[i : i + CHUNK]), single=True)
            eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
            above = torch.linalg.cholesky_ex(level**2 * eye - gram).info.numpy() != 0
            if above.any():
                top = torch.linalg.eigvalsh(gram[torch.from_numpy(above)])[:, -1].numpy()
                out[i + np.flatnonzero(above)] = np.sqrt(np.maximum(top.astype(np.float64), 0.0))
        return out

    def _probes(
        self, G: torch.Tensor, gram: torch.Tensor, top: torch.Tensor, on_left: bool
    ) -> np.ndarray:
        """(F, dirs, 2P) a_{d,j} = (uᴴE_d)_j (Rv)_j of the top singular pair (u, v): σ_max =
        uᴴGv = Σ_{d,j} w_{d,j} a_{d,j}, and its slope is Σ_{d,j} w′_{d,j} a_{d,j}."""
        # the top eigenvector by inverse iteration just above λ_max (two solves converge:
        # the error shrinks by ~1e-10·λ_1/(λ_1 − λ_2) per step; 1e-5 in complex64)
        n = gram.shape[-1]
        lift = 1e-5 if gram.dtype == torch.complex64 else 1e-10
        shift = (top * (1 + lift) + 1e-30)[:, None, None] * torch.eye(n, dtype=gram.dtype)
        start = np.random.default_rng(0).standard_normal(n) + 0j  # fixed, any size
        x = torch.from_numpy(start).to(gram.dtype).expand(G.shape[0], n)[:, :, None]
        for _ in range(2):
            x = torch.linalg.solve(gram - shift, x)
            x = x / torch.linalg.vector_norm(x, dim=1, keepdim=True)
        other = G.mH @ x if on_left else G @ x  # σ·(the other singular vector)
        other = other / torch.linalg.vector_norm(other, dim=1, keepdim=True).clamp_min(1e-30)
        u, v = (x, other) if on_left else (other, x)
        u, v = u[:, :, 0].numpy().astype(complex), v[:, :, 0].numpy().astype(complex)
        rv = v @ self.right.T  # (F, 2P): (R v)_j
        return np.stack([(u.conj() @ e) * rv for e in self.left], axis=1)

    def frobenius(self, W: list[np.ndarray]) -> np.ndarray:
        """‖G(e^{iω})‖_F ≥ σ_max (MIMO) from the resolvents W of the frequencies, O(2P) per
        frequency (see ``_partial_fractions``)."""
        total = -self.frobenius_terms.constant + 2 * sum(
            (w @ coefs).real for w, coefs in zip(W, self.frobenius_terms.linear, strict=True)
        )
        if len(W) == 2:  # conj(w_f) w_b terms whose poles coincide: the double pole itself
            j, k, t = self.frobenius_terms.double
            total = total + 2 * (W[0][:, j].conj() * W[1][:, k] * t).sum(axis=1).real
        return np.sqrt(np.maximum(total, 0.0))


@dataclass(frozen=True)
class _FrobeniusTerms:
    linear: list[np.ndarray]  # per direction, (2P,) coefficients of w_d
    constant: float
    double: tuple[np.ndarray, np.ndarray, np.ndarray]  # (j, k, T_jk) of coinciding poles


def _partial_fractions(
    lam: np.ndarray, left: list[np.ndarray], gram_right: np.ndarray
) -> _FrobeniusTerms:
    """‖G‖²_F = Σ_{d,e} Σ_{jk} conj(w_{d,j}) w_{e,k} T^{de}_{jk}, T^{de} = E_dᴴE_e ∘ (RRᴴ)ᵀ, as a
    sum of single resolvents: on |z| = 1 (z = e^{iω}) products of two resolvents split into
    partial fractions,

        same direction   conj(w_{d,j}) w_{d,k} = (conj(w_{d,j}) + w_{d,k} − 1) / (1 − λ̂_j* λ̂_k)
        f with b         conj(w_{f,j}) w_{b,k} = 1/((1 − a z)(1 − b z)), a = λ̂_j*, b = λ̂_k
                                               = (a·conj(w_{f,j}) − b·w_{b,k}) / (a − b),

    so ‖G‖²_F = 2 Re Σ_{d,k} c_{d,k} w_{d,k} − c₀ (T^{dd} is Hermitian), O(2P) per frequency
    after O((2P)²) once. Pairs with |a − b| < 1e-6 (a mode and its own conjugate, or modes
    that nearly coincide) keep the product itself (cancellation would cost ~ε/|a − b|)."""
    dirs = len(left)
    decay = 1.0 - lam.conj()[:, None] * lam[None, :]  # (2P, 2P) 1 − λ̂_j* λ̂_k
    linear, constant = [], 0.0
    for d in range(dirs):
        terms = (left[d].conj().T @ left[d]) * gram_right / decay
        column = terms.sum(axis=0)  # Σ_j T_jk/(1 − λ̂_j*λ̂_k): coefficient of w_{d,k}
        linear.append(column)  # the conj(w_{d,j}) part is its conjugate (T Hermitian)
        constant += float(column.sum().real)
    double = (np.zeros(0, int), np.zeros(0, int), np.zeros(0, complex))
    if dirs == 2:
        terms = (left[0].conj().T @ left[1]) * gram_right  # T^{fb}
        gap = lam.conj()[:, None] - lam[None, :]  # a_j − b_k
        near = np.abs(gap) < 1e-6
        safe = np.where(near, 1.0, gap)
        split = np.where(near, 0.0, terms / safe)
        # 2 Re Σ [a_j conj(w_{f,j}) Σ_k split_jk − b_k w_{b,k} Σ_j split_jk]
        linear[0] = linear[0] + (lam.conj() * split.sum(axis=1)).conj()  # Re(x̄) = Re(x)
        linear[1] = linear[1] - lam * split.sum(axis=0)
        j, k = np.nonzero(near)
        double = (j, k, terms[j, k])
    return _FrobeniusTerms(linear, constant, double)


def hinf_norm(system: ModalSystem, grid: int = GRID_POINTS) -> tuple[float, float]:
    """(sup_ω σ_max G(e^{iω}), the ω of the peak), ω ∈ [0, π]; see the module docstring."""
    if system.P == 0:
        return 0.0, 0.0
    if np.abs(system.lam).max() >= 1:
        return math.inf, 0.0
    omega = np.unique(
        np.clip(np.concatenate([np.linspace(0.0, np.pi, grid), _resonances(system)]), 0.0, np.pi)
    )
    search = _Search(_Response(system), omega)
    starts = _top_local_maxima(search.values, ASCENTS)
    starts = starts[search.values[starts] >= ASCENT_WITHIN * search.values[starts[0]]]
    return search.ascend([int(i) for i in starts])


class _Search:
    """The search for sup_ω σ_max over the grid ``omega`` and around its best points.

    ``values``: σ_max on the grid where known (−inf elsewhere): everywhere when the exact gain
    is cheap (SISO banks, eigenproblems up to EXACT_SIZE), else at the local maxima of ‖G‖_F
    and at 0 and π, in decreasing ‖G‖_F order, until no remaining one can beat the best value
    (‖G‖_F ≥ σ_max). Large eigenproblems are solved in complex64 (``single``) during the
    search; the value returned is recomputed in complex128.
    """

    def __init__(self, response: _Response, omega: np.ndarray) -> None:
        self.response, self.omega = response, omega
        self.single = not response.siso and response.size > EXACT_SIZE
        if not self.single:
            self.values = response.gain(omega)
            return
        upper = response.frobenius(response.resolvents(omega))
        padded = np.concatenate([[-np.inf], upper, [-np.inf]])
        seeds = np.flatnonzero((upper >= padded[:-2]) & (upper >= padded[2:]))
        seeds = np.union1d(seeds, [0, omega.size - 1])
        seeds = seeds[np.argsort(-upper[seeds], kind="stable")]
        self.values = np.full(omega.size, -np.inf)
        best = -np.inf
        for start in range(0, seeds.size, SCREEN_CHUNK):
            batch = seeds[start : start + SCREEN_CHUNK]
            if upper[batch[0]] <= best * (1 + SINGLE_ERROR):
                break
            if start == 0:
                self.values[batch] = response.gain(omega[batch], single=True)
            else:  # only the points that could start an ascent need their value
                level = ASCENT_WITHIN * best * (1 - SINGLE_ERROR)
                self.values[batch] = response.gain_above(omega[batch], level)
            best = max(best, float(self.values[batch].max()))

    def ascend(self, starts: list[int]) -> tuple[float, float]:
        """Best (value, ω) reached by ascent from the grid points ``starts``, all in lockstep,
        in continuous ω: from a start, steps in the direction of dσ/dω, doubling while σ
        rises, until σ′ changes sign; then a root of σ′ in that bracket by regula falsi
        (Illinois variant: superlinear on a smooth peak, still converging to a kink where two
        singular values cross), in complex128 once the peak can gain no more than
        SINGLE_ERROR. A start at 0 or π (σ is even about both, so σ′ = 0 there) steps
        inwards if σ rises that way. The best points are evaluated again in complex128."""
        omega, last = self.omega, self.omega.size - 1
        start = self.response.peak(omega[starts], single=self.single)
        best, at = -math.inf, 0.0
        brackets = []
        tried = [(float(v), float(omega[i])) for v, i in zip(start.value, starts, strict=True)]
        for k, i in enumerate(starts):
            value, slope = float(start.value[k]), float(start.slope[k])
            if value > best:
                best, at = value, float(omega[i])
            if i in (0, last):
                side = 1.0 if i == 0 else -1.0
                step = abs(omega[1 if i == 0 else last - 1] - omega[i])
                brackets.append(_Bracket(float(omega[i]), 0.0, value, side, step, inward=True))
            elif slope != 0:
                side = 1.0 if slope > 0 else -1.0
                step = abs(omega[i + int(side)] - omega[i])
                brackets.append(_Bracket(float(omega[i]), side * slope, value, side, step))
        for _ in range(REFINE_STEPS):
            brackets = [b for b in brackets if b.open(best)]
            if not brackets:
                break
            for b in brackets:  # the last steps of a bracket in complex128
                b.double = b.double or not self.single or b.gain() <= SINGLE_ERROR * best
            for double in (False, True):
                group = [b for b in brackets if b.double == double]
                if not group:
                    continue
                trial = np.array([b.next_point() for b in group])
                peak = self.response.peak(trial, single=not double)
                for b, t, value, slope in zip(group, trial, peak.value, peak.slope, strict=True):
                    if value > best:
                        best, at = float(value), float(t)
                    tried.append((float(value), float(t)))
                    b.update(float(t), b.side * float(slope), float(value))
        if not self.single:
            return best, at
        # complex64 ranks the points only to ~1e-7: the close ones again in complex128
        close = np.unique([w for v, w in tried if v >= best * (1 - SINGLE_ERROR)])
        value = self.response.gain(close)
        k = int(np.argmax(value))
        return float(value[k]), float(close[k])


@dataclass
class _Bracket:
    """One ascent (see :meth:`_Search.ascend`): ``side`` is the direction σ rises in from
    ``near``; ``far`` (once σ′ changed sign) the other end of the bracket."""

    near: float
    ascent_near: float  # side·σ′(near) > 0 (0 at a boundary start)
    value_near: float
    side: float
    step: float  # the next step while no sign change is known
    inward: bool = False  # a boundary start, not probed inside yet
    far: float = math.nan
    ascent_far: float = math.nan  # side·σ′(far) < 0
    kept: int = 0  # +k / −k: ``near`` / ``far`` was kept k times in a row (Illinois)
    secant: tuple[float, float] = (math.nan, math.nan)  # the slopes the secant uses (halved)
    double: bool = False  # evaluated in complex128

    def gain(self) -> float:
        """How much higher than σ(near) the bracket's peak may be, σ′(near)·width: its bound
        where σ′ falls steadily through the bracket (the last steps of a smooth peak), an
        estimate elsewhere (a sharp peak inside a wide bracket can rise far more)."""
        if self.inward or math.isnan(self.far):
            return math.inf
        return self.ascent_near * abs(self.far - self.near)

    def open(self, best: float) -> bool:
        """Not converged yet (every bracket runs to convergence: the gain is no bound to
        drop one by)."""
        if self.inward or math.isnan(self.far):
            return self.step > REFINE_WIDTH
        return abs(self.far - self.near) > REFINE_WIDTH and self.gain() > REFINE_TOLERANCE * best

    def next_point(self) -> float:
        if self.inward:
            return self.near + self.side * BOUNDARY_PROBE * self.step
        if math.isnan(self.far):  # step on, at most to 0 or π
            return min(max(self.near + self.side * self.step, 0.0), math.pi)
        if not self.ascent_far < 0:  # a dip without a sign change: halve
            return 0.5 * (self.near + self.far)
        a, b = self.secant
        return self.near + a / (a - b) * (self.far - self.near)

    def update(self, t: float, ascent: float, value: float) -> None:
        if self.inward:
            self.inward = False
            if ascent > 0:  # σ rises inwards: ascend from there
                self.near, self.ascent_near, self.value_near = t, ascent, value
            else:  # the boundary is the peak
                self.step = 0.0
            return
        if math.isnan(self.far) or not self.ascent_far < 0:
            if t in (0.0, math.pi) and value >= self.value_near:
                self.step, self.far = 0.0, math.nan  # rose up to 0 or π: the peak is there
            elif ascent > 0 and value > self.value_near:  # still rising: on, twice as far
                self.near, self.ascent_near, self.value_near = t, ascent, value
                self.step *= 2
            else:
                self.far, self.ascent_far = t, ascent
                self.secant = (self.ascent_near, ascent)
            return
        a, b = self.secant
        if ascent > 0:  # Illinois: an end kept twice in a row counts half in the secant
            self.near, self.ascent_near, self.value_near = t, ascent, value
            self.secant = (ascent, b * 0.5 if self.kept < 0 else b)
            self.kept = min(self.kept, 0) - 1
        else:
            self.far, self.ascent_far = t, ascent
            self.secant = (a * 0.5 if self.kept > 0 else a, ascent)
            self.kept = max(self.kept, 0) + 1


def _top_local_maxima(values: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` largest local maxima of a sampled curve (endpoints included;
    −inf marks a point not evaluated)."""
    padded = np.concatenate([[-np.inf], values, [-np.inf]])
    maxima = np.flatnonzero((values >= padded[:-2]) & (values >= padded[2:]) & (values > -np.inf))
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
