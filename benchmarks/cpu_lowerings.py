"""CPU: every lowering on onnxruntime vs PyTorch eager, for the same model, side by side.

    python benchmarks/cpu_lowerings.py --out benchmarks/cpu_lowerings.json

Models (random weights, BENCHMARKS.md initialization): one layer of each BENCHMARKS.md layer
shape, so a run fits a shared 2-core machine: ``s5`` (H=128, 128 stored states, as in
pathx/stream), ``s5-30`` (the same at 30 % of the states), ``s5-bi`` (bidirectional), ``s4d``
(H=256, N=32, the text-s4d layer), ``s4d-10`` (the same at 10 % of the modes).
T ∈ {1024, 4096, 16384}, batch ∈ {1, 16}. One thread for PyTorch and for onnxruntime (the
machine is shared; single-thread figures are the stable ones). Ratios are the median over rounds
of PyTorch-eager time / onnxruntime time, each round running every contender once, back to back
(robust to load drifting on a shared machine).
The figures feed the CPU rows of ``aire_export/graphs/auto.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import onnxruntime as ort
import torch

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).resolve().parents[1])]
from timing import cpu_run_meta, interleaved_times, median_ms, paired_speedup  # noqa: E402
from workloads import WORKLOADS, build, example_input  # noqa: E402

from aire_export.graphs.lowering import METHODS  # noqa: E402
from aire_export.lower import export  # noqa: E402
from aire_export.models import modal_systems  # noqa: E402

MODELS = {
    "s5": (WORKLOADS["stream"].scaled(n_layers=1), 1.0),
    "s5-30": (WORKLOADS["stream"].scaled(n_layers=1), 0.3),
    "s5-bi": (WORKLOADS["pathx"].scaled(n_layers=1), 1.0),
    "s4d": (WORKLOADS["text-s4d"].scaled(n_layers=1), 1.0),
    # at 10 % (N = 3, H·N = 768 states) the Toeplitz carry fits chunked levels instead of a Scan
    "s4d-10": (WORKLOADS["text-s4d"].scaled(n_layers=1), 0.1),
}


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False  # several sessions stay open; do not keep peak arenas
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(models, lengths, batches, methods, repeats: int) -> list[dict]:
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            workload, keep = MODELS[name]
            model = build(workload, keep)
            sessions = {}
            for method in [*methods, "auto"]:
                out = Path(tmp) / f"{name}-{method}"
                result = export(model, out, scan=method, step=False)
                label = method if method != "auto" else f"auto={result.sequence.scan}"
                sessions[label] = session(result.sequence.path)
            for batch in batches:
                for length in lengths:
                    x = example_input(workload, batch, length)
                    feeds = {"x": x.numpy()}
                    contenders = {"torch": lambda x=x, model=model: _torch(model, x)}
                    skipped = []
                    for label, s in sessions.items():
                        if _state_bytes(model, x) > MAX_STATE_BYTES.get(label, 1 << 62):
                            skipped.append(label)
                            continue
                        contenders[label] = lambda s=s, feeds=feeds: s.run(None, feeds)
                    times = interleaved_times(contenders, repeats)
                    base = median_ms(times["torch"])
                    row = {"model": name, "batch": batch, "length": length, "torch_ms": base}
                    row.update(
                        {f"{label}_skipped": "state tensor over 0.5 GB" for label in skipped}
                    )
                    for label, t in times.items():
                        if label != "torch":
                            row[f"{label}_ms"] = median_ms(t)
                            row[f"{label}_speedup"] = paired_speedup(times["torch"], t)
                    rows.append(row)
                    print(_line(row), flush=True)
    return rows


# Lowerings that hold (B, T, states, 2) float32 tensors (logdepth: a dozen at once) are skipped
# above these sizes of one such tensor, to stay within a shared machine's memory.
MAX_STATE_BYTES = {"chunked": 1 << 30, "logdepth": 1 << 27}


def _state_bytes(model, x) -> int:
    states = max(system.P for system in modal_systems(model))
    return x.shape[0] * x.shape[1] * states * 2 * 4 * (2 if model.bidirectional else 1)


def _torch(model, x):
    with torch.no_grad():
        return model(x)


def _line(row: dict) -> str:
    parts = [
        f"{row['model']:6s} B={row['batch']:<3d} T={row['length']:<6d} torch {row['torch_ms']:9.1f} ms"
    ]
    for key, value in row.items():
        if key.endswith("_speedup"):
            label = key[: -len("_speedup")]
            parts.append(f"{label} {row[label + '_ms']:8.1f} ms ({value:5.2f}x)")
    return " | ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--lengths", nargs="+", type=int, default=[1024, 4096, 16384])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = run(args.models, args.lengths, args.batches, args.methods, args.repeats)
    if args.out:
        meta = cpu_run_meta()
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
