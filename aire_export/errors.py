"""Errors a user can act on, and the exit codes the CLI maps them to.

Every exception raised for a user mistake derives from :class:`AireError` and carries a message
that says what to do. The CLI prints the message on one line and exits with ``exit_code``:

==========  =====================================================================
exit code   meaning
==========  =====================================================================
0           success: every parity gate passed
1           internal error (a bug in aire-export: please report it)
2           bad input: a missing or unreadable file, a bad option, a bad checkpoint
3           a parity gate failed (the report is still written)
4           a requested runtime (TensorRT, onnxruntime CUDA, a GPU) is missing
5           the output location cannot be written
6           a runtime could not build or load the exported graph (TensorRT's parser
            or builder refused it; the report is still written)
7           the pruned model is not fit to ship: its accuracy on --data dropped more
            than the budget (--max-drop, 1 point by default; the report is written)
==========  =====================================================================

Exit codes 3, 4, 6 and 7 are verdicts (``aire_export.report.verdict``): the job ran, the report
was written, and a gate or a runtime failed.
"""

from __future__ import annotations

import signal
from pathlib import Path

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_PARITY = 3
EXIT_RUNTIME_MISSING = 4
EXIT_OUTPUT = 5
EXIT_BUILD = 6
EXIT_ACCURACY = 7


class AireError(Exception):
    """Base class of errors the user can act on."""

    exit_code: int = EXIT_INTERNAL


class InputError(AireError):
    """A bad option, file or value given by the user."""

    exit_code = EXIT_BAD_INPUT


class CheckpointError(InputError):
    """A checkpoint that cannot be read, is not ours, or does not match its config."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that holds pickled Python objects, which could run code when loaded."""


class RuntimeMissingError(AireError):
    """A requested runtime (TensorRT, onnxruntime's CUDA provider, a GPU) is not available."""

    exit_code = EXIT_RUNTIME_MISSING


class OutputError(AireError):
    """The output location cannot be written."""

    exit_code = EXIT_OUTPUT


#: Ctrl-C, and how schedulers, CI and `timeout` stop a job (SIGTERM, SIGHUP)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM, SIGHUP): unwinds like Ctrl-C, so staged
    outputs are removed; the CLI exits with 128 + the signal number. ``written``: the output
    folder, when the signal came after it was complete (it stays)."""

    def __init__(self, signum: int, written: Path | None = None) -> None:
        super().__init__(signum)
        self.signum = signum
        self.written = written


class RuntimeBuildError(AireError):
    """A runtime refused the exported graph (TensorRT could not parse it or build an engine)."""

    exit_code = EXIT_BUILD
