"""Reduced precision: the error of fp16 and bf16 graphs per length stays within measured bounds.

Projections and pointwise work run in fp16/bf16, λ̄ and the states in float32 (DESIGN §4), so
the error is set by the projections' rounding and does not grow with the sequence length.
Bounds: 3.5–5.5× the worst error measured by ``benchmarks/precision_errors.py`` at each
length (benchmarks/RESULTS.md, "Precision": fp16 ≤ 3.6e-4, bf16 ≤ 5.7e-3 over 1..16384).
fp16 runs natively on onnxruntime CPU; bf16 has no CPU kernels there and runs through
``emulate_reduced_precision``.
"""

from __future__ import annotations

import onnx
import pytest
from conftest import make_s4d, make_s5, rel_err
from lowering import ReferenceCache, session

from aire_export.graphs.emulate import emulate_reduced_precision
from aire_export.lower import export

TOLERANCE = {  # precision → length → bound on the normwise relative error of the output
    "fp16": {1: 2e-3, 17: 2e-3, 1024: 2e-3, 16384: 2e-3},
    "bf16": {1: 2e-2, 17: 2e-2, 1024: 2e-2, 16384: 2e-2},
}
CASES = [  # (model, lowering, lengths): every lowering once, 16384 on the two main ones
    ("s5-bidir", "chunked", (1, 17, 1024, 16384)),
    ("s4d", "toeplitz", (1, 17, 1024, 16384)),
    ("s5", "logdepth", (17, 1024)),
    ("s4d", "scan", (17, 1024)),
]
MODELS = ReferenceCache(
    {
        "s5": lambda seed: make_s5(seed=seed, norm="layer"),
        "s5-bidir": lambda seed: make_s5(seed=seed, bidirectional=True),
        "s4d": lambda seed: make_s4d(seed=seed),
    }
)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("name, method, lengths", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_reduced_precision_error_is_bounded_per_length(tmp_path, name, method, lengths, precision):
    model = MODELS.model(name, seed=11)
    graph = onnx.load(str(export(model, tmp_path, scan=method, precision=precision).sequence.path))
    run = session(graph if precision == "fp16" else emulate_reduced_precision(graph))
    fp32 = session(export(model, tmp_path / "fp32", scan=method).sequence.path)
    for length in lengths:
        x, ref = MODELS.case(name, 2, length, seed=11)
        err = rel_err(run.run(["y"], {"x": x.numpy()})[0], ref)
        assert err <= TOLERANCE[precision][length], f"length {length}: {err:.2e}"
        # the reduced type really is in use: clearly worse than float32
        assert err > 10 * rel_err(fp32.run(["y"], {"x": x.numpy()})[0], ref)
