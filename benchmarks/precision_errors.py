"""Error of the exported graphs per precision, length and lowering, vs the float64 model.

    python benchmarks/precision_errors.py --out benchmarks/precision_errors.json

Models: small versions of the BENCHMARKS.md layer shapes (random weights, reference
initialization): S5 unidirectional, S5 bidirectional, S4D; H=64, 2 layers. Error: normwise
relative max|y − y_ref| / max|y_ref| of the network output (log-probabilities for S5,
logits for S4D), batch 2. fp32 and fp16 run natively on onnxruntime CPU; bf16 has no CPU
kernels there and runs through ``emulate_reduced_precision`` (every bf16 value rounded where it
is produced, float32 accumulation: what GPUs do); fp16 is also emulated as a cross-check.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).resolve().parents[1])]
from workloads import WORKLOADS, build, example_input  # noqa: E402

from aire_export.graphs.emulate import emulate_reduced_precision  # noqa: E402
from aire_export.graphs.lowering import METHODS  # noqa: E402
from aire_export.lower import export  # noqa: E402

MODELS = {
    "s5": WORKLOADS["stream"].scaled(d_model=64, stored_states=32, n_layers=2),
    "s5-bi": WORKLOADS["pathx"].scaled(d_model=64, stored_states=32, n_layers=2),
    "s4d": WORKLOADS["text-s4d"].scaled(d_model=64, stored_states=16, n_layers=2),
}
RUNS = (("fp32", False), ("fp16", False), ("fp16", True), ("bf16", True))


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def measure(models, lengths, methods) -> list[dict]:
    torch.set_num_threads(1)
    rows = []
    for name in models:
        workload = MODELS[name]
        model = build(workload)
        ref_model = copy.deepcopy(model).double()
        for length in lengths:
            x = example_input(workload, 2, length)
            with torch.no_grad():
                ref = ref_model(x.double()).numpy()
            for method in methods:
                for precision, emulated in RUNS:
                    with tempfile.TemporaryDirectory() as tmp:
                        path = export(
                            model, tmp, scan=method, precision=precision, step=False
                        ).sequence.path
                        graph = onnx.load(str(path))
                    if emulated:
                        graph = emulate_reduced_precision(graph)
                    out = session(graph).run(["y"], {"x": x.numpy()})[0]
                    row = {
                        "model": name,
                        "length": length,
                        "method": method,
                        "precision": precision + (" (emulated)" if emulated else ""),
                        "error": relative_error(out, ref),
                    }
                    rows.append(row)
                    print(
                        f"{name:6s} T={length:<6d} {method:9s} {row['precision']:17s} "
                        f"{row['error']:.2e}",
                        flush=True,
                    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--lengths", nargs="+", type=int, default=[1, 17, 1024, 16384])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = measure(args.models, args.lengths, args.methods)
    print("\nworst over models and lowerings:")
    for precision in sorted({r["precision"] for r in rows}):
        worst = {
            length: max(
                r["error"] for r in rows if r["precision"] == precision and r["length"] == length
            )
            for length in args.lengths
        }
        print(f"  {precision:17s} " + "  ".join(f"T={k}: {v:.1e}" for k, v in worst.items()))
    if args.out:
        args.out.write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
