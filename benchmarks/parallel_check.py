"""Do this machine's cores run two threads in parallel right now?

Usage::

    python benchmarks/parallel_check.py [--ms 3] [--rounds 5]

Each thread runs the same compiled loop, a dependent chain of multiply-adds that
no memory traffic slows. The loop runs once alone and then on several threads at
once, one copy each. On cores that run in parallel, the threads together take
about as long as one alone: the ratio printed is near 1. On a virtual machine
whose host gives its virtual CPUs one physical core between them, the ratio is
near the thread count. Threading conclusions (npconv's, or torch's two threads in
the benchmark) drawn while the ratio is high do not carry over. The threads are
started afresh each round, so short work reads high: on the 2-core VM of these
notes a burst of two threads cost about 0.4 ms more than one thread's work (1 ms of
work each: 1.4-2.3; 3 ms: 1.13-1.17; 10 ms: 1.03-1.07). Needs numba.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

import numpy as np
from numba import njit


@njit(nogil=True)
def chain(a: np.ndarray, reps: int) -> float:
    s = 0.0
    for _ in range(reps):
        for i in range(a.shape[0]):
            s = s * 0.999999 + a[i]
    return s


def alone(a: np.ndarray, reps: int) -> float:
    t = time.perf_counter()
    chain(a, reps)
    return time.perf_counter() - t


def together(a: np.ndarray, reps: int, threads: int) -> float:
    workers = [threading.Thread(target=chain, args=(a, reps)) for _ in range(threads)]
    t = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ms", type=float, default=20.0, help="one thread's work, in ms")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    a = np.ones(4096)
    chain(a, 1)
    reps = max(1, round(args.ms / 1e3 / alone(a, 100) * 100))
    ratios = []
    for _ in range(args.rounds):
        one = alone(a, reps)
        ratios.append(together(a, reps, args.threads) / one)
        time.sleep(0.05)
    print(f"{args.threads} threads, {args.ms:g} ms of work each: together / alone = "
          f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}; "
          f"1 = parallel, {args.threads} = one core between them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
