"""CPU: the BENCHMARKS.md workloads, onnxruntime (``scan="auto"``) vs PyTorch eager.

    python benchmarks/cpu_workloads.py --out benchmarks/cpu_workloads.json

Scaled down to fit a shared 2-core machine (stated in every row): sequence length and width
as specified, batch and layer count reduced (SCALE below); ``stream`` runs as specified (one
step, batch 1, 6 layers). Each workload unpruned and shrunk to 50 % and 30 % of the states
(uniform per layer, built at that size). One thread for both runtimes; median and p90 over
the rounds, ratio = median over rounds of (PyTorch time / onnxruntime time), contenders run
back to back within a round.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).resolve().parents[1])]
from timing import cpu_run_meta, interleaved_times, median_ms, p90_ms, paired_speedup  # noqa: E402
from workloads import KEEPS, WORKLOADS, build, example_input  # noqa: E402

from aire_export.lower import export  # noqa: E402

SCALE = {  # workload → (batch, layers) on the CPU
    "pathx": (1, 2),
    "pathfinder": (4, 2),
    "listops": (4, 2),
    "text-s4d": (2, 2),
    "stream": (1, 6),
}


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(names, keeps, repeats: int) -> list[dict]:
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            batch, layers = SCALE[name]
            workload = WORKLOADS[name].scaled(batch=batch, n_layers=layers)
            for keep in keeps:
                model = build(workload, keep)
                result = export(model, Path(tmp) / f"{name}-{keep}")
                if workload.step:
                    torch_fn, ort_fn = _step_contenders(model, result.step.path)
                    label = "step"
                else:
                    x = example_input(workload, batch, workload.length)
                    s = session(result.sequence.path)

                    def torch_fn(model=model, x=x):
                        with torch.no_grad():
                            return model(x)

                    def ort_fn(s=s, x=x):
                        return s.run(None, {"x": x.numpy()})

                    label = result.sequence.scan
                times = interleaved_times({"torch": torch_fn, "ort": ort_fn}, repeats)
                row = {
                    "workload": name,
                    "scaled": f"batch {batch} (spec {WORKLOADS[name].batch}), "
                    f"{layers} of {WORKLOADS[name].n_layers} layers",
                    "T": workload.length,
                    "keep": keep,
                    "lowering": label,
                    "torch_median_ms": median_ms(times["torch"]),
                    "torch_p90_ms": p90_ms(times["torch"]),
                    "ort_median_ms": median_ms(times["ort"]),
                    "ort_p90_ms": p90_ms(times["ort"]),
                    "speedup": paired_speedup(times["torch"], times["ort"]),
                }
                rows.append(row)
                print(
                    f"{name:10s} keep {keep:.1f} {label:9s} torch {row['torch_median_ms']:9.2f} ms "
                    f"(p90 {row['torch_p90_ms']:.2f}) | ort {row['ort_median_ms']:9.2f} ms "
                    f"(p90 {row['ort_p90_ms']:.2f}) | x{row['speedup']:.2f}",
                    flush=True,
                )
    return rows


def _step_contenders(model, step_path: Path):
    """One streaming step from a mid-stream state, PyTorch ``SSMNetwork.step`` vs the graph."""
    x = torch.randn(1, model.config.d_input)
    state = model.init_state(1)
    s = session(step_path)
    feeds = {"x": x.numpy()}
    for spec in s.get_inputs()[1:]:
        shape = [1 if d == "batch" else d for d in spec.shape]
        feeds[spec.name] = np.zeros(shape, dtype=np.float32)

    def torch_fn():
        with torch.no_grad():
            return model.step(x, state)

    def ort_fn():
        return s.run(None, feeds)

    return torch_fn, ort_fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", nargs="+", default=list(SCALE), choices=list(SCALE))
    parser.add_argument("--keeps", nargs="+", type=float, default=list(KEEPS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = run(args.workloads, args.keeps, args.repeats)
    if args.out:
        meta = cpu_run_meta()
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
