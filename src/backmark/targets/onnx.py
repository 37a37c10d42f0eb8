"""An ONNX file as a target, run with onnxruntime on the CPU (``pip install backmark[remote]``).

Input convention (that of ``backmark export --onnx``): one input, float32 (B, C, H, W) in
[0, 1], normalisation inside the model; one output of scores (B, classes). A model whose
input is uint8 gets the raw pixels instead, and one whose only output is integer labels (B,)
is queried for labels. The input shape and class count come from the graph's static
dimensions and from the export's ``backmark`` metadata entry.

    target = OnnxTarget("suspect.onnx")
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import IncompatibleModel, InvalidFile, MissingDependency
from .local import LocalTarget, read_export_metadata

METADATA_KEY = "backmark"
_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


def _static(dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


class OnnxTarget(LocalTarget):
    def __init__(self, path: str | os.PathLike, *, batch_size: int = 256, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependency("ONNX models need onnxruntime: pip install 'backmark[remote]'") from None
        p = Path(path)
        if not p.is_file():
            raise InvalidFile(f"{p}: no such file")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: onnxruntime warns on stderr otherwise
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(p.read_bytes(), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001  (onnxruntime raises its own unrelated types for a corrupt graph)
            raise InvalidFile(f"{p}: not a valid ONNX model ({str(e).strip().splitlines()[0][:200]})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise IncompatibleModel(f"{p}: the model has {len(inputs)} inputs; backmark queries models with one image input")
        self.input = inputs[0]
        self.output = outputs[0]
        if self.input.type not in _FLOAT_TYPES and self.input.type != "tensor(uint8)":
            raise IncompatibleModel(f"{p}: input type {self.input.type} is neither float nor uint8 images")
        meta = read_export_metadata(self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY), str(p))
        self.metadata = meta
        shape = list(self.input.shape)
        if len(shape) != 4:
            raise IncompatibleModel(f"{p}: input has shape {shape}, expected (batch, C, H, W)")
        dims = tuple(_static(d) for d in shape[1:])
        self.input_shape = tuple(meta["input_shape"]) if "input_shape" in meta else (dims if None not in dims else None)
        out_shape = list(self.output.shape)
        self.num_classes = meta.get("num_classes") or (_static(out_shape[-1]) if len(out_shape) == 2 else None)
        self.fixed_batch = _static(shape[0])  # a graph exported for one batch size gets exactly that
        self.batch_size = self.fixed_batch or batch_size
        self.name = str(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input.type == "tensor(uint8)":
            feed = (x * 255).round().to(torch.uint8).numpy()
        else:
            feed = x.numpy().astype(_FLOAT_TYPES[self.input.type], copy=False)
        n = len(feed)
        if self.fixed_batch and n < self.fixed_batch:
            feed = np.concatenate([feed, np.zeros((self.fixed_batch - n, *feed.shape[1:]), feed.dtype)])  # pad a fixed batch
        try:
            out = self.session.run([self.output.name], {self.input.name: feed})[0]
        except Exception as e:  # noqa: BLE001  (onnxruntime's InvalidArgument / Fail / RuntimeException)
            raise IncompatibleModel(
                f"{self.name} cannot take inputs of shape {tuple(x.shape[1:])} (C, H, W): {str(e).strip().splitlines()[0][:200]}"
            ) from None
        return torch.from_numpy(np.asarray(out)[:n].copy())

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        if self.output.type.startswith("tensor(int"):  # a graph that answers labels, not scores
            out = torch.cat([self.forward(images[i : i + self.batch_size].float() / 255) for i in range(0, len(images), self.batch_size)])
            return out.reshape(len(images), -1)[:, 0].long()
        return super().predict(images)
