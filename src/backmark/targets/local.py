"""Models run in this process: the :class:`Target` interface, :class:`LocalTarget` and :class:`TorchTarget`."""
from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from ..errors import IncompatibleModel, InvalidFile
from ..models.adapt import AdaptedModel, module_devices, same_device, starts_with_normalize, unwrap_parallel


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
    """An in-process ``torch.nn.Module`` taking float images in [0, 1], or normalised ones with ``mean``/``std``.

    ``mean``/``std`` (per channel, or one value for all): the normalisation the module's
    forward expects, applied to the [0, 1] images first (a module that starts with a backmark
    ``Normalize`` is refused them: it would normalise twice). Scores are read from a tensor,
    a tuple (first element), a dict ("logits", or its one tensor) or an object's ``.logits``.
    An ``nn.DataParallel`` / ``DistributedDataParallel`` wrapper is unwrapped; queries run the
    inner module in eval mode and put back the mode of every submodule afterwards.
    ``device``: where the queries run (None: where the module lives); a module that lives
    elsewhere is refused with one line, never moved behind the caller's back.
    """

    def __init__(self, model: nn.Module, *, device=None, batch_size: int = 256, input_shape=None, num_classes=None,
                 name="model", mean=None, std=None):
        inner = unwrap_parallel(model)
        if mean is not None and starts_with_normalize(inner):
            raise IncompatibleModel(f"{name} starts with a backmark Normalize layer already: do not also give mean/std")
        try:
            self.model = AdaptedModel(inner, mean=mean, std=std, name=name)
        except ValueError as e:
            raise IncompatibleModel(f"{name}: {e}") from None
        self.inner = inner
        self.device = _query_device(inner, device, name)
        self.batch_size = batch_size
        input_shape = input_shape or getattr(inner, "input_shape", None)  # built-in models declare both
        self.input_shape = tuple(input_shape) if input_shape else None
        self.num_classes = num_classes or getattr(inner, "num_classes", None)
        self.name = name
        # A model in channels_last (as backmark trains them) is fed channels_last batches: converting at the
        # first conv instead costs more than the forward pass itself for a small CNN on a CPU.
        self.channels_last = any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                                 for p in inner.parameters())

    @property
    def normalization(self) -> dict | None:
        """The mean/std applied before the module, or None."""
        return self.model.normalization

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modes = [(m, m.training) for m in self.inner.modules()]  # each submodule's own mode (frozen BN stays frozen)
        self.inner.eval()
        x = x.to(self.device)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        try:
            with torch.no_grad():
                return self.model(x)
        except RuntimeError as e:
            raise IncompatibleModel(
                f"{self.name} failed on inputs of shape {tuple(x.shape[1:])} (C, H, W): {str(e).strip().splitlines()[0]}"
            ) from None
        finally:
            for m, training in modes:
                m.training = training


def _query_device(model: nn.Module, device, name: str) -> torch.device:
    lives = module_devices(model)
    if device is None:
        return lives[0] if lives else torch.device("cpu")
    want = torch.device(device)
    if lives and not any(same_device(d, want) for d in lives):
        where = ", ".join(str(d) for d in lives)
        raise IncompatibleModel(
            f"{name} lives on {where} but the queries were asked to run on {want}: move the model there "
            f"(model.to({str(want)!r})) or pass device={str(lives[0])!r}"
        )
    return want


def load_target(path: str | os.PathLike, *, device="cpu", mean=None, std=None) -> TorchTarget:
    """A target from a backmark model checkpoint (.safetensors)."""
    from ..models.checkpoint import load_model

    model, meta = load_model(path, device=device)
    model = model.to(memory_format=torch.channels_last)  # ours to lay out: the faster one for convolutions on a CPU
    return TorchTarget(model, device=device, input_shape=meta["input_shape"], num_classes=meta["num_classes"], name=str(path),
                       mean=mean, std=std)


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


def describe(model) -> dict:
    """{"name", "sha256", "hashed"}: what names a model in reports and records.

    A file: its SHA-256 ("file"); an in-process module: the SHA-256 of its weights
    ("weights"); a remote or other target: its name only (no hash).
    """
    from pathlib import Path

    from ..io.hashing import file_sha256
    from ..models.checkpoint import weights_sha256

    if isinstance(model, (str, os.PathLike)) and Path(model).is_file():
        return {"name": str(model), "sha256": file_sha256(model), "hashed": "file"}
    module = model if isinstance(model, nn.Module) else getattr(model, "model", None)
    if isinstance(module, nn.Module):
        return {"name": getattr(model, "name", None) or type(module).__name__, "sha256": weights_sha256(module), "hashed": "weights"}
    return {"name": str(getattr(model, "name", model)), "sha256": None, "hashed": None}
