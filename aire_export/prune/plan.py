"""The pruning plan: what was kept per layer, why, and what it costs (``plan.json``, DESIGN §8).

Schema (other tools and CI read it; extra keys beyond DESIGN §8 are marked +)::

    {"format"+: "aire-export-plan/1", "method", "ratio_requested", "ratio_achieved",
     "threshold", "eps", "score_compat"+, "seed"+, "arch"+, "target_units"+,
     "states_before"+, "states_after"+, "drop_empty_blocks"+, "balance_channels"+, "warnings"+: [str],
     "unit"+: "state" | "channel",
     "layers": [{"index", "name"+, "states_before", "states_after", "units_before"+,
                 "kept": [unit indices, input order], "energies": [per unit], "scores": [per unit],
                 "unstable"+: [unit indices with |λ̄| ≥ 1], "dropped"+, "block_removed"+,
                 "size_before"+, "physical_size"+,
                 "certificate": {"bound", "measured_hinf", "h2", "removed_states"+, "rho"+,
                                 "omega_peak"+} or null,
                 "calib_distortion"+: ‖y_removed‖/‖y‖ on --calib (selective layers) or null}]}

Selective layers (Mamba) have no LTI certificate (DESIGN §3.5): their plan records the
measured relative change of the layer's scan output on the calibration data instead.

With ``unit = "channel"`` (S4oP's operators) a unit is one active channel of the layer (its
position among the active channels before the prune) and ``states_*`` still count states.
Otherwise units are states, except for S4D with a shared A, where a unit is one mode across all channels
(``kept`` then lists modes n). ``states_*`` count stored states of the modal view (S5: P, a
conjugate pair counting once; S4D: channels × modes). ``physical_size`` is the layer's state
size in the pruned model's config (S4D: modes per channel, which can exceed the live count
when channels keep different numbers; see ``S4DKernel.shrunk_parameters``).
Non-finite numbers (the infinite energy of an always-kept unstable mode) are written as null.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aire_export.errors import InputError
from aire_export.files import write_atomically
from aire_export.json_values import finite_list, finite_or_none, floats_or_inf
from aire_export.prune.certificate import Certificate

PLAN_FORMAT = "aire-export-plan/1"


@dataclass
class LayerPlan:
    index: int
    name: str
    states_before: int
    states_after: int  # live states kept
    kept: np.ndarray  # unit indices kept, ascending (the input's order)
    energies: np.ndarray  # per unit
    scores: np.ndarray  # per unit
    certificate: Certificate | None
    dropped: bool  # nothing kept: the layer's core is the feedthrough D·u
    physical_size: int  # state size of this layer in the pruned model (0 if dropped)
    size_before: int = 0  # state size in the input model's config
    units_before: int = 0
    unstable: list[int] = field(default_factory=list)
    block_removed: bool = False  # drop_empty_blocks removed the whole residual block
    calib_distortion: float | None = None  # selective layers: measured on the calibration data

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "states_before": self.states_before,
            "states_after": self.states_after,
            "units_before": self.units_before,
            "kept": [int(k) for k in self.kept],
            "energies": finite_list(self.energies),
            "scores": finite_list(self.scores),
            "unstable": [int(u) for u in self.unstable],
            "dropped": self.dropped,
            "block_removed": self.block_removed,
            "size_before": self.size_before,
            "physical_size": self.physical_size,
            "certificate": None if self.certificate is None else self.certificate.to_json(),
            "calib_distortion": finite_or_none(self.calib_distortion),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LayerPlan:
        cert = data.get("certificate")
        return cls(
            index=int(data["index"]),
            name=str(data.get("name", "")),
            states_before=int(data["states_before"]),
            states_after=int(data["states_after"]),
            kept=np.asarray(data["kept"], dtype=np.int64),
            energies=floats_or_inf(data.get("energies", [])),
            scores=floats_or_inf(data.get("scores", [])),
            certificate=None if cert is None else Certificate.from_json(cert),
            dropped=bool(data.get("dropped", int(data["states_after"]) == 0)),
            physical_size=int(data.get("physical_size", data["states_after"])),
            size_before=int(data.get("size_before", 0)),
            units_before=int(data.get("units_before", len(data.get("energies", [])))),
            unstable=[int(u) for u in data.get("unstable", [])],
            block_removed=bool(data.get("block_removed", False)),
            calib_distortion=data.get("calib_distortion"),
        )


@dataclass
class PrunePlan:
    method: str
    ratio_requested: float | None
    ratio_achieved: float
    threshold: float | None  # τ (None for per-layer uniform selection)
    eps: float
    score_compat: str
    layers: list[LayerPlan]
    seed: int = 0
    arch: str = ""
    target_units: int | None = None  # K of Algorithm 1 (None in threshold mode)
    drop_empty_blocks: bool = False
    balance_channels: bool = False
    warnings: list[str] = field(default_factory=list)
    unit: str = "state"  # or "channel": kept and scores are per active channel (S4oP)

    @property
    def states_before(self) -> int:
        return sum(layer.states_before for layer in self.layers)

    @property
    def states_after(self) -> int:
        return sum(layer.states_after for layer in self.layers)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "method": self.method,
            "ratio_requested": self.ratio_requested,
            "ratio_achieved": self.ratio_achieved,
            "threshold": finite_or_none(self.threshold),
            "eps": self.eps,
            "score_compat": self.score_compat,
            "seed": self.seed,
            "arch": self.arch,
            "target_units": self.target_units,
            "states_before": self.states_before,
            "states_after": self.states_after,
            "drop_empty_blocks": self.drop_empty_blocks,
            "balance_channels": self.balance_channels,
            "unit": self.unit,
            "warnings": list(self.warnings),
            "layers": [layer.to_json() for layer in self.layers],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PrunePlan:
        if not isinstance(data, dict) or "layers" not in data or "method" not in data:
            raise InputError("not a pruning plan: expected the plan.json written by `prune`")
        ratio = data.get("ratio_requested")
        threshold = data.get("threshold")
        target = data.get("target_units")
        return cls(
            method=str(data["method"]),
            ratio_requested=None if ratio is None else float(ratio),
            ratio_achieved=float(data["ratio_achieved"]),
            threshold=None if threshold is None else float(threshold),
            eps=float(data.get("eps", 0.0)),
            score_compat=str(data.get("score_compat", "default")),
            layers=[LayerPlan.from_json(layer) for layer in data["layers"]],
            seed=int(data.get("seed", 0)),
            arch=str(data.get("arch", "")),
            target_units=None if target is None else int(target),
            drop_empty_blocks=bool(data.get("drop_empty_blocks", False)),
            balance_channels=bool(data.get("balance_channels", False)),
            warnings=[str(w) for w in data.get("warnings", [])],
            unit=str(data.get("unit", "state")),
        )

    def summary(self) -> dict[str, Any]:
        """The plan in a few keys (what the edge bundle's manifest records)."""
        data = self.to_json()
        return {
            **{k: data[k] for k in ("method", "ratio_requested", "ratio_achieved", "threshold")},
            "eps": self.eps,
            "kept_per_layer": [layer.states_after for layer in self.layers],
        }

    def dumps(self) -> str:
        """The plan as JSON text (strict: no NaN or inf)."""
        return json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``plan.json`` atomically (temporary file, then rename)."""
        path = Path(path)
        text = self.dumps().encode()
        write_atomically(path, lambda f: f.write(text))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> PrunePlan:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"no such file: {path}")
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{path} is not JSON ({e})") from None
