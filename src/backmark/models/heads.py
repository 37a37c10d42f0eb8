"""Output-layer surgery (heads): find a model's output layer, replace it, keep the owner's copy.

The paper measures RTLL, RTAL and transfer learning with the ORIGINAL last layer swapped
back into the attacked model (the owner keeps it); these helpers do that on a copy::

    save_output_layer("fc.safetensors", marked_model)        # before release
    twin = with_output_layer(attacked_model, "fc.safetensors")
    verify(twin, mk, vk)                                      # or verify(..., output_layer=...)

A kept layer is an output-layer file (below) or any backmark model checkpoint, whose
output layer is taken.
"""
from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import IncompatibleModel, InvalidFile
from ..io.files import atomic_write_bytes, read_file

LAYER_FORMAT = "backmark-output-layer"
LAYER_VERSION = 2  # 2: tensors_sha256, the canonical hash of weight and bias (checked on load)

LayerLike = nn.Module | dict | str | os.PathLike  # nn.Linear, or a model whose output layer is taken


def output_layer(model: nn.Module) -> nn.Linear:
    """The final classification layer (the one FTLL/RTLL retrain and an owner keeps).

    Built-in models name it ``fc``; for others the last ``nn.Linear`` is taken.
    """
    from .adapt import AdaptedModel, unwrap_parallel

    model = unwrap_parallel(model)
    if isinstance(model, AdaptedModel):  # a user's module behind its input/output adaptor
        model = model.inner
    fc = getattr(model, "fc", None)
    if isinstance(fc, nn.Linear):
        return fc
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no nn.Linear output layer")
    return linears[-1]


def save_output_layer(path: str | os.PathLike, model: nn.Module, meta: dict | None = None, *, force: bool = False) -> Path:
    """Write ``model``'s output layer (weight, bias) as a safetensors file."""
    from safetensors.torch import save

    fc = output_layer(model)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in fc.state_dict().items()}
    from .weights import tensors_sha256

    doc = {"format": LAYER_FORMAT, "version": LAYER_VERSION, "in_features": fc.in_features, "out_features": fc.out_features,
           **(meta or {}), "tensors_sha256": tensors_sha256(tensors)}
    return atomic_write_bytes(path, save(tensors, metadata={"backmark": json.dumps(doc, sort_keys=True)}), force=force)


def load_output_layer(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """{"weight": (out, in), "bias": (out,)} from an output-layer file or a model checkpoint."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from .checkpoint import load_model

    p = Path(path)
    raw = read_file(p, what="output-layer file or checkpoint")
    try:
        n = int.from_bytes(raw[:8], "little")
        meta = json.loads(json.loads(raw[8 : 8 + n]).get("__metadata__", {}).get("backmark", "null"))
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise InvalidFile(f"{p}: not a safetensors output layer or model checkpoint") from None
    if isinstance(meta, dict) and meta.get("format") == LAYER_FORMAT:
        if meta.get("version") != LAYER_VERSION:
            raise InvalidFile(f"{p}: output-layer version {meta.get('version')!r} is not supported")
        try:
            state = load(raw)
        except SafetensorError as e:
            raise InvalidFile(f"{p}: damaged output-layer file ({e})") from None
        if "weight" not in state or state["weight"].dim() != 2:
            raise InvalidFile(f"{p}: the output-layer file holds no 2-D 'weight'")
        from .weights import tensors_sha256

        if meta.get("tensors_sha256") != tensors_sha256(state):
            raise InvalidFile(f"{p}: the output layer's weights do not match their hash: the file was altered or damaged")
        return state
    model, _ = load_model(p)  # raises InvalidFile for anything else
    return {k: v.detach().clone() for k, v in output_layer(model).state_dict().items()}


def layer_state(layer: LayerLike) -> dict[str, torch.Tensor]:
    if isinstance(layer, nn.Module):  # a linear layer, or a whole model whose output layer is taken
        fc = layer if isinstance(layer, nn.Linear) else output_layer(layer)
        return {k: v.detach() for k, v in fc.state_dict().items()}
    if isinstance(layer, dict):
        if "weight" not in layer:
            raise ValueError("an output-layer state dict needs a 'weight' entry")
        return layer
    if isinstance(layer, (str, os.PathLike)):
        return load_output_layer(layer)
    raise TypeError(f"an output layer is an nn.Linear, a model, a state dict or a file path, not {type(layer).__name__}")


def head_sha256(layer: LayerLike) -> str:
    """SHA-256 naming a head: of its weight (and bias) as safetensors bytes without metadata,
    so a head file, its state dict and the model it came from all give the same name."""
    from safetensors.torch import save

    from ..io.hashing import sha256_hex

    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in layer_state(layer).items()}
    return sha256_hex(save(state))


def replace_output_layer(model: nn.Module, new: nn.Linear) -> nn.Module:
    """Put ``new`` in place of ``model``'s output layer (in place); updates ``num_classes``."""
    old = output_layer(model)
    name = next(n for n, m in model.named_modules() if m is old)
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
    if hasattr(model, "num_classes"):
        model.num_classes = new.out_features
    return model


def linear_from_state(state: dict[str, torch.Tensor], *, device=None, dtype=None) -> nn.Linear:
    """An nn.Linear holding exactly ``state`` (built on the meta device: no random init)."""
    w, b = state["weight"], state.get("bias")
    layer = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device="meta")
    layer.weight = nn.Parameter(w.detach().clone().to(device=device, dtype=dtype))
    if b is not None:
        layer.bias = nn.Parameter(b.detach().clone().to(device=device, dtype=dtype))
    return layer


def fresh_linear(in_features: int, out_features: int, *, seed: int, device=None) -> nn.Linear:
    """A newly initialised linear layer (PyTorch's default init) drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    w = torch.empty(out_features, in_features)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)
    bound = 1 / math.sqrt(in_features)
    b = torch.empty(out_features).uniform_(-bound, bound, generator=g)
    return linear_from_state({"weight": w, "bias": b}, device=device)


def with_output_layer(model, layer: LayerLike, *, device=None) -> nn.Module:
    """A copy of ``model`` (nn.Module or checkpoint path) with the kept ``layer`` swapped in.

    The layer's input width must match the model's penultimate width; its class count may
    differ (transfer learning changed the head), and the copy then answers in the kept
    layer's classes.
    """
    if isinstance(model, (str, os.PathLike)):
        from .checkpoint import load_model

        model, _ = load_model(model, device=device or "cpu")
    if not isinstance(model, nn.Module) and isinstance(getattr(model, "model", None), nn.Module):
        model = model.model  # an in-process target (TorchTarget): swap inside its module
    if not isinstance(model, nn.Module):
        raise IncompatibleModel("a kept output layer can only be swapped into a model held in process (nn.Module or checkpoint)")
    state = layer_state(layer)
    old = output_layer(model)
    if state["weight"].shape[1] != old.in_features:
        raise IncompatibleModel(
            f"the kept output layer takes {state['weight'].shape[1]} features but the model's output layer takes {old.in_features}"
        )
    twin = copy.deepcopy(model)
    return replace_output_layer(twin, linear_from_state(state, device=old.weight.device, dtype=old.weight.dtype))
