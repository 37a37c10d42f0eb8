"""Remote models over HTTP: the KServe / Triton v2 protocol, and JSON endpoints you describe.

**v2** (KServe "Open Inference Protocol", Triton's HTTP/REST API):
``GET {base}/v2/models/{name}[/versions/{v}]`` gives the input name, datatype and shape and
the outputs; ``POST .../infer`` with ``{"inputs": [{"name", "shape": [N, C, H, W],
"datatype": "FP32", "data": [...]}]}`` answers ``{"outputs": [{"name", "shape", "datatype",
"data"}]}``. Images go as FP32 in [0, 1] (or raw UINT8 where the model's input is UINT8);
an answer may be scores (N, classes), integer labels (N,) or (N, 1), or Triton's
classification strings ``"score:index[:label]"`` (BYTES). With the binary tensor data
extension (:mod:`.v2binary`; ``RemoteOptions.binary``: used when ``GET {base}/v2`` lists it, by
default) the pixels and the answer travel as raw bytes after a JSON header: a UINT8 image costs
its C*H*W bytes, not ~19x that as JSON text.

**json**: any endpoint whose request and answer the user describes (:class:`JsonEndpoint`): a
request template with ``"$images"`` (a list, one entry per image) or ``"$image"`` (one image
per request); images as base64 PNG, nested lists of pixels, or preprocessed floats; the
answer's labels, top-k lists or scores found at a dotted path.

    target = open_remote("http://127.0.0.1:8000/v2/models/suspect", options=RemoteOptions(budget=200))
"""
from __future__ import annotations

import base64
import io
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import RemoteError
from . import v2binary
from .client import Answer, BadAnswer, HttpClient, RemoteOptions, redact, snippet

_V2_PATH = re.compile(r"^(?P<model>.*?/v2/models/[^/]+(?:/versions/[^/]+)?)(?:/infer|/ready)?/?$")
_FLOAT_TYPES = ("FP16", "FP32", "FP64", "BF16")
_INT_TYPES = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
# JSON text of each pixel value: k / 255 as float32 (what the model sees in process), and k.
# Joining these is ~10x faster than json.dumps of a float list, and gives the same text.
_FP32_TEXT = [repr(float(np.float32(k) / np.float32(255))) for k in range(256)]
_UINT8_TEXT = [str(k) for k in range(256)]
_DATA = "backmark:data"


def refuse_html(answer: Answer) -> None:
    """BadAnswer for an HTML page (a proxy's error page answered with 200)."""
    if answer.body.lstrip()[:1] == b"<" or "html" in answer.content_type.lower():
        raise BadAnswer(f"answer is an HTML page, not JSON: {snippet(answer.body)!r}")


def parse_json_answer(answer: Answer) -> Any:
    """The JSON body of an answer; BadAnswer for an HTML page or malformed JSON."""
    refuse_html(answer)
    body = answer.body.lstrip()
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise BadAnswer(f"answer is not valid JSON ({e.__class__.__name__} at {snippet(answer.body, 40)!r})") from None


class RemoteTarget:
    """Shared by remote targets: batching through an :class:`HttpClient`, with a budget check up front."""

    input_shape: tuple[int, int, int] | None = None
    num_classes: int | None = None

    def __init__(self, url: str, options: RemoteOptions | None, client: HttpClient | None):
        self.url = url
        self.options = options or RemoteOptions()
        self.client = client or HttpClient(self.options, audit_target=redact(url))
        self.name = redact(url)
        self.batch_size = self.options.batch_size

    def _query(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> int64 labels (N,), in batches of ``options.batch_size``."""
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        self.client.check_budget(len(images))  # refuse before sending anything if it cannot fit
        if self.client.audit:
            self.client.audit.append("query", images=len(images), batch_size=self.batch_size, target=self.name)
        out = [self._query(images[i : i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)

    def report(self) -> dict:
        """What querying cost: requests, images sent, retries, the audit log's head hash."""
        return {"url": self.name, **self.client.report()}

    def _check_label(self, label: int) -> int:
        if self.num_classes is not None and not 0 <= label < self.num_classes:
            raise BadAnswer(f"label {label} is outside 0..{self.num_classes - 1}")
        return label

    def _labels_from_scores(self, scores: np.ndarray, n: int) -> torch.Tensor:
        if scores.ndim != 2 or scores.shape[0] != n:
            raise BadAnswer(f"scores of shape {list(scores.shape)} for {n} images")
        if self.num_classes is not None and scores.shape[1] != self.num_classes:
            raise BadAnswer(f"scores for {scores.shape[1]} classes, expected {self.num_classes}")
        if not np.isfinite(scores).all():
            raise BadAnswer("scores contain NaN or infinity")
        return torch.from_numpy(scores.argmax(1).astype(np.int64))


# -- KServe / Triton v2 -------------------------------------------------------------------

class V2Target(RemoteTarget):
    """A model behind the v2 inference protocol: JSON, or binary tensors when the server has them."""

    def __init__(self, url: str, *, options: RemoteOptions | None = None, client: HttpClient | None = None, num_classes=None):
        m = _V2_PATH.match(url.split("?")[0])
        if not m:
            raise ValueError(f"{url}: a v2 model URL looks like http://HOST:PORT/v2/models/NAME[/versions/V]")
        super().__init__(url, options, client)
        self.model_url = m.group("model")
        self.query_string = url[len(url.split("?")[0]):]
        self.num_classes = num_classes
        self.input_name, self.datatype, self.output_name = "input", "FP32", None
        self.metadata: dict | None = None
        self.binary = self.options.binary == "on"  # "auto" is settled by describe()
        self.encoding_reason = f"binary={self.options.binary}"

    def describe(self) -> dict:
        """Fetch the model's metadata (input name, datatype, shape; output name and class count), and
        with ``binary="auto"`` the server's, to learn whether it takes binary tensor data."""
        meta = self.client.request("GET", self.model_url + self.query_string, None, self._parse_metadata)
        self.metadata = meta
        binary_ok = self.datatype in v2binary.DTYPES
        if self.options.binary == "auto":
            server = self.model_url[: self.model_url.rindex("/v2/models/")] + "/v2" + self.query_string
            try:
                listed = self.client.request("GET", server, None, lambda a: v2binary.supports_binary(parse_json_answer(a)))
                self.encoding_reason = f"GET /v2 {'lists' if listed else 'does not list'} {v2binary.EXTENSION}"
            except RemoteError as e:  # no server metadata (a proxy exposing the model route only): the base protocol
                listed = False
                self.encoding_reason = f"GET /v2 failed ({str(e)[:80]})"
            self.binary = listed and binary_ok
            if listed and not binary_ok:
                self.encoding_reason += f", but the input is {self.datatype}"
        return meta

    def report(self) -> dict:
        return {**super().report(), "encoding": "binary" if self.binary else "json", "encoding_reason": self.encoding_reason}

    def _parse_metadata(self, answer: Answer) -> dict:
        meta = parse_json_answer(answer)
        try:
            inputs, outputs = meta["inputs"], meta.get("outputs") or []
            inp = inputs[0]
            name, datatype, shape = str(inp["name"]), str(inp["datatype"]).upper(), [int(d) for d in inp["shape"]]
        except (KeyError, IndexError, TypeError, ValueError):
            raise BadAnswer("model metadata without inputs[0].name/datatype/shape") from None
        if len(inputs) != 1:
            raise BadAnswer(f"the model has {len(inputs)} inputs; backmark queries models with one image input")
        if datatype not in _FLOAT_TYPES and datatype != "UINT8":
            raise BadAnswer(f"input datatype {datatype} is neither float nor UINT8")
        self.input_name, self.datatype = name, datatype
        dims = shape[-3:] if len(shape) in (3, 4) else []
        if len(dims) == 3 and all(d > 0 for d in dims):
            self.input_shape = tuple(dims)
        if outputs and isinstance(outputs[0], dict) and "name" in outputs[0]:
            self.output_name = str(outputs[0]["name"])
            oshape = outputs[0].get("shape") or []
            if len(oshape) == 2 and isinstance(oshape[-1], int) and oshape[-1] > 0 and self.num_classes is None:
                self.num_classes = oshape[-1]
        return meta

    def _query(self, batch: torch.Tensor) -> torch.Tensor:
        if self.binary:
            return self._query_binary(batch)
        n = len(batch)
        # The model's own datatype: Triton refuses a request whose datatype differs from its config.
        tensor = {"name": self.input_name, "shape": list(batch.shape), "datatype": self.datatype, "data": _DATA}
        req = {"id": f"backmark-{self.client.requests}", "inputs": [tensor]}
        if self.output_name:
            req["outputs"] = [{"name": self.output_name}]
        table = _UINT8_TEXT if self.datatype == "UINT8" else _FP32_TEXT
        data = "[" + ",".join([table[v] for v in batch.reshape(-1).tolist()]) + "]"
        head, tail = json.dumps(req, separators=(",", ":")).split(json.dumps(_DATA), 1)
        body = (head + data + tail).encode()
        return self.client.request(
            "POST", self.model_url + "/infer" + self.query_string, body, lambda a: self._parse_infer(a, n),
            images=n, note=lambda labels: {"labels": labels.tolist()},
        )

    def _query_binary(self, batch: torch.Tensor) -> torch.Tensor:
        n = len(batch)
        if self.datatype == "UINT8":
            pixels = batch.contiguous().numpy()
        elif self.datatype == "BF16":  # bfloat16 bit patterns, rounded by torch
            pixels = (batch.float() / 255).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        else:  # the float32 values k / 255 the model sees in process, in the model's float type
            pixels = (batch.float() / 255).numpy().astype(v2binary.DTYPES[self.datatype])
        outputs = [self.output_name] if self.output_name else []
        request_id = f"backmark-{self.client.requests}"
        body, headers = v2binary.encode_request([(self.input_name, pixels, self.datatype)], outputs, request_id=request_id)
        content_type = headers.pop("Content-Type")
        return self.client.request(
            "POST", self.model_url + "/infer" + self.query_string, body, lambda a: self._parse_binary(a, n),
            images=n, content_type=content_type, headers=headers, note=lambda labels: {"labels": labels.tolist()},
        )

    def _parse_binary(self, answer: Answer, n: int) -> torch.Tensor:
        refuse_html(answer)
        try:
            arrays = v2binary.decode_response(answer.body, answer.headers)
        except v2binary.ProtocolError as e:
            raise BadAnswer(str(e)) from None
        if not arrays:
            raise BadAnswer("answer has no outputs")
        name = self.output_name if self.output_name in arrays else next(iter(arrays))
        arr = arrays[name]
        if arr.dtype == object:  # BYTES: classification strings
            return self._labels_from_classification([x.decode("utf-8", "replace") for x in arr.reshape(-1)], list(arr.shape), n)
        datatype = "FP32" if arr.dtype.kind == "f" else "INT64" if arr.dtype.kind in "iu" else str(arr.dtype)
        return self._labels_from_output(arr.astype(np.float64).reshape(-1), list(arr.shape), datatype, n)

    def _parse_infer(self, answer: Answer, n: int) -> torch.Tensor:
        doc = parse_json_answer(answer)
        if not isinstance(doc, dict):
            raise BadAnswer(f"answer is a JSON {type(doc).__name__}, not an object with 'outputs'")
        if "error" in doc and "outputs" not in doc:
            raise BadAnswer(f"the server reports an error: {snippet(str(doc['error']).encode())}")
        outputs = doc.get("outputs")
        if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
            raise BadAnswer("answer has no 'outputs' list")
        out = next((o for o in outputs if o.get("name") == self.output_name), outputs[0])
        try:
            shape = [int(d) for d in out["shape"]]
            datatype = str(out["datatype"]).upper()
            data = out["data"]
        except (KeyError, TypeError, ValueError):
            raise BadAnswer("output without shape, datatype and data") from None
        if datatype == "BYTES":
            return self._labels_from_classification(data, shape, n)
        try:
            arr = np.asarray(data, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise BadAnswer(f"output data is not a list of {datatype} numbers") from None
        return self._labels_from_output(arr, shape, datatype, n)

    def _labels_from_output(self, arr: np.ndarray, shape: list[int], datatype: str, n: int) -> torch.Tensor:
        """Labels from an output's values (float64, flat): integer labels (N,) / (N, 1), or scores (N, classes)."""
        if any(d < 0 for d in shape) or arr.size != math.prod(shape):
            raise BadAnswer(f"output holds {arr.size} values but its shape is {shape}")
        if shape[:1] != [n]:
            raise BadAnswer(f"output of shape {shape} for {n} images")
        if datatype in _INT_TYPES and (len(shape) == 1 or shape[1:] == [1]):
            return torch.tensor([self._check_label(int(v)) for v in arr], dtype=torch.int64)
        if datatype in _FLOAT_TYPES + _INT_TYPES and len(shape) == 2:
            return self._labels_from_scores(arr.reshape(shape), n)
        raise BadAnswer(f"output of shape {shape} and datatype {datatype} is neither scores (N, classes) nor labels (N,)")

    def _labels_from_classification(self, data, shape: list[int], n: int) -> torch.Tensor:
        # Triton's classification extension: "score:index[:label]" strings, best first per image.
        flat = np.asarray(data, dtype=object).reshape(-1).tolist() if isinstance(data, list) else None
        if flat is None or not flat or shape[:1] != [n] or len(flat) % n:
            raise BadAnswer(f"classification output of shape {shape} for {n} images")
        k = len(flat) // n
        labels = []
        for entry in flat[::k]:
            parts = str(entry).split(":")
            try:
                labels.append(self._check_label(int(parts[1])))
            except (IndexError, ValueError):
                raise BadAnswer(f"classification entry {str(entry)[:40]!r} is not 'score:index[:label]'") from None
        return torch.tensor(labels, dtype=torch.int64)


# -- a JSON endpoint described by the user -----------------------------------------------

@dataclass(frozen=True)
class JsonEndpoint:
    """The request and answer of a plain JSON endpoint.

    request:  JSON template; the string "$images" is replaced by a list (one entry per image),
              or "$image" by a single image (one image per request).
    encoding: png (base64 PNG), png-uri (data:image/png;base64,...), list (uint8 pixels as nested
              lists), float (pixels / 255, then (x - mean) / std, as nested lists).
    layout:   hwc or chw, for list and float.
    resize:   (H, W) to resize to before encoding (bilinear, antialiased), or None.
    mean/std: per-channel normalisation for the float encoding.
    response: dotted path to the answers in the JSON reply ('' = the reply itself; numbers index lists):
              a list with one entry per image, or the one entry for "$image".
    output:   labels (an int, a class name, or an object holding ``label_key``), topk (a list, best
              first, of such entries) or scores (a list of per-class numbers).
    """

    request: str = '{"images": "$images"}'
    encoding: str = "png"
    layout: str = "hwc"
    resize: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    response: str = "predictions"
    output: str = "labels"
    label_key: str = "label"
    class_names: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.encoding not in ("png", "png-uri", "list", "float"):
            raise ValueError(f"unknown image encoding {self.encoding!r}: png, png-uri, list or float")
        if self.layout not in ("hwc", "chw"):
            raise ValueError(f"unknown layout {self.layout!r}: hwc or chw")
        if self.output not in ("labels", "topk", "scores"):
            raise ValueError(f"unknown output {self.output!r}: labels, topk or scores")
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std go together")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError("std must be positive")
        if (self.mean is not None) and self.encoding != "float":
            raise ValueError("mean/std normalisation applies to the float encoding only")
        try:
            template = json.loads(self.request)
        except ValueError as e:
            raise ValueError(f"the request template is not JSON: {e}") from None
        found = _placeholders(template)
        if sorted(found) not in (["$images"], ["$image"]):
            raise ValueError('the request template needs exactly one "$images" or one "$image" string value')

    @property
    def single(self) -> bool:
        return "$image" in _placeholders(json.loads(self.request))


def _placeholders(node) -> list[str]:
    if isinstance(node, str):
        return [node] if node in ("$images", "$image") else []
    if isinstance(node, dict):
        return [p for v in node.values() for p in _placeholders(v)]
    if isinstance(node, list):
        return [p for v in node for p in _placeholders(v)]
    return []


def _fill(node, value):
    if isinstance(node, str) and node in ("$images", "$image"):
        return value
    if isinstance(node, dict):
        return {k: _fill(v, value) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, value) for v in node]
    return node


class JsonTarget(RemoteTarget):
    """A model behind a JSON endpoint whose request and answer are described by a :class:`JsonEndpoint`."""

    def __init__(self, url: str, endpoint: JsonEndpoint | None = None, *, options: RemoteOptions | None = None, client: HttpClient | None = None, num_classes=None, input_shape=None):
        super().__init__(url, options, client)
        self.endpoint = endpoint or JsonEndpoint()
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape) if input_shape else None
        self.template = json.loads(self.endpoint.request)
        if self.endpoint.single:
            self.batch_size = 1
        names = self.endpoint.class_names
        self._name_index = {n: i for i, n in enumerate(names)} if names else {}
        if names and self.num_classes is None:
            self.num_classes = len(names)

    # -- request ------------------------------------------------------------------------
    def encode(self, batch: torch.Tensor) -> list:
        """uint8 (B, C, H, W) -> one JSON value per image."""
        ep = self.endpoint
        x = batch
        if ep.resize is not None and tuple(x.shape[-2:]) != tuple(ep.resize):
            xf = F.interpolate(x.float(), size=tuple(ep.resize), mode="bilinear", align_corners=False, antialias=True)
            x = xf.round().clamp(0, 255).to(torch.uint8)
        if ep.encoding in ("png", "png-uri"):
            return [self._png(img, uri=ep.encoding == "png-uri") for img in x]
        if ep.encoding == "float":
            xf = x.float() / 255
            if ep.mean is not None:
                c = x.shape[1]
                if len(ep.mean) not in (1, c) or len(ep.std) not in (1, c):
                    raise ValueError(f"mean/std need 1 or {c} values for {c}-channel images")
                xf = (xf - torch.tensor(ep.mean).view(1, -1, 1, 1)) / torch.tensor(ep.std).view(1, -1, 1, 1)
            x = xf
        if ep.layout == "hwc":
            x = x.permute(0, 2, 3, 1)
        return x.tolist()

    @staticmethod
    def _png(img: torch.Tensor, *, uri: bool) -> str:
        from PIL import Image

        c = img.shape[0]
        arr = img.permute(1, 2, 0).numpy()
        pil = Image.fromarray(arr[:, :, 0], "L") if c == 1 else Image.fromarray(arr, "RGB")
        buf = io.BytesIO()
        pil.save(buf, format="PNG")
        b64 = base64.b64encode(buf.getvalue()).decode()
        return f"data:image/png;base64,{b64}" if uri else b64

    def _query(self, batch: torch.Tensor) -> torch.Tensor:
        n = len(batch)
        encoded = self.encode(batch)
        body = json.dumps(_fill(self.template, encoded[0] if self.endpoint.single else encoded), separators=(",", ":")).encode()
        return self.client.request(
            "POST", self.url, body, lambda a: self._parse(a, n), images=n, note=lambda labels: {"labels": labels.tolist()}
        )

    # -- answer -------------------------------------------------------------------------
    def _parse(self, answer: Answer, n: int) -> torch.Tensor:
        node = parse_json_answer(answer)
        path = self.endpoint.response
        for part in path.split(".") if path else []:
            if isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                raise BadAnswer(f"answer has nothing at {path!r} (stopped at {part!r}): {snippet(answer.body)}")
        entries = [node] if self.endpoint.single else node
        if not isinstance(entries, list) or len(entries) != n:
            got = f"{len(entries)} entries" if isinstance(entries, list) else f"a JSON {type(entries).__name__}"
            raise BadAnswer(f"answer at {path!r} is {got}, expected a list of {n}")
        if self.endpoint.output == "scores":
            try:
                scores = np.asarray(entries, dtype=np.float64)
            except (TypeError, ValueError):
                raise BadAnswer("scores are not lists of numbers of one length") from None
            return self._labels_from_scores(scores, n)
        if self.endpoint.output == "topk":
            firsts = []
            for e in entries:
                if not isinstance(e, list) or not e:
                    raise BadAnswer(f"a top-k entry is {type(e).__name__}, not a non-empty list")
                firsts.append(e[0])
            entries = firsts
        return torch.tensor([self._label(e) for e in entries], dtype=torch.int64)

    def _label(self, entry) -> int:
        if isinstance(entry, dict):
            if self.endpoint.label_key not in entry:
                raise BadAnswer(f"an answer entry has no {self.endpoint.label_key!r} field")
            entry = entry[self.endpoint.label_key]
        if isinstance(entry, bool):
            raise BadAnswer("a label is a boolean")
        if isinstance(entry, int):
            return self._check_label(entry)
        if isinstance(entry, str):
            if entry in self._name_index:
                return self._name_index[entry]
            if entry.strip().lstrip("-").isdigit():
                return self._check_label(int(entry))
            raise BadAnswer(f"label {entry[:40]!r} is not a class index" + (" or a known class name" if self._name_index else ""))
        if isinstance(entry, float) and entry.is_integer():
            return self._check_label(int(entry))
        raise BadAnswer(f"a label is a JSON {type(entry).__name__}")


def open_remote(
    url: str,
    *,
    options: RemoteOptions | None = None,
    endpoint: JsonEndpoint | None = None,
    protocol: str = "auto",
    num_classes: int | None = None,
    client: HttpClient | None = None,
) -> RemoteTarget:
    """A remote target for ``url``; a v2 target has its metadata fetched here."""
    if protocol == "auto":
        protocol = "v2" if _V2_PATH.match(url.split("?")[0]) and endpoint is None else "json"
    if protocol == "v2":
        if endpoint is not None:
            raise ValueError("a JSON endpoint description does not apply to the v2 protocol")
        target = V2Target(url, options=options, client=client)
        target.describe()
        if num_classes is not None and target.num_classes is None:
            target.num_classes = num_classes  # answers must then have the key's class count
        return target
    if protocol == "json":
        return JsonTarget(url, endpoint, options=options, client=client, num_classes=num_classes)
    raise ValueError(f"unknown protocol {protocol!r}: auto, v2 or json")


__all__ = ["JsonEndpoint", "JsonTarget", "RemoteTarget", "V2Target", "open_remote", "parse_json_answer"]
