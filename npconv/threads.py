"""Host threads for npconv's own elementwise loops (col2im's scatter-adds).

BLAS already runs matmuls on several cores; NumPy's elementwise loops run on
one. npconv splits the scatter-add of ``col2im``/backward over disjoint blocks
of the batch and channel axes and hands them to a small thread pool (NumPy
releases the GIL inside those loops). Results do not depend on the thread
count: every output element is summed in the same order by one thread.
The count comes from ``NPCONV_NUM_THREADS`` (default: the CPUs this process
may use) and :func:`set_num_threads`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .geometry import as_int


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _from_environment() -> int:
    raw = os.environ.get("NPCONV_NUM_THREADS", "").strip()
    if not raw:
        return _available_cpus()
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"NPCONV_NUM_THREADS must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"NPCONV_NUM_THREADS must be a positive integer, got {raw!r}")
    return value


_threads = _from_environment()
_pool: ThreadPoolExecutor | None = None


def get_num_threads() -> int:
    """Threads npconv uses for its own (non-BLAS) loops on the CPU.

    Examples
    --------
    >>> import npconv
    >>> npconv.get_num_threads() >= 1
    True
    """
    return _threads


def set_num_threads(count: int) -> None:
    """Use ``count`` threads for npconv's own CPU loops (BLAS threads are set apart,
    e.g. with threadpoolctl).

    Examples
    --------
    >>> import npconv
    >>> old = npconv.get_num_threads()
    >>> npconv.set_num_threads(1)
    >>> npconv.get_num_threads()
    1
    >>> npconv.set_num_threads(old)
    """
    global _threads, _pool
    value = as_int(count, "count")
    if value < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    if value != _threads and _pool is not None:
        _pool.shutdown(wait=True)
        _pool = None
    _threads = value


def run_split(task: Callable[[Any], None], items: Sequence[Any], workers: int) -> None:
    """Run ``task(item)`` for every item, on up to ``workers`` threads; items must not
    write the same memory.

    The calling thread takes the first share itself: it is already running,
    while waking a parked pool thread costs time on a virtual machine.
    """
    global _pool
    workers = min(workers, _threads, len(items))
    if workers <= 1:
        for item in items:
            task(item)
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_threads, thread_name_prefix="npconv")
    step = -(-len(items) // workers)
    shares = [items[i : i + step] for i in range(0, len(items), step)]

    def run_share(share: Sequence[Any]) -> None:
        for item in share:
            task(item)

    futures = [_pool.submit(run_share, share) for share in shares[1:]]
    try:
        run_share(shares[0])
    finally:
        for future in futures:
            future.result()


# Below this many bytes a copy is not worth splitting across threads.
THREADED_COPY_BYTES = 512 * 2**10


def copy_into(dst: Any, src: Any, host_threads: bool = True) -> None:
    """``dst[...] = src`` (same shapes), split over threads along the first axis longer
    than one (a single image splits by channel) when that pays."""
    size = dst.size * dst.dtype.itemsize
    axis = next((i for i, n in enumerate(dst.shape) if n > 1), None)
    if axis is None or not host_threads or _threads <= 1 or size < THREADED_COPY_BYTES:
        dst[...] = src
        return
    parts = min(_threads, dst.shape[axis])
    step = -(-dst.shape[axis] // parts)
    lead = (slice(None),) * axis
    spans = [lead + (slice(i, i + step),) for i in range(0, dst.shape[axis], step)]

    def copy(span: tuple[slice, ...]) -> None:
        dst[span] = src[span]

    run_split(copy, spans, parts)
