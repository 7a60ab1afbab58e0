"""Every command-line option, declared once; choices come from the registries.

An option is a decorator constant used by every command that takes it. Options that feed one
typed value of the library are bundled by :func:`option_group`: the command receives that
value (a ``PruneOptions``, a ``ValidateOptions``) instead of the separate flags, so no
command maps flags to fields by hand.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from aire_export.finetune import FinetuneOptions
from aire_export.graphs.export import PRECISIONS, SCANS
from aire_export.models import importers
from aire_export.prune import COMPAT, METHODS, UNITS, PruneOptions
from aire_export.runtimes.shapes import ShapeRange
from aire_export.runtimes.torch_runner import DEVICES
from aire_export.runtimes.trt import TrtBuildOptions
from aire_export.targets import DEFAULT_TARGET, TARGETS, targets_help
from aire_export.trials import EXECUTORS, ExecutorSpec
from aire_export.validate.validation import DEFAULT_BATCH, ValidateOptions


def option_group(dest: str, build: Callable[..., Any], *options: Callable) -> Callable:
    """A decorator adding ``options`` to a command that receives ``build(**their values)`` as
    the keyword ``dest`` instead of the separate values."""

    def probe() -> None:
        pass

    for option in options:
        probe = option(probe)
    names = [param.name for param in probe.__click_params__]

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            kwargs[dest] = build(**{name: kwargs.pop(name) for name in names})
            return command(*args, **kwargs)

        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


def file_argument(name: str, **kwargs) -> Callable:
    return click.argument(name, type=click.Path(dir_okay=False, path_type=Path), **kwargs)


def file_option(flag: str, help: str, required: bool = False) -> Callable:
    """An input file option (an .npz data set, a JSON config)."""
    return click.option(
        flag, type=click.Path(dir_okay=False, path_type=Path), required=required, help=help
    )


def output_file(help: str) -> Callable:
    """``-o/--output FILE`` (required): where a command writes its one file."""
    return click.option(
        "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help=help
    )


def output_folder(help: str, required: bool = False) -> Callable:
    """``-o/--out FOLDER``: where a command writes its files (a file there is refused with
    exit 5, an output that cannot be written, by the command's own check)."""
    return click.option(
        "-o",
        "--out",
        type=click.Path(path_type=Path),
        metavar="FOLDER",
        required=required,
        help=help,
    )


FORCE = click.option(
    "--force",
    is_flag=True,
    help="Replace output files or folders even when aire-export did not write them.",
)
AS_JSON = click.option(
    "--json", "as_json", is_flag=True, help="Print the result as JSON on stdout."
)

# ---- pruning ---------------------------------------------------------------------------------
RATIO = click.option(
    "--ratio",
    type=float,
    help="Fraction of the units to prune, in [0, 1) (0.7: 70 %): states, or channels with "
    "--unit channel.",
)
THRESHOLD = click.option(
    "--threshold", type=float, help="Keep every state whose normalized score is ≥ this (≥ 0)."
)
METHOD = click.option(
    "--method",
    type=click.Choice(list(METHODS)),
    default="aire",
    show_default=True,
    help="Scoring method: " + "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values()),
)
EPS = click.option(
    "--eps",
    type=float,
    default=0.0,
    show_default=True,
    help="Energy scale ε of the normalization s = E/(ΣE + ε). 0: no layer ever empties; "
    "> 0 lets whole low-energy layers go.",
)
SCORE_COMPAT = click.option(
    "--score-compat",
    type=click.Choice(COMPAT),
    default="default",
    show_default=True,
    help="'official' reproduces the official AIRE-Prune/LAST code exactly (its bidirectional "
    "formula and its handling of |λ̄| ≥ 1), to match published numbers.",
)
SEED = click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the random method."
)
BALANCE = click.option(
    "--balance-channels/--exact-channels",
    default=True,
    show_default=True,
    help="Layers of SISO channels (S4D). Balanced: Algorithm 1 sets each layer's kept count, "
    "and every channel keeps the same number of modes (its own best ones), so the stored width "
    "really shrinks. Exact: Algorithm 1 over all (channel, mode) pairs; channels keep "
    "different counts and are padded to the widest (little is saved). No effect on S5.",
)
DROP_EMPTY = click.option(
    "--drop-empty-blocks",
    is_flag=True,
    help="Remove the whole residual block of a layer that keeps no state.",
)
UNIT = click.option(
    "--unit",
    type=click.Choice(UNITS),
    default="state",
    show_default=True,
    help="What is pruned. state: SSM states (AIRE-Prune). channel: whole operators, S4oP's "
    "unit: on S4D and S5 a pruned channel's operator is removed and its input passes "
    "through (y = u); on Mamba an inner channel is cut out of its mixer (scored on --calib). "
    "The ratio then counts channels, each scored by what its removal changes.",
)
SCORING = option_group(
    "scoring",
    lambda method, eps, score_compat, seed: PruneOptions(
        method=method, eps=eps, score_compat=score_compat, seed=seed
    ),
    METHOD,
    EPS,
    SCORE_COMPAT,
    SEED,
)
PRUNING = option_group(
    "pruning",
    PruneOptions,
    RATIO,
    THRESHOLD,
    METHOD,
    EPS,
    SCORE_COMPAT,
    SEED,
    BALANCE,
    DROP_EMPTY,
    UNIT,
)

# ---- lowering ----------------------------------------------------------------------------------
TARGET = click.option(
    "--target",
    type=click.Choice(list(TARGETS)),
    default=DEFAULT_TARGET,
    show_default=True,
    help="Where the graph will run (picks the auto lowering and what is validated). "
    + targets_help(),
)
PRECISION = click.option(
    "--precision",
    type=click.Choice(list(PRECISIONS)),
    default="fp32",
    show_default=True,
    help="Projections and pointwise work; the recurrence always stays fp32.",
)
SCAN = click.option(
    "--scan",
    type=click.Choice(list(SCANS)),
    default="auto",
    show_default=True,
    help="How each layer's recurrence is lowered (auto: measured best for the target).",
)

FRAME = click.option(
    "--frame",
    type=int,
    default=1,
    show_default=True,
    metavar="K",
    help="Steps per call of model.step.onnx: 1 one step; K > 1 a frame graph taking x (batch, "
    "K, d_input) and giving y after each of the K steps, same state in and out, so streaming "
    "pays the per-call overhead once per K steps. Whole frames only (the parity sequences "
    "must be at least K steps long), K ≤ 128; unidirectional S5 and S4D models (a "
    "bidirectional or Mamba model refuses K > 1).",
)

# ---- validation ----------------------------------------------------------------------------------
BATCH = click.option(
    "--batch",
    default=str(DEFAULT_BATCH),
    show_default=True,
    help="Batch sizes MIN:OPT:MAX (TensorRT profile); parity and latency run at OPT.",
)
LENGTH = click.option(
    "--length",
    default=None,
    help="Sequence lengths MIN:OPT:MAX or N (default: the data's length, else 1024); latency "
    "at OPT.",
)
ATOL = click.option(
    "--atol", type=float, help="Absolute tolerance of the parity gate (default by precision)."
)
RTOL = click.option(
    "--rtol", type=float, help="Relative tolerance of the parity gate (default by precision)."
)
MAX_DROP = click.option(
    "--max-drop",
    type=float,
    help="Accuracy budget in percentage points on --data (default 1 when --data has labels): a "
    "pruned model that loses more is not fit to ship (run and validate exit 7; s4op records "
    "each step's verdict in its report). The whole job (`run`) given no --ratio or "
    "--threshold prunes as much as the budget allows.",
)
LATENCY_BUDGET = click.option(
    "--latency-budget",
    type=float,
    metavar="MS",
    help="Without --ratio or --threshold: prune as little as needed for the graph to run in "
    "MS milliseconds on the target's runtime (onnxruntime; batch 1, the data's length or "
    "--length, 50 warm-up and 100 timed runs, median: S4oP's protocol). --max-drop still gates "
    "the accuracy of the choice.",
)
NO_ACCURACY_GATE = click.option(
    "--no-accuracy-gate",
    "accuracy_gate",
    flag_value=False,
    default=True,
    help="Report the accuracy drop without gating the verdict on it.",
)
FAIL_ON_PARITY = click.option(
    "--fail-on-parity/--no-fail-on-parity",
    default=True,
    show_default=True,
    help="Exit 3 when a parity gate fails (run writes its report either way; validate prints it).",
)
RUNS = click.option(
    "--runs", type=int, default=20, show_default=True, help="Timed runs per candidate."
)
NO_LATENCY = click.option("--no-latency", is_flag=True, help="Skip the latency measurement.")
WORKSPACE = click.option(
    "--workspace-gib", type=float, default=4.0, show_default=True, help="TensorRT workspace."
)
TIMING_CACHE = click.option(
    "--timing-cache",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TensorRT timing cache file.",
)
VERSION_COMPATIBLE = click.option(
    "--version-compatible", is_flag=True, help="TensorRT: a version-compatible engine."
)
HARDWARE_COMPATIBLE = click.option(
    "--hardware-compatible", is_flag=True, help="TensorRT: an Ampere+ compatible engine (slower)."
)
WEAK_TYPING = click.option(
    "--trt-weak-typing", is_flag=True, help="TensorRT 10: FP16 flag with the scan pinned to fp32."
)


def shape_range(text: str | None, what: str) -> ShapeRange | None:
    return None if text is None else ShapeRange.parse(text, what)


def _validate_options(
    target,
    precision,
    scan,
    batch,
    length,
    atol,
    rtol,
    runs,
    no_latency,
    workspace_gib,
    timing_cache,
    version_compatible,
    hardware_compatible,
    trt_weak_typing,
) -> ValidateOptions:
    return ValidateOptions(
        target=target,
        precision=precision,
        scan=scan,
        batch=shape_range(batch, "batch"),
        length=shape_range(length, "length"),
        atol=atol,
        rtol=rtol,
        latency=not no_latency,
        latency_runs=runs,
        trt=TrtBuildOptions(
            workspace_bytes=int(workspace_gib * (1 << 30)),
            timing_cache=timing_cache,
            version_compatible=version_compatible,
            hardware_compatible=hardware_compatible,
            weak_typing=trt_weak_typing,
        ),
    ).check()


VALIDATION = option_group(
    "validation",
    _validate_options,
    TARGET,
    PRECISION,
    SCAN,
    BATCH,
    LENGTH,
    ATOL,
    RTOL,
    RUNS,
    NO_LATENCY,
    WORKSPACE,
    TIMING_CACHE,
    VERSION_COMPATIBLE,
    HARDWARE_COMPATIBLE,
    WEAK_TYPING,
)

# ---- data ------------------------------------------------------------------------------------------
DATA = click.option(
    "--data",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Eval set .npz (x, y, optional lengths): accuracy of original vs pruned, parity inputs.",
)
INPUTS = click.option(
    "--inputs",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Inputs .npz (x, optional lengths) for the parity gate instead of --data or random inputs.",
)
CALIB = click.option(
    "--calib",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Calibration sequences .npz (x, as --data) that selective layers (Mamba) are scored "
    "on; LTI layers need none.",
)
FINETUNE = click.option(
    "--finetune",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Training set .npz (x, y, optional lengths): fine-tune the pruned model on it and keep "
    "the epoch with the best accuracy on --data (recovery fine-tuning, as S4oP does).",
)


def _finetuning(**values) -> FinetuneOptions:
    """FinetuneOptions from the --finetune-* options (and --patience)."""
    return FinetuneOptions(
        epochs=values["finetune_epochs"],
        lr=values["finetune_lr"],
        weight_decay=values["finetune_wd"],
        patience=values["patience"],
        batch_size=values["finetune_batch"],
        seed=values["finetune_seed"],
        device=values["finetune_device"],
    )


FINETUNING = option_group(
    "finetuning",
    _finetuning,
    click.option(
        "--finetune-epochs", type=int, default=5, show_default=True, help="Epochs at most."
    ),
    click.option("--finetune-lr", type=float, default=1e-4, show_default=True, help="AdamW lr."),
    click.option(
        "--finetune-wd", type=float, default=1e-5, show_default=True, help="AdamW weight decay."
    ),
    click.option(
        "--patience",
        type=int,
        default=2,
        show_default=True,
        help="Stop after this many epochs without a better accuracy on --data.",
    ),
    click.option("--finetune-batch", type=int, default=32, show_default=True, help="Batch size."),
    click.option(
        "--finetune-seed", type=int, default=0, show_default=True, help="Shuffling and dropout."
    ),
    click.option(
        "--finetune-device",
        type=click.Choice(["cpu", "cuda"]),
        default="cpu",
        show_default=True,
        help="Where the fine-tuning runs (cuda: a CUDA GPU, unverified here).",
    ),
)
EXECUTOR = option_group(
    "executor",
    lambda executor, workers, ray_address: ExecutorSpec(executor, workers, ray_address),
    click.option(
        "--executor",
        type=click.Choice(EXECUTORS),
        default="local",
        show_default=True,
        help="Where the trials run: local (this machine) or ray (a Ray cluster; pip install "
        "'aire-export[scale]'). A failed trial is reported and the others still run.",
    ),
    click.option(
        "--workers",
        type=int,
        default=1,
        show_default=True,
        help="Local processes running trials side by side (1: one after another, here).",
    ),
    click.option(
        "--ray-address",
        help="The Ray cluster to use (ray://HOST:10001 or HOST:6379); default: a Ray started "
        "for the run on this machine, loopback only.",
    ),
)
DEVICE = click.option(
    "--device",
    type=click.Choice(DEVICES),
    default="cpu",
    show_default=True,
    help="Where PyTorch evaluates.",
)
IMPORT_KIND = click.argument("kind", type=click.Choice(list(importers())))


def importers_help() -> str:
    return "; ".join(f"{imp.kind}: {imp.summary}" for imp in importers().values())
