"""The schema of ``report.json`` (JSON Schema, draft 2020-12): the interface CI gates read.

``schema`` names the format, ``schema_version`` counts its incompatible changes. Objects are
closed (``additionalProperties: false``), so a key can only be added by changing this file
(and, when it breaks readers, the version); ``tests/test_report.py`` validates every report
the tests write against it. ``model``, ``plan``, ``export`` and ``plots`` are present in the
report of a run, absent from ``validate --json``.
"""

from __future__ import annotations

SCHEMA = "aire-export-report/1"
SCHEMA_VERSION = 2  # 2: verdict.checks, parity coverage, the accuracy gate, search

_NUMBER = {"type": ["number", "null"]}  # null: not finite (an infinite energy, a zero norm)
_STRINGS = {"type": "array", "items": {"type": "string"}}


def _closed(properties: dict, required: list[str] | None = None) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


_CERTIFICATE = {
    "oneOf": [
        {"type": "null"},
        _closed(
            {
                "bound": _NUMBER,
                "measured_hinf": _NUMBER,
                "h2": _NUMBER,
                "removed_states": {"type": "integer"},
                "rho": {"type": "number"},
                "omega_peak": {"type": "number"},
            }
        ),
    ]
}
_PLAN_LAYER = _closed(
    {
        "index": {"type": "integer"},
        "name": {"type": "string"},
        "states_before": {"type": "integer"},
        "states_after": {"type": "integer"},
        "units_before": {"type": "integer"},
        "kept": {"type": "array", "items": {"type": "integer"}},
        "energies": {"type": "array", "items": _NUMBER},
        "scores": {"type": "array", "items": _NUMBER},
        "unstable": {"type": "array", "items": {"type": "integer"}},
        "dropped": {"type": "boolean"},
        "block_removed": {"type": "boolean"},
        "size_before": {"type": "integer"},
        "physical_size": {"type": "integer"},
        "certificate": _CERTIFICATE,
        "calib_distortion": _NUMBER,
    }
)
PLAN_SCHEMA = _closed(
    {
        "format": {"const": "aire-export-plan/1"},
        "method": {"type": "string"},
        "ratio_requested": _NUMBER,
        "ratio_achieved": {"type": "number"},
        "threshold": _NUMBER,
        "eps": {"type": "number"},
        "score_compat": {"type": "string"},
        "seed": {"type": "integer"},
        "arch": {"type": "string"},
        "target_units": {"type": ["integer", "null"]},
        "states_before": {"type": "integer"},
        "states_after": {"type": "integer"},
        "drop_empty_blocks": {"type": "boolean"},
        "balance_channels": {"type": "boolean"},
        "unit": {"enum": ["state", "channel"]},
        "warnings": _STRINGS,
        "layers": {"type": "array", "items": _PLAN_LAYER},
    }
)
_GRAPH_FIELDS = {
    "mode": {"enum": ["sequence", "step"]},
    "scan": {"type": "string"},
    "precision": {"type": "string"},
    "opset": {"type": "integer"},
    "nodes": {"type": "integer"},
    "bytes": {"type": "integer", "minimum": 0},  # the serialized graph (file size)
    "max_length": {"type": ["integer", "null"]},
}
_GRAPH = _closed(
    {**_GRAPH_FIELDS, "frame": {"type": "integer", "minimum": 1}},  # steps per call (step graphs)
    required=list(_GRAPH_FIELDS),
)
_EXPORT = _closed(
    {
        "target": {"type": "string"},
        "scan": {"type": "string"},
        "precision": {"type": "string"},
        "opset": {"type": "integer"},
        "graphs": {"type": "object", "additionalProperties": _GRAPH},
        "step_skipped": {"type": "string"},
        "tensorrt_check": _closed({"ok": {"type": "boolean"}, "problems": _STRINGS}),
    },
    required=["target", "scan", "precision", "opset", "graphs"],
)
_OUTPUT_PARITY = _closed(
    {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        **{
            key: _NUMBER
            for key in (
                "max_abs",
                "mean_abs",
                "max_rel",
                "mean_rel",
                "normwise_rel",
                "cosine",
                "top1_agreement",
            )
        },
        "atol": {"type": "number"},
        "rtol": {"type": "number"},
        "failing": {"type": "integer"},
        "passed": {"type": "boolean"},
    }
)
_PARITY = _closed(
    {
        "runner": {"type": "string"},
        "graph": {"type": "string"},
        "reference": {"type": "string"},
        "precision": {"type": "string"},
        "inputs": {"type": "string"},
        "samples": {"type": "integer"},
        "length": {"type": "integer"},
        "outputs": {"type": "array", "items": _OUTPUT_PARITY},
        "passed": {"type": "boolean"},
    }
)
_CHECK = _closed(
    {
        "kind": {"enum": ["lowering fidelity", "accuracy", "pruning distortion", "runtime"]},
        "subject": {"type": "string"},
        "covered": {"type": "string"},
        "passed": {"type": ["boolean", "null"]},
        "detail": {"type": "string"},
    }
)
_SEARCH = _closed(
    {
        "budget_pp": {"type": "number"},
        "ratio": {"type": "number"},
        "accuracy": {"type": "number"},
        "drop_pp": {"type": "number"},
        "baseline_accuracy": {"type": "number"},
        "next_grid_ratio": _NUMBER,
        "next_grid_drop_pp": _NUMBER,
        "curve": {
            "type": "array",
            "items": _closed(
                {
                    "ratio": {"type": "number"},
                    "ratio_achieved": {"type": "number"},
                    "states_kept": {"type": "integer"},
                    "accuracy": {"type": "number"},
                    "drop_pp": {"type": "number"},
                }
            ),
        },
    }
)
_FINETUNE = _closed(
    {
        "train_data": {"type": "string"},
        "eval_data": {"type": "string"},
        "epochs": {"type": "integer"},
        "lr": {"type": "number"},
        "weight_decay": {"type": "number"},
        "patience": {"type": "integer"},
        "batch_size": {"type": "integer"},
        "seed": {"type": "integer"},
        "device": {"type": "string"},
        "best_epoch": {"type": "integer"},
        "stopped_early": {"type": "boolean"},
        "accuracy_before": {"type": "number"},
        "accuracy_after": {"type": "number"},
        "history": {
            "type": "array",
            "items": _closed(
                {
                    "epoch": {"type": "integer"},
                    "train_loss": _NUMBER,
                    "eval_accuracy": {"type": "number"},
                    "seconds": {"type": "number"},
                }
            ),
        },
    }
)
_LATENCY_SEARCH = _closed(
    {
        "budget_ms": {"type": "number"},
        "runtime": {"type": "string"},
        "batch": {"type": "integer"},
        "length": {"type": "integer"},
        "warmup": {"type": "integer"},
        "ratio": {"type": "number"},
        "p50_ms": {"type": "number"},
        "curve": {
            "type": "array",
            "items": _closed(
                {
                    "ratio": {"type": "number"},
                    "ratio_achieved": {"type": "number"},
                    "p50_ms": {"type": "number"},
                    "min_ms": {"type": "number"},
                    "p90_ms": {"type": "number"},
                    "runs": {"type": "integer"},
                    "confirmed_ms": _NUMBER,
                }
            ),
        },
    }
)
_LATENCY = _closed(
    {
        "name": {"type": "string"},
        "device": {"enum": ["cpu", "cuda"]},
        "batch": {"type": "integer"},
        "length": {"type": "integer"},
        "warmup": {"type": "integer"},
        "runs": {"type": "integer"},
        **{
            key: _NUMBER
            for key in (
                "mean_ms",
                "std_ms",
                "min_ms",
                "p50_ms",
                "p90_ms",
                "p99_ms",
                "sequences_per_s",
                "steps_per_s",
            )
        },
    }
)
_SPEEDUP = _closed(
    {
        "runtime": {"type": "string"},
        "original": {"type": "string"},
        "pruned": {"type": "string"},
        "ratio": _NUMBER,
    }
)
_MODEL = _closed(
    {
        "path": {"type": "string"},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "arch": {"type": "string"},
        "states_before": {"type": "integer"},
        "states_after": {"type": "integer"},
        "physical_states_after": {"type": "integer"},
        "parameters_before": {"type": "integer"},
        "parameters_after": {"type": "integer"},
        "parameter_bytes_before": {"type": "integer", "minimum": 0},
        "parameter_bytes_after": {"type": "integer", "minimum": 0},
    }
)
_ENVIRONMENT = _closed(
    {
        "aire_export": {"type": "string"},
        "python": {"type": "string"},
        "platform": {"type": "string"},
        "processor": {"type": "string"},
        "torch": {"type": "string"},
        "onnx": {"type": "string"},
        "onnxruntime": {"type": "string"},
        "onnxruntime_providers": _STRINGS,
        "gpu": {"type": ["string", "null"]},
        "tensorrt": {"type": ["string", "null"]},
    }
)
REPORT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "aire-export report.json",
    **_closed(
        {
            "schema": {"const": SCHEMA},
            "schema_version": {"const": SCHEMA_VERSION},
            "verdict": _closed(
                {
                    "passed": {"type": "boolean"},
                    "exit_code": {"enum": [0, 3, 4, 6, 7]},
                    "reasons": _STRINGS,
                    "checks": {"type": "array", "items": _CHECK},
                }
            ),
            "command": {"type": "string"},
            "model": _MODEL,
            "plan": PLAN_SCHEMA,
            "search": _SEARCH,
            "finetune": _FINETUNE,
            "latency_search": _LATENCY_SEARCH,
            "distortion": {
                "oneOf": [
                    {"type": "null"},
                    _closed(
                        {
                            "normwise_rel": _NUMBER,
                            "max_abs": _NUMBER,
                            "top1_agreement": _NUMBER,
                            "samples": {"type": "integer"},
                        }
                    ),
                ]
            },
            "accuracy": {
                "oneOf": [
                    {"type": "null"},
                    _closed(
                        {
                            "data": {"type": "string"},
                            "samples": {"type": "integer"},
                            "original": {"type": "number"},
                            "pruned": {"type": "number"},
                            "drop_pp": {"type": "number"},
                            "budget_pp": _NUMBER,
                            "passed": {"type": ["boolean", "null"]},
                        }
                    ),
                ]
            },
            "export": _EXPORT,
            "parity": {"type": "array", "items": _PARITY},
            "latency": {"type": "array", "items": _LATENCY},
            "speedups": {"type": "array", "items": _SPEEDUP},
            "environment": _ENVIRONMENT,
            "warnings": _STRINGS,
            "unverified": _STRINGS,
            "plots": _STRINGS,
        },
        required=[
            "schema",
            "schema_version",
            "verdict",
            "command",
            "distortion",
            "accuracy",
            "parity",
            "latency",
            "speedups",
            "environment",
            "warnings",
            "unverified",
        ],
    ),
    # a run's report has all four; ``validate --json`` none of them
    "dependentRequired": {
        key: [k for k in ("model", "plan", "export", "plots") if k != key]
        for key in ("model", "plan", "export", "plots")
    },
}
