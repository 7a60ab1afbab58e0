"""A family is one adapter: a toy third SSM family, written here in test code only, runs through
score → prune → export → onnxruntime parity → report, and streams, with no change to the
package. It also shows that the generic code asks the family (its lowering rule and its
tolerance are the ones used) instead of inferring anything."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
import torch
from conftest import rel_err
from lowering import random_input, reference, stream
from torch import nn

import aire_export as ax
from aire_export import ir
from aire_export.cli import main
from aire_export.models import (
    ClassifierFamily,
    ModalSystem,
    NetworkConfig,
    SSMBlock,
    SSMNetwork,
    UnitPolicy,
    family_of,
    modal_systems,
    register_family,
    unregister_family,
)
from aire_export.models.blocks import take_states, zero_states
from aire_export.prune import mask_model
from aire_export.tolerance import Tolerance

ARCH = "toy-real"


@dataclass(kw_only=True)
class ToyConfig(NetworkConfig):
    norm: str = "layer"
    output: str = "logits"


class ToyCore(nn.Module):
    """A real diagonal LTI layer: x_t = a ⊙ x_{t−1} + B u_t, y_t = C x_t + D ⊙ u_t, a = σ(w)."""

    def __init__(self, H: int, P: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(P))
        self.B = nn.Parameter(torch.zeros(P, H))
        self.C = nn.Parameter(torch.zeros(H, P))
        self.D = nn.Parameter(torch.zeros(H))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        x = u.new_zeros(u.shape[0], self.w.shape[0])
        ys = []
        for t in range(u.shape[1]):  # a sequential scan: tests are short
            y, x = self.step(u[:, t], x)
            ys.append(y)
        return torch.stack(ys, 1)

    def step(self, u: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.sigmoid(self.w) * x + u @ self.B.T
        return x @ self.C.T + self.D * u, x


class ToyBlock(SSMBlock):
    def __init__(self, config: ToyConfig, state_size: int, index: int) -> None:
        super().__init__()
        self.config, self.index = config, index
        self.norm = nn.LayerNorm(config.d_model)
        self.core = ToyCore(config.d_model, state_size)

    @property
    def state_size(self) -> int:
        return int(self.core.w.shape[0])

    def core_forward(self, z):
        return self.core(z)

    def core_step(self, z, state):
        y, x = self.core.step(z, state[..., 0])  # the step graph's layout: (batch, P, re/im)
        return y, torch.stack([x, torch.zeros_like(x)], -1)

    def pointwise(self, y):
        return torch.nn.functional.gelu(y, approximate="tanh")

    def init_state(self, batch, dtype, device):
        return torch.zeros(batch, self.state_size, 2, dtype=dtype, device=device)


class ToyModel(SSMNetwork):
    arch = ARCH
    config_class = ToyConfig
    block_class = ToyBlock


def _f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


class ToyFamily(ClassifierFamily):
    name = ARCH
    model_class = ToyModel
    lowering_rules = (
        ir.LoweringRule("cpu", ir.DenseLTI, None, "logdepth", 16, 16, "the toy's own choice"),
    )
    gate = Tolerance(3e-4, 3e-3)

    def modal_system(self, block, *, calib=None):
        core = block.core
        return ModalSystem(
            lam=_f64(torch.sigmoid(core.w.double())).astype(complex),
            B=_f64(core.B).astype(complex),
            C=(_f64(core.C).astype(complex),),
            D=_f64(core.D),
            conj_sym=False,
            name=f"layers.{block.index}.core",
        )

    def units(self, block):
        return UnitPolicy(ids=np.arange(block.state_size))

    def shrunk_parameters(self, block, kept_units):
        axes = {"w": 0, "B": 0, "C": 1}
        return len(kept_units), {
            f"core.{n}": take_states(getattr(block.core, n).detach(), a, kept_units)
            for n, a in axes.items()
        }

    def masked_parameters(self, block, kept_units):
        drop = ~np.isin(np.arange(block.state_size), kept_units)
        return {"core.B": zero_states(block.core.B.detach(), 0, drop)}

    def core_ir(self, block):
        system = self.modal_system(block)
        if system.P == 0:
            return ir.Feedthrough(system.D)
        return ir.DenseLTI(system.lam, system.B, system.C, system.D, scale=1.0)

    def activation_ir(self, block):
        return ir.GatedActivation(gelu="tanh", gate="none")

    def tolerance(self, precision, length):
        return self.gate


@pytest.fixture
def toy_family():
    family = register_family(ToyFamily())
    yield family
    unregister_family(ARCH)


def make_toy(seed: int = 0) -> ToyModel:
    model = ToyModel(ToyConfig(d_input=3, d_model=5, d_output=4, state_sizes=[6, 4]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return model.eval()


def test_the_toy_is_unknown_until_registered():
    with pytest.raises(ax.AireError, match="expected an aire-export model"):
        ax.prune(make_toy(), 0.5)


def test_a_toy_family_runs_the_whole_job_through_the_cli(tmp_path, capsys, toy_family):
    path = ax.save(make_toy(), tmp_path / "toy.pt")
    code = main([str(path), "--ratio", "0.5", "--length", "48", "--runs", "3", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert report["model"]["arch"] == ARCH and report["plan"]["arch"] == ARCH
    assert report["model"]["states_before"] == 10 and report["model"]["states_after"] == 5
    parity = {p["graph"]: p for p in report["parity"]}
    assert set(parity) == {"model.onnx", "model.step.onnx"}  # the toy streams: both are checked
    assert all(p["runner"] == "onnxruntime-cpu" and p["passed"] for p in parity.values())
    output = parity["model.onnx"]["outputs"][0]
    assert (output["atol"], output["rtol"]) == (ToyFamily.gate.atol, ToyFamily.gate.rtol)
    assert report["export"]["scan"] == "logdepth"  # the family's rule, not the generic table
    assert {s["runtime"] for s in report["speedups"]} == {"pytorch-eager-cpu", "onnxruntime-cpu"}
    folder = tmp_path / "toy.aire"
    assert {"pruned.pt", "plan.json", "model.onnx", "model.step.onnx", "report.md"} <= {
        p.name for p in folder.iterdir()
    }
    pruned = ax.load(folder / "pruned.pt")
    assert type(pruned) is ToyModel and pruned.config.state_sizes == [3, 2]


def test_the_toy_family_scores_prunes_and_shrinks_exactly(toy_family):
    model = make_toy(seed=1).double()
    layers = ax.score(model)
    assert [layer.n_units for layer in layers] == [6, 4]
    pruned, plan = ax.prune(model, 0.5)
    assert family_of(pruned) is toy_family and plan.layers[0].certificate is not None
    masked = mask_model(model, [layer.kept for layer in plan.layers])
    x = random_input(model, 2, 20).double()
    with torch.no_grad():
        assert rel_err(pruned(x), masked(x)) <= 1e-12
    assert [s.P for s in modal_systems(pruned)] == [layer.states_after for layer in plan.layers]


def test_the_toy_step_graph_has_the_family_state_layout_and_streams(tmp_path, toy_family):
    pruned, _ = ax.prune(make_toy(seed=2), 0.4)
    result = ax.export(pruned, tmp_path)
    shapes = [
        (s.name, tuple(s.shape[1:])) for s in result.step.inputs if s.name.startswith("state")
    ]
    assert shapes == toy_family.state_layout(pruned)
    x = random_input(pruned, 2, 12, seed=3)
    assert rel_err(stream(result.step.path, pruned, x)[-1], reference(pruned, x)) <= 1e-5
    names = [node.name for node in onnx.load(str(result.sequence.path)).graph.node]
    assert any("/scan0/" in name for name in names)  # the recurrence carries the scan scope


def test_a_family_whose_model_and_graph_states_disagree_is_caught(tmp_path, toy_family):
    """The step graph's state inputs are checked against the family's state layout."""
    model = make_toy(seed=4)
    model.layers[0].init_state = lambda batch, dtype, device: torch.zeros(batch, 6)
    with pytest.raises(RuntimeError, match="differ from the model's"):
        ax.export(model, tmp_path)
