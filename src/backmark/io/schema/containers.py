"""The schema language's containers and combinators (see backmark.io.schema)."""
from __future__ import annotations

from collections.abc import Callable, Mapping

from ...errors import InvalidFile
from .scalars import DEFAULT_MAX_LEN, Const, Float, Int, Schema, Str, _at, _field, show


class Nullable(Schema):
    """null, or what ``inner`` takes."""

    def __init__(self, inner: Schema):
        self.inner = inner
        self.kind = inner.kind

    def describe(self) -> str:
        return f"{self.inner.describe()} or null"

    def validate(self, value, path=""):
        if value is not None:
            self.inner.validate(value, path)


class List(Schema):
    """A list of ``min_len``..``max_len`` items, each taken by ``item``."""

    kind = "list"

    def __init__(self, item: Schema, *, min_len: int = 0, max_len: int = 10_000_000):
        self.item, self.min_len, self.max_len = item, min_len, max_len

    def describe(self) -> str:
        n = f"{self.min_len}" if self.min_len == self.max_len else f"{self.min_len}..{self.max_len}"
        return f"a list of {n} items"

    def validate(self, value, path=""):
        if not isinstance(value, list) or not self.min_len <= len(value) <= self.max_len:
            self.fail(value, path)
        for i, v in enumerate(value):
            self.item.validate(v, f"{path}[{i}]")


class Obj(Schema):
    """An object with exactly the ``fields`` (each required) and any of the ``optional`` ones, nothing else.

    ``check(value)`` runs after the fields validate and returns None or a one-line problem
    (for what crosses fields: a list whose length another field gives).
    """

    kind = "object"

    def __init__(self, fields: Mapping[str, Schema], optional: Mapping[str, Schema] | None = None,
                 *, check: Callable[[dict], str | None] | None = None):
        self.fields, self.optional, self.check = dict(fields), dict(optional or {}), check

    def describe(self) -> str:
        return "an object"

    def validate(self, value, path=""):
        if type(value) is not dict:
            self.fail(value, path)
        for name in value:
            if not isinstance(name, str):
                raise InvalidFile(f"{_at(path)}field name {show(name)} is not a string")
            if name not in self.fields and name not in self.optional:
                raise InvalidFile(f"{_at(path)}unknown field {show(name)}")
        for name, schema in self.fields.items():
            if name not in value:
                raise InvalidFile(f"{_at(path)}missing field {name!r}")
            schema.validate(value[name], _field(path, name))
        for name, schema in self.optional.items():
            if name in value:
                schema.validate(value[name], _field(path, name))
        problem = self.check(value) if self.check else None
        if problem:
            raise InvalidFile(f"{_at(path)}{problem}")


class OneOf(Schema):
    """The first alternative that takes the value. When none does, the error is the one of the
    only alternative of the value's JSON type (it says what is wrong inside), else a summary."""

    def __init__(self, *alternatives: Schema):
        self.alternatives = alternatives

    def describe(self) -> str:
        return " or ".join(a.describe() for a in self.alternatives)

    def validate(self, value, path=""):
        errors = []
        for alt in self.alternatives:
            try:
                alt.validate(value, path)
                return
            except InvalidFile as e:
                errors.append((alt, e))
        same = [e for alt, e in errors if alt.kind == _json_kind(value)]
        if len(same) == 1:
            raise same[0]
        self.fail(value, path)


def _json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {str: "string", int: "integer", float: "number", dict: "object", list: "list"}.get(type(value), "any")


class Tagged(Schema):
    """An object whose ``tag`` field (a string) names which case's fields it has, e.g. the
    record kinds of a log: ``Tagged("kind", {"open": Obj({...}), ...}, common={"seq": Int(0)})``."""

    kind = "object"

    def __init__(self, tag: str, cases: Mapping[str, Obj], *, common: Mapping[str, Schema] | None = None):
        self.tag = tag
        self.cases = {name: Obj({**(common or {}), tag: Const(name), **case.fields}, case.optional, check=case.check)
                      for name, case in cases.items()}
        self.names = Str(choices=tuple(self.cases))

    def describe(self) -> str:
        return f"an object with {self.tag!r} one of {', '.join(map(repr, self.cases))}"

    def validate(self, value, path=""):
        if type(value) is not dict:
            self.fail(value, path)
        if self.tag not in value:
            raise InvalidFile(f"{_at(path)}missing field {self.tag!r}")
        self.names.validate(value[self.tag], _field(path, self.tag))
        self.cases[value[self.tag]].validate(value, path)


class AnyJson(Schema):
    """Free-form metadata (e.g. where trigger images came from): any JSON value, still strict:
    string keys, finite floats, safe integers, UTF-8 strings, at most ``max_depth`` levels."""

    def __init__(self, *, max_depth: int = 8, max_len: int = DEFAULT_MAX_LEN):
        self.max_depth, self.string = max_depth, Str(max_len=max_len)

    def describe(self) -> str:
        return f"JSON metadata nested at most {self.max_depth} deep"

    def validate(self, value, path="", depth: int = 0):
        if depth > self.max_depth:
            raise InvalidFile(f"{_at(path)}nested deeper than {self.max_depth} levels")
        if value is None or isinstance(value, bool):
            return
        if type(value) is int:
            return Int().validate(value, path)
        if type(value) is float:
            return Float().validate(value, path)
        if type(value) is str:
            return self.string.validate(value, path)
        if type(value) is list:
            for i, v in enumerate(value):
                self.validate(v, f"{path}[{i}]", depth + 1)
            return
        if type(value) is dict:
            for k, v in value.items():
                if not isinstance(k, str):
                    raise InvalidFile(f"{_at(path)}field name {show(k)} is not a string")
                self.string.validate(k, _field(path, "(a field name)"))
                self.validate(v, _field(path, k), depth + 1)
            return
        self.fail(value, path, "a JSON value")


__all__ = ["AnyJson", "List", "Nullable", "Obj", "OneOf", "Tagged"]
