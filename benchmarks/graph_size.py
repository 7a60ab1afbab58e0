"""Graph size (issue 14 item 2): ``model.onnx`` bytes against the model's fp32 parameter bytes,
the graphs of the old code against the new, and what building the power tables in the graph
costs when onnxruntime loads (session creation) and runs it.

    python benchmarks/graph_size.py [--quick] [--repeats 7] [--out benchmarks/graph_size.json]

The old graphs are exported by the code at ``OLD_COMMIT`` (main before the small graphs),
extracted with ``git archive`` into a temporary folder and run in a subprocess on the same
models (saved with ``ax.save``); both are then loaded and timed here, interleaved in rounds,
one thread each. Per model and lowering: parameter bytes, old and new bytes in fp32 and fp16,
the nodes left after onnxruntime's optimizations (equal when the new nodes fold), session
creation and run time (medians, paired old/new ratios), and the largest difference between
the old and new outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).resolve().parents[1])]
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from timing import cpu_run_meta, interleaved_times, median_ms, paired_speedup  # noqa: E402
from workloads import WORKLOADS, build  # noqa: E402

import aire_export as ax  # noqa: E402
from aire_export.data import random_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = "9797b4e"  # main before small graphs: per-level Q×Q tables stored
SHIPPED = ("s5_digits", "s5_listops", "s4d_keywords", "mamba_charlm")
LTI_LOWERINGS = ("auto", "chunked", "scan", "toeplitz", "logdepth")
SHIPPED_INPUT = (1, 2048)  # batch, length for the shipped models
EXPORT_SCRIPT = """
import json, sys
import aire_export as ax
for job in json.loads(sys.argv[1]):
    model = ax.load(job["model"])
    options = {k: v for k, v in job["options"].items() if v is not None}
    result = ax.export(model, job["folder"], step=False, **options)
    open(job["folder"] + "/scan.txt", "w").write(result.sequence.scan)
"""


def cases(quick: bool) -> list[dict]:
    """(name, model, lowerings, batch, length): the shipped models, then the workloads."""
    out = []
    for name in SHIPPED[:1] if quick else SHIPPED:
        model = ax.load(ROOT / "examples" / "checkpoints" / f"{name}.pt")
        lowerings = ("auto", "scan") if quick else LTI_LOWERINGS
        lowerings = ("auto",) if model.arch == "mamba" else lowerings
        out.append(dict(name=name, model=model, lowerings=lowerings, input=SHIPPED_INPUT))
    for name in () if quick else ("pathx", "pathfinder", "listops", "text-s4d"):
        w = WORKLOADS[name]
        out.append(dict(name=name, model=build(w), lowerings=("auto",), input=(w.batch, w.length)))
    return out


def old_tree(folder: Path, commit: str = OLD_COMMIT) -> Path:
    """The package at ``commit``, extracted from git into ``folder``."""
    archive = subprocess.run(
        ["git", "archive", commit, "aire_export"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def export_all(jobs: list[dict], tree: Path | None) -> None:
    """Run the export jobs with the package at ``tree`` (None: this checkout)."""
    env = {**os.environ, "PYTHONPATH": str(tree or ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-c", EXPORT_SCRIPT, json.dumps(jobs)], env=env, check=True, cwd=tree
    )


def session(path: Path, optimized: Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def loaded_nodes(path: Path, scratch: Path) -> tuple[int, int]:
    """Nodes of the graph onnxruntime runs after its optimizations (constant folding), and
    how many of them still compute from initializers alone (0: every table folded)."""
    session(path, scratch)
    graph = onnx.load(str(scratch)).graph
    constants = {t.name for t in graph.initializer}
    unfolded = sum(bool(n.input) and all(i in constants for i in n.input) for n in graph.node)
    return len(graph.node), unfolded


def measure(case: dict, lowering: str, folders: dict, repeats: int, scratch: Path) -> dict:
    row = {"model": case["name"], "lowering": lowering, "arch": case["model"].arch}
    row["parameter_bytes"] = 4 * sum(p.numel() for p in case["model"].parameters())
    paths = {}
    for version in ("old", "new"):
        for precision in ("fp32", "fp16"):
            path = folders[version, precision] / "model.onnx"
            row[f"{version}_{precision}_bytes"] = path.stat().st_size
        paths[version] = folders[version, "fp32"] / "model.onnx"
        row[f"{version}_nodes"] = len(onnx.load(str(paths[version])).graph.node)
        loaded = loaded_nodes(paths[version], scratch / "opt.onnx")
        row[f"{version}_loaded_nodes"], row[f"{version}_unfolded_nodes"] = loaded
    row["scan"] = (folders["new", "fp32"] / "scan.txt").read_text()
    row["new_over_parameters"] = row["new_fp32_bytes"] / row["parameter_bytes"]
    row["old_over_parameters"] = row["old_fp32_bytes"] / row["parameter_bytes"]
    loads = interleaved_times({v: (lambda p=p: session(p)) for v, p in paths.items()}, repeats)
    batch, length = case["input"]
    feeds = random_data(case["model"], batch, length, seed=0).feeds()
    sessions = {v: session(p) for v, p in paths.items()}
    outputs = {v: s.run(None, feeds)[0] for v, s in sessions.items()}
    scale = float(np.abs(outputs["old"]).max()) or 1.0
    row["max_rel_difference"] = float(np.abs(outputs["new"] - outputs["old"]).max() / scale)
    runs = interleaved_times(
        {v: (lambda s=s: s.run(None, feeds)) for v, s in sessions.items()}, repeats
    )
    row["input"] = [batch, length]
    for kind, times in (("load", loads), ("run", runs)):
        row[f"{kind}_ms"] = {v: median_ms(t) for v, t in times.items()}
        row[f"{kind}_speedup_new_over_old"] = paired_speedup(times["old"], times["new"])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: s5_digits, 2 lowerings")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("graph_size.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tree = old_tree(tmp / "old")
        jobs, plan = [], []
        for i, case in enumerate(cases(args.quick)):
            saved = ax.save(case["model"], tmp / f"model{i}.pt")
            for lowering in case["lowerings"]:
                folders = {}
                for version in ("old", "new"):
                    for precision in ("fp32", "fp16"):
                        folder = tmp / f"{i}-{lowering}-{version}-{precision}"
                        folders[version, precision] = folder
                        scan = None if lowering == "auto" else lowering
                        options = dict(scan=scan, precision=precision)
                        jobs.append(
                            (version, dict(model=str(saved), folder=str(folder), options=options))
                        )
                plan.append((case, lowering, folders))
        for version, package in (("old", tree), ("new", None)):
            export_all([job for v, job in jobs if v == version], package)
        for case, lowering, folders in plan:
            row = measure(case, lowering, folders, args.repeats, tmp)
            rows.append(row)
            print(
                f"{row['model']:13s} {lowering:9s} ({row['scan']}) params {row['parameter_bytes']:>9,} B"
                f"  fp32 {row['old_fp32_bytes']:>10,} -> {row['new_fp32_bytes']:>9,} B"
                f" ({row['new_over_parameters']:.2f}x params)  fp16 {row['old_fp16_bytes']:>10,} ->"
                f" {row['new_fp16_bytes']:>9,} B  load {row['load_ms']['old']:.1f} ->"
                f" {row['load_ms']['new']:.1f} ms  run {row['run_ms']['old']:.2f} ->"
                f" {row['run_ms']['new']:.2f} ms (x{row['run_speedup_new_over_old']:.3f})",
                flush=True,
            )
    result = {
        **cpu_run_meta(),
        "old_commit": OLD_COMMIT,
        "repeats": args.repeats,
        "seconds": time.perf_counter() - start,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
