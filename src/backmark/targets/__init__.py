"""Targets: the ways to query a suspect model. One small interface.

A target takes a batch of uint8 images (N, C, H, W) and returns predicted labels (N,).
``input_shape`` and ``num_classes`` are what it declares, or None where it cannot tell
before being queried. Targets that see the model's outputs also have ``scores``
(N, classes). Where the model lives decides the implementation:

| where | class | module |
|---|---|---|
| an ``nn.Module`` or a backmark checkpoint | :class:`TorchTarget` | here |
| a TorchScript file (``backmark export --torchscript``) | ``TorchScriptTarget`` | ``targets.torchscript`` |
| an ONNX file (onnxruntime) | ``OnnxTarget`` | ``targets.onnx`` |
| a KServe / Triton v2 endpoint | ``V2Target`` | ``targets.http`` |
| a JSON endpoint described by the user | ``JsonTarget`` | ``targets.http`` |

:func:`open_target` picks one from a path or URL; :func:`as_target` also takes modules::

    target = open_target("suspect.onnx")
    target = open_target("http://127.0.0.1:8000/v2/models/suspect", remote=RemoteOptions(budget=200))
    verify(target, mk, vk)
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from ..errors import IncompatibleModel, InvalidFile


@runtime_checkable
class Target(Protocol):
    input_shape: tuple[int, int, int] | None
    num_classes: int | None

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> int64 labels (N,)."""
        ...


class LocalTarget:
    """A model run in this process: uint8 images -> float [0, 1] -> ``forward`` -> scores.

    Subclasses implement ``forward(x)``: float32 (B, C, H, W) in [0, 1] -> (B, classes).
    """

    name = "model"
    batch_size = 256
    input_shape: tuple[int, int, int] | None = None
    num_classes: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float32 scores (N, classes)."""
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        out = []
        for i in range(0, len(images), self.batch_size):
            out.append(self.forward(images[i : i + self.batch_size].float() / 255).float().cpu())
        logits = torch.cat(out)
        if logits.dim() != 2 or len(logits) != len(images):
            raise IncompatibleModel(f"{self.name} returns outputs of shape {tuple(logits.shape)}, expected (N, classes)")
        if self.num_classes is None:
            self.num_classes = logits.shape[1]  # learnt from the first answer
        return logits

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.scores(images).argmax(1)


class TorchTarget(LocalTarget):
    """An in-process ``torch.nn.Module`` taking float images in [0, 1]."""

    def __init__(self, model: nn.Module, *, device=None, batch_size: int = 256, input_shape=None, num_classes=None, name="model"):
        self.model = model
        self.device = device or next(model.parameters()).device
        self.batch_size = batch_size
        input_shape = input_shape or getattr(model, "input_shape", None)  # built-in models declare both
        self.input_shape = tuple(input_shape) if input_shape else None
        self.num_classes = num_classes or getattr(model, "num_classes", None)
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return self.model(x.to(self.device))
        except RuntimeError as e:
            raise IncompatibleModel(
                f"{self.name} cannot take inputs of shape {tuple(x.shape[1:])} (C, H, W): {str(e).splitlines()[0]}"
            ) from None
        finally:
            self.model.train(was_training)


def load_target(path: str | os.PathLike, *, device="cpu") -> TorchTarget:
    """A target from a backmark model checkpoint (.safetensors)."""
    from ..checkpoint import load_model

    model, meta = load_model(path, device=device)
    return TorchTarget(model, device=device, input_shape=meta["input_shape"], num_classes=meta["num_classes"], name=str(path))


def target_kind(spec: str | os.PathLike) -> str:
    """'http' for a URL, else the kind of model file: 'onnx', 'torchscript' or 'checkpoint'."""
    s = str(spec)
    if s.lower().startswith(("http://", "https://")):
        return "http"
    p = Path(s)
    if p.suffix.lower() == ".onnx":
        return "onnx"
    if p.is_file() and zipfile.is_zipfile(p):  # TorchScript archives (and torch.save files) are zips
        return "torchscript"
    if p.suffix.lower() in (".pt", ".pth", ".ts", ".torchscript"):
        return "torchscript"
    return "checkpoint"


def open_target(
    spec: str | os.PathLike,
    *,
    device="cpu",
    remote=None,
    endpoint=None,
    protocol: str = "auto",
    num_classes: int | None = None,
) -> Target:
    """A target from a checkpoint, TorchScript or ONNX file, or an http(s) URL.

    For a URL: ``remote`` is a :class:`~backmark.targets.client.RemoteOptions` (budget, timeout,
    retries, rate limit, audit log); ``protocol`` is 'v2' (KServe / Triton), 'json' (an
    endpoint described by ``endpoint``, a :class:`~backmark.targets.http.JsonEndpoint`) or
    'auto' (v2 when the path has ``/v2/models/NAME``). A v2 target fetches the model's metadata
    here. ``num_classes`` is the class count answers must have (the key's) where the endpoint
    does not declare one.
    """
    kind = target_kind(spec)
    if kind == "http":
        from .http import open_remote

        return open_remote(str(spec), options=remote, endpoint=endpoint, protocol=protocol, num_classes=num_classes)
    if remote is not None or endpoint is not None:
        raise ValueError(f"remote options apply to http(s) URLs, not to a {kind} file")
    if kind == "onnx":
        from .onnx import OnnxTarget

        return OnnxTarget(spec)
    if kind == "torchscript":
        from .torchscript import TorchScriptTarget

        return TorchScriptTarget(spec, device=device)
    return load_target(spec, device=device)


def as_target(obj, *, device="cpu") -> Target:
    """A Target from a Target, an nn.Module, or a path or URL (see :func:`open_target`)."""
    if isinstance(obj, nn.Module):
        return TorchTarget(obj)
    if isinstance(obj, (str, os.PathLike)):
        return open_target(obj, device=device)
    if isinstance(obj, Target):
        return obj
    raise TypeError(f"cannot query a {type(obj).__name__}: pass an nn.Module, a Target, a model file or a URL")


def read_export_metadata(raw: str | None, source: str) -> dict:
    """The backmark metadata an export carries (empty if none); InvalidFile if malformed."""
    import json

    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except ValueError:
        raise InvalidFile(f"{source}: malformed backmark metadata") from None
    if not isinstance(meta, dict) or meta.get("format") != "backmark-export":
        raise InvalidFile(f"{source}: metadata of an unknown format")
    return meta


__all__ = ["LocalTarget", "Target", "TorchTarget", "as_target", "load_target", "open_target", "target_kind"]
