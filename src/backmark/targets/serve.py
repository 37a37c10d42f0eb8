"""Serve a model over HTTP with the KServe / Triton v2 inference protocol (JSON and binary tensors).

A plain ASGI callable (no web framework) run by uvicorn; loopback by default. Endpoints::

    GET  /v2                                  server metadata
    GET  /v2/health/live, /v2/health/ready    health
    GET  /v2/models/NAME[/versions/V]         model metadata (input, outputs)
    GET  /v2/models/NAME[/versions/V]/ready   model readiness
    POST /v2/models/NAME[/versions/V]/infer   inference

The input ``input`` is declared UINT8 (N, C, H, W) pixels (``input_datatype="FP32"``: floats in
[0, 1]); either is accepted whatever is declared, as are FP16/FP64/BF16 floats and integer pixels. The
output ``logits`` is FP32 (N, classes), and ``labels`` INT64 (N,) when asked for by name.
Inputs and outputs may travel as binary tensor data (:mod:`backmark.targets.v2binary`; listed
in ``GET /v2``'s extensions): a UINT8 request then costs its pixels plus ~200 bytes of JSON.
Errors answer ``{"error": "..."}`` with 400, 404, 405 or 413.

    backmark serve --model model.safetensors --port 8000
    # in Python: with BackgroundServer(V2App(load_target("m.safetensors"), name="m")) as srv: srv.url
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import BackmarkError, MissingDependency
from ..version import __version__
from . import v2binary

_ROUTE = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<action>/infer|/ready)?/?$")
_FLOAT = ("FP16", "FP32", "FP64", "BF16")
_INT = ("UINT8", "INT8", "INT16", "INT32", "INT64")
_OUTPUTS = ("logits", "labels")


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Reply:
    """One HTTP answer: status, body, headers (a JSON document unless binary outputs follow it)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})

    @classmethod
    def json(cls, status: int, doc: dict) -> Reply:
        return cls(status, json.dumps(doc, separators=(",", ":")).encode())

    def document(self) -> dict:
        """The JSON header as an object (what tests and wrappers read)."""
        return v2binary.split_body(self.body, v2binary.header_length(self.headers, len(self.body)))[0]


class V2App:
    """ASGI app serving one local target (anything with ``forward(float (B, C, H, W)) -> (B, K)``)."""

    def __init__(self, target, *, name: str = "model", version: str = "1", max_batch: int = 1024, max_body: int = 256 << 20,
                 input_datatype: str = "UINT8"):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"model name {name!r}: use letters, digits, '_', '.', '-'")
        if input_datatype not in ("UINT8", "FP32"):
            raise ValueError(f"input datatype {input_datatype!r}: UINT8 (pixels) or FP32 (floats in [0, 1])")
        # What metadata declares, hence what clients send: UINT8 pixels are exact and 4x smaller than FP32.
        self.input_datatype = input_datatype
        self.target = target
        self.name, self.version = name, version
        self.max_batch, self.max_body = max_batch, max_body
        self.input_shape = tuple(target.input_shape) if target.input_shape else None
        self.num_classes = target.num_classes
        self._lock = threading.Lock()  # one forward pass at a time; the model is not re-entrant
        self.requests = 0

    # -- ASGI -----------------------------------------------------------------------------
    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        self.requests += 1
        try:
            body = await self._read_body(receive)
            reply = await self.handle(scope["method"], scope["path"], body, scope.get("headers") or ())
        except RequestError as e:
            reply = Reply.json(e.status, {"error": str(e)})
        except BackmarkError as e:  # the model refused the input
            reply = Reply.json(400, {"error": str(e)})
        except Exception as e:  # noqa: BLE001  (a bug or a broken model: answer, never hang the client)
            reply = Reply.json(500, {"error": f"internal error ({type(e).__name__})"})
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status,
                    "headers": [*headers, (b"content-length", str(len(reply.body)).encode())]})
        await send({"type": "http.response.body", "body": reply.body})

    async def _read_body(self, receive) -> bytes:
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise RequestError(400, "client disconnected")
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise RequestError(413, f"request body larger than {self.max_body} bytes")
            chunks.append(chunk)
            if not msg.get("more_body", False):
                return b"".join(chunks)

    # -- routes ---------------------------------------------------------------------------
    async def handle(self, method: str, path: str, body: bytes, headers=()) -> Reply:
        """The answer to one request; ``headers``: a mapping or ASGI (name, value) pairs."""
        if path in ("/v2", "/v2/"):
            self._method(method, "GET")
            return Reply.json(200, {"name": "backmark", "version": __version__, "extensions": [v2binary.EXTENSION]})
        if path in ("/v2/health/live", "/v2/health/ready"):
            self._method(method, "GET")
            return Reply.json(200, {path.rsplit("/", 1)[1]: True})
        m = _ROUTE.match(path)
        if not m:
            raise RequestError(404, f"no route {path}")
        if m.group("name") != self.name or m.group("version") not in (None, self.version):
            asked = m.group("name") + (f" version {m.group('version')}" if m.group("version") else "")
            raise RequestError(404, f"unknown model {asked}; this server has {self.name} version {self.version}")
        action = m.group("action")
        if action == "/infer":
            self._method(method, "POST")
            return await asyncio.to_thread(self.infer, body, headers)
        self._method(method, "GET")
        if action == "/ready":
            return Reply.json(200, {"name": self.name, "ready": True})
        return Reply.json(200, self.metadata())

    @staticmethod
    def _method(method: str, allowed: str) -> None:
        if method != allowed:
            raise RequestError(405, f"method {method} not allowed here; use {allowed}")

    def metadata(self) -> dict:
        shape = [-1, *self.input_shape] if self.input_shape else [-1, -1, -1, -1]
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "backmark",
            "inputs": [{"name": "input", "datatype": self.input_datatype, "shape": shape}],
            "outputs": [
                {"name": "logits", "datatype": "FP32", "shape": [-1, self.num_classes or -1]},
                {"name": "labels", "datatype": "INT64", "shape": [-1]},
            ],
        }

    def infer(self, body: bytes, headers=()) -> Reply:
        """Run one infer request (JSON, or binary tensors after a JSON header) and encode its answer."""
        try:
            doc, tail = v2binary.split_body(body, v2binary.header_length(headers, len(body)))
            inputs = doc.get("inputs")
            if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
                raise RequestError(400, "'inputs' must list exactly one tensor")
            _, datatype, _ = spec = v2binary.entry_fields(inputs[0], "input")
            self._check_input(*spec)
            (arr,) = v2binary.read_tensors(inputs, tail, "input").values()
            wanted = v2binary.requested_outputs(doc, ["logits"])
        except v2binary.ProtocolError as e:
            raise RequestError(400, str(e)) from None
        for name, _ in wanted:
            if name not in _OUTPUTS:
                raise RequestError(400, f"unknown output {name!r}; this model has 'logits' and 'labels'")
        if datatype == "BF16":  # uint16 bit patterns
            x = torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16).float()
        else:
            x = torch.from_numpy(arr).float() / 255 if datatype in _INT else torch.from_numpy(arr).float()
        with self._lock:
            logits = self.target.forward(x).float().cpu()
        if self.num_classes is None:
            self.num_classes = logits.shape[1]
        tensors = {"logits": (logits.numpy(), "FP32"), "labels": (logits.argmax(1).numpy(), "INT64")}
        body, out_headers = v2binary.encode_response(
            [(name, *tensors[name]) for name, _ in wanted], {name for name, binary in wanted if binary},
            model_name=self.name, model_version=self.version, request_id=doc["id"] if "id" in doc else None)
        return Reply(200, body, out_headers)

    def _check_input(self, name: str, datatype: str, shape: list[int]) -> None:
        """Refuse an input this model cannot take before its data is decoded."""
        if name != "input":
            raise RequestError(400, f"unknown input {name!r}; this model's input is 'input'")
        if len(shape) != 4 or any(d < 1 for d in shape):
            raise RequestError(400, f"input shape {shape} is not (N, C, H, W)")
        if self.input_shape and tuple(shape[1:]) != self.input_shape:
            raise RequestError(400, f"input shape {shape[1:]} (C, H, W) does not fit the model's {list(self.input_shape)}")
        if shape[0] > self.max_batch:
            raise RequestError(413, f"batch of {shape[0]} is larger than this server's limit of {self.max_batch}")
        if datatype not in _FLOAT and datatype not in _INT:
            raise RequestError(400, f"unsupported datatype {datatype}")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def make_server(app, *, access_log: bool = False):
    try:
        import uvicorn
    except ImportError:
        raise MissingDependency("serving needs uvicorn: pip install 'backmark[remote]'") from None

    config = uvicorn.Config(app, log_level="info" if access_log else "warning", access_log=access_log, lifespan="on", timeout_keep_alive=5,
                           timeout_graceful_shutdown=3)  # a stalled request never holds up shutdown
    return uvicorn.Server(config)


class BackgroundServer:
    """Run an ASGI app with uvicorn in a daemon thread; a context manager (used by tests and benchmarks).

        with BackgroundServer(app) as srv:   # 127.0.0.1, a free port
            srv.url                          # http://127.0.0.1:PORT
    """

    def __init__(self, app, *, host: str = "127.0.0.1", port: int = 0, start_timeout: float = 15.0):
        self.app, self.host, self.port, self.start_timeout = app, host, port, start_timeout
        self.server = None
        self.thread = None

    def __enter__(self) -> BackgroundServer:
        self.sock = bind(self.host, self.port)
        self.url = url_of(self.sock)
        self.server = make_server(self.app)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True, name="backmark-serve")
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"the server at {self.url} did not start within {self.start_timeout:g} s")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.sock.close()


def serve(app, *, host: str = "127.0.0.1", port: int = 8000, access_log: bool = False, on_ready=None) -> None:
    """Serve ``app`` in the foreground until interrupted. ``on_ready(url)`` is called once bound."""
    sock = bind(host, port)
    if on_ready is not None:
        on_ready(url_of(sock))
    try:
        make_server(app, access_log=access_log).run(sockets=[sock])
    finally:
        sock.close()


__all__ = ["BackgroundServer", "V2App", "bind", "is_loopback", "make_server", "serve"]
