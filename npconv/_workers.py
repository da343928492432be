"""The executor's worker threads: parked on a lock each, counted back in through one
counter that the calling thread watches without the GIL.

A threaded region is short here (0.2-2 ms), so what it costs to start and join
its threads counts. With ``concurrent.futures``, joining one pool thread took
50-70 us after its last chunk on the 2-core machines (its Python epilogue and the
future, with the GIL handed back and forth through futex wake-ups while the
caller polled with ``sleep(0)``), and a region of two 190 us compiled chunks took
274 us. Here a worker's last act is to count itself in and park; the caller waits
for the count in a compiled loop that holds no GIL (where numba is installed), so
the worker takes the GIL at once and the caller finds it free: the same region
took 203 us (``time.sleep(0)`` polling of the same counter: 267 us; blocking on a
lock: 231 us).

Only one region runs at a time (the executor's region lock), so a pool has one
job slot. Exceptions are kept and handed to the caller.
"""

from __future__ import annotations

import ctypes
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


class Pool:
    """``size`` parked daemon threads that run one job at a time, all of them on it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.job: Callable[[], None] | None = None
        self.errors: list[BaseException] = []
        self.done = ctypes.c_int64(0)  # workers finished, ever: read without the GIL
        self.target = 0
        self.cond = threading.Condition()
        self.gates = [threading.Lock() for _ in range(size)]
        self.wait = _compiled_wait()
        for index, gate in enumerate(self.gates):
            gate.acquire()
            threading.Thread(target=self._loop, args=(gate,), daemon=True,
                             name=f"npconv-{index}").start()

    def _loop(self, gate: threading.Lock) -> None:
        while True:
            gate.acquire()  # parked until start() or close() opens this gate
            job = self.job
            if job is None:
                return
            try:
                job()
            except BaseException as exc:  # handed to the caller by join()
                self.errors.append(exc)
            finally:
                with self.cond:
                    self.done.value += 1
                    self.cond.notify()

    def start(self, job: Callable[[], None], count: int) -> None:
        """Run ``job`` on ``count`` (at most ``size``) workers; join() before the next."""
        self.job, self.errors = job, []
        self.target = self.done.value + count
        for gate in self.gates[:count]:
            gate.release()

    def join(self, poll_seconds: float) -> list[BaseException]:
        """Wait for every started worker (watching the counter for ``poll_seconds``,
        then blocking); their exceptions, in the order raised."""
        deadline = time.perf_counter() + poll_seconds
        address = ctypes.addressof(self.done)
        while self.done.value < self.target and time.perf_counter() < deadline:
            if self.wait is None:
                time.sleep(0)
            else:
                self.wait(address, self.target, SPIN_ROUNDS)
        with self.cond:
            while self.done.value < self.target:
                self.cond.wait()
        self.job = None
        return self.errors

    def close(self) -> None:
        """Let the workers exit (they hold no job: call between regions)."""
        self.job = None
        for gate in self.gates:
            gate.release()
