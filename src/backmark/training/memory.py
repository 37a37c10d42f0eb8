"""Keep the memory a training step frees for the next step, instead of handing it back to the OS.

A CPU training step allocates and frees the same activation tensors at every step. glibc's
malloc serves a block above its mmap threshold (which it never raises past 32 MiB) with fresh
pages from ``mmap`` and unmaps them on ``free``, so every step faults every large activation in
again, page by page: for cifar-fast at batch 260, 30,460 minor page faults a step against 1,664
kept, and 0.82x the step time kept (docs/results/throughput.md, "The allocator").
:func:`keep_freed_memory` tells malloc to serve every block from its heap and to keep what is
freed there for the next step.

The setting is the whole process's, so the library never makes it on its own: the ``backmark``
command does, for every command (``BACKMARK_KEEP_FREED_MEMORY=0`` leaves malloc as it is), and
a script that trains through the library may call it once at its start. Its price: the process
holds on to its peak memory until it exits. Where the C library is not glibc (macOS, musl) it
does nothing and says so (it returns False).
"""
from __future__ import annotations

import ctypes
import os
import platform

from ..errors import BackmarkError

ENV = "BACKMARK_KEEP_FREED_MEMORY"

# mallopt(3) parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_KEEP = 1 << 62  # "never trim": free memory at the top of the heap stays there
_TOP_PAD = 64 << 20  # grow the heap 64 MiB at a time (fewer brk calls)

_kept = False


def keep_freed_memory() -> bool:
    """Make malloc keep freed memory for reuse (glibc); True where it now does, False where it cannot.

    Idempotent. Blocks already mapped are unmapped when freed, as before; every later block
    comes from the heap.
    """
    global _kept
    if _kept:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # c_int: the "never" values are clipped to the largest int
    done = all(mallopt(param, min(value, 2**31 - 1)) == 1
               for param, value in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _KEEP), (_M_TOP_PAD, _TOP_PAD)))
    _kept = done
    return done


def keeps_freed_memory() -> bool:
    """Whether :func:`keep_freed_memory` has taken effect in this process."""
    return _kept


def keep_freed_memory_unless_told(environ=os.environ) -> bool:
    """The command line's rule: keep freed memory unless ``BACKMARK_KEEP_FREED_MEMORY=0``.

    Any value other than 0 or 1 is refused (BackmarkError), never guessed at.
    """
    value = environ.get(ENV, "1").strip()
    if value not in ("0", "1"):
        raise BackmarkError(f"{ENV}={value!r}: set it to 1 (keep freed memory for reuse, the default) or 0 (leave malloc as it is)")
    return keep_freed_memory() if value == "1" else False
