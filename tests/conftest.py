from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from aire_export.models import S4DConfig, S4DModel, S5Config, S5Model
from aire_export.models.s4d import init_s4d
from aire_export.models.s5_init import init_s5

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL = FIXTURES / "s5_official_a"

# Every S5 core option combination the foundation issue lists.
S5_CORE_OPTIONS = [
    dict(bidirectional=bi, conj_sym=cs, discretization=disc)
    for bi, cs, disc in itertools.product([False, True], [True, False], ["zoh", "bilinear"])
]
S4D_CORE_OPTIONS = [
    dict(shared_A=sa, learn_B=lb, discretization=disc)
    for sa, lb, disc in [
        (False, False, "zoh"),
        (True, False, "zoh"),
        (False, True, "bilinear"),
        (True, True, "bilinear"),
    ]
]


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Test tensors are tiny: one intra-op thread is several times faster than two threads
    fighting over a shared 2-core machine, and results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def option_id(options: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in options.items())


def make_s5(seed: int = 0, state_sizes=(8, 4), d_model=6, d_input=3, **options) -> S5Model:
    cfg = S5Config(
        d_input=d_input, d_model=d_model, d_output=5, state_sizes=list(state_sizes), **options
    )
    with torch.random.fork_rng():  # the dense layers take torch's default init: seed it too
        torch.manual_seed(seed)
        model = init_s5(S5Model(cfg), blocks=2, seed=seed)
    _randomize_dense(model, seed)
    return model.eval()


def make_s4d(seed: int = 0, state_sizes=(6, 4), d_model=5, d_input=3, **options) -> S4DModel:
    cfg = S4DConfig(
        d_input=d_input, d_model=d_model, d_output=5, state_sizes=list(state_sizes), **options
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = init_s4d(S4DModel(cfg), seed=seed)
    _randomize_dense(model, seed)
    if cfg.learn_B:  # break the B = 1 initialization so B matters
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for block in model.layers:
                block.ssm.kernel.B.add_(0.3 * torch.randn(block.ssm.kernel.B.shape, generator=g))
    return model.eval()


def _randomize_dense(model, seed: int) -> None:
    """Give norms non-trivial statistics so tests exercise them."""
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith(".mean"):
                buf.copy_(0.1 * torch.randn(buf.shape, generator=g))
            elif name.endswith(".var"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=g))


def rel_err(a, b) -> float:
    """Normwise relative error max|a − b| / max|b|."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``aire-export ARGS``, run in this process."""
    from aire_export.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def labelled(tmp_path):
    """(model.pt, eval.npz) in tmp_path: an S5 model and 24 sequences labelled by the model
    itself, so its unpruned accuracy is exactly 1."""
    from aire_export.checkpoints import save

    model = make_s5(seed=4, state_sizes=(8, 8))
    path = save(model, tmp_path / "m.pt")
    x = np.random.default_rng(1).standard_normal((24, 30, 3)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(-1).numpy()
    np.savez(tmp_path / "eval.npz", x=x, y=y)
    return path, tmp_path / "eval.npz"


@pytest.fixture
def official_model():
    from aire_export.checkpoints.s5_flax import import_s5_flax

    return import_s5_flax(OFFICIAL / "best_state.msgpack", OFFICIAL / "config.json")
