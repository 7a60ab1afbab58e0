"""Checkpoints: our format (``ours``) and importers of foreign checkpoints into it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aire_export.checkpoints.ours import FORMAT, load, save, write_atomically
from aire_export.checkpoints.s4d_state_spaces import import_s4d_state_spaces
from aire_export.checkpoints.s5_flax import import_s5_flax
from aire_export.errors import InputError
from aire_export.models import SSMNetwork


def _options(config: str | os.PathLike | dict | None) -> dict[str, Any]:
    if config is None or isinstance(config, dict):
        return dict(config or {})
    path = Path(config)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not JSON ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object")
    return data


def _import_s5_flax(path: str | os.PathLike, config: Any) -> SSMNetwork:
    if config is None:
        raise InputError(
            "s5-flax needs the run's arguments: pass --config run_args.json (the run_train.py "
            "flags as a JSON object)"
        )
    return import_s5_flax(path, _options(config))


IMPORTERS: dict[str, Callable[[str | os.PathLike, Any], SSMNetwork]] = {
    "s5-flax": _import_s5_flax,
    "s4d-state-spaces": lambda path, config: import_s4d_state_spaces(path, _options(config)),
}


def import_checkpoint(
    kind: str, path: str | os.PathLike, config: str | os.PathLike | dict | None = None
) -> SSMNetwork:
    """Import a foreign checkpoint of ``kind`` (see :data:`IMPORTERS`) as one of our models."""
    if kind not in IMPORTERS:
        raise InputError(f"unknown checkpoint kind {kind!r}; supported: {', '.join(IMPORTERS)}")
    return IMPORTERS[kind](path, config)


__all__ = ["FORMAT", "IMPORTERS", "import_checkpoint", "load", "save", "write_atomically"]
