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

from .. import backend, executor, scratch, workspace
from ..geometry import ConvGeometry
from ..plan import Problem
from ._common import empty_grads

# Input and output bytes per chunk of tasks: a few chunks per thread.
TARGET_CHUNK_BYTES = 2**19
# Channels last (vectorized over the channels of a pixel) for images whose grid has at
# most this many elements and at least this many output channels: on MobileNetV2's
# 12x12 to 3x3 layers 2-8x faster than the planes, which won at 24x24 and up and with
# few channels (one thread, measured: docs/performance.md, 2026-12-03).
LAST_MAX_GRID = 256
LAST_MIN_CHANNELS = 16
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
    return compiled_needs(problem)


def compiled_needs(problem: Problem) -> str | None:
    """None for float32 or float64 NumPy arrays with numba installed (what every compiled
    path needs), else what is missing."""
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

    def accumulator_size(self, nb: int) -> int:
        """Elements of a task's accumulator: an output grid of nb images, or (grad
        input's gather, stride 1) a block's phase grid with the kernel's reach in
        front of it."""
        (kh, kw), (_, _, d0, d1, _, _) = self.kernel2, self.params
        reach = (kh - 1) * d0 * self.width + (kw - 1) * d1
        return max(nb * self.rows * self.width, math.prod(self.phase_shape(nb)) + reach)


@functools.lru_cache(maxsize=256)
def layout(geometry: ConvGeometry) -> Layout:
    return Layout.of(geometry)


def _items(tasks: int, per_task: int) -> list[tuple[int, int]]:
    """Chunks (start, stop) of tasks: about TARGET_CHUNK_BYTES of input and output
    each (``per_task`` bytes per task), cut into an even count (equal shares for 2 or
    4 threads)."""
    most = workspace.balanced(tasks, max(1, TARGET_CHUNK_BYTES // max(per_task, 1)))
    return [(s, min(tasks, s + most)) for s in range(0, tasks, most)]


def _planes_scratch(xp: Any, dtype: Any, lay: Layout, nb: int) -> tuple[Any, Any]:
    """One worker's phase grid (zero: see depthwise_kernels._fill) and accumulator
    for blocks of ``nb`` images."""
    return (scratch.zeros(xp, lay.phase_shape(nb), dtype),
            scratch.empty(xp, (lay.accumulator_size(nb),), dtype))


@dataclass(frozen=True)
class _Job:
    """One kernel's call over chunks of tasks: its arrays (after the partial sum of a
    reduction), then the worker's scratch, the chunk's (start, stop), the integers."""

    kernel: Any
    arrays: tuple[Any, ...]
    params: tuple[int, ...]
    partial: Any = None  # makes a reduction's zero partial sum


def _map_chunk(scratch: tuple[Any, ...], item: tuple[int, int], job: _Job) -> None:
    job.kernel(*job.arrays, *scratch, *item, *job.params)


def _sum_chunk(scratch: tuple[Any, ...], item: tuple[int, int], acc: Any, job: _Job) -> Any:
    if acc is None:
        acc = job.partial()
    job.kernel(acc, *job.arrays, *scratch, *item, *job.params)
    return acc


@dataclass(frozen=True)
class _Call:
    """How one call runs its kernels: planes (with scratch) or channels last."""

    lay: Layout
    n: int
    c: int
    mult: int
    dtype: Any
    nb: int  # images per task of the planes; 0: channels last
    scratch: Any  # () -> one worker's scratch tuple
    scratch_bytes: int
    arrays: tuple[Any, ...]  # the call's inputs (which backend, for the executor)

    @classmethod
    def of(cls, problem: Problem, xp: Any, dtype: Any, n: int, o: int,
           arrays: tuple[Any, ...]) -> _Call:
        lay, c = layout(problem.geometry), problem.in_channels
        if lay.rows * lay.width <= LAST_MAX_GRID and o >= LAST_MIN_CHANNELS:
            return cls(lay, n, c, o // c, dtype, 0, tuple, 0, arrays)
        nb = lay.images(n)
        scratch = functools.partial(_planes_scratch, xp, dtype, lay, nb)
        size = math.prod(lay.phase_shape(nb)) + lay.accumulator_size(nb)
        return cls(lay, n, c, o // c, dtype, nb, scratch, size * dtype.itemsize, arrays)

    @property
    def last(self) -> bool:
        return self.nb == 0

    @property
    def planes_params(self) -> tuple[int, ...]:
        """The planes kernels' integers: (nb, s0, s1, d0, d1, p0, p1)."""
        return (self.nb,) + self.lay.params

    def run(self, kernel: Any, arrays: tuple[Any, ...], params: tuple[int, ...],
            rows: int = 0, total: Any = None) -> None:
        """``kernel`` over every task, in chunks on the executor's threads: blocks of
        images and channels, or (channels last) ``rows`` rows of every image. With
        ``total``, each lane's partial sums are added to it."""
        lay, itemsize, o = self.lay, self.dtype.itemsize, self.c * self.mult
        per_image = (math.prod(lay.in2) * self.c + math.prod(lay.out2) * o) * itemsize
        if self.last:
            tasks, per_task = self.n * rows, per_image // rows
        else:
            tasks = -(-self.n // self.nb) * self.c
            per_task = self.nb * per_image // self.c
        partial = None
        if total is not None:
            partial = functools.partial(scratch.zeros, backend.get_array_module(total),
                                        total.shape, total.dtype)
        job = _Job(kernel, arrays, params, partial)
        common: dict[str, Any] = dict(
            scratch=self.scratch, per_worker_bytes=self.scratch_bytes, arrays=self.arrays,
            # the bytes the kernels pass over, a multiply-add per tap over each output
            # plane (planes: over its grid): what decides, against the executor's
            # serial threshold, whether to thread
            work_bytes=self.n * o * math.prod(lay.kernel2) * itemsize
            * (math.prod(lay.out2) if self.last else lay.rows * lay.width))
        if total is None:
            executor.map_chunks(_map_chunk, _items(tasks, per_task), job, **common)
        else:
            executor.reduce_chunks(_sum_chunk, _items(tasks, per_task), total, job, **common)


def _planar(a: Any, size: tuple[int, int], xp: Any) -> Any:
    """a (N, C, *size) as a C-contiguous (N, C, *size2)."""
    return xp.ascontiguousarray(a).reshape(a.shape[:2] + size)


def _last(a: Any, size: tuple[int, int], xp: Any, repeat: int = 1) -> Any:
    """a (N, C, *size) channels last: a contiguous (N, *size2, C * repeat), each
    channel ``repeat`` times in a row."""
    if repeat == 1 and a.flags.c_contiguous:
        return _transpose_into(xp.empty((a.shape[0],) + size + (a.shape[1],), dtype=a.dtype), a)
    moved = xp.moveaxis(a.reshape(a.shape[:2] + size), 1, 3)
    return xp.ascontiguousarray(moved if repeat == 1 else xp.repeat(moved, repeat, axis=3))


def _transpose_into(out: Any, a: Any) -> Any:
    """``out`` (N, *rest, K), C-contiguous, <- ``a`` (N, K, *rest), C-contiguous, with its
    axis 1 moved last; or the other way round (channels last back to planes) for ``a``
    (N, *rest, K) and ``out`` (N, K, *rest). Returns ``out``."""
    from .windows_kernels import LANE_BYTES, transpose_images

    n, rows = a.shape[0], a.shape[1]
    dst, src = out.reshape(n, -1, rows), a.reshape(n, rows, -1)
    if min(dst.shape[1], rows) * a.dtype.itemsize < LANE_BYTES:
        dst[...] = src.transpose(0, 2, 1)  # no whole block: the kernel's edge loop is slower
    else:
        transpose_images(dst, src)
    return out


def _taps_planar(weight: Any, lay: Layout, xp: Any, c: int) -> Any:
    """weight (O, 1, *k) as a contiguous (C, mult, kh, kw)."""
    return xp.ascontiguousarray(weight).reshape((c, weight.shape[0] // c) + lay.kernel2)


def _taps_last(weight: Any, lay: Layout, xp: Any) -> Any:
    """weight (O, 1, *k) as a contiguous (kh, kw, O)."""
    return xp.ascontiguousarray(xp.moveaxis(weight.reshape((weight.shape[0],) + lay.kernel2),
                                            0, 2))


def forward(problem: Problem, x: Any, weight: Any, bias: Any) -> Any:
    """y (N, O, *out) = depthwise conv(x, weight) + bias."""
    from . import depthwise_kernels as kernels

    xp = backend.get_array_module(x, weight)
    g, lay = problem.geometry, layout(problem.geometry)
    n, c, o = x.shape[0], x.shape[1], weight.shape[0]
    y = xp.empty((n, o) + g.out_size, dtype=x.dtype)
    if y.size == 0 or c == 0:
        return y
    b = xp.zeros(o, dtype=x.dtype) if bias is None else xp.ascontiguousarray(bias, dtype=x.dtype)
    call = _Call.of(problem, xp, x.dtype, n, o, (x, weight))
    if call.last:
        yt = scratch.empty(xp, (n,) + lay.out2 + (o,), x.dtype)
        call.run(kernels.forward_last, (yt, _last(x, lay.in2, xp, o // c),
                                        _taps_last(weight, lay, xp), b),
                 lay.params, rows=lay.out2[0])
        return _transpose_into(y, yt.reshape(n, -1, o))
    call.run(kernels.forward_planes, (y.reshape((n, o) + lay.out2), _planar(x, lay.in2, xp),
                                      _taps_planar(weight, lay, xp, c), b), call.planes_params)
    return y


def _backward_last(call: _Call, gy: Any, x: Any, weight: Any, need_input: bool,
                   need_weight: bool, xp: Any, in_size: tuple[int, ...]) -> tuple[Any, Any]:
    """(gx, gw) channels last: gx summed over the repeated channels, gw (O, 1, *k)."""
    from . import depthwise_kernels as kernels

    lay, (n, o), c = call.lay, gy.shape[:2], call.c
    gyt, wt = _last(gy, lay.out2, xp), _taps_last(weight, lay, xp)
    gx = gw = None
    if need_input:
        gxt = scratch.empty(xp, (n,) + lay.in2 + (o,), gy.dtype)
        call.run(kernels.grad_input_last, (gxt, gyt, wt), lay.params, rows=lay.in2[0])
        if call.mult > 1:
            gxt = gxt.reshape((n,) + lay.in2 + (c, call.mult)).sum(axis=-1)
        gx = _transpose_into(xp.empty((n, c) + in_size, dtype=gy.dtype), gxt.reshape(n, -1, c))
    if need_weight:
        total = xp.zeros(lay.kernel2 + (o,), dtype=gy.dtype)
        call.run(kernels.grad_weight_last, (gyt, _last(x, lay.in2, xp, call.mult)),
                 lay.params, rows=lay.out2[0], total=total)
        gw = xp.ascontiguousarray(xp.moveaxis(total, 2, 0)).reshape(weight.shape)
    return gx, gw


def backward(problem: Problem, gy: Any, x: Any, weight: Any, need_input: bool,
             need_weight: bool) -> tuple[Any, Any]:
    """(gx, gw) of y = depthwise conv(x, weight); either may be skipped (None)."""
    from . import depthwise_kernels as kernels

    xp = backend.get_array_module(gy, x, weight)
    g, c = problem.geometry, problem.in_channels
    if gy.size == 0 or c == 0 or not (need_input or need_weight):
        return empty_grads(problem, xp, need_input, need_weight, tuple(weight.shape))
    n, o = gy.shape[:2]
    call = _Call.of(problem, xp, gy.dtype, n, o,
                    tuple(a for a in (gy, x, weight) if a is not None))
    if call.last:
        return _backward_last(call, gy, x, weight, need_input, need_weight, xp, g.in_size)
    lay, w = call.lay, _taps_planar(weight, call.lay, xp, c)
    gy4, params = _planar(gy, lay.out2, xp), call.planes_params
    gx = gw = None
    if need_input:
        gx = xp.empty((n, c) + g.in_size, dtype=gy.dtype)
        call.run(kernels.grad_input_planes, (gx.reshape((n, c) + lay.in2), gy4, w), params)
    if need_weight:
        total = xp.zeros(w.shape, dtype=gy.dtype)
        call.run(kernels.grad_weight_planes, (gy4, _planar(x, lay.in2, xp)), params,
                 total=total)
        gw = total.reshape(weight.shape)
    return gx, gw
