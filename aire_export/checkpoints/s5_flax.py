"""Import official S5 / LAST / AIRE-Prune checkpoints (flax ``best_state.msgpack``) without JAX.

The file is ``flax.serialization.to_bytes(TrainState)``: a msgpack map with keys ``step``,
``params``, ``opt_state`` and (with BatchNorm) ``batch_stats``. Arrays are msgpack extension
objects; flax's codes are 1 = ndarray ``[shape, dtype name, C-order bytes]``, 2 = complex
``[re, im]``, 3 = numpy scalar ``[dtype name, bytes]``. The optimizer state is ignored.

Parameter tree (reference ``StackedEncoderModel`` / ``ClassificationModel``):

    params/encoder/encoder/{kernel (d_in, H), bias}
    params/encoder/layers_i/seq/{Lambda_re, Lambda_im (P,), B (P, H, 2), C | C1, C2 (H, P, 2), D, log_step}
    params/encoder/layers_i/norm/{scale, bias};  batch_stats/encoder/layers_i/norm/{mean, var}
    params/encoder/layers_i/{out1, out2}/{kernel, bias}
    params/decoder/{kernel (H, d_out), bias}

The model configuration comes from the run's arguments (the reference ``run_train.py`` flag
names, as JSON). Shapes are read from the weights and checked against those arguments.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import torch

from aire_export.checkpoints.ours import load_weights
from aire_export.errors import CheckpointError, InputError
from aire_export.models import S5Config, S5Model

# Reference datasets whose inputs are token ids (one-hot encoded by `prep_batch`).
TOKEN_DATASETS = ("listops", "imdb", "aan", "tokens")

# run_train.py flag -> S5Config field (same meaning).
_FLAG_FIELDS = {
    "conj_sym": "conj_sym",
    "clip_eigs": "clip_eigs",
    "bidirectional": "bidirectional",
    "discretization": "discretization",
    "activation_fn": "activation",
    "prenorm": "prenorm",
    "bn_momentum": "bn_momentum",
    "p_dropout": "dropout",
}


def _ext_hook(code: int, data: bytes) -> Any:
    if code == 1:
        shape, dtype, buffer = msgpack.unpackb(data, raw=False)
        return np.frombuffer(buffer, dtype=np.dtype(dtype)).reshape(shape).copy()
    if code == 2:
        re, im = msgpack.unpackb(data, raw=False)
        return complex(re, im)
    if code == 3:
        dtype, buffer = msgpack.unpackb(data, raw=False)
        return np.frombuffer(buffer, dtype=np.dtype(dtype))[0]
    return msgpack.ExtType(code, data)


def read_flax_state(path: str | os.PathLike) -> dict[str, Any]:
    """The nested dict of a flax msgpack checkpoint (arrays as numpy)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    try:
        state = msgpack.unpackb(
            path.read_bytes(), ext_hook=_ext_hook, raw=False, strict_map_key=False
        )
    except (msgpack.UnpackException, ValueError, TypeError) as e:
        raise CheckpointError(
            f"{path} is not a flax msgpack checkpoint ({e.__class__.__name__}); expected the "
            "best_state.msgpack written by the official training code"
        ) from None
    if not isinstance(state, dict) or "params" not in state:
        raise CheckpointError(f"{path} has no 'params': not a flax TrainState checkpoint")
    return state


def read_run_args(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    try:
        args = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(
            f"{path} is not JSON ({e}); give the run's arguments as a JSON object"
        ) from None
    if not isinstance(args, dict):
        raise InputError(f"{path} must hold a JSON object of run_train.py arguments")
    return args


def _get(tree: dict, *keys: str) -> Any:
    node = tree
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            raise CheckpointError(f"checkpoint has no {'/'.join(keys)}: not an S5 classifier")
        node = node[key]
    return node


def _dense(tree: dict) -> dict[str, torch.Tensor]:
    """flax Dense (kernel (in, out), bias) → torch Linear (weight (out, in), bias)."""
    return {
        "weight": torch.from_numpy(np.ascontiguousarray(tree["kernel"].T)),
        "bias": torch.from_numpy(tree["bias"]),
    }


def s5_config_from_run_args(args: dict[str, Any], params: dict) -> S5Config:
    """An S5Config from the official run arguments, with sizes read from the weights."""
    encoder = _get(params, "encoder")
    layer_names = sorted(
        (k for k in encoder if k.startswith("layers_")), key=lambda k: int(k.split("_")[1])
    )
    if not layer_names:
        raise CheckpointError("checkpoint has no encoder/layers_*: not an S5 classifier")
    if "decoder" in params and "layer1" in params["decoder"]:
        raise CheckpointError(
            "this is a retrieval (AAN) model with a two-document decoder; only classification "
            "models can be imported"
        )
    d_input, d_model = _get(encoder, "encoder", "kernel").shape
    d_output = _get(params, "decoder", "kernel").shape[1]
    state_sizes = [int(_get(encoder, n, "seq", "Lambda_re").shape[0]) for n in layer_names]

    if "n_layers" in args and int(args["n_layers"]) != len(layer_names):
        raise CheckpointError(
            f"run args say n_layers={args['n_layers']} but the checkpoint has {len(layer_names)} "
            "layers: pass the run arguments of this checkpoint"
        )
    if "d_model" in args and int(args["d_model"]) != d_model:
        raise CheckpointError(
            f"run args say d_model={args['d_model']} but the checkpoint has width {d_model}"
        )
    conj_sym = bool(args.get("conj_sym", True))
    if "ssm_size_base" in args:
        expected = int(args["ssm_size_base"]) // (2 if conj_sym else 1)
        if any(p != expected for p in state_sizes):
            raise CheckpointError(
                f"run args say ssm_size_base={args['ssm_size_base']} (conj_sym={conj_sym}: "
                f"{expected} stored states) but the checkpoint's layers have {state_sizes}"
            )
    dataset = str(args.get("dataset", ""))
    input_kind = args.get(
        "input_kind", "tokens" if any(t in dataset for t in TOKEN_DATASETS) else "features"
    )
    fields: dict[str, Any] = {
        field: args[flag] for flag, field in _FLAG_FIELDS.items() if flag in args
    }
    fields["norm"] = "batch" if args.get("batchnorm", True) else "layer"
    fields["norm_eps"] = 1e-5 if fields["norm"] == "batch" else 1e-6  # flax defaults
    fields["pooling"] = args.get("mode", "pool")
    fields["step_rescale"] = float(args.get("step_rescale", 1.0))
    fields.setdefault("activation", "half_glu1")
    return S5Config.from_dict(
        dict(
            d_input=int(d_input),
            d_model=int(d_model),
            d_output=int(d_output),
            state_sizes=state_sizes,
            input_kind=input_kind,
            output="log_softmax",
            gelu_approximate="tanh",
            **fields,
        )
    )


def import_s5_flax(checkpoint: str | os.PathLike, run_args: str | os.PathLike | dict) -> S5Model:
    """An :class:`S5Model` holding the weights of an official flax checkpoint."""
    state = read_flax_state(checkpoint)
    args = run_args if isinstance(run_args, dict) else read_run_args(run_args)
    params = state["params"]
    stats = state.get("batch_stats") or {}
    config = s5_config_from_run_args(args, params)
    encoder = params["encoder"]

    weights: dict[str, torch.Tensor] = {}
    for k, v in _dense(encoder["encoder"]).items():
        weights[f"encoder.{k}"] = v
    for k, v in _dense(params["decoder"]).items():
        weights[f"decoder.{k}"] = v
    for i in range(config.n_layers):
        layer = encoder[f"layers_{i}"]
        seq = layer["seq"]
        P = config.state_sizes[i]
        for name in ("Lambda_re", "Lambda_im", "B", "D", "log_step"):
            weights[f"layers.{i}.seq.{name}"] = torch.from_numpy(seq[name])
        if config.bidirectional:
            if "C1" in seq:
                C1, C2 = seq["C1"], seq["C2"]
            else:  # complex_normal init stores one C (H, 2P, 2) = [C1 | C2]
                C1, C2 = seq["C"][:, :P], seq["C"][:, P:]
            weights[f"layers.{i}.seq.C1"] = torch.from_numpy(np.ascontiguousarray(C1))
            weights[f"layers.{i}.seq.C2"] = torch.from_numpy(np.ascontiguousarray(C2))
        else:
            weights[f"layers.{i}.seq.C"] = torch.from_numpy(seq["C"])
        norm = layer["norm"]
        if config.norm == "batch":
            weights[f"layers.{i}.norm.scale"] = torch.from_numpy(norm["scale"])
            weights[f"layers.{i}.norm.bias"] = torch.from_numpy(norm["bias"])
            running = _get(stats, "encoder", f"layers_{i}", "norm")
            weights[f"layers.{i}.norm.mean"] = torch.from_numpy(running["mean"])
            weights[f"layers.{i}.norm.var"] = torch.from_numpy(running["var"])
        else:
            weights[f"layers.{i}.norm.weight"] = torch.from_numpy(norm["scale"])
            weights[f"layers.{i}.norm.bias"] = torch.from_numpy(norm["bias"])
        for out in ("out1", "out2"):
            if out in layer:
                for k, v in _dense(layer[out]).items():
                    weights[f"layers.{i}.{out}.{k}"] = v

    model = S5Model(config)
    load_weights(model, weights, source=str(checkpoint))
    model.meta = {
        "source": str(checkpoint),
        "source_format": "s5-flax",
        "train_step": int(state.get("step", -1)),
    }
    return model.eval()
