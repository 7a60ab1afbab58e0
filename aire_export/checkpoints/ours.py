"""Our checkpoint format: ``{"format": "aire-export/1", "arch", "config", "state_dict", "meta"}``.

Always read with ``torch.load(weights_only=True)``: a checkpoint can hold tensors and plain
containers, never objects whose unpickling could run code. Writes go to a temporary file that
is renamed when complete, so a failed save leaves nothing half-written.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from aire_export.errors import CheckpointError, InputError, UnsafeCheckpointError
from aire_export.files import write_atomically
from aire_export.models import SSMNetwork, family_named

FORMAT = "aire-export/1"


def save(model: SSMNetwork, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` in our format to ``path`` atomically; returns the path."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "arch": model.arch,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": {**model.meta, **(meta or {})},
    }
    write_atomically(path, lambda f: torch.save(payload, f))
    return path


def read_payload(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` with errors a user can act on.

    Whatever torch raises on a file it cannot read (garbage makes it raise IndexError, KeyError,
    struct.error, ... as well as UnpicklingError) becomes a :class:`CheckpointError`; only a file
    that really is a pickle naming a global outside torch's weights-only allowlist is called
    unsafe (:class:`UnsafeCheckpointError`). torch's own warnings are silenced: the user sees our
    one line.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give the checkpoint file (e.g. {path}/model.pt)")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not BaseException: KeyboardInterrupt and SystemExit propagate
        failure = e
    form = _form(head)
    refused = _refused_global(path, form, failure)
    if refused is not None:
        raise UnsafeCheckpointError(
            f"refused {path}: it contains pickled Python objects that could run code when "
            f"loaded ({refused}). Re-save the weights with aire_export.save() from a trusted session"
        )
    raise CheckpointError(f"{path} is not a readable checkpoint ({_detail(form, head, failure)})")


# ---- why torch.load failed --------------------------------------------------------------------

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's (default) zip format
#: how torch's weights-only unpickler words a refused global (torch/_weights_only_unpickler.py)
_REFUSED = re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module \S+ is blocked)")
#: a legacy torch.save file is four pickles (magic number, protocol, sys info, the object)
_LEGACY_PICKLES = 4


def _form(head: bytes) -> str:
    """``zip`` (torch.save), ``pickle`` (PROTO opcode and protocol: legacy torch.save or
    pickle.dump) or ``other``."""
    if head == _ZIP_MAGIC:
        return "zip"
    if len(head) >= 2 and head[0] == pickle.PROTO[0] and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL:
        return "pickle"
    return "other"


def _detail(form: str, head: bytes, failure: Exception) -> str:
    message = str(failure)
    if form == "zip" and "TorchScript" in message:
        return "a TorchScript archive, not saved weights"
    frame = f"Unsupported operand {pickle.FRAME[0]}"  # protocol 4+ frames its opcodes
    if isinstance(failure, pickle.UnpicklingError) and frame in message and form != "other":
        if form == "zip" or head[1] >= 4:
            return (
                "saved with pickle protocol 4 or later, which weights-only loading cannot read: "
                "re-save it with torch.save's default protocol"
            )
    return "not a PyTorch checkpoint" if form == "other" else "truncated or corrupted"


def _is_dotted_name(name: str) -> bool:
    return all(part.isidentifier() for part in name.split("."))


def _refused_global(path: Path, form: str, failure: Exception) -> str | None:
    """The global (module.name) that made torch refuse ``path``, if it really is a pickle naming
    one; None for every other failure (random bytes, text, truncation)."""
    if not isinstance(failure, pickle.UnpicklingError):
        return None
    match = _REFUSED.search(str(failure))
    if match and form != "other" and _is_dotted_name(match[1]):
        return match[1]
    # torch cannot say: a protocol 4+ pickle (FRAME opcodes it does not read) or protocol 0/1
    try:
        if form == "zip":
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "data.pkl"]
                if len(names) != 1:
                    return None
                with archive.open(names[0]) as f:
                    return _first_forbidden_global(f, pickles=1)
        with open(path, "rb") as f:
            return _first_forbidden_global(f, pickles=_LEGACY_PICKLES)
    except Exception:  # a damaged archive: whatever zipfile raises, torch already refused it
        return None


class _Forbidden(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _StandIn:
    """What an allowed global or a storage becomes in the scan: takes any call, state or item."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _StandIn()

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, item):
        pass

    def extend(self, items):
        pass

    def add(self, item):
        pass


def _allowed_globals() -> set[str]:
    """The globals torch's weights-only unpickler accepts (empty if its private API moved)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
        for entry in torch.serialization.get_safe_globals():
            obj = entry[0] if isinstance(entry, tuple) else entry
            allowed.add(f"{obj.__module__}.{obj.__qualname__}")
        return allowed
    except Exception:
        return set()


class _GlobalFinder(pickle.Unpickler):
    """Unpickles without importing anything (the "restricting globals" recipe of the pickle
    docs): an allowed global or a storage becomes a :class:`_StandIn`, any other global stops
    the scan with :class:`_Forbidden`. Nothing the file names is ever imported or called."""

    def __init__(self, file, allowed: set[str]):
        super().__init__(file)
        self.allowed = allowed

    def find_class(self, module: str, name: str):
        if not (_is_dotted_name(module) and _is_dotted_name(name)):
            raise pickle.UnpicklingError("not a global name")  # random bytes, not a pickle
        full = f"{module}.{name}"
        if full in self.allowed:
            return _StandIn
        raise _Forbidden(full)

    def persistent_load(self, pid):
        return _StandIn()


def _first_forbidden_global(f, pickles: int) -> str | None:
    """The first global outside torch's allowlist named by the first ``pickles`` pickles in
    ``f``; None if they name none or are not well-formed pickles (garbage)."""
    allowed = _allowed_globals()
    for _ in range(pickles):
        try:
            _GlobalFinder(f, allowed).load()
        except _Forbidden as e:
            return e.name
        except Exception:
            return None
    return None


def load(path: str | os.PathLike) -> SSMNetwork:
    """Load a model saved by :func:`save`, in eval mode, float32."""
    payload = read_payload(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        if isinstance(payload, dict) and all(isinstance(v, torch.Tensor) for v in payload.values()):
            raise CheckpointError(
                f"{path} is a bare state_dict without a config: import it with "
                "`aire-export import s4d-state-spaces ...`, or save with aire_export.save()"
            )
        raise CheckpointError(
            f"{path} is not an aire-export checkpoint (no 'format': '{FORMAT}'); import foreign "
            "checkpoints with `aire-export import`, or save with aire_export.save()"
        )
    for key in ("arch", "config", "state_dict"):
        if key not in payload:
            raise CheckpointError(f"{path} has no {key!r}: save it with aire_export.save()")
    try:
        cls = family_named(payload["arch"]).model_class
        model = cls(cls.config_class.from_dict(payload["config"]))
    except InputError as e:
        raise CheckpointError(f"{path}: {e}") from None
    load_weights(model, payload["state_dict"], source=str(path))
    model.meta = dict(payload.get("meta") or {})
    return model.eval()


def load_weights(model: SSMNetwork, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load weights strictly, with one clear message for missing, extra, misshapen or non-finite ones."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    extra = sorted(set(state_dict) - set(own))
    misshapen = [
        f"{k} {tuple(state_dict[k].shape)} (config wants {tuple(own[k].shape)})"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append("missing " + ", ".join(missing[:5]) + (" …" if len(missing) > 5 else ""))
    if extra:
        problems.append("unexpected " + ", ".join(extra[:5]) + (" …" if len(extra) > 5 else ""))
    if misshapen:
        problems.append(
            "wrong shape " + ", ".join(misshapen[:5]) + (" …" if len(misshapen) > 5 else "")
        )
    if problems:
        raise CheckpointError(
            f"{source}: weights do not match the stated config: " + "; ".join(problems)
        )
    bad = [
        k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()
    ]
    if bad:
        raise CheckpointError(
            f"{source}: non-finite values (NaN or inf) in {', '.join(bad[:5])}; the model diverged or "
            "the file is damaged"
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()})
