"""Outputs that are never half-written and never lose a user's file.

    write_atomically(path, write)     a temporary file beside ``path``, renamed when complete
    check_destination(out, inputs)    a folder output (run, sweep) may go to ``out``: it does
                                      not exist, is empty, or holds only files aire-export
                                      wrote there (its manifest says so); it holds no input
    staged_folder(out)                a hidden folder beside ``out`` to build the outputs in,
                                      removed if the block fails (also on SIGTERM/SIGHUP, which
                                      the CLI turns into an exception); stages and replaced
                                      folders that a killed run left behind are removed first
    commit(stage, out)                the manifest written, the stage renamed into place
    check_file_outputs(paths, inputs) files written into a folder (export, prune): none is an
                                      input, none replaces a file aire-export did not write
    record_outputs(folder, names)     add written files to the folder's manifest
    file_sha256(path)                 the digest a report records for its input

The manifest, ``aire-files.json``, lists every file aire-export wrote into a folder. Folders
and files are created with the permissions the umask gives. Every error is an
:class:`OutputError` (exit code 5) naming the path and what to do; ``--force`` (``force=True``)
replaces what is not ours.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from aire_export.errors import OutputError

MANIFEST = "aire-files.json"
MANIFEST_FORMAT = "aire-export-files/1"
#: write faults that are the environment's, not ours: exit 5 with their reason
WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}
)
_STAGE, _OLD = "stage", "old"


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
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_error(path: Path, error: OSError) -> Exception:
    """The OutputError of a write fault of the environment (disk full, permissions), else
    the error itself (a bug)."""
    if error.errno in WRITE_ERRNOS:
        return OutputError(
            f"cannot write {path}: {error.strerror}"
            + (": free some space" if error.errno in (errno.ENOSPC, errno.EDQUOT) else "")
        )
    return error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---- ownership -----------------------------------------------------------------------------------
def owned_files(folder: Path) -> set[str] | None:
    """The files aire-export wrote into ``folder`` (its manifest), None without a manifest."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        return None
    return set(data.get("files", []))


def _tree(folder: Path) -> set[str]:
    """Every file below ``folder``, as paths relative to it."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir()}


def _write_manifest(folder: Path, names: Iterable[str]) -> None:
    names = sorted(set(names) - {MANIFEST})
    text = json.dumps({"format": MANIFEST_FORMAT, "files": names}, indent=1) + "\n"
    write_atomically(folder / MANIFEST, lambda f: f.write(text.encode()))


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _refuse_inputs(where: Path, inputs: Iterable[Path | None], what: str) -> None:
    for path in inputs:
        if path is not None and _inside(Path(path), where):
            raise OutputError(
                f"{what} {where} would replace the input {path}: choose another --out "
                "(aire-export only reads its inputs)"
            )


def check_destination(
    out: Path, inputs: Iterable[Path | None] = (), *, force: bool = False
) -> None:
    """OutputError unless ``out`` can receive a whole output folder (see the module doc)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is a file: choose another --out")
    _refuse_inputs(out, inputs, "--out")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"cannot write {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write {out}: folder {parent} is not writable")
    if force or not out.is_dir() or not any(out.iterdir()):
        return
    owned = owned_files(out)
    if owned is None:
        raise OutputError(
            f"{out} exists and is not an aire-export output folder: choose another --out, or "
            "pass --force to replace it"
        )
    foreign = sorted(_tree(out) - owned - {MANIFEST})
    if foreign:
        listed = ", ".join(foreign[:3]) + (" …" if len(foreign) > 3 else "")
        raise OutputError(
            f"{out} holds files aire-export did not write ({listed}): move them, choose another "
            "--out, or pass --force to replace the folder"
        )


def check_file_outputs(
    paths: Iterable[Path], inputs: Iterable[Path | None] = (), *, force: bool = False
) -> None:
    """OutputError unless every file of ``paths`` may be written (see the module doc)."""
    inputs = [Path(p) for p in inputs if p is not None]
    for path in paths:
        for source in inputs:
            if path.exists() and source.exists() and path.resolve() == source.resolve():
                raise OutputError(
                    f"{path} is an input: choose another output (aire-export only reads inputs)"
                )
        folder = path.parent if str(path.parent) else Path(".")
        if folder.exists() and not os.access(folder, os.W_OK):
            raise OutputError(f"cannot write {path}: folder {folder} is not writable")
        if path.exists() and not force and path.name not in (owned_files(folder) or set()):
            raise OutputError(
                f"{path} exists and was not written by aire-export: choose another output, or "
                "pass --force to replace it"
            )


def record_outputs(folder: Path, names: Iterable[str]) -> None:
    """Add ``names`` (relative to ``folder``) to the folder's manifest."""
    _write_manifest(folder, (owned_files(folder) or set()) | set(names))


# ---- staging ---------------------------------------------------------------------------------------
def _scratch(out: Path, kind: str) -> str:
    """``.NAME.KIND-PID-`` : a hidden sibling of ``out`` owned by this process."""
    return f".{out.name}.{kind}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(out: Path) -> list[Path]:
    """Remove the stages and replaced folders of ``out`` left by runs that were killed (their
    process is gone); returns what was removed."""
    removed = []
    parent = out.parent if str(out.parent) else Path(".")
    for kind in (_STAGE, _OLD):
        for path in parent.glob(f".{out.name}.{kind}-*-*"):
            try:
                pid = int(path.name[len(f".{out.name}.{kind}-") :].split("-", 1)[0])
            except ValueError:
                continue
            if pid != os.getpid() and not _alive(pid):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A hidden folder beside ``out`` to build the outputs in; removed if the block fails
    (the previous output, or nothing, stays). The caller renames it with :func:`commit`."""
    remove_stale(out)
    try:
        stage = Path(tempfile.mkdtemp(prefix=_scratch(out, _STAGE), suffix=".tmp", dir=out.parent))
        os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
    except OSError as e:
        raise write_error(out, e) from None
    try:
        yield stage
    except OSError as e:
        shutil.rmtree(stage, ignore_errors=True)
        raise write_error(out, e) from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def commit(stage: Path, out: Path) -> None:
    """Write the stage's manifest and move it into place, replacing an earlier output."""
    _write_manifest(stage, _tree(stage))
    old = None
    if out.exists():
        old = out.with_name(f"{_scratch(out, _OLD)}{stage.name}")
        out.rename(old)
    stage.rename(out)
    if old is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(old)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
