"""The paper's Fig. 4 for the example models: accuracy vs pruning ratio, one panel per model.

Reads every ``examples/results/<name>/sweep.json`` (written by ``aire-export sweep``) and writes
``examples/results/accuracy_all.png``.

    python examples/plot_sweeps.py [--out examples/results/accuracy_all.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aire_export.sweep import SweepResult, plot_accuracy_panels

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "accuracy_all.png")
    args = parser.parse_args()
    sweeps = {
        path.parent.name: SweepResult.from_json(json.loads(path.read_text()))
        for path in sorted(RESULTS.glob("*/sweep.json"))
    }
    if not sweeps:
        raise SystemExit(f"no sweep.json under {RESULTS}: run `aire-export sweep` first")
    titles = {
        f"{name} ({s.samples} samples, {100 * s.baseline_accuracy:.1f} %)": s
        for name, s in sweeps.items()
    }
    plot_accuracy_panels(titles, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
