"""A TorchScript file as a target (``torch.jit.load``; no Python pickle of modules).

The file takes float32 images (B, C, H, W) in [0, 1] and returns logits (B, classes), the
convention of ``backmark export --torchscript``; that export also stores the input shape and
class count in the archive (extra file ``backmark.json``). Loading runs the file's TorchScript
code in TorchScript's interpreter, not arbitrary Python; for a file from someone you do not
trust, ONNX in onnxruntime is the more contained choice.

    target = TorchScriptTarget("suspect.pt")
"""
from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

import torch

from ..errors import IncompatibleModel, InvalidFile
from .local import LocalTarget, read_export_metadata

EXTRA_FILE = "backmark.json"


def _check_archive(p: Path) -> None:
    try:
        names = zipfile.ZipFile(p).namelist()
    except FileNotFoundError:
        raise InvalidFile(f"{p}: no such file") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise InvalidFile(f"{p}: not a TorchScript archive ({e})") from None
    if not any("/code/" in n for n in names):  # TorchScript keeps its program under code/; torch.save does not
        raise InvalidFile(
            f"{p}: not a TorchScript archive but a torch.save file (backmark never unpickles modules): for a state dict, "
            "give --model-factory MODULE:CALLABLE that builds its module (docs/user-models.md)"
        )


class TorchScriptTarget(LocalTarget):
    def __init__(self, path: str | os.PathLike, *, device="cpu", batch_size: int = 256):
        p = Path(path)
        _check_archive(p)
        extra = {EXTRA_FILE: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream, still supported
                self.module = torch.jit.load(str(p), map_location=device, _extra_files=extra)
        except RuntimeError as e:
            raise InvalidFile(f"{p}: cannot load TorchScript ({str(e).splitlines()[0]})") from None
        self.module.eval()
        raw = extra[EXTRA_FILE]
        meta = read_export_metadata(raw.decode() if isinstance(raw, bytes) else raw, str(p))
        self.metadata = meta
        self.input_shape = tuple(meta["input_shape"]) if "input_shape" in meta else None
        self.num_classes = meta.get("num_classes")
        self.device = device
        self.batch_size = batch_size
        self.name = str(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            with torch.no_grad():
                return self.module(x.to(self.device))
        except (RuntimeError, torch.jit.Error) as e:
            raise IncompatibleModel(
                f"{self.name} cannot take inputs of shape {tuple(x.shape[1:])} (C, H, W): {str(e).strip().splitlines()[-1]}"
            ) from None
