"""Numbers for strict JSON: a non-finite float (the infinite energy of an always-kept unstable
mode, the decay time of a marginal one) is written as null, and read back as +inf."""

from __future__ import annotations

import math

import numpy as np


def finite_or_none(value: float | None) -> float | None:
    """``value`` as a float, or None when it is None, NaN or infinite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def finite_list(values) -> list[float | None]:
    """A JSON-safe list of an array's values (non-finite → None)."""
    return [finite_or_none(v) for v in np.asarray(values, dtype=np.float64).ravel()]


def floats_or_inf(values: list) -> np.ndarray:
    """The inverse of :func:`finite_list` for arrays that hold only +inf as non-finite values."""
    return np.array([math.inf if v is None else float(v) for v in values], dtype=np.float64)
