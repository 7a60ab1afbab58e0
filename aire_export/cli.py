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
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.table import Table

from aire_export.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK, AireError, InputError

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.version_option(package_name="aire-export")
def cli() -> None:
    """Prune diagonal state space models (S5, S4D) with AIRE-Prune, shrink them, export them to
    ONNX / TensorRT, and prove the result is right and fast.

    \b
    Examples:
      aire-export inspect examples/checkpoints/s5_digits.pt
      aire-export import s5-flax best_state.msgpack --config run_args.json -o model.pt
      aire-export prune model.pt --ratio 0.7 -o out/pruned.pt
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


@cli.command("prune")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--ratio", type=float, help="Fraction of states to prune, in [0, 1) (0.7: 70 %).")
@click.option("--threshold", type=float, help="Keep every state whose score is ≥ this (≥ 0).")
@_method_option
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


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (errors print one line on stderr)."""
    try:
        cli.main(args=argv, prog_name="aire-export", standalone_mode=False)
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
