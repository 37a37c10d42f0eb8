"""Weights files and what names them: the canonical hash of a state dict, plain state-dict files.

A user's model is saved the usual ways: ``torch.save(model.state_dict(), "m.pt")`` or
``safetensors.torch.save_file(model.state_dict(), "m.safetensors")``. :func:`read_tensor_file`
reads either (a ``.pt`` with ``torch.load(weights_only=True)``: plain tensors only, never
pickled code) as well as a backmark checkpoint, whose content hashes it leaves to
:mod:`~backmark.models.checkpoint` to check.

The canonical bytes of a state dict (docs/formats.md), hashed by :func:`tensors_sha256`::

    b"backmark/tensors/v1"
    for each name, sorted by its UTF-8 bytes:
        u32be(len(name)) name  u32be(len(dtype)) dtype  u32be(ndim) u64be(dim)...  u64be(nbytes) data

``dtype`` is torch's name without ``torch.`` (``float32``, ``int64``...) and ``data`` the
tensor's elements in C order, little-endian (the byte order safetensors stores).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..errors import InvalidFile
from ..io.files import read_file

TENSORS_TAG = b"backmark/tensors/v1"


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's canonical bytes (names, dtypes, shapes, values): the weights' name."""
    h = hashlib.sha256(TENSORS_TAG)
    for name in sorted(state, key=lambda n: n.encode()):
        t = state[name].detach().to("cpu").contiguous()
        raw_name, dtype = name.encode(), str(t.dtype).removeprefix("torch.").encode()
        data = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
        h.update(struct.pack(">I", len(raw_name)) + raw_name + struct.pack(">I", len(dtype)) + dtype)
        h.update(struct.pack(">I", t.dim()) + b"".join(struct.pack(">Q", d) for d in t.shape))
        h.update(struct.pack(">Q", t.numel() * t.element_size()))
        h.update(data)
    return h.hexdigest()


def file_kind(raw: bytes) -> str:
    """'safetensors', 'torchscript', 'torch-save' (a zip or legacy pickle from torch.save), or 'unknown'."""
    if raw[:4] == b"PK\x03\x04":
        try:
            names = zipfile.ZipFile(io.BytesIO(raw)).namelist()
        except zipfile.BadZipFile:
            return "unknown"
        return "torchscript" if any("/code/" in n for n in names) else "torch-save"
    if raw[:2] == b"\x80\x02":  # torch.save(..., _use_new_zipfile_serialization=False)
        return "torch-save"
    if len(raw) >= 9 and raw[8:9] == b"{" and int.from_bytes(raw[:8], "little") <= len(raw) - 8:
        return "safetensors"
    return "unknown"


def safetensors_metadata(raw: bytes, source) -> dict | None:
    """The ``backmark`` metadata document of a safetensors file (None when it has none)."""
    try:
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + n])
        doc = header.get("__metadata__", {}).get("backmark")
        return None if doc is None else json.loads(doc)
    except (ValueError, UnicodeDecodeError, AttributeError) as e:
        raise InvalidFile(f"{source}: damaged safetensors header ({e})") from None


def read_tensor_file(path: str | os.PathLike) -> tuple[dict | None, dict[str, torch.Tensor]]:
    """(backmark metadata or None, state dict) of a safetensors file or a ``torch.save`` state dict."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    p = Path(path)
    raw = read_file(p, what="model file")
    kind = file_kind(raw)
    if kind == "safetensors":
        meta = safetensors_metadata(raw, p)
        try:
            return meta, load(raw)
        except SafetensorError as e:
            raise InvalidFile(f"{p}: damaged safetensors file ({e})") from None
    if kind == "torch-save":
        return None, _state_dict(raw, p)
    if kind == "torchscript":
        raise InvalidFile(f"{p}: a TorchScript archive, not weights: query it with --target {p}")
    raise InvalidFile(f"{p}: not a safetensors file or a torch.save state dict")


def _state_dict(raw: bytes, p: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (torch raises unrelated types: UnpicklingError, RuntimeError...)
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise InvalidFile(f"{p}: not a plain state dict (torch.load with weights_only=True refused it: {first})") from None
    if not isinstance(obj, dict) or not obj:
        raise InvalidFile(f"{p}: holds a {type(obj).__name__}, not a state dict; save model.state_dict()")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise InvalidFile(
            f"{p}: a dict with keys {sorted(map(str, obj))[:6]}, not a state dict of tensors "
            f"({bad[0]!r} is a {type(obj[bad[0]]).__name__}); save model.state_dict() alone"
        )
    return obj


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source) -> None:
    """``model.load_state_dict(state, strict=True)``; a misfit refused in one line naming the keys."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (first {missing[0]!r})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (first {unexpected[0]!r})")
    if shapes:
        k = shapes[0]
        problems.append(
            f"{len(shapes)} of another shape (first {k!r}: {tuple(state[k].shape)} in the file, "
            f"{tuple(own[k].shape)} in the model)"
        )
    if problems:
        hint = ""
        if unexpected and all(k.startswith("module.") for k in state):
            hint = "; the keys start with 'module.': saved from a DataParallel/DDP wrapper, save model.module.state_dict()"
        raise InvalidFile(f"{source}: weights do not fit this model: tensors {', '.join(problems)}{hint}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise InvalidFile(f"{source}: weights do not fit this model ({str(e).strip().splitlines()[-1].strip()})") from None


__all__ = ["file_kind", "load_state", "read_tensor_file", "safetensors_metadata", "tensors_sha256"]
