"""Temporary host buffers kept between calls, so that a layer called again reuses its own.

A call's temporaries (the columns of the stacked and im2col paths, a matmul's
result before it is laid out) came from ``malloc`` afresh on every call. What
``malloc`` hands back is often memory that the previous call's matmul had just
written on the BLAS's other thread, so the first writes to it pull each cache
line over from the other core. Measured on the 2-core benchmark machine (ResNet-18
layer3.0.conv2, N4 256@6x6, 3x3: 1.3 MiB of columns): the gather took 0.068 ms
into a buffer kept across calls, 0.16-0.18 ms into a fresh one after a
convolution, and in some processes 0.80 ms; with the buffer kept, the whole
forward took 1.09 ms instead of 1.09-1.83. glibc also gave some calls new pages to
zero, 114 faults a call on a U-Net layer (docs/performance.md, sixteenth session).

So the paths take their temporaries from here: :func:`empty` returns a view of a
cached buffer that nothing else refers to, or of a new one that it keeps. A buffer
is free when the cache holds the only reference to it (every NumPy view refers to
the array that owns its memory), so nothing still in use, or handed to a caller,
is ever written: reuse needs no release call, and a result that escaped by mistake
only stays out of the pool. The cache keeps at most :func:`get_scratch_cache` bytes
(``NPCONV_SCRATCH_CACHE_MB``, default 64); :func:`set_scratch_cache` changes it,
and 0 drops every buffer. Device arrays are left to their own pools (CuPy's), and
buffers below MIN_BYTES to ``malloc``'s bins. Large results handed to callers
(``im2col``'s columns) may come from here too, through :func:`result`. Where
reference counts do not tell a free buffer (an interpreter other than CPython, or one
without the GIL) nothing is cached.
"""

from __future__ import annotations

import math
import os
import sys
import sysconfig
import threading
from typing import Any

from . import backend, workspace
from .geometry import as_int

DEFAULT_CACHE_MB = 64
# Smaller temporaries come from malloc's bins, whose reuse is cheap enough: a cached
# request costs about 1.7 us (a smaller one 0.7), which tiny calls would feel.
MIN_BYTES = 64 * 2**10


def _from_environment() -> int:
    return workspace.mib_from_environment("NPCONV_SCRATCH_CACHE_MB", DEFAULT_CACHE_MB, zero=True)


def _refs(buffers: list[Any], index: int) -> int:
    return sys.getrefcount(buffers[index])


def _counts_refs() -> tuple[bool, int]:
    """Whether reference counts tell a free buffer here, and the count of one that
    only the cache's list refers to (measured, not assumed)."""
    if sys.implementation.name != "cpython" or sysconfig.get_config_var("Py_GIL_DISABLED"):
        return False, 0
    return True, _refs([object()], 0)


_USABLE, _FREE_REFS = _counts_refs()
_lock = threading.Lock()
# (thread, bytes) -> buffers. Each thread gets its own back (a worker's scratch stays
# in its core's cache); the dict's order is the keys' last use, oldest first.
_pool: dict[tuple[int, int], list[Any]] = {}
_held = 0  # bytes in _pool
_limit = _from_environment()


def get_scratch_cache() -> int:
    """Bytes of temporary buffers npconv may keep between calls for reuse.

    Examples
    --------
    >>> import npconv
    >>> npconv.get_scratch_cache() >= 0
    True
    """
    return _limit


def set_scratch_cache(nbytes: int) -> None:
    """Keep up to ``nbytes`` bytes of temporary buffers between calls (0: none).

    A layer called again then writes its temporaries into memory it used before,
    not into whatever ``malloc`` hands back (see docs/performance.md). Lowering the
    limit drops the least recently used buffers, those no call is using first.

    Examples
    --------
    >>> import npconv
    >>> old = npconv.get_scratch_cache()
    >>> npconv.set_scratch_cache(0)  # drop every cached buffer
    >>> npconv.get_scratch_cache()
    0
    >>> npconv.set_scratch_cache(old)
    """
    global _limit
    value = as_int(nbytes, "nbytes")
    if value < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes!r}")
    with _lock:
        _limit = value
        _evict(0)
        _evict(0, busy=True)


def cached_bytes() -> int:
    """Bytes the cache holds now, buffers in use included."""
    return _held


def _evict(room: int, busy: bool = False) -> bool:
    """Drop free buffers, least recently used first, until ``room`` more bytes fit the
    limit; with ``busy``, buffers in use too (they leave the cache, not their users).
    Whether they fit."""
    global _held
    for key in list(_pool):
        bucket = _pool[key]
        index = 0
        while _held + room > _limit and index < len(bucket):
            if busy or _refs(bucket, index) <= _FREE_REFS:
                _held -= bucket.pop(index).nbytes
            else:
                index += 1
        if not bucket:
            del _pool[key]
        if _held + room <= _limit:
            return True
    return _held + room <= _limit


def _free_index(bucket: list[Any]) -> int:
    for index in range(len(bucket)):  # no loop variable: it would hold a reference
        if _refs(bucket, index) <= _FREE_REFS:
            return index
    return -1


def empty(xp: Any, shape: tuple[int, ...], dtype: Any, least: int = MIN_BYTES) -> Any:
    """``xp.empty(shape, dtype)`` for a temporary, in a cached buffer where one is free
    (from ``least`` bytes; smaller arrays are new).

    Results handed to a caller go through :func:`result` instead, which takes only
    large ones from here: a buffer referred to is never reused, so a result is safe,
    but it stays out of reuse for as long as the caller holds it.
    """
    global _held
    if not (_USABLE and backend.on_host(xp)):
        return xp.empty(shape, dtype=dtype)
    itemsize = getattr(dtype, "itemsize", None)
    if not isinstance(itemsize, int):  # a type such as numpy.float32, not a dtype
        dtype = backend.numpy_dtype(dtype)
        itemsize = dtype.itemsize
    nbytes = math.prod(shape) * itemsize
    if nbytes < least or nbytes > _limit:
        return xp.empty(shape, dtype=dtype)
    key = (threading.get_ident(), nbytes)
    with _lock:
        bucket = _pool.pop(key, [])  # put back last: the most recently used key
        index = _free_index(bucket)
        if index >= 0:
            buffer = bucket[index]
        else:
            buffer = xp.empty(nbytes, dtype=xp.uint8)
            if _evict(nbytes):
                bucket.append(buffer)
                _held += nbytes
        if bucket:
            _pool[key] = bucket
    return xp.ndarray(shape, dtype=dtype, buffer=buffer)


# Results handed to the caller from at least this many bytes come from the cache too:
# glibc's malloc maps a block this large afresh on every call (its dynamic mmap
# threshold stops rising at 32 MiB on 64-bit), and the kernel zeroes each new page
# first. The float64 stencil layer's im2col, 36 MiB of columns, took 4.6-5.1 ms into
# fresh memory (530 faults a call) and 1.8-2.0 into memory used before (docs/
# performance.md, twentieth session). Smaller blocks malloc reuses by itself.
RESULT_MIN_BYTES = 32 * 2**20


def result(xp: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """``xp.empty(shape, dtype)`` for a result handed to the caller: from a cached
    buffer that no one refers to any more when it is at least RESULT_MIN_BYTES
    (a view of it; the buffer stays out of reuse for as long as the caller, or any
    view, holds it), else a new array."""
    return empty(xp, shape, dtype, least=RESULT_MIN_BYTES)


def copy(xp: Any, a: Any) -> Any:
    """``xp.ascontiguousarray(a)`` for a temporary (:func:`empty`, then filled)."""
    out = empty(xp, a.shape, a.dtype)
    out[...] = a
    return out


def zeros(xp: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """``xp.zeros(shape, dtype)`` for a temporary (:func:`empty`, then zeroed)."""
    out = empty(xp, shape, dtype)
    out.fill(0)
    return out


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # a fork taken while another thread held it


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
