"""Resumable training state: optimizer, epoch, history and config for ``--resume``.

A ``torch.save`` of plain tensors and containers, read back with ``weights_only=True``
(no pickled code), written atomically after every epoch by rank 0.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from ..errors import InvalidFile
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
