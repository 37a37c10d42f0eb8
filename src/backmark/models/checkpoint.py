"""Model checkpoints: safetensors + JSON metadata, named and checked by content hashes.

A model checkpoint is a ``.safetensors`` file: the state dict, and in its metadata one
JSON document ``backmark`` = {format, version, model, num_classes, input_shape, mean, std,
dataset, config, watermark, tensors_sha256, metadata_sha256, ...}. ``tensors_sha256`` is the
SHA-256 of the tensors' canonical bytes (:func:`~backmark.models.weights.tensors_sha256`) and
``metadata_sha256`` that of the rest of the document, so a flipped byte anywhere is refused
before the model is used. No pickled modules, ever: a checkpoint of a registered model
rebuilds itself (:func:`load_model`); a user's module loads its weights with :func:`load_weights`,
which also takes plain ``torch.save`` state dicts and plain safetensors files.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import InvalidFile
from ..io.files import atomic_write_bytes
from ..io.hashing import sha256_hex
from ..version import __version__
from .adapt import AdaptedModel
from .registry import create_model
from .weights import load_state, read_tensor_file, tensors_sha256

MODEL_FORMAT = "backmark-model"
MODEL_VERSION = 2  # 2: content hashes (version 1 files, without them, are refused: docs/formats.md)
HASH_FIELDS = ("tensors_sha256", "metadata_sha256")


def metadata_sha256(doc: dict) -> str:
    """SHA-256 of the metadata document without its two hash fields (JSON, keys sorted, no whitespace)."""
    rest = {k: v for k, v in doc.items() if k not in HASH_FIELDS}
    return sha256_hex(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode())


def save_model(path: str | os.PathLike, model: nn.Module, meta: dict, *, force: bool = False) -> Path:
    """Write ``model``'s weights and ``meta`` (JSON-able) atomically (under torchrun the caller lets rank 0 alone write).

    For an :class:`~backmark.models.adapt.AdaptedModel` the user's inner module's own state dict is
    written, and the normalisation it expects is recorded as ``input_normalization``.
    """
    from safetensors.torch import save

    if isinstance(model, AdaptedModel):
        meta = {**meta, "input_normalization": model.normalization}
        model = model.inner
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    doc = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "backmark": __version__, **meta,
           "tensors_sha256": tensors_sha256(tensors)}
    doc["metadata_sha256"] = metadata_sha256(doc)
    return atomic_write_bytes(path, save(tensors, metadata={"backmark": json.dumps(doc, sort_keys=True)}), force=force)


def check_checkpoint(meta: dict, state: dict[str, torch.Tensor], source) -> None:
    """Raise InvalidFile unless ``meta`` is a current backmark checkpoint document whose hashes match."""
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise InvalidFile(f"{source}: expected a {MODEL_FORMAT} checkpoint, found format {found!r}")
    if meta.get("version") == 1:
        raise InvalidFile(
            f"{source}: a checkpoint from before content hashes (format version 1); retrain it, or re-save its "
            "tensors with backmark.models.checkpoint.save_model (docs/formats.md)"
        )
    if meta.get("version") != MODEL_VERSION:
        raise InvalidFile(f"{source}: checkpoint version {meta.get('version')!r} is not supported")
    if meta.get("metadata_sha256") != metadata_sha256(meta):
        raise InvalidFile(f"{source}: the checkpoint's metadata does not match its hash: the file was altered or damaged")
    if meta.get("tensors_sha256") != tensors_sha256(state):
        raise InvalidFile(f"{source}: the checkpoint's weights do not match their hash: the file was altered or damaged")


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata, state dict) of a backmark checkpoint, its hashes checked; InvalidFile on anything else."""
    p = Path(path)
    meta, state = read_tensor_file(p)
    if meta is None:
        raise InvalidFile(
            f"{p}: a plain state dict (no backmark metadata): build its module with --model-factory MODULE:CALLABLE, "
            "or load it with load_weights(module, path)"
        )
    check_checkpoint(meta, state, p)
    return meta, state


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a registered model from its checkpoint. Returns (model in eval mode, metadata)."""
    meta, state = read_checkpoint(path)
    if meta.get("model") is None:
        built = f" (built by {meta['model_factory']})" if meta.get("model_factory") else ""
        raise InvalidFile(f"{path}: holds a user's model{built}, not a registered one: give --model-factory MODULE:CALLABLE, "
                          "or load it with load_weights(module, path)")
    try:
        model = create_model(
            meta["model"],
            num_classes=meta["num_classes"],
            input_shape=tuple(meta["input_shape"]),
            mean=meta.get("mean"),
            std=meta.get("std"),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidFile(f"{path}: checkpoint does not match its model description ({e})") from None
    load_state(model, state, path)
    return model.to(device).eval(), meta


def load_weights(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load weights into a user-built ``model`` (strict): a backmark checkpoint (hashes checked), a plain
    safetensors file or a ``torch.save`` state dict. Returns the backmark metadata ({} for a plain file)."""
    meta, state = read_tensor_file(path)
    if meta is not None:
        check_checkpoint(meta, state, path)
    load_state(model.inner if isinstance(model, AdaptedModel) else model, state, path)
    return meta or {}


def model_meta(model_name: str | None, data_info: dict, **extra) -> dict:
    """Metadata for :func:`save_model`: how to rebuild the model, and what it was trained on."""
    return {"model": model_name, **data_info, **extra}


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of a module's state dict as safetensors bytes: the name of in-process weights
    (of the user's own module behind an AdaptedModel or a DataParallel/DDP wrapper)."""
    from safetensors.torch import save

    from .adapt import unwrap_parallel

    model = unwrap_parallel(model)
    model = unwrap_parallel(model.inner) if isinstance(model, AdaptedModel) else model
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return sha256_hex(save(tensors))
