"""Threaded calls right after an idle pause: times, and where the threads ran.

The benchmark pauses between sides, so its first calls of a job find npconv's
worker parked. This script shows what those calls cost and why: after each call it
reads the calling thread's CPU (``sched_getcpu``) and the last CPU of each npconv
worker thread (``/proc/self/task/<tid>/stat``), so a call whose worker ran on the
caller's CPU is marked ``*``. Linux only::

    python benchmarks/after_pause.py                       # U-Net 64->32 32x32 forward
    python benchmarks/after_pause.py --backward --channels 32 32 --trials 5
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import threading
import time

import numpy as np

import npconv


def last_cpu(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[36])  # field 39: processor


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=int, nargs=2, default=(64, 32), metavar=("IN", "OUT"))
    p.add_argument("--size", type=int, default=32, help="image height and width")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--backward", action="store_true", help="time conv_backward instead")
    p.add_argument("--pause", type=float, default=0.15, help="seconds idle before a trial")
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--trials", type=int, default=3)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    c, o = args.channels
    x = rng.standard_normal((args.batch, c, args.size, args.size), dtype=np.float32)
    w = rng.standard_normal((o, c, 3, 3), dtype=np.float32)
    gy = np.ones_like(npconv.conv(x, w, padding=1))
    if args.backward:
        def call() -> object:
            return npconv.conv_backward(gy, x, w, padding=1)
    else:
        def call() -> object:
            return npconv.conv(x, w, padding=1)
    getcpu = ctypes.CDLL(None).sched_getcpu
    for _ in range(20):
        call()
    for trial in range(args.trials):
        time.sleep(args.pause)
        workers = [t.native_id for t in threading.enumerate() if t.name.startswith("npconv-")]
        rows = []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            call()
            ms = (time.perf_counter() - t0) * 1e3
            mine = getcpu()
            rows.append((ms, any(last_cpu(t) == mine for t in workers)))
        times = [ms for ms, _ in rows]
        shared = sum(flag for _, flag in rows)
        print(f"trial {trial}: median {statistics.median(times):.3f} ms, mean "
              f"{statistics.mean(times):.3f}, first 20 {statistics.mean(times[:20]):.3f}; "
              f"worker on the caller's CPU after {shared} of {len(rows)} calls")
        print("   ", " ".join(f"{ms:.2f}{'*' if flag else ''}" for ms, flag in rows[:30]))


if __name__ == "__main__":
    main()
