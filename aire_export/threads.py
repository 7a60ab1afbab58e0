"""Per-layer work on the CPU's cores.

The modal view and the scores of a layer are a few large numpy operations (complex products,
squared norms, sorts) that release the GIL, and layers are independent, so a small thread pool
runs layers side by side: on the 2-core development machine ``ax.prune`` of a 6 × 4096-state
model ran 1.07–1.52× faster with two threads than with one (``benchmarks/bench_scoring.py``,
paired runs).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_layers(fn: Callable[[T], R], items: Sequence[T], *, workers: int | None = None) -> list[R]:
    """``[fn(x) for x in items]``, in order, on up to ``workers`` threads (default: the CPU
    count). ``fn`` must not depend on the order in which items run."""
    workers = min(len(items), workers or os.cpu_count() or 1)
    if workers <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aire-layer") as pool:
        return list(pool.map(fn, items))
