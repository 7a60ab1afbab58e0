"""SSM architectures. Each family is one adapter (family.py) over its model (s5.py, s4d.py,
mamba.py).

The rest of the package looks families up here, by a model (``family_of``) or by the ``arch``
name of a checkpoint (``family_named``), and never branches on architecture names.
"""

from __future__ import annotations

from aire_export.models import mamba, s4d, s5
from aire_export.models.blocks import ModelConfig, NetworkConfig, SSMBlock, SSMNetwork, StreamState
from aire_export.models.family import (
    FAMILIES,
    ClassifierFamily,
    Family,
    Importer,
    UnitPolicy,
    export_ir,
    family_named,
    family_of,
    importers,
    modal_systems,
    parameter_count,
    register_family,
    unregister_family,
)
from aire_export.models.mamba import MambaConfig, MambaLM
from aire_export.models.modal import ModalSystem, ScoringView, SelectiveView
from aire_export.models.s4d import S4DConfig, S4DModel
from aire_export.models.s5 import S5Config, S5Model

register_family(s5.FAMILY)
register_family(s4d.FAMILY)
register_family(mamba.FAMILY)


__all__ = [
    "FAMILIES",
    "ClassifierFamily",
    "Family",
    "Importer",
    "MambaConfig",
    "MambaLM",
    "ModalSystem",
    "ModelConfig",
    "NetworkConfig",
    "S4DConfig",
    "S4DModel",
    "S5Config",
    "S5Model",
    "SSMBlock",
    "SSMNetwork",
    "ScoringView",
    "SelectiveView",
    "StreamState",
    "UnitPolicy",
    "export_ir",
    "family_named",
    "family_of",
    "importers",
    "modal_systems",
    "parameter_count",
    "register_family",
    "unregister_family",
]
