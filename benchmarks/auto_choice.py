"""CPU: is ``scan="auto"`` the fastest lowering, per workload, batch and thread count?

    python benchmarks/auto_choice.py [--workloads pathx,pathfinder,listops,text-s4d]
        [--threads 1,2] [--rounds 3] [--out benchmarks/auto_choice.json]

For every BENCHMARKS.md sequence workload (random weights, unpruned and at 30 % of the states)
the whole model is exported with each lowering (chunked, scan, toeplitz; S4D: scan and
toeplitz) and with ``auto``,
and every graph runs on onnxruntime CPU at batch 1 over the full length (latency, S4oP's
setting) and at the workload's batch over min(T, 2048) steps (throughput), with 1 and 2
intra-op threads. Within one (workload, keep, batch, threads) cell the lowerings run in the
same interleaved rounds; printed: median ms of each, the fastest, auto's choice and its time
relative to the fastest (1.00 = auto is the fastest). The CPU rows of
``aire_export/graphs/auto.py`` cite this benchmark.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import onnxruntime as ort

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).resolve().parents[1])]
from timing import cpu_run_meta, interleaved_times, median_ms  # noqa: E402
from workloads import WORKLOADS, build, example_input  # noqa: E402

from aire_export.lower import export  # noqa: E402

LOWERINGS = ("chunked", "scan", "toeplitz")
# chunked materializes an S4D bank's (B, T, H·N) states: 22× slower than scan at text-s4d,
# B=1, T=128 and 23× at B=16 (a smoke run of this script), hours at full size, so not timed
S4D_LOWERINGS = ("scan", "toeplitz")
KEEPS = (1.0, 0.3)
THROUGHPUT_LENGTH = 2048


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def cell(paths: dict[str, Path], x, threads: int, rounds: int) -> dict[str, float]:
    """Median ms of every graph on input x, interleaved."""
    feeds = {"x": x.numpy()}
    sessions = {name: _session(p, threads) for name, p in paths.items()}
    runs = {name: (lambda s=s: s.run(None, feeds)) for name, s in sessions.items()}
    times = interleaved_times(runs, rounds, warmup=1)
    return {name: median_ms(t) for name, t in times.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="pathx,pathfinder,listops,text-s4d")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keeps", default=",".join(map(str, KEEPS)))
    parser.add_argument("--max-length", type=int, default=None, help="cap T (smoke runs)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "auto_choice.json")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.workloads.split(","):
            workload = WORKLOADS[name]
            for keep in (float(k) for k in args.keeps.split(",")):
                model = build(workload, keep)
                paths, chosen = {}, None
                lowerings = LOWERINGS if workload.arch == "s5" else S4D_LOWERINGS
                for lowering in (*lowerings, "auto"):
                    folder = Path(tmp) / f"{name}-{keep}-{lowering}"
                    result = export(model, folder, scan=lowering, step=False)
                    if lowering == "auto":
                        chosen = result.sequence.scan
                    else:
                        paths[lowering] = result.sequence.path
                length = min(workload.length, args.max_length or workload.length)
                shapes = [(1, length), (workload.batch, min(length, THROUGHPUT_LENGTH))]
                for batch, steps in shapes:
                    x = example_input(workload, batch, steps)
                    for threads in (int(t) for t in args.threads.split(",")):
                        ms = cell(paths, x, threads, args.rounds)
                        fastest = min(ms, key=ms.get)
                        auto_ms = ms.get(chosen)
                        row = {
                            "workload": name, "keep": keep, "batch": batch, "length": steps,
                            "threads": threads, "median_ms": ms, "fastest": fastest,
                            "auto": chosen,
                            "auto_vs_fastest": None if auto_ms is None else auto_ms / ms[fastest],
                        }  # fmt: skip
                        rows.append(row)
                        print(
                            f"{name} keep {keep:.0%} B={batch} T={steps} {threads} thread(s): "
                            + ", ".join(f"{k} {v:.1f}" for k, v in ms.items())
                            + f" ms; fastest {fastest}; auto = {chosen}"
                            + ("" if auto_ms is None else f" ({auto_ms / ms[fastest]:.2f}×)"),
                            flush=True,
                        )
    args.out.write_text(json.dumps({**cpu_run_meta(), "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
