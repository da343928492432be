"""Host threads for npconv's own loops, and BLAS kept to one thread inside them.

NumPy runs elementwise loops on one core, and OpenBLAS splits each matmul over
its own threads, which pays only for large matmuls: on the 2-core machines
npconv is tuned on, the mid-sized matmuls of a convolution chunk ran 1.5-3x
faster as two single-threaded calls on two chunks at once than as one
two-threaded call after another (measured), and the copies and transforms
between them run on both cores too. So npconv walks the batch chunks of a
convolution on a small pool of host threads (NumPy releases the GIL inside
its loops and matmuls) and, while they run, limits the BLAS to one thread
with threadpoolctl. Two BLAS-threaded calls at once would fight over one
OpenBLAS pool (measured 30x slower), so where the BLAS cannot be limited the
chunks of matmul-heavy work run one after another instead.

Results do not depend on the thread count: chunk boundaries are fixed by the
shapes and the workspace limit, every output element is computed by one
thread, and sums over chunks (weight gradients) are added in a fixed order.
The count comes from ``NPCONV_NUM_THREADS`` (default: the CPUs this process
may use) and :func:`set_num_threads`. While npconv's threads run, BLAS calls
made by *other* threads of the process also run single-threaded.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import backend, workspace
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
_local = threading.local()  # .busy: this thread is one of npconv's workers (or their caller)
# One threaded region at a time in the process: the BLAS thread count is global.
_region = threading.Lock()


def get_num_threads() -> int:
    """Threads npconv uses for its own loops on the CPU.

    Examples
    --------
    >>> import npconv
    >>> npconv.get_num_threads() >= 1
    True
    """
    return _threads


def set_num_threads(count: int) -> None:
    """Use ``count`` threads for npconv's own CPU loops.

    Batch chunks of a convolution then run on up to ``count`` threads, each
    calling the BLAS single-threaded. With ``count == 1`` the chunks run one
    after another and the BLAS keeps its own thread count (set it apart, e.g.
    with threadpoolctl).

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


class _Blas:
    """The BLAS libraries loaded in this process, found once, on first use."""

    controller: Any = None
    searched = False

    @classmethod
    def get(cls) -> Any:
        if not cls.searched:
            cls.searched = True
            try:
                import threadpoolctl

                found = threadpoolctl.ThreadpoolController().select(user_api="blas")
                cls.controller = found if found.lib_controllers else None
            except Exception:  # an unusual BLAS or platform: no control, not an error
                cls.controller = None
        return cls.controller


def blas_limited() -> bool:
    """Whether npconv can run the BLAS single-threaded inside its own threads."""
    return _Blas.get() is not None


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    controller = _Blas.get()
    if controller is None:
        yield
        return
    with controller.limit(limits=1):
        yield


# After its own share, the calling thread polls for the workers' results this long
# before it blocks: on a virtual machine, waking a thread whose CPU went idle took
# 50-200 us (measured), a third of a small convolution's time.
POLL_SECONDS = 0.002


def run_split(task: Callable[[Any], None], items: Sequence[Any], workers: int,
              blas: bool = False) -> None:
    """Run ``task(item)`` for every item, on up to ``workers`` threads; items must not
    write the same memory.

    Items go to whichever thread is free next, in order, so a thread that starts
    late (waking a parked pool thread costs time on a virtual machine) takes fewer;
    which thread computes an item never changes its result. ``blas=True`` marks
    tasks that call matmul: they run threaded only where the BLAS can be held to one
    thread meanwhile. Calls from inside a task, and calls while another thread runs
    a threaded region, run serially in the calling thread.
    """
    def run(share: Iterator[Any]) -> None:
        for item in share:
            task(item)

    run_dynamic(run, items, workers, blas)


def run_dynamic(run: Callable[[Iterator[Any]], None], items: Sequence[Any], workers: int,
                blas: bool = False) -> None:
    """``run(share)`` once per thread, ``share`` an iterator that hands out the next of
    ``items`` to whichever thread asks first: each thread sets up its buffers once
    and loops. Serial (one ``run`` over all items) as :func:`run_split` says."""
    global _pool
    workers = min(workers, _threads, len(items))
    if workers > 1 and (getattr(_local, "busy", False) or (blas and not blas_limited())):
        workers = 1
    if workers > 1 and not _region.acquire(blocking=False):
        workers = 1
    if workers <= 1:
        run(iter(items))
        return
    try:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_threads, thread_name_prefix="npconv")
        shared = iter(items)  # next() on a list iterator is atomic under the GIL

        def run_share() -> None:
            _local.busy = True
            try:
                run(shared)
            finally:
                _local.busy = False

        with _single_threaded_blas() if blas else contextlib.nullcontext():
            futures = [_pool.submit(run_share) for _ in range(workers - 1)]
            try:
                run_share()
            finally:
                deadline = time.perf_counter() + POLL_SECONDS
                while not all(f.done() for f in futures) and time.perf_counter() < deadline:
                    time.sleep(0)  # releases the GIL; keeps this CPU awake
                for future in futures:
                    future.result()
    finally:
        _region.release()


def split(items: Sequence[Any], parts: int) -> list[Sequence[Any]]:
    """``items`` cut into at most ``parts`` contiguous runs of about equal length."""
    parts = max(1, min(parts, len(items)))
    step = -(-len(items) // parts)
    return [items[i : i + step] for i in range(0, len(items), step)]


def _workers(count: int, per_worker_bytes: int, arrays: tuple[Any, ...]) -> int:
    if not backend.backend_of(*arrays).host_threads:
        return 1  # a GPU backend: one stream of work
    return workspace.workers_for(count, per_worker_bytes, _threads)


def run_shares(run: Callable[[Any], None], items: Sequence[Any],
               per_worker_bytes: int, *arrays: Any,
               key: Callable[[Any], Any] | None = None) -> None:
    """``run(share)`` once per worker thread, as many as the workspace limit allows at
    ``per_worker_bytes`` each, ``share`` handing out the chunks ``items`` (see
    :func:`run_dynamic`); ``run`` allocates its buffers once and may call matmul.

    Consecutive items with equal ``key`` (the row blocks of one image) go to one
    thread together where there are enough such groups to share, so that a thread
    prepares each image once (which thread computes an item never changes it)."""
    workers = _workers(len(items), per_worker_bytes, arrays)
    if key is not None and workers > 1:
        groups = [list(group) for _, group in itertools.groupby(items, key)]
        if len(groups) >= 2 * workers:
            def run_groups(share: Iterator[list[Any]]) -> None:
                run(item for group in share for item in group)

            run_dynamic(run_groups, groups, workers, blas=True)
            return
    run_dynamic(run, items, workers, blas=True)


# Weight gradients are summed over the batch in this many partial sums at most (one
# per lane of batch chunks, added in lane order): a count fixed by the shapes, not by
# the threads, so that the result does not depend on the thread count.
LANES = 8


def lanes_of(items: Sequence[Any], partial_bytes: int) -> list[Sequence[Any]]:
    """``items`` cut into the contiguous lanes whose partial sums are added at the end
    (fewer where a quarter of the workspace limit cannot hold that many partials)."""
    fit = workspace.get_workspace_limit() // max(4 * partial_bytes, 1)
    return split(items, max(1, min(LANES, fit)))


def run_lanes(run: Callable[[Iterator[int]], None], count: int, per_worker_bytes: int,
              *arrays: Any) -> None:
    """``run(indices)`` once per worker thread, ``indices`` handing out the lane indices
    ``range(count)``; ``run`` allocates its buffers once and sums each lane apart."""
    run_dynamic(run, list(range(count)), _workers(count, per_worker_bytes, arrays),
                blas=True)


def sum_lanes(total: Any, partials: Sequence[Any]) -> None:
    """``total += partials[0] + partials[1] + ...`` in order (``None`` entries skipped)."""
    for part in partials:
        if part is not None:
            total += part.reshape(total.shape)


# Below this many bytes a copy is not worth splitting across threads.
THREADED_COPY_BYTES = 512 * 2**10


def copy_into(dst: Any, src: Any, host_threads: bool = True) -> None:
    """``dst[...] = src`` (same shapes), split over threads along the first axis longer
    than one (a single image splits by channel) when that pays."""
    size = dst.size * dst.dtype.itemsize
    axis = next((i for i, n in enumerate(dst.shape) if n > 1), None)
    if (axis is None or not host_threads or _threads <= 1 or size < THREADED_COPY_BYTES
            or getattr(_local, "busy", False)):
        dst[...] = src
        return
    parts = min(_threads, dst.shape[axis])
    step = -(-dst.shape[axis] // parts)
    lead = (slice(None),) * axis
    spans = [lead + (slice(i, i + step),) for i in range(0, dst.shape[axis], step)]

    def copy(span: tuple[slice, ...]) -> None:
        dst[span] = src[span]

    run_split(copy, spans, parts)
