"""Serve a model over HTTP with the KServe / Triton v2 inference protocol (JSON).

A plain ASGI callable (no web framework) run by uvicorn; loopback by default. Endpoints::

    GET  /v2                                  server metadata
    GET  /v2/health/live, /v2/health/ready    health
    GET  /v2/models/NAME[/versions/V]         model metadata (input, outputs)
    GET  /v2/models/NAME[/versions/V]/ready   model readiness
    POST /v2/models/NAME[/versions/V]/infer   inference

The input ``input`` is FP32 (N, C, H, W) in [0, 1] (UINT8 pixels are accepted too); the
output ``logits`` is FP32 (N, classes), and ``labels`` INT64 (N,) when asked for by name.
Errors answer ``{"error": "..."}`` with 400, 404, 405 or 413.

    backmark serve --model model.safetensors --port 8000
    # in Python: with BackgroundServer(V2App(load_target("m.safetensors"), name="m")) as srv: srv.url
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import re
import socket
import threading
import time

import numpy as np
import torch

from ..errors import BackmarkError, MissingDependency
from ..version import __version__

_ROUTE = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<action>/infer|/ready)?/?$")
_FLOAT = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
_INT = {"UINT8": np.uint8, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64}


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class V2App:
    """ASGI app serving one local target (anything with ``forward(float (B, C, H, W)) -> (B, K)``)."""

    def __init__(self, target, *, name: str = "model", version: str = "1", max_batch: int = 1024, max_body: int = 256 << 20):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"model name {name!r}: use letters, digits, '_', '.', '-'")
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
            status, doc = await self.handle(scope["method"], scope["path"], body)
        except RequestError as e:
            status, doc = e.status, {"error": str(e)}
        except BackmarkError as e:  # the model refused the input
            status, doc = 400, {"error": str(e)}
        except Exception as e:  # noqa: BLE001  (a bug or a broken model: answer, never hang the client)
            status, doc = 500, {"error": f"internal error ({type(e).__name__})"}
        payload = json.dumps(doc, separators=(",", ":")).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

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
    async def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        if path in ("/v2", "/v2/"):
            self._method(method, "GET")
            return 200, {"name": "backmark", "version": __version__, "extensions": []}
        if path in ("/v2/health/live", "/v2/health/ready"):
            self._method(method, "GET")
            return 200, {path.rsplit("/", 1)[1]: True}
        m = _ROUTE.match(path)
        if not m:
            raise RequestError(404, f"no route {path}")
        if m.group("name") != self.name or m.group("version") not in (None, self.version):
            asked = m.group("name") + (f" version {m.group('version')}" if m.group("version") else "")
            raise RequestError(404, f"unknown model {asked}; this server has {self.name} version {self.version}")
        action = m.group("action")
        if action == "/infer":
            self._method(method, "POST")
            doc = self._parse(body)
            return 200, await asyncio.to_thread(self.infer, doc)
        self._method(method, "GET")
        if action == "/ready":
            return 200, {"name": self.name, "ready": True}
        return 200, self.metadata()

    @staticmethod
    def _method(method: str, allowed: str) -> None:
        if method != allowed:
            raise RequestError(405, f"method {method} not allowed here; use {allowed}")

    @staticmethod
    def _parse(body: bytes) -> dict:
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, ValueError) as e:
            raise RequestError(400, f"request body is not JSON ({e})") from None
        if not isinstance(doc, dict):
            raise RequestError(400, "request body must be a JSON object")
        return doc

    def metadata(self) -> dict:
        shape = [-1, *self.input_shape] if self.input_shape else [-1, -1, -1, -1]
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "backmark",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": shape}],
            "outputs": [
                {"name": "logits", "datatype": "FP32", "shape": [-1, self.num_classes or -1]},
                {"name": "labels", "datatype": "INT64", "shape": [-1]},
            ],
        }

    def infer(self, doc: dict) -> dict:
        inputs = doc.get("inputs")
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise RequestError(400, "'inputs' must list exactly one tensor")
        x = self._tensor(inputs[0])
        wanted = [o.get("name") for o in doc.get("outputs") or [] if isinstance(o, dict)] or ["logits"]
        for w in wanted:
            if w not in ("logits", "labels"):
                raise RequestError(400, f"unknown output {w!r}; this model has 'logits' and 'labels'")
        with self._lock:
            logits = self.target.forward(x).float().cpu()
        if self.num_classes is None:
            self.num_classes = logits.shape[1]
        outputs = []
        for w in wanted:
            if w == "logits":
                outputs.append({"name": "logits", "datatype": "FP32", "shape": list(logits.shape), "data": logits.reshape(-1).tolist()})
            else:
                outputs.append({"name": "labels", "datatype": "INT64", "shape": [len(logits)], "data": logits.argmax(1).tolist()})
        out = {"model_name": self.name, "model_version": self.version, "outputs": outputs}
        if "id" in doc:
            out["id"] = doc["id"]
        return out

    def _tensor(self, spec: dict) -> torch.Tensor:
        try:
            datatype, shape, data = str(spec["datatype"]).upper(), [int(d) for d in spec["shape"]], spec["data"]
        except (KeyError, TypeError, ValueError):
            raise RequestError(400, "the input needs 'datatype', 'shape' and 'data'") from None
        if spec.get("name", "input") != "input":
            raise RequestError(400, f"unknown input {spec.get('name')!r}; this model's input is 'input'")
        if len(shape) != 4 or any(d < 1 for d in shape):
            raise RequestError(400, f"input shape {shape} is not (N, C, H, W)")
        if self.input_shape and tuple(shape[1:]) != self.input_shape:
            raise RequestError(400, f"input shape {shape[1:]} (C, H, W) does not fit the model's {list(self.input_shape)}")
        if shape[0] > self.max_batch:
            raise RequestError(413, f"batch of {shape[0]} is larger than this server's limit of {self.max_batch}")
        if datatype not in _FLOAT and datatype not in _INT:
            raise RequestError(400, f"unsupported datatype {datatype}")
        try:
            arr = np.asarray(data, dtype=_FLOAT.get(datatype) or _INT[datatype])
        except (TypeError, ValueError, OverflowError):
            raise RequestError(400, f"input data is not a list of {datatype} values") from None
        if arr.size != math.prod(shape):
            raise RequestError(400, f"input holds {arr.size} values but its shape {shape} needs {math.prod(shape)}")
        x = torch.from_numpy(arr.reshape(shape).copy())
        return x.float() / 255 if datatype in _INT else x.float()


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
