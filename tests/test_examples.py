"""The shipped example models: trained, as accurate as models.json says, small, reproducible data."""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import rel_err

import aire_export
from aire_export.models import S4DModel, S5Model
from aire_export.models.mamba import MambaLM

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))  # the examples are scripts that import each other by name

import data_charlm  # noqa: E402
import data_keywords  # noqa: E402
import data_listops  # noqa: E402
from data_listops import Operation  # noqa: E402
from sequence_set import SequenceSet, accuracy  # noqa: E402

REGISTRY = json.loads((EXAMPLES / "models.json").read_text())
MAX_FILE_BYTES = 5_000_000
ACCURACY_TOLERANCE = 0.005  # float summation order may flip a borderline prediction
ABOVE_MAJORITY = 0.1
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a busy CPU a second thread mostly waits (measured 3× slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def shipped(name: str) -> tuple[dict, torch.nn.Module, SequenceSet]:
    entry = REGISTRY[name]
    return (
        entry,
        aire_export.load(EXAMPLES / entry["checkpoint"]),
        SequenceSet.load(EXAMPLES / entry["eval_data"]),
    )


def test_registry_lists_the_four_example_models():
    assert sorted(REGISTRY) == ["mamba_charlm", "s4d_keywords", "s5_digits", "s5_listops"]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_shipped_files_are_small_and_as_registered(name):
    entry = REGISTRY[name]
    for key in ("checkpoint", "eval_data"):
        size = (EXAMPLES / entry[key]).stat().st_size
        assert size <= MAX_FILE_BYTES
        assert size == entry[f"{key}_bytes"]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_shipped_model_reaches_its_registered_accuracy(name):
    entry, model, data = shipped(name)
    measured = accuracy(model, data)
    assert len(data) == entry["eval_count"]
    assert data.majority_accuracy() == pytest.approx(entry["majority_accuracy"], abs=1e-4)
    assert measured >= entry["eval_accuracy"] - ACCURACY_TOLERANCE
    assert measured >= data.majority_accuracy() + ABOVE_MAJORITY
    assert sum(p.numel() for p in model.parameters()) == entry["parameters"]


def test_readme_states_the_registered_accuracies():
    readme = (EXAMPLES / "README.md").read_text()
    for entry in REGISTRY.values():
        assert f"{100 * entry['eval_accuracy']:.1f} %" in readme
        assert f"{100 * entry['majority_accuracy']:.1f} %" in readme


def test_shipped_architectures_are_the_documented_ones():
    digits, listops, keywords = (shipped(n)[1] for n in ("s5_digits", "s5_listops", "s4d_keywords"))
    assert isinstance(digits, S5Model) and not digits.bidirectional and digits.config.conj_sym
    assert isinstance(listops, S5Model) and listops.bidirectional and listops.config.conj_sym
    assert listops.config.input_kind == "tokens" and listops.config.pooling == "pool"
    assert listops.config.norm == "batch" and listops.config.activation == "half_glu2"
    assert isinstance(keywords, S4DModel) and not keywords.bidirectional
    charlm = shipped("mamba_charlm")[1]
    assert isinstance(charlm, MambaLM) and charlm.config.vocab_size == data_charlm.VOCAB


def stream(model, x: torch.Tensor) -> list[torch.Tensor]:
    """Outputs after every step of ``model.step`` over x (B, L, d_input)."""
    state = model.init_state(x.shape[0])
    outputs = []
    for t in range(x.shape[1]):
        y, state = model.step(x[:, t], state)
        outputs.append(y)
    return outputs


@pytest.mark.parametrize("name", ["s5_digits", "s4d_keywords"])
def test_streaming_model_step_by_step_reproduces_the_sequence_output(name):
    _, model, data = shipped(name)
    model = model.double()
    x = torch.from_numpy(data.x[:3].astype(np.float64))
    with torch.no_grad():
        outputs = stream(model, x)
        prefix = x.shape[1] // 3
        assert rel_err(outputs[-1], model(x)) < 1e-9
        assert rel_err(outputs[prefix - 1], model(x[:, :prefix])) < 1e-9


# ---- generators ---------------------------------------------------------------------------
def test_digit_split_is_deterministic_and_disjoint():
    pytest.importorskip("sklearn")
    from data_digits import digit_splits

    train, held_out = digit_splits(seed=3, side=16, eval_count=50)
    again_train, again_held_out = digit_splits(seed=3, side=16, eval_count=50)
    _, other = digit_splits(seed=4, side=16, eval_count=50)
    assert np.array_equal(held_out.x, again_held_out.x) and np.array_equal(train.y, again_train.y)
    assert not np.array_equal(held_out.x, other.x)
    assert held_out.x.shape == (50, 256, 1) and len(train) + len(held_out) == 1797
    rows = {r.tobytes() for r in train.x}
    assert not any(r.tobytes() in rows for r in held_out.x)
    assert 0 <= held_out.x.min() and held_out.x.max() <= 1


def test_shipped_digits_eval_set_is_what_the_generator_makes():
    pytest.importorskip("sklearn")
    from data_digits import digit_splits

    _, held_out = digit_splits()
    stored = SequenceSet.load(EXAMPLES / REGISTRY["s5_digits"]["eval_data"])
    assert np.array_equal(stored.x, held_out.x) and np.array_equal(stored.y, held_out.y)


@pytest.mark.parametrize(
    "expression, value",
    [
        (Operation("[MAX", (4, Operation("[MIN", (2, 3)), 1)), 4),
        (Operation("[MED", (1, 2)), 1),  # int(1.5): the mean of the middle pair, truncated
        (Operation("[MED", (9, 1, 5)), 5),
        (Operation("[SM", (9, 8, Operation("[SM", (7, 7)))), 1),  # (9 + 8 + 4) mod 10
    ],
)
def test_listops_evaluates_like_lra(expression, value):
    assert data_listops.evaluate(expression) == value


def test_listops_generator_is_deterministic_and_well_formed():
    a = data_listops.generate_listops(30, seed=5, min_length=16, max_length=64)
    b = data_listops.generate_listops(30, seed=5, min_length=16, max_length=64)
    c = data_listops.generate_listops(30, seed=6, min_length=16, max_length=64)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)
    assert a.x.shape == (30, 64) and a.x.dtype == np.uint8
    assert 16 <= a.lengths.min() and a.lengths.max() <= 64
    close = data_listops.TOKEN_ID["]"]
    opens = [data_listops.TOKEN_ID[o] for o in data_listops.OPERATORS]
    for row, n in zip(a.x, a.lengths, strict=True):
        assert (row[n:] == 0).all() and (row[:n] != 0).all()
        depth = np.cumsum(np.isin(row[:n], opens).astype(int) - (row[:n] == close))
        assert depth[-1] == 0 and depth[:-1].min() >= 1  # one balanced expression
    assert len(set(map(bytes, a.x))) == 30


def test_listops_exclusion_keeps_training_draws_off_the_eval_set():
    held_out = data_listops.generate_listops(40, seed=7, min_length=4, max_length=12)
    redrawn = data_listops.generate_listops(
        40, seed=7, min_length=4, max_length=12, exclude=data_listops.token_keys(held_out)
    )
    assert not data_listops.token_keys(held_out) & data_listops.token_keys(redrawn)


def test_listops_tree_sampling_follows_the_lra_depth_rule():
    rng = random.Random(0)
    for _ in range(200):
        tree, length = data_listops.random_tree(rng, 1, 3, 10)
        assert len(data_listops.symbols(tree)) == length
        depth = np.cumsum([s.startswith("[") - (s == "]") for s in data_listops.symbols(tree)])
        assert depth.max() <= 2  # max_depth 3: operators only at depths 1 and 2


def test_shipped_listops_eval_set_is_what_the_generator_makes():
    stored = SequenceSet.load(EXAMPLES / REGISTRY["s5_listops"]["eval_data"])
    fresh = data_listops.eval_set()
    assert np.array_equal(stored.x, fresh.x) and np.array_equal(stored.lengths, fresh.lengths)
    assert np.array_equal(stored.y, fresh.y)


def test_keyword_clip_placement_is_deterministic_and_sized():
    t = np.arange(4000) / data_keywords.SAMPLE_RATE
    word = np.sin(2 * np.pi * 440 * t).astype(np.float32)  # a stand-in for a spoken word
    a = data_keywords.place_in_clip(word, np.random.default_rng(1))
    b = data_keywords.place_in_clip(word, np.random.default_rng(1))
    c = data_keywords.place_in_clip(word, np.random.default_rng(2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.shape == (data_keywords.SAMPLE_RATE,) and np.abs(a).max() <= 1
    frames = data_keywords.to_frames(np.stack([a, c]))
    assert frames.shape == (2, 100, data_keywords.FRAME)


@needs_espeak
def test_keyword_clips_are_deterministic_for_a_seed():
    a = data_keywords.keyword_clips(3, seed=11)
    b = data_keywords.keyword_clips(3, seed=11)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)


@pytest.mark.slow  # synthesizes all 300 clips
@needs_espeak
def test_shipped_keywords_eval_set_is_what_the_generator_makes():
    stored = SequenceSet.load(EXAMPLES / REGISTRY["s4d_keywords"]["eval_data"])
    fresh = data_keywords.eval_set()
    assert np.array_equal(stored.y, fresh.y)
    assert np.abs(stored.x.astype(np.float32) - fresh.x.astype(np.float32)).max() < 1e-3


CHARLM = REGISTRY["mamba_charlm"]
same_python = pytest.mark.skipif(
    CHARLM["python"] != sys.version.split()[0],
    reason="the char-LM text is the standard library source of the Python it was made with",
)


@same_python
def test_shipped_charlm_sets_are_what_the_generator_makes():
    stored = SequenceSet.load(EXAMPLES / CHARLM["eval_data"])
    fresh = data_charlm.eval_set()
    assert np.array_equal(stored.x, fresh.x) and np.array_equal(stored.y, fresh.y)
    with np.load(EXAMPLES / CHARLM["calib_data"]) as calib:
        assert np.array_equal(calib["x"], data_charlm.calibration_set())


def test_charlm_eval_text_is_never_trained_on_and_labels_are_the_next_character():
    assert not set(data_charlm.EVAL_MODULES) & set(data_charlm.TRAIN_MODULES)
    stored = SequenceSet.load(EXAMPLES / CHARLM["eval_data"])
    assert np.array_equal(stored.x[:, 1:], stored.y[:, :-1])
    assert stored.x.max() < data_charlm.VOCAB
