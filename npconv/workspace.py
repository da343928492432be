"""Bound on the temporary memory (im2col buffers) of one convolution call.

Forward and backward never build the whole batch's im2col matrix: they walk
the batch in chunks whose buffer fits under this limit. The limit is read
from ``NPCONV_WORKSPACE_MB`` at import and changed with
:func:`set_workspace_limit`.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

from .geometry import as_int

DEFAULT_LIMIT_MB = 256
# Chunks of about this size per host thread keep the column buffer in cache;
# measured fastest (1-4 MiB within noise) on a 2-core machine, see docs/benchmarks.md.
TARGET_CHUNK_BYTES = 2 * 2**20


def mib_from_environment(name: str, default_mib: float, zero: bool = False) -> int:
    """Bytes from the environment variable ``name``, a number of MiB (``default_mib``
    where it is unset or blank); above 0, or with ``zero`` at least 0, else ValueError
    naming the variable and its value."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return int(default_mib * 2**20)
    what = "a number of MiB >= 0" if zero else "a positive number of MiB"
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be {what}, got {raw!r}") from None
    if not (mb >= 0 if zero else mb > 0):
        raise ValueError(f"{name} must be {what}, got {raw!r}")
    return int(mb * 2**20)


def _from_environment() -> int:
    return mib_from_environment("NPCONV_WORKSPACE_MB", DEFAULT_LIMIT_MB)


_limit = _from_environment()


def get_workspace_limit() -> int:
    """Current workspace limit in bytes.

    Examples
    --------
    >>> import npconv
    >>> npconv.get_workspace_limit() > 0
    True
    """
    return _limit


def set_workspace_limit(nbytes: int) -> None:
    """Bound the temporary buffer of one convolution call to ``nbytes`` bytes.

    Convolutions process the batch in chunks so that their im2col buffer stays
    below the limit; a call whose single image needs more raises
    ``MemoryError``. Smaller limits cost little speed: chunks of a few MiB are
    the fastest anyway.

    Examples
    --------
    >>> import npconv
    >>> old = npconv.get_workspace_limit()
    >>> npconv.set_workspace_limit(64 * 2**20)
    >>> npconv.get_workspace_limit()
    67108864
    >>> npconv.set_workspace_limit(old)
    """
    global _limit
    value = as_int(nbytes, "nbytes")
    if value <= 0:
        raise ValueError(f"nbytes must be positive, got {nbytes!r}")
    _limit = value


def chunk_length(
    per_item_bytes: int, count: int, what: str = "one image", target: int | None = None,
    positions: int = 0,
) -> int:
    """How many batch items to process at once (at least one, at most ``count``).

    Chunks aim at ``target`` bytes (default :data:`TARGET_CHUNK_BYTES`) and never
    exceed the workspace limit; an item that alone exceeds it raises ``MemoryError``.
    With ``positions`` (output positions per item: the length of a chunk's matmul side
    that grows with it) a chunk takes at least :data:`MIN_CHUNK_POSITIONS` of them
    where the limit allows.
    """
    if per_item_bytes > _limit:
        raise MemoryError(
            f"{what} needs a {per_item_bytes / 2**20:.1f} MiB im2col buffer, more than the "
            f"workspace limit of {_limit / 2**20:.1f} MiB; raise it with "
            f"npconv.set_workspace_limit() or NPCONV_WORKSPACE_MB"
        )
    fit = _limit // max(per_item_bytes, 1)
    if _device.get():
        target = device_target()  # one chunk up to the limit: nothing is forced to split
    want = max(1, (TARGET_CHUNK_BYTES if target is None else target) // max(per_item_bytes, 1),
               least_items(positions))
    return max(1, min(count, fit, want))


# Chunks of images hold at least this many output positions (images x positions per
# image): a chunk's matmuls contract over them (grad weight) or have them as a side
# (forward, grad input), and cutting a small-image batch per image left GEMMs of
# 9-36 positions on late ResNet layers. Single-threaded sgemm (256 x 2304 and 512 x
# 4608 weights, this machine) ran at 30-50% of its peak at 9 positions, 60-80% at 36
# and 85-90% from 72 to 1152; below 2x this many positions a call is one chunk, and
# the BLAS threads its matmuls itself.
MIN_CHUNK_POSITIONS = 128


def least_items(positions: int) -> int:
    """Items a chunk takes at least for :data:`MIN_CHUNK_POSITIONS` positions (0: none)."""
    return -(-MIN_CHUNK_POSITIONS // positions) if positions > 0 else 1


# On a device (a GPU: a backend without host threads) a chunk is a Python loop of kernel
# launches (5-20 us each), so one chunk runs up to the workspace limit and nothing is
# split for threads. A chunk's buffers stay below 2 GiB, so that no matrix side of its
# matmuls reaches 2**31 elements: cuBLAS takes its sizes as int32.
DEVICE_MAX_CHUNK_BYTES = 2**31 - 1
_device: contextvars.ContextVar[bool] = contextvars.ContextVar("npconv_device", default=False)


@contextlib.contextmanager
def device_chunks(on_device: bool) -> Iterator[None]:
    """Within this context (one public call), chunk for a device if ``on_device``: the
    targets of :func:`chunk_length` and :func:`row_chunks` become :func:`device_target`."""
    token = _device.set(bool(on_device))
    try:
        yield
    finally:
        _device.reset(token)


def device_target() -> int:
    """Bytes of one device chunk: the workspace limit, below 2 GiB."""
    return min(_limit, DEVICE_MAX_CHUNK_BYTES)


# A batch too small to fill several chunks of the target size is still cut into
# about this many (not fewer than MIN_SPLIT_BYTES each), so that host threads have
# work to share. Chunking never depends on the thread count: results do not either.
SPLIT_CHUNKS = 4
MIN_SPLIT_BYTES = 256 * 2**10


def balanced(total: int, most: int, least: int = 1) -> int:
    """A part size of at most ``most`` that cuts ``total`` into about equal parts, their
    count rounded up to an even number (a multiple of SPLIT_CHUNKS above it), so that 2
    or 4 threads get equal shares, unless that makes parts smaller than ``least``;
    chunks never depend on the thread count itself. Nothing to cut (``total`` <= 0)
    gives ``most`` (at least one)."""
    if total <= 0:
        return max(1, most)
    parts = -(-total // max(1, most))
    if parts > 1:
        step = SPLIT_CHUNKS if parts > SPLIT_CHUNKS else 2
        even = min(total, -(-parts // step) * step)
        if -(-total // even) >= least:
            parts = even
    return -(-total // parts)


def row_chunks(per_row_bytes: int, rows: int, count: int, what: str = "one image",
               target: int | None = None, positions: int = 0) -> tuple[int, int]:
    """(items, rows) per chunk of a batch of ``count`` items of ``rows`` rows each.

    Whole items while one fits the target (as :func:`chunk_length`), otherwise one
    item cut into blocks of rows: a large image is walked in parts that stay in
    cache, and a batch of one still splits into several chunks. With ``positions``
    (output positions per row) a block of rows keeps at least
    :data:`MIN_CHUNK_POSITIONS` where the limit allows (each image of a chunk has its
    own matmul, so images are not merged for it). Raises ``MemoryError`` when a
    single row exceeds the workspace limit.
    """
    goal = TARGET_CHUNK_BYTES if target is None else target
    per_item = per_row_bytes * rows
    if per_row_bytes > _limit:
        chunk_length(per_row_bytes, 1, f"one output row of {what}")  # raises MemoryError
    if _device.get():  # whole items up to the limit, else equal blocks of rows
        goal = device_target()
        if per_item <= goal:
            return chunk_length(per_item, count, what), rows
        most = max(1, goal // max(per_row_bytes, 1))
        return 1, -(-rows // -(-rows // most))
    least = least_items(positions)  # rows holding MIN_CHUNK_POSITIONS
    goal = min(goal, max(MIN_SPLIT_BYTES, per_item * count // SPLIT_CHUNKS,
                         min(least, rows) * per_row_bytes), _limit)
    if per_item <= goal:
        return balanced(count, chunk_length(per_item, count, what, target=goal)), rows
    return 1, balanced(rows, max(1, goal // max(per_row_bytes, 1)), least)


def workers_for(chunks: int, per_worker_bytes: int, threads: int) -> int:
    """Threads to run ``chunks`` chunks on, each thread holding ``per_worker_bytes``
    of buffers, within the workspace limit (at least one)."""
    fit = _limit // max(per_worker_bytes, 1)
    return max(1, min(threads, chunks, fit))
