"""Mutations of backmark's JSON files, for the property tests (tests/test_signed_files.py) and the
fuzz run (benchmarks/fuzz_files.py): ``mutate(raw, rng, style=...)`` returns (bytes, what was done).

Two families. JSON level: parse the file, change / add / delete / duplicate a field, change a
value's type, or re-encode a number or a string, then write it back the way backmark writes
that file (so the canonical-form check is not the only barrier). Byte level: flip, insert,
delete, truncate, and for JSON Lines drop, repeat or swap lines. Values that json.dumps cannot
write (a 5000-digit integer, 5000 levels of nesting) go in as raw text through placeholders.
"""
from __future__ import annotations

import json
import random
from typing import Any

STYLES = ("pretty", "lines")  # dumps_json documents | JSON Lines of canonical objects
_RAW = "\x00RAW{}\x00"  # placeholder strings replaced by raw text after encoding


def encode(obj: Any, style: str) -> bytes:
    """Like backmark's writers, but writing NaN, Infinity and lone surrogates too (a forger's file can hold them)."""
    if style == "pretty":
        text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    else:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass")


class _Raw:
    def __init__(self):
        self.texts: list[str] = []

    def __call__(self, text: str) -> str:
        self.texts.append(text)
        return _RAW.format(len(self.texts) - 1)

    def fill(self, data: bytes) -> bytes:
        for i, text in enumerate(self.texts):
            data = data.replace(json.dumps(_RAW.format(i)).encode(), text.encode())
        return data


def _nodes(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path into ``value`` (dict keys and list indices), the root included."""
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _nodes(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:50]):  # long lists (commitments): their first 50 stand for all
            out += _nodes(v, path + (i,))
    return out


def _get(value, path):
    for p in path:
        value = value[p]
    return value


def _set(root, path, new):
    if not path:
        return new
    _get(root, path[:-1])[path[-1]] = new
    return root


def _evil(rng: random.Random, raw: _Raw, old: Any) -> Any:
    """A value a forger might put in a field: edge numbers, other types, near-miss strings, deep nesting."""
    choices = [
        0, -1, 1, 2, 255, 2**31, 2**53, 2**63, 10**30, -(2**53) - 1, 1.0, 0.5, -0.0, 1e308, 5e-324,
        float("nan"), float("inf"), float("-inf"), True, False, None, "", "x", "é", "\ud800", "<script>alert(1)</script>",
        "0" * 64, "f" * 128, "A" * 100_000, [], [0], [[]], {}, {"a": 1},
        raw("1" + "0" * 5000), raw("[" * 5000 + "]" * 5000), raw('{"a":' * 40 + "1" + "}" * 40), raw("1e400"), raw("-1e-400"),
    ]
    if isinstance(old, str):
        choices += [old.upper(), old + "0", old[:-1], old[::-1], " " + old, old + "\n", json.dumps(old)]
    if isinstance(old, bool):
        choices += [int(old), str(old).lower()]
    elif isinstance(old, int):
        choices += [old + 1, old - 1, -old, float(old), str(old), raw(f"{old}.0"), raw(f"{old}e0"), bool(old % 2)]
    elif isinstance(old, float):
        choices += [old * 2, -old, int(old), str(old), raw(repr(old) + "0"), raw(f"{old:.20e}")]
    if isinstance(old, list):
        choices += [old[:-1], old + old[-1:], old[::-1], {"0": old}, old * 2] if old else [[None]]
    if isinstance(old, dict):
        choices += [[old], list(old), {**old, "extra": 1}]
    return rng.choice(choices)


def _json_mutation(doc: Any, rng: random.Random, style: str) -> tuple[bytes, str]:
    raw = _Raw()
    op = rng.choice(["change", "change", "delete", "add", "duplicate", "retype", "reencode", "respell"])
    # The op first, then a node it applies to: each op is tried as often as the others, wherever it can go.
    fits = {"delete": lambda p, v: bool(p), "add": lambda p, v: isinstance(v, (dict, list)),
            "duplicate": lambda p, v: isinstance(v, dict) and bool(v),
            "reencode": lambda p, v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "respell": lambda p, v: isinstance(v, str) and bool(v)}.get(op, lambda p, v: True)
    nodes = [p for p in _nodes(doc) if fits(p, _get(doc, p))] or [()]
    # Shallow nodes as often as deep ones: an unsigned field beside the body matters as much as one inside it.
    depth = rng.choice(sorted({len(p) for p in nodes}))
    path = rng.choice([p for p in nodes if len(p) == depth])
    target = _get(doc, path)
    if op == "delete" and path:
        parent = _get(doc, path[:-1])
        del parent[path[-1]]
    elif op == "add" and isinstance(target, (dict, list)):
        if isinstance(target, dict):
            name = rng.choice(["extra", "x", "format", "signature", "body", "version", "Body"]) + rng.choice(["", "_"])
            target[name] = _evil(rng, raw, None)
        else:
            target.insert(rng.randint(0, len(target)), _evil(rng, raw, target[0] if target else None))
    elif op == "duplicate" and isinstance(target, dict) and target:
        # A key given twice; its first value (a reader that keeps the first sees this one) differs or not.
        key = rng.choice(sorted(target))
        marker = rng.choice(["\x00", "\U0010ffff"]) + "dup"  # sorts before or after every key: first or last copy
        target[marker] = rng.choice([target[key], _evil(rng, raw, target[key])])
        data, name = raw.fill(encode(doc, style)), json.dumps(key).encode()
        for spelling in (json.dumps(marker).encode(), json.dumps(marker, ensure_ascii=False).encode()):
            data = data.replace(spelling, name)
        return data, f"duplicate {path + (key,)}"
    elif op == "reencode" and isinstance(target, (int, float)) and not isinstance(target, bool):
        spellings = [f"{target}.0", f"{target}e0", f"{target}E+0", f"0{target}", f"{target:.17g}", f"{float(target)!r}",
                     f"{target} "]
        doc = _set(doc, path, raw(rng.choice(spellings)))
    elif op == "respell" and isinstance(target, str) and target:
        i = rng.randrange(len(target))  # the same string, one character spelt as an escape
        c = target[i]
        esc = f"\\u{ord(c):04x}" if c.isascii() else json.dumps(c)[1:-1]
        doc = _set(doc, path, raw('"' + json.dumps(target[:i])[1:-1] + esc + json.dumps(target[i + 1:])[1:-1] + '"'))
    elif op == "retype":
        doc = _set(doc, path, rng.choice([str(target), [target], {"value": target}, None if target is not None else 0]))
    else:
        op = "change"
        doc = _set(doc, path, _evil(rng, raw, target))
    return raw.fill(encode(doc, style)), f"{op} {path}"


def _byte_mutation(data: bytes, rng: random.Random, style: str) -> tuple[bytes, str]:
    n = len(data)
    ops = ["flip", "flip", "insert", "delete", "truncate"]
    ops += ["drop-line", "repeat-line", "swap-lines"] if style == "lines" else []
    op = rng.choice(ops)
    i = rng.randrange(n)
    if op == "flip":
        v = rng.choice([rng.randrange(256), ord(rng.choice('{}[],:"\\ 0189aefAE-+.nN\n'))])
        return data[:i] + bytes([v if v != data[i] else v ^ 1]) + data[i + 1:], f"flip byte {i}"
    if op == "insert":
        junk = rng.choice([b" ", b"\n", b",", b"0", b"-", b'"', b"\\", b"}", b"]", b"\x00", b"\xff", b"\xef\xbb\xbf", b"NaN",
                           b'"a":1,'])
        return data[:i] + junk + data[i:], f"insert {junk!r} at {i}"
    if op == "delete":
        j = min(n, i + rng.choice([1, 1, 2, 8, 64]))
        return data[:i] + data[j:], f"delete bytes {i}..{j}"
    if op == "truncate":
        return data[:i], f"truncate at {i}"
    lines = data.split(b"\n")[:-1]
    a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
    if op == "drop-line" and len(lines) > 1:
        del lines[a]
    elif op == "repeat-line":
        lines.insert(a, lines[b])
    else:
        lines[a], lines[b] = lines[b], lines[a]
    return b"".join(line + b"\n" for line in lines), f"{op} {a} {b}"


def mutate(data: bytes, rng: random.Random, *, style: str, family: str | None = None) -> tuple[bytes, str]:
    """One mutation of a valid backmark file ``data`` (``style``: "pretty" or "lines"); ``family``:
    "json", "bytes" or None (either)."""
    family = family or rng.choice(["json", "bytes"])
    if family == "bytes":
        return _byte_mutation(data, rng, style)
    if style == "pretty":
        return _json_mutation(json.loads(data), rng, style)
    lines = data.split(b"\n")[:-1]
    k = rng.randrange(len(lines))
    new, what = _json_mutation(json.loads(lines[k]), rng, "lines")
    return b"\n".join(lines[:k] + [new] + lines[k + 1:]) + b"\n", f"line {k + 1}: {what}"


__all__ = ["STYLES", "encode", "mutate"]
