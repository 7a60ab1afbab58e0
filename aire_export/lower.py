"""Stage 6, lower: a model → its family's export IR → ONNX graphs (``ax.export``, DESIGN §8).

``models/`` describes a model as IR and ``graphs/`` lowers IR; neither imports the other, so
the step that joins them lives here.
"""

from __future__ import annotations

import os

from aire_export.errors import InputError
from aire_export.graphs.export import ExportResult, export_network
from aire_export.graphs.step import frame_problem
from aire_export.models import SSMNetwork, family_of


def export(model: SSMNetwork, out_dir: str | os.PathLike, **options) -> ExportResult:
    """Write ``out_dir/model.onnx`` (and ``model.step.onnx``) for ``model``: its family's IR
    lowered with the options of :func:`aire_export.graphs.export.export_network` (``target``,
    ``scan``, ``precision``, ``opset``, ``step``, ``frame``, ``lengths_input``,
    ``max_length``); ``auto`` tries the family's lowering rules before the generic table."""
    family = family_of(model)
    net = family.export_ir(model)  # float64; BatchNorm folds its running statistics
    result = export_network(net, out_dir, rules=family.lowering_rules, **options)
    if result.step is not None:
        _check_state_layout(result, family.state_layout(model), family.name)
    return result


def check_frame(model: SSMNetwork, frame: int) -> None:
    """InputError unless ``model`` can have a step graph of ``frame`` steps per call (checked
    before a job spends time pruning)."""
    problem = frame_problem(family_of(model).export_ir(model), frame)
    if problem is not None:
        raise InputError(problem)


def _check_state_layout(result: ExportResult, layout: list, family: str) -> None:
    """The step graph's state inputs must be the model's own streaming states (what a user
    feeds back): a family whose IR and model disagree is a bug, caught here."""
    graph = [
        (spec.name, tuple(spec.shape[1:]))
        for spec in result.step.inputs
        if spec.name.startswith("state_")
    ]
    model = list(layout)
    if graph != model:
        raise RuntimeError(
            f"family {family!r}: the step graph's states {graph} differ from the model's {model}"
        )
