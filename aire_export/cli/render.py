"""What the commands print: rich tables and lines on stdout, progress on stderr, JSON.

Every function takes a library value and prints it; none computes anything the library
does not already hold. Text that comes from the library (reasons, warnings, file names) is
escaped, so brackets such as ``aire-export[gpu]`` are printed, not read as markup.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from aire_export.graphs.export import ExportResult
from aire_export.prune import LayerScores, PrunePlan
from aire_export.report import Report
from aire_export.summary import ModelSummary
from aire_export.validate.latency import LatencyResult, Speedup
from aire_export.validate.speed import ProfileRow


def stdout() -> Console:
    return Console(soft_wrap=True)


def stderr() -> Console:
    return Console(stderr=True)


def print_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=_json_default, allow_nan=False))


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def number(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}g}" if math.isfinite(x) else "∞"


def notes(console: Console, label: str, lines: Iterable[str], style: str = "yellow") -> None:
    for line in lines:
        console.print(f"[{style}]{label}:[/{style}] {escape(line)}")


def stage_printer(console: Console, status) -> Callable[[str], None]:
    """Progress: one line per pipeline stage, a live status for the fine-grained steps."""

    def show(message: str) -> None:
        status.update(f"[bold]{escape(message)}")
        if not message.startswith(("timing ", "warming up ")):
            console.print(f"[dim]·[/dim] {escape(message)}")

    return show


# ---- inspect, score, prune, export ------------------------------------------------------------
def model_summary(path: Path, summary: ModelSummary) -> None:
    console = stdout()
    cfg = summary.config
    console.print(
        f"[bold]{escape(str(path))}[/bold]: {ARCH_NAMES.get(summary.arch, summary.arch.upper())}, "
        f"{len(summary.layers)} "
        f"layers, width {cfg['d_model']}, {summary.states} states, {summary.parameters:,} "
        "parameters"
    )
    console.print(
        f"input {summary.input_kind} ({summary.d_input}), output {summary.d_output} per "
        f"{'token' if summary.per_token else 'sequence'}; "
        + ", ".join(escape(option) for option in _config_options(cfg))
    )
    table = Table(show_header=True, header_style="bold")
    for col in ("layer", "states", "max |λ̄|", "|λ̄| ≥ 1", "slowest decay (steps)", "parameters"):
        table.add_column(col, justify="right")
    for layer in summary.layers:
        decay = layer.slowest_decay_steps
        table.add_row(
            str(layer.index),
            str(layer.states) if layer.states else "0 (dropped)",
            _magnitude(layer.max_abs_lambda),
            f"[red]{layer.unstable}[/red]" if layer.unstable else "0",
            f"{decay:,.0f}" if math.isfinite(decay) else "∞",
            f"{layer.parameters:,}",
        )
    console.print(table)
    if any(layer.selective for layer in summary.layers):
        console.print(
            "selective layers: λ̄ = exp(Δ A) changes with the input; shown at the step of a zero "
            "input, Δ = softplus(dt_proj.bias). States are scored on data (--calib)."
        )
    if summary.unstable:
        console.print(
            f"[yellow]warning:[/yellow] {summary.unstable} state(s) have |λ̄| ≥ 1 (marginal or "
            "unstable); AIRE keeps them by default"
        )


def _magnitude(value: float) -> str:
    """|λ̄| to 6 decimals, or as 1 − δ when those would show a stable mode as 1.000000."""
    if value < 1 and round(value, 6) >= 1:
        return f"1 − {1 - value:.1e}"
    return f"{value:.6f}"


ARCH_NAMES = {"mamba": "Mamba"}  # the others read as their upper-case ids: S5, S4D
IO_FIELDS = ("d_model", "state_sizes", "d_input", "d_output", "input_kind")


def _config_options(config: dict) -> list[str]:
    """Every option of a model's config but its widths and I/O: a set flag by its name, an
    unset one as ``name=false``, other values after their name."""
    out = []
    for name, value in config.items():
        if name in IO_FIELDS:
            continue
        if isinstance(value, bool):
            out.append(name if value else f"{name}=false")
        else:
            out.append(f"{name} {value}")
    return out


def scores(path: Path, layers: list[LayerScores], method: str, score_compat: str) -> None:
    console = stdout()
    console.print(f"[bold]{escape(str(path))}[/bold]: {method} scores ({score_compat})")
    table = Table(show_header=True, header_style="bold", box=box.SIMPLE_HEAD)
    for col in ("layer", "states", "energy head", "energy tail", "max |λ̄|", "|λ̄|≥1"):
        table.add_column(col, justify="right")
    for layer in layers:
        ordered = layer.energies[layer.order]
        unstable = len(layer.unstable)
        table.add_row(
            str(layer.index),
            str(layer.states) + ("" if layer.n_units == layer.states else f" ({layer.n_units})"),
            " ".join(number(e) for e in ordered[:3]),
            " ".join(number(e) for e in ordered[-3:]),
            f"{layer.max_abs_lambda.max():.4f}" if layer.n_units else "-",
            f"[red]{unstable}[/red]" if unstable else "0",
        )
    console.print(table)
    if any(layer.n_units != layer.states for layer in layers):
        console.print("states (n): n units, each a mode pruned from every channel together")
    unstable = sum(len(layer.unstable) for layer in layers)
    if unstable:
        console.print(
            f"[yellow]warning:[/yellow] {unstable} unit(s) have |λ̄| ≥ 1 (marginal or unstable): "
            + (
                "scored by the official formula"
                if score_compat == "official"
                else "infinite energy, always kept by prune"
            )
        )


def plan(plan: PrunePlan, written: Iterable[Path]) -> None:
    console = stdout()
    table = Table(show_header=True, header_style="bold")
    for col in ("layer", "states", "kept", "size", "H∞ bound", "H∞ measured", "H2"):
        table.add_column(col, justify="right")
    for layer in plan.layers:
        cert = layer.certificate
        table.add_row(
            str(layer.index),
            str(layer.states_before),
            str(layer.states_after) + (" (dropped)" if layer.dropped else ""),
            "removed" if layer.block_removed else str(layer.physical_size),
            *(
                (number(cert.bound, 3), number(cert.measured_hinf, 3), number(cert.h2, 3))
                if cert
                else ("-", "-", "-")
            ),
        )
    console.print(table)
    threshold = "" if plan.threshold is None else f", threshold τ = {plan.threshold:.6g}"
    if plan.unit == "channel":
        kept = sum(len(layer.kept) for layer in plan.layers)
        console.print(
            f"kept {kept} of {sum(layer.units_before for layer in plan.layers)} channels "
            "(operators); the others pass their input through (y = u)"
        )
    console.print(
        f"{plan.method}: kept {plan.states_after} of {plan.states_before} states, pruned "
        f"{plan.ratio_achieved:.1%}"
        + (" of the channels" if plan.unit == "channel" else "")
        + ("" if plan.ratio_requested is None else f" (requested {plan.ratio_requested:.1%})")
        + threshold
    )
    notes(console, "warning", plan.warnings)
    console.print("wrote " + " and ".join(escape(str(p)) for p in written))


def export_result(result: ExportResult) -> None:
    for graph in (result.sequence, result.step):
        if graph is not None:
            limit = f"up to {graph.max_length:,} steps" if graph.max_length else "any length"
            if graph.mode == "step":
                limit = "1 step per call" if graph.frame == 1 else f"{graph.frame} steps per call"
            click.echo(
                f"wrote {graph.path} ({graph.mode}, {graph.scan}, {graph.precision}, "
                f"opset {graph.opset}, {graph.node_count} nodes, {limit})"
            )
    if result.step_skipped:
        click.echo(f"no step graph: {result.step_skipped}")
    for warning in result.warnings:
        click.echo(f"warning: {warning}")
    if result.check is not None:
        verdict = "passed" if result.check.ok else "FAILED"
        click.echo(f"TensorRT {result.check.trt_version} op-support check {verdict}")
        for problem in result.check.problems:
            click.echo(f"  {problem}")


# ---- run and validate ------------------------------------------------------------------------------
def latency_table(console: Console, results: list[LatencyResult], speedups: list[Speedup]) -> None:
    table = Table(title="latency (side by side, interleaved)", header_style="bold")
    for col in ("runner", "batch × length", "p50 ms", "p90 ms", "p99 ms", "sequences/s"):
        table.add_column(col, justify="right" if col != "runner" else "left")
    for t in results:
        table.add_row(
            escape(t.name),
            f"{t.batch} × {t.length}",
            f"{t.p50_ms:.3f}",
            f"{t.p90_ms:.3f}",
            f"{t.p99_ms:.3f}",
            f"{t.sequences_per_s:,.1f}",
        )
    console.print(table)
    for s in speedups:
        console.print(
            f"speedup {escape(s.runtime)}: [bold]{s.ratio:.2f}×[/bold] "
            f"(p50 {escape(s.original)} / {escape(s.pruned)})"
        )


def checks(console: Console, report: Report) -> None:
    """Every check of the verdict, with what it covered, then timing and what was not run."""
    marks = {True: "[green]PASSED[/green]", False: "[red]FAILED[/red]", None: "[dim]measured[/dim]"}
    for c in report.verdict.checks:
        console.print(
            f"{marks[c.passed]} {escape(c.kind)}: {escape(c.subject)} [dim]({escape(c.covered)})"
            f"[/dim]" + (f"\n    {escape(c.detail)}" if c.detail else "")
        )
    v = report.validation
    if v.latency:
        latency_table(console, v.latency, v.speedups)
    notes(console, "not verified", v.unverified)


def json_report(report: Report) -> None:
    """``--json``: report.json on stdout; the verdict and the warnings on stderr too, for a
    person reading the job's log."""
    print_json(report.to_json())
    err = stderr()
    notes(err, "warning", report.warnings)
    verdict_line(err, report)


def verdict_line(console: Console, report: Report) -> None:
    v = report.verdict
    if v.exit_code:
        console.print(f"[bold red]Verdict: FAILED, exit {v.exit_code}[/bold red]")
        for reason in v.reasons:
            console.print(f"  {escape(reason)}")
    else:
        console.print("[bold green]Verdict: PASSED[/bold green] (every gate above)")


def run_report(report: Report, out: Path) -> None:
    console = stdout()
    m, plan = report.model, report.plan
    channels = (
        f"{sum(layer.units_before for layer in plan.layers)} → "
        f"{sum(len(layer.kept) for layer in plan.layers)} channels (operators), "
        if plan.unit == "channel"
        else ""
    )
    console.print(
        f"[bold]{channels}{m.states_before} → {m.states_after} states[/bold]"
        + (
            f" (stored {m.physical_states_after}: S4D channels padded to a common width)"
            if m.physical_states_after != m.states_after
            else ""
        )
        + f", {m.parameters_before:,} → {m.parameters_after:,} parameters "
        f"(ratio achieved {plan.ratio_achieved:.3f})"
    )
    if report.search is not None:
        s = report.search
        console.print(
            f"--max-drop {s.budget_pp:g}: ratio {s.ratio:.4g} is the largest the search found "
            f"within the budget ({100 * s.accuracy:.2f} %, {-s.drop_pp:+.2f} pp)"
        )
    if report.latency_search is not None:
        b = report.latency_search
        curve = ", ".join(f"{p['ratio']:.2f}: {p['p50_ms']:.3g} ms" for p in b["curve"])
        console.print(
            f"latency budget {b['budget_ms']:g} ms on {b['runtime']} (batch {b['batch']}, "
            f"{b['length']} steps): ratio {b['ratio']:.2f}, {b['p50_ms']:.3g} ms ({curve})"
        )
    if report.finetune is not None:
        f = report.finetune
        console.print(
            f"fine-tuned on {escape(f['train_data'])}: eval accuracy "
            f"{100 * f['accuracy_before']:.2f} % → {100 * f['accuracy_after']:.2f} % (best of "
            f"{len(f['history']) - 1} epoch(s): epoch {f['best_epoch']}"
            + (", stopped early" if f["stopped_early"] else "")
            + ")"
        )
    checks(console, report)
    notes(console, "warning", report.warnings)
    console.print(f"wrote {escape(str(out))}/ (report.md, report.json)")
    verdict_line(console, report)


def validate_report(report: Report) -> None:
    console = stdout()
    checks(console, report)
    verdict_line(console, report)


def s4op_table(result) -> None:
    """The S4oP search: one row per step (the chosen candidate) and where it was written."""
    console = stdout()
    table = Table(
        title=f"S4oP ({result.options.select}); unpruned {100 * result.baseline_accuracy:.2f} % "
        "on --data",
        header_style="bold",
    )
    for col in (
        "step",
        "ratio",
        "seed",
        "accuracy",
        "test",
        "parameters",
        "latency p50",
        "verdict",
    ):
        table.add_column(col, justify="right")
    for s in result.steps:
        latency = ", ".join(
            f"{name.split('-')[0]} {v['p50_ms_pruned']:.3g} ms ({100 * v['reduction']:+.0f} %)"
            for name, v in s.latency.items()
        )
        table.add_row(
            str(s.step),
            f"{s.ratio:.0%}",
            "–" if s.seed is None else str(s.seed),
            f"{100 * s.accuracy:.2f} %",
            "–" if s.test_accuracy is None else f"{100 * s.test_accuracy:.2f} %",
            f"{s.parameters:,}",
            latency or "–",
            {0: "passed", 3: "parity failed", 7: "not fit to ship"}.get(
                s.exit_code, str(s.exit_code)
            ),
        )
    console.print(table)
    notes(
        console,
        "error",
        [f"step {f['step']}, seed {f['seed']} failed: {f['error']}" for f in result.failed],
    )
    console.print(
        f"{len(result.trials)} fine-tuned candidate(s); --data chose the epochs and seeds (its "
        f"accuracy is optimistic); wrote {escape(str(result.out))}/ (s4op.json, s4op.md, step_NN/)"
    )


# ---- sweep and profile ------------------------------------------------------------------------------
def sweep_table(result, methods: list[str], ratios, max_drop: float, written: list[Path]) -> None:
    console = stdout()
    table = Table(
        title=f"accuracy (%) vs ratio; unpruned {100 * result.baseline_accuracy:.2f} %",
        header_style="bold",
    )
    table.add_column("ratio", justify="right")
    for m in methods:
        table.add_column(m, justify="right")
    accuracy = {(p.method, p.ratio): p.accuracy for p in result.points}
    for r in ratios:
        table.add_row(
            f"{r:.2f}",
            *(f"{100 * accuracy[m, r]:.2f}" if (m, r) in accuracy else "failed" for m in methods),
        )
    console.print(table)
    notes(
        console,
        "error",
        [f"{f['method']} at ratio {f['ratio']:.2f} failed: {f['error']}" for f in result.failed],
    )
    for m in methods:
        best = result.best_within(m, max_drop)
        console.print(
            f"{m}: largest grid ratio within {max_drop} pp: "
            + (
                "none"
                if best is None
                else f"{best.ratio:.2f} ({100 * best.accuracy:.2f} %, {best.states_kept} states)"
            )
        )
    console.print(f"wrote {', '.join(escape(str(w)) for w in written)}")


def profile_table(rows: list[ProfileRow], batch: int, length: int) -> None:
    table = Table(title=f"latency at batch {batch} × length {length}", header_style="bold")
    for col in ("candidate", "p50 ms", "p90 ms", "p99 ms", "vs first model"):
        table.add_column(col, justify="left" if col == "candidate" else "right")
    for row in rows:
        t = row.latency
        table.add_row(
            escape(f"{row.model} {row.runner}"),
            f"{t.p50_ms:.3f}",
            f"{t.p90_ms:.3f}",
            f"{t.p99_ms:.3f}",
            "–" if row.vs_first is None else f"{row.vs_first:.2f}×",
        )
    stdout().print(table)


@contextmanager
def counted_progress(label: str, total: int) -> Iterator[Callable[[str], None]]:
    """A progress bar of ``total`` steps on stderr; one line per step when stderr is a log
    file, not a terminal."""
    err = stderr()
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task(label, total=total)
        done = 0

        def step(message: str) -> None:
            nonlocal done
            done += 1
            bar.update(task, advance=1, description=escape(message))
            if not err.is_terminal:
                err.print(f"{label} {done}/{total}: {escape(message)}")

        yield step


@contextmanager
def stage_status(message: str = "starting") -> Iterator[Callable[[str], None]]:
    """A live status on stderr for a long job, with one line per stage."""
    err = stderr()
    with err.status(message) as status:
        yield stage_printer(err, status)
