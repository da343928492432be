"""A compiled wait on a counter, holding no GIL (for :mod:`npconv._workers`).

Imports numba: the executor falls back to polling from Python without it.
"""

from __future__ import annotations

from typing import Any

import numba
from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def _load_acquire(typingctx: Any, address: Any) -> Any:
    """The int64 at ``address``, loaded atomically (a plain load could be hoisted out
    of the loop that waits for another thread's store)."""
    sig = types.int64(types.intp)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        pointer = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        return builder.load_atomic(pointer, "acquire", 8)

    return sig, codegen


@numba.njit(nogil=True, cache=True)
def wait_at_least(address: int, target: int, rounds: int) -> bool:
    """Whether the int64 at ``address`` reached ``target`` within ``rounds`` loads."""
    for _ in range(rounds):
        if _load_acquire(address) >= target:  # type: ignore[call-arg]
            return True
    return False
