"""Latency measured side by side: original vs pruned in validation, any models in ``profile``.

Every comparison runs its candidates in one process, interleaved in rounds
(validate/latency.py), so a ratio is measured in one run. PyTorch eager runs on the GPU for GPU
targets when one is present; onnxruntime on the provider of the runner (validation) or of the
target (``profile``). Inputs are random in the model's domain, at full length.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aire_export.data import random_data, with_full_lengths
from aire_export.lower import export
from aire_export.models import SSMNetwork
from aire_export.runtimes.base import Runner
from aire_export.runtimes.ort import OrtRunner, SessionLoader
from aire_export.runtimes.torch_runner import TorchRunner
from aire_export.targets import ORT_CUDA, target_named
from aire_export.validate.latency import LatencyResult, Speedup, measure_latency

Candidates = dict[str, tuple[Callable[[], None], str]]


def eager_device(target: str) -> str:
    """Where PyTorch eager is timed for ``target``: its GPU when it has one and torch sees it."""
    gpu = target_named(target).device == "gpu" and torch.cuda.is_available()
    return "cuda" if gpu else "cpu"


def side_by_side(
    original: SSMNetwork,
    pruned: SSMNetwork,
    runners: Sequence[Runner],
    *,
    target: str,
    scan: str,
    precision: str,
    batch: int,
    length: int,
    lengths_input: bool,
    seed: int,
    runs: int,
    budget_s: float,
    work: Path,
    progress: Callable[[str], None],
) -> tuple[list[LatencyResult], list[Speedup]]:
    """Original vs pruned per runtime: PyTorch eager, and every onnxruntime runner against a
    session of the original's graph on the same provider (exported here with ``scan``)."""
    progress("profile: export the original for side-by-side timing")
    baseline_dir = Path(tempfile.mkdtemp(prefix="baseline-", dir=work))
    try:
        baseline = export(
            original,
            baseline_dir,
            target=target,
            scan=scan,
            precision=precision,
            lengths_input=lengths_input,
            step=False,
        ).sequence.path
        timed = random_data(pruned, batch, length, seed=seed + 1)
        if lengths_input:  # the graphs take lengths: time full-length sequences
            timed = with_full_lengths(timed)
        feeds = timed.feeds()
        device = eager_device(target)
        pairs = {
            f"pytorch-eager-{device}": (TorchRunner(original, device), TorchRunner(pruned, device))
        }
        for runner in runners:
            if isinstance(runner, OrtRunner) and not runner.emulated:
                base = OrtRunner(SessionLoader(baseline, runner.device))
                pairs[runner.name] = (base, runner)
        candidates: Candidates = {}
        for label, (before, after) in pairs.items():
            candidates[f"{label} original"] = (before.bind(feeds), before.device)
            candidates[f"{label} pruned"] = (after.bind(feeds), after.device)
        results = measure_latency(
            candidates,
            batch=timed.count,
            length=timed.length,
            runs=runs,
            budget_s=budget_s,
            progress=progress,
        )
    finally:
        shutil.rmtree(baseline_dir, ignore_errors=True)
    speedups = []
    for label in pairs:
        o, p = results[f"{label} original"], results[f"{label} pruned"]
        speedups.append(Speedup(label, o.name, p.name, o.p50_ms / p.p50_ms))
    return list(results.values()), speedups


@dataclass(frozen=True)
class ProfileRow:
    """One candidate of a profile: a model on a runner, and its p50 against the first
    model's on the same runner (> 1: faster)."""

    model: str
    runner: str
    latency: LatencyResult
    vs_first: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            **self.latency.to_json(),
            "model": self.model,
            "runner": self.runner,
            "vs_first": self.vs_first,
        }


def profile(
    models: Sequence[tuple[str, SSMNetwork]],
    *,
    target: str,
    scan: str,
    precision: str,
    batch: int,
    length: int,
    runs: int,
    progress: Callable[[str], None] = lambda _: None,
) -> list[ProfileRow]:
    """Latency of several models, PyTorch eager and exported for ``target``, side by side;
    ratios are against the first model, measured in the same run (interleaved rounds)."""
    provider = "cuda" if target_named(target).profile_runtime == ORT_CUDA else "cpu"
    device = "cuda" if provider == "cuda" and torch.cuda.is_available() else "cpu"
    feeds = random_data(models[0][1], batch, length).feeds()
    candidates: Candidates = {}
    keys: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="aire-profile-") as tmp:
        runners: list[Runner] = []
        for i, (name, net) in enumerate(models):
            exported = export(
                net, Path(tmp) / str(i), target=target, scan=scan, precision=precision, step=False
            )
            runners += [
                TorchRunner(net, device),
                OrtRunner(SessionLoader(exported.sequence.path, provider)),
            ]
            for runner in runners[-2:]:
                key = f"{name} {runner.name}"
                candidates[key] = (runner.bind(feeds), runner.device)
                keys.append((key, name, runner.name))
        results = measure_latency(
            candidates, batch=batch, length=length, runs=runs, progress=progress
        )
        for runner in runners:
            runner.close()
    first = {runner: results[key] for key, name, runner in keys if name == models[0][0]}
    return [
        ProfileRow(name, runner, results[key], first[runner].p50_ms / results[key].p50_ms)
        for key, name, runner in keys
    ]
