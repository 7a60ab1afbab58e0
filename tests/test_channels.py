"""Operators (channels) as the pruning unit, S4oP's bypass (DESIGN §3.6): shrunk == masked in
float64, a pruned channel passes its input through, graphs hold only the active channels and
match the model, the S4oP budget and draws, and the command line."""

from __future__ import annotations

import itertools
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import make_s4d, make_s5, rel_err, run_cli
from lowering import random_input, reference, run_sequence, session, stream

import aire_export as ax
from aire_export.errors import InputError
from aire_export.models import ModalSystem, modal_systems
from aire_export.models.mamba import MambaConfig, MambaLM, init_mamba
from aire_export.prune import mask_channels, shrink_channels
from aire_export.prune.channels import s4op_budget, s4op_draw
from aire_export.prune.scores import aire_energy

VARIANTS = [
    (make_s4d, {}),
    (make_s4d, {"shared_A": True}),
    (make_s4d, {"learn_B": True}),
    (make_s4d, {"prenorm": False}),
    (make_s5, {"d_model": 5}),
    (make_s5, {"d_model": 5, "bidirectional": True, "activation": "full_glu"}),
    (make_s5, {"d_model": 5, "conj_sym": False, "prenorm": False}),
]
KEPT = [np.array([0, 2, 3]), np.array([4])]  # of 5 channels: layer 1 keeps one


def _variant_id(variant) -> str:
    maker, options = variant
    return "-".join([maker.__name__[5:], *(k for k in options if k != "d_model")])


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_channel_pruned_model_equals_the_masked_model_in_float64(variant):
    maker, options = variant
    model = maker(seed=1, **options).double()
    x = random_input(model, 3, 41).double()
    with torch.no_grad():
        shrunk, masked = shrink_channels(model, KEPT)(x), mask_channels(model, KEPT)(x)
        full = model(x)
    assert rel_err(shrunk, masked) <= 1e-12
    assert rel_err(masked, full) > 1e-3  # the bypass really changes the model


def test_a_bypassed_channel_passes_its_input_through_and_only_active_channels_hold_parameters():
    model = shrink_channels(make_s4d(seed=2).double(), KEPT)
    core = model.layers[0].ssm
    assert model.config.bypassed_channels == [[1, 4], [0, 1, 2, 3]]
    assert core.kernel.C.shape[0] == 3 and core.D.shape == (3,) and core.kernel.log_dt.shape == (3,)
    s5 = shrink_channels(make_s5(seed=2, d_model=5, bidirectional=True).double(), KEPT)
    seq = s5.layers[0].seq
    assert seq.B.shape == (8, 3, 2) and seq.C1.shape == seq.C2.shape == (3, 8, 2)
    assert seq.D.shape == (3,) and seq.Lambda_re.shape == (8,)  # the states are all kept
    u = torch.randn(2, 17, 5, dtype=torch.float64)
    with torch.no_grad():
        outputs = [core.ssm(u), seq(u)]
    for y in outputs:
        assert torch.equal(y[..., [1, 4]], u[..., [1, 4]])
        assert not torch.allclose(y[..., [0, 2, 3]], u[..., [0, 2, 3]])
    with torch.no_grad():  # a bypassed input reaches no kept channel
        moved = seq(u + 5.0 * torch.eye(5, dtype=u.dtype)[[1, 4]].sum(0))
    assert torch.equal(moved[..., [0, 2, 3]], outputs[1][..., [0, 2, 3]])


def test_channel_pruning_composes_with_itself_and_with_state_pruning(tmp_path):
    base = make_s4d(seed=3).double()
    first = shrink_channels(base, KEPT)
    second = shrink_channels(first, [np.array([0, 2]), np.array([], dtype=np.int64)])
    assert second.config.bypassed_channels == [[1, 2, 4], [0, 1, 2, 3, 4]]
    states, _ = ax.prune(second, 0.5)
    assert states.config.bypassed_channels == second.config.bypassed_channels
    x = random_input(base, 2, 30).double()
    reloaded = ax.load(ax.save(states, tmp_path / "p.pt")).double()
    with torch.no_grad():
        assert rel_err(reloaded(x), states(x)) == 0


@pytest.mark.parametrize("scan", ["chunked", "toeplitz", "scan", "logdepth"])
@pytest.mark.parametrize("maker", [make_s4d, make_s5], ids=["s4d", "s5"])
def test_graphs_of_a_channel_pruned_model_match_it(tmp_path, scan, maker):
    model = shrink_channels(maker(seed=4, state_sizes=(6, 4, 2), d_model=5), [*KEPT, []])
    result = ax.export(model, tmp_path, scan=scan)
    x = random_input(model, 2, 70, seed=1)
    want = reference(model, x)
    assert rel_err(run_sequence(result.sequence.path, x), want) <= 1e-5
    assert rel_err(stream(result.step.path, model, x)[-1], want) <= 1e-5
    options = ort.SessionOptions()  # the graph onnxruntime runs: Gathers of tables fold at load
    options.optimized_model_filepath = str(tmp_path / "loaded.onnx")
    ort.InferenceSession(str(result.sequence.path), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(options.optimized_model_filepath)
    shapes = {o for n in graph.graph.node if n.op_type == "Shape" for o in n.output}
    gathers = sum(n.op_type == "Gather" and n.input[0] not in shapes for n in graph.graph.node)
    if maker is make_s4d:  # the scan runs on the active channels only
        assert gathers >= 3
    else:  # S5's states serve every channel: widened with zero B̄ columns, C̃ rows, D_h = 1
        assert gathers == 0
    step_inputs = {i.name: i for i in session(result.step.path).get_inputs()}
    # S4D: only the active channels carry states; S5: the states, shared by the active ones
    assert step_inputs["state_0"].shape[1] == (3 if maker is make_s4d else 6)
    assert "state_2" not in step_inputs  # a layer without channels has no state


def test_channel_energy_is_its_modes_energy_plus_the_feedthrough_change():
    model = make_s4d(seed=5, state_sizes=(6, 4), d_model=5).double()
    pruned, plan = ax.prune(model, 0.7, unit="channel")
    systems = modal_systems(model)
    for layer, system in zip(plan.layers, systems, strict=True):
        modes = np.bincount(np.repeat(np.arange(5), system.P // 5), aire_energy(system))
        energy = modes + (system.D - 1) ** 2  # the bypass sets D_h to 1
        assert np.allclose(layer.energies, energy, rtol=1e-12)
        assert int(np.argmax(energy)) in layer.kept
    ghost = ax.prune(model, 0.7, unit="channel", method="ghost")[1]
    assert not np.allclose(ghost.layers[0].energies, plan.layers[0].energies)
    assert plan.unit == "channel"
    assert plan.ratio_achieved == pytest.approx(1 - sum(len(p.kept) for p in plan.layers) / 10)
    assert [len(b) for b in pruned.config.bypassed_channels] == [
        5 - len(p.kept) for p in plan.layers
    ]


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
def test_a_mimo_channel_is_scored_by_the_modes_of_what_its_bypass_changes(bidirectional):
    """S5: the bypass of channel h changes G by ΔG_h, an LTI system of 2P modes; the channel's
    energy is eq. 10 over those modes plus (D_h − 1)². Checked against ΔG_h built here from
    the model and its bypass-masked copy (impulse responses equal), not from the view."""
    from aire_export.prune.channels import bypass_view

    model = make_s5(seed=7, state_sizes=(6,), d_model=4, bidirectional=bidirectional).double()
    _, plan = ax.prune(model, 0.5, unit="channel")
    (system,) = modal_systems(model)
    view = bypass_view(system)
    for h in range(4):
        masked = mask_channels(model, [np.setdiff1d(np.arange(4), [h])])
        (after,) = modal_systems(masked)
        row = [np.outer(np.eye(4)[h], c[h]) for c in system.C]  # (H, P): C_hi e_h
        col = [c * (np.arange(4) != h)[:, None] for c in system.C]
        lam2 = np.concatenate([system.lam, system.lam])
        B2 = np.concatenate([system.B, system.B * np.eye(4)[h]])  # B_i, then B_ih e_h
        delta = ModalSystem(
            lam=lam2,
            B=B2,
            C=tuple(np.concatenate([r, c], axis=1) for r, c in zip(row, col, strict=True)),
            D=system.D,
            conj_sym=system.conj_sym,
        )
        for d in range(len(system.C)):
            change = system.impulse_response(40, d) - after.impulse_response(40, d)
            assert np.abs(change - delta.impulse_response(40, d)).max() <= 1e-12
        energy = aire_energy(delta).sum() + (system.D[h] - 1) ** 2
        assert plan.layers[0].energies[h] == pytest.approx(energy, rel=1e-12)
        assert view.unit_feedthrough_energy[h] == pytest.approx((system.D[h] - 1) ** 2)


def test_a_channel_whose_feedthrough_is_far_from_one_is_not_free_to_bypass():
    model = make_s4d(seed=5, state_sizes=(6,), d_model=5).double()
    with torch.no_grad():
        model.layers[0].ssm.kernel.C[1].zero_()  # channel 1: no modes at all ...
        model.layers[0].ssm.D[1] = 4.0  # ... but a bypass turns 4·u into u
        model.layers[0].ssm.D[2] = 1.0
        model.layers[0].ssm.kernel.C[2].mul_(1e-3)  # channel 2: weak modes, D = 1 already
    _, plan = ax.prune(model, 0.2, unit="channel")
    assert 1 in plan.layers[0].kept and 2 not in plan.layers[0].kept


def test_s4op_budget_follows_its_exponential_split():
    for ratio in (0.1, 0.3, 0.5, 0.7, 0.9):
        budget = s4op_budget(ratio, 4, 64)
        assert sum(budget) == round(ratio * 256) and max(budget) <= 63
        assert budget == sorted(budget)  # deeper layers pruned more
        assert budget[0] == 0 or min(budget[1:]) == 63  # layer 0 only once the others are full
    assert s4op_budget(0.3, 4, 64) == [0, 11, 22, 44]
    steps = [s4op_budget(r, 6, 32) for r in (0.1, 0.3, 0.5, 0.7, 0.9)]
    assert all(
        a <= b for prev, nxt in itertools.pairwise(steps) for a, b in zip(prev, nxt, strict=True)
    )


def test_s4op_draws_are_seeded_and_contain_the_previous_step():
    first = s4op_draw([[], [], []], 16, 0.3, np.random.default_rng(7))
    again = s4op_draw([[], [], []], 16, 0.3, np.random.default_rng(7))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    bypassed = [sorted(set(range(16)) - set(k.tolist())) for k in first]
    assert [len(b) for b in bypassed] == s4op_budget(0.3, 3, 16)
    second = s4op_draw(bypassed, 16, 0.6, np.random.default_rng(8))
    assert [16 - len(b) - len(k) for b, k in zip(bypassed, second, strict=True)] == [
        t - len(b) for t, b in zip(s4op_budget(0.6, 3, 16), bypassed, strict=True)
    ]
    with pytest.raises(InputError, match="larger ratio"):
        s4op_draw(bypassed, 16, 0.1, np.random.default_rng(0))


def test_prune_unit_channel_on_the_command_line(tmp_path, capsys):
    path = ax.save(make_s4d(seed=6), tmp_path / "m.pt")
    code, out, err = run_cli(
        capsys, "prune", path, "--ratio", "0.5", "--unit", "channel", "-o", tmp_path / "p.pt"
    )
    assert code == 0, err
    assert "channels (operators)" in out
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["unit"] == "channel" and plan["balance_channels"] is False
    assert all(layer["certificate"] is None for layer in plan["layers"])
    code, out, err = run_cli(capsys, path, "--ratio", "0.5", "--unit", "channel", "--length",
                             "16", "--no-latency", "-o", tmp_path / "job")  # fmt: skip
    before = sum(layer["units_before"] for layer in plan["layers"])
    kept = sum(len(layer["kept"]) for layer in plan["layers"])
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"{before} → {kept} channels (operators), ")


@pytest.mark.parametrize(
    "bypassed",
    [[[0]], [[5], []], [[2, 1], []], [[1, 1], []]],
    ids=["layers", "range", "order", "dup"],
)
def test_a_config_with_bad_bypassed_channels_is_refused(bypassed):
    config = make_s4d().config.to_dict() | {"bypassed_channels": bypassed}
    with pytest.raises(InputError, match="bypassed_channels"):
        type(make_s4d().config).from_dict(config)


def test_a_sweep_over_channel_ratios(tmp_path, capsys):
    model = make_s4d(seed=6)
    path = ax.save(model, tmp_path / "m.pt")
    x = random_input(model, 16, 20).numpy()
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(-1).numpy()
    np.savez(tmp_path / "eval.npz", x=x, y=y)
    args = ["sweep", path, "--data", tmp_path / "eval.npz", "--methods", "aire,random"]
    code, _, err = run_cli(
        capsys, *args, "--ratios", "0,0.4,0.8", "--unit", "channel", "-o", tmp_path / "s"
    )
    assert code == 0, err
    saved = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert saved["unit"] == "channel" and saved["points"][0]["accuracy"] == 1.0
    achieved = [p["ratio_achieved"] for p in saved["points"] if p["method"] == "aire"]
    assert achieved == sorted(achieved) and achieved[-1] >= 0.7  # fractions of the 10 channels


# ---- Mamba: inner channels cut out of the mixer (S4oP's Mamba unit) --------------------------------
def _mamba(seed: int = 0) -> MambaLM:
    config = MambaConfig(vocab_size=11, d_model=8, d_inner=16, dt_rank=2, state_sizes=[4, 3])
    model = init_mamba(MambaLM(config), seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


MAMBA_KEPT = [np.array([0, 3, 5, 7, 9, 15]), np.array([1, 2])]


def _tokens(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 11, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_mamba_inner_channels_cut_out_equal_the_masked_model_and_stream(tmp_path):
    model = _mamba(seed=1).double()
    shrunk, masked = shrink_channels(model, MAMBA_KEPT), mask_channels(model, MAMBA_KEPT)
    assert shrunk.config.removed_channels[1] == [0, *range(3, 16)]
    mixer = shrunk.layers[0].mixer
    assert mixer.in_proj.weight.shape == (12, 8) and mixer.x_proj.weight.shape == (2 + 8, 6)
    assert mixer.out_proj.weight.shape == (8, 6) and mixer.A_log.shape == (6, 4)
    x = _tokens(2, 33, seed=2)
    with torch.no_grad():
        y = shrunk(x)
        assert rel_err(y, masked(x)) <= 1e-12
        assert rel_err(masked(x), model(x)) > 1e-3
        state, steps = shrunk.init_state(2), []
        for t in range(x.shape[1]):
            out, state = shrunk.step(x[:, t], state)
            steps.append(out)
    assert rel_err(torch.stack(steps, 1), y) <= 1e-12
    again = shrink_channels(shrunk, [np.array([1, 4]), np.array([0])])  # positions among active
    assert again.config.removed_channels == [  # channels 3 and 9 stay, then channel 1
        sorted(set(range(16)) - {3, 9}),
        [0, *range(2, 16)],
    ]
    reloaded = ax.load(ax.save(again, tmp_path / "m.pt"))
    assert reloaded.layers[0].mixer.d_inner == 2
    result = ax.export(shrunk.float(), tmp_path / "graphs")
    want = reference(shrunk, x)
    assert rel_err(run_sequence(result.sequence.path, x), want) <= 1e-5
    step_inputs = {i.name: i.shape for i in session(result.step.path).get_inputs()}
    assert step_inputs["state_0_ssm"] == ["batch", 6, 4] and step_inputs["state_1_conv"][1] == 2
    assert rel_err(np.stack(stream(result.step.path, shrunk, x), 1), want) <= 1e-5


def test_a_mamba_channel_is_scored_by_what_it_sends_into_the_residual_stream():
    model = _mamba(seed=3).double()
    calib = _tokens(3, 40, seed=4).numpy()
    _, plan = ax.prune(model, 0.5, unit="channel", calib=calib)
    gated = {}  # what out_proj reads, (B, L, E): y ⊙ silu(z), captured from a plain forward
    hooks = [
        block.mixer.out_proj.register_forward_hook(
            lambda mod, inputs, out, i=i: gated.__setitem__(i, inputs[0])
        )
        for i, block in enumerate(model.layers)
    ]
    with torch.no_grad():
        model(torch.as_tensor(calib))
    for hook in hooks:
        hook.remove()
    for i, layer in enumerate(plan.layers):
        W = model.layers[i].mixer.out_proj.weight.detach()
        want = gated[i].pow(2).mean((0, 1)) * W.pow(2).sum(0)
        assert np.allclose(layer.energies, want.numpy(), rtol=1e-9)
        assert int(np.argmax(want.numpy())) in layer.kept and layer.calib_distortion > 0
        assert layer.states_before == layer.states_after == model.layers[i].state_size


def test_mamba_channels_need_calibration_data_to_be_scored_but_not_to_be_drawn(tmp_path, capsys):
    path = ax.save(_mamba(seed=5), tmp_path / "m.pt")
    code, _, err = run_cli(
        capsys, "prune", path, "--ratio", "0.5", "--unit", "channel", "-o", tmp_path / "q.pt"
    )
    assert code == 2 and "--calib" in err and len(err.strip().splitlines()) == 1
    out = tmp_path / "r.pt"
    code, _, err = run_cli(
        capsys, "prune", path, "--ratio", "0.5", "--unit", "channel", "--method", "random",
        "-o", out,
    )  # fmt: skip
    assert code == 0, err
    assert [16 - len(r) for r in ax.load(out).config.removed_channels] == [
        len(layer["kept"]) for layer in json.loads((tmp_path / "plan.json").read_text())["layers"]
    ]
