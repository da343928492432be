"""The executor's worker threads, and the tally that tells the caller its chunks are done.

A threaded region is short here (0.2-2 ms), so what it costs to start and join
its threads counts. With ``concurrent.futures``, joining one pool thread took
50-70 us after its last chunk on the 2-core machines (its Python epilogue and the
future, with the GIL handed back and forth through futex wake-ups while the
caller polled with ``sleep(0)``), and a region of two 190 us compiled chunks took
274 us. Here the caller waits only for the chunks: each finished chunk counts
itself in a :class:`Tally`, which the caller watches in a compiled loop that holds
no GIL (where numba is installed).

The caller never waits for a worker that has not started. On these virtual
machines a parked thread's CPU sometimes took about 3 ms to come back, and the
scheduler often woke the worker on the caller's own CPU, where the two ran in
turns: after a 0.15 s pause, 48-60 of the next 100 two-thread calls of a 0.48 ms
layer ran at 0.79 ms, about its one-thread time (docs/performance.md, fourteenth
session). So a woken worker that finds itself on the caller's CPU moves to the
caller's other CPUs and stays there (:func:`_step_aside`), and a region whose
worker comes late is finished by the caller alone: the late worker finds the
queue empty and does nothing. Moving without the second half had cost more than
it saved (calls of 2.9 ms while the moved worker's CPU woke up).

Only one region runs at a time (the executor's region lock), so a pool has one
job slot; a late worker may run the job of a later region, which is what it is for.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable

# Loads of the counter per compiled wait before the caller looks at the clock.
SPIN_ROUNDS = 20_000


def _compiled_wait() -> Callable[[int, int, int], bool] | None:
    try:
        from . import _spin
    except ImportError:  # no numba: the caller polls the counter from Python
        return None
    return _spin.wait_at_least


def _cpu_reader() -> Callable[[], int] | None:
    """libc's ``sched_getcpu`` where there is one and affinity can be set (Linux)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    try:
        reader = ctypes.CDLL(None).sched_getcpu
    except (AttributeError, OSError):
        return None
    reader.restype, reader.argtypes = ctypes.c_int, []
    return reader  # type: ignore[no-any-return]


_getcpu = _cpu_reader()


def _step_aside(caller: int, cpu: int) -> None:
    """Keep this thread off ``cpu``, on the other CPUs thread ``caller`` may use.

    The move is kept, not undone: the scheduler kept waking a worker that had
    been moved once on the caller's CPU again (measured).
    """
    try:
        others = os.sched_getaffinity(caller) - {cpu}
        if others:
            os.sched_setaffinity(0, others)
    except OSError:  # the caller has exited, or this thread may not move
        pass


_WAIT = _compiled_wait()


class Tally:
    """A count of finished chunks that the caller can wait on without the GIL
    (one per pool: a region waits for its count to pass a target)."""

    def __init__(self) -> None:
        self.count = ctypes.c_int64(0)
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.sleeping = False  # the caller blocks on cond (it watched long enough)

    def add(self) -> None:
        with self.lock:
            self.count.value += 1
            if self.sleeping:
                self.cond.notify()

    def wait_for(self, target: int, poll_seconds: float) -> None:
        """Return once the count reaches ``target``: watch it for ``poll_seconds``,
        then block."""
        deadline = time.perf_counter() + poll_seconds
        address = ctypes.addressof(self.count)
        while self.count.value < target and time.perf_counter() < deadline:
            if _WAIT is None:
                time.sleep(0)
            else:
                _WAIT(address, target, SPIN_ROUNDS)
        with self.cond:
            self.sleeping = True
            while self.count.value < target:
                self.cond.wait()
            self.sleeping = False


class Pool:
    """``size`` parked daemon threads; :meth:`start` lets some of them run a job.

    A job must catch its own exceptions and account for its own work: the pool
    never waits for a worker (see the module's notes).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.job: Callable[[], None] | None = None
        self.closed = False
        self.caller_cpu = -1
        self.caller = 0  # the calling thread's native id
        self.tally = Tally()
        self.gates = [threading.Lock() for _ in range(size)]
        for index, gate in enumerate(self.gates):
            gate.acquire()
            threading.Thread(target=self._loop, args=(gate,), daemon=True,
                             name=f"npconv-{index}").start()

    def _loop(self, gate: threading.Lock) -> None:
        while True:
            gate.acquire()  # parked until start() or close() opens this gate
            if self.closed:
                return
            job = self.job
            if job is None:  # let in for a region that has already ended
                continue
            if _getcpu is not None and _getcpu() == self.caller_cpu:
                _step_aside(self.caller, self.caller_cpu)
            job()
            job = None  # parked, the thread must not keep the region's arrays alive

    def start(self, job: Callable[[], None], count: int) -> None:
        """Let ``count`` (at most ``size``) workers run ``job``; :meth:`end` after."""
        self.job = job
        if _getcpu is not None:
            self.caller, self.caller_cpu = threading.get_native_id(), _getcpu()
        for gate in self.gates[:count]:
            _open(gate)

    def end(self) -> None:
        """Drop the job (and the arrays it holds): a worker rung late runs nothing."""
        self.job = None

    def close(self) -> None:
        """Let the workers exit."""
        self.closed, self.job = True, None
        for gate in self.gates:
            _open(gate)


def _open(gate: threading.Lock) -> None:
    """Let a parked worker in; one not yet back from an earlier region (its gate
    still open) will take the latest job when it is."""
    try:
        gate.release()
    except RuntimeError:  # already open
        pass
