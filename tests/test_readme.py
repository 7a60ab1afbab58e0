"""README's Python example runs as written (on the shipped checkpoint and the official fixture)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import aire_export as ax
from aire_export.errors import InputError
from aire_export.models import SSMNetwork

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = ROOT / "tests" / "fixtures" / "s5_official_a"


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = readme_python_blocks()
    assert blocks, "README.md has no ```python block"
    shutil.copy(ROOT / "examples" / "checkpoints" / "s4d_keywords.pt", tmp_path / "model.pt")
    shutil.copy(OFFICIAL / "best_state.msgpack", tmp_path / "best_state.msgpack")
    shutil.copy(OFFICIAL / "config.json", tmp_path / "run_args.json")
    monkeypatch.chdir(tmp_path)
    x = np.random.default_rng(0).standard_normal((2, 16, 80)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", x=x)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    # the names the snippet promises, with what they should hold
    assert isinstance(namespace["model"], SSMNetwork)
    assert namespace["plan"].states_after < namespace["plan"].states_before
    assert (tmp_path / "out").is_dir() and any((tmp_path / "out").glob("*.onnx"))
    check = namespace["check"]
    assert check.parity and all(p.passed for p in check.parity)
    assert check.distortion.samples == len(x) and check.distortion.normwise_rel > 0


def test_validate_refuses_inputs_of_the_wrong_shape(tmp_path):
    model = ax.load(ROOT / "examples" / "checkpoints" / "s4d_keywords.pt")
    pruned, _ = ax.prune(model, 0.5, certificates=False)
    result = ax.export(pruned, tmp_path / "out", step=False)
    wrong = np.zeros((2, 16, 3), np.float32)
    with pytest.raises(InputError, match=r"shape \(N, L, 80\)"):
        ax.validate(model, pruned, result, inputs=wrong)
