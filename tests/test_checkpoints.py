"""Our checkpoint format, its safety, and the importers of foreign checkpoints."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from conftest import OFFICIAL, S5_CORE_OPTIONS, make_s4d, make_s5, option_id, rel_err

import aire_export as ax
from aire_export.checkpoints import import_checkpoint
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


@pytest.mark.parametrize("prenorm", [False, True])
@pytest.mark.parametrize("wrap", ["example", "lightning"])
def test_s4d_state_spaces_import_matches_reference_forward(tmp_path, prenorm, wrap):
    rng = torch.Generator().manual_seed(0)
    H, N, d_in, d_out = 4, 3, 2, 3
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
    payload = (
        {"model": sd, "acc": 0.5, "epoch": 3}
        if wrap == "example"
        else {f"model.{k}": v for k, v in sd.items()}
    )
    torch.save(payload, tmp_path / "ckpt.pth")
    model = import_checkpoint("s4d-state-spaces", tmp_path / "ckpt.pth", {"prenorm": prenorm})
    x = np.random.default_rng(1).standard_normal((2, 25, d_in))
    with torch.no_grad():
        out = model(torch.from_numpy(x).float()).numpy()
    assert rel_err(out, _reference_s4model(sd, x, prenorm)) <= 1e-5


def test_s4d_import_refuses_other_state_dicts(tmp_path):
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="not an S4D"):
        import_checkpoint("s4d-state-spaces", tmp_path / "x.pth")
