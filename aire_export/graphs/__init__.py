"""Lowering to ONNX (DESIGN §4): real-arithmetic sequence and step graphs, TensorRT check.

result = export(model, "out/", target="onnx", scan="auto", precision="fp32")
report = check_tensorrt("out/model.onnx", trt_version="10.3")
"""

from aire_export.graphs.check import CheckReport, Problem, check_tensorrt
from aire_export.graphs.export import (
    ExportedGraph,
    ExportResult,
    TensorSpec,
    export,
)

__all__ = [
    "CheckReport",
    "ExportResult",
    "ExportedGraph",
    "Problem",
    "TensorSpec",
    "check_tensorrt",
    "export",
]
