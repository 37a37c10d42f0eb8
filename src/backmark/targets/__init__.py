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

from torch import nn

from ..errors import IncompatibleModel
from .local import LocalTarget, Target, TorchTarget, describe, load_target, read_export_metadata


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


def as_target(obj, *, device=None, mean=None, std=None) -> Target:
    """A Target from a Target, an nn.Module, or a path or URL (see :func:`open_target`).

    ``device``: where a module's queries run (None: where it lives; files: the CPU).
    ``mean``/``std``: the normalisation an in-process model's forward expects (modules and
    checkpoints; an exported file or endpoint is refused them: give them to its target).
    """
    if isinstance(obj, nn.Module):
        return TorchTarget(obj, device=device, mean=mean, std=std)
    if isinstance(obj, (str, os.PathLike)):
        if mean is not None or std is not None:
            if target_kind(obj) != "checkpoint":
                raise IncompatibleModel(f"mean/std apply to models run in process, not to a {target_kind(obj)} target ({obj})")
            return load_target(obj, device=device or "cpu", mean=mean, std=std)
        return open_target(obj, device=device or "cpu")
    if isinstance(obj, Target):
        if mean is not None or std is not None:
            raise IncompatibleModel("mean/std apply to modules and checkpoints; a Target normalises as it was built")
        return obj
    raise TypeError(f"cannot query a {type(obj).__name__}: pass an nn.Module, a Target, a model file or a URL")


__all__ = ["LocalTarget", "Target", "TorchTarget", "as_target", "describe", "load_target", "open_target", "read_export_metadata", "target_kind"]
