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
