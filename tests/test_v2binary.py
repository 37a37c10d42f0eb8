"""The v2 binary tensor data extension: byte layout (against tritonclient's recorded bodies), round
trips, malformed bodies, and a real uvicorn server on 127.0.0.1 answering binary and JSON alike."""

import json
import struct

import numpy as np
import pytest
import torch

from backmark.errors import RemoteError
from backmark.models import create_model
from backmark.targets import TorchTarget
from backmark.targets import v2binary as vb
from backmark.targets.client import HttpClient, RemoteOptions
from backmark.targets.http import open_remote
from backmark.targets.serve import BackgroundServer, V2App

pytestmark = pytest.mark.timeout(60)
RNG = np.random.default_rng(0)
X8 = np.arange(8, dtype=np.uint8).reshape(2, 1, 2, 2)

# Bodies tritonclient 2.73.0 generates (InferInput.set_data_from_numpy(x, binary_data=True) and
# InferenceServerClient.generate_request_body(..., request_id="r7")) for X8, recorded once.
TRITONCLIENT = {
    "uint8": (
        176,
        b'{"id":"r7","inputs":[{"name":"input","shape":[2,1,2,2],"datatype":"UINT8","parameters":{"binary_data_size":8}}],'
        b'"outputs":[{"name":"logits","parameters":{"binary_data":true}}]}',
        "0001020304050607",
    ),
    "fp32": (
        228,
        b'{"id":"r7","inputs":[{"name":"input","shape":[2,1,2,2],"datatype":"FP32","parameters":{"binary_data_size":32}}],'
        b'"outputs":[{"name":"logits","parameters":{"binary_data":true}},{"name":"labels","parameters":{"binary_data":true}}]}',
        "000000008180803b8180003cc1c0403c8180803ca1a0a03cc1c0c03ce1e0e03c",
    ),
    "no-outputs": (
        153,
        b'{"id":"r7","inputs":[{"name":"input","shape":[2,1,2,2],"datatype":"UINT8","parameters":{"binary_data_size":8}}],'
        b'"parameters":{"binary_data_output":true}}',
        "0001020304050607",
    ),
}


@pytest.mark.parametrize("case", sorted(TRITONCLIENT))
def test_request_bytes_are_tritonclients(case):
    length, head, tail = TRITONCLIENT[case]
    x, dt = (X8.astype(np.float32) / np.float32(255), "FP32") if case == "fp32" else (X8, "UINT8")
    outputs = {"uint8": ["logits"], "fp32": ["logits", "labels"], "no-outputs": []}[case]
    body, headers = vb.encode_request([("input", x, dt)], outputs, request_id="r7")
    assert body == head + bytes.fromhex(tail) and int(headers[vb.HEADER_LENGTH]) == length == len(head)
    assert headers["Content-Type"] == vb.OCTET_STREAM
    doc, tail_view = vb.split_body(body, length)
    got = vb.read_tensors(doc["inputs"], tail_view, "input")["input"]
    assert got.dtype == x.dtype and np.array_equal(got, x)


def test_round_trips_of_every_kind():
    a = RNG.integers(0, 256, (2, 3, 4, 4), dtype=np.uint8)
    b = np.array([[b"alpha", b""], [b"\x00\xff", "\u00e9t\u00e9".encode()]], dtype=object)
    c = np.array([True, False, True])
    d = np.arange(6, dtype=">f4").reshape(2, 3)  # big-endian goes little-endian
    body, headers = vb.encode_request([("a", a, "UINT8"), ("b", b, "BYTES"), ("c", c, "BOOL"), ("d", d, "FP32")])
    n = int(headers[vb.HEADER_LENGTH])
    tail = body[n:]
    assert tail[: a.nbytes] == a.tobytes() and tail[a.nbytes : a.nbytes + 9] == struct.pack("<I", 5) + b"alpha"
    assert tail[-24:] == d.astype("<f4").tobytes() and tail[-27:-24] == b"\x01\x00\x01"
    doc, view = vb.split_body(body, n)
    got = vb.read_tensors(doc["inputs"], view, "input")
    assert np.array_equal(got["a"], a) and got["b"].tolist() == b.tolist() and got["c"].tolist() == c.tolist()
    assert np.array_equal(got["d"], d)
    assert vb.requested_outputs(doc, ["x"]) == [("x", True)]  # no outputs named: all of them, as binary
    logits = RNG.standard_normal((5, 10)).astype(np.float32)
    labels = logits.argmax(1).astype(np.int64)
    body, headers = vb.encode_response(
        [("logits", logits, "FP32"), ("labels", labels, "INT64")], {"logits"}, model_name="m", request_id="r"
    )
    n = int(headers[vb.HEADER_LENGTH])
    doc = json.loads(body[:n])
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 200} and doc["outputs"][1]["data"] == labels.tolist()
    got = vb.decode_response(body, [(b"inference-header-content-length", str(n).encode())])  # ASGI-style pairs work
    assert np.array_equal(got["logits"], logits) and got["logits"].dtype == np.float32 and np.array_equal(got["labels"], labels)
    body, headers = vb.encode_response([("labels", labels, "INT64")])
    assert vb.HEADER_LENGTH not in headers and vb.decode_response(body, headers)["labels"].tolist() == labels.tolist()


def test_nothing_is_cast_silently():
    with pytest.raises(ValueError, match="cannot be sent as FP32"):
        vb.encode_request([("x", np.zeros(3), "FP32")])  # float64
    with pytest.raises(ValueError, match="cannot be sent as UINT8"):
        vb.encode_request([("x", np.zeros(3, np.float32), "UINT8")])
    with pytest.raises(ValueError, match="cannot be sent as BF16"):
        vb.encode_request([("x", np.zeros(3, np.float32), "BF16")])  # bfloat16 goes as its uint16 bit patterns
    with pytest.raises(ValueError, match="binary data only"):
        vb.encode_request([("x", np.zeros(3, np.uint16), "BF16")], binary_inputs=False)


def test_malformed_bodies_are_refused():
    body, headers = vb.encode_request([("input", X8, "UINT8")], ["logits"])
    n = int(headers[vb.HEADER_LENGTH])

    def decode(b, length):
        doc, view = vb.split_body(b, vb.header_length({vb.HEADER_LENGTH: str(length)}, len(b)))
        return vb.read_tensors(doc["inputs"], view, "input")

    for bad, length, why in [
        (body + b"\x00", n, "1 bytes follow the last binary tensor"),
        (body[:-1], n, "runs past the body's end"),
        (body, n - 1, "not valid JSON"),
        (body, len(body) + 1, "more than the body's"),
        (body, "12x", "not a byte count"),
        (body, -3, "not a byte count"),
    ]:
        with pytest.raises(vb.ProtocolError, match=why):
            decode(bad, length)
    doc = json.loads(body[:n])
    doc["inputs"][0]["data"] = [0]
    head = json.dumps(doc).encode()
    with pytest.raises(vb.ProtocolError, match="both 'data' and 'binary_data_size'"):
        decode(head + body[n:], len(head))
    del doc["inputs"][0]["data"]
    doc["inputs"][0]["parameters"]["binary_data_size"] = 5
    head = json.dumps(doc).encode()
    with pytest.raises(vb.ProtocolError, match="needs 8 bytes, got 5"):
        decode(head + body[n : n + 5], len(head))
    with pytest.raises(vb.ProtocolError, match="runs past"):
        vb.tensor_from_bytes(struct.pack("<I", 10) + b"short", "BYTES", [1])
    with pytest.raises(vb.ProtocolError, match="reports an error: boom"):
        vb.decode_response(b'{"error":"boom"}', {})


def test_uint8_requests_cost_their_pixels():
    for shape in [(1, 28, 28), (3, 32, 32)]:
        x = RNG.integers(0, 256, (100, *shape), dtype=np.uint8)
        body, _ = vb.encode_request([("input", x, "UINT8")], ["logits"], request_id="backmark-12")
        assert x.nbytes < len(body) <= 1.01 * x.nbytes  # ~190 bytes of JSON on 78,400 or 307,200


# -- a real server --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28)).eval()
    with BackgroundServer(V2App(TorchTarget(model), name="m")) as srv:
        yield srv.url, model


def post(url, body, headers=None):
    client = HttpClient(RemoteOptions(retries=0, timeout=10))
    return client.request(
        "POST", url + "/v2/models/m/infer", body, lambda a: a, headers=headers, content_type="application/octet-stream"
    )


def test_binary_and_json_requests_get_the_same_answer(server):
    url, model = server
    x = RNG.integers(0, 256, (5, 1, 28, 28), dtype=np.uint8)
    with torch.no_grad():
        expected = model(torch.from_numpy(x).float() / 255).numpy()
    meta = json.loads(HttpClient(RemoteOptions()).request("GET", url + "/v2", None, lambda a: a).body)
    assert vb.supports_binary(meta)
    answers = []
    for x_in, dt in [(x, "UINT8"), (x.astype(np.float32) / np.float32(255), "FP32")]:
        for binary_in in (True, False):
            for binary_out in (True, False):
                body, headers = vb.encode_request(
                    [("input", x_in, dt)],
                    ["logits", "labels"],
                    binary_inputs=binary_in,
                    binary_outputs=binary_out,
                    request_id="q",
                )
                answer = post(url, body, {k: v for k, v in headers.items() if k != "Content-Type"})
                assert (vb.HEADER_LENGTH.lower() in answer.headers) == binary_out
                assert answer.content_type == (vb.OCTET_STREAM if binary_out else "application/json")
                answers.append(vb.decode_response(answer.body, answer.headers))
    for got in answers:  # every encoding, the same numbers bit for bit
        assert got["logits"].dtype == np.float32 and np.array_equal(got["logits"], answers[0]["logits"])
        assert np.array_equal(got["labels"], expected.argmax(1))
    assert np.allclose(answers[0]["logits"], expected, atol=1e-5)


def test_server_refuses_malformed_binary_bodies_with_400(server):
    url, _ = server
    body, headers = vb.encode_request([("input", np.zeros((1, 1, 28, 28), np.uint8), "UINT8")], ["logits"])
    n = int(headers[vb.HEADER_LENGTH])
    for bad, length, why in [
        (body, None, "not valid JSON"),  # binary data without its header length
        (body, "abc", "not a byte count"),
        (body, len(body) + 9, "more than the body"),
        (body + b"\x00\x00", n, "2 bytes follow the last binary tensor"),
        (body[:-10], n, "runs past the body's end"),
        (body[:n].replace(b'"binary_data_size":784', b'"binary_data_size":700') + body[n : n + 700], n, "needs 784 bytes"),
        (body[:n].replace(b'"UINT8"', b'"BOOL"') + body[n:], n - 1, "unsupported datatype BOOL"),
    ]:
        with pytest.raises(RemoteError, match=f"HTTP 400 Bad Request: .*{why}"):
            post(url, bad, None if length is None else {vb.HEADER_LENGTH: str(length)})


def test_client_uses_binary_when_listed_and_json_where_it_must(server):
    url, model = server
    images = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    expected = TorchTarget(model).predict(images)
    for binary, encoding in [("auto", "binary"), ("on", "binary"), ("off", "json")]:
        target = open_remote(url + "/v2/models/m", options=RemoteOptions(batch_size=16, binary=binary))
        assert torch.equal(target.predict(images), expected)
        assert target.report()["encoding"] == encoding

    class Bf16App(V2App):  # a model declaring BF16 input: binary data only (JSON has no BF16 numbers)
        def metadata(self):
            meta = super().metadata()
            meta["inputs"][0]["datatype"] = "BF16"
            return meta

    with BackgroundServer(Bf16App(TorchTarget(model), name="m")) as srv:
        target = open_remote(srv.url + "/v2/models/m")
        assert target.report()["encoding"] == "binary"
        x = (images.float() / 255).bfloat16().float()  # the values the BF16 model is given
        assert torch.equal(target.predict(images), model(x).argmax(1))
        with pytest.raises(RemoteError, match="BF16 travels as binary data only"):
            open_remote(srv.url + "/v2/models/m", options=RemoteOptions(binary="off", retries=0)).predict(images)
