"""The executor: the one place in npconv with threads and BLAS limits.

A fast path cuts a call into *chunks* (a few images, or a block of output
rows of one image) whose boundaries depend only on the shapes and the
workspace limit, never on the thread count. It hands the executor a *kernel*,
a top-level function ``kernel(scratch, item, *args)`` that computes one
chunk, and a *scratch* factory that allocates one worker's buffers. The
executor runs the chunks on a small pool of host threads (:mod:`npconv._workers`
holds them), each thread with its own scratch, while the BLAS is held to one
thread (two multi-threaded OpenBLAS calls at once fought over one pool and ran
about 30x slower, measured).

Why threads at all: NumPy runs elementwise loops on one core, and the
mid-sized matmuls of a convolution chunk ran 1.5-3x faster as two
single-threaded calls on two chunks at once than as one two-threaded call
after another (measured on 2-core machines).

Guarantees:

* **Bitwise equal results for any thread count**, as long as the BLAS itself
  runs single-threaded (npconv holds it there while its threads run; with one
  npconv thread the BLAS keeps its own count, and OpenBLAS's threading can
  change its roundings). Every output element is written by one chunk; sums
  over chunks (weight gradients) are taken per *lane* (a run of consecutive
  chunks, their count fixed by the shapes) in chunk order, and the lanes are
  added in lane order.
* **No worker writes after a call returns or raises.** On an exception in
  one chunk the other threads stop taking new chunks, and the caller waits
  for every chunk handed out before re-raising the first error.
* Chunks are handed out under a lock (safe on free-threaded CPython), the
  pool is dropped in a forked child (``os.register_at_fork``), and the BLAS
  limit is entered at most once per public call (:func:`call`), lazily, so
  tiny calls never pay for it.
* Work below ``min_work_bytes`` (default :data:`TINY_WORK_BYTES`), nested
  calls, GPU backends and processes whose BLAS cannot be limited run serially
  in the calling thread.

The thread count comes from ``NPCONV_NUM_THREADS`` (default: the CPUs this
process may use), :func:`set_num_threads`, or per call and per context with
:func:`num_threads`; the serial threshold likewise from ``NPCONV_MIN_WORK_BYTES``
or their ``min_work_bytes``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from . import _workers, backend, workspace
from .geometry import as_int

# Below this many bytes of buffers per call (copies included), npconv's threads cost
# more than they save, and the BLAS's own threads do better. A threaded region cost
# 90-130 us on these 2-core virtual machines (waking parked threads, limiting the
# BLAS); split over threads, im2col's copy won from 4-9 MiB. Alternating runs over
# the network zoo (benchmarks/ab.py; docs/performance.md, 2026-12-03): 4 MiB against
# 16 MiB: 0.96-1.02x on six networks, 0.80x on the float64 one (whose direct path's
# per-tap matmuls are too small for the BLAS to thread).
TINY_WORK_BYTES = 4 * 2**20
# After its own share, the calling thread polls this long for the workers' results
# before it blocks: waking a thread whose CPU went idle took 50-200 us (measured).
POLL_SECONDS = 0.002
# Weight gradients are summed in at most this many lanes (partial sums added in
# lane order): a count fixed by the shapes, so results do not depend on threads.
LANES = 8


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _environment_int(name: str, default: int, least: int) -> int:
    """The integer in environment variable ``name`` (at least ``least``), else ``default``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = least - 1
    if value < least:
        kind = "a positive" if least == 1 else "a non-negative"
        raise ValueError(f"{name} must be {kind} integer, got {raw!r}")
    return value


def _check_count(count: object) -> int:
    value = as_int(count, "count")
    if value < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    return value


def _check_bytes(value: object) -> int:
    out = as_int(value, "min_work_bytes")
    if out < 0:
        raise ValueError(f"min_work_bytes must be a non-negative integer, got {value!r}")
    return out


class _State:
    """Process-wide state: the default thread count and threshold, and the pool."""

    threads = _environment_int("NPCONV_NUM_THREADS", _available_cpus(), 1)
    min_work_bytes = _environment_int("NPCONV_MIN_WORK_BYTES", TINY_WORK_BYTES, 0)
    pool: _workers.Pool | None = None
    lock = threading.Lock()  # guards pool creation
    # One threaded region at a time in the process: BLAS thread counts are global.
    region = threading.Lock()


_override: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "npconv_threads", default=None)
_min_override: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "npconv_min_work_bytes", default=None)
_worker = threading.local()  # .busy: this thread runs chunks for a threaded region


def _reset_after_fork() -> None:
    # The parent's pool threads do not exist in the child; its locks may be held.
    _State.pool = None
    _State.lock = threading.Lock()
    _State.region = threading.Lock()
    _BlasHold.lock = threading.Lock()
    _BlasHold.active = 0  # the child runs none of the parent's calls
    if _BlasHold.limiter is not None:  # nor holds the BLAS for them
        _BlasHold.limiter.restore_original_limits()
    _BlasHold.holders, _BlasHold.limiter = 0, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def get_num_threads() -> int:
    """Threads npconv uses for its own loops on the CPU (in this context).

    Examples
    --------
    >>> import npconv
    >>> npconv.get_num_threads() >= 1
    True
    """
    override = _override.get()
    return _State.threads if override is None else override


def get_min_work_bytes() -> int:
    """Bytes of buffers below which a call runs serially (in this context).

    Examples
    --------
    >>> import npconv
    >>> npconv.get_min_work_bytes() >= 0
    True
    """
    override = _min_override.get()
    return _State.min_work_bytes if override is None else override


def set_num_threads(count: int, *, min_work_bytes: int | None = None) -> None:
    """Use ``count`` threads for npconv's own CPU loops (the process default).

    Batch chunks of a convolution then run on up to ``count`` threads, each
    calling the BLAS single-threaded. With ``count == 1``, or for calls whose
    buffers total less than ``min_work_bytes``, the chunks run one after
    another and the BLAS keeps its own thread count.

    Parameters
    ----------
    count : int
        Threads, at least 1.
    min_work_bytes : int, optional
        The threshold below which calls stay serial (default
        ``NPCONV_MIN_WORK_BYTES``, else 4 MiB, measured on 2-core virtual
        machines; machines that wake threads faster may gain from a lower
        one). ``None`` keeps the current value.

    Examples
    --------
    >>> import npconv
    >>> old = npconv.get_num_threads()
    >>> npconv.set_num_threads(1)
    >>> npconv.get_num_threads()
    1
    >>> npconv.set_num_threads(old)
    """
    threads = _check_count(count)
    if min_work_bytes is not None:
        _State.min_work_bytes = _check_bytes(min_work_bytes)
    _State.threads = threads


@contextlib.contextmanager
def num_threads(count: int, *, min_work_bytes: int | None = None) -> Iterator[None]:
    """Context manager: npconv uses ``count`` threads in this context only.

    Like ``scipy.fft``'s ``workers``, it is local to the current thread (and
    asyncio task), so two user threads may use different counts.
    ``min_work_bytes`` is as in :func:`set_num_threads`, for this context.

    Examples
    --------
    >>> import npconv
    >>> with npconv.num_threads(1):
    ...     npconv.get_num_threads()
    1
    >>> with npconv.num_threads(2, min_work_bytes=0):  # thread even small calls
    ...     npconv.get_min_work_bytes()
    0
    """
    threads = _check_count(count)
    limit = None if min_work_bytes is None else _check_bytes(min_work_bytes)
    token = _override.set(threads)
    min_token = _min_override.set(limit) if limit is not None else None
    try:
        yield
    finally:
        if min_token is not None:
            _min_override.reset(min_token)
        _override.reset(token)


class _Blas:
    """The BLAS libraries loaded in this process, found once, on first use."""

    controller: Any = None
    searched = False

    @classmethod
    def get(cls) -> Any:
        if not cls.searched:
            try:
                import threadpoolctl

                found = threadpoolctl.ThreadpoolController().select(user_api="blas")
                cls.controller = found if found.lib_controllers else None
            except Exception:  # an unusual BLAS or platform: no control, not an error
                cls.controller = None
            cls.searched = True
        return cls.controller


def blas_limited() -> bool:
    """Whether npconv can run the BLAS single-threaded inside its own threads."""
    return _Blas.get() is not None


def blas_kernel() -> str | None:
    """The CPU kernel the BLAS runs (OpenBLAS's core type, e.g. 'SkylakeX', as
    threadpoolctl reports it), or None where the BLAS does not say."""
    controller = _Blas.get()
    for lib in controller.lib_controllers if controller is not None else ():
        kernel = getattr(lib, "architecture", None)
        if kernel:
            return str(kernel)
    return None


class _BlasHold:
    """One process-wide hold of the BLAS at one thread, counted: threadpoolctl's limits
    are process-wide and not thread-safe, so every holder shares one limiter, made by
    the first and restored by the last (under one lock)."""

    lock = threading.Lock()
    holders = 0
    limiter: Any = None
    active = 0  # public calls running now, in any thread


def _hold() -> None:
    with _BlasHold.lock:
        _BlasHold.holders += 1
        if _BlasHold.holders == 1:
            controller = _Blas.get()
            _BlasHold.limiter = None if controller is None else controller.limit(limits=1)


def _release() -> None:
    with _BlasHold.lock:
        _BlasHold.holders -= 1
        if _BlasHold.holders == 0 and _BlasHold.limiter is not None:
            _BlasHold.limiter.restore_original_limits()
            _BlasHold.limiter = None


class _Call:
    """One public call: holds the BLAS at one thread while it runs threads (entered at
    most once, lazily) or while other threads' calls overlap it."""

    def __init__(self) -> None:
        self.entered = False
        self.refused = False
        self.held = False

    def enter(self) -> bool:
        """True if this call may run threads (it then holds the region until it ends)."""
        if self.entered or self.refused:
            return self.entered
        if not _State.region.acquire(blocking=False):
            self.refused = True  # another thread's call runs threaded: stay serial
            return False
        self.hold()
        self.entered = True
        return True

    def hold(self) -> None:
        if not self.held:
            _hold()
            self.held = True

    def close(self) -> None:
        try:
            if self.held:
                _release()
                self.held = False
        finally:
            if self.entered:
                self.entered = False
                _State.region.release()


_current: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
    "npconv_call", default=None)


@contextlib.contextmanager
def call() -> Iterator[None]:
    """Wrap one public call: threaded regions inside it share one BLAS limit.

    Calls that overlap in time (user threads, Dask's threaded scheduler) hold the
    BLAS at one thread while they overlap: OpenBLAS's one thread pool, driven from
    several threads at once, ran matmuls about 10x slower here (measured under
    Dask), while single-threaded BLAS calls from several threads run side by side.
    """
    if _current.get() is not None:
        yield  # nested: the outer call owns the region
        return
    state = _Call()
    token = _current.set(state)
    with _BlasHold.lock:
        _BlasHold.active += 1
        overlapping = _BlasHold.active > 1
    if overlapping:
        state.hold()
    try:
        yield
    finally:
        _current.reset(token)
        with _BlasHold.lock:
            _BlasHold.active -= 1
        state.close()


@contextlib.contextmanager
def serial() -> Iterator[None]:
    """Run the block on the calling thread only, with the BLAS held at one thread.

    For work too small for threads of either kind to pay: OpenBLAS splits skinny
    matmuls (few output channels, short contractions) over its threads where one
    thread was 2-5x faster (measured on the zoo's small layers).
    """
    _hold()
    token = _override.set(1)
    try:
        yield
    finally:
        _override.reset(token)
        _release()


def workers_for(count: int, per_worker_bytes: int, arrays: Sequence[Any],
                work_bytes: int | None = None) -> int:
    """How many threads would run ``count`` chunks (1 = serial in the caller)."""
    if count <= 1 or getattr(_worker, "busy", False):
        return 1
    if not backend.backend_of(*arrays).host_threads:
        return 1  # a GPU backend: one stream of work
    total = count * per_worker_bytes if work_bytes is None else work_bytes
    if total < get_min_work_bytes() or not blas_limited():
        return 1
    return workspace.workers_for(count, per_worker_bytes, get_num_threads())


def _pool(size: int) -> _workers.Pool:
    with _State.lock:
        if _State.pool is None or _State.pool.size < size:
            if _State.pool is not None:
                _State.pool.close()
            _State.pool = _workers.Pool(size)
        return _State.pool


class _Queue:
    """Hands out items in order under a lock; stops handing out after a failure.

    In a threaded region it also keeps the chunks' errors, and counts finished
    chunks in a tally that the caller waits on (:meth:`settle`)."""

    def __init__(self, items: Sequence[Any]):
        self.items, self.next, self.failed = items, 0, False
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.tally: Any = None  # a threaded region's: the pool's _workers.Tally
        self.base = 0  # the tally's count when the region began

    def take(self) -> tuple[int, Any] | None:
        with self.lock:
            if self.failed or self.next >= len(self.items):
                return None
            index = self.next
            self.next += 1
            return index, self.items[index]

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        while (got := self.take()) is not None:
            yield got

    def fail(self, error: BaseException) -> None:
        with self.lock:
            self.failed = True
            self.errors.append(error)

    def settle(self, poll_seconds: float) -> None:
        """Wait until every chunk handed out has finished (call once none is left)."""
        with self.lock:
            handed_out = self.next
        self.tally.wait_for(self.base + handed_out, poll_seconds)


def _serve(queue: _Queue, work: Callable[[Any, int, Any], None],
           scratch: Callable[[], Any] | None, threaded: bool = True) -> None:
    """One thread's loop: its own scratch (made at its first item), then items until
    the queue is empty. In a threaded region the thread is marked busy, so nested
    work stays serial, and every finished chunk is counted."""
    busy = getattr(_worker, "busy", False)
    _worker.busy = busy or threaded
    buffers, made = None, False
    try:
        for index, item in queue:
            try:
                if not made:
                    buffers, made = (None if scratch is None else scratch()), True
                work(buffers, index, item)
            except BaseException as exc:
                queue.fail(exc)
                raise
            finally:
                if threaded:
                    queue.tally.add()
    finally:
        _worker.busy = busy


def _serve_quietly(queue: _Queue, work: Callable[[Any, int, Any], None],
                   scratch: Callable[[], Any] | None) -> None:
    """A pool thread's job: :func:`_serve`, its errors left in the queue."""
    try:
        _serve(queue, work, scratch)
    except BaseException:  # kept in queue.errors; the caller raises it
        pass


def _drive(queue: _Queue, work: Callable[[Any, int, Any], None],
           scratch: Callable[[], Any] | None, workers: int) -> None:
    """Run the queue on ``workers`` threads (the caller is one); wait for all, then raise."""
    state = _current.get()
    own = _Call() if workers > 1 and state is None else None  # a call outside conv's API
    region = own if own is not None else state
    try:
        if workers > 1 and (region is None or not region.enter()):
            workers = 1
        if workers <= 1:
            _serve(queue, work, scratch, threaded=False)
        else:
            _run_threaded(queue, work, scratch, workers)
    finally:
        if own is not None:
            own.close()


def _run_threaded(queue: _Queue, work: Callable[[Any, int, Any], None],
                  scratch: Callable[[], Any] | None, workers: int) -> None:
    """The caller and up to ``workers - 1`` pool threads serve the queue. Every chunk
    has finished before this returns or raises; a worker that starts later finds
    nothing left to do."""
    pool = _pool(workers - 1)
    queue.tally, queue.base = pool.tally, pool.tally.count.value
    pool.start(functools.partial(_serve_quietly, queue, work, scratch), workers - 1)
    try:
        _serve(queue, work, scratch)
    except BaseException:  # kept in queue.errors; raised below
        pass
    finally:
        queue.settle(POLL_SECONDS)
        pool.end()
    if queue.errors:
        raise queue.errors[0]


def map_chunks(kernel: Callable[..., None], items: Sequence[Any], *args: Any,
               scratch: Callable[[], Any] | None = None, per_worker_bytes: int = 0,
               arrays: Sequence[Any] = (), work_bytes: int | None = None) -> None:
    """``kernel(buffers, item, *args)`` for every item; items write disjoint memory.

    ``scratch()`` makes a thread's ``buffers``, once, before its first item (a
    thread that gets no item makes none). Items go to whichever thread is free
    next, in order; which thread computes an item never changes its result.
    """
    workers = workers_for(len(items), per_worker_bytes, arrays, work_bytes)
    if workers <= 1:  # serial: no queue, no lock (a small call's overhead matters)
        buffers = None if scratch is None else scratch()
        for item in items:
            kernel(buffers, item, *args)
        return

    def work(buffers: Any, _: int, item: Any) -> None:
        kernel(buffers, item, *args)

    _drive(_Queue(items), work, scratch, workers)


def lanes_of(items: Sequence[Any], partial_bytes: int) -> list[Sequence[Any]]:
    """``items`` cut into at most :data:`LANES` contiguous lanes (fewer where a
    quarter of the workspace limit cannot hold that many partial sums)."""
    fit = workspace.get_workspace_limit() // max(4 * partial_bytes, 1)
    parts = max(1, min(LANES, fit, len(items)))
    step = -(-len(items) // parts) if items else 1
    return [items[i : i + step] for i in range(0, len(items), step)]


def reduce_chunks(kernel: Callable[..., Any], items: Sequence[Any], total: Any, *args: Any,
                  scratch: Callable[[], Any] | None = None, per_worker_bytes: int = 0,
                  arrays: Sequence[Any] = (), finish: Callable[[Any], Any] | None = None,
                  work_bytes: int | None = None, fresh: bool = False) -> None:
    """``total += sum over items`` of each chunk's partial, in a fixed order; with
    ``fresh``, ``total = ...`` (its contents are never read: it may come from ``empty``).

    ``kernel(buffers, item, acc, *args)`` adds its chunk's partial to ``acc``
    (``None`` for a lane's first chunk: then it returns a new array) and returns
    it. Each lane's sum goes through ``finish`` (a linear map, if given) and the
    lanes are added to ``total`` in lane order (a fresh total takes the first lane's
    sum as a copy: no zero fill, one add fewer).
    """
    lanes = lanes_of(items, total.nbytes)
    partials: list[Any] = [None] * len(lanes)

    def work(buffers: Any, index: int, lane: Sequence[Any]) -> None:
        acc = None
        for item in lane:
            acc = kernel(buffers, item, acc, *args)
        partials[index] = acc if finish is None or acc is None else finish(acc)

    workers = workers_for(len(lanes), per_worker_bytes, arrays, work_bytes)
    _drive(_Queue(lanes), work, scratch, workers)
    sum_lanes(total, partials, fresh)


def sum_lanes(total: Any, partials: Sequence[Any], fresh: bool = False) -> None:
    """``total +=`` (``fresh``: ``total =``) the lanes' partial sums (None: none), in order."""
    parts = [part.reshape(total.shape) for part in partials if part is not None]
    if fresh:
        total[...] = parts.pop(0) if parts else 0
    for part in parts:
        total += part


def _copy_part(_: Any, span: tuple[slice, ...], dst: Any, src: Any) -> None:
    dst[span] = src[span]  # one part of copy_into


def copy_into(dst: Any, src: Any) -> None:
    """``dst[...] = src`` (same shapes), split over threads along the first axis
    longer than one when that pays."""
    size, workers, busy = dst.nbytes, get_num_threads(), getattr(_worker, "busy", False)
    axis = None if size < get_min_work_bytes() or workers <= 1 or busy else next(
        (i for i, n in enumerate(dst.shape) if n > 1), None)
    if axis is None or not backend.backend_of(dst).host_threads:  # a device: one kernel
        dst[...] = src
        return
    map_chunks(_copy_part, axis_spans(dst.shape[axis], axis, workers), dst, src,
               arrays=(dst,), work_bytes=size)


def axis_spans(length: int, axis: int, workers: int) -> list[tuple[slice, ...]]:
    """Index tuples cutting axis ``axis`` (of ``length``) into at most ``workers``
    contiguous parts of equal size (the last shorter)."""
    step = -(-length // max(1, min(workers, length)))
    lead = (slice(None),) * axis
    return [lead + (slice(i, i + step),) for i in range(0, length, step)]
