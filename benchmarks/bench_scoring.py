"""Time scoring + selection + shrink (``ax.prune(..., certificates=False)``) on a large model.

Workload: S5, 6 layers, P = 4096 stored states per layer (ssm_size_base 8192, conj_sym), width
H = 128, bidirectional, half_glu2, BatchNorm (the ``pathx`` options of BENCHMARKS.md with a
16× larger state). Eigenvalues as the reference S5 initializes them (HiPPO-LegS blocks, tiled);
B̃, C̃, D and log Δ are random (the weights do not change the work done).

    python benchmarks/bench_scoring.py [--layers 6] [--states 4096] [--width 128] [--runs 20]
                                       [--certificates]

Prints the median and p90 (wall clock and process CPU time) of each stage (modal view +
scores, selection, shrink) and of the whole ``ax.prune`` call, in milliseconds, and the load
average; then ``ax.prune`` with its per-layer threads (default) against ``workers=1``, call by
call, and the paired speedup. Target: total < 50 ms on the 2-core CPU. ``--threads`` sets
torch's intra-op threads; the layer threads follow the CPU count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

import aire_export as ax
from aire_export.models import S5Config, S5Model, modal_systems
from aire_export.models.s5_init import dplr_hippo_eigen
from aire_export.prune import select_global, shrink_model
from aire_export.prune.scores import score_systems


def build_model(layers: int, states: int, width: int, block: int = 64, seed: int = 0) -> S5Model:
    config = S5Config(
        d_input=1,
        d_model=width,
        d_output=10,
        state_sizes=[states] * layers,
        bidirectional=True,
        activation="half_glu2",
    )
    model = S5Model(config).eval()
    rng = np.random.default_rng(seed)
    lam, _ = dplr_hippo_eigen(block)
    lam = np.tile(lam[: block // 2], states // (block // 2))  # conj_sym half, tiled (P,)

    def complex_normal(*shape: int, scale: float) -> np.ndarray:
        return rng.normal(0, scale, (*shape, 2))

    with torch.no_grad():
        for layer in model.layers:
            seq = layer.seq
            seq.Lambda_re.copy_(torch.from_numpy(lam.real))
            seq.Lambda_im.copy_(torch.from_numpy(lam.imag))
            seq.B.copy_(torch.from_numpy(complex_normal(states, width, scale=width**-0.5)))
            for name in seq.output_names:
                value = complex_normal(width, states, scale=(2 * states) ** -0.5)
                getattr(seq, name).copy_(torch.from_numpy(value))
            seq.D.copy_(torch.from_numpy(rng.standard_normal(width)))
            seq.log_step.copy_(
                torch.from_numpy(rng.uniform(np.log(1e-3), np.log(1e-1), (states, 1)))
            )
    return model


def timed(fn, runs: int) -> tuple[dict[str, list[float]], object]:
    """Wall-clock and process CPU times (ms) of ``runs`` calls after one warm-up. On a shared
    machine the CPU time is the steadier figure: it does not count time spent descheduled."""
    result = fn()
    times: dict[str, list[float]] = {"wall": [], "cpu": []}
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        times["cpu"].append((time.process_time() - cpu) * 1e3)
        times["wall"].append((time.perf_counter() - wall) * 1e3)
    return times, result


def summary(times: dict[str, list[float]]) -> dict[str, float]:
    return {
        f"{kind}_{stat}_ms": round(float(fn(values)), 2)
        for kind, values in times.items()
        for stat, fn in (("median", np.median), ("p90", lambda v: np.percentile(v, 90)))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--states", type=int, default=4096)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--ratio", type=float, default=0.7)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--certificates",
        action="store_true",
        help="also time ax.prune with the per-layer certificates (use a smaller --states)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = build_model(args.layers, args.states, args.width)
    score_times, layers = timed(lambda: score_systems(modal_systems(model)), args.runs)
    select_times, selection = timed(lambda: select_global(layers, args.ratio), args.runs)
    shrink_times, _ = timed(lambda: shrink_model(model, selection.kept), args.runs)
    total_times, (_, plan) = timed(
        lambda: ax.prune(model, args.ratio, certificates=False), args.runs
    )
    result = {
        "workload": f"S5 {args.layers} layers × P={args.states} stored states, H={args.width}, "
        "bidirectional",
        "ratio": args.ratio,
        "states_after": plan.states_after,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "score (modal view + scores)": summary(score_times),
        "select": summary(select_times),
        "shrink": summary(shrink_times),
        "ax.prune total": summary(total_times),
    }
    # the per-layer threads of ax.prune against one thread, paired, interleaved call by call
    paired = {"threads": [], "sequential": []}
    for _ in range(args.runs):
        for label, workers in (("threads", None), ("sequential", 1)):
            start = time.perf_counter()
            ax.prune(model, args.ratio, certificates=False, workers=workers)
            paired[label].append((time.perf_counter() - start) * 1e3)
    result["ax.prune, one thread (workers=1)"] = summary({"wall": paired["sequential"]})
    result["layer threads speedup (paired median)"] = round(
        float(np.median(np.array(paired["sequential"]) / np.array(paired["threads"]))), 2
    )
    result["layer threads"] = os.cpu_count()
    if args.certificates:
        times, _ = timed(lambda: ax.prune(model, args.ratio), max(1, args.runs // 10))
        result["ax.prune with certificates"] = summary(times)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
