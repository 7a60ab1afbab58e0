"""Mamba-1 (issue 12): import from transformers / mamba_ssm folders, the model and its scans,
state pruning on calibration data, the ONNX sequence and decode graphs, the CLI job.

The reference is transformers' own ``MambaForCausalLM`` (a dev dependency), random weights
made non-trivial, saved with ``save_pretrained``; float64 parity is against our own model.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

import aire_export as ax
from aire_export.checkpoints.hf_mamba import import_hf_mamba
from aire_export.cli import main
from aire_export.errors import CheckpointError, InputError
from aire_export.models import family_of
from aire_export.models.mamba import (
    MambaConfig,
    MambaLM,
    init_mamba,
    linear_scan,
    selective_scan,
    sequential_scan,
)
from aire_export.prune.shrink import mask_model

transformers = pytest.importorskip("transformers")

VOCAB = 48


def _hf_config(**overrides):
    options = dict(
        vocab_size=VOCAB,
        hidden_size=16,
        state_size=8,
        num_hidden_layers=2,
        expand=2,
        conv_kernel=4,
        time_step_rank=4,
        use_bias=False,
        use_conv_bias=True,
        residual_in_fp32=True,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.MambaConfig(**(options | overrides))


def _randomized(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights with some spread (A_log, D, Δ's bias, norms included), so every part matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("A_log"):
                p.copy_(torch.log(torch.rand(p.shape, generator=g) * 4 + 0.5))
            elif name.endswith("dt_proj.bias"):
                p.copy_(torch.rand(p.shape, generator=g) * 3 - 4)
            elif name.endswith(("norm.weight", "norm_f.weight", ".D")):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    return _randomized(transformers.MambaForCausalLM(_hf_config()), seed=1)


@pytest.fixture(scope="module")
def hf_folder(hf_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "mamba"
    hf_model.save_pretrained(folder)
    return folder


def _tokens(batch: int, length: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, length)).astype(np.int64)


def _hf_logits(hf_model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return hf_model(torch.from_numpy(x)).logits.numpy()


def _ours(model: MambaLM, x: np.ndarray, dtype=torch.float64) -> np.ndarray:
    net = copy.deepcopy(model).to(dtype).eval()
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def _write_variant(folder, state_dict, config: dict, *, binary: bool = False) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    if binary:
        torch.save(state_dict, folder / "pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state_dict.items()}, folder / "model.safetensors")


# ---- import -------------------------------------------------------------------------------------
def test_a_transformers_folder_imports_with_its_logits(hf_model, hf_folder):
    model = import_hf_mamba(hf_folder)
    assert model.config.state_sizes == [8, 8] and model.config.d_inner == 32
    assert model.config.tie_embeddings and model.meta["source_format"] == "hf-mamba"
    x = _tokens(2, 40)
    assert np.abs(_ours(model, x, torch.float32) - _hf_logits(hf_model, x)).max() <= 1e-4


def test_the_import_needs_no_transformers_at_run_time(hf_folder):
    """``ax.import_checkpoint("hf-mamba", DIR)`` in a fresh process never imports transformers."""
    import subprocess
    import sys

    code = (
        "import sys, aire_export as ax; "
        f"m = ax.import_checkpoint('hf-mamba', {str(hf_folder)!r}); "
        "assert 'transformers' not in sys.modules, 'transformers was imported'; "
        "print(m.config.state_sizes)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1000:]
    assert done.stdout.strip() == "[8, 8]"


def test_pytorch_model_bin_and_mamba_ssm_names_import_the_same_model(hf_model, tmp_path):
    sd = hf_model.state_dict()
    hf_config = json.loads(hf_model.config.to_json_string())
    _write_variant(tmp_path / "bin", sd, hf_config, binary=True)
    renamed = {
        k.replace("backbone.embeddings", "backbone.embedding"): v
        for k, v in sd.items()
        if k != "lm_head.weight"  # tied: mamba_ssm saves it too, but it is the embedding
    }
    ssm_config = {
        "d_model": 16,
        "n_layer": 2,
        "vocab_size": VOCAB,
        "ssm_cfg": {"d_state": 8, "d_conv": 4, "expand": 2},
        "rms_norm": True,
        "residual_in_fp32": True,
        "tie_embeddings": True,
        "pad_vocab_size_multiple": 1,
    }
    _write_variant(tmp_path / "ssm", renamed, ssm_config)
    x = _tokens(2, 30, seed=1)
    want = _hf_logits(hf_model, x)
    for folder in ("bin", "ssm"):
        model = import_hf_mamba(tmp_path / folder)
        assert np.abs(_ours(model, x, torch.float32) - want).max() <= 1e-4, folder


def test_a_mamba_model_without_its_head_imports_with_the_tied_head(hf_model, tmp_path):
    backbone = hf_model.backbone
    backbone.save_pretrained(tmp_path / "backbone")  # MambaModel: no prefix, no lm_head
    model = import_hf_mamba(tmp_path / "backbone")
    x = _tokens(1, 25, seed=2)
    assert np.abs(_ours(model, x, torch.float32) - _hf_logits(hf_model, x)).max() <= 1e-4


def test_an_untied_head_is_imported(tmp_path):
    torch.manual_seed(3)
    hf = _randomized(transformers.MambaForCausalLM(_hf_config(tie_word_embeddings=False)), seed=3)
    hf.save_pretrained(tmp_path / "untied")
    model = import_hf_mamba(tmp_path / "untied")
    assert not model.config.tie_embeddings
    x = _tokens(1, 20, seed=3)
    assert np.abs(_ours(model, x, torch.float32) - _hf_logits(hf, x)).max() <= 1e-4


@pytest.mark.parametrize(
    "damage, message",
    [
        ("mamba2", "Mamba-2 model"),
        ("llama", "'llama' model, not Mamba"),
        ("no-weights", "has no model.safetensors"),
        ("no-config", "has no config.json"),
        ("state-size", "config.json does not match the weights: d_state 16"),
        ("broken-json", "is not JSON"),
        ("broken-safetensors", "is not a readable safetensors file"),
    ],
)
def test_folders_we_cannot_import_get_one_line_and_exit_2(
    hf_folder, tmp_path, capsys, damage, message
):
    folder = tmp_path / damage
    folder.mkdir()
    config = json.loads((hf_folder / "config.json").read_text())
    weights = (hf_folder / "model.safetensors").read_bytes()
    if damage == "mamba2":
        config["model_type"] = "mamba2"
    elif damage == "llama":
        config["model_type"] = "llama"
    elif damage == "state-size":
        config["state_size"] = 16
    if damage != "no-config":
        text = "{not json" if damage == "broken-json" else json.dumps(config)
        (folder / "config.json").write_text(text)
    if damage != "no-weights":
        data = weights[:100] if damage == "broken-safetensors" else weights
        (folder / "model.safetensors").write_bytes(data)
    with pytest.raises(CheckpointError, match=message):
        import_hf_mamba(folder)
    code = main(["import", "hf-mamba", str(folder), "-o", str(tmp_path / "out.pt")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message.split("'")[0] in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out.pt").exists()


def test_the_cli_imports_a_folder_and_inspect_shows_each_layers_d_state(
    hf_folder, tmp_path, capsys
):
    out = tmp_path / "mamba.pt"
    assert main(["import", "hf-mamba", str(hf_folder), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "mamba"
    assert [layer["states"] for layer in info["layers"]] == [8, 8]


# ---- the model -------------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [1, 5, 31, 32, 33, 100, 1025])
def test_the_chunked_torch_scan_is_the_sequential_scan(length):
    g = torch.Generator().manual_seed(length)
    a = torch.rand(2, length, 3, 4, generator=g, dtype=torch.float64)
    b = torch.randn(2, length, 3, 4, generator=g, dtype=torch.float64)
    assert torch.allclose(linear_scan(a, b), sequential_scan(a, b), rtol=0, atol=1e-12)


@pytest.mark.parametrize("length", [1, 31, 32, 33, 100, 1025])
def test_the_inference_scan_reads_out_what_the_states_give(length):
    g = torch.Generator().manual_seed(length)
    delta = torch.rand(2, length, 5, generator=g, dtype=torch.float64)
    inputs = torch.randn(2, length, 5, generator=g, dtype=torch.float64)
    B, C = (torch.randn(2, length, 3, generator=g, dtype=torch.float64) for _ in range(2))
    A = -torch.rand(3, 5, generator=g, dtype=torch.float64) * 3
    states = sequential_scan(
        torch.exp(delta[:, :, None, :] * A), B[..., None] * inputs[:, :, None, :]
    )
    want = (C[:, :, None, :] @ states).squeeze(2)
    assert torch.allclose(selective_scan(delta, inputs, B, C, A), want, rtol=0, atol=1e-12)


def small_mamba(seed: int = 0, state_sizes=(8, 6)) -> MambaLM:
    cfg = MambaConfig(
        d_model=16, state_sizes=list(state_sizes), vocab_size=VOCAB, d_inner=32, dt_rank=4
    )
    return _randomized(init_mamba(MambaLM(cfg), seed=seed), seed)


def test_step_by_step_decoding_is_the_sequence_forward():
    model = small_mamba().double()
    x = torch.from_numpy(_tokens(2, 20, seed=4))
    with torch.no_grad():
        full = model(x)
        state, steps = model.init_state(2), []
        for t in range(x.shape[1]):
            y, state = model.step(x[:, t], state)
            steps.append(y)
    assert torch.allclose(torch.stack(steps, 1), full, rtol=0, atol=1e-12)
    with torch.no_grad():
        assert torch.allclose(model(x, scan=sequential_scan), full, rtol=0, atol=1e-12)


def _calib(model, count=4, length=48, seed=5):
    return _tokens(count, length, seed)  # the API takes the array x (or an npz, SequenceData)


def test_scores_of_a_selective_model_need_calibration_data():
    model = small_mamba()
    with pytest.raises(InputError, match="--calib"):
        ax.score(model)
    layers = ax.score(model, calib=_calib(model))
    assert [layer.n_units for layer in layers] == [8, 6]


@pytest.mark.parametrize("method", ["aire", "ghost", "magnitude-global", "random"])
def test_half_the_states_pruned_shrink_and_mask_agree(method):
    model = small_mamba(seed=1).double()
    pruned, plan = ax.prune(model, 0.5, calib=_calib(model), method=method)
    assert sum(pruned.config.state_sizes) == 7
    assert all(layer.certificate is None for layer in plan.layers)
    assert all(layer.calib_distortion is not None for layer in plan.layers)
    masked = mask_model(model, [layer.kept for layer in plan.layers])
    x = _tokens(2, 40, seed=6)
    assert rel(_ours(pruned, x), _ours(masked, x)) <= 1e-12
    n_params = sum(p.numel() for p in pruned.parameters())
    assert n_params < sum(p.numel() for p in model.parameters())


def test_a_pruned_mamba_saves_and_loads_with_its_per_layer_d_state(tmp_path, capsys):
    model = small_mamba(seed=2)
    pruned, _ = ax.prune(model, 0.5, calib=_calib(model))
    path = ax.save(pruned, tmp_path / "pruned.pt")
    loaded = ax.load(path)
    assert loaded.config.state_sizes == pruned.config.state_sizes
    x = _tokens(1, 20, seed=7)
    assert rel(_ours(loaded, x), _ours(pruned, x)) == 0
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [layer["states"] for layer in info["layers"]] == pruned.config.state_sizes


# ---- the graphs --------------------------------------------------------------------------------------
def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _decode(path, x: np.ndarray) -> np.ndarray:
    """Logits at every position by feeding the decode graph one token at a time."""
    session = _session(path)
    names = [o.name for o in session.get_outputs()]
    feeds = {
        i.name: np.zeros([x.shape[0], *i.shape[1:]], np.float32)
        for i in session.get_inputs()
        if i.name != "x"
    }
    ys = []
    for t in range(x.shape[1]):
        out = dict(zip(names, session.run(None, {**feeds, "x": x[:, t]}), strict=True))
        feeds = {name: out[f"{name}_out"] for name in feeds}
        ys.append(out["y"])
    return np.stack(ys, 1)


@pytest.mark.parametrize("scan", ["chunked", "scan"])
def test_the_sequence_graph_holds_1e5_of_float64_at_1_17_and_1024_steps(tmp_path, scan):
    model = small_mamba(seed=3)
    result = ax.export(model, tmp_path, scan=scan)
    assert result.sequence.scan == scan and result.check is None
    session = _session(result.sequence.path)
    for length in (1, 17, 1024):
        x = _tokens(2, length, seed=length)
        (y,) = session.run(None, {"x": x})
        assert y.shape == (2, length, VOCAB)
        assert rel(y, _ours(model, x)) <= 1e-5, length


def test_the_decode_graph_matches_float64_over_64_steps(tmp_path):
    pruned, _ = ax.prune(small_mamba(seed=4), 0.5, calib=_calib(small_mamba(seed=4)))
    result = ax.export(pruned, tmp_path)
    names = [(s.name, s.shape) for s in result.step.inputs]
    E = pruned.config.d_inner
    assert names[1:] == [
        ("state_0_conv", ("batch", E, 3)),
        ("state_0_ssm", ("batch", E, pruned.config.state_sizes[0])),
        ("state_1_conv", ("batch", E, 3)),
        ("state_1_ssm", ("batch", E, pruned.config.state_sizes[1])),
    ]
    x = _tokens(2, 64, seed=8)
    assert rel(_decode(result.step.path, x), _ours(pruned, x)) <= 1e-5


def test_the_graphs_match_transformers_forward_and_greedy_generate(hf_model, hf_folder, tmp_path):
    model = import_hf_mamba(hf_folder)
    result = ax.export(model, tmp_path)
    x = _tokens(2, 50, seed=12)  # the sequence graph against transformers' own forward
    (y,) = _session(result.sequence.path).run(None, {"x": x})
    assert np.abs(y - _hf_logits(hf_model, x)).max() <= 1e-4
    prompt = _tokens(1, 6, seed=9)
    with torch.no_grad():
        want = hf_model.generate(
            torch.from_numpy(prompt), max_new_tokens=64, do_sample=False, use_cache=True
        )[0, prompt.shape[1] :].numpy()
    session = _session(result.step.path)
    names = [o.name for o in session.get_outputs()]
    feeds = {
        i.name: np.zeros([1, *i.shape[1:]], np.float32)
        for i in session.get_inputs()
        if i.name != "x"
    }
    tokens, token = [], None
    for t in range(prompt.shape[1] + 63):
        x = prompt[:, t] if t < prompt.shape[1] else np.array([token], np.int64)
        out = dict(zip(names, session.run(None, {**feeds, "x": x}), strict=True))
        feeds = {name: out[f"{name}_out"] for name in feeds}
        if t >= prompt.shape[1] - 1:
            token = int(out["y"][0].argmax())
            tokens.append(token)
    assert len(set(want.tolist())) >= 3  # the comparison is not about one repeated token
    assert tokens == want.tolist()


def _initializers(graph):
    """Every initializer of a graph and of its Scan bodies."""
    out = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == attr.GRAPH:
                out += _initializers(attr.g)
    return out


@pytest.mark.parametrize("scan", ["chunked", "scan"])
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_graphs_keep_the_recurrence_in_float32(tmp_path, precision, scan):
    import onnx

    model = small_mamba(seed=5)
    result = ax.export(model, tmp_path, precision=precision, scan=scan)
    half = {"fp16": onnx.TensorProto.FLOAT16, "bf16": onnx.TensorProto.BFLOAT16}[precision]
    for path in (result.sequence.path, result.step.path):
        consts = _initializers(onnx.load(str(path)).graph)
        assert any(t.data_type == half for t in consts)  # the projections are half
        A = [t for t in consts if t.name.rsplit("/", 1)[-1].startswith("A_")]
        assert A and all(t.data_type == onnx.TensorProto.FLOAT for t in A)  # decays: float32
    if precision == "fp16":
        x = _tokens(2, 64, seed=10)
        (y,) = _session(result.sequence.path).run(None, {"x": x})
        assert rel(y, _ours(model, x)) <= 2e-3


def test_the_tensorrt_check_passes_both_graphs(tmp_path):
    result = ax.export(small_mamba(seed=6), tmp_path, target="trt")
    assert result.sequence.scan == "chunked"  # no Scan node on a GPU target
    assert result.check is not None and result.check.ok, result.check.to_json()


def test_toeplitz_and_logdepth_are_refused_for_selective_layers(tmp_path):
    for scan in ("toeplitz", "logdepth"):
        with pytest.raises(InputError, match="selective"):
            ax.export(small_mamba(), tmp_path, scan=scan)


# ---- the whole job -----------------------------------------------------------------------------------
def test_the_cli_job_prunes_half_the_states_and_writes_the_folder(tmp_path, capsys):
    model = small_mamba(seed=7)
    path = ax.save(model, tmp_path / "mamba.pt")
    x = _tokens(8, 64, seed=11)
    np.savez(tmp_path / "c.npz", x=x[:4])
    y = _ours(model, x[4:]).argmax(-1)  # labels the model gets right: accuracy is meaningful
    np.savez(tmp_path / "eval.npz", x=x[4:], y=y)
    code = main(
        [
            str(path),
            "--ratio",
            "0.5",
            "--calib",
            str(tmp_path / "c.npz"),
            "--data",
            str(tmp_path / "eval.npz"),
            "--runs",
            "3",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    report = json.loads(out)
    drop = report["accuracy"]["drop_pp"]
    assert code == (0 if drop <= 1.0 else 7), err
    assert report["model"]["arch"] == "mamba"
    assert report["model"]["states_after"] == report["model"]["states_before"] // 2
    assert {p["graph"] for p in report["parity"]} == {"model.onnx", "model.step.onnx"}
    assert all(p["passed"] for p in report["parity"])
    assert all(layer["calib_distortion"] is not None for layer in report["plan"]["layers"])
    folder = tmp_path / "mamba.aire"
    assert {"pruned.pt", "plan.json", "model.onnx", "model.step.onnx", "report.md"} <= {
        p.name for p in folder.iterdir()
    }
    assert "distortion" in (folder / "report.md").read_text()
    assert family_of(ax.load(folder / "pruned.pt")).name == "mamba"


def test_the_job_without_calibration_data_says_to_pass_calib(tmp_path, capsys):
    path = ax.save(small_mamba(), tmp_path / "mamba.pt")
    code = main([str(path), "--ratio", "0.5"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert code == 2 and len(errors) == 1 and "pass --calib data.npz" in errors[0]


def test_negative_labels_are_not_scored_and_lengths_are_refused(tmp_path):
    from aire_export.data import load_data
    from aire_export.validate.accuracy import accuracy

    model = small_mamba()
    x = _tokens(2, 10)
    logits = _ours(model, x)
    y = np.full(x.shape, -100)
    y[:, -3:] = logits[:, -3:].argmax(-1)
    y[0, -1] = (y[0, -1] + 1) % VOCAB  # one of the six scored answers is wrong
    result = accuracy(logits, y)
    assert (result.correct, result.total) == (5, 6)
    np.savez(tmp_path / "lengths.npz", x=x, y=y, lengths=np.array([10, 8]))
    with pytest.raises(InputError, match="label the padded positions −100"):
        load_data(tmp_path / "lengths.npz", model)
    np.savez(tmp_path / "none.npz", x=x, y=np.full(x.shape, -100))
    with pytest.raises(InputError, match="nothing to measure accuracy on"):
        load_data(tmp_path / "none.npz", model)


def test_a_sweep_of_a_mamba_model_compares_the_selective_scores(tmp_path, capsys):
    model = small_mamba(seed=8)
    path = ax.save(model, tmp_path / "mamba.pt")
    x = _tokens(6, 32, seed=13)
    np.savez(tmp_path / "c.npz", x=x[:3])
    np.savez(tmp_path / "eval.npz", x=x[3:], y=_ours(model, x[3:]).argmax(-1))
    args = [
        "sweep",
        str(path),
        "--data",
        str(tmp_path / "eval.npz"),
        "--ratios",
        "0,0.5",
        "--out",
        str(tmp_path / "sweep"),
        "--json",
    ]
    assert main(args) == 2  # without --calib: one line saying to pass it
    assert "pass --calib" in capsys.readouterr().err
    assert main([*args, "--calib", str(tmp_path / "c.npz")]) == 0
    result = json.loads(capsys.readouterr().out)
    points = {(p["method"], p["ratio"]): p for p in result["points"]}
    assert {method for method, _ in points} == {"aire", "ghost", "magnitude-global", "random"}
    assert all(points[(m, 0.0)]["accuracy"] == 1.0 for m in ("aire", "ghost"))
    assert all(points[(m, 0.5)]["states_kept"] == 7 for m in ("aire", "ghost", "random"))
