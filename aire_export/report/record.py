"""The typed report and its one verdict (DESIGN §5): what ``run`` and ``validate`` print and
write. ``report.json`` is serialized key by key against report/schema.py.

verdict(validation)          exit code and reasons, for run and validate alike:
                             3 a parity gate failed (unless --no-fail-on-parity),
                             6 a runtime refused the graph, 4 a required runtime is missing,
                             0 otherwise
Report                       the verdict, what was pruned and exported, the validation
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from typing import Any

from aire_export.errors import (
    EXIT_ACCURACY,
    EXIT_BUILD,
    EXIT_OK,
    EXIT_PARITY,
    EXIT_RUNTIME_MISSING,
)
from aire_export.graphs.export import ExportResult
from aire_export.prune.plan import PrunePlan
from aire_export.report.schema import SCHEMA, SCHEMA_VERSION
from aire_export.sweep import MaxDropResult
from aire_export.validate.validation import Validation


@dataclass(frozen=True)
class Check:
    """One check of the verdict: what was checked, what it covered, and the outcome.
    ``passed`` None: measured and reported, not gated (pruning distortion, accuracy with the
    gate off)."""

    kind: str  # "lowering fidelity" | "accuracy" | "pruning distortion" | "runtime"
    subject: str
    covered: str
    passed: bool | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "covered": self.covered,
            "passed": self.passed,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Verdict:
    passed: bool
    exit_code: int
    reasons: list[str]
    checks: list[Check] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "exit_code": self.exit_code,
            "reasons": list(self.reasons),
            "checks": [c.to_json() for c in self.checks],
        }


def checks_of(validation: Validation) -> list[Check]:
    """Every check a validation made, in the order a reader wants them."""
    checks = []
    for p in validation.parity:
        worst = max(p.outputs, key=lambda o: o.failing) if p.outputs else None
        checks.append(
            Check(
                "lowering fidelity",
                f"{p.graph} on {p.runner} vs {p.reference}",
                p.coverage,
                p.passed,
                "" if worst is None else worst.verdict(),
            )
        )
    a = validation.accuracy
    if a is not None:
        budget = "no gate" if a.budget_pp is None else f"budget {a.budget_pp:g} pp (--max-drop)"
        checks.append(
            Check(
                "accuracy",
                "pruned vs original (PyTorch)",
                f"{a.samples} labelled sequences of {a.data}",
                a.passed,
                f"{100 * a.original:.2f} % → {100 * a.pruned:.2f} % "
                f"({-a.drop_pp:+.2f} pp), {budget}",
            )
        )
    d = validation.distortion
    if d is not None:
        checks.append(
            Check(
                "pruning distortion",
                "pruned vs original (PyTorch float64)",
                f"{d.samples} parity sequences",
                None,
                f"relative output error {d.normwise_rel:.3g}"
                + ("" if d.top1_agreement is None else f", top-1 agreement {d.top1_agreement:.4f}"),
            )
        )
    for reason in validation.build_failures:
        checks.append(Check("runtime", "build the graph", "the target's runtimes", False, reason))
    for reason in validation.missing:
        checks.append(
            Check("runtime", "a required runtime", "the target's runtimes", False, reason)
        )
    return checks


def verdict(validation: Validation, *, fail_on_parity: bool = True) -> Verdict:
    """The exit code of a validation: parity first, then accuracy, then refused graphs, then
    missing runtimes. Every failed check is listed in ``reasons`` (a parity failure too when
    ``fail_on_parity`` is off and the verdict passes), every check in ``checks``."""
    failed = [
        f"parity failed for {p.graph} on {p.runner}" for p in validation.parity if not p.passed
    ]
    a = validation.accuracy
    unfit = []
    if a is not None and a.passed is False:
        unfit = [
            f"the pruned model is not fit to ship: accuracy dropped {a.drop_pp:.2f} points "
            f"({100 * a.original:.2f} % → {100 * a.pruned:.2f} % on {a.data}), more than the "
            f"{a.budget_pp:g}-point budget (--max-drop PP to allow more, --no-accuracy-gate to "
            "report it only)"
        ]
    if failed and fail_on_parity:
        code = EXIT_PARITY
    elif unfit:
        code = EXIT_ACCURACY
    elif validation.build_failures:
        code = EXIT_BUILD
    elif validation.missing:
        code = EXIT_RUNTIME_MISSING
    else:
        code = EXIT_OK
    reasons = failed + unfit + validation.build_failures + validation.missing
    return Verdict(code == EXIT_OK, code, reasons, checks_of(validation))


FLOAT32_BYTES = 4


@dataclass(frozen=True)
class ModelRecord:
    """The input model and what pruning made of it."""

    path: str
    sha256: str
    arch: str
    states_before: int
    states_after: int  # live states kept
    physical_states_after: int  # stored slots after the shrink (above states_after for padded S4D)
    parameters_before: int
    parameters_after: int

    @property
    def parameter_bytes_before(self) -> int:
        """The parameters as float32, the dtype model.onnx stores its weights in."""
        return FLOAT32_BYTES * self.parameters_before

    @property
    def parameter_bytes_after(self) -> int:
        return FLOAT32_BYTES * self.parameters_after

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "arch": self.arch,
            "states_before": self.states_before,
            "states_after": self.states_after,
            "physical_states_after": self.physical_states_after,
            "parameters_before": self.parameters_before,
            "parameters_after": self.parameters_after,
            "parameter_bytes_before": self.parameter_bytes_before,
            "parameter_bytes_after": self.parameter_bytes_after,
        }


def export_json(result: ExportResult, target: str) -> dict[str, Any]:
    """The report's ``export`` section: the target and every graph written."""
    graphs = {}
    for graph in (result.sequence, result.step):
        if graph is not None:
            graphs[graph.path.name] = {
                "mode": graph.mode,
                "scan": graph.scan,
                "precision": graph.precision,
                "opset": graph.opset,
                "nodes": graph.node_count,
                "bytes": graph.bytes,
                "max_length": graph.max_length,
                **({"frame": graph.frame} if graph.mode == "step" else {}),
            }
    summary: dict[str, Any] = {
        "target": target,
        "scan": result.sequence.scan,
        "precision": result.sequence.precision,
        "opset": result.sequence.opset,
        "graphs": graphs,
    }
    if result.step is None:
        summary["step_skipped"] = result.step_skipped
    if result.check is not None:
        summary["tensorrt_check"] = {
            "ok": result.check.ok,
            "problems": [str(p) for p in result.check.problems],
        }
    return summary


@dataclass
class Report:
    """Everything ``report.json`` and ``report.md`` say. ``model``, ``plan`` and ``export``
    are None for ``validate`` (which re-checks a folder without pruning)."""

    command: str
    verdict: Verdict
    validation: Validation
    model: ModelRecord | None = None
    plan: PrunePlan | None = None
    export: ExportResult | None = None
    target: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    plots: list[str] | None = None
    search: MaxDropResult | None = None  # how --max-drop chose the ratio
    finetune: dict[str, Any] | None = None  # FinetuneResult.to_json(): --finetune's record
    latency_search: dict[str, Any] | None = None  # how --latency-budget chose the ratio

    @property
    def unverified(self) -> list[str]:
        return self.validation.unverified

    def to_json(self) -> dict[str, Any]:
        v = self.validation
        data: dict[str, Any] = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "verdict": self.verdict.to_json(),
            "command": self.command,
        }
        if self.model is not None:
            data["model"] = self.model.to_json()
        if self.plan is not None:
            data["plan"] = self.plan.to_json()
        if self.search is not None:
            data["search"] = self.search.to_json()
        if self.finetune is not None:
            data["finetune"] = dict(self.finetune)
        if self.latency_search is not None:
            data["latency_search"] = dict(self.latency_search)
        data["distortion"] = None if v.distortion is None else v.distortion.to_json()
        data["accuracy"] = None if v.accuracy is None else v.accuracy.to_json()
        if self.export is not None:
            data["export"] = export_json(self.export, self.target)
        data |= {
            "parity": [p.to_json() for p in v.parity],
            "latency": [t.to_json() for t in v.latency],
            "speedups": [s.to_json() for s in v.speedups],
            "environment": dict(self.environment),
            "warnings": list(self.warnings),
            "unverified": list(v.unverified),
        }
        if self.plots is not None:
            data["plots"] = list(self.plots)
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, allow_nan=False)


def environment() -> dict[str, Any]:
    """Versions and machine, so a figure can be traced to where it was measured."""
    import onnx
    import onnxruntime
    import torch

    from aire_export import __version__

    env = {
        "aire_export": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        onnx.__name__: onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import tensorrt

        env["tensorrt"] = tensorrt.__version__
    except ImportError:
        env["tensorrt"] = None
    return env
