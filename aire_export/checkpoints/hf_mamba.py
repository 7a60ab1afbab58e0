"""Import Mamba-1 language models saved by Hugging Face transformers or by mamba_ssm, without
either installed: ``config.json`` plus ``model.safetensors`` (sharded or not, read with
safetensors) or ``pytorch_model.bin`` (read with ``weights_only``).

Names (both strip to ours, models/mamba.py):

    transformers  backbone.embeddings.weight, backbone.layers.{i}.norm.weight,
                  backbone.layers.{i}.mixer.{in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj},
                  backbone.norm_f.weight, lm_head.weight (absent when tied); MambaModel: no
                  ``backbone.`` prefix and no head
    mamba_ssm     backbone.embedding.weight, the rest as above

config.json: transformers' (``model_type: "mamba"``: hidden_size, state_size, expand,
conv_kernel, time_step_rank, use_bias, use_conv_bias, layer_norm_epsilon, residual_in_fp32,
tie_word_embeddings) or mamba_ssm's (d_model, n_layer, vocab_size, ssm_cfg, rms_norm,
residual_in_fp32, tie_embeddings). The sizes are read from the weights and checked against it.
Mamba-2 and other architectures are refused with one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from aire_export.checkpoints.ours import load_weights, read_payload
from aire_export.errors import CheckpointError, InputError
from aire_export.models.mamba import MambaConfig, MambaLM

SAFETENSORS, SHARDED, BIN = "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"
_PREFIXES = ("backbone.", "model.")
_RENAMES = {"embeddings.weight": "embedding.weight"}


def import_hf_mamba(path: str | os.PathLike, options: dict[str, Any] | None = None) -> MambaLM:
    """A :class:`MambaLM` with the weights of a transformers or mamba_ssm Mamba-1 folder."""
    if options:
        raise CheckpointError(
            f"hf-mamba takes no --config options (got {', '.join(sorted(options))}): the "
            "folder's config.json says everything"
        )
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"no such folder: {folder}")
    raw = _read_config(folder)
    weights = _state_dict(folder)
    config = _config(raw, weights, folder)
    model = MambaLM(config)
    load_weights(model, _ours(weights, config), source=str(folder))
    model.meta = {"source": str(folder), "source_format": "hf-mamba"}
    return model.eval()


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder} has no config.json: give the folder save_pretrained wrote")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{path} is not JSON") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    kind = data.get("model_type")
    layer = (data.get("ssm_cfg") or {}).get("layer", "Mamba1")
    if kind == "mamba2" or layer == "Mamba2":
        raise CheckpointError(
            f"{folder} is a Mamba-2 model: aire-export imports Mamba-1 (Mamba-2's scalar A per "
            "head and grouped B, C are another architecture)"
        )
    if kind not in (None, "mamba"):
        raise CheckpointError(
            f"{folder} holds a {kind!r} model, not Mamba: hf-mamba imports Mamba-1"
        )
    if kind is None and "d_model" not in data:
        raise CheckpointError(f"{path} is neither a transformers nor a mamba_ssm Mamba config")
    return data


def _state_dict(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / SAFETENSORS).is_file() or (folder / SHARDED).is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        files = [folder / SAFETENSORS]
        if (folder / SHARDED).is_file():
            index = json.loads((folder / SHARDED).read_text())
            files = [folder / name for name in sorted(set(index.get("weight_map", {}).values()))]
        weights = {}
        for file in files:
            try:
                weights |= load_file(str(file))
            except (SafetensorError, OSError) as e:
                raise CheckpointError(f"{file} is not a readable safetensors file ({e})") from None
        return weights
    if (folder / BIN).is_file():
        payload = read_payload(folder / BIN)
        if isinstance(payload, dict) and all(isinstance(v, torch.Tensor) for v in payload.values()):
            return payload
        raise CheckpointError(f"{folder / BIN} holds no state_dict of tensors")
    raise CheckpointError(
        f"{folder} has no {SAFETENSORS}, {SHARDED} or {BIN}: give the folder save_pretrained wrote"
    )


def _strip(key: str) -> str:
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return _RENAMES.get(key, key)


def _config(raw: dict[str, Any], weights: dict[str, torch.Tensor], folder: Path) -> MambaConfig:
    sd = {_strip(k): v for k, v in weights.items()}
    if "embedding.weight" not in sd or "layers.0.mixer.A_log" not in sd:
        raise CheckpointError(
            f"{folder}: the weights are not a Mamba model's (no embedding, A_log)"
        )
    n_layers = len({k.split(".")[1] for k in sd if k.startswith("layers.")})
    vocab, d_model = sd["embedding.weight"].shape
    d_inner, _ = sd["layers.0.mixer.A_log"].shape
    state_sizes = [int(sd[f"layers.{i}.mixer.A_log"].shape[1]) for i in range(n_layers)]
    dt_rank = int(sd["layers.0.mixer.dt_proj.weight"].shape[1])
    d_conv = int(sd["layers.0.mixer.conv1d.weight"].shape[-1])
    hf = raw.get("model_type") == "mamba"
    ssm = raw.get("ssm_cfg") or {}
    if hf:
        if raw.get("hidden_act", "silu") != "silu":
            raise CheckpointError(f"{folder}: hidden_act {raw['hidden_act']!r}; Mamba uses silu")
        stated = {
            "d_model": raw.get("hidden_size"),
            "n_layers": raw.get("num_hidden_layers"),
            "d_state": raw.get("state_size"),
            "d_conv": raw.get("conv_kernel"),
        }
        tie = bool(raw.get("tie_word_embeddings", True))
        eps = float(raw.get("layer_norm_epsilon", 1e-5))
    else:
        if not raw.get("rms_norm", True):
            raise CheckpointError(f"{folder}: rms_norm is false; aire-export imports RMSNorm Mamba")
        stated = {
            "d_model": raw.get("d_model"),
            "n_layers": raw.get("n_layer"),
            "d_state": ssm.get("d_state", 16),
            "d_conv": ssm.get("d_conv", 4),
        }
        tie = bool(raw.get("tie_embeddings", True))
        eps = 1e-5
    found = {"d_model": d_model, "n_layers": n_layers, "d_state": state_sizes[0], "d_conv": d_conv}
    wrong = [
        f"{k} {stated[k]} (weights: {found[k]})" for k in found if stated[k] not in (None, found[k])
    ]
    if wrong:
        raise CheckpointError(
            f"{folder}: config.json does not match the weights: {', '.join(wrong)}"
        )
    if "lm_head.weight" not in sd and not tie:
        raise CheckpointError(f"{folder}: no lm_head.weight and the config does not tie it")
    return MambaConfig(
        vocab_size=int(vocab),
        d_model=int(d_model),
        state_sizes=state_sizes,
        d_inner=int(d_inner),
        dt_rank=dt_rank,
        d_conv=d_conv,
        norm_eps=eps,
        residual_in_fp32=bool(raw.get("residual_in_fp32", True)),
        tie_embeddings=tie or "lm_head.weight" not in sd,
        conv_bias="layers.0.mixer.conv1d.bias" in sd,
        proj_bias="layers.0.mixer.in_proj.bias" in sd,
    )


def _ours(weights: dict[str, torch.Tensor], config: MambaConfig) -> dict[str, torch.Tensor]:
    """Our names; a tied head is the embedding, so a stored copy of it is dropped."""
    sd = {_strip(k): v for k, v in weights.items()}
    if config.tie_embeddings:
        sd.pop("lm_head.weight", None)
    return sd
