"""Markdown tables for RESULTS.md from the JSON the benchmarks and sweeps write.

    python benchmarks/tables.py benchmarks/cpu_lowerings.json benchmarks/cpu_workloads.json \
        benchmarks/precision_errors.json
    python benchmarks/tables.py examples/results/*/sweep.json benchmarks/examples.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def lowerings(data: dict) -> str:
    rows = data["rows"]
    methods = ["chunked", "toeplitz", "logdepth", "scan"]
    head = "| model | B | T | torch eager ms | " + " | ".join(methods) + " | auto |"
    lines = [head, "|" + "---|" * (5 + len(methods))]
    for r in rows:
        cells = [_cell(r, m) for m in methods]
        auto = next(k[: -len("_ms")] for k in r if k.startswith("auto=") and k.endswith("_ms"))
        cells.append(f"{auto[len('auto=') :]}: {_cell(r, auto)}")
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['length']} | {r['torch_ms']:.1f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def _cell(row: dict, label: str) -> str:
    if f"{label}_skipped" in row:
        return "skipped (memory)"
    if f"{label}_ms" not in row:
        return ""
    return f"{row[label + '_ms']:.1f} ms, **{row[label + '_speedup']:.2f}×**"


def workloads(data: dict) -> str:
    lines = [
        "| workload | scaled | T | keep | lowering | torch median (p90) ms | ort median (p90) ms "
        "| speedup |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['workload']} | {r['scaled']} | {r['T']} | {r['keep']:.0%} | {r['lowering']} | "
            f"{r['torch_median_ms']:.2f} ({r['torch_p90_ms']:.2f}) | "
            f"{r['ort_median_ms']:.2f} ({r['ort_p90_ms']:.2f}) | **{r['speedup']:.2f}×** |"
        )
    return "\n".join(lines)


def precision(data: dict) -> str:
    rows = data["rows"]
    lengths = sorted({r["length"] for r in rows})
    lines = [
        "| precision | " + " | ".join(f"T = {n}" for n in lengths) + " |",
        "|---|" + "---|" * len(lengths),
    ]
    for p in sorted({r["precision"] for r in rows}):
        worst = [
            max(r["error"] for r in rows if r["precision"] == p and r["length"] == n)
            for n in lengths
        ]
        lines.append(f"| {p} | " + " | ".join(f"{w:.1e}" for w in worst) + " |")
    return "\n".join(lines)


SWEEP_COLUMNS = (0.3, 0.5, 0.7, 0.9)


def sweep(data: dict, max_drop_pp: float = 1.0) -> str:
    """The paper's Table 1 for one model: per method, the largest grid ratio within the budget."""
    points = data["points"]
    methods = list(dict.fromkeys(p["method"] for p in points))
    lines = [
        f"| method | largest ratio ≤ {max_drop_pp:g} pp | accuracy there (drop) | states kept | "
        + " | ".join(f"acc. at {r:.0%}" for r in SWEEP_COLUMNS)
        + " |",
        "|---|---|---|---|" + "---|" * len(SWEEP_COLUMNS),
    ]
    for m in methods:
        mine = [p for p in points if p["method"] == m]
        ok = [p for p in mine if p["drop_pp"] <= max_drop_pp + 1e-12]
        best = max(ok, key=lambda p: p["ratio"])
        at = {round(p["ratio"], 6): p for p in mine}
        cells = [
            f"{100 * at[r]['accuracy']:.1f}" if r in at else ""
            for r in (round(c, 6) for c in SWEEP_COLUMNS)
        ]
        lines.append(
            f"| {m} | **{best['ratio']:.2f}** | {100 * best['accuracy']:.2f} "
            f"({0.0 - best['drop_pp'] + 0.0:+.2f}) | {best['states_kept']}/{data['states']} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    for arg in sys.argv[1:]:
        data = json.loads(Path(arg).read_text())
        if "points" in data:
            print(f"{arg}: unpruned {100 * data['baseline_accuracy']:.2f} % on {data['samples']}")
            print(sweep(data))
            print()
            continue
        rows = data["rows"]
        if "precision" in rows[0]:
            print(precision(data))
        elif "workload" in rows[0]:
            print(workloads(data))
        else:
            print(lowerings(data))
        print(f"\n{data.get('meta', {}) or data.get('command', '')}\n")


if __name__ == "__main__":
    main()
