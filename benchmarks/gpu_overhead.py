"""Where a small npconv call's time goes on a GPU: host time against device time.

Usage, from the repository root on a machine with CuPy and a CUDA GPU::

    python benchmarks/gpu_overhead.py [--profile] [--repeat 200]

For a few zoo layers it prints the host (CPU) and device (GPU) time of one
``npconv.conv`` and one ``npconv.conv_backward`` call, measured by
``cupyx.profiler.benchmark``, beside torch's single-call time. A call whose host
time is well above its device time is bound by Python and launch overhead, not
by the GPU. It then times CuPy's own primitives (an allocation, a view, a copy,
a matmul) so that the per-call figures can be read as a count of such steps.
``--profile`` adds a cProfile listing of the costliest functions per call.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys

LAYERS = {  # name: (x shape, weight shape, keyword arguments)
    "resnet layer1 3x3": ((4, 64, 24, 24), (64, 64, 3, 3), {"padding": 1}),
    "resnet layer3 3x3": ((4, 256, 6, 6), (256, 256, 3, 3), {"padding": 1}),
    "mobilenet 1x1": ((4, 32, 48, 48), (16, 32, 1, 1), {}),
    "mobilenet dw 3x3": ((4, 144, 24, 24), (144, 1, 3, 3), {"padding": 1, "groups": 144}),
    "wavenet k2 d8": ((4, 32, 4104), (64, 32, 2), {"dilation": 8}),
}


STAT = "median"  # or "mean" (--stat): how one figure sums up the repeats


def bench(cupyx, f, repeat):
    """Host and device milliseconds of one call (their median, or mean: STAT)."""
    import numpy

    r = cupyx.profiler.benchmark(f, n_repeat=repeat, n_warmup=10)
    summary = getattr(numpy, STAT)
    return float(summary(r.cpu_times)) * 1e3, float(summary(r.gpu_times[0])) * 1e3


def torch_ms(torch, f, repeat):
    """Median wall milliseconds of one synchronised torch call."""
    import time

    for _ in range(10):
        f()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1e3


def layer_rows(cp, cupyx, torch, npconv, repeat):
    rng = cp.random.default_rng(0)
    print(f"{'layer':22s} {'op':9s} {'host ms':>8s} {'device ms':>9s} {'torch ms':>8s}")
    calls = {}
    for name, (xs, ws, kw) in LAYERS.items():
        x = rng.standard_normal(xs, dtype=cp.float32)
        w = rng.standard_normal(ws, dtype=cp.float32)
        b = rng.standard_normal(ws[0], dtype=cp.float32)
        gy = cp.ones_like(npconv.conv(x, w, b, **kw))
        tx, tw, tb, tgy = (torch.as_tensor(a, device="cuda") for a in (x, w, b, gy))
        fn = {3: torch.nn.functional.conv1d, 4: torch.nn.functional.conv2d,
              5: torch.nn.functional.conv3d}[len(xs)]
        tx.requires_grad_(True)
        tw.requires_grad_(True)
        tb.requires_grad_(True)
        ty = fn(tx, tw, tb, **kw)

        def t_backward(ty=ty, tgy=tgy, tx=tx, tw=tw, tb=tb):
            return torch.autograd.grad(ty, (tx, tw, tb), tgy, retain_graph=True)

        ops = {
            "forward": (lambda x=x, w=w, b=b, kw=kw: npconv.conv(x, w, b, **kw),
                        lambda tx=tx, tw=tw, tb=tb, kw=kw, fn=fn: fn(tx, tw, tb, **kw)),
            "backward": (lambda gy=gy, x=x, w=w, kw=kw: npconv.conv_backward(gy, x, w, **kw),
                         t_backward),
        }
        for op, (f, tf) in ops.items():
            host, dev = bench(cupyx, f, repeat)
            with torch.no_grad() if op == "forward" else _null():
                t = torch_ms(torch, tf, repeat)
            print(f"{name:22s} {op:9s} {host:8.3f} {dev:9.3f} {t:8.3f}", flush=True)
            calls[(name, op)] = f
    return calls


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def primitive_rows(cp, cupyx, repeat):
    a = cp.ones((4, 64, 24, 24), cp.float32)
    m1 = cp.ones((64, 576), cp.float32)
    m2 = cp.ones((576, 2304), cp.float32)
    out = cp.empty_like(a)
    padded = cp.zeros((4, 64, 26, 26), cp.float32)
    copy = cp.ElementwiseKernel("T x", "T y", "y = x", "npconv_probe_copy")
    prims = {
        "cupy.empty": lambda: cp.empty((4, 64, 24, 24), cp.float32),
        "cupy.zeros": lambda: cp.zeros((4, 64, 26, 26), cp.float32),
        "a.reshape (view)": lambda: a.reshape(4, 64, 576),
        "a.transpose (view)": lambda: a.transpose(1, 0, 2, 3),
        "as_strided view": lambda: cp.lib.stride_tricks.as_strided(a, (4, 64, 22, 22, 3, 3),
                                                                   a.strides + a.strides[2:]),
        "padded[...] = a": lambda: padded.__setitem__((slice(None), slice(None),
                                                       slice(1, 25), slice(1, 25)), a),
        "ElementwiseKernel copy": lambda: copy(a, out),
        "cupy.matmul 64x576x2304": lambda: cp.matmul(m1, m2),
        "a + 1": lambda: a + 1,
        "a.sum(axis=(0,2,3))": lambda: a.sum(axis=(0, 2, 3)),
        "with a.device": lambda: a.device.__enter__() and a.device.__exit__(None, None, None),
    }
    print(f"\n{'CuPy primitive':28s} {'host us':>8s} {'device us':>9s}")
    for name, f in prims.items():
        host, dev = bench(cupyx, f, repeat)
        print(f"{name:28s} {host * 1e3:8.1f} {dev * 1e3:9.1f}", flush=True)


def profile_rows(calls, names, top):
    for key in names:
        f = calls[key]
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(100):
            f()
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(top)
        print(f"\n== cProfile, 100 calls: {key[0]} {key[1]}")
        print("\n".join(line for line in text.getvalue().splitlines()[6:] if line.strip()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--stat", choices=("median", "mean"), default="median",
                        help="summary of the repeats (the 2026-12-04 runs used mean)")
    args = parser.parse_args()
    global STAT
    STAT = args.stat
    import cupy as cp
    import cupyx.profiler
    import torch

    import npconv

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    npconv.set_backend("cupy")
    print(f"CuPy {cp.__version__}, torch {torch.__version__}, "
          f"{torch.cuda.get_device_name()}")
    calls = layer_rows(cp, cupyx, torch, npconv, args.repeat)
    primitive_rows(cp, cupyx, args.repeat)
    if args.profile:
        profile_rows(calls, [("resnet layer1 3x3", "forward"), ("resnet layer1 3x3", "backward"),
                             ("mobilenet 1x1", "forward")], 30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
