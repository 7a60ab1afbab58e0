"""What the exported graphs are made of: real arithmetic, no time loop, named I/O, casts, steps."""

from __future__ import annotations

import tempfile
import warnings

import numpy as np
import onnx
import pytest
import torch
from conftest import make_s4d, make_s5, rel_err
from lowering import all_nodes, random_input, reference, session, stream, value_types

from aire_export.errors import InputError
from aire_export.graphs import check_tensorrt
from aire_export.graphs.check import nonfinite_initializers
from aire_export.graphs.emulate import emulate_reduced_precision
from aire_export.graphs.lowering import CARRY_CONSTANTS, METHODS, LayerLowering
from aire_export.lower import export
from aire_export.models import modal_systems

COMPLEX = {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128}
REDUCED = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
MODELS = {
    "s5": lambda: make_s5(seed=1),
    "s5-bidir": lambda: make_s5(seed=1, bidirectional=True),
    "s4d": lambda: make_s4d(seed=1),
}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", MODELS)
def test_graphs_are_real_arithmetic_with_float32_recurrence(tmp_path, name, method, precision):
    """No complex dtype anywhere; every value of a recurrence (nodes under a ``scan`` scope and
    Scan bodies) is float32 or int64 whatever the precision; I/O stays float32."""
    result = export(MODELS[name](), tmp_path, scan=method, precision=precision)
    for graph in [result.sequence, result.step]:
        if graph is None:
            continue
        model = onnx.load(str(graph.path))
        types = value_types(model)
        assert not COMPLEX & set(types.values())
        ops = {node.op_type for node in all_nodes(model.graph)}
        assert "DFT" not in ops
        recurrent = [
            name
            for node in all_nodes(model.graph)
            if any(part.startswith("scan") for part in node.name.split("/"))
            or node.op_type == "Scan"
            for name in [*node.input, *node.output]
            if name
        ]
        assert recurrent, "the recurrence nodes carry a scan* name"
        assert all(types[v] not in REDUCED for v in recurrent)
        io = [*model.graph.input, *model.graph.output]
        assert all(vi.type.tensor_type.elem_type not in REDUCED for vi in io)
        has_reduced = bool(REDUCED & set(types.values()))
        assert has_reduced == (precision != "fp32")
        if precision != "fp32":
            assert "Cast" in ops


@pytest.mark.parametrize("method", ["chunked", "toeplitz", "scan"])
def test_node_count_does_not_depend_on_sequence_length(tmp_path, method):
    """Graphs built for 1024 and for 16384 steps are the same size, and one graph runs both."""
    model = make_s5(seed=2, bidirectional=True)
    short = export(model, tmp_path / "a", scan=method, max_length=1024, step=False).sequence
    long = export(model, tmp_path / "b", scan=method, max_length=16384, step=False).sequence
    assert short.node_count == long.node_count
    assert long.max_length is None or long.max_length >= 16384
    s = session(long.path)
    for length in (1024, 16384):
        x = random_input(model, 1, length, seed=length)
        assert s.run(["y"], {"x": x.numpy()})[0].shape == (1, model.config.d_output)


def test_logdepth_graph_grows_with_log_of_max_length_only(tmp_path):
    """Hillis–Steele: one fixed group of nodes per doubling of the maximum length."""
    model = make_s5(seed=2)
    counts = {
        n: export(model, tmp_path / str(n), scan="logdepth", max_length=n, step=False).sequence
        for n in (1024, 2048, 16384)
    }
    per_doubling = counts[2048].node_count - counts[1024].node_count
    assert 0 < per_doubling <= 20 * model.config.n_layers
    assert counts[16384].node_count - counts[1024].node_count == 4 * per_doubling
    assert counts[1024].max_length == 1024 and counts[16384].max_length == 16384


def test_logdepth_graph_is_exact_up_to_its_max_length(tmp_path):
    model = make_s5(seed=2)
    graph = export(model, tmp_path, scan="logdepth", max_length=100, step=False).sequence
    assert graph.max_length == 128
    x = random_input(model, 1, 128)
    assert rel_err(session(graph.path).run(["y"], {"x": x.numpy()})[0], reference(model, x)) <= 1e-5


def test_dropped_layer_emits_no_recurrence(tmp_path):
    model = make_s5(seed=3, state_sizes=(0, 4, 0))
    for method in METHODS:
        result = export(model, tmp_path / method, scan=method)
        for graph in (result.sequence, result.step):
            names = [n.name for n in all_nodes(onnx.load(str(graph.path)).graph)]
            assert not any(n.startswith(("layers.0/ssm/scan", "layers.2/ssm/scan")) for n in names)
            assert any(n.startswith("layers.1/ssm/scan") for n in names)
        assert [spec.name for spec in result.step.inputs if spec.name.startswith("state")] == [
            "state_1"
        ]


def test_graph_io_follows_the_interface(tmp_path):
    s5 = make_s5(seed=4, state_sizes=(8, 4))
    result = export(s5, tmp_path / "s5", lengths_input=True)
    seq = result.sequence
    assert [(t.name, t.dtype, t.shape) for t in seq.inputs] == [
        ("x", "float32", ("batch", "length", 3)),
        ("lengths", "int64", ("batch",)),
    ]
    assert [(t.name, t.dtype, t.shape) for t in seq.outputs] == [("y", "float32", ("batch", 5))]
    assert seq.mode == "sequence" and seq.opset == 17 and seq.precision == "fp32"
    step = result.step
    assert [(t.name, t.shape) for t in step.inputs] == [
        ("x", ("batch", 3)),
        ("state_0", ("batch", 8, 2)),
        ("state_1", ("batch", 4, 2)),
        ("pooled_sum", ("batch", 6)),
        ("steps", (1,)),
    ]
    assert [t.name for t in step.outputs] == [
        "y",
        "state_0_out",
        "state_1_out",
        "pooled_sum_out",
        "steps_out",
    ]
    tokens = export(make_s4d(seed=4, input_kind="tokens", d_input=7), tmp_path / "s4d")
    assert tokens.sequence.inputs[0].dtype == "int64"
    assert tokens.sequence.inputs[0].shape == ("batch", "length")
    assert tokens.step.inputs[0].shape == ("batch",)
    assert tokens.step.inputs[1].shape == ("batch", 5, 6, 2)  # S4D: (batch, H, N, 2)


STEP_MODELS = {
    "s5": dict(make=make_s5, activation="full_glu", norm="layer", prenorm=False),
    "s5-last-tokens-dropped": dict(
        make=make_s5, pooling="last", input_kind="tokens", d_input=7, state_sizes=(0, 4)
    ),
    "s4d": dict(make=make_s4d, shared_A=True, learn_B=True),
    "s4d-postnorm-batchnorm": dict(make=make_s4d, prenorm=False, norm="batch"),
}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", STEP_MODELS)
def test_step_graph_driven_for_T_steps_equals_sequence_graph(tmp_path, name, precision):
    options = dict(STEP_MODELS[name])
    model = options.pop("make")(seed=5, **options)
    result = export(model, tmp_path, precision=precision)
    x = random_input(model, 2, 24, seed=6)
    streamed = stream(result.step.path, model, x)
    seq = session(result.sequence.path)
    tolerance = 1e-5 if precision == "fp32" else 2e-3
    for t in (0, 5, 23):
        prefix = x[:, : t + 1]
        assert rel_err(streamed[t], seq.run(["y"], {"x": prefix.numpy()})[0]) <= tolerance
    assert rel_err(streamed[-1], reference(model, x)) <= tolerance


def test_bidirectional_models_have_no_step_graph(tmp_path):
    model = make_s5(bidirectional=True)
    result = export(model, tmp_path)
    assert result.step is None and "bidirectional" in result.step_skipped
    assert not (tmp_path / "model.step.onnx").exists()
    with pytest.raises(InputError, match="bidirectional"):
        export(model, tmp_path, step=True)
    assert export(make_s5(), tmp_path / "u", step=False).step_skipped == "not requested"


@pytest.mark.parametrize("opset", [17, 18, 20, 21])
def test_supported_opsets_give_the_same_function(tmp_path, opset):
    model = make_s4d(seed=7, norm="layer")
    result = export(model, tmp_path, scan="chunked", opset=opset)
    assert onnx.load(str(result.sequence.path)).opset_import[0].version == opset
    x = random_input(model, 2, 33)
    out = session(result.sequence.path).run(["y"], {"x": x.numpy()})[0]
    assert rel_err(out, reference(model, x)) <= 1e-5


def test_emulated_fp16_agrees_with_native_fp16():
    """The bf16 measurements rest on the emulation; on fp16, where onnxruntime has kernels,
    emulated and native runs agree to fp16 rounding."""
    model = make_s5(seed=8, norm="layer")
    with tempfile.TemporaryDirectory() as tmp:
        graph = onnx.load(str(export(model, tmp, precision="fp16").sequence.path))
    x = random_input(model, 2, 300).numpy()
    native = session(graph).run(["y"], {"x": x})[0]
    emulated = session(emulate_reduced_precision(graph)).run(["y"], {"x": x})[0]
    ref = reference(model, torch.from_numpy(x))
    assert rel_err(emulated, native) <= 1e-3
    assert 0.5 <= rel_err(emulated, ref) / rel_err(native, ref) <= 2.0
    reduced = [v for v, t in value_types(emulate_reduced_precision(graph)).items() if t in REDUCED]
    assert reduced and all(v.endswith(".rounded") for v in reduced)  # only the rounding casts
    assert np.isfinite(emulated).all()


@pytest.mark.parametrize("method", ["chunked", "toeplitz"])
def test_many_states_are_carried_by_a_scan_with_bounded_constants(tmp_path, method):
    """S4D banks hold H·N states; per-state chunk matrices on every level would be hundreds of
    MB, so above CARRY_CONSTANTS such layers carry across chunks with one Scan node."""
    model = make_s4d(seed=12, d_model=64, state_sizes=(32,))  # 2048 states
    lowering = LayerLowering(method, states=modal_systems(model)[0].P)
    assert lowering.carry_by_scan and lowering.accepted_length is None
    result = export(model, tmp_path, scan=method, step=False)
    graph = onnx.load(str(result.sequence.path))
    assert "Scan" in {node.op_type for node in graph.graph.node}
    weights = sum(np.prod(init.dims) for init in graph.graph.initializer)
    assert weights < 4 * CARRY_CONSTANTS
    assert result.sequence.max_length is None
    x = random_input(model, 2, 100)
    out = session(result.sequence.path).run(["y"], {"x": x.numpy()})[0]
    assert rel_err(out, reference(model, x)) <= 1e-5


def _unstable_s5(rho_step: float = 0.05):
    """An S5 model trained without eigenvalue clipping: two modes of layer 1 grow."""
    model = make_s5(seed=1, clip_eigs=False, state_sizes=(8, 4))
    with torch.no_grad():
        model.layers[1].seq.Lambda_re[:2] = rho_step
    return model


@pytest.mark.parametrize("method", METHODS)
def test_an_unstable_model_lowers_to_finite_graphs_that_state_their_reach(tmp_path, method):
    """|λ̄| > 1: no constant overflows (λ^(16^k) once did in deep carry levels), numpy warns
    of nothing, the graph accepts no more steps than its output stays finite for, the export
    says so, and within that length it is as faithful as any graph."""
    model = _unstable_s5()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow in numpy would raise here
        result = export(model, tmp_path, scan=method)
    for graph in (result.sequence, result.step):
        assert nonfinite_initializers(onnx.load(str(graph.path)).graph) == []
    (warning,) = result.warnings
    assert warning.startswith("layer 1 is unstable") and "stays finite in float32" in warning
    limit = int(warning.split("for about ")[1].split(" steps")[0].replace(",", ""))
    assert 50_000 < limit < 70_000  # ρ = 1.0014: ln(F32_MAX) / ln ρ ≈ 63,000, less the gain
    accepted = result.sequence.max_length
    assert accepted is not None and accepted <= limit
    x = random_input(model, 1, min(accepted, 3000), seed=4)
    assert (
        rel_err(session(result.sequence.path).run(["y"], {"x": x.numpy()})[0], reference(model, x))
        <= 1e-5
    )


def test_a_mode_too_unstable_for_float32_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(InputError, match=r"overflows float32.*clip_eigs"):
        export(_unstable_s5(rho_step=1e3), tmp_path, scan="chunked")
    assert not (tmp_path / "model.onnx").exists()


def test_the_check_rejects_a_non_finite_constant_for_every_parser():
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Mul", ["x", "c"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
        initializer=[onnx.numpy_helper.from_array(np.array([1.0, np.inf], np.float32), "c")],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    for version in ("10.3", "11"):
        report = check_tensorrt(model, version)
        assert not report.ok and any("NaN or inf" in p.detail for p in report.problems)
