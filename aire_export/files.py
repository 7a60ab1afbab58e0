"""Outputs that are never half-written: atomic files, staged folders renamed into place.

    write_atomically(path, write)     a temporary file beside ``path``, renamed when complete
    staged_folder(out)                a hidden folder beside ``out`` to build the outputs in;
                                      ``commit(stage, out)`` renames it into place, replacing an
                                      earlier aire-export output; on failure it is removed
    check_destination(out)            refuse a file, a missing parent or someone else's folder
    file_sha256(path)                 the digest a report records for its input

Every error is an :class:`OutputError` (exit code 5) naming the path.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from aire_export.errors import OutputError

#: files whose presence marks a folder as an aire-export output (safe to replace)
OUTPUT_MARKERS = ("report.json", "plan.json")


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place."""
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise OutputError(f"cannot write {path}: folder {directory} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_destination(out: Path) -> None:
    """OutputError unless ``out`` can receive an aire-export output folder."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is a file: choose another --out")
    if (
        out.is_dir()
        and any(out.iterdir())
        and not any((out / marker).exists() for marker in OUTPUT_MARKERS)
    ):
        raise OutputError(
            f"{out} exists and is not an aire-export output folder: choose another --out"
        )
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"cannot write {out}: folder {parent} does not exist")


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A hidden folder beside ``out`` to build the outputs in; removed if the block fails
    (the previous output, or nothing, stays). The caller renames it with :func:`commit`."""
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise OutputError(f"cannot write {out}: {e.strerror}") from None
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def commit(stage: Path, out: Path) -> None:
    """Move the finished staging folder into place, replacing an earlier aire-export output."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{stage.name}")
        out.rename(old)
    stage.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
