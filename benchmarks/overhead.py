"""Instructions per tiny call, counted by valgrind's callgrind: a per-call overhead
figure that does not move with the machine's load, unlike a timing on a shared VM.

    python benchmarks/overhead.py                  # npconv as installed
    PYTHONPATH=/path/to/other/checkout python benchmarks/overhead.py   # another tree

For each op it runs this script under callgrind twice, with 0 and with ``--calls``
calls of a 1x1x8x8, 3x3 float32 call (the benchmark's tiny call), and prints the
difference divided by the calls. ``floor-*`` ops are the NumPy calls that the
small-call path makes, written inline (no validation, planning or dispatch): what
the Python layers above them cost is the gap. Counts move by about 1-3 % between
processes (address-dependent hashing), so compare figures taken together.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

OPS = ("forward", "backward", "im2col", "floor-forward", "floor-backward", "floor-im2col")


def calls(op: str):
    """A function making one ``op`` call on the tiny problem."""
    import numpy as np

    import npconv

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 8, 8), dtype=np.float32)
    w = rng.standard_normal((1, 1, 3, 3), dtype=np.float32)
    b = np.zeros(1, np.float32)
    gy = np.ones((1, 1, 6, 6), np.float32)
    strides = x.strides + x.strides[2:]
    index = np.array([(i + h) * 8 + j + v for i in range(3) for j in range(3)
                      for h in range(6) for v in range(6)])

    def windows():
        view = np.ndarray((1, 1, 3, 3, 6, 6), x.dtype, x, 0, strides)
        view.setflags(write=False)
        return view

    def floor_forward():
        cols = windows().reshape(1, 1, 9, 36)
        y = np.matmul(w.reshape(1, 1, 9), cols).reshape(1, 1, 6, 6)
        y += b.reshape(1, 1, 1, 1)
        return y

    def floor_backward():
        cols = windows().reshape(1, 1, 9, 36)
        gy4 = gy.reshape(1, 1, 1, 36)
        gw = np.matmul(gy4, cols.transpose(0, 1, 3, 2))[0].reshape(1, 1, 3, 3)
        grad_cols = np.matmul(w.reshape(1, 1, 9).transpose(0, 2, 1), gy4)
        gx = np.empty((1, 1, 8, 8), np.float32)
        gx[...] = np.bincount(index, weights=grad_cols.reshape(-1), minlength=64).reshape(gx.shape)
        return gx, gw, gy.sum(axis=(0, 2, 3))

    def floor_im2col():
        cols = np.empty((1, 1, 3, 3, 6, 6), x.dtype)
        cols[...] = windows()
        return cols.reshape(1, 9, 36)

    return {
        "forward": lambda: npconv.conv(x, w, b),
        "backward": lambda: npconv.conv_backward(gy, x, w),
        "im2col": lambda: npconv.im2col(x, 3),
        "floor-forward": floor_forward,
        "floor-backward": floor_backward,
        "floor-im2col": floor_im2col,
    }[op]


def count(op: str, n: int) -> int:
    """Instructions callgrind counts for a process making ``n`` calls of ``op``."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
               sys.executable, __file__, "--run", op, str(n)]
    done = subprocess.run(command, capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONHASHSEED": "0"})
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no callgrind total in:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ops", nargs="*", help=f"any of {', '.join(OPS)} (default: all)")
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--run", nargs=2, metavar=("OP", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:  # the process callgrind watches
        f = calls(args.run[0])
        for _ in range(200 + int(args.run[1])):
            f()
        return 0
    unknown = sorted(set(args.ops) - set(OPS))
    if unknown:
        parser.error(f"unknown ops {unknown}; known: {', '.join(OPS)}")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed")
    for op in args.ops or OPS:
        per_call = (count(op, args.calls) - count(op, 0)) / args.calls
        print(f"{op:16s} {per_call:9.0f} instructions per call", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
