"""Trials through one executor (aire_export/trials.py): local in-process, a local process pool
and Ray (a local cluster on the loopback interface, started and stopped by the test) give the
same sweep table; a trial that fails or a worker that dies is reported, not lost."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from conftest import make_s5, run_cli

import aire_export as ax
from aire_export.data import SequenceData
from aire_export.errors import InputError
from aire_export.sweep import sweep
from aire_export.trials import LocalExecutor, RayExecutor, executor_named

ray = pytest.importorskip("ray")


def _square(shared, item):
    if item == 3:
        raise ValueError("three is not allowed")
    return shared * item * item


def _bad_input(shared, item):
    raise InputError("pass --calib")


def _die(shared, item):
    if item == 1:
        os._exit(9)  # the worker process dies without a word
    return item


@pytest.fixture(scope="module")
def local_ray():
    # Ray's workers import aire_export's trial functions; this module's are sent by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    executor = RayExecutor(cpus=2)
    yield executor
    executor.close()
    assert not ray.is_initialized()


def _data(model, count=24, length=20, seed=1):
    x = np.random.default_rng(seed).standard_normal((count, length, 3)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(-1).numpy()
    return SequenceData(x, None, y, "self-labelled")


def _table(result):
    return [
        (p.method, p.ratio, p.accuracy, p.states_kept, round(p.distortion, 9))
        for p in result.points
    ]


def test_ray_and_local_processes_give_the_local_sweep_table(local_ray):
    model = make_s5(seed=4, state_sizes=(8, 8))
    data = _data(model)
    grid = dict(methods=("aire", "random"), ratios=(0.0, 0.3, 0.6))
    here = sweep(model, data, **grid)
    assert len(here.points) == 6 and here.executor == "local"
    on_ray = sweep(model, data, executor=local_ray, **grid)
    assert _table(on_ray) == _table(here) and on_ray.executor == "ray"
    pool = sweep(model, data, executor=LocalExecutor(2), **grid)
    assert _table(pool) == _table(here)


@pytest.mark.parametrize("kind", ["here", "pool", "ray"])
def test_a_failed_trial_is_reported_and_the_others_are_kept(kind, local_ray):
    executor = {"here": LocalExecutor(), "pool": LocalExecutor(2), "ray": local_ray}[kind]
    outcomes = executor.map(_square, [1, 2, 3, 4], shared=10)
    assert [o.value for o in outcomes] == [10, 40, None, 160]
    assert outcomes[2].error == "ValueError: three is not allowed"


@pytest.mark.parametrize("kind", ["here", "pool", "ray"])
def test_bad_input_stops_the_run_with_its_own_error(kind, local_ray):
    executor = {"here": LocalExecutor(), "pool": LocalExecutor(2), "ray": local_ray}[kind]
    with pytest.raises(InputError, match="pass --calib"):
        executor.map(_bad_input, [1, 2], shared=None)


@pytest.mark.parametrize("kind", ["pool", "ray"])
def test_a_worker_that_dies_is_reported(kind, local_ray):
    executor = LocalExecutor(2) if kind == "pool" else local_ray
    outcomes = executor.map(_die, [0, 1, 2], shared=None)
    assert not outcomes[1].ok and "died" in outcomes[1].error
    if kind == "ray":  # Ray runs each task in its own worker: the others finish
        assert [outcomes[0].value, outcomes[2].value] == [0, 2]


def test_the_sweep_command_runs_on_ray_and_exits_1_when_a_point_fails(
    tmp_path, capsys, monkeypatch
):
    model = make_s5(seed=4, state_sizes=(8, 8))
    path = ax.save(model, tmp_path / "m.pt")
    data = _data(model)
    np.savez(tmp_path / "eval.npz", x=data.x, y=data.y)
    args = [
        "sweep",
        path,
        "--data",
        tmp_path / "eval.npz",
        "--methods",
        "aire",
        "--ratios",
        "0,0.5",
    ]
    code, _, err = run_cli(capsys, *args, "--executor", "ray", "-o", tmp_path / "r")
    assert code == 0, err
    saved = json.loads((tmp_path / "r" / "sweep.json").read_text())
    assert saved["executor"] == "ray" and len(saved["points"]) == 2

    from aire_export import sweep as sweep_module

    real = sweep_module._point

    def fail_at_half(evaluator, model, options, ratio, systems):
        if ratio == 0.5:
            raise RuntimeError("out of memory")
        return real(evaluator, model, options, ratio, systems)

    monkeypatch.setattr(sweep_module, "_point", fail_at_half)
    code, out, _ = run_cli(capsys, *args, "-o", tmp_path / "l")
    assert code == 1 and "failed: RuntimeError: out of memory" in out
    saved = json.loads((tmp_path / "l" / "sweep.json").read_text())
    assert len(saved["points"]) == 1 and saved["failed"][0]["ratio"] == 0.5


def test_an_unreachable_ray_cluster_is_one_line_and_quick(tmp_path, capsys):
    model = make_s5(seed=4, state_sizes=(8, 8))
    path = ax.save(model, tmp_path / "m.pt")
    data = _data(model)
    np.savez(tmp_path / "eval.npz", x=data.x, y=data.y)
    args = ["sweep", path, "--data", tmp_path / "eval.npz", "--ratios", "0", "--methods", "aire"]
    code, _, err = run_cli(
        capsys, *args, "--executor", "ray", "--ray-address", "127.0.0.1:1", "-o", tmp_path / "o"
    )
    assert code == 2 and "cannot reach the Ray cluster at 127.0.0.1:1" in err
    assert not (tmp_path / "o").exists()


def test_bad_executor_options_are_refused():
    with pytest.raises(InputError, match="--ray-address needs"):
        executor_named("local", address="127.0.0.1:6379")
    with pytest.raises(InputError, match="workers"):
        executor_named("local", workers=0)
