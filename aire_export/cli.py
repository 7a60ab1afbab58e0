"""Command line: a thin layer over the library. Parses options, calls it, prints, maps errors to exit codes.

Exit codes (see :mod:`aire_export.errors`): 0 ok, 1 internal error, 2 bad input, 3 parity gate
failed, 4 runtime missing, 5 output not writable.
"""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aire_export.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_PARITY,
    EXIT_RUNTIME_MISSING,
    AireError,
    InputError,
)

EPILOG = (
    "Exit codes: 0 ok, 1 internal error, 2 bad input, 3 parity gate failed, "
    "4 runtime missing, 5 output not writable."
)


def _stdout() -> Console:
    return Console(soft_wrap=True)


def _print_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=_json_default, allow_nan=False))


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


class PipelineGroup(click.Group):
    """A group whose bare form ``aire-export MODEL [options]`` runs the ``run`` command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(
    cls=PipelineGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG
)
@click.version_option(package_name="aire-export")
def cli() -> None:
    """Prune diagonal state space models (S5, S4D) with AIRE-Prune, shrink them, export them to
    ONNX / TensorRT, and prove the result is right and fast.

    \b
    The whole job (the bare form is the `run` command):
      aire-export MODEL --ratio 0.7                          # prune 70 %, ONNX, CPU validation
      aire-export MODEL --ratio 0.7 --target trt --precision fp16
      aire-export MODEL --max-drop 1.0 --data eval.npz       # largest ratio within 1 point
    \b
    The parts:
      aire-export inspect MODEL                              # layers, states, stability
      aire-export import s5-flax best_state.msgpack --config run_args.json -o model.pt
      aire-export score MODEL                                # AIRE energies per layer
      aire-export prune MODEL --ratio 0.7 -o out/pruned.pt   # + plan.json
      aire-export export out/pruned.pt -o out/               # model.onnx, model.step.onnx
      aire-export sweep MODEL --data eval.npz                # accuracy vs ratio per method
    """


@cli.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def inspect_cmd(model: Path, as_json: bool) -> None:
    """What is in a checkpoint: architecture, layers, states, parameters, stability.

    A state with |λ̄| ≥ 1 is marginal or unstable (possible when a model was trained without
    eigenvalue clipping): its AIRE energy is infinite, so pruning always keeps it.
    """
    from aire_export.checkpoints import load
    from aire_export.summary import summarize

    summary = summarize(load(model))
    if as_json:
        data = summary.to_json()
        for layer in data["layers"]:
            layer["slowest_decay_steps"] = _finite(layer["slowest_decay_steps"])
        _print_json(data)
        return
    console = _stdout()
    cfg = summary.config
    console.print(
        f"[bold]{model}[/bold]: {summary.arch.upper()}, {len(summary.layers)} layers, "
        f"width {cfg['d_model']}, {summary.states} states, {summary.parameters:,} parameters"
    )
    flags = [k for k in ("bidirectional", "conj_sym", "clip_eigs", "shared_A") if cfg.get(k)]
    console.print(
        f"input {cfg['input_kind']} ({cfg['d_input']}), output {cfg['d_output']} ({cfg['output']}), "
        f"pooling {cfg['pooling']}, norm {cfg['norm']}, {cfg.get('discretization', '')}"
        + (f", {', '.join(flags)}" if flags else "")
    )
    table = Table(show_header=True, header_style="bold")
    for col in ("layer", "states", "max |λ̄|", "|λ̄| ≥ 1", "slowest decay (steps)", "parameters"):
        table.add_column(col, justify="right")
    for layer in summary.layers:
        table.add_row(
            str(layer.index),
            str(layer.states) if layer.states else "0 (dropped)",
            f"{layer.max_abs_lambda:.6f}",
            f"[red]{layer.unstable}[/red]" if layer.unstable else "0",
            f"{layer.slowest_decay_steps:,.0f}"
            if math.isfinite(layer.slowest_decay_steps)
            else "∞",
            f"{layer.parameters:,}",
        )
    console.print(table)
    if summary.unstable:
        console.print(
            f"[yellow]warning:[/yellow] {summary.unstable} state(s) have |λ̄| ≥ 1 (marginal or "
            "unstable); AIRE keeps them by default"
        )


@cli.command("import")
@click.argument("kind", type=click.Choice(["s5-flax", "s4d-state-spaces"]))
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON options. s5-flax: the run_train.py arguments of the run (required). "
    "s4d-state-spaces: prenorm, dropout, input_kind, pooling.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the model in our format (model.pt).",
)
def import_cmd(kind: str, checkpoint: Path, config: Path | None, output: Path) -> None:
    """Import a foreign checkpoint (official S5/AIRE-Prune flax msgpack, state-spaces S4D).

    \b
    Example:
      aire-export import s5-flax checkpoints/best_state.msgpack --config run_args.json -o model.pt
    """
    from aire_export.checkpoints import import_checkpoint, save
    from aire_export.summary import summarize

    model = import_checkpoint(kind, checkpoint, config)
    save(model, output)
    summary = summarize(model)
    click.echo(
        f"wrote {output}: {summary.arch} with {len(summary.layers)} layers, {summary.states} states, "
        f"{summary.parameters:,} parameters"
    )


def _method_option(f):
    from aire_export.prune.scores import COMPAT, METHODS

    f = click.option(
        "--seed", type=int, default=0, show_default=True, help="Seed of the random method."
    )(f)
    f = click.option(
        "--score-compat",
        type=click.Choice(COMPAT),
        default="default",
        show_default=True,
        help="'official' reproduces the official AIRE-Prune/LAST code exactly (its bidirectional "
        "formula and its handling of |λ̄| ≥ 1), to match published numbers.",
    )(f)
    f = click.option(
        "--eps",
        type=float,
        default=0.0,
        show_default=True,
        help="Energy scale ε of the normalization s = E/(ΣE + ε). 0: no layer ever empties; "
        "> 0 lets whole low-energy layers go.",
    )(f)
    return click.option(
        "--method",
        type=click.Choice(list(METHODS)),
        default="aire",
        show_default=True,
        help="Scoring method: " + "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values()),
    )(f)


def _energy(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}g}" if math.isfinite(x) else "∞"


@cli.command("score")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@_method_option
@click.option("--json", "as_json", is_flag=True, help="Print every layer's scores as JSON.")
def score_cmd(
    model: Path, method: str, eps: float, score_compat: str, seed: int, as_json: bool
) -> None:
    """Score every state: per layer the energy head (largest) and tail (smallest), stability.

    \b
    Example:
      aire-export score model.pt --method aire --json
    """
    from aire_export.checkpoints import load
    from aire_export.prune import score
    from aire_export.prune.scores import scores_to_json

    layers = score(load(model), method, eps=eps, score_compat=score_compat, seed=seed)
    if as_json:
        _print_json(scores_to_json(layers, method, eps, score_compat, seed))
        return
    console = _stdout()
    console.print(f"[bold]{model}[/bold]: {method} scores ({score_compat})")
    table = Table(show_header=True, header_style="bold", box=box.SIMPLE_HEAD)
    for col in ("layer", "states", "energy head", "energy tail", "max |λ̄|", "|λ̄|≥1"):
        table.add_column(col, justify="right")
    for layer in layers:
        ordered = layer.energies[layer.order]
        unstable = len(layer.unstable)
        table.add_row(
            str(layer.index),
            str(layer.states) + ("" if layer.n_units == layer.states else f" ({layer.n_units})"),
            " ".join(_energy(e) for e in ordered[:3]),
            " ".join(_energy(e) for e in ordered[-3:]),
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


_BALANCE = click.option(
    "--balance-channels/--exact-channels",
    default=True,
    show_default=True,
    help="S4D layers. Balanced: Algorithm 1 sets each layer's kept count, and every channel "
    "keeps the same number of modes (its own best ones), so the stored width really shrinks. "
    "Exact: Algorithm 1 over all (channel, mode) pairs; channels keep different counts and are "
    "padded to the widest (little is saved). No effect on S5.",
)


@cli.command("prune")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--ratio", type=float, help="Fraction of states to prune, in [0, 1) (0.7: 70 %).")
@click.option("--threshold", type=float, help="Keep every state whose score is ≥ this (≥ 0).")
@_method_option
@_BALANCE
@click.option(
    "--drop-empty-blocks",
    is_flag=True,
    help="Remove the whole residual block of a layer that keeps no state.",
)
@click.option(
    "--no-certificates", is_flag=True, help="Skip the per-layer H∞ bound / H∞ / H2 errors."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the pruned model; plan.json is written in the same folder.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def prune_cmd(
    model: Path,
    ratio: float | None,
    threshold: float | None,
    method: str,
    eps: float,
    score_compat: str,
    seed: int,
    balance_channels: bool,
    drop_empty_blocks: bool,
    no_certificates: bool,
    output: Path,
    as_json: bool,
) -> None:
    """Prune states globally (AIRE-Prune Algorithm 1) and write the physically smaller model.

    \b
    Examples:
      aire-export prune model.pt --ratio 0.7 -o out/pruned.pt
      aire-export prune model.pt --ratio 0.3 --score-compat official -o pruned.pt
    """
    from aire_export.checkpoints import load
    from aire_export.prune import prune, save_pruned

    pruned, plan = prune(
        load(model),
        ratio,
        threshold=threshold,
        method=method,
        eps=eps,
        score_compat=score_compat,
        seed=seed,
        drop_empty_blocks=drop_empty_blocks,
        certificates=not no_certificates,
        balance_channels=balance_channels,
    )
    model_path, plan_path = save_pruned(pruned, plan, output)
    if as_json:
        _print_json(plan.to_json())
        return
    console = _stdout()
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
                (_energy(cert.bound, 3), _energy(cert.measured_hinf, 3), _energy(cert.h2, 3))
                if cert
                else ("-", "-", "-")
            ),
        )
    console.print(table)
    threshold_text = "" if plan.threshold is None else f", threshold τ = {plan.threshold:.6g}"
    console.print(
        f"{plan.method}: kept {plan.states_after} of {plan.states_before} states, pruned "
        f"{plan.ratio_achieved:.1%}"
        + ("" if plan.ratio_requested is None else f" (requested {plan.ratio_requested:.1%})")
        + threshold_text
    )
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(f"wrote {model_path} and {plan_path}")


@cli.command("export")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for model.onnx and model.step.onnx.",
)
@click.option(
    "--target",
    type=click.Choice(["onnx", "ort-cuda", "trt", "jetson"]),
    default="onnx",
    show_default=True,
    help="Where the graph will run: picks the auto lowering; trt/jetson also run the "
    "TensorRT op-support check (TensorRT 11 / 10.3).",
)
@click.option(
    "--scan",
    type=click.Choice(["auto", "chunked", "toeplitz", "logdepth", "scan"]),
    default="auto",
    show_default=True,
    help="How each layer's recurrence is lowered.",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "bf16"]),
    default="fp32",
    show_default=True,
    help="Projections and pointwise work; the recurrence stays fp32.",
)
@click.option("--opset", type=int, help="ONNX opset (default 17; 17..21, ≤ 20 for jetson).")
@click.option(
    "--step/--no-step",
    default=None,
    help="Write model.step.onnx (default: for unidirectional models).",
)
@click.option("--lengths-input", is_flag=True, help="Add a 'lengths' input for masked pooling.")
@click.option("--max-length", type=int, help="Longest sequence the graph must accept.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def export_cmd(
    model: Path,
    out: Path,
    target: str,
    scan: str,
    precision: str,
    opset: int | None,
    step: bool | None,
    lengths_input: bool,
    max_length: int | None,
    as_json: bool,
) -> None:
    """Lower a model to ONNX: model.onnx (sequence mode) and model.step.onnx (streaming).

    \b
    Examples:
      aire-export export pruned.pt -o out/
      aire-export export pruned.pt -o out/ --target jetson --precision fp16
    """
    from aire_export.checkpoints import load
    from aire_export.graphs import export

    result = export(
        load(model),
        out,
        target=target,
        scan=scan,
        precision=precision,
        opset=opset,
        step=step,
        lengths_input=lengths_input,
        max_length=max_length,
    )
    if as_json:
        _print_json(result.to_json())
    else:
        for graph in (result.sequence, result.step):
            if graph is not None:
                limit = f"up to {graph.max_length:,} steps" if graph.max_length else "any length"
                click.echo(
                    f"wrote {graph.path} ({graph.mode}, {graph.scan}, {graph.precision}, "
                    f"opset {graph.opset}, {graph.node_count} nodes, {limit})"
                )
        if result.step_skipped:
            click.echo(f"no step graph: {result.step_skipped}")
        if result.check is not None:
            verdict = "passed" if result.check.ok else "FAILED"
            click.echo(f"TensorRT {result.check.trt_version} op-support check {verdict}")
            for problem in result.check.problems:
                click.echo(f"  {problem}")
    if result.check is not None and not result.check.ok:
        raise AireError(
            "the exported graph fails the TensorRT op-support check (a bug in aire-export: "
            "please report it with the problems listed above)"
        )


def _stage_printer(console: Console, status) -> Callable[[str], None]:
    """Progress: one line per pipeline stage, a live status for the fine-grained steps."""

    def show(message: str) -> None:
        status.update(f"[bold]{message}")
        if not message.startswith(("timing ", "warming up ")):
            console.print(f"[dim]·[/dim] {message}")

    return show


def _shape_range(text: str | None, what: str):
    from aire_export.runtimes.trt import ShapeRange

    return None if text is None else ShapeRange.parse(text, what)


def _latency_table(console: Console, results, speedups) -> None:
    table = Table(title="latency (side by side, interleaved)", header_style="bold")
    for col in ("runner", "batch × length", "p50 ms", "p90 ms", "p99 ms", "sequences/s"):
        table.add_column(col, justify="right" if col != "runner" else "left")
    for t in results:
        table.add_row(
            t.name,
            f"{t.batch} × {t.length}",
            f"{t.p50_ms:.3f}",
            f"{t.p90_ms:.3f}",
            f"{t.p99_ms:.3f}",
            f"{t.sequences_per_s:,.1f}",
        )
    console.print(table)
    for s in speedups:
        console.print(
            f"speedup {s.runtime}: [bold]{s.ratio:.2f}×[/bold] (p50 {s.original} / {s.pruned})"
        )


_TARGET = click.option(
    "--target",
    type=click.Choice(["onnx", "ort-cuda", "trt", "jetson"]),
    default="onnx",
    show_default=True,
    help="onnx: onnxruntime on the CPU. ort-cuda: onnxruntime's CUDA provider. trt: a TensorRT "
    "engine (plus the edge bundle). jetson: the edge bundle only (build on the device).",
)
_PRECISION = click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "bf16"]),
    default="fp32",
    show_default=True,
    help="Projections and pointwise work; the recurrence always stays fp32.",
)
_SCAN = click.option(
    "--scan",
    type=click.Choice(["auto", "chunked", "toeplitz", "logdepth", "scan"]),
    default="auto",
    show_default=True,
    help="How each layer's recurrence is lowered (auto: measured best for the target).",
)
_BATCH = click.option(
    "--batch",
    default="1:8:32",
    show_default=True,
    help="Batch sizes MIN:OPT:MAX (TensorRT profile); latency is timed at OPT.",
)
_LENGTH = click.option(
    "--length",
    default=None,
    help="Sequence lengths MIN:OPT:MAX or N (default: the data's length, else 1024); latency at OPT.",
)


@cli.command("run")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--ratio", type=float, help="Fraction of states to prune, in [0, 1) (0.7: 70 %).")
@click.option("--threshold", type=float, help="Keep every state whose normalized score is ≥ this.")
@click.option(
    "--max-drop",
    type=float,
    help="Largest ratio whose accuracy drop on --data stays within this many percentage points.",
)
@click.option(
    "--data",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Eval set .npz (x, y, optional lengths): accuracy of original vs pruned, parity inputs.",
)
@click.option(
    "--inputs",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Inputs .npz (x, optional lengths) for the parity gate instead of --data or random inputs.",
)
@_method_option
@_BALANCE
@click.option(
    "--drop-empty-blocks", is_flag=True, help="Remove residual blocks left with no state."
)
@_TARGET
@_PRECISION
@_SCAN
@click.option(
    "--bundle", is_flag=True, help="Also write bundle/ for edge GPUs (always for trt, jetson)."
)
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (default: MODEL without its suffix, plus .aire).",
)
@_BATCH
@_LENGTH
@click.option(
    "--atol", type=float, help="Absolute tolerance of the parity gate (default by precision)."
)
@click.option(
    "--rtol", type=float, help="Relative tolerance of the parity gate (default by precision)."
)
@click.option(
    "--fail-on-parity/--no-fail-on-parity",
    default=True,
    show_default=True,
    help="Exit 3 when a parity gate fails (the report is written either way).",
)
@click.option("--runs", type=int, default=20, show_default=True, help="Timed runs per candidate.")
@click.option("--no-latency", is_flag=True, help="Skip the latency measurement.")
@click.option(
    "--workspace-gib", type=float, default=4.0, show_default=True, help="TensorRT workspace."
)
@click.option(
    "--timing-cache",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TensorRT timing cache file.",
)
@click.option("--version-compatible", is_flag=True, help="TensorRT: a version-compatible engine.")
@click.option(
    "--hardware-compatible", is_flag=True, help="TensorRT: an Ampere+ compatible engine (slower)."
)
@click.option(
    "--trt-weak-typing", is_flag=True, help="TensorRT 10: FP16 flag with the scan pinned to fp32."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print report.json on stdout (progress goes to stderr)."
)
@click.pass_context
def run_cmd(ctx: click.Context, model: Path, **opts) -> None:
    """Prune, shrink, export, build, validate and report: the whole job (the bare form).

    \b
    Examples:
      aire-export model.pt --ratio 0.7                      # ONNX on the CPU
      aire-export model.pt --ratio 0.7 --target trt --precision fp16
      aire-export model.pt --max-drop 1.0 --data eval.npz   # largest ratio within 1 point
    \b
    Writes OUT/: pruned.pt, plan.json, model.onnx, model.step.onnx (unidirectional models),
    model.engine (trt), bundle/ (trt, jetson, --bundle), report.json, report.md, plots.
    Exit codes: 0 passed, 2 bad input, 3 parity gate failed, 4 runtime missing, 5 output.
    """
    from aire_export.pipeline import PipelineOptions, run_pipeline
    from aire_export.runtimes.trt import TrtBuildOptions

    batch = _shape_range(opts["batch"], "batch")
    length = _shape_range(opts["length"], "length")
    trt = TrtBuildOptions(
        workspace_bytes=int(opts["workspace_gib"] * (1 << 30)),
        timing_cache=opts["timing_cache"],
        version_compatible=opts["version_compatible"],
        hardware_compatible=opts["hardware_compatible"],
        weak_typing=opts["trt_weak_typing"],
    )
    options = PipelineOptions(
        ratio=opts["ratio"],
        threshold=opts["threshold"],
        max_drop=opts["max_drop"],
        data=opts["data"],
        inputs=opts["inputs"],
        method=opts["method"],
        eps=opts["eps"],
        score_compat=opts["score_compat"],
        drop_empty_blocks=opts["drop_empty_blocks"],
        balance_channels=opts["balance_channels"],
        seed=opts["seed"],
        target=opts["target"],
        precision=opts["precision"],
        scan=opts["scan"],
        bundle=opts["bundle"],
        out=opts["out"],
        batch=batch,
        length=length,
        atol=opts["atol"],
        rtol=opts["rtol"],
        fail_on_parity=opts["fail_on_parity"],
        latency=not opts["no_latency"],
        latency_runs=opts["runs"],
        trt=trt,
        command="aire-export "
        + " ".join(sys.argv[1:] if sys.argv[0].endswith("aire-export") else []),
    )
    err = Console(stderr=True)
    with err.status("starting") as status:
        result = run_pipeline(model, options, progress=_stage_printer(err, status))
    report = result.report
    if opts["as_json"]:
        _print_json(report.to_json())
    else:
        console = _stdout()
        m = report.model
        console.print(
            f"[bold]{m['states_before']} → {m['states_after']} states[/bold]"
            + (
                f" (stored {m['physical_states_after']}: S4D channels padded to a common width)"
                if m["physical_states_after"] != m["states_after"]
                else ""
            )
            + ", "
            f"{m['parameters_before']:,} → {m['parameters_after']:,} parameters "
            f"(ratio achieved {report.plan['ratio_achieved']:.3f})"
        )
        if report.accuracy:
            a = report.accuracy
            console.print(
                f"accuracy {100 * a.original:.2f} % → {100 * a.pruned:.2f} % "
                f"({-a.drop_pp:+.2f} pp) on {a.samples}"
            )
        for p in report.parity:
            for o in p.outputs:
                verdict = escape(o.verdict() + f" ({p.runner})")
                console.print(
                    verdict.replace("PASSED", "[green]PASSED[/green]").replace(
                        "FAILED", "[red]FAILED[/red]"
                    )
                )
        if report.latency:
            _latency_table(console, report.latency, report.speedups)
        for u in report.unverified:
            console.print(f"[yellow]not verified:[/yellow] {u}")
        for w in report.warnings:
            console.print(f"[yellow]warning:[/yellow] {w}")
        console.print(f"wrote {result.out}/ (report.md, report.json)")
        if report.exit_code:
            console.print(f"[red]exit {report.exit_code}:[/red] " + "; ".join(report.reasons))
    ctx.exit(report.exit_code)


@cli.command("sweep")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--data",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Eval set .npz with x, y (and lengths for padded sequences).",
)
@click.option(
    "--methods",
    default="aire,last,hinf-global,magnitude-global,random",
    show_default=True,
    help="Comma-separated scoring methods.",
)
@click.option(
    "--ratios", default="0:0.95:0.05", show_default=True, help="START:STOP:STEP or a comma list."
)
@click.option(
    "--max-drop",
    type=float,
    default=1.0,
    show_default=True,
    help="Budget in points for the summary: per method, the largest grid ratio within it.",
)
@click.option(
    "--eps", type=float, default=0.0, show_default=True, help="Energy scale ε (see prune)."
)
@click.option(
    "--score-compat",
    type=click.Choice(["default", "official"]),
    default="default",
    show_default=True,
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random method.")
@_BALANCE
@click.option("--batch-size", type=int, default=64, show_default=True, help="Eval batch size.")
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Where to evaluate.",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for sweep.csv, sweep.json, accuracy.png, kept_states.png (default MODEL.sweep).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the sweep as JSON on stdout.")
def sweep_cmd(
    model: Path,
    data: Path,
    methods: str,
    ratios: str,
    max_drop: float,
    eps: float,
    score_compat: str,
    seed: int,
    balance_channels: bool,
    batch_size: int,
    device: str,
    out: Path | None,
    as_json: bool,
) -> None:
    """Accuracy and distortion vs pruning ratio for several methods (the paper's Fig. 4 and 5).

    \b
    Example:
      aire-export sweep examples/checkpoints/s5_digits.pt --data examples/data/digits_eval.npz
    """
    from aire_export.checkpoints import load
    from aire_export.prune.scores import METHODS
    from aire_export.sweep import parse_ratios, sweep, write_sweep
    from aire_export.validate.inputs import load_data

    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise InputError(
            f"unknown method(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(METHODS)}"
        )
    grid = parse_ratios(ratios)
    net = load(model)
    dataset = load_data(data, net, need_labels=True)
    out = out or model.with_name(model.name.rsplit(".", 1)[0] + ".sweep")
    err = Console(stderr=True)
    total = len(chosen) * len(grid)
    from rich.progress import Progress

    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("sweep", total=total)

        done = 0

        def step(message: str) -> None:
            nonlocal done
            done += 1
            bar.update(task, advance=1, description=message)
            if not err.is_terminal:  # a log file: one line per point instead of a live bar
                err.print(f"sweep {done}/{total}: {message}")

        result = sweep(
            net,
            dataset,
            methods=chosen,
            ratios=grid,
            eps=eps,
            score_compat=score_compat,
            seed=seed,
            balance_channels=balance_channels,
            batch_size=batch_size,
            device=device,
            progress=step,
        )
    written = write_sweep(result, out)
    if as_json:
        _print_json(result.to_json())
        return
    console = _stdout()
    table = Table(
        title=f"accuracy (%) vs ratio; unpruned {100 * result.baseline_accuracy:.2f} %",
        header_style="bold",
    )
    table.add_column("ratio", justify="right")
    for m in chosen:
        table.add_column(m, justify="right")
    for r in grid:
        row = [f"{r:.2f}"]
        for m in chosen:
            p = next(p for p in result.points if p.method == m and p.ratio == r)
            row.append(f"{100 * p.accuracy:.2f}")
        table.add_row(*row)
    console.print(table)
    for m in chosen:
        best = result.best_within(m, max_drop)
        console.print(
            f"{m}: largest grid ratio within {max_drop} pp: "
            + (
                "none"
                if best is None
                else f"{best.ratio:.2f} ({100 * best.accuracy:.2f} %, {best.states_kept} states)"
            )
        )
    console.print(f"wrote {', '.join(str(out / w) for w in written)}")


@cli.command("validate")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--original",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The unpruned checkpoint the folder was made from.",
)
@click.option(
    "--data", type=click.Path(dir_okay=False, path_type=Path), help="Eval set .npz for accuracy."
)
@click.option(
    "--inputs", type=click.Path(dir_okay=False, path_type=Path), help="Inputs .npz for parity."
)
@_TARGET
@_PRECISION
@_BATCH
@_LENGTH
@click.option("--atol", type=float, help="Absolute tolerance of the parity gate.")
@click.option("--rtol", type=float, help="Relative tolerance of the parity gate.")
@click.option("--runs", type=int, default=20, show_default=True, help="Timed runs per candidate.")
@click.option("--no-latency", is_flag=True, help="Parity and accuracy only.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_context
def validate_cmd(ctx: click.Context, folder: Path, original: Path, **opts) -> None:
    """Re-validate an output folder (pruned.pt + model.onnx) against the original model.

    Parity of the folder's model.onnx on the target's runtimes against the pruned model in
    float64, pruning distortion, accuracy (with --data) and latency. Exit 3 when parity fails.
    """
    from aire_export.checkpoints import load
    from aire_export.pipeline import PipelineOptions, validate
    from aire_export.report import Report
    from aire_export.validate.inputs import load_data

    for name in ("pruned.pt", "model.onnx"):
        if not (folder / name).is_file():
            raise InputError(f"{folder} has no {name}: give a folder written by aire-export")
    base, pruned = load(original), load(folder / "pruned.pt")
    data = load_data(opts["data"], pruned) if opts["data"] else None
    options = PipelineOptions(
        ratio=0.0,
        target=opts["target"],
        precision=opts["precision"],
        inputs=opts["inputs"],
        batch=_shape_range(opts["batch"], "batch"),
        length=_shape_range(opts["length"], "length"),
        atol=opts["atol"],
        rtol=opts["rtol"],
        latency=not opts["no_latency"],
        latency_runs=opts["runs"],
    )
    err = Console(stderr=True)
    with err.status("validating") as status:
        result = validate(
            base,
            pruned,
            folder / "model.onnx",
            options,
            data=data,
            progress=_stage_printer(err, status),
        )
    failed = [p.runner for p in result.parity if not p.passed]
    code = EXIT_PARITY if failed else (EXIT_RUNTIME_MISSING if result.missing else EXIT_OK)
    if opts["as_json"]:
        report = Report(
            command="validate",
            verdict_passed=code == 0,
            exit_code=code,
            reasons=failed + result.missing,
            model={},
            plan={},
            export={},
            distortion=result.distortion,
            accuracy=result.accuracy,
            parity=result.parity,
            latency=result.latency,
            speedups=result.speedups,
            unverified=result.unverified,
        )
        _print_json(
            {
                k: v
                for k, v in report.to_json().items()
                if k not in ("model", "plan", "export", "plots")
            }
        )
    else:
        console = _stdout()
        d = result.distortion
        console.print(
            f"pruning distortion: relative error {d.normwise_rel:.3g}, top-1 agreement {d.top1_agreement}"
        )
        if result.accuracy:
            a = result.accuracy
            console.print(
                f"accuracy {100 * a.original:.2f} % → {100 * a.pruned:.2f} % ({-a.drop_pp:+.2f} pp)"
            )
        for p in result.parity:
            for o in p.outputs:
                console.print(escape(o.verdict() + f" ({p.runner})"))
        if result.latency:
            _latency_table(console, result.latency, result.speedups)
        for u in result.unverified:
            console.print(f"[yellow]not verified:[/yellow] {u}")
    ctx.exit(code)


@cli.command("profile")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@_TARGET
@_PRECISION
@_SCAN
@click.option("--batch", type=int, default=8, show_default=True, help="Batch size.")
@click.option("--length", type=int, default=1024, show_default=True, help="Sequence length.")
@click.option("--runs", type=int, default=20, show_default=True, help="Timed runs per candidate.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def profile_cmd(
    models: tuple[Path, ...],
    target: str,
    precision: str,
    scan: str,
    batch: int,
    length: int,
    runs: int,
    as_json: bool,
) -> None:
    """Latency of one or more checkpoints, PyTorch eager and exported, side by side.

    Ratios are against the first model, measured in the same run (interleaved rounds).

    \b
    Example:
      aire-export profile model.pt model.aire/pruned.pt --length 4096
    """
    import tempfile

    import torch

    from aire_export.checkpoints import load
    from aire_export.graphs import export
    from aire_export.runtimes.ort import OrtRunner
    from aire_export.runtimes.torch_runner import TorchRunner
    from aire_export.validate.inputs import random_data
    from aire_export.validate.latency import measure_latency

    provider = "cuda" if target in ("ort-cuda", "trt") else "cpu"
    device = "cuda" if provider == "cuda" and torch.cuda.is_available() else "cpu"
    nets = [load(m) for m in models]
    feeds = random_data(nets[0], batch, length).feeds()
    candidates = {}
    with tempfile.TemporaryDirectory(prefix="aire-profile-") as tmp:
        runners = []
        for i, (path, net) in enumerate(zip(models, nets, strict=True)):
            exported = export(
                net, Path(tmp) / str(i), target=target, scan=scan, precision=precision, step=False
            )
            eager = TorchRunner(net, device)
            ort = OrtRunner(exported.sequence.path, provider)
            runners.append(ort)
            candidates[f"{path.name} {eager.name}"] = (eager.bind(feeds), eager.device)
            candidates[f"{path.name} {ort.name}"] = (ort.bind(feeds), ort.device)
        err = Console(stderr=True)
        with err.status("timing") as status:
            results = measure_latency(
                candidates,
                batch=batch,
                length=length,
                runs=runs,
                progress=lambda m: status.update(m),
            )
        for r in runners:
            r.close()
    rows = list(results.values())
    if as_json:
        _print_json([{**vars(r), "sequences_per_s": r.sequences_per_s} for r in rows])
        return
    console = _stdout()
    first = {
        name.split(" ", 1)[1]: r
        for name, r in results.items()
        if name.startswith(models[0].name + " ")
    }
    table = Table(title=f"latency at batch {batch} × length {length}", header_style="bold")
    for col in ("candidate", "p50 ms", "p90 ms", "p99 ms", "vs first model"):
        table.add_column(col, justify="left" if col == "candidate" else "right")
    for name, r in results.items():
        runner = name.split(" ", 1)[1]
        ratio = first[runner].p50_ms / r.p50_ms if runner in first else float("nan")
        table.add_row(
            name, f"{r.p50_ms:.3f}", f"{r.p90_ms:.3f}", f"{r.p99_ms:.3f}", f"{ratio:.2f}×"
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (errors print one line on stderr)."""
    try:
        code = cli.main(args=argv, prog_name="aire-export", standalone_mode=False)
        if isinstance(code, int):  # ctx.exit(n) is returned, not raised, outside standalone mode
            return code
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return EXIT_BAD_INPUT
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except AireError as e:
        click.echo(f"error: {e}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except Exception as e:  # a bug in aire-export, not a user mistake
        if os.environ.get("AIRE_EXPORT_DEBUG"):
            traceback.print_exc()
        click.echo(
            f"internal error: {e.__class__.__name__}: {e} (a bug in aire-export; rerun with "
            "AIRE_EXPORT_DEBUG=1 for the traceback and please report it)",
            err=True,
        )
        return EXIT_INTERNAL
    return EXIT_OK


def console_main() -> None:
    sys.exit(main())


__all__ = ["InputError", "cli", "console_main", "main"]
