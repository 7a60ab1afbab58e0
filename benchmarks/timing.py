"""Side-by-side wall-clock timing: contenders run interleaved, so load shifts hit all alike."""

from __future__ import annotations

import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date


def interleaved_times(
    contenders: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each contender; round r runs every contender once, in turn."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def p90_ms(samples: list[float]) -> float:
    ordered = sorted(samples)
    return 1e3 * ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def paired_speedup(base: list[float], other: list[float]) -> float:
    """Median over rounds of base/other: each ratio compares two runs made back to back."""
    return statistics.median(b / o for b, o in zip(base, other, strict=True))


def cpu_run_meta() -> dict:
    """Device, date, command and versions of a single-thread CPU run (for the JSON results)."""
    import onnxruntime
    import torch

    return {
        "date": date.today().isoformat(),
        "device": f"CPU {platform.processor() or platform.machine()}, 1 thread",
        "command": " ".join(sys.argv),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "cpu": cpu_model(),
    }


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; the machine type elsewhere): these
    shared machines change between sessions, and ratios move with them."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
