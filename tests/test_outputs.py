"""Nothing lost, nothing half-written: output folders carry a manifest of the files
aire-export wrote, a re-run replaces only what is ours, inputs are never written over, a
stopped or killed run leaves no staging behind, write faults exit 5 with one line."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_s5
from conftest import run_cli as run

import aire_export as ax
from aire_export.files import MANIFEST

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--ratio", "0.5", "--length", "16", "--no-latency"]


@pytest.fixture
def model_file(tmp_path) -> Path:
    return ax.save(make_s5(seed=1, state_sizes=(8, 8), d_model=6), tmp_path / "model.pt")


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line and not line.startswith("·")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_an_output_folder_lists_every_file_it_holds(tmp_path, model_file, capsys):
    assert run(capsys, model_file, *FAST)[0] == 0
    folder = tmp_path / "model.aire"
    manifest = json.loads((folder / MANIFEST).read_text())
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == on_disk - {MANIFEST}
    assert {"pruned.pt", "model.onnx", "report.json"} <= set(manifest["files"])


def test_a_rerun_keeps_a_file_the_user_added_unless_forced(tmp_path, model_file, capsys):
    assert run(capsys, model_file, *FAST)[0] == 0
    notes = tmp_path / "model.aire" / "notes.txt"
    notes.write_text("mine")
    code, _, err = run(capsys, model_file, *FAST)
    assert code == 5 and "notes.txt" in _one_error_line(err) and "--force" in err
    assert notes.read_text() == "mine" and _hidden(tmp_path) == []
    assert run(capsys, model_file, *FAST, "--force")[0] == 0
    assert not notes.exists()


@pytest.mark.parametrize("command", ["run", "prune", "export"])
def test_an_input_is_never_written_over(tmp_path, model_file, capsys, command):
    assert run(capsys, model_file, *FAST)[0] == 0
    pruned = tmp_path / "model.aire" / "pruned.pt"
    before = pruned.read_bytes()
    args = {
        "run": [pruned, *FAST, "--out", pruned.parent],
        "prune": ["prune", pruned, "--ratio", "0.5", "-o", pruned],
        "export": ["export", pruned, "-o", pruned.parent, "--force"],
    }[command]
    code, _, err = run(capsys, *args)
    if command == "export":  # writes model.onnx beside its input: allowed, input untouched
        assert code == 0, err
    else:
        assert code == 5 and "input" in _one_error_line(err)
    assert pruned.read_bytes() == before


def test_prune_then_export_into_one_folder_as_readme_shows(tmp_path, model_file, capsys):
    out = tmp_path / "out"
    assert run(capsys, "prune", model_file, "--ratio", "0.5", "-o", out / "pruned.pt")[0] == 0
    assert run(capsys, "export", out / "pruned.pt", "-o", out)[0] == 0
    owned = set(json.loads((out / MANIFEST).read_text())["files"])
    assert owned == {"pruned.pt", "plan.json", "model.onnx", "model.step.onnx"}
    assert run(capsys, "export", out / "pruned.pt", "-o", out)[0] == 0  # ours: replaced


def test_export_and_prune_do_not_replace_files_they_did_not_write(tmp_path, model_file, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.onnx").write_text("someone's graph")
    code, _, err = run(capsys, "export", model_file, "-o", tmp_path / "out")
    assert code == 5 and "not written by aire-export" in _one_error_line(err)
    assert (tmp_path / "out" / "model.onnx").read_text() == "someone's graph"
    (tmp_path / "plan.json").write_text("{}")
    code, _, err = run(capsys, "prune", model_file, "--ratio", "0.5", "-o", tmp_path / "p.pt")
    assert code == 5 and "plan.json" in _one_error_line(err) and not (tmp_path / "p.pt").exists()
    assert run(capsys, "export", model_file, "-o", tmp_path / "out", "--force")[0] == 0


def test_sweep_refuses_a_foreign_folder_before_it_sweeps(tmp_path, labelled, capsys):
    model, data = labelled
    (tmp_path / "m.sweep").mkdir()
    (tmp_path / "m.sweep" / "thesis.tex").write_text("mine")
    started = time.perf_counter()
    code, _, err = run(capsys, "sweep", model, "--data", data)
    assert code == 5 and "not an aire-export output folder" in _one_error_line(err)
    assert "sweep 1/" not in err and time.perf_counter() - started < 5  # no point was evaluated
    code, _, err = run(capsys, "sweep", model, "--data", data, "-o", tmp_path / "f" / "sweep")
    assert code == 5 and "does not exist" in _one_error_line(err)


def test_stages_left_by_killed_runs_are_removed_and_permissions_follow_the_umask(
    tmp_path, model_file, capsys
):
    dead = 2**22 + 17  # above pid_max on Linux: no such process
    for name in (f".model.aire.stage-{dead}-abc.tmp", f".model.aire.old-{dead}-def"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "half.onnx").write_text("x")
    alive = tmp_path / f".model.aire.stage-{os.getppid()}-ghi.tmp"  # a live process's stage
    alive.mkdir()
    code, _, err = run(capsys, model_file, *FAST)  # another job is writing this output
    assert code == 5 and f"another aire-export (process {os.getppid()})" in _one_error_line(err)
    assert _hidden(tmp_path) == [alive.name] and not (tmp_path / "model.aire").exists()
    alive.rmdir()
    assert run(capsys, model_file, *FAST)[0] == 0
    assert _hidden(tmp_path) == []
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "model.aire").stat().st_mode & 0o777 == 0o777 & ~mask


@pytest.mark.parametrize(
    "code, text, hint",
    [
        (errno.ENOSPC, "No space left on device", "free some space"),
        (errno.EACCES, "Permission denied", ""),
        (errno.EROFS, "Read-only file system", ""),
    ],
)
def test_a_write_fault_exits_5_with_one_line_and_leaves_nothing(
    tmp_path, model_file, capsys, monkeypatch, code, text, hint
):
    """A full disk or a folder we may not write to is the environment's fault, not a bug."""
    import aire_export.report.write as report_write

    def fault(path, write):
        raise OSError(code, text, str(path))

    monkeypatch.setattr(report_write, "write_atomically", fault)
    exit_code, _, err = run(capsys, model_file, *FAST)
    line = _one_error_line(err)
    assert exit_code == 5 and text in line and hint in line
    assert not (tmp_path / "model.aire").exists() and _hidden(tmp_path) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stopped_run_leaves_no_staging(tmp_path, model_file, signum):
    """SIGTERM (timeout, schedulers) and SIGHUP unwind like Ctrl-C: exit 128 + n, no debris."""
    process = subprocess.Popen(
        [sys.executable, "-m", "aire_export", model_file, "--ratio", "0.5", "--length", "256",
         "--runs", "100000"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    for line in process.stderr:  # wait until the outputs are being staged
        if "timing" in line or "warming up" in line or "profile:" in line:
            break
    assert any(p.name.startswith(".model.aire.stage-") for p in tmp_path.iterdir())
    process.send_signal(signum)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 128 + signum
    assert f"stopped by {signal.Signals(signum).name}" in rest
    assert _hidden(tmp_path) == [] and not (tmp_path / "model.aire").exists()


def test_nvidias_polygraphy_checks_a_bundle_the_job_wrote(tmp_path, model_file, capsys):
    """What a Jetson user runs (there with --trt): Polygraphy, on onnxruntime here, loads the
    bundle's inputs and float64 references and passes with the bundle's fp32 tolerance."""
    pytest.importorskip("polygraphy")
    assert run(capsys, model_file, *FAST, "--target", "jetson")[0] == 0
    bundle = tmp_path / "model.aire" / "bundle"
    tol = json.loads((bundle / "manifest.json").read_text())["tolerances"]["fp32"]
    script = Path(sys.executable).parent / "polygraphy"
    command = [str(script)] if script.exists() else [
        sys.executable, "-c", "import sys; from polygraphy.tools import main; sys.exit(main())"
    ]  # fmt: skip
    check = subprocess.run(
        [*command, "run", "model.onnx", "--onnxrt", "--load-inputs", "polygraphy_inputs.json",
         "--load-outputs", "polygraphy_outputs.json", "--atol", str(tol["atol"]), "--rtol",
         str(tol["rtol"])],
        cwd=bundle, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    assert "PASSED" in check.stdout + check.stderr


@pytest.mark.parametrize("kind", ["current folder", "mount point"])
def test_a_folder_that_cannot_be_renamed_is_filled_in_place(
    tmp_path, model_file, capsys, monkeypatch, kind
):
    """The current folder, a mount point (a container volume) or a folder in a parent we may
    not write keeps its identity and permissions: the outputs move into it, the old ones the
    new output lacks (here bundle/) are removed, no stage is left inside or beside it."""
    import aire_export.files as files

    out = tmp_path / "volume"
    assert run(capsys, model_file, *FAST, "--bundle", "-o", out)[0] == 0
    assert (out / "bundle").is_dir()
    out.chmod(0o750)
    identity = out.stat().st_ino
    dead = 2**22 + 17  # a stage a killed in-place run left inside the folder
    (out / f".volume.stage-{dead}-abc.tmp").mkdir()
    if kind == "mount point":
        real = os.path.ismount
        monkeypatch.setattr(files.os.path, "ismount", lambda p: Path(p) == out or real(p))
        target = out
    else:
        monkeypatch.chdir(out)
        target = Path(".")
    code, stdout, err = run(capsys, model_file, *FAST, "-o", target)
    assert code == 0, err
    assert out.stat().st_ino == identity and out.stat().st_mode & 0o777 == 0o750
    manifest = set(json.loads((out / MANIFEST).read_text())["files"])
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert manifest == on_disk - {MANIFEST} and "report.json" in manifest
    assert not (out / "bundle").exists() and _hidden(out) == [] and _hidden(tmp_path) == []
    assert str(out) in stdout  # the report names the folder, not "."


def test_a_symlinked_output_folder_is_written_where_it_points(tmp_path, model_file, capsys):
    (tmp_path / "disk").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "disk")
    assert run(capsys, model_file, *FAST, "-o", tmp_path / "link")[0] == 0
    assert run(capsys, model_file, *FAST, "-o", tmp_path / "link")[0] == 0  # a re-run too
    assert (tmp_path / "link").is_symlink() and (tmp_path / "disk" / "report.json").is_file()
    assert _hidden(tmp_path) == []


def test_a_replaced_folder_keeps_its_permissions(tmp_path, model_file, capsys):
    out = tmp_path / "private"
    out.mkdir()
    out.chmod(0o750)
    assert run(capsys, model_file, *FAST, "-o", out)[0] == 0
    assert out.stat().st_mode & 0o777 == 0o750
    assert run(capsys, model_file, *FAST, "-o", out)[0] == 0
    assert out.stat().st_mode & 0o777 == 0o750


def test_an_output_name_the_file_system_refuses_fails_before_the_work(tmp_path, model_file, capsys):
    code, _, err = run(capsys, model_file, *FAST, "-o", tmp_path / ("a" * 250))
    assert code == 5 and "File name too long" in _one_error_line(err)
    assert "lower to ONNX" not in err and _hidden(tmp_path) == []


def test_a_stop_signal_during_the_commit_waits_until_the_output_is_whole(tmp_path, monkeypatch):
    import aire_export.files as files
    from aire_export.cli import stop_signals_unwind
    from aire_export.errors import Terminated

    swap = files._swap

    def signalled_swap(stage, out):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives between the two renames
        swap(stage, out)

    monkeypatch.setattr(files, "_swap", signalled_swap)
    out = tmp_path / "out"
    with stop_signals_unwind():
        for _ in range(2):  # into nothing, then over the first output
            with pytest.raises(Terminated) as stopped, files.staged_folder(out) as stage:
                (stage / "a.txt").write_text("whole")
                files.commit(stage, out)
            assert stopped.value.signum == signal.SIGTERM and stopped.value.written == out
            assert (out / "a.txt").read_text() == "whole" and _hidden(tmp_path) == []


def test_a_signal_while_the_results_print_says_the_output_was_written(
    tmp_path, model_file, capsys, monkeypatch
):
    from aire_export.cli import render
    from aire_export.errors import Terminated

    def stopped(*_args):
        raise Terminated(signal.SIGHUP)

    monkeypatch.setattr(render, "run_report", stopped)
    code, _, err = run(capsys, model_file, *FAST)
    assert code == 128 + signal.SIGHUP
    assert "after the output was written" in err and "nothing was written" not in err
    assert (tmp_path / "model.aire" / "report.json").is_file()


def test_prune_and_export_do_not_replace_part_of_a_whole_jobs_folder(tmp_path, model_file, capsys):
    """A run folder's report describes its pruned.pt and graphs: replacing one alone would
    leave a report that passes a model that is no longer there."""
    assert run(capsys, model_file, *FAST)[0] == 0
    folder = tmp_path / "model.aire"
    before = (folder / "pruned.pt").read_bytes()
    code, _, err = run(capsys, "prune", model_file, "--ratio", "0.2", "-o", folder / "pruned.pt")
    assert code == 5 and "report.json describes pruned.pt" in _one_error_line(err)
    assert (folder / "pruned.pt").read_bytes() == before
    code, _, err = run(capsys, "export", model_file, "-o", folder)
    assert code == 5 and "report.json describes model.onnx" in _one_error_line(err)
    assert run(capsys, "prune", model_file, "--ratio", "0.2", "-o", folder / "pruned.pt",
               "--force")[0] == 0  # fmt: skip


def test_an_unexpected_os_error_is_one_line_not_a_traceback(
    tmp_path, model_file, capsys, monkeypatch
):
    import aire_export.pipeline as pipeline

    def broken(*_args, **_kwargs):
        raise OSError(errno.EINVAL, "Invalid argument", "somewhere")

    monkeypatch.setattr(pipeline, "load", broken)
    code, _, err = run(capsys, model_file, *FAST)
    lines = [line for line in err.splitlines() if line and not line.startswith("·")]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("internal error: OSError")
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["run", "export"])
def test_an_output_folder_that_is_a_file_exits_5(tmp_path, model_file, capsys, command):
    """A file where the output folder should go is an output that cannot be written (5)."""
    taken = tmp_path / "taken"
    taken.write_text("mine")
    args = [model_file, *FAST] if command == "run" else ["export", model_file]
    code, _, err = run(capsys, *args, "-o", taken)
    assert code == 5 and str(taken) in _one_error_line(err) and taken.read_text() == "mine"


def test_a_write_fault_names_the_output_not_the_hidden_stage(
    tmp_path, model_file, capsys, monkeypatch
):
    import aire_export.report.write as report_write
    from aire_export.errors import OutputError

    def full(path, write):  # what write_atomically raises on a full disk
        raise OutputError(f"cannot write {path}: No space left on device: free some space")

    monkeypatch.setattr(report_write, "write_atomically", full)
    code, _, err = run(capsys, model_file, *FAST)
    line = _one_error_line(err)
    assert code == 5 and f"{tmp_path / 'model.aire' / 'report.json'}:" in line
    assert ".stage-" not in line and _hidden(tmp_path) == []


def test_an_output_that_holds_the_current_folder_is_refused_even_forced(
    tmp_path, model_file, capsys, monkeypatch
):
    work = tmp_path / "work"
    (work / "inner").mkdir(parents=True)
    (work / "precious.txt").write_text("mine")
    monkeypatch.chdir(work / "inner")
    code, _, err = run(capsys, model_file, *FAST, "-o", "..", "--force")
    assert code == 5 and "holds the current folder" in _one_error_line(err)
    assert (work / "precious.txt").read_text() == "mine" and (work / "inner").is_dir()


def test_a_symlink_loop_as_the_output_is_exit_5(tmp_path, model_file, capsys):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    code, _, err = run(capsys, model_file, *FAST, "-o", tmp_path / "a")
    assert code == 5 and "symlink that leads to no folder" in _one_error_line(err)


def test_a_fill_in_place_killed_midway_leaves_no_report_and_only_our_files(tmp_path, monkeypatch):
    """Filling a folder in place is not atomic: a run killed between two moves must leave no
    report.json vouching for a mixed folder, and a manifest that lets the next run replace
    every file there."""
    import aire_export.files as files

    out = tmp_path / "volume"
    out.mkdir()
    monkeypatch.chdir(out)  # the current folder: filled in place

    def stage_of(version: str, extra: tuple[str, ...] = ()):
        stage = files._make_stage(out)
        for name in ("pruned.pt", "model.onnx", files.REPORT_NAME, *extra):
            (stage / name).write_text(version)
        return stage

    files.commit(stage_of("old", ("old_only.png",)), out)
    moved: list[str] = []
    real = files._move_entry

    def killed_after_one(source, target):
        if moved:
            raise KeyboardInterrupt  # the process dies here
        moved.append(target.name)
        real(source, target)

    monkeypatch.setattr(files, "_move_entry", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        files.commit(stage_of("new"), out)
    assert not (out / files.REPORT_NAME).exists()  # nothing vouches for the mixed folder
    assert (out / moved[0]).read_text() == "new"
    owned = files.owned_files(out)
    visible = {p.name for p in out.iterdir() if not p.name.startswith(".")} - {MANIFEST}
    assert visible <= owned and {"pruned.pt", "model.onnx", "old_only.png"} <= owned


def test_an_error_after_a_stop_signal_is_reported_as_the_stop(capsys, monkeypatch):
    import aire_export.cli as cli
    from aire_export.cli import commands

    def broken(*_args, **_kwargs):
        raise RecursionError("maximum recursion depth exceeded")  # numpy's, interrupted

    monkeypatch.setattr(commands.cli, "main", broken)
    assert cli._run(["inspect", "m.pt"], {}, [signal.SIGINT]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"
    assert cli._run(["inspect", "m.pt"], {}, []) == 1  # without a stop: a bug, reported so
    assert "internal error: RecursionError" in capsys.readouterr().err


def test_an_output_path_that_is_not_utf8_is_refused_before_the_work(tmp_path, model_file, capsys):
    code, _, err = run(capsys, model_file, *FAST, "-o", tmp_path / "bad\udcffname")
    assert code == 5 and "not a valid UTF-8 path" in _one_error_line(err)
    assert "lower to ONNX" not in err and _hidden(tmp_path) == []


def test_json_reports_give_the_verdict_on_stderr_too(tmp_path, model_file, capsys):
    code, out, err = run(capsys, model_file, *FAST, "--json")
    assert code == 0 and json.loads(out)["verdict"]["exit_code"] == 0
    assert "Verdict: PASSED" in err and "Verdict" not in out
