"""Latency and size of the example models, pruned at the ratio each method reaches within a budget.

For every example model with a sweep in ``examples/results/<task>/sweep.json`` (written by
``aire-export sweep``), and for every method, take the largest grid ratio whose accuracy drop is
within ``--max-drop`` points (the paper's Table 1), prune and physically shrink the model at that
ratio, export original and pruned with the same lowering, and time them side by side in one run
(interleaved rounds): PyTorch eager and onnxruntime (the paper's Table 3). Prints markdown rows
and writes JSON.

    python benchmarks/bench_examples.py [--max-drop 1.0] [--batch 8] [--runs 20] [--fixed 0.7]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import aire_export as ax
from aire_export.data import load_data
from aire_export.runtimes.ort import OrtRunner, SessionLoader
from aire_export.runtimes.torch_runner import TorchRunner
from aire_export.sweep import SweepResult
from aire_export.validate.latency import measure_latency

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def example_models() -> dict[str, dict]:
    """task → its entry of examples/models.json (checkpoint, eval_data relative to examples/)."""
    return {
        entry["task"]: entry
        for entry in json.loads((EXAMPLES / "models.json").read_text()).values()
    }


def example_sweeps() -> list[str]:
    """Folders of examples/results/ that hold a sweep.json, in name order."""
    return sorted(p.parent.name for p in (EXAMPLES / "results").glob("*/sweep.json"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-drop", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--sweeps",
        default=",".join(example_sweeps()),
        help="folders under examples/results/ (a task, or task-variant such as keywords-exact)",
    )
    parser.add_argument(
        "--fixed",
        type=float,
        default=0.7,
        help="also time AIRE at this ratio whatever its accuracy (the latency a ratio buys)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    models = example_models()
    rows = []
    print(
        "| sweep | method | ratio | accuracy % (drop) | states | parameter reduction |"
        " speedup eager | speedup onnxruntime |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.sweeps.split(","):
        task = name.split("-")[0]
        entry = models[task]
        sweep_path = EXAMPLES / "results" / name / "sweep.json"
        if not sweep_path.exists():
            print(
                f"{name}: no sweep at {sweep_path}; run `aire-export sweep` first", file=sys.stderr
            )
            continue
        sweep = SweepResult.from_json(json.loads(sweep_path.read_text()))
        model = ax.load(EXAMPLES / entry["checkpoint"])
        data = load_data(EXAMPLES / entry["eval_data"], model).head(args.batch)
        feeds = data.feeds()
        chosen = {}
        for method in dict.fromkeys(p.method for p in sweep.points):
            best = sweep.best_within(method, args.max_drop)
            if best is not None and best.ratio > 0:
                chosen.setdefault(best.ratio, []).append((method, best, "budget"))
        fixed = [p for p in sweep.points if p.method == "aire" and abs(p.ratio - args.fixed) < 1e-9]
        if fixed and all(p is not fixed[0] for group in chosen.values() for _, p, _ in group):
            chosen.setdefault(fixed[0].ratio, []).append(("aire", fixed[0], "fixed"))
        with tempfile.TemporaryDirectory() as tmp:
            base_graph = ax.export(
                model, Path(tmp) / "original", step=False, lengths_input="lengths" in feeds
            ).sequence.path
            candidates = {
                "eager original": (TorchRunner(model).bind(feeds), "cpu"),
                "onnxruntime original": (OrtRunner(SessionLoader(base_graph)).bind(feeds), "cpu"),
            }
            pruned_info = {}
            for ratio, methods in sorted(chosen.items()):
                for method, point, why in methods:
                    pruned, plan = ax.prune(
                        model,
                        ratio,
                        method=method,
                        certificates=False,
                        eps=sweep.eps,
                        score_compat=sweep.score_compat,
                        seed=sweep.seed,
                        balance_channels=sweep.balance_channels,
                    )
                    graph = ax.export(
                        pruned,
                        Path(tmp) / f"{method}-{ratio}",
                        step=False,
                        lengths_input="lengths" in feeds,
                    ).sequence.path
                    candidates[f"eager {method}@{ratio}"] = (TorchRunner(pruned).bind(feeds), "cpu")
                    candidates[f"onnxruntime {method}@{ratio}"] = (
                        OrtRunner(SessionLoader(graph)).bind(feeds),
                        "cpu",
                    )
                    pruned_info[(method, ratio)] = (
                        why,
                        point,
                        plan,
                        sum(p.numel() for p in pruned.parameters()),
                    )
            t0 = time.perf_counter()
            timings = measure_latency(
                candidates, batch=data.count, length=data.length, runs=args.runs, budget_s=120.0
            )
            elapsed = time.perf_counter() - t0
        params = sum(p.numel() for p in model.parameters())
        for (method, ratio), (why, point, plan, pruned_params) in pruned_info.items():
            row = {
                "task": task,
                "sweep": name,
                "balance_channels": sweep.balance_channels,
                "selected_by": "largest ratio within the budget"
                if why == "budget"
                else "fixed ratio",
                "method": method,
                "ratio": ratio,
                "accuracy": point.accuracy,
                "baseline_accuracy": sweep.baseline_accuracy,
                "drop_pp": point.drop_pp,
                "states": f"{plan.states_after}/{plan.states_before}",
                "parameters": f"{pruned_params}/{params}",
                "parameter_reduction": 1 - pruned_params / params,
                "speedup_eager": timings["eager original"].p50_ms
                / timings[f"eager {method}@{ratio}"].p50_ms,
                "speedup_onnxruntime": timings["onnxruntime original"].p50_ms
                / timings[f"onnxruntime {method}@{ratio}"].p50_ms,
                "p50_ms_onnxruntime_original": timings["onnxruntime original"].p50_ms,
                "p50_ms_onnxruntime_pruned": timings[f"onnxruntime {method}@{ratio}"].p50_ms,
                "batch": data.count,
                "length": data.length,
                "timing_seconds": elapsed,
            }
            rows.append(row)
            cells = [
                name,
                method,
                f"{ratio:.2f}" + ("" if why == "budget" else " (fixed)"),
                f"{100 * point.accuracy:.2f} ({0.0 - point.drop_pp + 0.0:+.2f})",
                row["states"],
                f"{100 * row['parameter_reduction']:.1f} %",
                f"{row['speedup_eager']:.2f}×",
                f"{row['speedup_onnxruntime']:.2f}×",
            ]
            print("| " + " | ".join(cells) + " |", flush=True)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "command": "python " + " ".join(sys.argv),
        "torch": torch.__version__,
    }
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(json.dumps(meta))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
