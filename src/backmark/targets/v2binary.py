"""The KServe / Triton v2 "binary tensor data" extension (HTTP/REST), client and server side.

A body is a JSON header followed, with no separator or padding, by the raw bytes of every
tensor marked binary, in the order the JSON lists them::

    POST /v2/models/NAME/infer
    Inference-Header-Content-Length: H          (bytes of the JSON; absent: the whole body is JSON)
    <H bytes of JSON><tensor 0 bytes><tensor 1 bytes>...

- a binary input (or response output) carries ``"parameters": {"binary_data_size": BYTES}`` and no
  ``"data"``; a requested output ``{"name", "parameters": {"binary_data": true}}`` is answered as
  binary; ``"parameters": {"binary_data_output": true}`` on the request makes binary the default;
- elements are little-endian, row-major, native size (UINT8 1 byte, FP32 4 ...); BOOL is one byte;
  BYTES is, per element, a little-endian uint32 length then the bytes;
- a server with the extension lists ``"binary_tensor_data"`` in ``GET /v2``'s ``extensions``.

The JSON is ASCII-only and compact, its keys in tritonclient's order, so a request has exactly
the bytes tritonclient 2.73 sends for it (checked against recorded bodies in the tests). Nothing is
cast silently: an array whose dtype is not the datatype's is refused (ValueError).

    body, headers = encode_request([("input", pixels, "UINT8")], ["logits"], request_id="r1")
    outputs = decode_response(answer_body, answer_headers)      # {"logits": float32 (N, K)}
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSION = "binary_tensor_data"
OCTET_STREAM = "application/octet-stream"
BYTES = "BYTES"
DTYPES: dict[str, np.dtype] = {  # v2 datatype -> little-endian numpy dtype
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"),  # numpy has no bfloat16: BF16 tensors are uint16 arrays of its bit patterns
}
BINARY_ONLY = ("BF16",)  # JSON has no BF16 numbers (Triton refuses them): binary data only

Tensor = tuple[str, np.ndarray, str]  # (name, array, v2 datatype)


class ProtocolError(ValueError):
    """A body or header that breaks the v2 protocol or its binary extension."""


# -- one tensor <-> bytes -----------------------------------------------------------------


def dtype_of(array: np.ndarray, datatype: str) -> np.dtype:
    """The little-endian dtype of ``datatype``; ValueError unless ``array`` already holds that type."""
    dtype = DTYPES.get(datatype)
    if dtype is None:
        raise ValueError(f"unsupported v2 datatype {datatype!r} for binary data")
    if array.dtype.kind != dtype.kind or array.dtype.itemsize != dtype.itemsize:
        raise ValueError(f"a {array.dtype} array cannot be sent as {datatype} (expected {dtype.name})")
    return dtype


def tensor_to_bytes(array: np.ndarray, datatype: str) -> bytes:
    array = np.asarray(array)
    if datatype == BYTES:
        parts = []
        for item in array.reshape(-1).tolist():
            item = item.encode("utf-8") if isinstance(item, str) else item
            if not isinstance(item, (bytes, bytearray)):
                raise ValueError(f"a BYTES element must be bytes or str, not {type(item).__name__}")
            parts += [struct.pack("<I", len(item)), bytes(item)]
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=dtype_of(array, datatype)).tobytes()


def tensor_from_bytes(data: bytes | memoryview, datatype: str, shape: Sequence[int]) -> np.ndarray:
    """The array ``data`` holds (a copy, native byte order); ProtocolError if its size does not fit ``shape``."""
    count = math.prod(shape)
    if datatype == BYTES:
        view, items, at = memoryview(data), [], 0
        while at < len(view):
            if at + 4 > len(view):
                raise ProtocolError("BYTES tensor ends inside an element's 4-byte length")
            (size,) = struct.unpack_from("<I", view, at)
            if at + 4 + size > len(view):
                raise ProtocolError(f"BYTES element of {size} bytes runs past the tensor's end")
            items.append(bytes(view[at + 4 : at + 4 + size]))
            at += 4 + size
        if len(items) != count:
            raise ProtocolError(f"BYTES tensor holds {len(items)} elements, its shape {list(shape)} needs {count}")
        out = np.empty(count, dtype=object)
        out[:] = items
        return out.reshape(shape)
    dtype = DTYPES.get(datatype)
    if dtype is None:
        raise ProtocolError(f"unsupported v2 datatype {datatype!r}")
    if len(data) != count * dtype.itemsize:
        raise ProtocolError(f"{datatype} tensor of shape {list(shape)} needs {count * dtype.itemsize} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def tensor_from_json(data, datatype: str, shape: Sequence[int], what: str) -> np.ndarray:
    """A tensor sent as JSON ``data``; ProtocolError if it is not ``prod(shape)`` values of ``datatype``."""
    count = math.prod(shape)
    if datatype in BINARY_ONLY:
        raise ProtocolError(f"{what}: {datatype} travels as binary data only")
    if datatype != BYTES and datatype not in DTYPES:
        raise ProtocolError(f"{what}: unsupported v2 datatype {datatype!r}")
    try:
        if datatype == BYTES:
            items = np.asarray(data, dtype=object).reshape(-1)
            flat = np.array([x.encode("utf-8") if isinstance(x, str) else x for x in items], dtype=object)
        else:
            flat = np.asarray(data, dtype=DTYPES[datatype].newbyteorder("=")).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        raise ProtocolError(f"{what}: 'data' is not a list of {datatype} values") from None
    if flat.size != count:
        raise ProtocolError(f"{what}: 'data' holds {flat.size} values but its shape {list(shape)} needs {count}")
    return flat.reshape(shape)


# -- bodies -------------------------------------------------------------------------------


def header_value(headers, name: str) -> str | None:
    """A header from a mapping or from (name, value) pairs (ASGI: lower-case bytes), case-insensitively."""
    for key, value in headers.items() if isinstance(headers, Mapping) else headers or ():
        key = key.decode("latin-1") if isinstance(key, bytes) else key
        if key.lower() == name.lower():
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


def header_length(headers, body_length: int) -> int | None:
    """The JSON header's length from ``Inference-Header-Content-Length`` (None when absent)."""
    value = header_value(headers, HEADER_LENGTH)
    if value is None:
        return None
    if not value.strip().isdigit():
        raise ProtocolError(f"{HEADER_LENGTH} is not a byte count: {value[:40]!r}")
    n = int(value)
    if n > body_length:
        raise ProtocolError(f"{HEADER_LENGTH} {n} is more than the body's {body_length} bytes")
    return n


def split_body(body: bytes, length: int | None) -> tuple[dict, memoryview]:
    """(the JSON header as an object, the bytes after it)."""
    view = memoryview(body)
    n = len(view) if length is None else length
    try:
        doc = json.loads(bytes(view[:n]))
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"the JSON header is not valid JSON ({type(e).__name__}: {e})") from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"the JSON header is a {type(doc).__name__}, not an object")
    return doc, view[n:]


def entry_fields(entry, what: str) -> tuple[str, str, list[int]]:
    """(name, datatype, shape) of a tensor entry; ProtocolError if one is missing or malformed."""
    try:
        name, datatype, shape = str(entry["name"]), str(entry["datatype"]).upper(), [int(d) for d in entry["shape"]]
    except (KeyError, TypeError, ValueError):
        raise ProtocolError(f"an {what} needs 'name', 'datatype' and 'shape'") from None
    if any(d < 0 for d in shape):
        raise ProtocolError(f"{what} {name!r}: shape {shape} has a negative dimension")
    return name, datatype, shape


def read_tensors(entries: list, tail: memoryview, what: str) -> dict[str, np.ndarray]:
    """name -> array of each entry: binary ones taken in order from ``tail``, the others from 'data'."""
    arrays, at = {}, 0
    for entry in entries:
        if not isinstance(entry, dict):
            raise ProtocolError(f"an {what} entry is a {type(entry).__name__}, not an object")
        name, datatype, shape = entry_fields(entry, what)
        params = entry.get("parameters") or {}
        if not isinstance(params, dict):
            raise ProtocolError(f"{what} {name!r}: 'parameters' is not an object")
        size = params.get("binary_data_size")
        if size is None:
            if "data" not in entry:
                raise ProtocolError(f"{what} {name!r} has neither 'data' nor 'binary_data_size'")
            arrays[name] = tensor_from_json(entry["data"], datatype, shape, f"{what} {name!r}")
            continue
        if "data" in entry:
            raise ProtocolError(f"{what} {name!r} has both 'data' and 'binary_data_size'")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ProtocolError(f"{what} {name!r}: binary_data_size {size!r} is not a byte count")
        if at + size > len(tail):
            left = len(tail) - at
            raise ProtocolError(f"{what} {name!r}: binary_data_size {size} runs past the body's end ({left} bytes left)")
        arrays[name] = tensor_from_bytes(tail[at : at + size], datatype, shape)
        at += size
    if at != len(tail):
        raise ProtocolError(f"{len(tail) - at} bytes follow the last binary tensor")
    return arrays


def _entry(name: str, array: np.ndarray, datatype: str, binary: bool, blobs: list[bytes]) -> dict:
    array = np.asarray(array)
    entry: dict = {"name": name, "shape": [int(d) for d in array.shape], "datatype": datatype}
    if binary:
        raw = tensor_to_bytes(array, datatype)
        entry["parameters"] = {"binary_data_size": len(raw)}
        blobs.append(raw)
    elif datatype == BYTES:
        entry["data"] = [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in array.reshape(-1).tolist()]
    elif datatype in BINARY_ONLY:
        raise ValueError(f"{datatype} travels as binary data only")
    else:
        dtype_of(array, datatype)
        entry["data"] = array.reshape(-1).tolist()
    return entry


def _assemble(doc: dict, blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    # ASCII-only JSON: its length in bytes is its length in characters, which tritonclient sends.
    head = json.dumps(doc, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")
    if not blobs:
        return head, {"Content-Type": "application/json"}
    return head + b"".join(blobs), {"Content-Type": OCTET_STREAM, HEADER_LENGTH: str(len(head))}


# -- client side --------------------------------------------------------------------------


def encode_request(
    inputs: Sequence[Tensor],
    outputs: Sequence[str] = (),
    *,
    binary_outputs: bool = True,
    binary_inputs: bool = True,
    request_id: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of ``POST .../infer``; no ``outputs`` named asks for all (as binary if ``binary_outputs``)."""
    blobs: list[bytes] = []
    doc: dict = {} if request_id is None else {"id": str(request_id)}  # tritonclient's key order
    doc["inputs"] = [_entry(name, arr, dt, binary_inputs, blobs) for name, arr, dt in inputs]
    if outputs:
        doc["outputs"] = [{"name": name, "parameters": {"binary_data": bool(binary_outputs)}} for name in outputs]
    elif binary_outputs:
        doc["parameters"] = {"binary_data_output": True}
    return _assemble(doc, blobs)


def decode_response(body: bytes, headers) -> dict[str, np.ndarray]:
    """name -> array of an infer answer (binary or JSON outputs); ProtocolError for an error answer."""
    doc, tail = split_body(body, header_length(headers, len(body)))
    if "error" in doc and "outputs" not in doc:
        raise ProtocolError(f"the server reports an error: {str(doc['error'])[:200]}")
    outputs = doc.get("outputs")
    if not isinstance(outputs, list):
        raise ProtocolError("the answer has no 'outputs' list")
    return read_tensors(outputs, tail, "output")


def supports_binary(server_metadata) -> bool:
    """Whether ``GET /v2``'s metadata lists the binary tensor data extension."""
    extensions = server_metadata.get("extensions") if isinstance(server_metadata, dict) else None
    return isinstance(extensions, list) and EXTENSION in extensions


# -- server side --------------------------------------------------------------------------


def requested_outputs(doc: Mapping, default: Sequence[str]) -> list[tuple[str, bool]]:
    """(name, binary) of each output the request asks for (``default`` if it names none)."""
    params = doc.get("parameters") or {}
    binary = bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    asked = doc.get("outputs")
    if not asked:
        return [(name, binary) for name in default]
    if not isinstance(asked, list):
        raise ProtocolError("'outputs' must be a list")
    out = []
    for entry in asked:
        if not isinstance(entry, dict) or "name" not in entry:
            raise ProtocolError("a requested output needs a 'name'")
        p = entry.get("parameters") or {}
        out.append((str(entry["name"]), bool(p.get("binary_data", binary)) if isinstance(p, dict) else binary))
    return out


def encode_response(
    outputs: Sequence[Tensor],
    binary: Iterable[str] = (),
    *,
    model_name: str | None = None,
    model_version: str | None = None,
    request_id: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of an infer answer; the outputs named in ``binary`` go as binary data."""
    wanted, blobs = frozenset(binary), []
    doc: dict = {}
    for key, value in (("model_name", model_name), ("model_version", model_version), ("id", request_id)):
        if value is not None:
            doc[key] = value
    doc["outputs"] = [_entry(name, arr, dt, name in wanted, blobs) for name, arr, dt in outputs]
    return _assemble(doc, blobs)


__all__ = [
    "BINARY_ONLY",
    "BYTES",
    "DTYPES",
    "EXTENSION",
    "HEADER_LENGTH",
    "OCTET_STREAM",
    "ProtocolError",
    "decode_response",
    "dtype_of",
    "encode_request",
    "encode_response",
    "entry_fields",
    "header_length",
    "header_value",
    "read_tensors",
    "requested_outputs",
    "split_body",
    "supports_binary",
    "tensor_from_bytes",
    "tensor_from_json",
    "tensor_to_bytes",
]
