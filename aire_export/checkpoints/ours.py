"""Our checkpoint format: ``{"format": "aire-export/1", "arch", "config", "state_dict", "meta"}``.

Always read with ``torch.load(weights_only=True)``: a checkpoint can hold tensors and plain
containers, never objects whose unpickling could run code. Writes go to a temporary file that
is renamed when complete, so a failed save leaves nothing half-written.
"""

from __future__ import annotations

import os
import pickle
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
    """``torch.load(path, weights_only=True)`` with errors a user can act on."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give the checkpoint file (e.g. {path}/model.pt)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):  # the safe unpickler refused a global or opcode
            raise UnsafeCheckpointError(
                f"refused {path}: it contains pickled Python objects that could run code when "
                "loaded. Re-save the weights with aire_export.save() from a trusted session"
            ) from None
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({e.__class__.__name__})"
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile, OSError):
        with open(path, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"  # torch.save writes a zip archive
        detail = "truncated or corrupted" if is_zip else "not a PyTorch checkpoint"
        raise CheckpointError(f"{path} is not a readable checkpoint ({detail})") from None


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
