"""Parity: how close two sets of outputs are, and whether they pass a tolerance gate (DESIGN §5).

Two parities are reported and never mixed:

- *pruning distortion*: original vs pruned model, both PyTorch float64 (how much pruning changed
  the function: relative error, top-1 agreement, accuracy);
- *lowering fidelity*: pruned PyTorch float64 vs each runtime (how faithfully the export computes
  the pruned model). This is the gate.

The gate follows Polygraphy's elementwise rule: an element fails only where
``|a − r| > atol`` **and** ``|a − r| / |r| > rtol``. The minimum tolerance that would have
passed is reported Polygraphy-style, as ``abs = max|a − r|`` OR ``rel = max |a − r|/|r|``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from aire_export.json_values import finite_or_none
from aire_export.tolerance import Tolerance


@dataclass(frozen=True)
class OutputParity:
    """Agreement of one output with its reference."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    mean_abs: float
    max_rel: float  # elementwise |a − r| / |r| (inf where r = 0 and a ≠ r)
    mean_rel: float
    normwise_rel: float  # ||a − r||_2 / ||r||_2
    cosine: float
    top1_agreement: float | None  # fraction of predictions whose argmax agrees
    atol: float
    rtol: float
    failing: int  # elements failing the gate
    passed: bool

    @property
    def required(self) -> str:
        """Polygraphy's 'Minimum Required Tolerance' line."""
        return f"elemwise error | [abs={self.max_abs:.3g}] OR [rel={self.max_rel:.3g}]"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "max_abs": finite_or_none(self.max_abs),
            "mean_abs": finite_or_none(self.mean_abs),
            "max_rel": finite_or_none(self.max_rel),
            "mean_rel": finite_or_none(self.mean_rel),
            "normwise_rel": finite_or_none(self.normwise_rel),
            "cosine": finite_or_none(self.cosine),
            "top1_agreement": finite_or_none(self.top1_agreement),
            "atol": self.atol,
            "rtol": self.rtol,
            "failing": self.failing,
            "passed": self.passed,
        }

    def verdict(self) -> str:
        status = "PASSED" if self.passed else "FAILED"
        return (
            f"{status} | Output: {self.name!r} | atol={self.atol:.3g} rtol={self.rtol:.3g} | "
            f"max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g} | minimum required tolerance: "
            f"{self.required}"
        )


def compare_output(
    name: str, actual: np.ndarray, reference: np.ndarray, tol: Tolerance
) -> OutputParity:
    a = np.asarray(actual, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if a.shape != r.shape:
        raise ValueError(f"output {name!r}: shape {a.shape} differs from the reference {r.shape}")
    diff = np.abs(a - r)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / np.abs(r))
    failing = int(np.sum((diff > tol.atol) & (rel > tol.rtol))) + int(np.sum(~np.isfinite(a)))
    norm_r = float(np.linalg.norm(r))
    norm_a = float(np.linalg.norm(a))
    cosine = (
        float(np.dot(a.ravel(), r.ravel()) / (norm_a * norm_r))
        if norm_a and norm_r
        else float(norm_a == norm_r)
    )
    top1 = top1_agreement(a, r)
    finite = np.isfinite(rel)
    return OutputParity(
        name=name,
        shape=tuple(a.shape),
        max_abs=float(diff.max()) if diff.size else 0.0,
        mean_abs=float(diff.mean()) if diff.size else 0.0,
        max_rel=float(rel.max()) if rel.size else 0.0,
        mean_rel=float(rel[finite].mean()) if finite.any() else 0.0,
        normwise_rel=float(np.linalg.norm(a - r) / norm_r)
        if norm_r
        else float(np.linalg.norm(a - r)),
        cosine=cosine,
        top1_agreement=top1,
        atol=tol.atol,
        rtol=tol.rtol,
        failing=failing,
        passed=failing == 0,
    )


@dataclass(frozen=True)
class ParityResult:
    """Lowering fidelity of one graph on one runner against the float64 reference, and what
    it covered: ``samples`` sequences of ``length`` steps from ``inputs``."""

    runner: str
    reference: str
    precision: str
    outputs: list[OutputParity]
    graph: str = "model.onnx"
    inputs: str = ""
    samples: int = 0
    length: int = 0

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    @property
    def coverage(self) -> str:
        return f"{self.samples} sequences × {self.length} steps of {self.inputs}, {self.precision}"

    def to_json(self) -> dict[str, Any]:
        return {
            "runner": self.runner,
            "graph": self.graph,
            "reference": self.reference,
            "precision": self.precision,
            "inputs": self.inputs,
            "samples": self.samples,
            "length": self.length,
            "outputs": [o.to_json() for o in self.outputs],
            "passed": self.passed,
        }


def compare_outputs(
    runner: str,
    actual: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    tolerance: Tolerance | dict[str, Tolerance],
    *,
    precision: str = "fp32",
    reference_name: str = "pytorch-fp64",
    graph: str = "model.onnx",
    inputs: str = "",
    length: int = 0,
) -> ParityResult:
    """Compare every reference output with the runner's output of the same name."""
    missing = [n for n in reference if n not in actual]
    if missing:
        raise ValueError(f"{runner} produced no output named {', '.join(missing)}")
    outputs = [
        compare_output(
            n, actual[n], reference[n], tolerance[n] if isinstance(tolerance, dict) else tolerance
        )
        for n in reference
    ]
    first = next(iter(reference.values()))
    return ParityResult(
        runner=runner,
        reference=reference_name,
        precision=precision,
        outputs=outputs,
        graph=graph,
        inputs=inputs,
        samples=int(np.shape(first)[0]) if np.ndim(first) else 1,
        length=length,
    )


def top1_agreement(a: np.ndarray, r: np.ndarray) -> float | None:
    """The fraction of predictions whose argmax over the last axis agrees: per sequence for a
    classifier's (N, C), per position for a language model's (N, L, V); None for other
    outputs."""
    if a.ndim not in (2, 3) or a.shape[-1] < 2:
        return None
    return float(np.mean(a.argmax(-1) == r.argmax(-1)))


@dataclass(frozen=True)
class DistortionResult:
    """Pruning distortion: the pruned model against the original, both PyTorch float64."""

    normwise_rel: float  # ||y_pruned − y_original||_2 / ||y_original||_2
    max_abs: float
    top1_agreement: float | None
    samples: int

    def to_json(self) -> dict[str, Any]:
        return {
            "normwise_rel": finite_or_none(self.normwise_rel),
            "max_abs": finite_or_none(self.max_abs),
            "top1_agreement": finite_or_none(self.top1_agreement),
            "samples": self.samples,
        }


def pruning_distortion(original: np.ndarray, pruned: np.ndarray) -> DistortionResult:
    o = np.asarray(original, dtype=np.float64)
    p = np.asarray(pruned, dtype=np.float64)
    norm = float(np.linalg.norm(o))
    top1 = top1_agreement(p, o)
    return DistortionResult(
        normwise_rel=float(np.linalg.norm(p - o) / norm) if norm else float(np.linalg.norm(p - o)),
        max_abs=float(np.abs(p - o).max()) if o.size else 0.0,
        top1_agreement=top1,
        samples=int(o.shape[0]) if o.ndim else 1,
    )
