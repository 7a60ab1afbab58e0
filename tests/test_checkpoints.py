"""Our checkpoint format, its safety, and the importers of foreign checkpoints."""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import OFFICIAL, S5_CORE_OPTIONS, make_s4d, make_s5, option_id, rel_err

import aire_export as ax
from aire_export.checkpoints import import_checkpoint
from aire_export.cli import main
from aire_export.errors import CheckpointError, InputError, OutputError, UnsafeCheckpointError
from aire_export.files import write_atomically
from aire_export.models import modal_systems


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this-must-not-run > pwned.txt",))


@pytest.mark.parametrize(
    "model",
    [make_s5(**o) for o in S5_CORE_OPTIONS] + [make_s4d(shared_A=True, learn_B=True), make_s4d()],
    ids=[option_id(o) for o in S5_CORE_OPTIONS] + ["s4d-shared-B", "s4d"],
)
def test_save_load_round_trip_is_exact(tmp_path, model):
    path = ax.save(model, tmp_path / "m.pt", meta={"note": "x"})
    loaded = ax.load(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    for (k, a), (k2, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(2, 11, model.config.d_input)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.meta["note"] == "x"


def test_saved_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = ax.save(make_s5(), tmp_path / "m.pt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"format": "aire-export/1", "payload": _RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match="could run code"):
        ax.load(tmp_path / "evil.pt")
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(_RunsCode(), f)
    with pytest.raises(UnsafeCheckpointError):
        ax.load(tmp_path / "evil.pkl")
    assert not (tmp_path / "pwned.txt").exists()


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint\n", b"PK\x03\x04garbage"])
def test_unreadable_files_give_checkpoint_errors(tmp_path, content):
    (tmp_path / "bad.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        ax.load(tmp_path / "bad.pt")


def test_truncated_checkpoint_is_reported(tmp_path):
    path = ax.save(make_s5(), tmp_path / "m.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        ax.load(path)


# ---- files torch cannot read, and files it must not read ----------------------------------------

FORBIDDEN = f"{os.system.__module__}.system"  # what _RunsCode pickles: posix.system on Linux


def _not_a_checkpoint(path) -> str:
    return f"{path} is not a readable checkpoint (not a PyTorch checkpoint)"


def _refusal(path) -> str:
    return (
        f"refused {path}: it contains pickled Python objects that could run code when loaded "
        f"({FORBIDDEN}). Re-save the weights with aire_export.save() from a trusted session"
    )


def _readable_error(path) -> CheckpointError:
    """The CheckpointError loading ``path`` raises; it must not call the file unsafe."""
    with pytest.raises(CheckpointError) as caught:
        ax.load(path)
    assert not isinstance(caught.value, UnsafeCheckpointError), caught.value
    return caught.value


@pytest.mark.parametrize(
    "content",
    [b"", b"a", b"x", b"all good\n", b"hello\n", b"just some text\n"],
    ids=["empty", "a", "x", "all-good", "hello", "text"],
)
def test_short_text_and_tiny_files_are_not_pytorch_checkpoints(tmp_path, content):
    path = tmp_path / "x.pt"
    path.write_bytes(content)  # torch raises IndexError, KeyError, EOFError, UnpicklingError
    assert str(_readable_error(path)) == _not_a_checkpoint(path)


@pytest.mark.parametrize(
    "content",
    [random.Random(0).randbytes(n) for n in (1, 2, 3, 8, 64, 1000)]
    + [b"\x80\x02" + random.Random(0).randbytes(64)],  # the header of a protocol 2 pickle
    ids=["1", "2", "3", "8", "64", "1000", "pickle-header+64"],
)
def test_random_bytes_are_unreadable_never_unsafe(tmp_path, content):
    (tmp_path / "r.pt").write_bytes(content)
    assert "is not a readable checkpoint (" in str(_readable_error(tmp_path / "r.pt"))


def test_truncated_legacy_checkpoint_is_unreadable_not_unsafe(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save(_payload(make_s5()), path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:100])
    assert (
        str(_readable_error(path))
        == f"{path} is not a readable checkpoint (truncated or corrupted)"
    )


def _save_runs_code(path, writer: str) -> None:
    obj = {"format": "aire-export/1", "payload": _RunsCode(), "t": torch.zeros(2)}
    if writer == "torch.save":
        torch.save(obj, path)
    elif writer.startswith("torch.save legacy"):
        torch.save(obj, path, _use_new_zipfile_serialization=False, pickle_protocol=int(writer[-1]))
    elif writer.startswith("torch.save protocol"):
        torch.save(obj, path, pickle_protocol=int(writer[-1]))
    else:
        with open(path, "wb") as f:
            pickle.dump(_RunsCode(), f, protocol=int(writer[-1]))


@pytest.mark.parametrize(
    "writer",
    ["torch.save", "torch.save legacy 2", "torch.save legacy 4", "torch.save protocol 4"]
    + [f"pickle.dump protocol {p}" for p in range(pickle.HIGHEST_PROTOCOL + 1)],
)
def test_pickles_naming_a_forbidden_global_are_refused_as_unsafe(tmp_path, monkeypatch, writer):
    monkeypatch.chdir(tmp_path)
    _save_runs_code(tmp_path / "evil.pt", writer)
    with pytest.raises(UnsafeCheckpointError) as caught:
        ax.load(tmp_path / "evil.pt")
    assert str(caught.value) == _refusal(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned.txt").exists()


def test_safe_checkpoint_saved_with_pickle_protocol_4_is_not_called_unsafe(tmp_path):
    model = make_s5()
    torch.save(_payload(model), tmp_path / "p4.pt", pickle_protocol=4)
    assert "saved with pickle protocol 4 or later" in str(_readable_error(tmp_path / "p4.pt"))


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_archive_is_named_not_called_corrupted(tmp_path):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "ts.pt")
    assert "a TorchScript archive, not saved weights" in str(_readable_error(tmp_path / "ts.pt"))


def test_torch_warnings_are_silenced_when_a_checkpoint_is_refused(tmp_path):
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(_RunsCode(), f, protocol=4)  # torch warns: "Detected pickle protocol 4 ..."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(UnsafeCheckpointError):
            ax.load(tmp_path / "evil.pkl")
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_interrupts_inside_torch_load_are_not_turned_into_checkpoint_errors(
    tmp_path, monkeypatch, interrupt
):
    path = ax.save(make_s5(), tmp_path / "m.pt")

    def interrupted(*args, **kwargs):
        raise interrupt()

    monkeypatch.setattr(torch, "load", interrupted)
    with pytest.raises(interrupt):
        ax.load(path)


def _cli_error(capsys, tmp_path, *args) -> str:
    """Run ``aire-export ARGS`` in tmp_path: exit 2, exactly one ``error: `` line on stderr, no
    traceback, no file written; returns that line."""
    before = set(tmp_path.iterdir())
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert set(tmp_path.iterdir()) == before
    return lines[0]


@pytest.mark.parametrize("content", [b"", b"a", b"hello\n"], ids=["empty", "a", "hello"])
def test_cli_text_file_is_one_line_not_a_checkpoint(tmp_path, capsys, content):
    (tmp_path / "x.pt").write_bytes(content)
    line = _cli_error(capsys, tmp_path, "inspect", tmp_path / "x.pt")
    assert line == "error: " + _not_a_checkpoint(tmp_path / "x.pt")


def test_cli_random_bytes_are_one_line_unreadable_not_unsafe(tmp_path, capsys):
    (tmp_path / "r.pt").write_bytes(random.Random(0).randbytes(64))
    line = _cli_error(capsys, tmp_path, "inspect", tmp_path / "r.pt")
    assert line == "error: " + _not_a_checkpoint(tmp_path / "r.pt")


def test_cli_pickle_naming_a_forbidden_global_is_one_line_refusal(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _save_runs_code(tmp_path / "evil.pt", "pickle.dump protocol 4")
    line = _cli_error(capsys, tmp_path, "inspect", tmp_path / "evil.pt")
    assert line == "error: " + _refusal(tmp_path / "evil.pt")


def test_cli_refusal_prints_our_line_and_no_torch_warning(tmp_path):
    """In a real process (pytest would capture the warnings): stderr is our one line."""
    _save_runs_code(tmp_path / "evil.pt", "pickle.dump protocol 4")
    env = {k: v for k, v in os.environ.items() if k not in ("AIRE_EXPORT_DEBUG", "PYTHONWARNINGS")}
    run = subprocess.run(
        [sys.executable, "-W", "default", "-m", "aire_export", "inspect", "evil.pt"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2
    assert run.stderr.splitlines() == ["error: " + _refusal("evil.pt")]
    assert not (tmp_path / "pwned.txt").exists()


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        ax.load(tmp_path / "nope.pt")
    with pytest.raises(InputError, match="is a folder"):
        ax.load(tmp_path)


def test_bare_state_dict_points_to_import(tmp_path):
    torch.save(make_s5().state_dict(), tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="bare state_dict"):
        ax.load(tmp_path / "sd.pt")


def _payload(model) -> dict:
    return {
        "format": "aire-export/1",
        "arch": model.arch,
        "config": model.config.to_dict(),
        "state_dict": dict(model.state_dict()),
    }


def test_non_finite_weights_are_refused(tmp_path):
    payload = _payload(make_s5())
    payload["state_dict"]["layers.1.seq.B"] = payload["state_dict"]["layers.1.seq.B"].clone()
    payload["state_dict"]["layers.1.seq.B"][0, 0, 0] = float("nan")
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=r"non-finite.*layers\.1\.seq\.B"):
        ax.load(tmp_path / "nan.pt")


def test_weights_of_the_wrong_shape_for_the_config_are_refused(tmp_path):
    payload = _payload(make_s5())
    payload["config"]["state_sizes"] = [8, 6]
    torch.save(payload, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"wrong shape layers\.1\.seq"):
        ax.load(tmp_path / "shape.pt")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"arch": "transformer"}, "unknown architecture"),
        ({"format": "other/2"}, "not an aire-export checkpoint"),
        ({"config": {"d_model": 3}}, "missing field"),
        ({"config": {"bogus": 1}}, "unknown S5Config field"),
        ({"config": {"activation": "relu"}}, "config.activation"),
    ],
)
def test_bad_payloads_are_explained(tmp_path, change, message):
    payload = _payload(make_s5())
    for key, value in change.items():
        if key == "config" and "d_model" in value:
            payload["config"] = value
        elif key == "config":
            payload["config"] = {**payload["config"], **value}
        else:
            payload[key] = value
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=message):
        ax.load(tmp_path / "bad.pt")


def test_failed_save_leaves_nothing_behind(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        ax.save(make_s5(), tmp_path / "missing-folder" / "m.pt")

    def broken_writer(f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(tmp_path / "m.pt", broken_writer)
    assert list(tmp_path.iterdir()) == []


# ---- official S5 / AIRE-Prune flax checkpoint ------------------------------------------------


def test_official_checkpoint_reproduces_official_logits(official_model):
    ref = np.load(OFFICIAL / "logits_full.npy")
    tokens = torch.from_numpy(np.load(OFFICIAL / "tokens.npy"))
    one_hot = torch.from_numpy(np.load(OFFICIAL / "inputs.npy"))
    with torch.no_grad():
        assert np.abs(official_model(tokens).numpy() - ref).max() <= 1e-4
        assert np.abs(official_model(one_hot).numpy() - ref).max() <= 1e-4


def test_official_checkpoint_modal_view_equals_official_discretization(official_model):
    disc = np.load(OFFICIAL / "ssm_discrete.npz")
    for i, system in enumerate(modal_systems(official_model)):
        np.testing.assert_allclose(system.lam, disc[f"layer{i}_Lambda_bar"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(system.B, disc[f"layer{i}_B_bar"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(
            np.concatenate(system.C, axis=1), disc[f"layer{i}_C_tilde"], rtol=1e-6, atol=1e-7
        )
        np.testing.assert_allclose(system.D, disc[f"layer{i}_D"], rtol=1e-7)
        assert system.conj_sym and system.bidirectional


def test_official_config_is_read_from_run_args(official_model):
    cfg = official_model.config
    assert (cfg.d_input, cfg.d_model, cfg.d_output, cfg.state_sizes) == (16, 32, 4, [16, 16, 16])
    assert cfg.bidirectional and cfg.conj_sym and not cfg.clip_eigs
    assert (cfg.activation, cfg.pooling, cfg.norm, cfg.input_kind) == (
        "half_glu2",
        "pool",
        "batch",
        "tokens",
    )
    assert official_model.meta["train_step"] == 256


def test_run_args_that_contradict_the_weights_are_refused(tmp_path):
    args = json.loads((OFFICIAL / "config.json").read_text())
    args["ssm_size_base"] = 64
    with pytest.raises(CheckpointError, match="ssm_size_base=64"):
        import_checkpoint("s5-flax", OFFICIAL / "best_state.msgpack", args)


def test_s5_flax_needs_run_args_and_a_msgpack():
    with pytest.raises(InputError, match=r"run_args\.json"):
        import_checkpoint("s5-flax", OFFICIAL / "best_state.msgpack")
    with pytest.raises(CheckpointError, match="not a flax msgpack"):
        import_checkpoint("s5-flax", OFFICIAL / "README.md", OFFICIAL / "config.json")


def _flax_tree(model) -> tuple[dict, dict]:
    """Write one of our S5 models as the reference flax parameter tree (for importer round trips)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}

    def dense(prefix):
        return {"kernel": sd[f"{prefix}.weight"].T.copy(), "bias": sd[f"{prefix}.bias"]}

    params = {"encoder": {"encoder": dense("encoder")}, "decoder": dense("decoder")}
    stats: dict = {"encoder": {}}
    cfg = model.config
    for i in range(cfg.n_layers):
        seq = {
            n: sd[f"layers.{i}.seq.{n}"] for n in ("Lambda_re", "Lambda_im", "B", "D", "log_step")
        }
        for n in ("C", "C1", "C2"):
            if f"layers.{i}.seq.{n}" in sd:
                seq[n] = sd[f"layers.{i}.seq.{n}"]
        layer = {"seq": seq}
        if cfg.norm == "batch":
            layer["norm"] = {
                "scale": sd[f"layers.{i}.norm.scale"],
                "bias": sd[f"layers.{i}.norm.bias"],
            }
            stats["encoder"][f"layers_{i}"] = {
                "norm": {"mean": sd[f"layers.{i}.norm.mean"], "var": sd[f"layers.{i}.norm.var"]}
            }
        else:
            layer["norm"] = {
                "scale": sd[f"layers.{i}.norm.weight"],
                "bias": sd[f"layers.{i}.norm.bias"],
            }
        for out in ("out1", "out2"):
            if f"layers.{i}.{out}.weight" in sd:
                layer[out] = dense(f"layers.{i}.{out}")
        params["encoder"][f"layers_{i}"] = layer
    return params, stats


def _pack_flax(path, params, stats) -> None:
    import msgpack

    def encode(obj):
        if isinstance(obj, np.ndarray):
            data = msgpack.packb(
                [list(obj.shape), obj.dtype.name, obj.tobytes()], use_bin_type=True
            )
            return msgpack.ExtType(1, data)
        raise TypeError(type(obj))

    state = {"step": 7, "params": params, "opt_state": {}, "batch_stats": stats}
    path.write_bytes(msgpack.packb(state, default=encode, use_bin_type=True))


@pytest.mark.parametrize(
    "options",
    [
        dict(activation="full_glu", norm="layer", norm_eps=1e-6, prenorm=False, pooling="last"),
        dict(activation="gelu", bidirectional=True, conj_sym=False, discretization="bilinear"),
        dict(activation="half_glu1", clip_eigs=True, step_rescale=2.0),
    ],
    ids=option_id,
)
def test_s5_flax_importer_covers_every_option(tmp_path, options):
    model = make_s5(seed=9, state_sizes=(8, 8), **options)
    params, stats = _flax_tree(model)
    _pack_flax(tmp_path / "best_state.msgpack", params, stats)
    cfg = model.config
    args = {
        "n_layers": 2,
        "d_model": cfg.d_model,
        "ssm_size_base": 16 if cfg.conj_sym else 8,
        "conj_sym": cfg.conj_sym,
        "clip_eigs": cfg.clip_eigs,
        "bidirectional": cfg.bidirectional,
        "discretization": cfg.discretization,
        "activation_fn": cfg.activation,
        "mode": cfg.pooling,
        "prenorm": cfg.prenorm,
        "batchnorm": cfg.norm == "batch",
        "step_rescale": cfg.step_rescale,
    }
    imported = import_checkpoint("s5-flax", tmp_path / "best_state.msgpack", args)
    assert imported.config == cfg.replace(output="log_softmax", dropout=0.0)
    x = torch.randn(2, 13, cfg.d_input)
    with torch.no_grad():
        assert torch.allclose(imported(x), model(x), atol=1e-6)


def test_s5_flax_complex_normal_bidirectional_single_C_is_split(tmp_path):
    model = make_s5(seed=2, bidirectional=True, state_sizes=(4,))
    params, stats = _flax_tree(model)
    seq = params["encoder"]["layers_0"]["seq"]
    seq["C"] = np.concatenate([seq.pop("C1"), seq.pop("C2")], axis=1)  # (H, 2P, 2)
    _pack_flax(tmp_path / "s.msgpack", params, stats)
    imported = import_checkpoint(
        "s5-flax", tmp_path / "s.msgpack", {"bidirectional": True, "activation_fn": "half_glu1"}
    )
    x = torch.randn(1, 9, 3)
    with torch.no_grad():
        assert torch.allclose(imported(x), model(x), atol=1e-6)


# ---- state-spaces S4D ---------------------------------------------------------------------------


def _reference_s4model(sd: dict, x: np.ndarray, prenorm: bool) -> np.ndarray:
    """state-spaces example.py S4Model forward in numpy float64, from its own key names."""
    from scipy.special import erf

    def ln(z, w, b):
        mu, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
        return (z - mu) / np.sqrt(var + 1e-5) * w + b

    g = {k: v.double().numpy() for k, v in sd.items()}
    h = x @ g["encoder.weight"].T + g["encoder.bias"]
    L = x.shape[1]
    i = 0
    while f"s4_layers.{i}.D" in g:
        p = f"s4_layers.{i}"
        z = ln(h, g[f"norms.{i}.weight"], g[f"norms.{i}.bias"]) if prenorm else h
        C = g[f"{p}.kernel.C"][..., 0] + 1j * g[f"{p}.kernel.C"][..., 1]
        A = -np.exp(g[f"{p}.kernel.log_A_real"]) + 1j * g[f"{p}.kernel.A_imag"]
        dtA = A * np.exp(g[f"{p}.kernel.log_dt"])[:, None]
        K = (
            2
            * np.einsum(
                "hn,hnl->hl", C * (np.exp(dtA) - 1) / A, np.exp(dtA[..., None] * np.arange(L))
            ).real
        )
        y = np.stack(
            [
                [np.convolve(z[b, :, c], K[c])[:L] for c in range(z.shape[2])]
                for b in range(z.shape[0])
            ],
            0,
        )
        y = y.transpose(0, 2, 1) + z * g[f"{p}.D"]
        y = 0.5 * y * (1 + erf(y / np.sqrt(2)))
        W = g[f"{p}.output_linear.0.weight"][..., 0]
        o = y @ W.T + g[f"{p}.output_linear.0.bias"]
        H = o.shape[-1] // 2
        z = o[..., :H] / (1 + np.exp(-o[..., H:]))
        h = z + h
        if not prenorm:
            h = ln(h, g[f"norms.{i}.weight"], g[f"norms.{i}.bias"])
        i += 1
    return h.mean(1) @ g["decoder.weight"].T + g["decoder.bias"]


_S4D_SIZES = dict(H=4, N=3, d_in=2, d_out=3)


def _s4d_state_dict() -> dict[str, torch.Tensor]:
    """A state-spaces example.py S4Model state_dict: 2 layers, H=4, N=3, d_input=2, 3 classes."""
    rng = torch.Generator().manual_seed(0)
    H, N, d_in, d_out = (_S4D_SIZES[k] for k in ("H", "N", "d_in", "d_out"))
    sd = {
        "encoder.weight": torch.randn(H, d_in, generator=rng),
        "encoder.bias": torch.randn(H, generator=rng),
        "decoder.weight": torch.randn(d_out, H, generator=rng),
        "decoder.bias": torch.randn(d_out, generator=rng),
    }
    for i in range(2):
        p = f"s4_layers.{i}"
        sd[f"{p}.kernel.C"] = torch.randn(H, N, 2, generator=rng)
        sd[f"{p}.kernel.log_dt"] = torch.log(torch.rand(H, generator=rng) * 0.1 + 0.001)
        sd[f"{p}.kernel.log_A_real"] = torch.log(0.5 * torch.ones(H, N))
        sd[f"{p}.kernel.A_imag"] = torch.pi * torch.arange(N).repeat(H, 1).float()
        sd[f"{p}.D"] = torch.randn(H, generator=rng)
        sd[f"{p}.output_linear.0.weight"] = torch.randn(2 * H, H, 1, generator=rng) / 2
        sd[f"{p}.output_linear.0.bias"] = torch.randn(2 * H, generator=rng)
        sd[f"norms.{i}.weight"] = 1 + 0.1 * torch.randn(H, generator=rng)
        sd[f"norms.{i}.bias"] = 0.1 * torch.randn(H, generator=rng)
    return sd


@pytest.mark.parametrize("prenorm", [False, True])
@pytest.mark.parametrize("wrap", ["example", "lightning"])
def test_s4d_state_spaces_import_matches_reference_forward(tmp_path, prenorm, wrap):
    sd = _s4d_state_dict()
    payload = (
        {"model": sd, "acc": 0.5, "epoch": 3}
        if wrap == "example"
        else {f"model.{k}": v for k, v in sd.items()}
    )
    torch.save(payload, tmp_path / "ckpt.pth")
    model = import_checkpoint("s4d-state-spaces", tmp_path / "ckpt.pth", {"prenorm": prenorm})
    x = np.random.default_rng(1).standard_normal((2, 25, _S4D_SIZES["d_in"]))
    with torch.no_grad():
        out = model(torch.from_numpy(x).float()).numpy()
    assert rel_err(out, _reference_s4model(sd, x, prenorm)) <= 1e-5


S4D_PRENORM_HINT = (
    "state-spaces S4D checkpoints do not record the norm placement: pass --config with a JSON "
    'file holding {"prenorm": true} if it was trained with --prenorm, else {"prenorm": false} '
    "(example.py's default)"
)


@pytest.mark.parametrize("options", [None, {}, {"dropout": 0.1}], ids=["none", "empty", "dropout"])
def test_s4d_import_refuses_to_guess_the_norm_placement(tmp_path, options):
    torch.save({"model": _s4d_state_dict()}, tmp_path / "ckpt.pth")
    with pytest.raises(CheckpointError) as caught:
        import_checkpoint("s4d-state-spaces", tmp_path / "ckpt.pth", options)
    assert str(caught.value) == S4D_PRENORM_HINT


@pytest.mark.parametrize("prenorm", ["false", 0, None])
def test_s4d_import_prenorm_must_be_true_or_false(tmp_path, prenorm):
    torch.save({"model": _s4d_state_dict()}, tmp_path / "ckpt.pth")
    with pytest.raises(CheckpointError, match="prenorm must be true or false"):
        import_checkpoint("s4d-state-spaces", tmp_path / "ckpt.pth", {"prenorm": prenorm})


@pytest.mark.parametrize("prenorm", [False, True])
def test_s4d_import_records_the_norm_placement_it_was_given(tmp_path, prenorm):
    torch.save({"model": _s4d_state_dict()}, tmp_path / "ckpt.pth")
    model = import_checkpoint("s4d-state-spaces", tmp_path / "ckpt.pth", {"prenorm": prenorm})
    expected = {
        "source": str(tmp_path / "ckpt.pth"),
        "source_format": "s4d-state-spaces",
        "import": {"format": "s4d-state-spaces", "prenorm": prenorm},
    }
    assert model.meta == expected and model.config.prenorm is prenorm
    assert ax.load(ax.save(model, tmp_path / "m.pt")).meta == expected


def test_cli_s4d_import_without_config_is_one_line_asking_for_prenorm(tmp_path, capsys):
    torch.save({"model": _s4d_state_dict()}, tmp_path / "ckpt.pth")
    line = _cli_error(
        capsys,
        tmp_path,
        "import",
        "s4d-state-spaces",
        tmp_path / "ckpt.pth",
        "-o",
        tmp_path / "m.pt",
    )
    assert line == "error: " + S4D_PRENORM_HINT


def test_cli_s4d_import_with_config_records_the_norm_placement(tmp_path, capsys):
    torch.save({"model": _s4d_state_dict()}, tmp_path / "ckpt.pth")
    (tmp_path / "options.json").write_text('{"prenorm": true}')
    args = [
        "import",
        "s4d-state-spaces",
        tmp_path / "ckpt.pth",
        "--config",
        tmp_path / "options.json",
    ]
    assert main([str(a) for a in [*args, "-o", tmp_path / "m.pt"]]) == 0, capsys.readouterr().err
    meta = ax.load(tmp_path / "m.pt").meta
    assert meta["import"] == {"format": "s4d-state-spaces", "prenorm": True}


def test_s4d_import_refuses_other_state_dicts(tmp_path):
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="not an S4D"):
        import_checkpoint("s4d-state-spaces", tmp_path / "x.pth")
