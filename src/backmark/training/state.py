"""Resumable training state: optimizer, epoch, history, config and run for ``--resume``.

A ``torch.save`` of plain tensors and containers, read back with ``weights_only=True``
(no pickled code), written atomically after every epoch by rank 0. A resume continues the
run that was saved, never another: :func:`check_resume` refuses a changed config or run.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from ..errors import InvalidConfig, InvalidFile
from ..io.files import atomic_write_bytes
from .distributed import is_main_process


def save_state(path: str | os.PathLike, state: dict) -> Path:
    """Atomically save resumable training state (tensors, numbers, strings, containers); rank 0 alone writes."""
    if not is_main_process():
        return Path(path)
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write_bytes(path, buf.getvalue(), force=True)


def load_state(path: str | os.PathLike) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InvalidFile(f"{path}: no training state to resume from") from None
    except Exception as e:  # torch raises several unrelated types for a corrupt file
        raise InvalidFile(f"{path}: corrupt training state ({type(e).__name__}); delete it to start afresh") from None


def check_resume(state: dict, cfg, run: dict | None, path) -> None:
    """Raise InvalidConfig, listing every differing field, unless the saved config and run are the new ones."""
    saved = {**{f"config.{k}": v for k, v in dict(state.get("config") or {}).items()},
             **{f"run.{k}": v for k, v in dict(state.get("run") or {}).items()}}
    new = {**{f"config.{k}": v for k, v in cfg.to_dict().items()}, **{f"run.{k}": v for k, v in dict(run or {}).items()}}
    changed = [k for k in sorted(set(saved) | set(new)) if _norm(saved.get(k, _MISSING)) != _norm(new.get(k, _MISSING))]
    if changed:
        diffs = ", ".join(f"{k.split('.', 1)[1]} {_show(saved.get(k, _MISSING))} -> {_show(new.get(k, _MISSING))}"
                          for k in changed)
        raise InvalidConfig(
            f"--resume: the run saved in {path} differs from this one ({diffs}); rerun with its options, "
            "or pass --force instead of --resume to start afresh (deletes the saved state)"
        )


_MISSING = object()


def _norm(v):
    return [_norm(x) for x in v] if isinstance(v, (list, tuple)) else v  # a tuple saved comes back a list


def _show(v) -> str:
    return "(none)" if v is _MISSING else repr(v)
