"""Models by name: ``@register_model`` and :func:`create_model`.

Every registered model records the input shape (C, H, W) and class count it is designed
for, so a test can build each one and a listing can say what it takes::

    model = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28))
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UnknownName


@dataclass(frozen=True)
class ModelSpec:
    name: str
    factory: Callable[..., nn.Module]
    description: str
    input_shape: tuple[int, int, int]  # (C, H, W) it is designed and tested for
    num_classes: int = 10


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, description: str, *, input_shape: tuple[int, int, int], num_classes: int = 10):
    """Decorator: make ``factory(*, num_classes, input_shape, mean, std)`` available as ``create_model(name, ...)``."""

    def wrap(fn):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, fn, description, tuple(input_shape), num_classes)
        return fn

    return wrap


def model_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownName(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}") from None


def list_models() -> dict[str, str]:
    """Registered model names and one-line descriptions."""
    return {name: spec.description for name, spec in _REGISTRY.items()}


def registered_models() -> list[ModelSpec]:
    return list(_REGISTRY.values())


def create_model(
    name: str,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    seed: int | None = None,
) -> nn.Module:
    """Build a registered model. ``mean``/``std`` default to 0.5 per channel.

    ``seed`` draws the initial weights from ``torch.manual_seed(seed)`` without disturbing
    the caller's global random state (None: from the global state as it is).
    """
    factory = model_spec(name).factory
    c = input_shape[0]
    mean = tuple(mean) if mean is not None else (0.5,) * c
    std = tuple(std) if std is not None else (0.5,) * c
    if len(mean) != c or len(std) != c:
        raise ValueError(f"mean/std need {c} values for {c}-channel input")
    if seed is None:
        model = factory(num_classes=num_classes, input_shape=tuple(input_shape), mean=mean, std=std)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = factory(num_classes=num_classes, input_shape=tuple(input_shape), mean=mean, std=std)
    # Declared on the instance so targets can refuse triggers of the wrong shape before querying.
    model.input_shape, model.num_classes = tuple(input_shape), num_classes
    return model
