"""npconv on a GPU, end to end: issue 15's device checks in one run (part of gpu_check.sh).

Usage, from the repository root::

    python benchmarks/gpu_probe.py                # on a CUDA machine: CuPy vs torch CUDA
    python benchmarks/gpu_probe.py --standin      # the same checks on a CPU: the 'standin'
                                                  # backend vs torch CPU (prepares a GPU run)
    python benchmarks/gpu_probe.py --detect       # exit 0 with a usable GPU, else 3

Prints one ``PASS``/``FAIL``/``INFO`` line per check, then (on a GPU) a timing table,
and ends with a markdown summary to paste into docs/benchmarks-gpu.md. Exit status:
0 every check passed, 1 some failed, 3 no usable GPU (nothing was checked).

Checks: every name of ``npconv.ALGORITHMS`` against torch in float64 (and float32)
over a dozen shapes (Winograd, phases, pointwise, depthwise, grouped with dilation,
3-d, 1-d strided, reflect/replicate/circular), each with the default and a tiny
workspace; transposed convolution; im2col/col2im against unfold/fold; float16,
complex64, complex128; negative, Fortran, strided and transposed layouts; the
``nn`` layers; ``check_grad``; no device-to-host sync inside
``cupyx.allow_synchronize(False)``; a non-default stream; CUDA-graph capture (for
information). TF32 is off on both sides. It lives under benchmarks/, not tests/:
pytest's doctest collection must not import it on a CPU machine.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

EXIT_NO_GPU = 3
RESULTS: dict[str, list[str]] = {"PASS": [], "FAIL": [], "INFO": []}


def report(status: str, name: str, detail: str = "") -> None:
    RESULTS[status].append(name)
    print(f"{status:4s} {name} {detail}"[:600], flush=True)


def check(name: str, fn: Callable[[], Any]) -> None:
    try:
        detail = fn()
    except Refused as exc:
        report("INFO", name, f"refused as documented: {exc}")
    except Exception as exc:  # noqa: BLE001 - report everything, keep going
        report("FAIL", name, f"{type(exc).__name__}: {exc}")
    else:
        report("PASS", name, detail or "")


class Refused(Exception):
    """A path refused a geometry with its ValueError (not a failure)."""


class Device:
    """The array library under test (CuPy, or the CPU stand-in) and torch's device."""

    def __init__(self, standin: bool):
        import torch

        import npconv

        self.torch, self.standin = torch, standin
        if standin:
            from npconv import _standin

            with npconv.use_backend("standin") as xp:
                self.xp = xp
            self.tdev, self.backend = "cpu", "standin"
            self.no_sync: Callable[[bool], Any] = _standin.allow_synchronize
            self.name = "CPU stand-in backend (no GPU)"
        else:
            import cupy
            import cupyx

            self.xp, self.tdev, self.backend = cupy, "cuda", "cupy"
            self.no_sync = cupyx.allow_synchronize
            props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
            name = props["name"]
            self.name = name.decode() if isinstance(name, bytes) else str(name)
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False

    def rand(self, shape: tuple[int, ...], dtype: str, seed: int) -> Any:
        a = np.random.default_rng(seed).uniform(-1, 1, size=shape)
        if np.dtype(dtype).kind == "c":
            a = a + 1j * np.random.default_rng(seed + 1).uniform(-1, 1, size=shape)
        return self.xp.asarray(a.astype(dtype))

    def to_t(self, a: Any) -> Any:
        """A float64/complex128 torch leaf tensor on torch's device (a host round trip)."""
        wide = np.complex128 if a.dtype.kind == "c" else np.float64
        t = self.torch.from_numpy(a.get().astype(wide)).to(self.tdev)
        return t.requires_grad_()

    @staticmethod
    def host(a: Any) -> Any:
        return a.get() if hasattr(a, "get") else a.detach().cpu().numpy()

    def sync(self) -> None:
        if not self.standin:
            self.xp.cuda.Device().synchronize()


def close(got: Any, want: Any, reduction: int, what: str) -> float:
    from npconv.testing import assert_close

    return assert_close(Device.host(got), Device.host(want), reduction=reduction, err_msg=what)


# --------------------------------------------------------------------------- convolutions

# (name, N, C, spatial, O, k, stride, pad, dilation, groups, mode)
CASES = [
    ("winograd-blocked", 2, 16, (32, 32), 16, 3, 1, 1, 1, 1, "zeros"),
    ("winograd-gathered", 2, 16, (12, 12), 16, 3, 1, 1, 1, 1, "zeros"),
    ("phases-7x7s2", 2, 3, (130, 130), 8, 7, 2, 3, 1, 1, "zeros"),
    ("pointwise", 4, 32, (16, 16), 48, 1, 1, 0, 1, 1, "zeros"),
    ("depthwise-x2", 4, 32, (20, 20), 64, 3, 1, 1, 1, 32, "zeros"),
    ("grouped-s2-d2", 3, 8, (17, 19), 12, 3, 2, 2, 2, 2, "zeros"),
    ("few-channels", 5, 3, (24, 24), 16, 3, 1, 1, 1, 1, "zeros"),
    ("conv3d", 2, 4, (9, 9, 9), 6, 3, 1, 1, 1, 1, "zeros"),
    ("conv1d-s3", 3, 5, (40,), 7, 5, 3, 2, 1, 1, "zeros"),
    ("reflect", 2, 4, (10, 10), 6, 3, 1, 2, 1, 1, "reflect"),
    ("replicate-s2", 2, 4, (11, 9), 6, 3, 2, 1, 1, 2, "replicate"),
    ("circular", 2, 4, (8, 8), 6, 3, 1, 2, 1, 1, "circular"),
]
# Small workspace limits, tried in turn: the first one that fits one image (or one row)
# of a path cuts its work into as many chunks as it can.
TINY_WORKSPACES = tuple(int(256 * 2**10 * 1.5**i) for i in range(14))  # 256 KiB .. 50 MiB


def torch_conv(dev: Device, x: Any, w: Any, b: Any, gy: Any, case: tuple) -> tuple[Any, Any]:
    """torch's float64 y and (gx, gw, gb) on its device."""
    _, _, _, size, _, _, s, p, d, g, mode = case
    nd = len(size)
    F = dev.torch.nn.functional
    tx, tw, tb = dev.to_t(x), dev.to_t(w), dev.to_t(b)
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    if mode == "zeros":
        ty = conv(tx, tw, tb, s, p, d, g)
    else:
        ty = conv(F.pad(tx, (p,) * (2 * nd), mode=mode), tw, tb, s, 0, d, g)
    grads = dev.torch.autograd.grad(ty, (tx, tw, tb), dev.to_t(gy).detach())
    return ty, grads


def run_conv(x: Any, w: Any, b: Any, dtype: str, dev: Device, kw: dict,
             limits: tuple[int | None, ...]) -> tuple[Any, Any, Any, int | None]:
    """y, gy and the grads under the first workspace limit that fits."""
    import npconv

    old = npconv.get_workspace_limit()
    try:
        for limit in limits:
            npconv.set_workspace_limit(limit or old)
            try:
                y = npconv.conv(x, w, b, **kw)
                gy = dev.rand(tuple(y.shape), dtype, 4)
                return y, gy, npconv.conv_backward(gy, x, w, **kw), limit
            except MemoryError:
                if limit == limits[-1]:
                    raise
            except ValueError as exc:
                if f"algorithm={kw['algorithm']!r} cannot compute" in str(exc):
                    raise Refused(str(exc).split(": it needs")[0]) from None
                raise
    finally:
        npconv.set_workspace_limit(old)
    raise AssertionError("unreachable")


def conv_case(dev: Device, case: tuple, dtype: str, algo: str, tiny: bool) -> str:
    _, n, c, size, o, k, s, p, d, g, mode = case
    nd = len(size)
    x, w = dev.rand((n, c) + size, dtype, 1), dev.rand((o, c // g) + (k,) * nd, dtype, 2)
    b = dev.rand((o,), dtype, 3)
    kw = dict(stride=s, padding=p, dilation=d, groups=g, padding_mode=mode, algorithm=algo)
    y, gy, grads, limit = run_conv(x, w, b, dtype, dev, kw, TINY_WORKSPACES if tiny else (None,))
    assert all(type(a) is type(x) and a.dtype == x.dtype for a in (y, *grads))
    ty, tgrads = torch_conv(dev, x, w, b, gy, case)
    extra = 1 if mode == "zeros" else 4**nd
    red = (c // g * k**nd + 1, o // g * k**nd * extra, n * math.prod(y.shape[2:]))
    errs = [close(y, ty, red[0], "y")]
    for got, ref, r, what in zip(grads, tgrads, (red[1], red[2], red[2]), ("gx", "gw", "gb")):
        errs.append(close(got, ref, r, what))
    where = f" (workspace {limit} B)" if limit else ""
    return "max errs " + " ".join(f"{e:.1e}" for e in errs) + where


def transposed_case(dev: Device, dtype: str, s: int, p: int, op: int, g: int) -> None:
    import npconv

    F = dev.torch.nn.functional
    x, w, b = dev.rand((3, 8, 7, 6), dtype, 5), dev.rand((8, 6 // g, 3, 3), dtype, 6), \
        dev.rand((6,), dtype, 7)
    kw = dict(stride=s, padding=p, output_padding=op, groups=g)
    y = npconv.conv_transpose2d(x, w, b, **kw)
    gy = dev.rand(tuple(y.shape), dtype, 8)
    grads = npconv.conv_transpose2d_backward(gy, x, w, **kw)
    tx, tw, tb = dev.to_t(x), dev.to_t(w), dev.to_t(b)
    ty = F.conv_transpose2d(tx, tw, tb, s, p, op, g)
    tgrads = dev.torch.autograd.grad(ty, (tx, tw, tb), dev.to_t(gy).detach())
    close(y, ty, 8 * 9 + 1, "y")
    for got, ref in zip(grads, tgrads):
        close(got, ref, 3 * math.prod(y.shape[2:]) * 9, "grads")


def unfold_fold(dev: Device, dtype: str) -> None:
    import npconv

    F = dev.torch.nn.functional
    x = dev.rand((2, 3, 11, 13), dtype, 9)
    geo = dict(dilation=(1, 2), padding=1, stride=(2, 1))
    cols = npconv.im2col(x, (3, 2), **geo)
    tx = dev.torch.from_numpy(x.get()).to(dev.tdev)
    ref = F.unfold(tx, (3, 2), **geo)
    np.testing.assert_array_equal(dev.host(cols), dev.host(ref))
    back = npconv.col2im(cols, (11, 13), (3, 2), **geo)
    close(back, F.fold(ref, (11, 13), (3, 2), **geo), 6, "col2im")


def other_dtype(dev: Device, dtype: str) -> str:
    """float16 / complex64 / complex128 against torch in float64 / complex128."""
    case = ("dtype", 2, 3, (9, 9), 4, 3, 1, 1, 1, 1, "zeros")
    x, w, b = dev.rand((2, 3, 9, 9), dtype, 10), dev.rand((4, 3, 3, 3), dtype, 11), \
        dev.rand((4,), dtype, 12)
    import npconv

    y = npconv.conv2d(x, w, b, padding=1)
    assert y.dtype == x.dtype
    ty, _ = torch_conv(dev, x, w, b, y, case)
    return f"max err {close(y, ty, 28, dtype):.1e}"


def layouts(dev: Device, kind: str) -> None:
    import npconv

    xp = dev.xp
    x, w, b = dev.rand((3, 4, 10, 9), "float64", 13), dev.rand((6, 2, 3, 3), "float64", 14), \
        dev.rand((6,), "float64", 15)
    kw = dict(stride=(2, 1), padding=1, groups=2)
    y0 = npconv.conv2d(x, w, b, **kw)
    gy = dev.rand(tuple(y0.shape), "float64", 16)
    g0 = npconv.conv2d_backward(gy, x, w, **kw)

    def move(a: Any) -> Any:
        if kind == "negative":
            return xp.ascontiguousarray(a[..., ::-1])[..., ::-1]
        if kind == "fortran":
            return xp.asfortranarray(a)
        if kind == "strided":
            big = xp.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
            big[..., ::2] = a
            return big[..., ::2]
        return a.swapaxes(0, 1).copy().swapaxes(0, 1)

    xm, wm, gym = move(x), move(w), move(gy)
    close(npconv.conv2d(xm, wm, b, **kw), y0, 19, "y")
    for got, ref in zip(npconv.conv2d_backward(gym, xm, wm, **kw), g0):
        close(got, ref, 400, "grads")
    view = npconv.patches(xm, 3, padding=0)
    assert view.shape == (3, 4, 3, 3, 8, 7)


def nn_layers(dev: Device) -> None:
    import npconv
    import npconv.nn

    F = dev.torch.nn.functional
    with npconv.use_backend(dev.backend):
        layer = npconv.nn.Conv2d(4, 6, 3, stride=2, padding=1, rng=0, dtype="float64")
        up = npconv.nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, rng=1,
                                       dtype="float64")
    assert isinstance(layer.weight, dev.xp.ndarray)
    x = dev.rand((2, 4, 9, 9), "float64", 17)
    z = up(layer(x))
    gz = dev.rand(tuple(z.shape), "float64", 18)
    gx = layer.backward(up.backward(gz))
    tx, tw, tb, tw2, tb2 = map(dev.to_t, (x, layer.weight, layer.bias, up.weight, up.bias))
    tz = F.conv_transpose2d(F.conv2d(tx, tw, tb, 2, 1), tw2, tb2, 2, 1, 1)
    refs = dev.torch.autograd.grad(tz, (tx, tw, tb, tw2, tb2), dev.to_t(gz).detach())
    close(z, tz, 1000, "z")
    got = (gx, layer.weight_grad, layer.bias_grad, up.weight_grad, up.bias_grad)
    for a, r in zip(got, refs):
        close(a, r, 10000, "grads")


def grad_check(dev: Device) -> str:
    import npconv
    from npconv.testing import check_grad

    x, w = dev.rand((2, 3, 6, 5), "float64", 19), dev.rand((4, 3, 3, 2), "float64", 20)
    kw = dict(stride=(2, 1), padding=1, padding_mode="reflect")
    err = check_grad(lambda x, w: npconv.conv2d(x, w, **kw),
                     lambda gy, x, w: npconv.conv2d_backward(gy, x, w, **kw)[:2], (x, w))
    return f"worst {err:.1e}"


# --------------------------------------------------------------------------- streams, syncs


def run_once(dev: Device, case: tuple, algo: str) -> Callable[[], Any]:
    import npconv

    _, n, c, size, o, k, s, p, d, g, mode = case
    nd = len(size)
    x, w = dev.rand((n, c) + size, "float32", 1), dev.rand((o, c // g) + (k,) * nd, "float32", 2)
    b = dev.rand((o,), "float32", 3)
    kw = dict(stride=s, padding=p, dilation=d, groups=g, padding_mode=mode, algorithm=algo)
    try:
        gy = dev.xp.ones_like(npconv.conv(x, w, b, **kw))
        npconv.conv_backward(gy, x, w, **kw)
    except ValueError as exc:
        if f"algorithm={algo!r} cannot compute" in str(exc):
            raise Refused(str(exc).split(": it needs")[0]) from None
        raise
    return lambda: (npconv.conv(x, w, b, **kw), npconv.conv_backward(gy, x, w, **kw))


def no_sync(dev: Device, case: tuple, algo: str) -> None:
    f = run_once(dev, case, algo)
    f()
    dev.sync()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with dev.no_sync(False):
            f()


def other_stream(dev: Device, case: tuple, algo: str) -> None:
    f = run_once(dev, case, algo)
    ref = f()
    dev.sync()
    stream = dev.xp.cuda.Stream(non_blocking=True)
    with stream:
        got = f()
    stream.synchronize()
    close(got[0], ref[0], 1, "y")
    for a, r in zip(got[1], ref[1]):
        close(a, r, 1, "grads")


def graph_capture(dev: Device, case: tuple, algo: str) -> None:
    f = run_once(dev, case, algo)
    ref = f()
    stream = dev.xp.cuda.Stream(non_blocking=True)
    with stream:
        f()
        stream.synchronize()
        stream.begin_capture()
        try:
            got = f()
        finally:
            graph = stream.end_capture()
        graph.launch()
    stream.synchronize()
    close(got[0], ref[0], 1, "y")


def algorithms_for(case: tuple) -> list[str]:
    import npconv

    return list(npconv.ALGORITHMS)


# --------------------------------------------------------------------------- timings

SUITE = [  # benchmarks' old suite: name, N, C, H, O, k, s, p, groups
    ("S1", 16, 64, 56, 64, 3, 1, 1, 1), ("S2", 16, 128, 28, 256, 3, 2, 1, 1),
    ("S3", 8, 3, 224, 64, 7, 2, 3, 1), ("S4", 16, 256, 28, 64, 1, 1, 0, 1),
    ("S5", 1, 32, 64, 32, 3, 1, 1, 1), ("S6", 16, 128, 28, 128, 3, 1, 1, 128),
    ("S7", 128, 3, 32, 16, 3, 1, 0, 1),
]


TIMED_ALGORITHMS = ("auto", "im2col")  # im2col: the fewest launches, for the planner's data


def timings(dev: Device) -> list[str]:
    """npconv (host time, device time) per algorithm vs torch+cuDNN (device time), float32,
    TF32 off; the paths auto took; matmul calls per call; pool memory that one call adds.
    Markdown rows."""
    import cupy

    real, calls = cupy.matmul, [0]

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    rows = ["| case | op | algorithm (paths) | npconv host ms | npconv GPU ms | torch GPU ms "
            "| ratio | matmuls | pool MiB |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for case in SUITE:
        for op, ours, theirs, paths in _suite_ops(dev, case):
            torch_ms = _gpu_ms(theirs)
            for algo in TIMED_ALGORITHMS:
                label = f"{algo} ({paths[algo]})"
                rows.append(_time_op(dev, case[0], op, label, ours[algo], torch_ms, counting,
                                     calls))
                print(rows[-1], flush=True)
    return rows


def _suite_ops(dev: Device, case: tuple) -> list[tuple[str, dict, Any, dict]]:
    import npconv

    torch = dev.torch
    _, n, c, h, o, k, s, p, g = case
    x, w = dev.rand((n, c, h, h), "float32", 1), dev.rand((o, c // g, k, k), "float32", 2)
    b = dev.rand((o,), "float32", 3)
    gy = dev.rand(tuple(npconv.conv2d(x, w, b, s, p, 1, g).shape), "float32", 4)
    tx, tw, tb, tgy = (torch.from_dlpack(a) for a in (x, w, b, gy))
    plans = {a: npconv.explain(x, w, s, p, 1, g, algorithm=a) for a in TIMED_ALGORITHMS}
    fwd = {a: functools.partial(npconv.conv2d, x, w, b, s, p, 1, g, algorithm=a)
           for a in TIMED_ALGORITHMS}
    bwd = {a: functools.partial(npconv.conv2d_backward, gy, x, w, s, p, 1, g, algorithm=a)
           for a in TIMED_ALGORITHMS}
    return [
        ("forward", fwd, lambda: torch.nn.functional.conv2d(tx, tw, tb, s, p, 1, g),
         {a: plans[a].forward for a in TIMED_ALGORITHMS}),
        ("backward", bwd, lambda: torch.ops.aten.convolution_backward(
            tgy, tx, tw, [o], [s, s], [p, p], [1, 1], False, [0, 0], g, [True, True, True]),
         {a: f"{plans[a].grad_input}/{plans[a].grad_weight}" for a in TIMED_ALGORITHMS}),
    ]


def _gpu_ms(func: Any) -> float:
    import cupyx.profiler

    result = cupyx.profiler.benchmark(func, name="torch", n_repeat=10, n_warmup=3)
    return float(result.gpu_times.mean()) * 1e3


def _time_op(dev: Device, name: str, op: str, label: str, ours: Any, torch_ms: float,
             counting: Any, calls: list[int]) -> str:
    import cupy
    import cupyx.profiler

    pool = cupy.get_default_memory_pool()
    # name=: benchmark() reads func.__name__ by default, which a partial lacks
    a = cupyx.profiler.benchmark(ours, name=label, n_repeat=10, n_warmup=3)
    real = cupy.matmul
    cupy.matmul, calls[0] = counting, 0
    try:
        dev.sync()
        pool.free_all_blocks()
        base = pool.total_bytes()
        result = ours()
        dev.sync()
        extra = (pool.total_bytes() - base) / 2**20
    finally:
        cupy.matmul = real
    del result
    cpu, gpu = a.cpu_times.mean() * 1e3, a.gpu_times.mean() * 1e3
    return (f"| {name} | {op} | {label} | {cpu:.2f} | {gpu:.2f} | {torch_ms:.3f} "
            f"| {gpu / torch_ms:.2f} | {calls[0]} | {extra:.1f} |")


# --------------------------------------------------------------------------- main


def gpu_available() -> str | None:
    """None if CuPy sees a CUDA device and torch has CUDA, else why not."""
    try:
        import cupy
    except ImportError as exc:
        return f"CuPy is not installed ({exc})"
    try:
        if not cupy.is_available():
            return "CuPy is installed but sees no CUDA device"
    except Exception as exc:  # noqa: BLE001 - a broken CUDA install
        return f"CuPy cannot reach a device ({type(exc).__name__}: {exc})"
    import torch

    if not torch.cuda.is_available():
        return "torch has no CUDA device (install a CUDA build of torch)"
    return None


def correctness(dev: Device, tiny: bool) -> None:
    for case in CASES:
        for dtype in ("float64", "float32"):
            for algo in algorithms_for(case):
                for small in ((False, True) if tiny and dtype == "float64" else (False,)):
                    label = f"{case[0]} {dtype} {algo}" + (" small-workspace" if small else "")
                    check(f"conv {label}",
                          lambda c=case, t=dtype, a=algo, sm=small: conv_case(dev, c, t, a, sm))
    for dtype in ("float64", "float32"):
        for s, p, op, g in ((1, 0, 0, 1), (2, 1, 1, 2), (3, 2, 2, 1)):
            check(f"transposed {dtype} s{s} p{p} op{op} g{g}",
                  lambda t=dtype, s=s, p=p, op=op, g=g: transposed_case(dev, t, s, p, op, g))
        check(f"im2col/col2im vs unfold/fold {dtype}", lambda t=dtype: unfold_fold(dev, t))
    for dtype in ("float16", "complex64", "complex128"):
        check(f"conv2d {dtype} vs torch wide", lambda t=dtype: other_dtype(dev, t))
    for kind in ("negative", "fortran", "strided", "transposed"):
        check(f"layout {kind}", lambda k=kind: layouts(dev, k))
    check(f"nn Conv2d + ConvTranspose2d on the {dev.backend} backend", lambda: nn_layers(dev))
    check("testing.check_grad on device arrays", lambda: grad_check(dev))


def device_checks(dev: Device) -> None:
    for case in CASES[:9]:
        for algo in algorithms_for(case):
            check(f"no D2H sync {case[0]} {algo}", lambda c=case, a=algo: no_sync(dev, c, a))
            if not dev.standin:
                check(f"non-default stream {case[0]} {algo}",
                      lambda c=case, a=algo: other_stream(dev, c, a))


def summary(dev: Device, seconds: float, rows: list[str]) -> str:
    import npconv

    lines = ["## Probe (benchmarks/gpu_probe.py)", "",
             f"Device: {dev.name}; npconv {npconv.__version__}; "
             + (f"CuPy {dev.xp.__version__}; " if not dev.standin else "")
             + f"torch {dev.torch.__version__}; NumPy {np.__version__}; "
             f"{seconds:.0f} s.", "",
             f"- checks passed: {len(RESULTS['PASS'])}",
             f"- checks failed: {len(RESULTS['FAIL'])}"
             + (": " + ", ".join(RESULTS["FAIL"][:30]) if RESULTS["FAIL"] else ""),
             f"- refusals and information: {len(RESULTS['INFO'])}", ""]
    if rows:
        lines += ["Old suite, float32, TF32 off, `cupyx.profiler.benchmark` (mean of 10; "
                  "GPU ms is the device time, host ms the time the call held the host):", "",
                  *rows, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--standin", action="store_true",
                        help="run the correctness and sync checks on the CPU stand-in backend "
                             "against torch CPU (no GPU needed)")
    parser.add_argument("--no-tiny", action="store_true", help="skip the tiny-workspace runs")
    parser.add_argument("--no-timings", action="store_true", help="skip the timing table")
    parser.add_argument("--summary", help="also write the markdown summary to this file")
    parser.add_argument("--detect", action="store_true",
                        help="only say whether a usable GPU is there (exit 0, else 3)")
    args = parser.parse_args(argv)
    if args.detect:
        why = gpu_available()
        print(f"gpu_probe: {'a usable GPU' if why is None else 'no usable GPU: ' + why}",
              flush=True)
        return 0 if why is None else EXIT_NO_GPU
    if not args.standin:
        why = gpu_available()
        if why is not None:
            print(f"gpu_probe: no usable GPU: {why}. Nothing was checked; run with --standin "
                  "for the CPU stand-in.", file=sys.stderr)
            return EXIT_NO_GPU
        if os.environ.get("CUPY_TF32", "0") not in ("", "0"):
            print("gpu_probe: unset CUPY_TF32 (TF32 matmuls are too loose for the checks)",
                  file=sys.stderr)
            return 2
    dev = Device(args.standin)
    print(f"device: {dev.name}", flush=True)
    t0 = time.perf_counter()
    correctness(dev, not args.no_tiny)
    print(f"-- correctness done in {time.perf_counter() - t0:.0f} s", flush=True)
    device_checks(dev)
    rows: list[str] = []
    if not dev.standin:
        if not args.no_timings:
            try:
                rows = timings(dev)
            except Exception as exc:  # noqa: BLE001
                report("FAIL", "timings", f"{type(exc).__name__}: {exc}")
        for case in CASES[:4]:  # last: a failed capture may leave the stream unusable
            for algo in ("auto", "im2col"):
                try:
                    graph_capture(dev, case, algo)
                except Exception as exc:  # noqa: BLE001 - information only
                    report("INFO", f"CUDA-graph capture {case[0]} {algo}",
                           f"not capturable: {type(exc).__name__}: {exc}")
                else:
                    report("INFO", f"CUDA-graph capture {case[0]} {algo}", "captured")
    text = summary(dev, time.perf_counter() - t0, rows)
    print(text, flush=True)
    if args.summary:
        with open(args.summary, "w") as fh:
            fh.write(text + "\n")
    return 1 if RESULTS["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
