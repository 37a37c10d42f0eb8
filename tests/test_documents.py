"""The strict reader (io.documents) and the schema language (io.schema): each refusal, one line."""
import json
import math

import pytest

from backmark.errors import InvalidFile, TamperedRecord
from backmark.io.documents import (
    MAX_DEPTH,
    document_format,
    dumps_json,
    load_document,
    load_json_lines,
    parse_json_strict,
    read_json_document,
)
from backmark.io.schema import (
    MAX_SAFE_INT,
    AnyJson,
    Base64,
    Bool,
    Const,
    Float,
    Hex,
    Int,
    List,
    Nullable,
    Obj,
    OneOf,
    Str,
    Tagged,
    Timestamp,
)


def refused(raw: bytes) -> str:
    with pytest.raises(InvalidFile) as e:
        parse_json_strict(raw, where="f.json")
    msg = str(e.value)
    assert msg.startswith("f.json: ") and "\n" not in msg
    return msg


# -- the parser ------------------------------------------------------------------------

def test_plain_json_parses_as_json_does():
    raw = b'{"a": [1, -2, 0.5, 1e-300, true, null, "\\u00e9\\ud83d\\ude00"], "b": {"c": {}}}\n'
    assert parse_json_strict(raw, where="f") == json.loads(raw)
    assert parse_json_strict(b"9007199254740991", where="f") == MAX_SAFE_INT


@pytest.mark.parametrize("raw, why", [
    (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
    (b'{"a": 1, "a": 1}', "duplicate key 'a'"),  # even with the same value: not what backmark writes
    (b'{"x": [{"b": {"k": 0, "k": 1}}]}', "duplicate key 'k'"),  # at any depth
    (b'[NaN]', "NaN is not a JSON number"),
    (b'[Infinity]', "Infinity is not a JSON number"),
    (b'{"p": -Infinity}', "-Infinity is not a JSON number"),
    (b'[1e400]', "overflows a double"),
    (b'[-1e400]', "overflows a double"),
    (b'[1e-400]', "underflows to 0"),
    (b'[9007199254740992]', "outside +-(2^53 - 1)"),
    (b'[-9007199254740992]', "outside +-(2^53 - 1)"),
    (b'[' + b'7' * 5000 + b']', "outside +-(2^53 - 1)"),  # past Python's 4300-digit limit: no ValueError
    (b'[0.' + b'1' * 40 + b']', "more digits than a double holds"),
    (b'[1] [2]', "trailing data"),
    (b'{"a": 1}x', "trailing data"),
    (b'\xef\xbb\xbf{}', "byte-order mark"),
    (b'{"a": "\xff"}', "not UTF-8"),
    (b'{"a": "\xed\xa0\x80"}', "not UTF-8"),  # a surrogate written as UTF-8 bytes
    (b'["\\ud800"]', "lone surrogate"),
    (b'{"a": "\\udc00x"}', "lone surrogate"),
    (b'{"a": 1', "not valid JSON"),
    (b'', "not valid JSON"),
    (b"{'a': 1}", "not valid JSON"),
    (b'{"a": "\x01"}', "not valid JSON"),  # raw control character
])
def test_refusals(raw, why):
    assert why in refused(raw)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 100_000])
def test_deep_nesting_is_refused_never_a_recursion_error(depth):
    assert f"deeper than {MAX_DEPTH}" in refused(b"[" * depth + b"]" * depth)
    assert f"deeper than {MAX_DEPTH}" in refused(b'{"a":' * depth + b"1" + b"}" * depth)
    assert f"deeper than {MAX_DEPTH}" in refused(b"[" * depth)  # unterminated too


def test_nesting_up_to_the_limit_and_brackets_inside_strings():
    assert parse_json_strict(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, where="f") is not None
    assert parse_json_strict(b'["' + b"[" * 5000 + b'\\"{"]', where="f") == ["[" * 5000 + '"{']


# -- the schema language -----------------------------------------------------------------

TASK = Obj({"input_shape": List(Int(1, 65535), min_len=3, max_len=3), "num_classes": Int(2, 100)})


def invalid(schema, value, path="body.task") -> str:
    with pytest.raises(InvalidFile) as e:
        schema.validate(value, path)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_errors_name_the_json_path():
    good = {"input_shape": [1, 28, 28], "num_classes": 10}
    TASK.validate(good, "body.task")
    expected = "body.task.input_shape[1]: expected an integer in 1..65535, got 1.5"
    assert invalid(TASK, {**good, "input_shape": [1, 1.5, 28]}) == expected
    assert invalid(TASK, {**good, "extra": 1}) == "body.task: unknown field 'extra'"
    assert invalid(TASK, {"input_shape": [1, 2, 3]}) == "body.task: missing field 'num_classes'"
    assert invalid(TASK, {**good, "input_shape": [1, 2]}).startswith("body.task.input_shape: expected a list of 3 items")
    assert invalid(TASK, [good]) == "body.task: expected an object, got a list"


@pytest.mark.parametrize("schema, good, bad", [
    (Int(0, 10), [0, 10], [True, False, 1.0, 11, -1, "1", None]),
    (Float(0, 1, exclusive=True), [0.5, 1e-300], [0.0, 1.0, 1, True, math.nan, math.inf, "0.5"]),
    (Float(), [-1e308, 0.0], [math.nan, -math.inf, 3]),
    (Bool(), [True, False], [0, 1, "true", None]),
    (Const(1), [1], [1.0, True, "1"]),
    (Const("a"), ["a"], ["A", "a ", None]),
    (Str(max_len=3), ["", "abc", "é"], ["abcd", 1, None, "\ud800"]),
    (Str(choices=("sha256", "pedersen")), ["sha256"], ["SHA256", "md5"]),
    (Str(pattern="[a-z]+"), ["abc"], ["abc1", ""]),
    (Hex(2), ["00ff"], ["00FF", "0ff", "00ff00", "zzzz", "0x00"]),
    (Hex(), ["00", "abcd"], ["0", "", "ABCD"]),
    (Base64(), ["", "QQ==", "QUI=", "QUJD"], ["QQ=", "QQ", "QR==", "Q Q=", "QQ==\n", "-_=="]),
    (Timestamp(), ["2026-01-01T00:00:00Z"], ["2026-02-30T00:00:00Z", "2026-01-01T00:00:00+00:00", "2026-01-01 00:00:00Z",
                                             "2026-01-01T00:00:00.000Z", "2026-1-01T00:00:00Z"]),
    (Timestamp(milliseconds=True), ["2023-11-14T22:13:20.250Z"], ["2023-11-14T22:13:20Z", "2023-11-14T22:13:20.25Z"]),
    (Nullable(Int(0)), [None, 0], [-1, "null"]),
    (List(Int(0), min_len=1, max_len=2), [[0], [0, 1]], [[], [0, 1, 2], [True], (0,), "01"]),
    (OneOf(Int(0), Str()), [0, "x"], [None, -1, [0]]),
    (AnyJson(max_depth=2), [None, {"a": [1, "b", 0.5]}, []], [{"a": [[[1]]]}, math.nan, 2**60, (1,), {1: 2}, {"a": b"x"}]),
])
def test_each_schema_takes_exactly_what_it_describes(schema, good, bad):
    for v in good:
        schema.validate(v, "x")
    for v in bad:
        assert invalid(schema, v, "x").startswith("x"), v


def test_obj_check_and_tagged_cases():
    pair = Obj({"n": Int(0), "items": List(Int(0))}, check=lambda v: None if len(v["items"]) == v["n"] else "n must count items")
    pair.validate({"n": 1, "items": [5]})
    assert invalid(pair, {"n": 2, "items": [5]}, "body") == "body: n must count items"
    log = Tagged("kind", {"open": Obj({"target": Str()}), "query": Obj({"images": Int(0)}, optional={"note": Str()})},
                 common={"seq": Int(0)})
    log.validate({"kind": "open", "seq": 0, "target": "t"})
    log.validate({"kind": "query", "seq": 1, "images": 3, "note": ""})
    assert "expected one of 'open', 'query'" in invalid(log, {"kind": "close", "seq": 1}, "r")
    assert invalid(log, {"kind": "query", "seq": 1, "target": "t"}, "r") == "r: unknown field 'target'"
    assert invalid(log, {"seq": 1}, "r") == "r: missing field 'kind'"


def test_oneof_blames_the_alternative_of_the_values_type():
    schema = OneOf(Obj({"a": Int(0)}), Str())
    assert invalid(schema, {"a": -1}, "v") == "v.a: expected an integer >= 0, got -1"


# -- documents and JSON Lines ---------------------------------------------------------------

DOC = Obj({"format": Const("backmark-test"), "version": Const(1), "body": Obj({"n": Int(0)})})


def write(tmp_path, data: bytes, name="d.json"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_load_document_checks_kind_version_schema_and_canonical_form(tmp_path):
    doc = {"format": "backmark-test", "version": 1, "body": {"n": 3}}
    p = write(tmp_path, dumps_json(doc))
    assert load_document(p, kind="backmark-test", versions=(1,), schema=DOC) == doc
    cases = {
        "version 1.0": dumps_json({**doc, "version": 1.0}),
        "version true": dumps_json({**doc, "version": True}),
        "version '1'": dumps_json({**doc, "version": "1"}),
        "format 'backmark-other'": dumps_json({**doc, "format": "backmark-other"}),
        "unknown field 'extra'": dumps_json({**doc, "extra": None}),
        "body.n: expected an integer >= 0": dumps_json({**doc, "body": {"n": -1}}),
        "not in canonical form": json.dumps(doc).encode(),
        "duplicate key 'n'": dumps_json(doc).replace(b'"n": 3', b'"n": 4, "n": 3'),
        "found format 'list'": b"[]\n",
    }
    for needle, data in cases.items():
        with pytest.raises(InvalidFile, match=needle.replace("(", r"\(")) as e:
            load_document(write(tmp_path, data), kind="backmark-test", versions=(1,), schema=DOC)
        assert str(e.value).startswith(str(tmp_path)) and "\n" not in str(e.value)
    with pytest.raises(TamperedRecord, match="canonical"):
        load_document(write(tmp_path, json.dumps(doc).encode()), kind="backmark-test", versions=(1,), schema=DOC,
                      tampered=TamperedRecord)
    assert load_document(write(tmp_path, json.dumps(doc).encode()), kind="backmark-test", versions=(1,), schema=DOC,
                         canonical=None) == doc
    with pytest.raises(InvalidFile, match="no such file"):
        load_document(tmp_path / "missing.json", kind="backmark-test", versions=(1,), schema=DOC)
    assert read_json_document(p, kind="backmark-test", versions=(1,)) == doc


def _line(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def test_json_lines(tmp_path):
    head = {"format": "backmark-test-log", "version": 1, "seq": 0}
    first = Obj({"format": Const("backmark-test-log"), "version": Const(1), "seq": Const(0)})
    rest = Obj({"seq": Int(1)})
    good = _line(head) + b"\n" + _line({"seq": 1}) + b"\n"

    def load(data, **kw):
        return load_json_lines(write(tmp_path, data, "l.jsonl"), kind="backmark-test-log", versions=(1,), first=first,
                               rest=rest, canonical=_line, **kw)

    assert load(good) == [head, {"seq": 1}]
    for needle, data in {
        ":2: the line was edited": good.replace(b'{"seq":1}', b'{"seq": 1}'),
        "the last line is incomplete": good[:-1],
        ":2: duplicate key 'seq'": good.replace(b'{"seq":1}', b'{"seq":1,"seq":1}'),
        ":2: seq: expected an integer >= 1, got 0": good.replace(b'{"seq":1}', b'{"seq":0}'),
        ":1: expected a backmark-test-log file": b'{"seq":1}\n',
        "an empty file": b"",
        ":3: not valid JSON": good + b"\n",
    }.items():
        with pytest.raises(InvalidFile, match=needle):
            load(data)
    with pytest.raises(TamperedRecord, match=":2: the line was edited"):
        load(good.replace(b'{"seq":1}', b'{ "seq":1}'), tampered=TamperedRecord)


def test_document_format_sniffs_documents_and_json_lines():
    assert document_format(dumps_json({"format": "backmark-x", "version": 1}), where="f") == "backmark-x"
    assert document_format(_line({"format": "backmark-log"}) + b"\n" + _line({"seq": 1}) + b"\n", where="f") == "backmark-log"
    with pytest.raises(InvalidFile, match="no format field"):
        document_format(b'{"a": 1}', where="f")
    with pytest.raises(InvalidFile, match="duplicate key"):
        document_format(b'{"format": "backmark-x", "format": "backmark-y"}', where="f")
    with pytest.raises(InvalidFile, match="not valid JSON"):
        document_format(b"-----BEGIN PRIVATE KEY-----\nabc\n", where="f")
