"""Lowering to ONNX (DESIGN §4): real-arithmetic sequence and step graphs, TensorRT check.

Everything here reads the export IR (aire_export/ir.py) and nothing of models/:

    result = export_network(net, "out/", target="onnx", scan="auto", precision="fp32")
    report = check_tensorrt("out/model.onnx", trt_version="10.3")
"""

from aire_export.graphs.check import CheckReport, Problem, check_tensorrt
from aire_export.graphs.export import (
    ExportedGraph,
    ExportResult,
    TensorSpec,
    export_network,
)

__all__ = [
    "CheckReport",
    "ExportResult",
    "ExportedGraph",
    "Problem",
    "TensorSpec",
    "check_tensorrt",
    "export_network",
]
