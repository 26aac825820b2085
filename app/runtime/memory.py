"""Giving memory back to the operating system after a large request.

glibc keeps freed heap memory for reuse, so one request that decoded a megabyte of JSON or built a large
response leaves the process that much larger for good; `malloc_trim` returns the free part. A no-op where
the C library has no such call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def trim() -> None:
    """Return the heap's free memory to the operating system (glibc), if this libc can."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
