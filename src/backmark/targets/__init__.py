"""Targets: the ways to query a suspect model. One small interface.

A target takes a batch of uint8 images (N, C, H, W) and returns predicted labels (N,).
``input_shape`` and ``num_classes`` are what it declares, or None where it cannot tell
before being queried. :func:`as_target` turns what a user has into a target.
"""
from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from ..errors import IncompatibleModel


@runtime_checkable
class Target(Protocol):
    input_shape: tuple[int, int, int] | None
    num_classes: int | None

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> int64 labels (N,)."""
        ...


class TorchTarget:
    """An in-process ``torch.nn.Module`` taking float images in [0, 1]."""

    def __init__(self, model: nn.Module, *, device=None, batch_size: int = 256, input_shape=None, num_classes=None, name="model"):
        self.model = model
        self.device = device or next(model.parameters()).device
        self.batch_size = batch_size
        input_shape = input_shape or getattr(model, "input_shape", None)  # built-in models declare both
        self.input_shape = tuple(input_shape) if input_shape else None
        self.num_classes = num_classes or getattr(model, "num_classes", None)
        self.name = name

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        out = []
        try:
            with torch.no_grad():
                for i in range(0, len(images), self.batch_size):
                    xb = images[i : i + self.batch_size].to(self.device).float() / 255
                    out.append(self.model(xb).float().cpu())
        except RuntimeError as e:
            raise IncompatibleModel(
                f"{self.name} cannot take inputs of shape {tuple(images.shape[1:])} (C, H, W): {str(e).splitlines()[0]}"
            ) from None
        finally:
            self.model.train(was_training)
        logits = torch.cat(out)
        if logits.dim() != 2:
            raise IncompatibleModel(f"{self.name} returns outputs of shape {tuple(logits.shape)}, expected (N, classes)")
        if self.num_classes is None:
            self.num_classes = logits.shape[1]  # learnt from the first answer
        return logits

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.scores(images).argmax(1)


def load_target(path: str | os.PathLike, *, device="cpu") -> TorchTarget:
    """A target from a backmark model checkpoint (.safetensors)."""
    from ..checkpoint import load_model

    model, meta = load_model(path, device=device)
    return TorchTarget(model, device=device, input_shape=meta["input_shape"], num_classes=meta["num_classes"], name=str(path))


def as_target(obj, *, device="cpu") -> Target:
    """A Target from a Target, an nn.Module, or a checkpoint path."""
    if isinstance(obj, nn.Module):
        return TorchTarget(obj)
    if isinstance(obj, (str, os.PathLike)):
        return load_target(obj, device=device)
    if isinstance(obj, Target):
        return obj
    raise TypeError(f"cannot query a {type(obj).__name__}: pass an nn.Module, a Target or a checkpoint path")


__all__ = ["Target", "TorchTarget", "as_target", "load_target"]
