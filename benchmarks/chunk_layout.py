"""The chunked S5 graph's layout (issue 14 item 4): states in the pair layout (B, P, L, 2),
transposed to and from the (B, L, 2P) maps by (re, im) pairs, against time last with chunks
(B, P, n, 2Q) of (re/im, step) columns, where the 2P-wide tensors move in blocks of Q floats
(and the transposes of u and of each direction's states before the readout are fused into
onnxruntime's MatMuls).

    python benchmarks/chunk_layout.py [--quick] [--repeats 7] [--out benchmarks/chunk_layout.json]

Three parts, all on this machine, one thread, interleaved rounds:

1. ``transposes``: the single Transpose nodes of the pathx layer (P = 128 stored states,
   H = 128, T = 16384, batch 1), pair layout against block layout.
2. ``profile``: onnxruntime's profiler on the whole pathx model (batch 1): kernel time per op
   type, old graph against new.
3. ``models``: whole models, the graphs of ``OLD_COMMIT`` (pair layout, exported by that
   commit's package from ``git archive`` in a subprocess) against this checkout's, on the
   S5 workloads of BENCHMARKS.md (pathx, pathfinder, listops) unpruned and at 30 % of the
   states, batch 1 and the workload's batch, the chunked (auto) and scan lowerings: median
   times, paired old/new ratio, largest output difference. Where a model has layers with
   2P < H (pathx and pathfinder at 30 %, listops), which this checkout keeps in the pair
   layout, a third contender ``forced`` runs every layer time last (``time_last`` patched),
   the measurement behind that rule.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from unittest import mock

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).resolve().parents[1])]
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from graph_size import export_all, old_tree, session  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from timing import cpu_run_meta, interleaved_times, median_ms, paired_speedup  # noqa: E402
from workloads import WORKLOADS, build, example_input  # noqa: E402

import aire_export as ax  # noqa: E402
from aire_export.graphs import lti_dense  # noqa: E402
from aire_export.models import family_of  # noqa: E402

OLD_COMMIT = "3bea52a"  # main with the pair layout around the chunked S5 recurrence
MODELS = ("pathx", "pathfinder", "listops")
KEEPS = (1.0, 0.3)
LOWERINGS = ("auto", "scan")


def transpose_session(shape: list[int], perm: list[int]) -> ort.InferenceSession:
    node = helper.make_node("Transpose", ["x"], ["y"], perm=perm)
    graph = helper.make_graph(
        [node],
        "transpose",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])


def transposes(repeats: int) -> list[dict]:
    """The Transposes of one pathx layer (one direction) in each layout, timed interleaved."""
    w = WORKLOADS["pathx"]
    P, H, T, q = w.stored_states, w.d_model, w.length, 16
    n = T // q
    cases = {
        "pair: input map (B,L,P,2) -> (B,P,L,2)": ([1, T, P, 2], [0, 2, 1, 3]),
        "pair: readout (B,P,L,2) -> (B,L,P,2)": ([1, P, T, 2], [0, 2, 1, 3]),
        "block: (B,P,2,n,Q) -> (B,P,n,2,Q)": ([1, P, 2, n, q], [0, 1, 3, 2, 4]),
        "block: (B,P,n,2,Q) -> (B,P,2,n,Q)": ([1, P, n, 2, q], [0, 1, 3, 2, 4]),
        "u or y: (B,L,H) <-> (B,H,L)": ([1, T, H], [0, 2, 1]),
    }
    rng = np.random.default_rng(0)
    calls = {}
    for name, (shape, perm) in cases.items():
        s, x = transpose_session(shape, perm), rng.random(shape, dtype=np.float32)
        calls[name] = lambda s=s, x=x: s.run(None, {"x": x})
    times = interleaved_times(calls, repeats, warmup=2)
    return [{"transpose": name, "ms": median_ms(t)} for name, t in times.items()]


def profile(path: Path, feeds: dict, scratch: Path, runs: int = 3) -> dict[str, float]:
    """Kernel time share per op type over ``runs`` runs (after one warm-up)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(scratch / "profile")
    s = ort.InferenceSession(str(path), options, ["CPUExecutionProvider"])
    s.run(None, feeds)
    for _ in range(runs):
        s.run(None, feeds)
    events = json.loads(Path(s.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values())
    return {op: per_op[op] / total for op in sorted(per_op, key=per_op.get, reverse=True)}


def transpose_nodes(path: Path) -> int:
    return sum(n.op_type == "Transpose" for n in onnx.load(str(path)).graph.node)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: pathx, 256 steps, batch 1")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("chunk_layout.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    result = {**cpu_run_meta(), "old_commit": OLD_COMMIT, "repeats": args.repeats}
    result["transposes"] = transposes(1 if args.quick else args.repeats)
    for row in result["transposes"]:
        print(f"{row['transpose']:42s} {row['ms']:7.2f} ms", flush=True)
    models = ("pathx",) if args.quick else MODELS
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tree = old_tree(tmp / "old", OLD_COMMIT)
        jobs = {"old": [], "new": []}
        plan = []
        for name in models:
            for keep in KEEPS:
                model = build(WORKLOADS[name], keep)
                saved = ax.save(model, tmp / f"{name}-{keep}.pt")
                cores = [b.core for b in family_of(model).export_ir(model).blocks]
                narrow = not all(lti_dense.time_last(core) for core in cores)
                for lowering in LOWERINGS:
                    folders = {v: tmp / f"{name}-{keep}-{lowering}-{v}" for v in jobs}
                    if narrow:
                        folders["forced"] = tmp / f"{name}-{keep}-{lowering}-forced"
                        with mock.patch.object(lti_dense, "time_last", lambda core: True):
                            ax.export(model, folders["forced"], scan=lowering, step=False)
                    for version in jobs:
                        folder = folders[version]
                        options = dict(scan=None if lowering == "auto" else lowering)
                        jobs[version].append(
                            dict(model=str(saved), folder=str(folder), options=options)
                        )
                    plan.append((name, keep, lowering, folders))
        for version, package in (("old", tree), ("new", None)):
            export_all(jobs[version], package)
        if not args.quick:
            w = WORKLOADS["pathx"]
            feeds = {"x": example_input(w, 1, w.length).numpy()}
            folders = next(f for n, k, lo, f in plan if (n, k, lo) == ("pathx", 1.0, "auto"))
            result["profile"] = {
                v: profile(folders[v] / "model.onnx", feeds, tmp) for v in ("old", "new")
            }
            for v, shares in result["profile"].items():
                top = ", ".join(f"{op} {share:.0%}" for op, share in list(shares.items())[:5])
                print(f"profile pathx B=1 {v}: {top}", flush=True)
        for name, keep, lowering, folders in plan:
            w = WORKLOADS[name]
            paths = {v: folders[v] / "model.onnx" for v in folders}
            sessions = {v: session(p) for v, p in paths.items()}
            for batch in (1,) if args.quick else (1, w.batch):
                length = 256 if args.quick else w.length
                feeds = {"x": example_input(w, batch, length).numpy()}
                outputs = {v: s.run(None, feeds)[0] for v, s in sessions.items()}
                scale = float(np.abs(outputs["old"]).max()) or 1.0
                calls = {v: (lambda s=s, f=feeds: s.run(None, f)) for v, s in sessions.items()}
                times = interleaved_times(calls, args.repeats)
                forced = "forced" in times
                row = {
                    "model": name,
                    "keep": keep,
                    "lowering": lowering,
                    "scan": (folders["new"] / "scan.txt").read_text(),
                    "batch": batch,
                    "length": length,
                    "ms": {v: median_ms(t) for v, t in times.items()},
                    "speedup_new_over_old": paired_speedup(times["old"], times["new"]),
                    "max_rel_difference": float(
                        np.abs(outputs["new"] - outputs["old"]).max() / scale
                    ),
                    "transpose_nodes": {v: transpose_nodes(p) for v, p in paths.items()},
                }
                if forced:
                    row["speedup_forced_over_old"] = paired_speedup(times["old"], times["forced"])
                rows.append(row)
                print(
                    f"{name:10s} keep {keep:.0%} {lowering:5s} ({row['scan']}) B={batch:<3d}"
                    f" old {row['ms']['old']:8.2f} ms  new {row['ms']['new']:8.2f} ms"
                    f"  x{row['speedup_new_over_old']:.3f}  diff {row['max_rel_difference']:.1e}"
                    f"  transposes {row['transpose_nodes']['old']} -> "
                    f"{row['transpose_nodes']['new']}"
                    + (f"  forced x{row['speedup_forced_over_old']:.3f}" if forced else ""),
                    flush=True,
                )
    result["models"] = rows
    result["seconds"] = time.perf_counter() - start
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
