"""The static TensorRT check: it flags what the parser rejects and passes all of our graphs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import make_s4d, make_s5
from onnx import TensorProto, helper, numpy_helper

from aire_export.errors import InputError
from aire_export.graphs import check_tensorrt
from aire_export.graphs.lowering import METHODS
from aire_export.lower import export


def _model(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _float(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _kinds(report) -> set[tuple[str, str]]:
    return {(p.op, p.kind) for p in report.problems if p.severity == "error"}


@pytest.mark.parametrize("version", ["10.3", "11"])
def test_complex_tensor_is_flagged(version):
    x = helper.make_tensor_value_info("x", TensorProto.COMPLEX64, [4])
    y = helper.make_tensor_value_info("y", TensorProto.COMPLEX64, [4])
    report = check_tensorrt(
        _model([helper.make_node("Mul", ["x", "x"], ["y"], name="m")], [x], [y]), version
    )
    assert not report.ok
    assert ("Mul", "dtype") in _kinds(report)
    assert any("complex" in str(p) for p in report.problems)


def _dft_model() -> onnx.ModelProto:
    dft = helper.make_node("DFT", ["x"], ["y"], name="fft", onesided=1)
    return _model([dft], [_float("x", [1, 8, 1])], [_float("y", [1, 5, 2])], opset=20)


def test_dft_is_flagged_for_tensorrt_10_and_needs_a_plugin_on_11():
    report = check_tensorrt(_dft_model(), "10.3")
    assert ("DFT", "op") in _kinds(report) and not report.ok
    on_11 = check_tensorrt(_dft_model(), "11")
    assert on_11.ok and any("FFTPlugin" in note for note in on_11.notes)


@pytest.mark.parametrize("version", ["10.3", "11"])
def test_unsupported_and_unknown_ops_are_flagged(version):
    nodes = [
        helper.make_node("Unique", ["x"], ["u"], name="unique"),
        helper.make_node("MyFusedScan", ["x"], ["v"], name="custom", domain="com.example"),
    ]
    model = _model(nodes, [_float("x", [4])], [_float("u", [None]), _float("v", [4])])
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    report = check_tensorrt(model, version)
    assert {("Unique", "op"), ("MyFusedScan", "domain")} <= _kinds(report)


def test_runtime_axes_and_unsupported_opsets_are_flagged():
    axes = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    starts = numpy_helper.from_array(np.array([0], np.int64), "starts")
    ends = numpy_helper.from_array(np.array([2], np.int64), "ends")
    node = helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"], name="s")
    model = _model([node], [_float("x", [4]), axes], [_float("y", [2])], [starts, ends], opset=21)
    report = check_tensorrt(model, "10.3")
    assert {("Slice", "attribute"), ("", "opset")} <= _kinds(report)
    assert ("", "opset") not in _kinds(check_tensorrt(model, "11"))


def test_float64_is_a_warning_and_int64_matmul_an_error():
    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, [2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2, 2])
    report = check_tensorrt(
        _model([helper.make_node("Add", ["x", "x"], ["y"], name="a")], [x], [y])
    )
    assert report.ok and any(p.severity == "warning" for p in report.problems)
    i = helper.make_tensor_value_info("i", TensorProto.INT64, [2, 2])
    j = helper.make_tensor_value_info("j", TensorProto.INT64, [2, 2])
    bad = check_tensorrt(
        _model([helper.make_node("MatMul", ["i", "i"], ["j"], name="mm")], [i], [j])
    )
    assert ("MatMul", "dtype") in _kinds(bad)


def test_unknown_version_and_missing_file_are_input_errors(tmp_path):
    with pytest.raises(InputError, match=r"10\.3"):
        check_tensorrt(_dft_model(), "9")
    with pytest.raises(InputError, match="no such"):
        check_tensorrt(tmp_path / "missing.onnx")


OUR_MODELS = {
    "s5": lambda: make_s5(seed=1, state_sizes=(8, 0)),
    "s5-bidir-tokens": lambda: make_s5(
        seed=1, bidirectional=True, input_kind="tokens", d_input=7, norm="layer"
    ),
    "s4d": lambda: make_s4d(seed=1, pooling="last"),
}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", OUR_MODELS)
def test_all_our_graphs_pass(tmp_path, name, method, precision):
    result = export(
        OUR_MODELS[name](), tmp_path, scan=method, precision=precision, lengths_input=True
    )
    for graph in (result.sequence, result.step):
        if graph is None:
            continue
        for version in ("10.3", "11"):
            report = check_tensorrt(graph.path, version)
            assert report.ok, [str(p) for p in report.problems]
            assert not report.problems


@pytest.mark.parametrize("target, version", [("trt", "11"), ("jetson", "10.3")])
def test_tensorrt_targets_attach_a_passing_check(tmp_path, target, version):
    result = export(make_s5(seed=2), tmp_path, target=target)
    assert result.check is not None and result.check.ok
    assert result.check.trt_version == version
    assert result.check.ops["MatMul"] > 0
    assert export(make_s5(seed=2), tmp_path / "cpu", target="onnx").check is None
