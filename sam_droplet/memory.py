"""glibc's malloc, tuned for a process that segments large images: fewer arenas, and the heap a
segmentation freed handed back to the system. Both are no-ops where the C library is not glibc."""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

__all__ = ["limit_malloc_arenas", "return_freed_memory"]

_M_ARENA_MAX = -8  # mallopt's parameter number (malloc.h)


@functools.cache
def _glibc() -> Any:
    """The C library when it is glibc (ctypes), else None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 -- musl has neither malloc_trim nor mallopt's arenas
    except (OSError, AttributeError):
        return None
    return libc


def limit_malloc_arenas(arenas: int) -> None:
    """At most ``arenas`` malloc arenas in this process (MALLOC_ARENA_MAX in the environment wins).

    glibc gives each thread that allocates its own arena and keeps what is freed in it: a server
    running each segmentation on another thread grew by each thread's share (docs/deployment.md).
    """
    libc = _glibc()
    if libc is not None and not os.environ.get("MALLOC_ARENA_MAX"):
        libc.mallopt(_M_ARENA_MAX, arenas)


def return_freed_memory() -> None:
    """Hand the pages malloc keeps after freeing large arrays back to the system.

    glibc keeps freed heap memory for reuse, so after one stage the next one's peak adds to what
    the first one freed: on the 3600x3600 packed monolayer the classical detector left 290 MB
    resident of which it used 50, and the droplet model's peak came on top (docs/detectors.md,
    "Memory").
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
