"""Latency: warm-up, then timed runs; percentiles and throughput (DESIGN §5).

On a GPU each run is timed with CUDA events recorded on the current stream around the call
(device-resident inputs, no host copies); on the CPU with ``time.perf_counter_ns``. When several
callables are compared (original vs pruned, or runtimes), their runs are interleaved in rounds so
that drift of a noisy machine hits every candidate alike, and the speedup is a ratio measured in
one run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from aire_export.json_values import finite_or_none


@dataclass(frozen=True)
class LatencyResult:
    name: str
    device: str
    batch: int
    length: int
    warmup: int
    runs: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def sequences_per_s(self) -> float:
        return self.batch / (self.p50_ms / 1e3) if self.p50_ms > 0 else float("inf")

    @property
    def steps_per_s(self) -> float:
        return self.sequences_per_s * self.length

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "device": self.device,
            "batch": self.batch,
            "length": self.length,
            "warmup": self.warmup,
            "runs": self.runs,
            **{
                key: finite_or_none(getattr(self, key))
                for key in ("mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms")
            },
            "sequences_per_s": finite_or_none(self.sequences_per_s),
            "steps_per_s": finite_or_none(self.steps_per_s),
        }


@dataclass(frozen=True)
class Speedup:
    """Original vs pruned on one runtime, timed side by side in one run."""

    runtime: str
    original: str  # the LatencyResult names compared
    pruned: str
    ratio: float  # p50 original / p50 pruned

    def to_json(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "original": self.original,
            "pruned": self.pruned,
            "ratio": finite_or_none(self.ratio),
        }


def _timer(device: str) -> Callable[[Callable[[], None]], float]:
    """A function that runs ``fn`` once and returns its time in milliseconds."""
    if device == "cuda":
        import torch

        def cuda_time(fn: Callable[[], None]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))

        return cuda_time

    def cpu_time(fn: Callable[[], None]) -> float:
        t0 = time.perf_counter_ns()
        fn()
        return (time.perf_counter_ns() - t0) / 1e6

    return cpu_time


NOISY_SPREAD = 1.5  # p90 / median above which a candidate's timing is called noisy


def noise_warnings(results: Iterable[LatencyResult]) -> list[str]:
    """One warning when some timings spread widely (p90 > NOISY_SPREAD × median): a busy
    machine; ratios of interleaved runs hold up better than the absolute figures."""
    spread = {r.name: r.p90_ms / r.p50_ms for r in results if r.p50_ms > 0}
    noisy = {name: s for name, s in spread.items() if s > NOISY_SPREAD}
    if not noisy:
        return []
    worst = max(noisy, key=noisy.get)
    return [
        f"timings are noisy: {len(noisy)} of {len(spread)} timed candidates have a 90th "
        f"percentile above {NOISY_SPREAD}× their median (worst: {worst}, {noisy[worst]:.1f}×), "
        "so the machine was busy; the ratios compare interleaved runs, but re-run on a quiet "
        "machine before relying on these figures"
    ]


def summarize(
    name: str, device: str, times_ms: list[float], batch: int, length: int, warmup: int
) -> LatencyResult:
    t = np.asarray(times_ms, dtype=np.float64)
    return LatencyResult(
        name=name,
        device=device,
        batch=batch,
        length=length,
        warmup=warmup,
        runs=int(t.size),
        mean_ms=float(t.mean()),
        std_ms=float(t.std()),
        min_ms=float(t.min()),
        p50_ms=float(np.percentile(t, 50)),
        p90_ms=float(np.percentile(t, 90)),
        p99_ms=float(np.percentile(t, 99)),
    )


def measure_latency(
    candidates: dict[str, tuple[Callable[[], None], str]],
    *,
    batch: int,
    length: int,
    warmup: int = 3,
    runs: int = 20,
    budget_s: float = 20.0,
    rounds: int = 5,
    progress: Callable[[str], None] | None = None,
) -> dict[str, LatencyResult]:
    """Time several callables side by side.

    ``candidates`` maps a name to (callable, device). Each gets ``warmup`` untimed calls, then
    ``runs`` timed calls split over ``rounds`` interleaved rounds. When a single call is slow the
    number of runs shrinks (never below 3) so the whole measurement stays within ``budget_s``.
    """
    timers = {name: _timer(device) for name, (_, device) in candidates.items()}
    first = {}
    for name, (fn, _) in candidates.items():
        if progress:
            progress(f"warming up {name}")
        for _ in range(max(warmup, 1)):
            first[name] = timers[name](fn)
    per_round_cost = sum(first.values()) / 1e3  # seconds for one call of each candidate
    affordable = int(budget_s / max(per_round_cost, 1e-9))
    total = max(3, min(runs, affordable))
    rounds = max(1, min(rounds, total))
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for r in range(rounds):
        share = total // rounds + (1 if r < total % rounds else 0)
        for name, (fn, _) in candidates.items():
            if progress:
                progress(f"timing {name} (round {r + 1}/{rounds})")
            times[name].extend(timers[name](fn) for _ in range(share))
    return {
        name: summarize(name, device, times[name], batch, length, warmup)
        for name, (_, device) in candidates.items()
    }
