"""A character language model's data: Python source code from the standard library, a corpus
every machine with Python has (no download).

Text: the source of the modules in TRAIN_MODULES (training) and EVAL_MODULES (held out: other
modules, never seen in training), read with ``inspect.getsource`` from the running Python.
Tokens are bytes: ASCII characters 0..127 (anything else becomes ``?``), vocabulary 128.

    x  (N, L) token ids: a window of the text          y  (N, L): the next character of each

The eval set (``data/charlm_eval.npz``) and the calibration set (``data/charlm_calib.npz``, x
only: windows of the *training* text, another draw than training used) are written once and
shipped, so they do not change with the Python version; the training text does a little (the
version is recorded in models.json).

    python examples/data_charlm.py [--out examples/data]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
from pathlib import Path

import numpy as np
from sequence_set import SequenceSet

VOCAB = 128
TRAIN_MODULES = (
    "argparse", "textwrap", "difflib", "csv", "json.decoder", "json.encoder", "heapq",
    "bisect", "shlex", "string", "glob", "fnmatch", "queue", "pprint", "dataclasses", "enum",
    "functools", "contextlib", "configparser", "copy", "ftplib", "gettext", "ipaddress",
    "locale", "logging", "optparse", "pathlib", "pickle", "random", "selectors", "statistics",
    "tarfile", "tempfile", "threading", "tokenize", "traceback", "typing", "uuid", "zipfile",
)  # fmt: skip
EVAL_MODULES = ("calendar", "fractions", "base64", "colorsys", "shutil")
EVAL_WINDOWS, CALIB_WINDOWS, WINDOW = 128, 32, 256
EVAL_SEED, CALIB_SEED = 1_000_003, 2_000_003  # training draws use seeds below 10^6


def encode(text: str) -> np.ndarray:
    """Bytes of ``text`` as token ids: ASCII kept, anything else ``?``."""
    return np.frombuffer(text.encode("ascii", "replace"), dtype=np.uint8).astype(np.int64)


def corpus(modules: tuple[str, ...]) -> np.ndarray:
    return encode("".join(inspect.getsource(importlib.import_module(m)) for m in modules))


def windows(tokens: np.ndarray, count: int, length: int, seed: int) -> SequenceSet:
    """``count`` random windows of ``length`` + 1 tokens: x the first ``length``, y shifted."""
    starts = np.random.default_rng(seed).integers(0, len(tokens) - length - 1, count)
    rows = np.stack([tokens[s : s + length + 1] for s in starts]).astype(np.uint8)
    return SequenceSet(rows[:, :-1], rows[:, 1:])


def eval_set() -> SequenceSet:
    return windows(corpus(EVAL_MODULES), EVAL_WINDOWS, WINDOW, EVAL_SEED)


def calibration_set() -> np.ndarray:
    return windows(corpus(TRAIN_MODULES), CALIB_WINDOWS, WINDOW, CALIB_SEED).x


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write the char-LM eval and calibration sets.")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    args = parser.parse_args()
    held_out = eval_set()
    held_out.save(args.out / "charlm_eval.npz")
    np.savez_compressed(args.out / "charlm_calib.npz", x=calibration_set())
    print(f"wrote {args.out}/charlm_eval.npz {held_out.x.shape} and charlm_calib.npz")
