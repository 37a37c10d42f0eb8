"""Which layers a run trains: ``"all"``, or ``"last:N"``, the last N weight layers of the model.

    params = trainable_parameters(model, "last:2")   # fmnist-cnn: hidden + fc; None for "all"
    train(model, data, cfg, params=params)           # the others stay frozen while it runs

A weight layer is a convolution or a linear layer; "the last N" also takes every module that
comes after the first of them in the model's module order (the BatchNorm after a conv), so a
block is trained whole. Unknown specs, and N larger than the model's weight layers, are refused.
"""

from __future__ import annotations

import re

from torch import nn

_WEIGHTS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_SPEC = re.compile(r"^last:(?P<n>[1-9][0-9]*)$")


def check_layers(spec: str) -> str:
    """``spec`` if it is a valid layer choice; ValueError otherwise."""
    if spec != "all" and not _SPEC.match(spec):
        raise ValueError(f"layers {spec!r}: 'all' or 'last:N' (the last N weight layers, N >= 1)")
    return spec


def trainable_parameters(model: nn.Module, spec: str) -> list[nn.Parameter] | None:
    """The parameters ``spec`` trains (None: all of them)."""
    if check_layers(spec) == "all":
        return None
    n = int(_SPEC.match(spec).group("n"))
    modules = list(model.modules())
    weight_layers = [i for i, m in enumerate(modules) if isinstance(m, _WEIGHTS)]
    if n > len(weight_layers):
        raise ValueError(f"layers {spec!r}: the model has {len(weight_layers)} weight layers")
    first = weight_layers[-n]
    seen, params = set(), []
    for m in modules[first:]:
        for p in m.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


__all__ = ["check_layers", "trainable_parameters"]
