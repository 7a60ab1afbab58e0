"""CPU: how fast are channel-pruned (S4oP) graphs against the unpruned one, per shipped model?

    python benchmarks/channel_latency.py [--models s5_digits,s4d_keywords]
        [--ratios 0.1,0.3,0.5,0.7,0.9] [--rounds 7] [--out benchmarks/channel_latency.json]

Per model (batch 1, its eval set's length, onnxruntime CPU, 1 thread): the unpruned graph and
the graphs of the model with a fraction p of its channels pruned (random channels, seed 0:
the channel choice does not change the graph's cost), all timed in the same interleaved rounds
(30 runs per round after 5 warm-up runs); printed per ratio: median ms and the paired ratio
unpruned / pruned (> 1: the pruned graph is faster). S5 cores are lowered widened (zero B̄
columns and C̃ rows, D = 1: the unpruned graph's nodes); S4D banks run on their active
channels between Gathers (graphs/bypass.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).parent), str(ROOT)]
from timing import cpu_run_meta, interleaved_times, median_ms, paired_speedup  # noqa: E402

import aire_export as ax  # noqa: E402
from aire_export.data import load_data  # noqa: E402
from aire_export.runtimes.ort import OrtRunner, SessionLoader  # noqa: E402

RUNS_PER_ROUND = 30


def _runner(model, folder: Path) -> OrtRunner:
    path = ax.export(model, folder, step=False).sequence.path
    return OrtRunner(SessionLoader(path, "cpu", threads=1))


def measure(name: str, ratios: list[float], rounds: int, tmp: Path) -> dict:
    model = ax.load(ROOT / "examples" / "checkpoints" / f"{name}.pt")
    data = load_data(ROOT / "examples" / "data" / f"{name.split('_', 1)[1]}_eval.npz", model)
    feeds = data.head(1).feeds()
    runners = {"unpruned": _runner(model, tmp / name / "unpruned")}
    for p in ratios:
        pruned, _ = ax.prune(model, p, unit="channel", method="random", certificates=False)
        runners[f"{p:g}"] = _runner(pruned, tmp / name / f"{p:g}")
    bound = {key: runner.bind(feeds) for key, runner in runners.items()}

    def repeated(fn):
        return lambda: [fn() for _ in range(RUNS_PER_ROUND)]

    times = interleaved_times({k: repeated(fn) for k, fn in bound.items()}, rounds, warmup=1)
    for runner in runners.values():
        runner.close()
    base = times["unpruned"]
    points = [
        {
            "ratio": p,
            "median_ms": median_ms(times[f"{p:g}"]) / RUNS_PER_ROUND,
            "speedup": paired_speedup(base, times[f"{p:g}"]),
        }
        for p in ratios
    ]
    return {
        "model": f"examples/checkpoints/{name}.pt",
        "arch": model.arch,
        "length": int(data.length),
        "unpruned_ms": median_ms(base) / RUNS_PER_ROUND,
        "points": points,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="s5_digits,s4d_keywords")
    parser.add_argument("--ratios", default="0.1,0.3,0.5,0.7,0.9")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "channel_latency.json")
    args = parser.parse_args(argv)
    ratios = [float(r) for r in args.ratios.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            result = measure(name, ratios, args.rounds, Path(tmp))
            results.append(result)
            print(f"{name} ({result['arch']}, {result['length']} steps): unpruned "
                  f"{result['unpruned_ms']:.3f} ms")  # fmt: skip
            for point in result["points"]:
                print(f"  {point['ratio']:.0%} of the channels pruned: {point['median_ms']:.3f} ms, "
                      f"{point['speedup']:.2f}× the unpruned speed")  # fmt: skip
    args.out.write_text(json.dumps({**cpu_run_meta(), "results": results}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
