"""The ``backmark`` command: a thin shell over the library.

Each command parses and validates its options, calls one library function, and prints
a result (or JSON with ``--json``). Errors a user can cause become exit code 2 and one
line on stderr; ``verify`` exits 0 when ownership is verified and 1 when it is not.
Commands live in one module per area (``core`` ...), each imported below.
"""
from __future__ import annotations

from . import attack, core, evidence, extraction, public, remote  # noqa: F401  (each registers its commands on `main`)
from .app import main

__all__ = ["main"]
