"""Frame step graphs (``--frame K``): K streaming steps per call, the same state in and out.

The reference is the float64 model's own ``step()`` driven one step at a time; a frame graph
must equal it at every step of every frame and equal K calls of the single-step graph, whose
I/O (K = 1, the default) stays as it was.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch
from conftest import make_s4d, make_s5, rel_err
from conftest import run_cli as run
from lowering import all_nodes, random_input, session, stream, value_types

import aire_export as ax
from aire_export.errors import InputError
from aire_export.graphs.step import MAX_FRAME
from aire_export.lower import export
from aire_export.models.mamba import MambaConfig, MambaLM
from aire_export.runtimes.shapes import ShapeRange
from aire_export.validate.validation import ValidateOptions, stepwise_reference, validate

REDUCED = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
FRAMES = (1, 3, 8)
MODELS = {
    "s5-mean": lambda: make_s5(seed=5, activation="full_glu", norm="layer", prenorm=False),
    "s5-last-tokens": lambda: make_s5(seed=6, pooling="last", input_kind="tokens", d_input=7),
    "s4d-mean": lambda: make_s4d(seed=5, shared_A=True, learn_B=True),
    "s4d-last-batchnorm": lambda: make_s4d(seed=7, pooling="last", prenorm=False, norm="batch"),
}


def model_steps(model, x: torch.Tensor):
    """(outputs (B, T, d_out), final StreamState) of the float64 model's ``step()`` over x."""
    ref = copy.deepcopy(model).double()
    state, outputs = ref.init_state(x.shape[0]), []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y, state = ref.step(x[:, t].double() if x.is_floating_point() else x[:, t], state)
            outputs.append(y.numpy())
    return np.stack(outputs, 1), state


def stream_frames(path, x: torch.Tensor, frame: int):
    """(y after every step (B, T, d_out), the graph's outputs after the last frame)."""
    s = session(path)
    feeds = {
        i.name: np.zeros([x.shape[0] if d == "batch" else d for d in i.shape], np.float32)
        for i in s.get_inputs()
        if i.name != "x"
    }
    names = [o.name for o in s.get_outputs()]
    ys = []
    for start in range(0, x.shape[1], frame):
        feeds["x"] = x[:, start : start + frame].numpy()
        out = dict(zip(names, s.run(None, feeds), strict=True))
        ys.append(out["y"])
        feeds.update({name: out[f"{name}_out"] for name in feeds if name != "x"})
    return np.concatenate(ys, 1), out


def small_mamba() -> MambaLM:
    config = MambaConfig(d_model=8, state_sizes=[4], vocab_size=11, d_inner=16, dt_rank=2)
    return MambaLM(config).eval()


def pruned_or_not(model, pruned: bool):
    return ax.prune(model, ratio=0.5, certificates=False)[0] if pruned else model


@pytest.mark.parametrize("pruned", [False, True], ids=["unpruned", "pruned"])
@pytest.mark.parametrize("name", MODELS)
def test_frame_graph_equals_the_model_step_by_step_for_every_frame_size(tmp_path, name, pruned):
    model = pruned_or_not(MODELS[name](), pruned)
    x = random_input(model, 2, 24, seed=8)
    want, state = model_steps(model, x)
    singles = np.stack(stream(export(model, tmp_path / "one").step.path, model, x), 1)
    assert rel_err(singles, want) <= 1e-5
    for frame in FRAMES[1:]:
        result = export(model, tmp_path / str(frame), frame=frame)
        assert result.step.frame == frame
        got, last = stream_frames(result.step.path, x, frame)
        assert got.shape == want.shape
        assert rel_err(got, want) <= 1e-5, frame
        assert rel_err(got, singles) <= 1e-5, frame
        for i, layer in enumerate(state.layers):  # the state after the frames, as the model's
            assert rel_err(last[f"state_{i}_out"], layer.numpy()) <= 1e-5
        assert rel_err(last["pooled_sum_out"], state.pooled_sum.numpy()) <= 1e-5
        assert last["steps_out"].tolist() == [24.0]


def test_frame_graph_of_bypassed_channels_and_dropped_layers_streams(tmp_path):
    """S4oP's bypassed channels and a layer pruned to nothing take the frame path too."""
    model = make_s4d(seed=3, state_sizes=(6, 4, 5))
    pruned, _ = ax.prune(model, ratio=0.5, unit="channel", certificates=False)
    dropped = make_s5(seed=3, state_sizes=(0, 4))
    for net in (pruned, dropped):
        x = random_input(net, 1, 12, seed=2)
        got, _ = stream_frames(export(net, tmp_path / net.arch, frame=4).step.path, x, 4)
        assert rel_err(got, model_steps(net, x)[0]) <= 1e-5


def test_frame_1_is_the_single_step_graph_byte_for_byte(tmp_path):
    """--frame 1 (the default) writes the single-step graph with today's I/O; its update is
    the lean one (bit for bit the same numbers as before, fewer nodes: see below)."""
    model = make_s5(seed=4, state_sizes=(8, 4))
    default = export(model, tmp_path / "default").step.path.read_bytes()
    assert export(model, tmp_path / "one", frame=1).step.path.read_bytes() == default
    assert onnx.load_from_string(default).doc_string == "step graph"


def test_frame_graph_io_has_a_time_axis_and_the_same_states(tmp_path):
    model = make_s5(seed=4, state_sizes=(8, 4))
    one = export(model, tmp_path / "one").step
    eight = export(model, tmp_path / "eight", frame=8).step
    io = {spec.name: spec.shape for spec in eight.inputs}
    assert io.pop("x") == ("batch", 8, 3)
    assert io == {spec.name: spec.shape for spec in one.inputs if spec.name != "x"}
    outputs = {spec.name: spec.shape for spec in eight.outputs}
    assert outputs.pop("y") == ("batch", 8, 5)
    assert outputs == {spec.name: spec.shape for spec in one.outputs if spec.name != "y"}
    tokens = export(make_s4d(seed=4, input_kind="tokens", d_input=7), tmp_path / "t", frame=3)
    assert tokens.step.inputs[0].shape == ("batch", 3) and tokens.step.inputs[0].dtype == "int64"
    assert eight.to_json()["frame"] == 8


def test_frame_graph_has_no_time_loop_and_keeps_the_recurrence_float32(tmp_path):
    """The frame is a few MatMuls and elementwise products, not K copies of the step: the
    node count does not grow with K; at fp16 every recurrence value is float32 and the
    outputs stay within the fp16 gate."""
    model = make_s5(seed=2)
    counts = {k: export(model, tmp_path / str(k), frame=k).step.node_count for k in (2, 8, 16, 64)}
    layers = len(model.layers)
    assert counts[2] == counts[8] and counts[16] == counts[64] <= counts[8] + 16 * layers
    for make in (make_s5, make_s4d):
        net = make(seed=2)
        path = export(net, tmp_path / f"{net.arch}16", frame=4, precision="fp16").step.path
        graph = onnx.load(str(path))
        assert not {n.op_type for n in all_nodes(graph.graph)} & {"Loop", "Scan"}
        types = value_types(graph)
        recurrent = [
            value
            for node in all_nodes(graph.graph)
            if any(part.startswith("scan") for part in node.name.split("/"))
            for value in [*node.input, *node.output]
        ]
        assert recurrent and all(types[v] not in REDUCED for v in recurrent)
        assert REDUCED & set(types.values())
        x = random_input(net, 2, 16, seed=3)
        assert rel_err(stream_frames(path, x, 4)[0], model_steps(net, x)[0]) <= 2e-3


@pytest.mark.parametrize("make", [make_s4d, make_s5], ids=["s4d", "s5"])
def test_frame_graph_passes_the_tensorrt_operator_check(tmp_path, make):
    result = export(make(seed=1), tmp_path, target="trt", frame=8)
    assert result.check is not None and result.check.ok, result.check.problems


@pytest.mark.parametrize("frame", [0, -3, 2.5, True])
def test_a_frame_that_is_not_a_positive_whole_number_is_a_bad_input(tmp_path, frame):
    with pytest.raises(InputError, match="--frame must be a whole number"):
        export(make_s5(), tmp_path, frame=frame)


def test_frames_longer_than_the_limit_are_refused_before_building_constants(tmp_path):
    """The chunked frames' constants grow like K² per state: 128 steps per call at most."""
    for make in (make_s5, make_s4d):
        assert export(make(), tmp_path / "max", frame=MAX_FRAME).step.frame == MAX_FRAME
        with pytest.raises(InputError, match=f"at most {MAX_FRAME} steps"):
            export(make(), tmp_path / "over", frame=MAX_FRAME + 1)


def test_models_without_a_frame_form_refuse_frames_larger_than_one(tmp_path):
    with pytest.raises(InputError, match="bidirectional"):
        export(make_s5(bidirectional=True), tmp_path / "bi", frame=4)
    mamba = small_mamba()
    with pytest.raises(InputError, match=r"Mamba.*--frame 1"):
        export(mamba, tmp_path / "mamba", frame=4)
    assert export(mamba, tmp_path / "mamba1", frame=1).step.frame == 1
    with pytest.raises(InputError, match="drop --no-step"):
        export(make_s5(), tmp_path / "nostep", frame=4, step=False)


def one_error_line(err: str) -> str:
    """The one line a refused command prints (progress lines start with "·")."""
    (line,) = [line for line in err.splitlines() if line and not line.startswith("·")]
    assert line.startswith("error: ") and "Traceback" not in err
    return line


@pytest.mark.parametrize("frame", ["0", "-2"])
def test_cli_bad_frame_is_one_line_and_exit_2(tmp_path, capsys, frame):
    path = ax.save(make_s5(), tmp_path / "m.pt")
    for args in (["export", path, "-o", tmp_path / "o"], [path, "--ratio", "0.5"]):
        code, _, err = run(capsys, *args, "--frame", frame)
        assert code == 2 and "--frame must be a whole number" in one_error_line(err)
    assert not (tmp_path / "o").exists() and not (tmp_path / "m.aire").exists()


@pytest.mark.parametrize(
    "make, message",
    [(lambda: make_s5(bidirectional=True), "bidirectional"), (small_mamba, "Mamba")],
    ids=["bidirectional", "mamba"],
)
def test_cli_frame_without_a_frame_form_is_refused_before_pruning(tmp_path, capsys, make, message):
    path = ax.save(make(), tmp_path / "m.pt")
    code, _, err = run(capsys, path, "--ratio", "0.5", "--frame", "8")
    assert code == 2 and message in one_error_line(err)
    assert "· score" not in err and not (tmp_path / "m.aire").exists()


def test_the_default_job_writes_a_frame_graph_that_validates_and_revalidates(tmp_path, capsys):
    path = ax.save(make_s5(seed=1, state_sizes=(8, 8)), tmp_path / "m.pt")
    code, _, err = run(capsys, path, "--ratio", "0.5", "--frame", "8", "--length", "30",
                       "--no-latency", "--target", "jetson")  # fmt: skip
    assert code == 0, err
    folder = tmp_path / "m.aire"
    report = json.loads((folder / "report.json").read_text())
    assert report["export"]["graphs"]["model.step.onnx"]["frame"] == 8
    assert report["export"]["graphs"]["model.onnx"].get("frame") is None
    (step,) = [p for p in report["parity"] if p["graph"] == "model.step.onnx"]
    assert step["passed"] and step["length"] == 24  # whole frames of the 30 steps
    assert step["outputs"][0]["shape"][1] == 24  # checked after every step, not only the last
    assert session(folder / "model.step.onnx").get_inputs()[0].shape == ["batch", 8, 3]
    manifest = json.loads((folder / "bundle" / "manifest.json").read_text())
    assert manifest["graphs"]["model.step.onnx"]["frame"] == 8
    assert (folder / "bundle" / "model.step.onnx").read_bytes() == (
        folder / "model.step.onnx"
    ).read_bytes()
    code, out, err = run(capsys, "validate", folder, "--original", path, "--length", "20",
                         "--no-latency", "--json")  # fmt: skip
    assert code == 0, err
    (step,) = [p for p in json.loads(out)["parity"] if p["graph"] == "model.step.onnx"]
    assert step["passed"] and step["length"] == 16


def test_step_parity_streams_whole_frames_and_needs_at_least_one(tmp_path):
    model = make_s4d(seed=2)
    pruned, _ = ax.prune(model, ratio=0.5, certificates=False)
    exported = export(pruned, tmp_path, frame=4)
    x = random_input(pruned, 2, 11, seed=1).numpy()
    options = ValidateOptions(latency=False, length=ShapeRange(1, 11, 11))
    check = validate(model, pruned, exported, options, inputs=x)
    (step,) = [p for p in check.parity if p.graph == "model.step.onnx"]
    assert step.passed and step.length == 8
    with pytest.raises(InputError, match="use --frame ≤ 3, or give sequences at least 4 steps"):
        validate(model, pruned, exported, options, inputs=x[:, :3])


def test_a_frame_graph_with_a_wrong_within_frame_output_fails_the_gate(tmp_path):
    """Only the last step of each frame right is not enough: the gate reads every step."""
    model = make_s5(seed=3)
    exported = export(model, tmp_path, frame=4)
    graph = onnx.load(str(exported.step.path))
    counts = next(t for t in graph.graph.initializer if t.name.startswith("head/counts"))
    wrong = onnx.numpy_helper.to_array(counts).copy()
    wrong[0] += 1.0  # the mean after the first step of a frame divides by one step too many
    counts.CopyFrom(onnx.numpy_helper.from_array(wrong, counts.name))
    onnx.save(graph, str(exported.step.path))
    x = random_input(model, 2, 16, seed=1).numpy()
    check = validate(model, model, exported, ValidateOptions(latency=False), inputs=x)
    (step,) = [p for p in check.parity if p.graph == "model.step.onnx"]
    assert not step.passed


def test_stepwise_reference_ends_at_the_sequence_output():
    model = make_s5(seed=1)
    x = random_input(model, 2, 9, seed=4)
    steps = stepwise_reference(model, x.numpy())
    assert rel_err(steps, model_steps(model, x)[0]) <= 1e-12
    with torch.no_grad():
        assert rel_err(steps[:, -1], copy.deepcopy(model).double()(x.double()).numpy()) <= 1e-12


@pytest.mark.parametrize("frame", [1, 2, 7, 8, 9, 12, 16, 20, 64, 72])
def test_frame_recurrence_is_the_recurrence_from_the_entering_state(frame):
    """x_k = λ x_{k−1} + v_k from x_{−1} for fast, slow and oscillating modes: one chunk
    (K ≤ 8), whole chunks with their boundary states, and a padded last chunk (9, 12, 20, 72)."""
    from aire_export.graphs.builder import GraphBuilder
    from aire_export.graphs.recurrence import frame_recurrence

    rng = np.random.default_rng(frame)
    lam = np.array([0.3, 0.999, 0.95 * np.exp(1j), -0.5j, 0.9999 * np.exp(0.2j)])
    v = rng.standard_normal((2, lam.size, frame, 2)).astype(np.float32)
    start = rng.standard_normal((2, lam.size, 2)).astype(np.float32)
    g = GraphBuilder("frame", 17)
    x, last = frame_recurrence(
        g, g.input("v", "float32", [2, 5, frame, 2]), g.input("s", "float32", [2, 5, 2]), lam,
        4, frame,
    )  # fmt: skip
    g.output("x", x, "float32", [2, 5, frame, 2])
    g.output("last", last, "float32", [2, 5, 2])
    got_x, got_last = session(g.model("test")).run(None, {"v": v, "s": start})
    state, want = start[..., 0] + 1j * start[..., 1], []
    for k in range(frame):
        state = lam * state + (v[:, :, k, 0] + 1j * v[:, :, k, 1])
        want.append(np.stack([state.real, state.imag], -1))
    assert rel_err(got_x, np.stack(want, 2)) <= 1e-6
    assert rel_err(got_last, want[-1]) <= 1e-6


def factored_frame_session(lam: np.ndarray, batch: int, frame: int):
    """A session of recurrence.factored_frame_recurrence alone: v (B, K, 2, P), s (B, 2, P)."""
    from aire_export.graphs.builder import GraphBuilder
    from aire_export.graphs.recurrence import factored_frame_recurrence

    P = lam.size
    g = GraphBuilder("frame", 17)
    v, start = g.input("v", "float32", [batch, frame, 2, P]), g.input("s", "float32", [batch, 2, P])
    x, last = factored_frame_recurrence(g, v, start, lam, frame)
    g.output("x", x, "float32", [batch, frame, 2, P])
    g.output("last", last, "float32", [batch, 2, P])
    return session(g.model("test"))


def planes(z: np.ndarray, axis: int) -> np.ndarray:
    return np.stack([z.real, z.imag], axis).astype(np.float32)


@pytest.mark.parametrize("frame", [1, 2, 7, 8, 9, 32, 33, 128])
def test_factored_frame_recurrence_is_the_recurrence_from_the_entering_state(frame):
    """x_k = λ x_{k−1} + v_k from x_{−1}, in planes, for slow, oscillating, imaginary and
    unstable modes inside the factored range at K = 128 (|λ| from 0.7 to 1.2)."""
    rng = np.random.default_rng(frame)
    lam = np.array([0.7, 0.999, 0.95 * np.exp(1j), -0.9j, 0.9999 * np.exp(0.2j), 1.2])
    v = rng.standard_normal((2, frame, lam.size)) + 1j * rng.standard_normal((2, frame, lam.size))
    start = rng.standard_normal((2, lam.size)) + 1j * rng.standard_normal((2, lam.size))
    got_x, got_last = factored_frame_session(lam, 2, frame).run(
        None, {"v": planes(v, 2), "s": planes(start, 1)}
    )
    state, want = start, []
    for k in range(frame):
        state = lam * state + v[:, k]
        want.append(state)
    assert rel_err(got_x, planes(np.stack(want, 1), 2)) <= 1e-6
    assert rel_err(got_last, planes(want[-1], 1)) <= 1e-6


def test_the_factored_frame_takes_only_modes_whose_powers_stay_in_range():
    """|ln|λ|| · reach ≤ ln 2^40: at K = 32 (reach 16) 0.177 ≤ |λ| ≤ 5.66, at K = 128
    (reach 64) 0.649 ≤ |λ| ≤ 1.54; λ = 0 never."""
    from aire_export.graphs.recurrence import factored_frame_fits

    assert factored_frame_fits(np.array([0.18, 0.999j, 5.6]), 32)
    for outside in (0.17, 5.7, 0.0):
        assert not factored_frame_fits(np.array([0.9, outside]), 32), outside
    assert factored_frame_fits(np.array([0.65 * np.exp(2j), 1.54]), 128)
    assert not factored_frame_fits(np.array([0.64]), 128)
    assert not factored_frame_fits(np.array([1.55]), 128)


def test_a_factored_frame_stream_does_not_drift_with_the_rounding_of_lambda_to_the_k():
    """The free response of 200 slow modes (1 − |λ| ≤ 1e-3) over 16384 steps in frames of 32:
    the carried state meets λ^K as a_{K−1} ⊙ (q_hi + q_lo), so its error is the products'
    rounding alone (median 7.0e-6, as the chunked frame's 7.4e-6); q rounded once to float32
    instead measured a median of 1.0e-5."""
    rng = np.random.default_rng(0)
    lam = np.exp(-rng.uniform(1e-6, 1e-3, 200) + 1j * rng.uniform(-3, 3, 200))
    s, zero = factored_frame_session(lam, 1, 32), np.zeros((1, 32, 2, 200), np.float32)
    state = planes(np.ones((1, 200)), 1)
    for _ in range(512):
        state = s.run(["last"], {"v": zero, "s": state})[0]
    want = lam ** (32 * 512)
    error = np.abs(state[0, 0] + 1j * state[0, 1] - want) / np.abs(want)
    assert np.median(error) <= 9e-6 and error.max() <= 3e-5


def test_a_layer_with_a_mode_outside_the_factored_range_frames_by_chunks(tmp_path):
    """A fast mode (|λ̄| ≈ 0.007) sends its layer to the chunked frame (per-state boundary and
    chunk maps), the other layer keeps the factored one, and the graph streams exactly."""
    model = make_s5(seed=1, state_sizes=(8, 4))
    with torch.no_grad():
        model.layers[0].seq.Lambda_re[0] = -500.0
    path = export(model, tmp_path, frame=32).step.path
    names = {i.name.rsplit("_", 1)[0] for i in onnx.load(str(path)).graph.initializer}
    assert {"layers.0/ssm/scan/bounds", "layers.1/ssm/scan/running"} <= names
    assert "layers.0/ssm/scan/running" not in names
    x = random_input(model, 2, 64, seed=3)
    assert rel_err(stream_frames(path, x, 32)[0], model_steps(model, x)[0]) <= 1e-5


def test_the_lean_step_update_is_the_split_pair_update_bit_for_bit():
    """step_states (9 nodes on the pairs as they are) computes the same float32 products and
    sums as the update on split (re, im) parts it replaced (27 nodes)."""
    from aire_export.graphs.builder import GraphBuilder
    from aire_export.graphs.recurrence import join_pair, scaled_pair, split_pair, step_states

    rng = np.random.default_rng(0)
    lam = 0.999 * np.exp(1j * rng.uniform(-3, 3, (4, 6)))
    feeds = {n: rng.standard_normal((3, 4, 6, 2)).astype(np.float32) for n in ("x", "v")}
    outputs = []
    for lean in (True, False):
        g = GraphBuilder("step", 17)
        x, v = (g.input(n, "float32", [3, 4, 6, 2]) for n in ("x", "v"))
        if lean:
            new = step_states(g, x, lam, v, 4)
        else:
            re, im = scaled_pair(g, *split_pair(g, x, 4), lam)
            v_re, v_im = split_pair(g, v, 4)
            new = join_pair(g, g.add(re, v_re), g.add(im, v_im), 4)
        g.output("new", new, "float32", [3, 4, 6, 2])
        s, state = session(g.model("test")), feeds["x"]
        for _ in range(50):
            state = s.run(None, {"x": state, "v": feeds["v"]})[0]
        outputs.append(state)
    assert np.array_equal(outputs[0], outputs[1])


def test_an_unstable_layer_streams_in_frames_whose_powers_stay_finite(tmp_path):
    """|λ̄| > 1 (a model trained without eigenvalue clipping): frames up to the float32 power
    limit are finite and exact; a longer frame is refused with the frame that fits."""
    model = make_s5(seed=1, clip_eigs=False, state_sizes=(8, 4))
    with torch.no_grad():
        model.layers[1].seq.Lambda_re[:2] = 40.0  # |λ̄| ≈ 3.06: λ̄^79 is the last finite power
    path = export(model, tmp_path / "ok", frame=8).step.path
    x = random_input(model, 1, 16, seed=2)
    got, _ = stream_frames(path, x, 8)
    assert np.isfinite(got).all() and rel_err(got, model_steps(model, x)[0]) <= 1e-5
    with pytest.raises(InputError, match=r"λ̄\^128 overflows float32.*--frame 79 or less"):
        export(model, tmp_path / "over", frame=128)


@pytest.mark.parametrize("source", ["--length", "--data"])
def test_a_frame_longer_than_the_parity_sequences_is_refused_before_pruning(
    tmp_path, capsys, source
):
    model = make_s5(seed=1, state_sizes=(8, 8))
    path = ax.save(model, tmp_path / "m.pt")
    if source == "--data":
        np.savez(tmp_path / "eval.npz", x=random_input(model, 4, 12).numpy())
        args = ["--data", tmp_path / "eval.npz"]
    else:
        args = ["--length", "12"]
    code, _, err = run(capsys, path, "--ratio", "0.5", "--frame", "16", *args, "--no-latency")
    line = one_error_line(err)
    assert code == 2 and "frames of 16 steps" in line and "have 12" in line
    assert "· score" not in err and not (tmp_path / "m.aire").exists()
