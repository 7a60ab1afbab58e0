"""Sequence data: eval sets and inputs from an npz the user gives, or generated with a seed.

An inputs/eval file is an ``.npz`` with ``x`` (token ids (N, L) or features (N, L, d_input)),
optionally ``lengths`` (N,) for padded sequences and ``y`` labels for accuracy: (N,) for a
classifier, (N, L) for a language model (the target of every position; a negative label, e.g.
transformers' −100, is not scored). Checks
read the model's network config (input kind, widths, classes), so a bad file gets a one-line
error before any work starts. Validation, the sweep and the edge bundle all read data here.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from aire_export.errors import InputError
from aire_export.models import SSMNetwork


@dataclass(frozen=True)
class SequenceData:
    x: np.ndarray
    lengths: np.ndarray | None
    y: np.ndarray | None
    source: str

    @property
    def count(self) -> int:
        return int(self.x.shape[0])

    @property
    def length(self) -> int:
        return int(self.x.shape[1])

    def feeds(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        """Graph feeds for rows [start, stop): ``x`` (and ``lengths``)."""
        feeds = {"x": self.x[start:stop]}
        if self.lengths is not None:
            feeds["lengths"] = self.lengths[start:stop]
        return feeds

    def head(self, count: int) -> SequenceData:
        return SequenceData(
            x=self.x[:count],
            lengths=None if self.lengths is None else self.lengths[:count],
            y=None if self.y is None else self.y[:count],
            source=self.source,
        )


def load_data(
    path: str | os.PathLike, model: SSMNetwork, *, need_labels: bool = False
) -> SequenceData:
    """Read and check an npz of sequences for ``model`` (clear errors for wrong shapes)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    arrays = _read_npz(path)
    if "x" not in arrays:
        raise InputError(f"{path} has no array 'x' (found {', '.join(arrays) or 'nothing'})")
    data = SequenceData(
        x=arrays["x"], lengths=arrays.get("lengths"), y=arrays.get("y"), source=str(path)
    )
    return prepare_data(data, model, need_labels=need_labels)


_SAVEZ_HINT = "save with numpy.savez(path, x=..., y=...)"
_NPY_MAGIC = b"\x93NUMPY"  # np.save's format


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The named arrays of an npz, read without unpickling anything (one-line errors)."""
    unreadable = f"{path} is not a readable .npz file"
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as e:  # numpy takes anything that is not npy or zip for a pickle
        with open(path, "rb") as f:
            head = f.read(len(_NPY_MAGIC))
        if head == _NPY_MAGIC and "allow_pickle" in str(e):
            raise InputError(
                f"{path} holds one object array (pickled Python objects), not an .npz of "
                f"named arrays: {_SAVEZ_HINT}"
            ) from None
        if head[:1] == pickle.PROTO:
            raise InputError(
                f"{path} holds pickled Python objects, which are not loaded (they could run "
                f"code): {_SAVEZ_HINT}"
            ) from None
        raise InputError(f"{unreadable} (ValueError): {_SAVEZ_HINT}") from None
    except Exception as e:  # damaged files make numpy and zipfile raise many kinds of error
        raise InputError(f"{unreadable} ({e.__class__.__name__}): {_SAVEZ_HINT}") from None
    if isinstance(loaded, np.ndarray):
        raise InputError(f"{path} holds one array, not an .npz of named arrays: {_SAVEZ_HINT}")
    arrays: dict[str, np.ndarray] = {}
    with loaded as data:
        for key in data.files:
            try:
                value = data[key]
            except ValueError as e:
                if "allow_pickle" in str(e):  # an object array (.npy of dtype object)
                    raise InputError(
                        f"{path}: array {key!r} is an object array (pickled Python objects), "
                        "which is not loaded: save x, lengths and y as numeric arrays"
                    ) from None
                raise InputError(f"{unreadable} ({key!r}: ValueError): {_SAVEZ_HINT}") from None
            except Exception as e:  # a damaged member: zlib.error, BadZipFile, TokenError, ...
                raise InputError(
                    f"{unreadable} ({key!r}: {e.__class__.__name__}): {_SAVEZ_HINT}"
                ) from None
            if not isinstance(value, np.ndarray):  # a zip member that is not an .npy
                raise InputError(f"{path}: {key!r} is not a numpy array: {_SAVEZ_HINT}")
            arrays[key] = value
    return arrays


def prepare_data(
    data: SequenceData, model: SSMNetwork, *, need_labels: bool = False
) -> SequenceData:
    """``data`` checked against ``model`` (clear errors) and cast to the dtypes it takes."""
    check_data(data, model, need_labels=need_labels)
    return _as_model_dtypes(data, model)


def check_data(data: SequenceData, model: SSMNetwork, *, need_labels: bool = False) -> None:
    cfg = model.config
    where = data.source
    x = data.x
    if cfg.input_kind == "tokens":
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
            raise InputError(
                f"{where}: this model takes token ids: x must be integers of shape (N, L), got "
                f"{x.dtype} {x.shape}"
            )
        if x.size and (x.min() < 0 or x.max() >= cfg.d_input):
            raise InputError(
                f"{where}: token ids must lie in [0, {cfg.d_input}), got [{x.min()}, {x.max()}]"
            )
    elif x.ndim != 3 or x.shape[2] != cfg.d_input or not np.issubdtype(x.dtype, np.floating):
        raise InputError(
            f"{where}: x must be float features of shape (N, L, {cfg.d_input}), got {x.dtype} {x.shape}"
        )
    elif not np.isfinite(x).all():
        raise InputError(f"{where}: x holds NaN or inf values")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"{where}: x is empty {x.shape}")
    if data.lengths is not None and cfg.per_token:
        raise InputError(
            f"{where} has lengths, but a language model predicts at every position and is "
            "causal: drop lengths and label the padded positions −100 (not scored)"
        )
    if data.lengths is not None:
        lengths = data.lengths
        if lengths.shape != (x.shape[0],) or not np.issubdtype(lengths.dtype, np.integer):
            raise InputError(
                f"{where}: lengths must be integers of shape ({x.shape[0]},), got {lengths.shape}"
            )
        if lengths.min() < 1 or lengths.max() > x.shape[1]:
            raise InputError(f"{where}: lengths must lie in [1, {x.shape[1]}]")
    if data.y is not None:
        y = data.y
        shape = tuple(x.shape[:2]) if cfg.per_token else (x.shape[0],)  # per step or sequence
        if y.shape != shape or not np.issubdtype(y.dtype, np.integer):
            raise InputError(
                f"{where}: y must be integer labels of shape {shape}"
                + (" (the next token at every position)" if cfg.per_token else "")
                + f", got {y.dtype} {y.shape}"
            )
        if y.max() >= cfg.d_output or (not cfg.per_token and y.min() < 0):
            raise InputError(f"{where}: labels must lie in [0, {cfg.d_output})")
        if cfg.per_token and y.max() < 0:
            raise InputError(
                f"{where}: every label is negative (not scored): nothing to measure accuracy on"
            )
    elif need_labels:
        raise InputError(f"{where} has no labels 'y': accuracy needs them")


def _as_model_dtypes(data: SequenceData, model: SSMNetwork) -> SequenceData:
    x_dtype = np.int64 if model.config.input_kind == "tokens" else np.float32
    return SequenceData(
        x=data.x.astype(x_dtype, copy=False),
        lengths=None if data.lengths is None else data.lengths.astype(np.int64, copy=False),
        y=None if data.y is None else data.y.astype(np.int64, copy=False),
        source=data.source,
    )


def calibration_data(calib, model: SSMNetwork) -> SequenceData | None:
    """Calibration sequences for ``model`` from what the API takes: a SequenceData, the path
    of an npz (``x`` as in ``--data``), or the array ``x`` itself (token ids (N, L) or features
    (N, L, d_input)); None stays None."""
    if calib is None or isinstance(calib, SequenceData):
        return calib
    if isinstance(calib, (str, os.PathLike)):
        return load_data(calib, model)
    data = SequenceData(x=np.asarray(calib), lengths=None, y=None, source="calibration array")
    return prepare_data(data, model)


def with_full_lengths(data: SequenceData) -> SequenceData:
    """``data`` with ``lengths`` (every sequence at full length) where it has none: what a graph
    with a lengths input needs, and the same outputs as no lengths at all."""
    if data.lengths is not None:
        return data
    return replace(data, lengths=np.full(data.count, data.length, dtype=np.int64))


def random_data(model: SSMNetwork, batch: int, length: int, seed: int = 0) -> SequenceData:
    """Inputs in the model's domain: uniform token ids, or standard-normal features."""
    if batch < 1 or length < 1:
        raise InputError(f"batch and length must be ≥ 1, got {batch} and {length}")
    rng = np.random.default_rng(seed)
    cfg = model.config
    if cfg.input_kind == "tokens":
        x = rng.integers(0, cfg.d_input, (batch, length)).astype(np.int64)
    else:
        x = rng.standard_normal((batch, length, cfg.d_input)).astype(np.float32)
    return SequenceData(x=x, lengths=None, y=None, source=f"random (seed {seed})")
