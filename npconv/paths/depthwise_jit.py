"""Depthwise path with compiled kernels: one channel plane at a time, in cache.

The :mod:`npconv.paths.depthwise` path computes the same maps with NumPy
calls: columns of every tap and a matrix-vector product per channel. Its
passes over memory and its calls per channel left MobileNetV2's depthwise
layers 3-5x slower than torch. This path runs loops compiled by numba
(:mod:`npconv.paths.depthwise_kernels`): each (image, channel) plane is split
into its stride's phase grid once, and every tap is one contiguous
multiply-add over the whole plane, all of it in L1/L2:

    forward      y[n, c*mult + m]  = sum_ij w[c, m, i, j] x_pad[n, c] shifted by tap (i, j)
    grad input   gx[n, c]          = sum_m sum_ij w[c, m, i, j] gy[n, c*mult + m] shifted back
    grad weight  gW[c, m, i, j]    = sum_n <gy[n, c*mult + m], x_pad[n, c] shifted by (i, j)>

It takes 1-d and 2-d depthwise layers (any stride, dilation and channel
multiplier) with zero padding, in float32 or float64, on NumPy, when numba is
installed (``pip install "npconv[jit]"``). Chunks of planes run on the
executor's threads (the kernels release the GIL), with the usual guarantees:
a fixed cut of the planes, and weight-gradient partial sums added in order.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from .. import backend, executor, workspace
from ..geometry import ConvGeometry
from ..plan import Problem
from ._common import empty_grads

# Input and output bytes per chunk of tasks: a few chunks per thread.
TARGET_CHUNK_BYTES = 2**17
# Grid elements of a task's block of images: small images are stacked until about this
# many, so that a tap's multiply-add is long, while the block stays in L1/L2.
BLOCK_ELEMENTS = 4096


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether numba imports here (checked once; the kernels compile on first use)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def requires(problem: Problem, op: str) -> str | None:
    """None for a 1-d or 2-d zero-padded depthwise float layer on NumPy with numba."""
    g = problem.geometry
    if not problem.depthwise:
        return ("a depthwise convolution (groups > 1 and one input channel per group); got "
                f"{problem.in_channels} input channels in {problem.groups} group(s)")
    if g.nd > 2:
        return f"a 1-d or 2-d kernel; got {g.nd}-d"
    if not g.zero_padded:
        return "zero padding ('zeros' mode)"
    if problem.backend != "numpy":
        return f"NumPy arrays; got {problem.backend}"
    dtype = problem.dtype
    if dtype.kind != "f" or dtype.itemsize not in (4, 8) or not dtype.isnative:
        return f"float32 or float64 (native byte order); got {dtype}"
    if not available():
        return "numba, which is not installed here (pip install 'npconv[jit]')"
    return None


@dataclass(frozen=True)
class Layout:
    """A geometry as the kernels see it: 2-d (a 1-d layer has one row), each image's
    rows of the phase grid, and the integer arguments every kernel takes."""

    rows: int  # hb: grid rows per image
    width: int  # wt: grid columns
    params: tuple[int, ...]  # (s0, s1, d0, d1, p0, p1)
    in2: tuple[int, int]
    out2: tuple[int, int]
    kernel2: tuple[int, int]

    @classmethod
    def of(cls, g: ConvGeometry) -> Layout:
        lead = 2 - g.nd  # a 1-d layer is a 2-d one with one row
        size = (1,) * lead + g.in_size
        out = (1,) * lead + g.out_size
        kernel = (1,) * lead + g.kernel
        stride = (1,) * lead + g.stride
        dilation = (1,) * lead + g.dilation
        front = (0,) * lead + tuple(lo for lo, _ in g.pads)
        # an image's rows hold its windows' reads and every input pixel (grad input
        # merges them back)
        shift = [(k - 1) * d // s for k, d, s in zip(kernel, dilation, stride)]
        cover = [-(-(n + p) // s) for n, p, s in zip(size, front, stride)]
        return cls(max(out[0] + shift[0], cover[0]), max(out[1] + shift[1], cover[1]),
                   stride + dilation + front, (size[0], size[1]), (out[0], out[1]),
                   (kernel[0], kernel[1]))

    def images(self, n: int) -> int:
        """Images per task: their grid about BLOCK_ELEMENTS (a long multiply-add per
        tap however small the images)."""
        return max(1, min(n, BLOCK_ELEMENTS // (self.rows * self.width)))

    def phase_shape(self, nb: int) -> tuple[int, int, int, int]:
        """(s0, s1, rows, wt) of a block of nb images (a row of zeros under it: the
        last taps' runs overhang by up to a row)."""
        return self.params[0], self.params[1], nb * self.rows + 1, self.width


@functools.lru_cache(maxsize=256)
def layout(geometry: ConvGeometry) -> Layout:
    return Layout.of(geometry)


def _items(lay: Layout, tasks: int, nb: int, mult: int,
           itemsize: int) -> list[tuple[int, int]]:
    """Chunks (start, stop) of tasks: about TARGET_CHUNK_BYTES of input and output
    each, cut into an even count (equal shares for 2 or 4 threads)."""
    per_task = nb * (math.prod(lay.in2) + mult * math.prod(lay.out2)) * itemsize
    most = workspace.balanced(tasks, max(1, TARGET_CHUNK_BYTES // max(per_task, 1)))
    return [(s, min(tasks, s + most)) for s in range(0, tasks, most)]


def _work_bytes(lay: Layout, n: int, c: int, mult: int, itemsize: int) -> int:
    """Bytes the kernels pass over: a multiply-add over the grid per tap and output
    plane (what decides, against the executor's serial threshold, whether to thread)."""
    return n * c * mult * math.prod(lay.kernel2) * lay.rows * lay.width * itemsize


class _Scratch:
    """One worker's phase grid and accumulator for blocks of ``nb`` images."""

    def __init__(self, xp: Any, dtype: Any, lay: Layout, nb: int):
        self.ph = xp.empty(lay.phase_shape(nb), dtype=dtype)
        self.acc = xp.empty(nb * lay.rows * lay.width, dtype=dtype)


@dataclass(frozen=True)
class _Job:
    """The 4-d arrays a call's chunks read and write, and the kernels' integers."""

    kernels: Any  # the module of compiled kernels
    out: Any  # y (forward), gx (grad input) or None
    src: Any  # x (forward) or gy
    w: Any  # (C, mult, kh, kw)
    bias: Any  # (O,) (forward only)
    x: Any  # x (grad weight only)
    params: tuple[int, ...]  # (nb, s0, s1, d0, d1, p0, p1)


def _as4(a: Any, size: tuple[int, int], xp: Any) -> Any:
    """a (N, C, *size) as a C-contiguous (N, C, *size2)."""
    return xp.ascontiguousarray(a).reshape(a.shape[:2] + size)


def _run(kernel: Any, reduce: Any, lay: Layout, job: _Job, n: int, c: int, mult: int,
         xp: Any, dtype: Any, arrays: tuple[Any, ...]) -> None:
    """``kernel`` over every task (image block, channel) in chunks on the executor's
    threads; with ``reduce`` (the total) each lane's partial sums are added to it."""
    nb, itemsize = job.params[0], dtype.itemsize
    tasks = -(-n // nb) * c
    common: dict[str, Any] = dict(
        scratch=functools.partial(_Scratch, xp, dtype, lay, nb),
        per_worker_bytes=(math.prod(lay.phase_shape(nb)) + nb * lay.rows * lay.width)
        * itemsize,
        arrays=arrays, work_bytes=_work_bytes(lay, n, c, mult, itemsize))
    items = _items(lay, tasks, nb, mult, itemsize)
    if reduce is None:
        executor.map_chunks(kernel, items, job, **common)
    else:
        executor.reduce_chunks(kernel, items, reduce, job, **common)


def _forward_chunk(buf: _Scratch, item: tuple[int, int], job: _Job) -> None:
    job.kernels.forward_planes(job.out, job.src, job.w, job.bias, buf.ph, buf.acc, *item,
                               *job.params)


def forward(problem: Problem, x: Any, weight: Any, bias: Any) -> Any:
    """y (N, O, *out) = depthwise conv(x, weight) + bias, block by block."""
    from . import depthwise_kernels as kernels

    xp = backend.get_array_module(x, weight)
    g, lay = problem.geometry, layout(problem.geometry)
    n, c, o = x.shape[0], x.shape[1], weight.shape[0]
    y = xp.empty((n, o) + g.out_size, dtype=x.dtype)
    if y.size == 0 or c == 0:
        return y
    b = xp.zeros(o, dtype=x.dtype) if bias is None else xp.ascontiguousarray(bias, dtype=x.dtype)
    job = _Job(kernels, y.reshape((n, o) + lay.out2), _as4(x, lay.in2, xp),
               _as4(weight.reshape((c, o // c) + g.kernel), lay.kernel2, xp), b, None,
               (lay.images(n),) + lay.params)
    _run(_forward_chunk, None, lay, job, n, c, o // c, xp, x.dtype, (x, weight))
    return y


def _input_chunk(buf: _Scratch, item: tuple[int, int], job: _Job) -> None:
    job.kernels.grad_input_planes(job.out, job.src, job.w, buf.ph, buf.acc, *item,
                                  *job.params)


def _weight_chunk(buf: _Scratch, item: tuple[int, int], acc: Any, job: _Job) -> Any:
    if acc is None:
        acc = backend.get_array_module(job.w).zeros(job.w.shape, dtype=job.w.dtype)
    job.kernels.grad_weight_planes(acc, job.src, job.x, buf.ph, buf.acc, *item, *job.params)
    return acc


def backward(problem: Problem, gy: Any, x: Any, weight: Any, need_input: bool,
             need_weight: bool) -> tuple[Any, Any]:
    """(gx, gw) of y = depthwise conv(x, weight); either may be skipped (None)."""
    from . import depthwise_kernels as kernels

    xp = backend.get_array_module(gy, x, weight)
    g, lay = problem.geometry, layout(problem.geometry)
    c = problem.in_channels
    if gy.size == 0 or c == 0 or not (need_input or need_weight):
        return empty_grads(problem, xp, need_input, need_weight, tuple(weight.shape))
    n, o = gy.shape[:2]
    w = _as4(weight.reshape((c, o // c) + g.kernel), lay.kernel2, xp)
    gy4, params = _as4(gy, lay.out2, xp), (lay.images(n),) + lay.params
    arrays = tuple(a for a in (gy, x, weight) if a is not None)
    gx = gw = None
    if need_input:
        gx = xp.empty((n, c) + g.in_size, dtype=gy.dtype)
        job = _Job(kernels, gx.reshape((n, c) + lay.in2), gy4, w, None, None, params)
        _run(_input_chunk, None, lay, job, n, c, o // c, xp, gy.dtype, arrays)
    if need_weight:
        total = xp.zeros(w.shape, dtype=gy.dtype)
        job = _Job(kernels, None, gy4, w, None, _as4(x, lay.in2, xp), params)
        _run(_weight_chunk, total, lay, job, n, c, o // c, xp, gy.dtype, arrays)
        gw = total.reshape(weight.shape)
    return gx, gw
