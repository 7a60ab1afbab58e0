"""Checkpoints: our format (``ours``) and importers of foreign checkpoints into it.

Importers are declared by the families (``Family.importers``): a kind names a module and a
function here, imported only when that kind is used.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

from aire_export.checkpoints.ours import FORMAT, load, save
from aire_export.errors import InputError
from aire_export.models import SSMNetwork, importers


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


def import_checkpoint(
    kind: str, path: str | os.PathLike, config: str | os.PathLike | dict | None = None
) -> SSMNetwork:
    """Import a foreign checkpoint of ``kind`` (a family's importer) as one of our models."""
    known = importers()
    if kind not in known:
        raise InputError(f"unknown checkpoint kind {kind!r}; supported: {', '.join(known)}")
    importer = known[kind]
    if importer.needs_config and config is None:
        raise InputError(f"{kind} needs the run's options: {importer.config_hint}")
    function = getattr(importlib.import_module(importer.module), importer.function)
    return function(path, _options(config))


__all__ = ["FORMAT", "import_checkpoint", "load", "save"]
