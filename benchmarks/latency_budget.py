"""CPU: does --latency-budget return a model that meets the budget when timed again, and how
noisy is the measurement it decides on?

    python benchmarks/latency_budget.py [--model examples/checkpoints/s4d_keywords.pt]
        [--fractions 0.9,0.75,0.6] [--repeats 5] [--unit state] [--out FILE.json]

For the model (batch 1, its eval set's length, onnxruntime CPU): the unpruned graph's median
latency T0 (S4oP's protocol: 50 warm-up and 100 timed runs), then for budgets f·T0 the
search's choice (validate/budget.py) and ``--repeats`` fresh measurements of the chosen graph
with the same protocol: their medians' minimum, median and maximum, how many met the budget,
and the spread of one measurement ((p90 − fastest) / median). All in one run, side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).parent), str(ROOT)]
from timing import cpu_run_meta  # noqa: E402

import aire_export as ax  # noqa: E402
from aire_export.data import random_data  # noqa: E402
from aire_export.errors import InputError  # noqa: E402
from aire_export.prune import PruneOptions, prune_with  # noqa: E402
from aire_export.validate import budget  # noqa: E402


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (results carry no machine paths)."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "examples/checkpoints/s4d_keywords.pt")
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--fractions", default="0.9,0.75,0.6")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--unit", default="state", choices=["state", "channel"])
    parser.add_argument("--runs", type=int, default=budget.RUNS)
    parser.add_argument("--warmup", type=int, default=budget.WARMUP)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    model = ax.load(args.model)
    feeds = random_data(model, 1, args.length).feeds()
    protocol = dict(warmup=args.warmup, runs=args.runs)
    options = PruneOptions(unit=args.unit)
    with tempfile.TemporaryDirectory() as tmp:
        graph = ax.export(model, Path(tmp) / "unpruned", step=False).sequence.path
        unpruned = budget.graph_latency(graph, "onnxruntime-cpu", feeds, **protocol)
        print(
            f"unpruned: median {unpruned[0]:.4f} ms (fastest {unpruned[1]:.4f}, p90 {unpruned[2]:.4f})"
        )
        rows = []
        for fraction in (float(f) for f in args.fractions.split(",")):
            limit = fraction * unpruned[0]
            try:
                found = budget.search_latency_budget(
                    model, limit, target="onnx", length=args.length, options=options, **protocol
                )
            except InputError as e:
                rows.append({"fraction": fraction, "budget_ms": limit, "error": str(e)})
                print(json.dumps(rows[-1]))
                continue
            pruned, _ = prune_with(model, options.with_ratio(found.ratio))
            path = ax.export(pruned, Path(tmp) / f"{fraction}", step=False).sequence.path
            again = [
                budget.graph_latency(path, "onnxruntime-cpu", feeds, **protocol)
                for _ in range(args.repeats)
            ]
            medians = [a[0] for a in again]
            chosen = found.chosen
            rows.append(
                {
                    "fraction": fraction,
                    "budget_ms": limit,
                    "ratio": found.ratio,
                    "points_measured": len(found.curve),
                    "search_median_ms": chosen.p50_ms,
                    "search_confirmed_ms": chosen.confirmed_ms,
                    "search_spread": (chosen.p90_ms - chosen.min_ms) / chosen.p50_ms,
                    "remeasured_median_ms": {
                        "min": min(medians),
                        "median": statistics.median(medians),
                        "max": max(medians),
                    },
                    "remeasured_within_budget": int(np.sum(np.array(medians) <= limit)),
                    "repeats": args.repeats,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "meta": cpu_run_meta()
        | {"model": _shown(args.model), "length": args.length, "unit": args.unit},
        "unpruned_ms": {"median": unpruned[0], "fastest": unpruned[1], "p90": unpruned[2]},
        "rows": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
