"""How long a cache line takes to go from one CPU to another and back (numba).

Two threads, pinned to two CPUs, hand one int64 back and forth: each waits (an
atomic load in a loop) for the other's value, then stores its own. The time of many
such hand-offs over their count is the round trip. On the benchmark's virtual
machine it was 50-130 ns in normal minutes and 320-400 ns in slow ones
(``benchmarks/phases.py``).
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Any

import numba
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from npconv._spin import _load_acquire as _load  # the executor's atomic load


@intrinsic
def _store(typingctx: Any, address: Any, value: Any) -> Any:
    sig = types.void(types.intp, types.int64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        pointer = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        builder.store_atomic(args[1], pointer, "release", 8)
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(nogil=True, cache=True)
def _answer(address: int, rounds: int) -> None:
    """``rounds`` times: wait for 1, store 2."""
    for _ in range(rounds):
        while _load(address) != 1:
            pass
        _store(address, 2)


@numba.njit(nogil=True, cache=True)
def _ask(address: int, rounds: int) -> None:
    """``rounds`` times: store 1, wait for 2."""
    for _ in range(rounds):
        _store(address, 1)
        while _load(address) != 2:
            pass


def round_trip_ns(cpus: tuple[int, int] = (0, 1), rounds: int = 20_000) -> float | None:
    """Nanoseconds of one hand-off there and back between ``cpus``; None where threads
    cannot be pinned (not Linux) or either CPU is not this process's to use."""
    if not hasattr(os, "sched_setaffinity") or not set(cpus) <= os.sched_getaffinity(0):
        return None
    flag = ctypes.c_int64(0)
    address = ctypes.addressof(flag)
    _ask(address, 0), _answer(address, 0)  # compiled (or loaded) before the timing

    def other() -> None:
        try:
            os.sched_setaffinity(0, {cpus[1]})
        finally:  # answer in any case: the caller waits for every round
            _answer(address, rounds + 1)

    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpus[0]})
    try:
        thread = threading.Thread(target=other, daemon=True)
        thread.start()
        _ask(address, 1)  # the other thread is running and pinned
        t0 = time.perf_counter()
        _ask(address, rounds)
        elapsed = time.perf_counter() - t0
        thread.join()
    finally:
        os.sched_setaffinity(0, mine)
    return 1e9 * elapsed / rounds
