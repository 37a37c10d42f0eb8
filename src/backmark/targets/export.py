"""Export a checkpoint to ONNX or TorchScript, so the model can be deployed and verified anywhere.

Both exports take float32 images (B, C, H, W) in [0, 1], any batch size, with the
normalisation inside the model (the first layer), and return logits (B, classes): the
checkpoint's own convention, so ``x = uint8_images / 255`` is all a caller does. Each export
carries a ``backmark-export`` metadata document (input shape, class count, source checkpoint
hash; docs/formats.md): ONNX as the model's ``metadata_props["backmark"]``, TorchScript as the
archive's extra file ``backmark.json``. After writing, the export is loaded back and compared
with the checkpoint on a fixed batch of random images.

    backmark export --model model.safetensors --onnx model.onnx --torchscript model.pt
"""
from __future__ import annotations

import copy
import io
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import IncompatibleModel, MissingDependency
from ..io.files import atomic_write_bytes, check_writable
from ..version import __version__
from .onnx import OnnxTarget
from .torchscript import TorchScriptTarget

EXPORT_FORMAT = "backmark-export"
EXPORT_VERSION = 1
INPUT_CONVENTION = "float32 (batch, C, H, W) in [0, 1]; normalisation inside the model; output logits (batch, classes)"
ONNX_OPSET = 17


def export_metadata(*, input_shape, num_classes, model: str | None = None, source_sha256: str | None = None) -> dict:
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "backmark": __version__,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "input": INPUT_CONVENTION,
        "input_name": "input",
        "output_name": "logits",
        "model": model,
        "source_sha256": source_sha256,
    }


def _example(input_shape, n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, *input_shape), generator=g, dtype=torch.uint8).float() / 255


def _frozen(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to("cpu").eval()


def onnx_bytes(model: nn.Module, input_shape, *, metadata: dict, opset: int = ONNX_OPSET) -> bytes:
    """The model as an ONNX graph (batch dimension dynamic) with ``metadata`` attached."""
    try:
        import onnx
    except ImportError:
        raise MissingDependency("ONNX export needs the onnx package: pip install 'backmark[remote]'") from None
    m, x = _frozen(model), _example(input_shape)
    buf = io.BytesIO()
    kwargs = {"input_names": ["input"], "output_names": ["logits"], "dynamic_axes": {"input": {0: "batch"}, "logits": {0: "batch"}}, "opset_version": opset}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
        try:
            # The TorchScript-based exporter needs nothing beyond torch and onnx; the newer
            # torch.export-based one (the default since torch 2.9) also needs onnxscript.
            torch.onnx.export(m, (x,), buf, dynamo=False, **kwargs)
        except TypeError:  # torch < 2.5 has no `dynamo` argument
            buf = io.BytesIO()
            torch.onnx.export(m, (x,), buf, **kwargs)
    proto = onnx.load_from_string(buf.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = "backmark", json.dumps(metadata, sort_keys=True)
    proto.producer_name, proto.doc_string = "backmark", INPUT_CONVENTION
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def torchscript_bytes(model: nn.Module, input_shape, *, metadata: dict) -> bytes:
    """The model traced to TorchScript, with ``metadata`` as the extra file backmark.json."""
    m, x = _frozen(model), _example(input_shape)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit announces its deprecation in favour of torch.export
        with torch.no_grad():
            traced = torch.jit.trace(m, (x,))
        torch.jit.save(traced, buf, _extra_files={"backmark.json": json.dumps(metadata, sort_keys=True)})
    return buf.getvalue()


def compare(model: nn.Module, target, input_shape, *, n: int = 16) -> dict:
    """Max |logit difference| and label agreement between ``model`` and an exported ``target``."""
    images = (_example(input_shape, n) * 255).round().to(torch.uint8)
    with torch.no_grad():
        ref = _frozen(model)(images.float() / 255)
    got = target.scores(images)
    if got.shape != ref.shape:
        raise IncompatibleModel(f"the export answers shape {tuple(got.shape)}, the checkpoint {tuple(ref.shape)}")
    return {"max_abs_diff": float((got - ref).abs().max()), "labels_agree": int((got.argmax(1) == ref.argmax(1)).sum()), "checked": n}


def export_model(
    model: nn.Module,
    *,
    input_shape,
    num_classes: int,
    onnx: str | os.PathLike | None = None,
    torchscript: str | os.PathLike | None = None,
    force: bool = False,
    model_name: str | None = None,
    source_sha256: str | None = None,
) -> dict:
    """Write the requested exports atomically; returns what was written and how well it matches."""
    if onnx is None and torchscript is None:
        raise ValueError("nothing to export: give onnx and/or torchscript")
    outputs = [p for p in (onnx, torchscript) if p is not None]
    if len(outputs) == 2 and Path(onnx).resolve() == Path(torchscript).resolve():
        raise ValueError("the ONNX and TorchScript outputs must be different files")
    for p in outputs:
        check_writable(p, force=force)  # refuse before spending time on the export
    meta = export_metadata(input_shape=input_shape, num_classes=num_classes, model=model_name, source_sha256=source_sha256)
    written = {}
    if onnx is not None:
        atomic_write_bytes(onnx, onnx_bytes(model, input_shape, metadata=meta), force=force, mode=0o644)
        written["onnx"] = {"path": str(onnx), **compare(model, OnnxTarget(onnx), input_shape)}
    if torchscript is not None:
        atomic_write_bytes(torchscript, torchscript_bytes(model, input_shape, metadata=meta), force=force, mode=0o644)
        written["torchscript"] = {"path": str(torchscript), **compare(model, TorchScriptTarget(torchscript), input_shape)}
    return {"metadata": meta, **written}


def export_file(model_path: str | os.PathLike, *, onnx=None, torchscript=None, force: bool = False, factory=None, mean=None,
                std=None, input_shape=None) -> dict:
    """Export a model file (see :func:`export_model`): a backmark checkpoint, or with ``factory``
    (``MODULE:CALLABLE``) any weights file of that module, exported with the normalisation given
    (``mean``/``std``) or recorded inside. ``input_shape``: for a file that does not record it."""
    from ..io.hashing import file_sha256
    from ..models import open_model

    model, meta = open_model(model_path, factory=factory, mean=mean, std=std)
    shape = tuple(meta.get("input_shape") or input_shape or getattr(model, "input_shape", None) or ())
    if input_shape is not None and tuple(input_shape) != shape:
        raise ValueError(f"--input-shape {'x'.join(map(str, input_shape))}: {model_path} records {'x'.join(map(str, shape))}")
    if len(shape) != 3:
        raise ValueError(f"{model_path} does not record the input shape the model takes: give --input-shape CxHxW")
    num_classes = meta.get("num_classes") or _classes(model, shape, model_path)
    return export_model(
        model, input_shape=shape, num_classes=num_classes, onnx=onnx, torchscript=torchscript,
        force=force, model_name=meta.get("model") or (factory if isinstance(factory, str) else None),
        source_sha256=file_sha256(model_path),
    )


def _classes(model: nn.Module, input_shape, source) -> int:
    """The class count a model answers, from one forward pass (a plain weights file records none)."""
    try:
        with torch.no_grad():
            out = _frozen(model)(_example(input_shape))
    except RuntimeError as e:
        raise IncompatibleModel(f"{source} cannot take inputs of shape {tuple(input_shape)}: {str(e).splitlines()[0]}") from None
    if out.dim() != 2:
        raise IncompatibleModel(f"{source} answers outputs of shape {tuple(out.shape[1:])} per image, not class scores")
    return int(out.shape[1])


__all__ = ["EXPORT_FORMAT", "EXPORT_VERSION", "INPUT_CONVENTION", "compare", "export_file", "export_model", "onnx_bytes", "torchscript_bytes"]
