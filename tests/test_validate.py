"""Parity gates, pruning distortion, latency bookkeeping, inputs and accuracy."""

from __future__ import annotations

import io
import pickle
import struct
import zipfile

import numpy as np
import pytest
from conftest import make_s5

from aire_export.checkpoints import save
from aire_export.cli import main
from aire_export.data import SequenceData, load_data, random_data
from aire_export.errors import InputError
from aire_export.tolerance import Tolerance, default_tolerance
from aire_export.validate.accuracy import accuracy, predict
from aire_export.validate.latency import measure_latency, summarize
from aire_export.validate.parity import compare_output, compare_outputs, pruning_distortion


def test_element_fails_only_when_both_abs_and_rel_exceed():
    ref = np.array([[100.0, 1e-6, 1.0]])
    # abs 0.5 > atol but rel 0.005 ≤ rtol; abs 1e-6 ≤ atol though rel = 1; last fails both.
    got = np.array([[100.5, 2e-6, 1.5]])
    result = compare_output("y", got, ref, Tolerance(atol=1e-3, rtol=1e-2))
    assert result.failing == 1 and not result.passed
    assert result.max_abs == pytest.approx(0.5) and result.max_rel == pytest.approx(1.0)
    assert "abs=0.5" in result.required and "rel=1" in result.required
    assert compare_output("y", got, ref, Tolerance(atol=0.6, rtol=1e-2)).passed


def test_minimum_required_tolerance_would_pass():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((8, 5))
    got = ref + 1e-3 * rng.standard_normal((8, 5))
    first = compare_output("y", got, ref, Tolerance(1e-9, 1e-9))
    assert not first.passed
    assert compare_output("y", got, ref, Tolerance(first.max_abs, 0.0)).passed
    assert compare_output("y", got, ref, Tolerance(0.0, first.max_rel)).passed


def test_nan_outputs_fail_and_top1_and_cosine_are_reported():
    ref = np.array([[0.1, 0.9], [0.8, 0.2]])
    got = np.array([[0.2, 0.8], [0.1, 0.9]])
    result = compare_output("y", got, ref, Tolerance(1.0, 1.0))
    assert result.top1_agreement == 0.5 and result.passed
    assert -1 <= result.cosine <= 1
    bad = compare_output("y", np.array([[np.nan, 1.0], [0.0, 1.0]]), ref, Tolerance(1e9, 1e9))
    assert not bad.passed


def test_compare_outputs_needs_every_output_and_matching_shapes():
    ref = {"y": np.zeros((2, 3))}
    with pytest.raises(ValueError, match="no output named y"):
        compare_outputs("r", {"z": np.zeros((2, 3))}, ref, Tolerance(1, 1))
    with pytest.raises(ValueError, match="shape"):
        compare_outputs("r", {"y": np.zeros((3, 2))}, ref, Tolerance(1, 1))
    assert compare_outputs("r", {"y": np.zeros((2, 3))}, ref, {"y": Tolerance(0, 0)}).passed


def test_default_tolerance_grows_with_length_and_precision():
    short, long = default_tolerance("fp32", 1024), default_tolerance("fp32", 16384)
    assert long.atol == pytest.approx(4 * short.atol)
    assert default_tolerance("fp16", 1024).atol > short.atol
    assert default_tolerance("fp32", 7) == short


def test_pruning_distortion():
    o = np.array([[1.0, 2.0], [3.0, 0.0]])
    same = pruning_distortion(o, o)
    assert same.normwise_rel == 0 and same.top1_agreement == 1.0
    flipped = pruning_distortion(o, o[:, ::-1])
    assert flipped.top1_agreement == 0.0 and flipped.normwise_rel > 0


def test_latency_interleaves_every_candidate_and_counts_runs():
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1

        return fn

    results = measure_latency(
        {"a": (make("a"), "cpu"), "b": (make("b"), "cpu")},
        batch=4,
        length=10,
        warmup=2,
        runs=12,
        rounds=3,
    )
    assert set(results) == {"a", "b"}
    for name, r in results.items():
        assert r.runs == 12 and calls[name] == 12 + 2
        assert r.min_ms <= r.p50_ms <= r.p90_ms <= r.p99_ms
        assert r.batch == 4 and r.length == 10


def test_latency_summary_percentiles_and_throughput():
    r = summarize("x", "cpu", [1.0, 2.0, 3.0, 4.0, 100.0], batch=8, length=1000, warmup=1)
    assert r.p50_ms == 3.0 and r.min_ms == 1.0 and r.mean_ms == pytest.approx(22.0)
    assert r.sequences_per_s == pytest.approx(8 / 0.003)
    assert r.steps_per_s == pytest.approx(8000 / 0.003)


def _npz(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "arrays, message",
    [
        (dict(y=np.zeros(2, np.int64)), "no array 'x'"),
        (dict(x=np.zeros((2, 5, 4), np.float32)), r"shape \(N, L, 3\)"),
        (dict(x=np.full((2, 5, 3), np.nan, np.float32)), "NaN"),
        (dict(x=np.zeros((2, 5, 3), np.float32), lengths=np.array([5, 9])), "lengths must lie"),
        (dict(x=np.zeros((2, 5, 3), np.float32), y=np.array([0, 7])), "labels must lie"),
        (dict(x=np.zeros((0, 5, 3), np.float32)), "empty"),
    ],
)
def test_bad_inputs_are_explained(tmp_path, arrays, message):
    with pytest.raises(InputError, match=message):
        load_data(_npz(tmp_path, **arrays), make_s5())


def test_token_inputs_are_checked_and_not_npz_is_refused(tmp_path):
    model = make_s5(d_input=7, input_kind="tokens")
    with pytest.raises(InputError, match="token ids"):
        load_data(_npz(tmp_path, x=np.zeros((2, 5, 7), np.float32)), model)
    with pytest.raises(InputError, match=r"\[0, 7\)"):
        load_data(_npz(tmp_path, x=np.full((2, 5), 9)), model)
    (tmp_path / "t.npz").write_text("not a zip")
    with pytest.raises(InputError, match=r"not a readable \.npz"):
        load_data(tmp_path / "t.npz", model)
    with pytest.raises(InputError, match="no labels"):
        load_data(_npz(tmp_path, x=np.zeros((2, 5), np.int64)), model, need_labels=True)


SAVEZ_HINT = "save with numpy.savez(path, x=..., y=...)"
FEATURES = np.zeros((2, 5, 3), np.float32)  # what make_s5() takes


def test_a_single_npy_array_is_refused_with_a_savez_hint(tmp_path):
    np.save(tmp_path / "x.npy", FEATURES)
    with pytest.raises(InputError) as caught:
        load_data(tmp_path / "x.npy", make_s5())
    assert str(caught.value) == (
        f"{tmp_path / 'x.npy'} holds one array, not an .npz of named arrays: {SAVEZ_HINT}"
    )


def test_an_object_array_in_an_npz_is_refused_without_unpickling(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(InputError) as caught:
        load_data(tmp_path / "d.npz", make_s5())
    assert str(caught.value) == (
        f"{tmp_path / 'd.npz'}: array 'x' is an object array (pickled Python objects), which is "
        "not loaded: save x, lengths and y as numeric arrays"
    )


def test_a_pickle_is_refused_as_pickled_objects_not_loaded(tmp_path):
    with open(tmp_path / "d.npz", "wb") as f:
        pickle.dump({"x": FEATURES}, f)
    with pytest.raises(InputError, match=r"holds pickled Python objects, which are not loaded"):
        load_data(tmp_path / "d.npz", make_s5())


def _npz_with_member(path, member: bytes, compression=zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        archive.writestr("x.npy", member)


def _npy_bytes(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _empty(path):
    path.write_bytes(b"")


def _header_broken(path):
    """An npz whose member's npy header does not parse (numpy raises tokenize.TokenError)."""
    _npz_with_member(path, _npy_bytes(FEATURES).replace(b"(2, 5, 3)", b"(2, 5, 3 "))


def _deflate_broken(path):
    """An npz whose compressed member does not inflate (numpy raises zlib.error)."""
    _npz_with_member(path, _npy_bytes(FEATURES), zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[26:30])  # the local file header
    start = 30 + name_len + extra_len
    data[start : start + 4] = b"\xff" * 4  # block type 3: invalid
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "make, detail",
    [
        (_empty, "EOFError"),
        (_deflate_broken, "'x': error"),
        (_header_broken, "'x': TokenError"),
    ],
    ids=["empty", "deflate-broken", "header-broken"],
)
def test_empty_and_damaged_npz_files_are_not_readable(tmp_path, make, detail):
    path = tmp_path / "d.npz"
    make(path)
    with pytest.raises(InputError) as caught:
        load_data(path, make_s5())
    assert str(caught.value) == f"{path} is not a readable .npz file ({detail}): {SAVEZ_HINT}"


def test_an_npz_member_that_is_not_an_npy_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as archive:
        archive.writestr("x", "hello")  # np.load hands back its bytes, not an array
    with pytest.raises(InputError, match="'x' is not a numpy array"):
        load_data(tmp_path / "d.npz", make_s5())


def _bad_data(folder, kind: str):
    path = folder / ("x.npy" if kind == "npy" else "d.npz")
    if kind == "npy":
        np.save(path, FEATURES)
    elif kind == "object":
        np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    elif kind == "empty":
        _empty(path)
    elif kind == "deflate-broken":
        _deflate_broken(path)
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("npy", "holds one array, not an .npz of named arrays"),
        ("object", "is an object array (pickled Python objects)"),
        ("empty", "is not a readable .npz file (EOFError)"),
        ("deflate-broken", "is not a readable .npz file ('x': error)"),
    ],
)
def test_cli_bad_data_file_is_one_line_and_writes_nothing(tmp_path, capsys, kind, message):
    model = save(make_s5(), tmp_path / "m.pt")
    data = _bad_data(tmp_path, kind)
    before = set(tmp_path.iterdir())
    code = main([str(model), "--ratio", "0.5", "--data", str(data)])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if not line.startswith("·")]  # progress lines
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert set(tmp_path.iterdir()) == before


def test_random_data_is_in_the_model_domain_and_seeded():
    tokens = random_data(make_s5(d_input=7, input_kind="tokens"), 3, 20, seed=1)
    assert tokens.x.dtype == np.int64 and tokens.x.max() < 7
    feats = random_data(make_s5(), 3, 20, seed=1)
    assert feats.x.shape == (3, 20, 3) and feats.x.dtype == np.float32
    assert np.array_equal(feats.x, random_data(make_s5(), 3, 20, seed=1).x)


class _EchoRunner:
    name = "echo"

    def run(self, feeds):
        return {"y": feeds["x"].mean(axis=(1, 2))[:, None] * np.array([[1.0, -1.0]])}


def test_predict_in_batches_equals_one_batch_and_accuracy_counts():
    x = np.random.default_rng(0).standard_normal((10, 4, 3)).astype(np.float32)
    data = SequenceData(x=x, lengths=None, y=(x.mean(axis=(1, 2)) < 0).astype(np.int64), source="t")
    out = predict(_EchoRunner(), data, batch_size=3)
    assert np.allclose(out, predict(_EchoRunner(), data, batch_size=100))
    result = accuracy(out, data.y)
    assert result.total == 10 and result.correct == 10 and result.accuracy == 1.0


def test_noisy_timings_are_flagged_and_quiet_ones_are_not():
    from aire_export.validate.latency import noise_warnings, summarize

    quiet = summarize("quiet", "cpu", [10.0 + 0.1 * i for i in range(20)], 1, 16, 2)
    busy = summarize("busy", "cpu", [10.0] * 15 + [40.0] * 5, 1, 16, 2)  # p90 4x the median
    assert noise_warnings([quiet]) == []
    (warning,) = noise_warnings([quiet, busy])
    assert "1 of 2 timed candidates" in warning and "worst: busy, 4.0×" in warning
