"""Export cost per BENCHMARKS.md workload (full size, unpruned) and target: time, file, nodes.

python benchmarks/export_cost.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).resolve().parents[1])]
from workloads import WORKLOADS, build  # noqa: E402

from aire_export.lower import export  # noqa: E402


def main() -> None:
    print("| workload | target | lowering | export s | model.onnx MB | nodes | accepts T ≤ |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, workload in WORKLOADS.items():
            model = build(workload)
            for target in ("onnx", "trt", "jetson"):
                start = time.perf_counter()
                result = export(model, Path(tmp) / f"{name}-{target}", target=target)
                seconds = time.perf_counter() - start
                seq = result.sequence
                size = seq.path.stat().st_size / 1e6
                limit = f"{seq.max_length:,}" if seq.max_length else "any"
                print(
                    f"| {name} | {target} | {seq.scan} | {seconds:.2f} | {size:.1f} | "
                    f"{seq.node_count} | {limit} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
