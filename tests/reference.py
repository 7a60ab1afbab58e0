"""Independent float64 numpy references of the SSM cores, written from the reference equations.

They share no code with aire_export's torch models: parameters are read from the state_dict by
name and the recurrences run one step at a time.
"""

from __future__ import annotations

import numpy as np


def _c(x: np.ndarray) -> np.ndarray:
    return x[..., 0] + 1j * x[..., 1]


def _disc(lam: np.ndarray, step: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    if method == "zoh":
        lam_bar = np.exp(lam * step)
        return lam_bar, (lam_bar - 1) / lam
    inv = 1 / (1 - step / 2 * lam)
    return inv * (1 + step / 2 * lam), inv * step


def s5_core(params: dict[str, np.ndarray], cfg, u: np.ndarray) -> np.ndarray:
    """S5SSM on u (B, L, H), sequential, float64 (reference `s5/ssm.py`)."""
    re = params["Lambda_re"].astype(np.float64)
    if cfg.clip_eigs:
        re = np.minimum(re, -1e-4)
    lam = re + 1j * params["Lambda_im"]
    step = cfg.step_rescale * np.exp(params["log_step"][:, 0].astype(np.float64))
    lam_bar, gain = _disc(lam, step, cfg.discretization)
    B_bar = gain[:, None] * _c(params["B"].astype(np.float64))
    s = 2.0 if cfg.conj_sym else 1.0
    Bu = np.einsum("ph,blh->blp", B_bar, u)
    L = u.shape[1]
    xf = np.zeros_like(Bu)
    x = np.zeros(Bu[:, 0].shape, complex)
    for k in range(L):
        x = lam_bar * x + Bu[:, k]
        xf[:, k] = x
    if cfg.bidirectional:
        xb = np.zeros_like(Bu)
        x = np.zeros(Bu[:, 0].shape, complex)
        for k in range(L - 1, -1, -1):
            x = lam_bar * x + Bu[:, k]
            xb[:, k] = x
        C1, C2 = _c(params["C1"].astype(np.float64)), _c(params["C2"].astype(np.float64))
        y = np.einsum("hp,blp->blh", C1, xf) + np.einsum("hp,blp->blh", C2, xb)
    else:
        y = np.einsum("hp,blp->blh", _c(params["C"].astype(np.float64)), xf)
    return s * y.real + params["D"] * u


def s4d_ssm(params: dict[str, np.ndarray], cfg, u: np.ndarray) -> np.ndarray:
    """S4D SSM (kernel + D, before the activation) on u (B, L, H), sequential, float64."""
    H = u.shape[2]
    A = -np.exp(params["log_A_real"].astype(np.float64)) + 1j * params["A_imag"]
    A = np.broadcast_to(A, (H, A.shape[1]))
    dt = np.exp(params["log_dt"].astype(np.float64))[:, None]
    lam_bar, gain = _disc(A, dt, cfg.discretization)
    b = gain * (_c(params["B"].astype(np.float64)) if "B" in params else 1.0)
    C = _c(params["C"].astype(np.float64))
    s = 2.0 if cfg.conj_sym else 1.0
    x = np.zeros((u.shape[0], H, A.shape[1]), complex)
    y = np.zeros_like(u)
    for k in range(u.shape[1]):
        x = lam_bar * x + b * u[:, k, :, None]
        y[:, k] = s * (C * x).real.sum(-1)
    return y + params["D"] * u
