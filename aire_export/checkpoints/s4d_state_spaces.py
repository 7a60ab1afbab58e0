"""Import S4D models trained with state-spaces/s4 (`models/s4/s4d.py` + `example.py`).

The reference saves ``{"model": state_dict, "acc", "epoch"}`` (``example.py``); Lightning
checkpoints converted by ``checkpoints/convert_pl_to_pt.py`` are a bare state_dict whose keys start
with ``model.``. Both are read with ``weights_only=True``. Keys:

    encoder.{weight, bias}                      Linear(d_input, H)
    s4_layers.{i}.kernel.{C (H, N, 2), log_dt (H,), log_A_real (H, N), A_imag (H, N)}
    s4_layers.{i}.D (H,)
    s4_layers.{i}.output_linear.0.{weight (2H, H, 1), bias}     Conv1d(H, 2H, 1) before the GLU
    norms.{i}.{weight, bias}                    LayerNorm(H)
    decoder.{weight, bias}                      Linear(H, d_output)

Sizes come from the weights. What the weights cannot tell comes from the options: ``prenorm``
is required (the norm placement changes the function and the checkpoint does not record it;
``example.py`` trains with ``prenorm=False`` unless run with ``--prenorm``), ``dropout``,
``input_kind`` and ``pooling`` have defaults. The import records the norm placement it was given
in ``model.meta["import"]``.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from aire_export.checkpoints.ours import load_weights, read_payload
from aire_export.errors import CheckpointError
from aire_export.models import S4DConfig, S4DModel

_PREFIXES = ("model.", "module.")
_PRENORM_HINT = (
    "state-spaces S4D checkpoints do not record the norm placement: pass --config with a JSON "
    'file holding {"prenorm": true} if it was trained with --prenorm, else {"prenorm": false} '
    "(example.py's default)"
)


def _state_dict(payload: Any, source: str) -> dict[str, torch.Tensor]:
    if isinstance(payload, dict) and isinstance(payload.get("model"), dict):
        payload = payload["model"]
    elif isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(
        isinstance(v, torch.Tensor) for v in payload.values()
    ):
        raise CheckpointError(f"{source} holds no state_dict of tensors")
    out = {}
    for key, value in payload.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def import_s4d_state_spaces(
    checkpoint: str | os.PathLike, options: dict[str, Any] | None = None
) -> S4DModel:
    """An :class:`S4DModel` with the weights of a state-spaces S4D ``example.py`` checkpoint."""
    options = dict(options or {})
    source = str(checkpoint)
    sd = _state_dict(read_payload(checkpoint), source)
    n_layers = len({k.split(".")[1] for k in sd if k.startswith("s4_layers.")})
    if n_layers == 0 or "encoder.weight" not in sd or "decoder.weight" not in sd:
        raise CheckpointError(
            f"{source} is not an S4D `example.py` model (no encoder, s4_layers.* or decoder keys)"
        )
    d_model, d_input = sd["encoder.weight"].shape
    d_output = sd["decoder.weight"].shape[0]
    state_sizes = [int(sd[f"s4_layers.{i}.kernel.C"].shape[1]) for i in range(n_layers)]
    known = {"prenorm", "dropout", "input_kind", "pooling"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise CheckpointError(
            f"unknown S4D import option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    if "prenorm" not in options:
        raise CheckpointError(_PRENORM_HINT)
    prenorm = options["prenorm"]
    if not isinstance(prenorm, bool):
        raise CheckpointError(f"prenorm must be true or false, got {prenorm!r}")
    dropout = options.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
        raise CheckpointError(f"dropout must be a number, got {dropout!r}")
    config = S4DConfig.from_dict(
        dict(
            d_input=int(d_input),
            d_model=int(d_model),
            d_output=int(d_output),
            state_sizes=state_sizes,
            prenorm=prenorm,
            dropout=float(dropout),
            input_kind=options.get("input_kind", "features"),
            pooling=options.get("pooling", "pool"),
        )
    )
    weights: dict[str, torch.Tensor] = {}
    for part in ("encoder", "decoder"):
        for p in ("weight", "bias"):
            weights[f"{part}.{p}"] = sd[f"{part}.{p}"]
    for i in range(n_layers):
        src, dst = f"s4_layers.{i}", f"layers.{i}"
        for name in ("C", "log_dt", "log_A_real", "A_imag"):
            weights[f"{dst}.ssm.kernel.{name}"] = sd.get(f"{src}.kernel.{name}", torch.empty(0))
        weights[f"{dst}.ssm.D"] = sd.get(f"{src}.D", torch.empty(0))
        conv = sd.get(f"{src}.output_linear.0.weight", torch.empty(0))
        weights[f"{dst}.ssm.output_linear.weight"] = conv[..., 0] if conv.dim() == 3 else conv
        weights[f"{dst}.ssm.output_linear.bias"] = sd.get(
            f"{src}.output_linear.0.bias", torch.empty(0)
        )
        for p in ("weight", "bias"):
            weights[f"{dst}.norm.{p}"] = sd.get(f"norms.{i}.{p}", torch.empty(0))
    model = S4DModel(config)
    load_weights(model, weights, source=source)
    model.meta = {
        "source": source,
        "source_format": "s4d-state-spaces",
        "import": {"format": "s4d-state-spaces", "prenorm": prenorm},
    }
    return model.eval()
