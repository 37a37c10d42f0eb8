"""Model checkpoints: safetensors + JSON metadata.

A model checkpoint is a ``.safetensors`` file: the state dict, and in its metadata one
JSON document ``backmark`` = {format, version, model, num_classes, input_shape, mean, std,
dataset, config, watermark, ...}. No pickled modules, ever: a checkpoint of a registered
model rebuilds itself (:func:`load_model`); any other module loads its weights with
:func:`load_weights`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import InvalidFile
from ..io.files import atomic_write_bytes, read_file
from ..version import __version__
from .registry import create_model

MODEL_FORMAT = "backmark-model"
MODEL_VERSION = 1


def save_model(path: str | os.PathLike, model: nn.Module, meta: dict, *, force: bool = False) -> Path:
    """Write ``model``'s weights and ``meta`` (JSON-able) atomically (under torchrun the caller lets rank 0 alone write)."""
    from safetensors.torch import save

    doc = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "backmark": __version__, **meta}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return atomic_write_bytes(path, save(tensors, metadata={"backmark": json.dumps(doc, sort_keys=True)}), force=force)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata, state dict) of a backmark checkpoint; InvalidFile on anything else."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    p = Path(path)
    raw = read_file(p, what="model checkpoint")
    try:
        state = load(raw)
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + n])
        meta = json.loads(header.get("__metadata__", {}).get("backmark", "null"))
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:
        raise InvalidFile(f"{p}: not a safetensors model checkpoint ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise InvalidFile(f"{p}: a safetensors file without backmark metadata; load it into your module with load_weights()")
    if meta.get("version") != MODEL_VERSION:
        raise InvalidFile(f"{p}: checkpoint version {meta.get('version')!r} is not supported")
    return meta, state


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a registered model from its checkpoint. Returns (model in eval mode, metadata)."""
    meta, state = read_checkpoint(path)
    try:
        model = create_model(
            meta["model"],
            num_classes=meta["num_classes"],
            input_shape=tuple(meta["input_shape"]),
            mean=meta.get("mean"),
            std=meta.get("std"),
        )
        model.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError) as e:
        raise InvalidFile(f"{path}: checkpoint does not match its model description ({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), meta


def load_weights(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load a checkpoint's weights into a user-built ``model`` (strict). Returns the metadata."""
    meta, state = read_checkpoint(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise InvalidFile(f"{path}: weights do not fit this model ({str(e).splitlines()[0]})") from None
    return meta


def model_meta(model_name: str | None, data_info: dict, **extra) -> dict:
    """Metadata for :func:`save_model`: how to rebuild the model, and what it was trained on."""
    return {"model": model_name, **data_info, **extra}


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of a module's state dict as safetensors bytes: the name of in-process weights."""
    from safetensors.torch import save

    from ..io.hashing import sha256_hex

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return sha256_hex(save(tensors))
