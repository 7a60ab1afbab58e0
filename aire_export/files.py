"""Outputs that are never half-written and never lose a user's file.

    write_atomically(path, write)     a temporary file beside ``path``, renamed when complete
    check_destination(out, inputs)    a folder output (run, sweep) may go to ``out``: it does
                                      not exist, is empty, or holds only files aire-export
                                      wrote there (its manifest says so); it holds no input;
                                      returns the folder to write (absolute, a symlink
                                      followed), after a trial stage was made and removed
    staged_folder(out)                a hidden folder beside ``out`` to build the outputs in,
                                      removed if the block fails (also on SIGTERM/SIGHUP, which
                                      the CLI turns into an exception); stages and replaced
                                      folders that a killed run left behind are removed first
    commit(stage, out)                the manifest written, the stage renamed into place, with
                                      the replaced folder's permissions (stop signals held
                                      meanwhile)
    after_commit(out)                 a stop signal while the results of ``out`` print says
                                      that the output was written
    clear_folder(out)                 empty a folder that is ours (or forced), keeping it

A folder that cannot be renamed (a mount point such as a container volume, the current
folder or one above it, a folder in a parent the user may not write) is filled in place
instead: the stage is a hidden folder inside it and the commit moves its entries over the old
ones, then removes the old entries it did not replace.
    check_file_outputs(paths, inputs) files written into a folder (export, prune): none is an
                                      input, none replaces a file aire-export did not write or
                                      one a whole job's report describes
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
import re
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from aire_export.errors import STOP_SIGNALS, OutputError, Terminated

MANIFEST = "aire-files.json"
REPORT_NAME = "report.json"  # a folder whose manifest lists it is a whole job's output
MANIFEST_FORMAT = "aire-export-files/1"
#: write faults that are the environment's, not ours: exit 5 with their reason
WRITE_ERRNOS = frozenset(
    {
        errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG,
        errno.ENAMETOOLONG, errno.ENOENT, errno.ENOTDIR, errno.EBUSY, errno.EXDEV, errno.EIO,
    }
)  # fmt: skip
#: why a folder's rename can fail where its contents can still be replaced
_UNMOVABLE = frozenset({errno.EBUSY, errno.EXDEV, errno.EPERM, errno.EACCES})
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
) -> Path:
    """The folder to write for ``--out`` ``out`` (absolute; a symlink to a folder followed, so
    the outputs go where it points); OutputError unless it can receive a whole output folder
    (see the module doc)."""
    out = _resolved(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is a file: choose another --out")
    _refuse_inputs(out, inputs, "--out")
    cwd = Path.cwd().resolve()
    if out.resolve() in cwd.parents:
        raise OutputError(
            f"--out {out} holds the current folder {cwd}: choose another --out (aire-export "
            "never replaces the folder you are in)"
        )
    if not out.parent.is_dir():
        raise OutputError(f"cannot write {out}: folder {out.parent} does not exist")
    where = _stage_place(out)
    if not os.access(where, os.W_OK):
        raise OutputError(f"cannot write {out}: folder {where} is not writable")
    remove_stale(out)
    busy = [pid for _path, _kind, pid in _scratch_entries(out) if pid != os.getpid()]
    if busy:
        raise OutputError(
            f"another aire-export (process {busy[0]}) is writing {out}: wait for it to finish, "
            f"or choose another --out (if no such job runs, remove the hidden .{out.name}.* "
            "folders it left)"
        )
    _try_stage(out)
    if not force and out.is_dir() and any(out.iterdir()):
        _refuse_foreign(out)
    return out


def _resolved(out: Path) -> Path:
    """``out`` absolute, a symlink followed; OutputError for a path no runtime can open."""
    out = Path(os.path.abspath(out))
    try:
        str(out).encode()
    except UnicodeEncodeError:  # bytes that are no UTF-8: onnxruntime and others cannot open it
        raise OutputError(
            f"{str(out)!r} is not a valid UTF-8 path (some runtimes cannot open it): choose "
            "another --out"
        ) from None
    if not out.is_symlink():
        return out
    try:
        return out.resolve(strict=True)
    except (OSError, RuntimeError):  # a loop, or a link to nothing
        raise OutputError(
            f"{out} is a symlink that leads to no folder: fix it or choose another --out"
        ) from None


def _try_stage(out: Path) -> None:
    """Make and remove the stage :func:`staged_folder` will make (a name the file system
    takes, a folder it lets us create), so the job fails before its work, not after."""
    try:
        os.rmdir(_make_stage(out))
    except OSError as e:
        raise write_error(out, e) from None


def _refuse_foreign(out: Path) -> None:
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
        if not path.exists() or force:
            continue
        owned = owned_files(folder) or set()
        if path.name not in owned:
            raise OutputError(
                f"{path} exists and was not written by aire-export: choose another output, or "
                "pass --force to replace it"
            )
        if REPORT_NAME in owned:
            raise OutputError(
                f"{folder} is the output of a whole job and its {REPORT_NAME} describes "
                f"{path.name}: replacing it alone would leave the report wrong; write elsewhere, "
                f"re-run the job with -o {folder}, or pass --force"
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


def _in_place(out: Path) -> bool:
    """Whether ``out`` is filled in place rather than replaced by a rename (module doc)."""
    if not out.is_dir() or out.is_symlink():
        return False
    return _mount_point(out) or _inside(Path.cwd(), out) or not os.access(out.parent, os.W_OK)


def _mount_point(folder: Path) -> bool:
    """Whether ``folder`` is a mount point, bind mounts included (which ``os.path.ismount``
    misses on Linux when both sides are one file system: /proc/self/mountinfo lists them)."""
    if os.path.ismount(folder):
        return True
    try:
        table = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return False
    fields = (line.split() for line in table.splitlines())
    points = {_octal_unescaped(f[4]) for f in fields if len(f) > 4}  # field 5: the mount point
    return str(folder.resolve()) in points


def _octal_unescaped(field: str) -> str:
    """mountinfo's escapes (a space is \\040) decoded."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def _remove(path: Path) -> None:
    """Remove a file, a symlink or a folder tree (a symlink itself, never what it points to)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def remove_stale(out: Path) -> list[Path]:
    """Remove the stages and replaced folders of ``out`` left by runs that were killed (their
    process is gone), beside it and inside it (in-place stages); returns what was removed."""
    removed = []
    for path, _kind, pid in _scratch_entries(out):
        if pid != os.getpid() and not _alive(pid):
            _remove(path)
            removed.append(path)
    return removed


def _scratch_entries(out: Path) -> Iterator[tuple[Path, str, int]]:
    """(path, kind, process id) of every stage and replaced folder of ``out``, beside it and
    inside it."""
    parent = out.parent if str(out.parent) else Path(".")
    places = [parent, out] if out.is_dir() and not out.is_symlink() else [parent]
    for place in places:
        for kind in (_STAGE, _OLD):
            for path in place.glob(f".{out.name}.{kind}-*-*"):
                try:
                    pid = int(path.name[len(f".{out.name}.{kind}-") :].split("-", 1)[0])
                except ValueError:
                    continue
                yield path, kind, pid


def _stage_place(out: Path) -> Path:
    """Where ``out``'s stage goes: inside it when it is filled in place, else beside it."""
    return out if _in_place(out) else out.parent


def _make_stage(out: Path) -> Path:
    stage = Path(
        tempfile.mkdtemp(prefix=_scratch(out, _STAGE), suffix=".tmp", dir=_stage_place(out))
    )
    os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
    return stage


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A hidden folder beside ``out`` (inside it when it is filled in place) to build the
    outputs in; removed if the block fails (the previous output, or nothing, stays). The
    caller moves it into place with :func:`commit`."""
    remove_stale(out)
    try:
        stage = _make_stage(out)
    except OSError as e:
        raise write_error(out, e) from None
    try:
        yield stage
    except OSError as e:
        shutil.rmtree(stage, ignore_errors=True)
        raise write_error(out, e) from None
    except OutputError as e:  # named by the file it was writing: name the output instead
        shutil.rmtree(stage, ignore_errors=True)
        raise OutputError(str(e).replace(str(stage), str(out))) from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def commit(stage: Path, out: Path) -> None:
    """Write the stage's manifest and move it into place, replacing an earlier output. A stop
    signal (Ctrl-C, SIGTERM, SIGHUP) that comes meanwhile waits until the output is whole,
    then ends the job as :class:`Terminated` with ``written`` = ``out``."""
    _write_manifest(stage, _tree(stage))
    with _signals_deferred() as pending:
        try:
            if stage.parent == out:
                _fill_in_place(stage, out)
            else:
                _swap(stage, out)
        except OSError as e:
            if stage.parent == out or e.errno not in _UNMOVABLE or not out.is_dir():
                raise write_error(out, e) from None
            try:  # a folder we did not see could not be renamed: fill it from beside
                _fill_in_place(stage, out)
            except OSError as e:
                raise write_error(out, e) from None
    if pending:
        raise Terminated(pending[0], written=out)


@contextmanager
def _signals_deferred() -> Iterator[list[int]]:
    """The stop signals received inside the block, recorded instead of acted on (main
    thread only: elsewhere Python delivers no signals)."""
    pending: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return
    previous = {s: signal.signal(s, lambda n, _frame: pending.append(n)) for s in STOP_SIGNALS}
    try:
        yield pending
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _swap(stage: Path, out: Path) -> None:
    """Rename the stage to ``out``, the old folder (its permissions kept) renamed away first."""
    old = None
    if out.exists():
        kept = out.stat()
        os.chmod(stage, stat.S_IMODE(kept.st_mode))
        with contextlib.suppress(OSError):  # the owner needs privileges; the group often not
            os.chown(stage, kept.st_uid, kept.st_gid)
        old = out.with_name(f"{_scratch(out, _OLD)}{stage.name.split('-')[-1]}")
        out.rename(old)
    try:
        stage.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        _remove(old)


def _fill_in_place(stage: Path, out: Path) -> None:
    """Move the stage's entries into ``out`` over the old ones and remove the old entries the
    new output does not have (never the folder itself). Not atomic, so ordered for a run killed
    midway: first a manifest listing old and new files (the next run may replace them all),
    then the old report.json removed, the new entries moved, the leftovers removed, and the
    new report.json and manifest last: a half-filled folder has no report to vouch for it."""
    new = {p.name for p in stage.iterdir()}
    _write_manifest(out, (owned_files(out) or set()) | _tree(stage))
    (out / REPORT_NAME).unlink(missing_ok=True)
    seals = [name for name in (REPORT_NAME, MANIFEST) if name in new]
    for name in sorted(new - set(seals)):
        _move_entry(stage / name, out / name)
    for entry in out.iterdir():
        if entry.name not in new and entry != stage:
            _remove(entry)
    for name in seals:
        _move_entry(stage / name, out / name)
    stage.rmdir()


def _move_entry(source: Path, target: Path) -> None:
    """``source`` moved to ``target``, replacing a file or a whole folder there."""
    if target.is_dir() and not target.is_symlink():  # a folder cannot replace a folder
        old = target.with_name(f"{_scratch(target.parent, _OLD)}{target.name}")
        target.rename(old)
        _move(source, target)
        _remove(old)
    else:
        _move(source, target)


@contextmanager
def after_commit(out: Path) -> Iterator[None]:
    """A stop signal inside the block (printing the results of a committed ``out``) ends the
    job as :class:`Terminated` with ``written`` = ``out``: the output is complete and stays."""
    try:
        yield
    except KeyboardInterrupt:
        raise Terminated(signal.SIGINT, written=out) from None
    except Terminated as e:
        e.written = out
        raise


def _move(source: Path, target: Path) -> None:
    """Rename, or copy and remove where the two are on different mounts."""
    try:
        os.replace(source, target)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        shutil.move(source, target)


def clear_folder(out: Path) -> None:
    """Remove everything inside ``out`` (ours by :func:`check_destination`, or forced),
    keeping the folder (it may be a mount point)."""
    for entry in out.iterdir():
        _remove(entry)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
