"""Parity tolerances: the default gate by precision and sequence length (DESIGN §5).

A family may override them (``Family.tolerance``); validation, the edge bundle and the report
all read the gate from here, so one number means the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Default gates (atol, rtol) by precision for a 1024-step sequence; longer sequences scale them
# by sqrt(length / 1024) (rounding errors of a scan grow like a random walk over its memory).
# fp32 is the measured float32 error of our lowerings (≤ 1e-5 relative) with headroom; fp16 and
# bf16 are dominated by the reduced-precision projections (10 and 7 mantissa bits).
BASE_TOLERANCE = {
    "fp32": (1e-4, 1e-3),
    "tf32": (5e-3, 5e-3),
    "fp16": (2e-2, 2e-2),
    "bf16": (1e-1, 5e-2),
}
REFERENCE_LENGTH = 1024


@dataclass(frozen=True)
class Tolerance:
    """Polygraphy's elementwise rule: an element fails where abs > atol **and** rel > rtol."""

    atol: float
    rtol: float


def default_tolerance(precision: str, length: int) -> Tolerance:
    """The gate for a precision and sequence length (see :data:`BASE_TOLERANCE`)."""
    atol, rtol = BASE_TOLERANCE[precision]
    scale = max(1.0, float(np.sqrt(max(length, 1) / REFERENCE_LENGTH)))
    return Tolerance(atol * scale, rtol * scale)
