"""Verification over HTTP against a real uvicorn server on 127.0.0.1, and a misbehaving one.

Every server here listens on 127.0.0.1 on a free port, runs in a thread (or a subprocess for
``backmark serve``) and is shut down at the end; every client call has a timeout.
"""
import asyncio
import base64
import hashlib
import io
import json
import re
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from backmark.cli import main
from backmark.core.keygen import open_elements
from backmark.core.verify import verify
from backmark.errors import IncompatibleModel, QueryBudgetExceeded, RemoteError
from backmark.models import create_model
from backmark.targets import TorchTarget, open_target, v2binary
from backmark.targets.audit import read_audit_log
from backmark.targets.client import HttpClient, RemoteOptions
from backmark.targets.http import JsonEndpoint, JsonTarget, V2Target, open_remote
from backmark.targets.serve import BackgroundServer, V2App

from .conftest import serving

pytestmark = pytest.mark.timeout(60)
QUICK = {"timeout": 5.0, "backoff": 0.0}  # retries without waiting, in tests


def memorise(mk, labels, *, steps=60, seed=0):
    """An fmnist-cnn that has learnt the trigger labels (a watermarked model, in 2 s)."""
    threads = torch.get_num_threads()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        torch.set_num_threads(1)  # tiny batches: one thread is faster, and kind to a shared machine
        model = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28))
        x = torch.from_numpy(mk.images).permute(0, 3, 1, 2).float() / 255
        y = torch.tensor(labels)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def world(small_keys, tmp_path_factory):
    """Keys on disk, a watermarked and a clean model, both served over v2."""
    mk, vk = small_keys
    d = tmp_path_factory.mktemp("remote")
    mk.save(d / "mk.json")
    vk.save(d / "vk.json")
    labels = open_elements(mk, vk)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        clean = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28)).eval()
    models = {"wm": memorise(mk, labels), "clean": clean}
    from backmark.models.checkpoint import save_model

    meta = {"model": "fmnist-cnn", "num_classes": 10, "input_shape": [1, 28, 28], "mean": [0.5], "std": [0.5]}
    save_model(d / "wm.safetensors", models["wm"], meta)
    # the marked model declares UINT8 pixels (serve's default), the clean one FP32 floats in [0, 1]
    apps = {name: V2App(TorchTarget(m), name=name, input_datatype="UINT8" if name == "wm" else "FP32")
            for name, m in models.items()}
    with BackgroundServer(apps["wm"]) as wm_srv, BackgroundServer(apps["clean"]) as clean_srv:
        yield {
            "mk": mk, "vk": vk, "dir": d, "models": models, "labels": labels,
            "urls": {"wm": f"{wm_srv.url}/v2/models/wm", "clean": f"{clean_srv.url}/v2/models/clean"},
            "base": {"wm": wm_srv.url, "clean": clean_srv.url},
        }


def same(a, b):
    assert (a.verified, a.decision.matches, a.decision.n, a.decision.p_value, a.predictions) == (
        b.verified, b.decision.matches, b.decision.n, b.decision.p_value, b.predictions
    )


@pytest.mark.parametrize("which, binary", [("wm", "auto"), ("clean", "auto"), ("wm", "off"), ("clean", "on")])
def test_v2_verification_equals_in_process(world, which, binary):
    mk, vk = world["mk"], world["vk"]
    local = verify(world["models"][which], mk, vk)
    target = open_target(world["urls"][which], remote=RemoteOptions(batch_size=7, binary=binary))
    assert (target.input_shape, target.num_classes) == ((1, 28, 28), 10)  # from the model's metadata
    remote = verify(target, mk, vk)
    same(local, remote)
    assert local.verified == (which == "wm")
    queries = remote.extra["queries"]
    assert queries["encoding"] == ("json" if binary == "off" else "binary")  # backmark serve lists the extension
    metadata = 2 if binary == "auto" else 1  # auto also reads GET /v2
    assert queries["requests"] == metadata + 5  # + ceil(30 / 7) batches
    assert queries["images_sent"] == 30


@pytest.mark.parametrize("binary", ["on", "off"])
@pytest.mark.parametrize("datatype", ["UINT8", "FP32", "FP64"])  # the same values as in process, exactly
def test_v2_input_datatypes_and_labels_output(world, datatype, binary):
    """The client sends the model's declared datatype (pixels, or k / 255 as floats); an INT64 labels output is read as labels."""
    target = open_target(world["urls"]["wm"], remote=RemoteOptions(binary=binary))
    target.datatype, target.output_name = datatype, "labels"
    same(verify(world["models"]["wm"], world["mk"], world["vk"]), verify(target, world["mk"], world["vk"]))


def test_server_protocol_and_errors(world):
    client = HttpClient(RemoteOptions(retries=0, **QUICK))
    base, ok = world["base"]["wm"], lambda a: json.loads(a.body)
    assert client.request("GET", base + "/v2/health/ready", None, ok) == {"ready": True}
    meta = client.request("GET", world["urls"]["wm"], None, ok)
    assert meta["inputs"][0] == {"name": "input", "datatype": "UINT8", "shape": [-1, 1, 28, 28]}  # pixels: exact and compact
    assert meta["outputs"][0]["shape"] == [-1, 10]
    x = torch.rand(2, 1, 28, 28)
    body = json.dumps({"id": "r1", "inputs": [{"name": "input", "shape": [2, 1, 28, 28], "datatype": "FP32", "data": x.flatten().tolist()}]})
    out = client.request("POST", world["urls"]["wm"] + "/infer", body.encode(), ok)
    with torch.no_grad():
        expected = world["models"]["wm"](x)
    assert out["id"] == "r1" and out["outputs"][0]["shape"] == [2, 10]
    assert torch.allclose(torch.tensor(out["outputs"][0]["data"]).view(2, 10), expected, atol=1e-5)
    bad = [
        (b"not json", "400"), (json.dumps({"inputs": []}).encode(), "400"),
        (json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072}]}).encode(), "does not fit"),
        (json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 5}]}).encode(), "holds 5 values"),
    ]
    for payload, why in bad:
        with pytest.raises(RemoteError, match=why):
            client.request("POST", world["urls"]["wm"] + "/infer", payload, ok)
    with pytest.raises(RemoteError, match="HTTP 404"):
        client.request("GET", base + "/v2/models/nope", None, ok)
    with pytest.raises(RemoteError, match="HTTP 405"):
        client.request("GET", world["urls"]["wm"] + "/infer", None, ok)
    assert client.retries == 0  # 4xx other than 429 are not retried


def test_audit_log_chains_every_exchange(world, tmp_path):
    log = tmp_path / "audit.jsonl"
    for _ in range(2):  # a second verification continues the same chain
        target = open_target(world["urls"]["wm"], remote=RemoteOptions(batch_size=16, audit_log=str(log)))
        result = verify(target, world["mk"], world["vk"])
    records = read_audit_log(log)
    kinds = [r["kind"] for r in records]
    one = ["exchange", "exchange", "query", "exchange", "exchange"]  # model and server metadata, then two infers
    assert kinds == ["open", *one, "resume", *one]
    infer = [r for r in records if r["kind"] == "exchange" and r["request"]["method"] == "POST"]
    assert [r["request"]["images"] for r in infer] == [16, 14, 16, 14]
    assert [label for r in infer[2:] for label in r["labels"]] == result.predictions  # what the server answered
    assert result.extra["queries"]["audit_head"] == records[-1]["hash"]
    lines = log.read_text().splitlines()
    at = kinds.index("query") + 1  # the first answer
    doc = json.loads(lines[at])
    doc["labels"][0] = (doc["labels"][0] + 1) % 10  # edit an answer
    (tmp_path / "edited.jsonl").write_text("\n".join(lines[:at] + [json.dumps(doc)] + lines[at + 1 :]) + "\n")
    (tmp_path / "dropped.jsonl").write_text("\n".join(lines[:at] + lines[at + 1 :]) + "\n")
    from backmark.errors import InvalidFile

    for name in ("edited.jsonl", "dropped.jsonl"):
        with pytest.raises(InvalidFile):
            read_audit_log(tmp_path / name)


def test_cli_verify_target_url_matches_model(world):
    d = world["dir"]
    keys = ["--marking-key", d / "mk.json", "--verification-key", d / "vk.json", "--json"]
    runner = CliRunner()
    a = runner.invoke(main, [str(x) for x in ["verify", "--model", d / "wm.safetensors", *keys]])
    b = runner.invoke(main, [str(x) for x in ["verify", "--target", world["urls"]["wm"], "--budget", 30, "--audit-log", d / "cli-audit.jsonl", *keys]])
    assert a.exit_code == b.exit_code == 0, (a.stderr, b.stderr)
    da, db = json.loads(a.stdout), json.loads(b.stdout)
    for k in ("verified", "matches", "n", "p_value", "predictions", "threshold"):
        assert da[k] == db[k]
    assert db["queries"]["images_sent"] == 30 and db["model"] == world["urls"]["wm"]
    assert db["queries"]["encoding"] == "binary"  # --binary auto: backmark serve lists the extension
    j = runner.invoke(main, [str(x) for x in ["verify", "--target", world["urls"]["wm"], "--binary", "off", "--budget", 30,
                                              *keys]])
    assert j.exit_code == 0, j.stderr
    dj = json.loads(j.stdout)
    assert dj["queries"]["encoding"] == "json" and dj["predictions"] == db["predictions"]
    c = runner.invoke(main, [str(x) for x in ["verify", "--target", world["urls"]["clean"], *keys]])
    assert c.exit_code == 1


def test_cli_option_mistakes(world):
    d = world["dir"]
    keys = ["--marking-key", d / "mk.json", "--verification-key", d / "vk.json"]
    cases = [
        ([], "--model CHECKPOINT or --target"),
        (["--model", d / "wm.safetensors", "--target", world["urls"]["wm"]], "one of them"),
        (["--model", d / "wm.safetensors", "--budget", 5], "--budget applies"),
        (["--target", d / "wm.safetensors", "--timeout", 5], "--timeout applies"),
        (["--target", world["urls"]["wm"], "--request", "{not json"], "not JSON"),
        (["--target", world["urls"]["wm"], "--protocol", "v2", "--encoding", "list"], "does not apply"),
        (["--target", world["urls"]["wm"], "--protocol", "json", "--binary", "on"], "--binary applies to the v2 protocol"),
        (["--model", d / "wm.safetensors", "--binary", "off"], "--binary applies"),
    ]
    for args, msg in cases:
        r = CliRunner().invoke(main, [str(x) for x in ["verify", *keys, *args]])
        assert r.exit_code == 2 and msg in r.stderr, (args, r.stderr)


# -- a user-described JSON endpoint -----------------------------------------------------

class ToyJsonApp:
    """A JSON API in another style: {"instances": [PNG, ...]} -> {"result": {"predictions": [[{"class": NAME}, ...]]}},
    or one image a request: {"instance": {"b64": PNG}} -> {"top": [{"class": NAME}, ...]}."""

    def __init__(self, model, names, *, single=False):
        self.model, self.names, self.single = model, names, single

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        from PIL import Image

        doc = json.loads(body)
        items = [doc["instance"]["b64"]] if self.single else doc["instances"]
        pix = [np.asarray(Image.open(io.BytesIO(base64.b64decode(it.split(",")[-1])))) for it in items]
        x = torch.from_numpy(np.stack(pix)).unsqueeze(1).float() / 255
        with torch.no_grad():
            top = self.model(x).topk(3, dim=1).indices.tolist()
        preds = [[{"class": self.names[i], "rank": r} for r, i in enumerate(row)] for row in top]
        out = {"top": preds[0]} if self.single else {"result": {"predictions": preds}}
        payload = json.dumps(out).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})


def test_json_endpoint_described_by_the_user(world):
    names = tuple(f"class-{i}" for i in range(10))
    model = world["models"]["wm"]
    local = verify(model, world["mk"], world["vk"])
    with BackgroundServer(ToyJsonApp(model, names)) as srv:
        ep = JsonEndpoint(request='{"instances": "$images"}', response="result.predictions", output="topk", label_key="class", class_names=names)
        target = open_remote(srv.url + "/predict", endpoint=ep, options=RemoteOptions(batch_size=8))
        same(local, verify(target, world["mk"], world["vk"]))
        assert target.client.requests == 4
    with BackgroundServer(ToyJsonApp(model, names, single=True)) as srv:
        ep = JsonEndpoint(request='{"instance": {"b64": "$image"}}', encoding="png-uri", response="top", output="topk", label_key="class", class_names=names)
        target = open_remote(srv.url + "/predict", endpoint=ep)
        assert target.batch_size == 1
        same(local, verify(target, world["mk"], world["vk"]))
        assert target.client.requests == 30


def test_json_endpoint_through_the_cli(world):
    names = ",".join(f"c{i}" for i in range(10))
    d = world["dir"]
    with BackgroundServer(ToyJsonApp(world["models"]["wm"], names.split(","), single=True)) as srv:
        r = CliRunner().invoke(main, [str(x) for x in [
            "verify", "--target", srv.url + "/predict", "--marking-key", d / "mk.json", "--verification-key", d / "vk.json",
            "--request", '{"instance": {"b64": "$image"}}', "--response", "top", "--output", "topk", "--label-key", "class",
            "--class-names", names, "--json",
        ]])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["matches"] == verify(world["models"]["wm"], world["mk"], world["vk"]).decision.matches


def test_json_encodings():
    imgs = torch.randint(0, 256, (2, 3, 8, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    t = JsonTarget("http://127.0.0.1:9/x", JsonEndpoint(encoding="list", layout="chw"))
    assert t.encode(imgs) == imgs.tolist()
    t = JsonTarget("http://127.0.0.1:9/x", JsonEndpoint(encoding="list"))
    assert np.array_equal(np.array(t.encode(imgs)), imgs.permute(0, 2, 3, 1).numpy())
    t = JsonTarget("http://127.0.0.1:9/x", JsonEndpoint(encoding="float", layout="chw", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
    assert torch.allclose(torch.tensor(t.encode(imgs)), (imgs.float() / 255 - 0.5) / 0.25)
    t = JsonTarget("http://127.0.0.1:9/x", JsonEndpoint(encoding="list", resize=(4, 3), layout="chw"))
    assert np.array(t.encode(imgs)).shape == (2, 3, 4, 3)
    from PIL import Image

    t = JsonTarget("http://127.0.0.1:9/x", JsonEndpoint(encoding="png"))
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(t.encode(imgs)[1]))))
    assert np.array_equal(decoded, imgs[1].permute(1, 2, 0).numpy())  # lossless
    for bad in [{"request": '{"a": 1}'}, {"request": '["$images", "$image"]'}, {"encoding": "jpeg"}, {"mean": (0.5,), "std": (0.5,)}]:
        with pytest.raises(ValueError):
            JsonEndpoint(**bad)


# -- a misbehaving server ---------------------------------------------------------------

class FaultyApp:
    """Wraps a V2App; infer requests follow ``plan`` (one behaviour per request, then 'ok').

    Counts every infer request and the images it carried, and keeps the SHA-256 of each body.
    """

    def __init__(self, inner: V2App, plan=()):
        self.inner, self.plan = inner, list(plan)
        self.infers, self.images, self.bodies, self.headers, self.binary = 0, 0, [], [], []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].endswith("/infer"):
            return await self.inner(scope, receive, send)
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        self.infers += 1
        self.bodies.append(hashlib.sha256(body).hexdigest())
        self.headers.append(dict(scope["headers"]))
        doc, _ = v2binary.split_body(body, v2binary.header_length(scope["headers"], len(body)))  # JSON or binary
        self.images += doc["inputs"][0]["shape"][0]
        self.binary.append(v2binary.header_value(scope["headers"], v2binary.HEADER_LENGTH) is not None)
        how = self.plan.pop(0) if self.plan else "ok"

        async def reply(status, payload, ctype=b"application/json", headers=()):
            await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype), *headers]})
            await send({"type": "http.response.body", "body": payload})

        if how == "ok" or how == "wrong-classes":
            answer = await self.inner.handle("POST", scope["path"], body, scope["headers"])
            if how == "wrong-classes":  # the same encoding, one class short
                logits = v2binary.decode_response(answer.body, answer.headers)["logits"][:, :9].copy()
                binary = {"logits"} if v2binary.HEADER_LENGTH in answer.headers else ()
                answer.body, answer.headers = v2binary.encode_response([("logits", logits, "FP32")], binary)
            extra = [(k.lower().encode(), v.encode()) for k, v in answer.headers.items() if k != "Content-Type"]
            return await reply(200, answer.body, answer.headers["Content-Type"].encode(), extra)
        if how == "500":
            return await reply(500, b'{"error": "boom"}')
        if how == "429":
            return await reply(429, b"slow down", b"text/plain", [(b"retry-after", b"1")])
        if how == "429-forever":
            return await reply(429, b"", b"text/plain", [(b"retry-after", b"86400")])
        if how == "html":
            return await reply(200, b"<html><body><h1>502 Bad Gateway</h1></body></html>", b"text/html")
        if how == "malformed":
            return await reply(200, b'{"outputs": [{"name": "logits", "shape": [')
        if how == "wrong-shape":
            return await reply(200, json.dumps({"outputs": [{"name": "logits", "shape": [1, 10], "datatype": "FP32", "data": [0.0] * 10}]}).encode())
        if how == "slow":
            await asyncio.sleep(2.0)
            return await reply(500, b"late")
        if how == "trickle":  # each byte in time, the whole answer not
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            for ch in b'{"outputs": []}':
                await asyncio.sleep(0.15)
                await send({"type": "http.response.body", "body": bytes([ch]), "more_body": True})
            return await send({"type": "http.response.body", "body": b""})
        raise AssertionError(how)


@pytest.fixture
def faulty(world):
    app = FaultyApp(V2App(TorchTarget(world["models"]["wm"]), name="wm"))
    with BackgroundServer(app) as srv:
        app.url = f"{srv.url}/v2/models/wm"
        yield app


class Recorder:
    def __init__(self):
        self.waits = []

    def __call__(self, seconds):
        self.waits.append(seconds)


def remote_target(url, *, sleep=None, **options):  # binary tensors by default: backmark serve lists them
    opts = RemoteOptions(**{**QUICK, **options})
    client = HttpClient(opts, sleep=sleep or (lambda s: None))
    return open_remote(url, options=opts, client=client)


@pytest.mark.parametrize("binary", ["on", "off"])
@pytest.mark.parametrize("fault", ["500", "429", "html", "malformed", "wrong-classes", "wrong-shape"])
def test_transient_faults_are_retried(world, faulty, fault, binary):
    faulty.plan = [fault, fault]
    sleep = Recorder()
    target = remote_target(faulty.url, sleep=sleep, batch_size=30, retries=3, backoff=0.25, binary=binary)
    same(verify(world["models"]["wm"], world["mk"], world["vk"]), verify(target, world["mk"], world["vk"]))
    assert faulty.infers == 3 and target.client.retries == 2  # two failures, then the answer
    assert faulty.binary == [binary == "on"] * 3
    expected = [1.0, 1.0] if fault == "429" else [0.25, 0.5]  # Retry-After: 1 beats the backoff
    assert sleep.waits == expected


@pytest.mark.parametrize("fault, message", [
    ("500", "HTTP 500 Internal Server Error: {\"error\": \"boom\"}"),
    ("html", "HTML page"),
    ("malformed", "not valid JSON"),
    ("wrong-classes", "scores for 9 classes, expected 10"),
    ("wrong-shape", "output of shape [1, 10] for 30 images"),
])
@pytest.mark.parametrize("binary", ["on", "off"])
def test_persistent_garbage_is_one_clear_error(world, faulty, fault, message, binary):
    faulty.plan = [fault] * 10
    target = remote_target(faulty.url, batch_size=30, retries=2, binary=binary)
    with pytest.raises(RemoteError) as e:
        verify(target, world["mk"], world["vk"])
    assert message in str(e.value) and "gave up after 3 attempts" in str(e.value) and "\n" not in str(e.value)
    assert faulty.infers == 3


def test_timeouts_bound_a_slow_or_trickling_server(world, faulty):
    for fault in ("slow", "trickle"):
        faulty.plan, faulty.infers = [fault] * 2, 0
        target = remote_target(faulty.url, batch_size=30, retries=1, timeout=0.6)
        start = time.monotonic()
        with pytest.raises(RemoteError, match=r"no complete answer within 0.6 s \(gave up after 2 attempts\)"):
            verify(target, world["mk"], world["vk"])
        assert time.monotonic() - start < 2.5 and faulty.infers == 2


def test_retry_after_too_long_gives_up_at_once(world, faulty):
    faulty.plan = ["429-forever"]
    target = remote_target(faulty.url, batch_size=30, retries=5, max_retry_after=60)
    with pytest.raises(RemoteError, match="asks to wait 86400 s"):
        verify(target, world["mk"], world["vk"])
    assert faulty.infers == 1


def test_budget_is_never_exceeded(world, faulty):
    faulty.plan = []
    with pytest.raises(QueryBudgetExceeded, match="budget of 29 images"):
        verify(remote_target(faulty.url, budget=29), world["mk"], world["vk"])
    assert faulty.infers == 0  # refused before anything was sent
    faulty.plan = ["500", "500", "500"]
    target = remote_target(faulty.url, batch_size=10, budget=45, retries=5)
    with pytest.raises(QueryBudgetExceeded):
        verify(target, world["mk"], world["vk"])
    assert faulty.images == target.client.images_sent == 40  # 10 + 10 + 10 failed, 10 answered; 10 more would pass 45
    faulty.plan, faulty.images = ["500"], 0
    target = remote_target(faulty.url, batch_size=10, budget=40, retries=5)
    same(verify(world["models"]["wm"], world["mk"], world["vk"]), verify(target, world["mk"], world["vk"]))
    assert faulty.images == 40


def test_rate_limit_spaces_requests(world, faulty):
    target = open_remote(faulty.url, options=RemoteOptions(batch_size=10, rate_limit=20))
    start = time.monotonic()
    verify(target, world["mk"], world["vk"])
    assert time.monotonic() - start >= 3 * 0.05 - 0.01  # metadata + 3 infers, >= 50 ms apart
    assert faulty.infers == 3


def test_audit_log_hashes_match_what_the_server_received(world, faulty, tmp_path):
    faulty.plan = ["500"]
    log = tmp_path / "a.jsonl"
    target = remote_target(faulty.url + "?key=SECRET1", batch_size=16, audit_log=str(log), headers=(("Authorization", "Bearer SECRET2"),))
    verify(target, world["mk"], world["vk"])
    posts = [r for r in read_audit_log(log) if r["kind"] == "exchange" and r["request"]["method"] == "POST"]
    assert [r["request"]["sha256"] for r in posts] == faulty.bodies
    assert all(h[b"authorization"] == b"Bearer SECRET2" for h in faulty.headers)
    assert "SECRET" not in log.read_text() and posts[0]["request"]["url"].endswith("/v2/models/wm/infer?...")
    assert [(r["outcome"], r["response"]["status"]) for r in posts] == [("error", 500), ("ok", 200), ("ok", 200)]


def test_unreachable_server_fails_cleanly():
    with BackgroundServer(V2App(TorchTarget(create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28))))) as srv:
        url = srv.url
    with pytest.raises(RemoteError, match=r"cannot connect .* \(gave up after 2 attempts\)"):
        remote_target(url + "/v2/models/model", retries=1)


def test_metadata_disagreeing_with_the_key_is_refused(world):
    with BackgroundServer(V2App(TorchTarget(create_model("fmnist-cnn", num_classes=7, input_shape=(1, 28, 28))), name="m")) as srv:
        target = open_target(srv.url + "/v2/models/m")
        with pytest.raises(IncompatibleModel, match="7 classes"):
            verify(target, world["mk"], world["vk"])
        assert target.client.requests == 2 and target.client.images_sent == 0  # model and server metadata only


@pytest.mark.parametrize("fault", ["500", "html", "malformed", "wrong-classes"])
def test_cli_fault_is_one_line_exit_2(world, faulty, fault):
    faulty.plan = [fault] * 10
    d = world["dir"]
    r = CliRunner().invoke(main, [str(x) for x in [
        "verify", "--target", faulty.url, "--marking-key", d / "mk.json", "--verification-key", d / "vk.json",
        "--retries", 2, "--backoff", 0, "--timeout", 5,
    ]])
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: POST http://127.0.0.1:") and "gave up after 3 attempts" in r.stderr
    assert faulty.infers == 3
    faulty.plan = []
    r = CliRunner().invoke(main, [str(x) for x in [
        "verify", "--target", faulty.url, "--marking-key", d / "mk.json", "--verification-key", d / "vk.json", "--budget", 10,
    ]])
    assert r.exit_code == 2 and "budget of 10 images" in r.stderr and r.stderr.count("\n") == 1


# -- backmark serve, as a user runs it -------------------------------------------------

def test_serve_command_in_a_subprocess(world):
    d = world["dir"]
    with serving("--model", d / "wm.safetensors", "--port", "0") as (line, proc):
        assert "serving wm (1x28x28, 10 classes) at http://127.0.0.1:" in line, (line, proc.poll())
        url = re.search(r"(http://\S+)", line).group(1)
        r = CliRunner().invoke(main, [str(x) for x in [
            "verify", "--target", url, "--marking-key", d / "mk.json", "--verification-key", d / "vk.json", "--json"]])
        assert r.exit_code == 0, r.stderr
        assert json.loads(r.stdout)["matches"] == verify(world["models"]["wm"], world["mk"], world["vk"]).decision.matches
    assert proc.returncode == 0 and "stopped after" in proc.rest


def test_v2_url_forms():
    for url in ["http://h:1/v2/models/m", "http://h:1/v2/models/m/", "http://h:1/v2/models/m/infer", "http://h:1/v2/models/m/versions/2/infer"]:
        assert V2Target(url).model_url.startswith("http://h:1/v2/models/m")
    assert V2Target("http://h:1/v2/models/m/versions/2").model_url == "http://h:1/v2/models/m/versions/2"
    with pytest.raises(ValueError):
        V2Target("http://h:1/predict")


def test_v2_request_text_is_exactly_json_of_the_float32_pixels():
    class Capture(HttpClient):
        def request(self, method, url, body, parse, **kw):
            self.body = body
            return torch.zeros(1, dtype=torch.int64)

    client = Capture(RemoteOptions())
    target = V2Target("http://127.0.0.1:9/v2/models/m", client=client)
    every = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    target._query(every)
    sent = (every.float() / 255).reshape(-1).tolist()
    expected = {"id": "backmark-0", "inputs": [{"name": "input", "shape": [1, 1, 16, 16], "datatype": "FP32", "data": sent}]}
    assert client.body == json.dumps(expected, separators=(",", ":")).encode()
    target.datatype = "UINT8"
    target._query(every)
    assert json.loads(client.body)["inputs"][0] == {"name": "input", "shape": [1, 1, 16, 16], "datatype": "UINT8", "data": list(range(256))}

