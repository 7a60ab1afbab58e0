"""Discretization of a diagonal continuous-time system (S5 §2.2 / S4D §3).

For a continuous eigenvalue Λ and step Δ, each method returns (λ̄, g) with B̄ = g ⊙ B̃:

    zoh:       λ̄ = exp(ΛΔ),                           g = (λ̄ − 1) / Λ
    bilinear:  λ̄ = (1 + ΔΛ/2) / (1 − ΔΛ/2),           g = Δ / (1 − ΔΛ/2)
"""

from __future__ import annotations

import torch

METHODS = ("zoh", "bilinear")


def discretize(
    lam: torch.Tensor, step: torch.Tensor, method: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(λ̄, g) for continuous λ (complex) and step Δ (real, broadcastable to λ)."""
    if method == "zoh":
        lam_bar = torch.exp(lam * step)
        return lam_bar, (lam_bar - 1) / lam
    if method == "bilinear":
        inv = 1 / (1 - step / 2 * lam)
        return inv * (1 + step / 2 * lam), inv * step
    raise ValueError(f"unknown discretization {method!r}; choose one of {', '.join(METHODS)}")
