"""A small declarative schema language for backmark's JSON documents.

    TASK = Obj({"input_shape": List(Int(1, 65535), min_len=3, max_len=3), "num_classes": Int(2, 2**31 - 1)})
    TASK.validate(body["task"], "body.task")
    # InvalidFile: body.task.input_shape[1]: expected an integer in 1..65535, got 1.5

Each schema accepts exactly what it describes and nothing else: an ``Obj`` refuses missing
and unknown fields, an ``Int`` refuses booleans and floats, a ``Hex`` refuses upper case,
every string must be encodable as UTF-8 (no lone surrogates). ``validate`` returns None or
raises :class:`~backmark.errors.InvalidFile` with one line naming the JSON path of the first
problem. The same schema checks a file when it is read (``documents.load_document``) and an
object built in memory before it is signed or written, so both are checked one way.
"""
from .containers import AnyJson, List, Nullable, Obj, OneOf, Tagged
from .scalars import MAX_SAFE_INT, Base64, Bool, Const, Float, Hex, Int, Schema, Str, Timestamp, show

__all__ = [
    "MAX_SAFE_INT", "AnyJson", "Base64", "Bool", "Const", "Float", "Hex", "Int", "List", "Nullable", "Obj", "OneOf",
    "Schema", "Str", "Tagged", "Timestamp", "show",
]
