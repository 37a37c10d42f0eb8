"""A user's own architecture: ``--model-factory MODULE:CALLABLE`` and the model files it reads.

    model, meta = open_model("mine.pt", factory="mynets:make_net", mean=(0.286,), std=(0.353,))

``MODULE`` is imported like any Python module, from ``PYTHONPATH`` or else the current folder
(which is appended to ``sys.path``, never put before installed packages); ``CALLABLE`` (a
function or a class, dotted names allowed) is called with no arguments and must return a
``torch.nn.Module``. Its weights then come from a backmark checkpoint, a plain safetensors
file or a plain ``torch.save`` state dict (:func:`~backmark.models.checkpoint.load_weights`).

Security: a factory is the user's own code and runs in this process with the user's rights,
as any Python import does. Name only modules you would run yourself; the weights files are
never unpickled into code (safetensors, or ``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

import torch
from torch import nn

from ..errors import InvalidConfig
from .adapt import AdaptedModel, per_channel, starts_with_normalize
from .checkpoint import load_model, load_weights

Factory = Callable[[], nn.Module]


def load_factory(spec: str) -> Factory:
    """The callable that ``MODULE:CALLABLE`` names (imported, not yet called)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidConfig(f"--model-factory {spec!r}: write MODULE:CALLABLE, e.g. mynets:make_net")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)  # after installed packages: a file in the current folder never shadows one
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise InvalidConfig(
                f"--model-factory {spec!r}: no module {module_name!r} on PYTHONPATH or in the current folder"
            ) from None
        raise InvalidConfig(f"--model-factory {spec!r}: importing {module_name} failed: {e}") from None
    except Exception as e:  # noqa: BLE001  (the user's module failed at import: say so in one line)
        raise InvalidConfig(f"--model-factory {spec!r}: importing {module_name} failed: {type(e).__name__}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InvalidConfig(f"--model-factory {spec!r}: {module_name} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InvalidConfig(f"--model-factory {spec!r}: {attr} is a {type(obj).__name__}, not a callable")
    return obj


def build_model(factory: str | Factory, *, seed: int | None = None) -> nn.Module:
    """Call the factory; ``seed`` draws the initial weights without disturbing the caller's random state."""
    fn = load_factory(factory) if isinstance(factory, str) else factory
    label = factory if isinstance(factory, str) else getattr(factory, "__qualname__", repr(factory))
    try:
        if seed is None:
            model = fn()
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = fn()
    except Exception as e:  # noqa: BLE001  (the user's code failed: one line, with its type)
        raise InvalidConfig(f"--model-factory {label}: calling it failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise InvalidConfig(f"--model-factory {label}: returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def resolve_normalization(meta: dict, mean, std, source) -> dict | None:
    """The input normalisation to apply: given (mean/std), recorded in the checkpoint, or None.
    Given and recorded values that differ are refused, never one silently preferred."""
    if (mean is None) != (std is None):
        raise InvalidConfig("--mean and --std go together")
    try:
        given = None if mean is None else {"mean": list(per_channel(mean, "mean")), "std": list(per_channel(std, "std"))}
    except ValueError as e:
        raise InvalidConfig(f"--mean/--std: {e}") from None
    recorded = meta.get("input_normalization")
    if given and recorded and not all(_close(given[k], recorded[k]) for k in ("mean", "std")):
        raise InvalidConfig(
            f"{source} records input normalisation mean {_fmt(recorded['mean'])} std {_fmt(recorded['std'])}, "
            f"but --mean/--std give {_fmt(given['mean'])} / {_fmt(given['std'])}"
        )
    return given or recorded


def _close(a: list[float], b: list[float]) -> bool:
    if len(a) != len(b) and 1 in (len(a), len(b)):
        a, b = (a * len(b), b) if len(a) == 1 else (a, b * len(a))
    return len(a) == len(b) and all(abs(x - y) <= 1e-6 * max(1.0, abs(y)) for x, y in zip(a, b))


def _fmt(values) -> str:
    return ",".join(f"{v:.4g}" for v in values)


def open_model(path, *, factory: str | Factory | None = None, device="cpu", mean=None, std=None) -> tuple[nn.Module, dict]:
    """(model in eval mode, metadata) from a model file.

    Without ``factory``: a backmark checkpoint of a registered model (``mean``/``std`` refused:
    built-in models normalise inside). With it: the factory's module, its weights loaded from
    ``path`` (checkpoint, plain safetensors or torch.save state dict), behind an
    :class:`AdaptedModel` that applies the normalisation given or recorded and reads the scores
    out of tuple, dict or ``.logits`` outputs. The metadata is the checkpoint's ({} for a plain file).
    """
    if factory is None:
        model, meta = load_model(path, device=device)
        if mean is not None or std is not None:
            raise InvalidConfig(f"--mean/--std: {path} is a built-in model, which normalises its inputs itself (its first layer)")
        return model, meta
    inner = build_model(factory)
    meta = load_weights(inner, path)
    norm = resolve_normalization(meta, mean, std, path)
    if norm and starts_with_normalize(inner):
        raise InvalidConfig("--mean/--std: the factory's model starts with a backmark Normalize: it would normalise twice")
    for attr in ("input_shape", "num_classes"):  # declared as built-in models do, so targets check the key's shape
        if meta.get(attr) is not None and getattr(inner, attr, None) is None:
            setattr(inner, attr, tuple(meta[attr]) if attr == "input_shape" else meta[attr])
    return AdaptedModel(inner.to(device), **(norm or {}), name=str(path)).eval(), meta


__all__ = ["Factory", "build_model", "load_factory", "open_model", "resolve_normalization"]
