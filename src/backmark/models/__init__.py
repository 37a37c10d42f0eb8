"""Models by name.

Every built-in model takes float images in [0, 1], shape (B, C, H, W), and starts with a
:class:`Normalize` layer holding the dataset's mean and std as buffers, so a checkpoint,
an ONNX or a TorchScript export is self-contained: uint8 / 255 in, logits out.

Any ``torch.nn.Module`` with that input convention works through the library API; the
registry only names the ones the CLI can build::

    model = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28))
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import UnknownName

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_model(name: str, description: str):
    """Decorator: make a model factory available as ``create_model(name, ...)``."""

    def wrap(fn):
        _REGISTRY[name] = fn
        _DESCRIPTIONS[name] = description
        return fn

    return wrap


class Normalize(nn.Module):
    """(x - mean) / std per channel, with mean and std saved in the state dict."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def list_models() -> dict[str, str]:
    """Registered model names and one-line descriptions."""
    return dict(_DESCRIPTIONS)


def create_model(
    name: str,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> nn.Module:
    """Build a registered model. ``mean``/``std`` default to 0.5 per channel."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise UnknownName(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}") from None
    c = input_shape[0]
    mean = tuple(mean) if mean is not None else (0.5,) * c
    std = tuple(std) if std is not None else (0.5,) * c
    if len(mean) != c or len(std) != c:
        raise ValueError(f"mean/std need {c} values for {c}-channel input")
    model = factory(num_classes=num_classes, input_shape=tuple(input_shape), mean=mean, std=std)
    # Declared on the instance so targets can refuse triggers of the wrong shape before querying.
    model.input_shape, model.num_classes = tuple(input_shape), num_classes
    return model


def output_layer(model: nn.Module) -> nn.Linear:
    """The final classification layer (the one FTLL/RTLL retrain and an owner keeps).

    Built-in models name it ``fc``; for others the last ``nn.Linear`` is taken.
    """
    fc = getattr(model, "fc", None)
    if isinstance(fc, nn.Linear):
        return fc
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no nn.Linear output layer")
    return linears[-1]


from . import resnet, small  # noqa: E402,F401  (registers the built-in models)

__all__ = ["Normalize", "create_model", "list_models", "output_layer", "register_model"]
