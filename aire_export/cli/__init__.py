"""Command line: a thin layer over the library (DESIGN §1). It parses options (options.py),
calls the library (commands.py) and prints (render.py); errors become exit codes here.

Exit codes (see :mod:`aire_export.errors`): 0 ok, 1 internal error, 2 bad input, 3 parity gate
failed, 4 runtime missing, 5 output not writable, 6 a runtime refused the graph.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from aire_export.cli.commands import cli
from aire_export.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_OUTPUT,
    STOP_SIGNALS,
    AireError,
    Terminated,
)
from aire_export.files import WRITE_ERRNOS

INTERRUPTED = 128 + signal.SIGINT


@contextmanager
def stop_signals_unwind(received: list[int] | None = None) -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Terminated` while the command runs, so staged outputs
    are cleaned up as on Ctrl-C (only the main thread may install handlers); every stop
    signal, Ctrl-C included, is also appended to ``received``: a library interrupted midway
    can fail with another error (numpy interrupted while it imports: a RecursionError),
    which is then reported as the stop, not as a bug."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = [] if received is None else received

    def stop(signum: int, _frame) -> None:
        received.append(signum)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (errors print one line on stderr)."""
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    context = {"command": shlex.join(["aire-export", *args])}
    received: list[int] = []
    with stop_signals_unwind(received):
        return _run(args, context, received)


def _run(args: list[str], context: dict, received: list[int]) -> int:
    try:
        code = cli.main(args=args, prog_name="aire-export", standalone_mode=False, obj=context)
        if isinstance(code, int):  # ctx.exit(n) is returned, not raised, outside standalone mode
            return code
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return EXIT_BAD_INPUT
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return INTERRUPTED
    except AireError as e:
        click.echo(f"error: {e}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        return _stopped(signal.SIGINT)
    except Terminated as e:
        return _stopped(e.signum, e.written)
    except Exception as e:  # the environment's write fault, else a bug, unless a stop came first
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
            click.echo(f"error: cannot write {e.filename or 'the output'}: {e.strerror}", err=True)
            return EXIT_OUTPUT
        if received:
            return _stopped(received[0])
        return _internal_error(e)
    return EXIT_OK


def _stopped(signum: int, written: Path | None = None) -> int:
    """128 + ``signum``, saying what the stop left: the output written, or nothing."""
    name = signal.Signals(signum).name
    if written is not None:
        click.echo(f"stopped by {name} after the output was written: {written}", err=True)
    elif signum == signal.SIGINT:
        click.echo("interrupted", err=True)
    else:
        click.echo(f"stopped by {name}: nothing was written", err=True)
    return 128 + signum


def _internal_error(e: Exception) -> int:
    if os.environ.get("AIRE_EXPORT_DEBUG"):
        traceback.print_exc()
    click.echo(
        f"internal error: {e.__class__.__name__}: {e} (a bug in aire-export; rerun with "
        "AIRE_EXPORT_DEBUG=1 for the traceback and please report it)",
        err=True,
    )
    return EXIT_INTERNAL


def console_main() -> None:
    code = main()
    for s in STOP_SIGNALS:  # the job is over: exit with its code, whatever comes while the
        signal.signal(s, signal.SIG_IGN)  # interpreter shuts down (~0.4 s)
    sys.exit(code)


__all__ = ["cli", "console_main", "main"]
