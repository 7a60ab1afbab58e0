"""SSM architectures. Each family is one adapter: its config, its blocks, its modal view.

The rest of the package looks architectures up here by name and never branches on them.
"""

from __future__ import annotations

from aire_export.errors import InputError
from aire_export.models.blocks import NetworkConfig, SSMNetwork, StreamState
from aire_export.models.modal import ModalSystem
from aire_export.models.s4d import S4DConfig, S4DModel
from aire_export.models.s5 import S5Config, S5Model

ARCHITECTURES: dict[str, type[SSMNetwork]] = {
    S5Model.arch: S5Model,
    S4DModel.arch: S4DModel,
}


def architecture(name: str) -> type[SSMNetwork]:
    """The model class of an architecture name ("s5", "s4d")."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise InputError(
            f"unknown architecture {name!r}; supported: {', '.join(sorted(ARCHITECTURES))}"
        ) from None


def build_model(arch: str, config: dict | NetworkConfig) -> SSMNetwork:
    """A freshly constructed (uninitialized) model of ``arch`` from a config or its dict."""
    cls = architecture(arch)
    if isinstance(config, dict):
        config = cls.config_class.from_dict(config)
    return cls(config)


__all__ = [
    "ARCHITECTURES",
    "ModalSystem",
    "NetworkConfig",
    "S4DConfig",
    "S4DModel",
    "S5Config",
    "S5Model",
    "SSMNetwork",
    "StreamState",
    "architecture",
    "build_model",
]
