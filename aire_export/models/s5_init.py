"""S5 initialization as the reference does it (S5 paper §4.2 and Appendix B; `s5/ssm_init.py`).

Per layer, with J blocks of size b = P_full / J (P_full = 2P when conj_sym):

    S = A_LegS + p pᵀ                 the normal part of HiPPO-LegS (size b)
    Λ = mean(diag S) + i·eig(−iS)     real part −1/2, imaginary parts ascending (eigh)
    V                                  the eigenvectors; conj_sym keeps the first b/2 (Im Λ < 0)
    Λ, V tiled J times (V block-diagonal, (P_full, P))
    B̃ = V⁻¹ B,  B ~ lecun_normal (P_full, H)        (V⁻¹ = Vᴴ, block-diagonal)
    C̃ = C V,    C complex (H, P_full), lecun-scaled truncated normal (or complex_normal: C̃ direct)
    D ~ N(0, 1),  log Δ ~ U[log dt_min, log dt_max] (P, 1)

Random weights are drawn from a seeded numpy generator, so an initialization is reproducible.
"""

from __future__ import annotations

import numpy as np
import torch

from aire_export.errors import InputError
from aire_export.models.s5 import S5Model

C_INITS = ("trunc_standard_normal", "lecun_normal", "complex_normal")


def hippo_legs_normal(n: int) -> np.ndarray:
    """S = A + p pᵀ, the normal part of the HiPPO-LegS matrix A (n × n)."""
    q = np.sqrt(1 + 2 * np.arange(n))
    A = -(np.tril(q[:, None] * q[None, :]) - np.diag(np.arange(n)))
    p = np.sqrt(np.arange(n) + 0.5)
    return A + p[:, None] * p[None, :]


def dplr_hippo_eigen(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(Λ (n,), V (n, n)): eigen-decomposition of the HiPPO-LegS normal part (real part averaged)."""
    S = hippo_legs_normal(n)
    lam_im, V = np.linalg.eigh(S * -1j)
    lam_re = np.full(n, np.mean(np.diag(S)))
    return lam_re + 1j * lam_im, V


def _truncated_normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Normal(0, std²) truncated to ±2 std, rescaled to unit variance like flax's lecun_normal."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return out * std / 0.87962566103423978


def _block_diag(block: np.ndarray, count: int) -> np.ndarray:
    rows, cols = block.shape
    out = np.zeros((rows * count, cols * count), dtype=block.dtype)
    for j in range(count):
        out[j * rows : (j + 1) * rows, j * cols : (j + 1) * cols] = block
    return out


def init_s5(
    model: S5Model,
    blocks: int = 1,
    C_init: str = "trunc_standard_normal",
    dt_min: float = 0.001,
    dt_max: float = 0.1,
    seed: int = 0,
) -> S5Model:
    """Initialize every layer of ``model`` in place as the reference S5 does; returns it."""
    if C_init not in C_INITS:
        raise InputError(f"C_init must be one of {', '.join(C_INITS)}, got {C_init!r}")
    rng = np.random.default_rng(seed)
    cfg = model.config
    H = cfg.d_model
    for block in model.layers:
        ssm = block.seq
        P = ssm.state_size
        if P == 0:
            continue
        p_full = 2 * P if cfg.conj_sym else P
        if p_full % blocks or (cfg.conj_sym and (p_full // blocks) % 2):
            raise InputError(
                f"{P} stored states cannot be split into {blocks} blocks"
                + (" of conjugate pairs" if cfg.conj_sym else "")
            )
        size = p_full // blocks
        lam, V = dplr_hippo_eigen(size)
        if cfg.conj_sym:
            lam, V = lam[: size // 2], V[:, : size // 2]
        lam = np.tile(lam, blocks)  # (P,)
        V_full = _block_diag(V, blocks)  # (P_full, P)
        B = _truncated_normal(rng, (p_full, H), 1 / np.sqrt(H))
        B_tilde = V_full.conj().T @ B  # (P, H)
        n_dirs = 2 if cfg.bidirectional else 1
        C_tildes = []
        for _ in range(n_dirs):
            if C_init == "complex_normal":
                C_tildes.append(
                    rng.normal(0, np.sqrt(0.5), (H, P)) + 1j * rng.normal(0, np.sqrt(0.5), (H, P))
                )
            else:
                std = 1 / np.sqrt(p_full)
                C = _truncated_normal(rng, (H, p_full), std) + 1j * _truncated_normal(
                    rng, (H, p_full), std
                )
                C_tildes.append(C @ V_full)
        log_step = rng.uniform(np.log(dt_min), np.log(dt_max), (P, 1))
        with torch.no_grad():
            ssm.Lambda_re.copy_(torch.from_numpy(lam.real))
            ssm.Lambda_im.copy_(torch.from_numpy(lam.imag))
            ssm.B.copy_(torch.from_numpy(np.stack([B_tilde.real, B_tilde.imag], -1)))
            names = ("C1", "C2") if cfg.bidirectional else ("C",)
            for name, C in zip(names, C_tildes, strict=True):
                getattr(ssm, name).copy_(torch.from_numpy(np.stack([C.real, C.imag], -1)))
            ssm.D.copy_(torch.from_numpy(rng.standard_normal(H)))
            ssm.log_step.copy_(torch.from_numpy(log_step))
    return model
