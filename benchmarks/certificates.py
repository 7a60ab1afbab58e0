"""Certificates, old against new, side by side: time and values per pruned layer (issue 14).

    python benchmarks/certificates.py [--repeats 3] [--ratios 0.3,0.5,0.7,0.9]
                                      [--out benchmarks/certificates.json] [--quick]

The old implementation is read from git (``git show 0d45a51:aire_export/prune/certificate.py``)
into a temporary module, so the package keeps one implementation. For the ``pathx``-shaped
model (workloads.py: S5, H = 128, 128 stored states, 6 layers, bidirectional, random weights)
and every LTI model in examples/checkpoints, at each ratio: the plan's removed states per layer
(``ax.prune(..., certificates=False)``, the same for both), then both ``certify`` on every
layer, interleaved ``--repeats`` times (1 torch thread), their median times and ratio, and the
largest relative difference of each value (bound, measured H∞, H2) over the layers, and of
the ω of the measured peak (absolute, rad). Then the default pruning stage on the
pathx-shaped model, ``ax.prune(model, ratio=0.7)``, with the new certificates, with the old
ones (patched in) and without any, interleaved, and where the new stage's time goes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).parent), str(ROOT)]
from timing import cpu_run_meta, interleaved_times, median_ms, paired_speedup  # noqa: E402
from workloads import WORKLOADS, build  # noqa: E402

import aire_export as ax  # noqa: E402
from aire_export.models import modal_systems  # noqa: E402
from aire_export.prune import api as prune_api  # noqa: E402
from aire_export.prune import certificate as new  # noqa: E402

OLD_COMMIT = "0d45a51"
FIELDS = ("bound", "measured_hinf", "h2")


def load_old():
    """The certificate module as of OLD_COMMIT, imported from a temporary file."""
    source = subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:aire_export/prune/certificate.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    folder = Path(tempfile.mkdtemp())
    path = folder / "old_certificate.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_certificate", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def models(quick: bool) -> dict[str, torch.nn.Module]:
    """The pathx-shaped model and the shipped LTI models (``quick``: s5_digits only)."""
    found = {} if quick else {"pathx (random weights)": build(WORKLOADS["pathx"])}
    for path in sorted((ROOT / "examples" / "checkpoints").glob("*.pt")):
        if path.stem.startswith("mamba"):  # selective: no LTI certificate
            continue
        if not quick or path.stem == "s5_digits":
            found[path.stem] = ax.load(path)
    return found


def removed_sets(model, ratio: float) -> list[tuple[object, np.ndarray]]:
    """(modal system, removed state indices) of every layer the plan prunes."""
    _, plan = ax.prune(model, ratio=ratio, certificates=False)
    out = []
    for layer, system in zip(plan.layers, modal_systems(model), strict=True):
        removed = np.setdiff1d(np.arange(system.P), np.asarray(layer.kept, dtype=np.int64))
        if removed.size:
            out.append((system, removed))
    return out


def relative(a: float, b: float) -> float:
    return 0.0 if a == b else abs(a - b) / max(abs(a), abs(b))


def compare(old, layers, repeats: int) -> dict:
    """Time both certify over all layers, interleaved; per layer, the values and differences."""
    results: dict[str, list] = {"old": [], "new": []}

    def run(module, key):
        def call():
            results[key] = [module.certify(system, removed) for system, removed in layers]

        return call

    times = interleaved_times(
        {"old": run(old, "old"), "new": run(new, "new")}, repeats=repeats, warmup=0
    )
    rows = []
    for (_, removed), a, b in zip(layers, results["old"], results["new"], strict=True):
        rows.append(
            {
                "removed_states": int(removed.size),
                "old": {f: getattr(a, f) for f in (*FIELDS, "omega_peak")},
                "new": {f: getattr(b, f) for f in (*FIELDS, "omega_peak")},
                "relative_difference": {f: relative(getattr(a, f), getattr(b, f)) for f in FIELDS},
            }
        )
    return {
        "old_ms": median_ms(times["old"]),
        "new_ms": median_ms(times["new"]),
        "speedup": paired_speedup(times["old"], times["new"]),
        "layers": rows,
    }


def prune_stage(old, model, repeats: int) -> dict:
    """``ax.prune(model, ratio=0.7)``: new certificates, old ones patched in, none."""

    def with_old():
        prune_api.certify = old.certify
        try:
            ax.prune(model, ratio=0.7)
        finally:
            prune_api.certify = new.certify

    times = interleaved_times(
        {
            "new certificates": lambda: ax.prune(model, ratio=0.7),
            "old certificates": with_old,
            "no certificates": lambda: ax.prune(model, ratio=0.7, certificates=False),
        },
        repeats=repeats,
    )
    return {
        "median_ms": {name: median_ms(t) for name, t in times.items()},
        "speedup_new_over_old": paired_speedup(
            times["old certificates"], times["new certificates"]
        ),
        "new_breakdown_ms": breakdown(model, repeats),
    }


def breakdown(model, repeats: int) -> dict[str, float]:
    """Where the new stage's certificate time goes, summed over layers (median of repeats)."""
    subsystems = [system.subsystem(removed) for system, removed in removed_sets(model, 0.7)]
    parts = {"measured H∞": new.hinf_norm, "B.5 bound": new.hinf_bound, "exact H2": new.h2_norm}
    out = {}
    for name, fn in parts.items():
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            for sub in subsystems:
                fn(sub)
            samples.append(time.perf_counter() - start)
        out[name] = median_ms(samples)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ratios", default="0.3,0.5,0.7,0.9")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "certificates.json")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: s5_digits, and a 2-layer pathx shape"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    old = load_old()
    ratios = [float(r) for r in args.ratios.split(",")]
    meta = cpu_run_meta() | {"old": OLD_COMMIT, "repeats": args.repeats}
    rows = []
    for name, model in models(args.quick).items():
        for ratio in ratios:
            result = compare(old, removed_sets(model, ratio), args.repeats)
            worst = {
                f: max((r["relative_difference"][f] for r in result["layers"]), default=0.0)
                for f in FIELDS
            }
            worst["omega_peak_abs"] = max(
                (abs(r["old"]["omega_peak"] - r["new"]["omega_peak"]) for r in result["layers"]),
                default=0.0,
            )
            rows.append({"model": name, "ratio": ratio, **result, "max_relative": worst})
            print(
                f"{name:24s} ratio {ratio:.1f}  old {result['old_ms']:9.1f} ms  new "
                f"{result['new_ms']:7.1f} ms  ×{result['speedup']:5.1f}  max rel. diff "
                + "  ".join(f"{f} {worst[f]:.1e}" for f in FIELDS)
                + f"  |Δω peak| {worst['omega_peak_abs']:.1e}",
                flush=True,
            )
    pathx = WORKLOADS["pathx"]
    if args.quick:
        pathx = pathx.scaled(n_layers=2, stored_states=32)
    stage = prune_stage(old, build(pathx), args.repeats)
    print("ax.prune(pathx, ratio=0.7):", json.dumps(stage, indent=1))
    meta["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"meta": meta, "rows": rows, "prune_stage": stage}, indent=1))
    tmp.replace(args.out)
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    print("medians across rows: speedup", statistics.median(r["speedup"] for r in rows))


if __name__ == "__main__":
    main()
