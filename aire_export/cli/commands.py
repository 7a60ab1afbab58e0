"""The commands: each parses its options (cli/options.py), makes one library call and renders
the result (cli/render.py). No workflow lives here."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

import click

from aire_export.checkpoints import import_checkpoint, load, save
from aire_export.cli import options as opt
from aire_export.cli import render
from aire_export.data import load_data
from aire_export.errors import AireError
from aire_export.files import (
    after_commit,
    check_destination,
    check_file_outputs,
    record_outputs,
)
from aire_export.graphs.export import SEQUENCE_FILE, STEP_FILE
from aire_export.lower import export
from aire_export.models import family_of
from aire_export.pipeline import PipelineOptions, revalidate, run_pipeline
from aire_export.prune import PLAN_NAME, PruneOptions, prune_with, save_pruned, score_layers
from aire_export.prune.api import modal_view
from aire_export.prune.scores import scores_to_json
from aire_export.s4op import SCHEDULE, SEEDS, SELECTIONS, S4opOptions, run_s4op
from aire_export.summary import summarize
from aire_export.sweep import default_folder, parse_methods, parse_ratios, sweep, write_sweep
from aire_export.validate.latency import noise_warnings
from aire_export.validate.speed import profile
from aire_export.validate.validation import ValidateOptions

EPILOG = (
    "Exit codes: 0 ok, 1 internal error, 2 bad input, 3 parity gate failed, "
    "4 runtime missing, 5 output not writable, 6 a runtime refused the graph, "
    "7 not fit to ship (accuracy dropped more than the budget)."
)


class PipelineGroup(click.Group):
    """A group whose bare form ``aire-export MODEL [options]`` runs the ``run`` command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            close = difflib.get_close_matches(args[0], list(self.commands), n=1, cutoff=0.7)
            if close and not Path(args[0]).exists():  # a mistyped command, not a model file
                raise click.UsageError(
                    f"no command {args[0]!r} and no such model file: did you mean "
                    f"`aire-export {close[0]}`?"
                )
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(
    cls=PipelineGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG
)
@click.version_option(package_name="aire-export")
def cli() -> None:
    """Prune state space models (S5, S4D, Mamba-1) with AIRE-Prune, shrink them, export them to
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
      aire-export validate MODEL.aire --original MODEL       # re-check an output folder
      aire-export profile MODEL MODEL.aire/pruned.pt         # latency side by side
    """


def _command(ctx: click.Context) -> str:
    return (ctx.obj or {}).get("command", "aire-export")


@cli.command("inspect")
@opt.file_argument("model")
@opt.AS_JSON
def inspect_cmd(model: Path, as_json: bool) -> None:
    """What is in a checkpoint: architecture, layers, states, parameters, stability.

    A state with |λ̄| ≥ 1 is marginal or unstable (possible when a model was trained without
    eigenvalue clipping): its AIRE energy is infinite, so pruning always keeps it.
    """
    summary = summarize(load(model))
    if as_json:
        render.print_json(summary.to_json())
    else:
        render.model_summary(model, summary)


@cli.command("import", help=f"Import a foreign checkpoint. Kinds: {opt.importers_help()}.")
@opt.IMPORT_KIND
@click.argument("checkpoint", type=click.Path(path_type=Path))
@opt.file_option(
    "--config",
    "JSON options of the import (the kind's help above says which).",
)
@opt.output_file("Where to write the model in our format (model.pt).")
def import_cmd(kind: str, checkpoint: Path, config: Path | None, output: Path) -> None:
    model = import_checkpoint(kind, checkpoint, config)
    save(model, output)
    summary = summarize(model)
    click.echo(
        f"wrote {output}: {summary.arch} with {len(summary.layers)} layers, {summary.states} "
        f"states, {summary.parameters:,} parameters"
    )


@cli.command("score")
@opt.file_argument("model")
@opt.SCORING
@opt.CALIB
@opt.AS_JSON
def score_cmd(model: Path, scoring: PruneOptions, calib: Path | None, as_json: bool) -> None:
    """Score every state: per layer the energy head (largest) and tail (smallest), stability.

    \b
    Example:
      aire-export score model.pt --method aire --json
    """
    net = load(model)
    layers = score_layers(modal_view(net, calib=load_data(calib, net) if calib else None), scoring)
    if as_json:
        s = scoring
        render.print_json(scores_to_json(layers, s.method, s.eps, s.score_compat, s.seed))
    else:
        render.scores(model, layers, scoring.method, scoring.score_compat)


@cli.command("prune")
@opt.file_argument("model")
@opt.PRUNING
@click.option(
    "--no-certificates", is_flag=True, help="Skip the per-layer H∞ bound / H∞ / H2 errors."
)
@opt.output_file("Where to write the pruned model; plan.json is written in the same folder.")
@opt.CALIB
@opt.FORCE
@opt.AS_JSON
def prune_cmd(
    model: Path,
    pruning: PruneOptions,
    no_certificates: bool,
    output: Path,
    calib: Path | None,
    force: bool,
    as_json: bool,
) -> None:
    """Prune states globally (AIRE-Prune Algorithm 1) and write the physically smaller model.

    \b
    Examples:
      aire-export prune model.pt --ratio 0.7 -o out/pruned.pt
      aire-export prune model.pt --ratio 0.3 --score-compat official -o pruned.pt
    """
    pruning = dataclasses.replace(pruning, certificates=not no_certificates)
    check_file_outputs([output, output.with_name(PLAN_NAME)], [model, calib], force=force)
    net = load(model)
    pruned, plan = prune_with(net, pruning, calib=load_data(calib, net) if calib else None)
    written = save_pruned(pruned, plan, output)
    record_outputs(output.parent, [p.name for p in written])
    if as_json:
        render.print_json(plan.to_json())
    else:
        render.plan(plan, written)


@cli.command("export")
@opt.file_argument("model")
@opt.output_folder("Folder for model.onnx and model.step.onnx.", required=True)
@opt.TARGET
@opt.SCAN
@opt.PRECISION
@click.option("--opset", type=int, help="ONNX opset (default 17; the target states its range).")
@click.option(
    "--step/--no-step",
    default=None,
    help="Write model.step.onnx (default: for unidirectional models).",
)
@opt.FRAME
@click.option("--lengths-input", is_flag=True, help="Add a 'lengths' input for masked pooling.")
@click.option("--max-length", type=int, help="Longest sequence the graph must accept.")
@opt.FORCE
@opt.AS_JSON
def export_cmd(model: Path, out: Path, force: bool, as_json: bool, **options) -> None:
    """Lower a model to ONNX: model.onnx (sequence mode) and model.step.onnx (streaming).

    \b
    Examples:
      aire-export export pruned.pt -o out/
      aire-export export pruned.pt -o out/ --target jetson --precision fp16
      aire-export export pruned.pt -o out/ --frame 32          # 32 streaming steps per call
    """
    check_file_outputs([out / SEQUENCE_FILE, out / STEP_FILE], [model], force=force)
    result = export(load(model), out, **options)
    record_outputs(out, [g.path.name for g in (result.sequence, result.step) if g is not None])
    if as_json:
        render.print_json(result.to_json())
    else:
        render.export_result(result)
    if result.check is not None and not result.check.ok:
        raise AireError(
            "the exported graph fails the TensorRT op-support check (a bug in aire-export: "
            "please report it with the problems listed above)"
        )


@cli.command("run")
@opt.file_argument("model")
@opt.PRUNING
@opt.MAX_DROP
@opt.LATENCY_BUDGET
@opt.NO_ACCURACY_GATE
@opt.DATA
@opt.INPUTS
@opt.CALIB
@opt.FINETUNE
@opt.FINETUNING
@opt.VALIDATION
@opt.FRAME
@opt.FAIL_ON_PARITY
@click.option(
    "--bundle", is_flag=True, help="Also write bundle/ for edge GPUs (always for trt, jetson)."
)
@opt.output_folder("Output folder (default: MODEL without its suffix, plus .aire).")
@opt.FORCE
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print report.json on stdout (progress, warnings and the verdict go to stderr).",
)
@click.pass_context
def run_cmd(
    ctx: click.Context,
    model: Path,
    pruning: PruneOptions,
    validation: ValidateOptions,
    as_json: bool,
    **options,
) -> None:
    """Prune, shrink, export, build, validate and report: the whole job (the bare form).

    \b
    Examples:
      aire-export model.pt --ratio 0.7                      # ONNX on the CPU
      aire-export model.pt --ratio 0.7 --target trt --precision fp16
      aire-export model.pt --max-drop 1.0 --data eval.npz   # largest ratio within 1 point
      aire-export model.pt --ratio 0.5 --unit channel --finetune train.npz --data eval.npz
      aire-export model.pt --latency-budget 2.5 --data eval.npz   # least pruning within 2.5 ms
    \b
    Writes OUT/: pruned.pt, plan.json, model.onnx, model.step.onnx (unidirectional models;
    K steps per call with --frame K), model.engine (trt), bundle/ (trt, jetson, --bundle),
    report.json, report.md, plots.
    Exit codes: 0 passed, 1 internal error (a bug), 2 bad input, 3 parity gate failed,
    4 runtime missing, 5 output not writable, 6 a runtime refused the graph, 7 not fit to ship
    (accuracy dropped more than --max-drop), 128 + n stopped by signal n.
    """
    pipeline = PipelineOptions(prune=pruning, validate=validation, command=_command(ctx), **options)
    with render.stage_status() as progress:
        result = run_pipeline(model, pipeline, progress=progress)
    with after_commit(result.out):
        if as_json:
            render.json_report(result.report)
        else:
            render.run_report(result.report, result.out)
    ctx.exit(result.exit_code)


@cli.command("sweep")
@opt.file_argument("model")
@opt.file_option(
    "--data",
    "Eval set .npz with x, y (and lengths for padded sequences).",
    required=True,
)
@click.option(
    "--methods",
    default=None,
    help="Comma-separated scoring methods (default: the family's: aire,last,hinf-global,"
    "magnitude-global,random; a Mamba model: aire,ghost,magnitude-global,random).",
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
@opt.EPS
@opt.SCORE_COMPAT
@opt.SEED
@opt.BALANCE
@opt.UNIT
@click.option("--batch-size", type=int, default=64, show_default=True, help="Eval batch size.")
@opt.DEVICE
@opt.CALIB
@opt.EXECUTOR
@opt.output_folder(
    "Folder for sweep.csv, sweep.json, accuracy.png, kept_states.png (default MODEL.sweep)."
)
@opt.FORCE
@opt.AS_JSON
def sweep_cmd(
    model: Path,
    data: Path,
    methods: str,
    ratios: str,
    max_drop: float,
    out: Path | None,
    force: bool,
    as_json: bool,
    **options,
) -> None:
    """Accuracy and distortion vs pruning ratio for several methods (the paper's Fig. 4 and 5).

    \b
    Example:
      aire-export sweep examples/checkpoints/s5_digits.pt --data examples/data/digits_eval.npz
    """
    grid = parse_ratios(ratios)
    chosen = parse_methods(methods) if methods is not None else None
    out = out or default_folder(model)
    calib = options.pop("calib")
    out = check_destination(out, [model, data, calib], force=force)
    net = load(model)
    chosen = chosen or family_of(net).sweep_methods
    dataset = load_data(data, net, need_labels=True)
    calibration = load_data(calib, net) if calib else None
    executor = options.pop("executor")
    with (
        render.counted_progress("sweep", len(chosen) * len(grid)) as progress,
        executor.start() as ex,
    ):
        result = sweep(
            net, dataset, methods=chosen, ratios=grid, calib=calibration, progress=progress,
            executor=ex, **options,
        )  # fmt: skip
    written = write_sweep(result, out)
    with after_commit(out):
        if as_json:
            render.print_json(result.to_json())
        else:
            render.sweep_table(result, list(chosen), grid, max_drop, [out / w for w in written])
    if result.failed:  # reported above and in sweep.json; the exit code says it too
        raise click.exceptions.Exit(1)


@cli.command("s4op")
@opt.file_argument("model")
@opt.file_option(
    "--train",
    "Training set .npz (x, y, optional lengths) every candidate is fine-tuned on.",
    required=True,
)
@opt.file_option(
    "--data",
    "Validation set .npz (x, y): chooses each candidate's epoch and each step's seed.",
    required=True,
)
@opt.file_option(
    "--test",
    "Held-out set .npz scored once per step, never used for a choice.",
)
@click.option(
    "--schedule",
    default=",".join(f"{r:g}" for r in SCHEDULE),
    show_default=True,
    help="The channel ratios, step by step (each step starts from the previous best).",
)
@click.option(
    "--seeds",
    default=",".join(map(str, SEEDS)),
    show_default=True,
    help="One candidate per seed and step (select random): S4oP's five.",
)
@click.option(
    "--select",
    type=click.Choice(SELECTIONS),
    default="random",
    show_default=True,
    help="random: S4oP's draws (per-layer budget ∝ 2^i). energy: our channel scores (the AIRE "
    "energy of the modes a channel's bypass changes plus (D_h - 1)^2, Algorithm 1), one "
    "candidate per step, no seeds. budget: S4oP's per-layer budget, each layer's lowest-energy "
    "channels.",
)
@opt.FINETUNING
@opt.MAX_DROP
@opt.NO_ACCURACY_GATE
@opt.VALIDATION
@opt.EXECUTOR
@opt.output_folder("Output folder (default: MODEL without its suffix, plus .s4op).")
@opt.FORCE
@opt.AS_JSON
@click.pass_context
def s4op_cmd(
    ctx: click.Context,
    model: Path,
    train: Path,
    data: Path,
    test: Path | None,
    schedule: str,
    seeds: str,
    select: str,
    finetuning,
    validation: ValidateOptions,
    executor,
    out: Path | None,
    force: bool,
    as_json: bool,
    **gates,
) -> None:
    """S4oP's search: prune whole operators (channels) step by step, fine-tune every candidate,
    carry the best forward; each step's best is written as a normal output folder.

    \b
    Examples:
      aire-export s4op model.pt --train train.npz --data val.npz --test test.npz
      aire-export s4op model.pt --train train.npz --data val.npz --select energy
    \b
    Writes OUT/s4op.json and s4op.md (every trial: step, seed, ratio, accuracy before and
    after fine-tuning; every step: accuracy, latency side by side with the input model) and
    OUT/step_NN/ per step (NN: its ratio in %). Use --batch 1 for S4oP's latency protocol
    (batch 1, full length).
    Exit 0 when the search ran (each step's verdict is in its report), 3 when a step's
    graphs failed parity.
    """
    options = S4opOptions(
        schedule=parse_ratios(schedule),
        seeds=_seeds(seeds),
        select=select,
        finetuning=finetuning,
        deploy=PipelineOptions(validate=validation, force=force, command=_command(ctx), **gates),
    )
    with render.stage_status() as progress, executor.start() as ex:
        result = run_s4op(
            model,
            train,
            data,
            options,
            out=out or model.with_name(model.name.rsplit(".", 1)[0] + ".s4op"),
            test_path=test,
            executor=ex,
            progress=progress,
        )
    if as_json:
        render.print_json(result.to_json())
    else:
        render.s4op_table(result)
    ctx.exit(result.exit_code)


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(f"seeds are integers separated by commas, got {text!r}") from None


@cli.command("validate")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@opt.file_option(
    "--original",
    "The unpruned checkpoint the folder was made from.",
    required=True,
)
@click.option(
    "--data", type=click.Path(dir_okay=False, path_type=Path), help="Eval set .npz for accuracy."
)
@opt.INPUTS
@opt.MAX_DROP
@opt.NO_ACCURACY_GATE
@opt.VALIDATION
@opt.FAIL_ON_PARITY
@opt.AS_JSON
@click.pass_context
def validate_cmd(
    ctx: click.Context,
    folder: Path,
    original: Path,
    validation: ValidateOptions,
    as_json: bool,
    **gates,
) -> None:
    """Re-validate an output folder (pruned.pt + model.onnx) against the original model.

    Parity of the folder's model.onnx on the target's runtimes against the pruned model in
    float64, pruning distortion, accuracy (with --data) and latency; the same verdict and exit
    codes as the whole job.
    """
    with render.stage_status("validating") as progress:
        report = revalidate(
            folder, original, validation, command=_command(ctx), progress=progress, **gates
        )
    if as_json:
        render.json_report(report)
    else:
        render.validate_report(report)
    ctx.exit(report.verdict.exit_code)


@cli.command("profile")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@opt.TARGET
@opt.PRECISION
@opt.SCAN
@click.option("--batch", type=int, default=8, show_default=True, help="Batch size.")
@click.option("--length", type=int, default=1024, show_default=True, help="Sequence length.")
@opt.RUNS
@opt.AS_JSON
def profile_cmd(models: tuple[Path, ...], as_json: bool, **options) -> None:
    """Latency of one or more checkpoints, PyTorch eager and exported, side by side.

    Ratios are against the first model, measured in the same run (interleaved rounds).

    \b
    Example:
      aire-export profile model.pt model.aire/pruned.pt --length 4096
    """
    names = [m.name for m in models]
    labels = names if len(set(names)) == len(names) else [str(m) for m in models]
    with render.stage_status("timing") as progress:
        rows = profile(
            [(label, load(m)) for label, m in zip(labels, models, strict=True)],
            progress=progress,
            **options,
        )
    if as_json:
        render.print_json([row.to_json() for row in rows])
    else:
        render.profile_table(rows, options["batch"], options["length"])
    render.notes(render.stderr(), "warning", noise_warnings(row.latency for row in rows))
