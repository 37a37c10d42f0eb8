"""A user's module as backmark runs it: float images in [0, 1] in, class scores (B, classes) out.

Built-in models take [0, 1] images and return a logits tensor. A user's module may expect
normalised inputs and may return a tuple, a dict or a Hugging Face style output object;
:class:`AdaptedModel` puts a :class:`Normalize` in front and :func:`logits_of` behind it, so the
training loop, targets and exports all see the built-in convention::

    net = AdaptedModel(my_module, mean=(0.2860,), std=(0.3530,))   # trains my_module in place
    save_model("m.safetensors", net, meta)                        # my_module's own state dict

Nothing is guessed: an output that is none of the shapes below is refused with one line.
"""
from __future__ import annotations

import itertools

import torch
from torch import nn

from ..errors import IncompatibleModel
from .normalize import Normalize


def logits_of(out, *, name: str = "the model") -> torch.Tensor:
    """The class scores in a forward's output: a tensor as it is; a tuple or list's first element;
    a dict's ``"logits"`` entry, or its one tensor value; an object's ``.logits`` (Hugging Face)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):  # Hugging Face ModelOutput is an OrderedDict too
        if "logits" in out:
            value = out["logits"]
        else:
            tensors = [v for v in out.values() if isinstance(v, torch.Tensor)]
            if len(tensors) != 1:
                raise IncompatibleModel(
                    f"{name} returns a dict with keys {sorted(map(str, out))}: expected a 'logits' entry or exactly one tensor"
                )
            value = tensors[0]
    elif isinstance(out, (tuple, list)) and out:
        value = out[0]
    elif isinstance(getattr(out, "logits", None), torch.Tensor):
        value = out.logits
    else:
        raise IncompatibleModel(
            f"{name} returns a {type(out).__name__}: expected class scores (B, classes) as a tensor, "
            "a tuple (scores first), a dict with 'logits' or an object with .logits"
        )
    if not isinstance(value, torch.Tensor):
        raise IncompatibleModel(f"{name} returns a {type(out).__name__} whose scores are a {type(value).__name__}, not a tensor")
    return value


def per_channel(values, name: str) -> tuple[float, ...]:
    """``values`` (one number or a sequence) as a tuple of floats; ValueError if empty or, for std, not positive."""
    t = tuple(float(v) for v in (values if isinstance(values, (list, tuple)) else [values]))
    if not t:
        raise ValueError(f"{name} needs at least one value")
    if name == "std" and any(v <= 0 for v in t):
        raise ValueError("std must be positive")
    return t


class AdaptedModel(nn.Module):
    """``Normalize(mean, std)`` (optional) -> ``inner`` -> :func:`logits_of`.

    Shares ``inner``'s parameters (training the adapted model trains ``inner``), and
    :func:`~backmark.models.checkpoint.save_model` stores ``inner``'s own state dict with
    mean and std in the metadata, so the file stays loadable into the user's module.
    """

    def __init__(self, inner: nn.Module, *, mean=None, std=None, name: str = "the model"):
        super().__init__()
        if (mean is None) != (std is None):
            raise ValueError("mean and std go together")
        self.inner = inner
        self.normalize = None
        self._normalization = None
        if mean is not None:
            # kept as given (a float32 buffer would record 0.28600001335 for 0.286)
            self._normalization = {"mean": list(per_channel(mean, "mean")), "std": list(per_channel(std, "std"))}
            self.normalize = Normalize(self._normalization["mean"], self._normalization["std"]).to(module_device(inner))
        self.label = name
        for attr in ("input_shape", "num_classes"):  # declared by built-in models; kept for targets
            if getattr(inner, attr, None) is not None:
                setattr(self, attr, getattr(inner, attr))

    @property
    def normalization(self) -> dict | None:
        """{"mean": [...], "std": [...]} applied before ``inner``, or None."""
        return None if self._normalization is None else {k: list(v) for k, v in self._normalization.items()}

    def forward(self, x):
        if self.normalize is not None:
            if self.normalize.mean.numel() not in (1, x.shape[1]):
                raise IncompatibleModel(f"mean/std have {self.normalize.mean.numel()} values for {x.shape[1]}-channel images")
            x = self.normalize(x)
        return logits_of(self.inner(x), name=self.label)


def unwrap_parallel(model: nn.Module) -> nn.Module:
    """The module inside an ``nn.DataParallel`` or ``DistributedDataParallel`` wrapper (any depth)."""
    from torch.nn.parallel import DistributedDataParallel

    while isinstance(model, (nn.DataParallel, DistributedDataParallel)):
        model = model.module
    return model


def first_layer(model: nn.Module) -> nn.Module:
    """The first leaf module, following the first registered child (a heuristic: registration order)."""
    model = unwrap_parallel(model)
    if isinstance(model, AdaptedModel):
        return model.normalize if model.normalize is not None else first_layer(model.inner)
    children = list(model.children())
    return first_layer(children[0]) if children else model


def starts_with_normalize(model: nn.Module) -> bool:
    """Whether the model's first layer is a backmark :class:`Normalize` (as every built-in model's is)."""
    return isinstance(first_layer(model), Normalize)


def module_devices(model: nn.Module) -> list[torch.device]:
    """The devices holding the module's parameters and buffers, in order of first appearance."""
    seen: list[torch.device] = []
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.device not in seen:
            seen.append(t.device)
    return seen


def module_device(model: nn.Module) -> torch.device:
    """Where the module lives: its first parameter's (or buffer's) device; CPU for a module without tensors."""
    devices = module_devices(model)
    return devices[0] if devices else torch.device("cpu")


def same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` names the current CUDA device; ``cuda:0`` one of them."""
    a, b = _indexed(a), _indexed(b)
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _indexed(d) -> torch.device:
    d = torch.device(d)
    if d.type == "cuda" and d.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return d


__all__ = ["AdaptedModel", "first_layer", "logits_of", "module_device", "module_devices", "per_channel", "same_device",
           "starts_with_normalize", "unwrap_parallel"]
