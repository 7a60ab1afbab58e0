"""Dynamic shapes: the (min, opt, max) range of a dimension and the profiles they give.

``batch`` and ``length`` are the symbolic dimensions of our graphs. A :class:`ShapeRange` is
what ``--batch`` and ``--length`` parse to; TensorRT's optimization profile, the edge
bundle's trtexec shapes and the latency measurement (at ``opt``) all read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from aire_export.errors import InputError


@dataclass(frozen=True)
class ShapeRange:
    """An optimization-profile range for one dynamic dimension: min ≤ opt ≤ max."""

    min: int
    opt: int
    max: int

    @classmethod
    def parse(cls, text: str, what: str) -> ShapeRange:
        """``"8"`` or ``"1:8:32"`` (min:opt:max)."""
        parts = str(text).split(":")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise InputError(
                f"--{what} must be N or MIN:OPT:MAX with integers, got {text!r}"
            ) from None
        if len(values) == 1:
            values *= 3
        if len(values) != 3 or not (1 <= values[0] <= values[1] <= values[2]):
            raise InputError(
                f"--{what} must be N or MIN:OPT:MAX with 1 ≤ MIN ≤ OPT ≤ MAX, got {text!r}"
            )
        return cls(*values)

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


def profile_shapes(
    inputs: list[tuple[str, tuple[int | str, ...]]], batch: ShapeRange, length: ShapeRange
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shapes per input, resolving the symbolic dims "batch" and "length".

    ``inputs`` lists (name, shape) with static dims as ints and dynamic ones by name.
    """
    dims = {"batch": batch, "length": length}
    out = {}
    for name, shape in inputs:
        triple = []
        for pick in ("min", "opt", "max"):
            resolved = []
            for d in shape:
                if isinstance(d, int):
                    resolved.append(d)
                elif d in dims:
                    resolved.append(getattr(dims[d], pick))
                else:
                    raise InputError(f"input {name!r} has a dynamic dimension {d!r} with no range")
            triple.append(tuple(resolved))
        out[name] = tuple(triple)
    return out
