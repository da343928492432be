"""Direct path: a sum over kernel offsets of shifted inputs, with no im2col buffer.

With x_k the input shifted by kernel offset k (a strided slice of the padded
input, shape (N, C, *out)) and W_k = weight[..., k]:

    forward      y        = sum_k  W_k (g, O/g, C/g) @ x_k (g, C/g, L)
    grad weight  gW[..,k] = sum_n  gy (g, O/g, L) @ x_k^T (g, L, C/g)
    grad input   gx_k    += W_k^T (g, C/g, O/g) @ gy (g, O/g, L),  scattered back at offset k

For depthwise convolutions (C/g == 1, O = C * mult) every matmul above is an
elementwise product broadcast over the channel multiplier: that is the
:mod:`npconv.paths.depthwise` path, which shares this module's layout.

Stride 1 ("flat" layout): flatten the padded input of each channel. Output
position q = sum_a out_a P_a (P_a the padded strides in elements) reads
flat index q + off_k, off_k = sum_a k_a d_a P_a, so x_k is the 1-d slice
[off_k, off_k + Q) and every multiply-add runs over long contiguous rows.
Positions q with some out_a >= Out_a are junk and dropped at the end (and
kept zero in grad_output, so they contribute nothing to the gradients).

Other strides read x_k as a slice of the window view (N, C, *kernel, *out)
of the padded input and add the grad input back through the same slices.
This path takes any rank, groups, dilation, padding mode and dtype.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any

from .. import backend, executor, scratch, workspace
from ..geometry import ConvGeometry
from ..patches import ChunkPadder, unpad_add, window_view
from ..plan import Problem
from ._common import add_tall, empty_grads, matmul, matmul_tall, take

# Chunks this small keep the shifted operands of a depthwise layer in L2.
TARGET_CHUNK_BYTES = 1 * 2**20
# Grad input stacks all kernel offsets into one matmul up to this many channels per
# group: stacking won for a few channels (measured at C = 3) and lost at 8-16.
STACK_MAX_CHANNELS = 4


def requires(problem: Problem, op: str) -> str | None:
    """None: the direct path computes every map of every convolution."""
    return None


# --------------------------------------------------------------------------- the layout


class Layout:
    """Kernel offsets and output extent of the flat (stride-1) or strided layout."""

    def __init__(self, geometry: ConvGeometry):
        g = geometry
        self.geometry = g
        self.flat = all(s == 1 for s in g.stride)
        self.padded = g.padded_size
        self.volume = math.prod(self.padded)
        strides = [math.prod(self.padded[a + 1:]) for a in range(g.nd)]
        self.taps = list(itertools.product(*(range(k) for k in g.kernel)))
        self.offsets = [sum(t * d * st for t, d, st in zip(tap, g.dilation, strides))
                        for tap in self.taps]
        # flat extent: last valid output position + 1
        self.q = sum((n - 1) * st for n, st in zip(g.out_size, strides)) + 1
        # positions per image of one shifted operand (flat: with junk; else: the output)
        self.length = self.q if self.flat else g.out_volume
        # the valid output region of a (b, ch, *padded) array
        self.valid = (slice(None), slice(None)) + tuple(slice(0, n) for n in g.out_size)

    def crop(self, ext: Any) -> Any:
        """(b, ch, P) flat buffer -> its valid (b, ch, *out) region (a view)."""
        b, ch = ext.shape[:2]
        return ext.reshape((b, ch) + self.padded)[self.valid]

    def target(self, tap: tuple[int, ...]) -> tuple[slice, ...]:
        """Slices of the padded input that kernel offset ``tap`` reads (strided layout)."""
        g = self.geometry
        return (slice(None), slice(None)) + tuple(
            slice(t * d, t * d + s * (n - 1) + 1, s)
            for t, d, s, n in zip(tap, g.dilation, g.stride, g.out_size)
        )

    def source(self, xp: Any, padder: ChunkPadder, start: int, stop: int) -> Any:
        """The padded chunk x[start:stop]: (b, C, P) flat, or its window view."""
        xpad = xp.ascontiguousarray(padder(start, stop))  # flat views need C order
        if self.flat:
            return xpad.reshape(stop - start, xpad.shape[1], self.volume)
        return window_view(xpad, self.geometry)

    def shifted(self, source: Any, k: int) -> Any:
        """x_k (b, C, length) of a :meth:`source`: a slice (flat) or a copy (strided)."""
        if self.flat:
            off = self.offsets[k]
            return source[:, :, off: off + self.q]
        b, c = source.shape[:2]
        return source[(slice(None), slice(None)) + self.taps[k]].reshape(b, c, self.length)

    def gy_rows(self, gy_flat: Any, gy: Any, start: int, stop: int) -> Any:
        """gy[start:stop] as (b, O, length): in the flat layout copied into ``gy_flat``
        (a zero-filled buffer whose junk positions are never written, so stay zero)."""
        b, o = stop - start, gy.shape[1]
        if not self.flat:
            return gy[start:stop].reshape(b, o, self.length)
        ext = take(gy_flat, (b, o) + self.padded)
        ext[self.valid] = gy[start:stop]
        return ext.reshape(b, o, self.volume)[:, :, : self.q]


def chunk_of(per_image: int, n: int, target: int | None = TARGET_CHUNK_BYTES,
             positions: int = 0) -> int:
    """Images per chunk (MemoryError when one image's buffers exceed the workspace);
    ``positions`` per image keep a chunk's contraction long (workspace.chunk_length)."""
    return workspace.chunk_length(per_image, n, target=target, positions=positions)


def flat_buffer(xp: Any, size: int | None, dtype: Any, zero: bool = True) -> Any:
    """A flat scratch buffer of ``size`` elements (zero-filled, or empty); None for None."""
    if size is None:
        return None
    return (scratch.zeros if zero else scratch.empty)(xp, (size,), dtype)


def arrays_of(*arrays: Any) -> tuple[Any, ...]:
    """The non-None arrays (for the executor's backend check)."""
    return tuple(a for a in arrays if a is not None)


# --------------------------------------------------------------------------- forward


@dataclass(frozen=True)
class _Forward:
    """What every chunk of one forward call reads (x, w (g, O/g, C/g, K)) and writes (y)."""

    xp: Any
    x: Any
    w: Any
    bias: Any  # (1, O, 1, ...) or None
    y: Any
    lay: Layout
    chunk: int
    groups: int


@dataclass
class _ForwardScratch:
    padder: ChunkPadder
    acc: Any  # flat (chunk * O * P) or (chunk * O * L)
    tmp: Any  # flat (chunk * O * L)


def _forward_scratch(job: _Forward) -> _ForwardScratch:
    xp, lay = job.xp, job.lay
    o, dtype = job.y.shape[1], job.y.dtype
    extent = lay.volume if lay.flat else lay.length
    return _ForwardScratch(ChunkPadder(job.x, lay.geometry, job.chunk),
                           scratch.empty(xp, (job.chunk * o * extent,), dtype),
                           scratch.empty(xp, (job.chunk * o * lay.length,), dtype))


def forward(problem: Problem, x: Any, weight: Any, bias: Any) -> Any:
    """y (N, O, *out) = sum over kernel offsets of W_k @ x_k, plus bias."""
    xp = backend.get_array_module(x, weight)
    geometry, g = problem.geometry, problem.groups
    n, c = x.shape[:2]
    o = weight.shape[0]
    y = xp.empty((n, o) + geometry.out_size, dtype=x.dtype)
    if n == 0 or geometry.out_volume == 0:
        return y
    lay = Layout(geometry)
    w = weight.reshape(g, o // g, c // g, geometry.kernel_volume)
    per_image = (c * lay.volume + 2 * o * (lay.volume if lay.flat else lay.length)
                 ) * x.dtype.itemsize
    chunk = chunk_of(per_image, n)
    b_nd = None if bias is None else bias.reshape((1, o) + (1,) * geometry.nd)
    job = _Forward(xp, x, w, b_nd, y, lay, chunk, g)
    executor.map_chunks(_forward_chunk, range(0, n, chunk), job,
                        scratch=functools.partial(_forward_scratch, job),
                        per_worker_bytes=chunk * per_image, arrays=arrays_of(x, weight))
    return y


def _forward_chunk(buf: _ForwardScratch, start: int, job: _Forward) -> None:
    """y[start:stop] = conv(x[start:stop], w) + bias for one batch chunk."""
    xp, lay, g = job.xp, job.lay, job.groups
    stop = min(job.x.shape[0], start + job.chunk)
    b, c, o, length = stop - start, job.x.shape[1], job.y.shape[1], lay.length
    cg, og = c // g, o // g
    source = lay.source(xp, buf.padder, start, stop)
    if lay.flat:
        acc_ext = take(buf.acc, (b, o, lay.volume))
        acc = acc_ext[:, :, : lay.q]
    else:
        acc = take(buf.acc, (b, o, length))
    tmp = take(buf.tmp, (b, o, length))
    for k in range(len(lay.taps)):
        xs = lay.shifted(source, k).reshape(b, g, cg, length)  # x shifted by tap k
        dst = (acc if k == 0 else tmp).reshape(b, g, og, length)
        if cg == 1:
            # an outer product: a broadcast multiply beats a k=1 matmul
            # (b, g, 1, L) * (g, O/g, 1) -> (b, g, O/g, L)
            xp.multiply(xs, job.w[..., k], out=dst)
        else:
            # (g, O/g, C/g) @ (b, g, C/g, L) -> (b, g, O/g, L)
            matmul(xp, job.w[..., k], xs, out=dst)
        if k:
            acc += tmp
    out = job.y[start:stop]
    out[...] = lay.crop(acc_ext) if lay.flat else acc.reshape(out.shape)
    if job.bias is not None:
        out += job.bias


# --------------------------------------------------------------------------- backward


def backward(problem: Problem, gy: Any, x: Any, weight: Any, need_input: bool,
             need_weight: bool) -> tuple[Any, Any]:
    """(gx, gw) of y = conv(x, weight) by shifted multiply-adds; either may be skipped.

    At stride 1, grad input (with grad weight, if wanted) comes from one pass
    that lays grad_output out once in the flat layout; grad weight alone comes
    from flat columns and one long contraction. Other strides take one pass per map.
    ``weight`` and ``x`` are used as given (the caller conjugates them for the
    adjoint of a complex convolution); ``x`` may be None without ``need_weight``.
    """
    xp = backend.get_array_module(gy, x, weight)
    if gy.shape[0] == 0 or problem.geometry.out_volume == 0:
        return empty_grads(problem, xp, need_input, need_weight, tuple(weight.shape))
    if problem.stride_one and need_input:
        return _backward_flat(problem, xp, gy, x if need_weight else None, weight)
    if problem.stride_one:
        return None, _grad_weight_columns(problem, xp, gy, x, tuple(weight.shape))
    gx = _grad_input_strided(problem, xp, gy, weight) if need_input else None
    gw = _grad_weight_strided(problem, xp, gy, x, tuple(weight.shape)) if need_weight else None
    return gx, gw


# --------------------------------------------------------------------------- stride 1


@dataclass(frozen=True)
class _Flat:
    """What every chunk of a stride-1 backward reads (gy, x, W) and writes (gx)."""

    xp: Any
    gy: Any
    x: Any  # None without grad weight
    w_t: Any  # (g, C/g, O/g, K)
    w_all: Any  # (g, K*C/g, O/g) when stacked, else None
    gx: Any  # None without grad input
    lay: Layout
    chunk: int
    groups: int


@dataclass
class _FlatScratch:
    gy_flat: Any  # flat (chunk * O * P), zero
    padder: ChunkPadder | None  # with grad weight
    slabs: Any  # (K, chunk, C, P), zero
    gx_pad: Any  # flat (chunk * C * P)
    cols: Any  # flat (chunk * C * K * Q) when stacked, else None


def _flat_scratch(job: _Flat) -> _FlatScratch:
    xp, lay, chunk, dtype = job.xp, job.lay, job.chunk, job.gy.dtype
    o, c, k_vol = job.gy.shape[1], job.gx.shape[1], len(lay.taps)
    return _FlatScratch(
        # junk positions are never written: they stay zero for every chunk
        scratch.zeros(xp, (chunk * o * lay.volume,), dtype),
        None if job.x is None else ChunkPadder(job.x, lay.geometry, chunk),
        # every chunk writes the same slab positions, so the rest stays zero from this fill
        scratch.zeros(xp, (k_vol, chunk, c, lay.volume), dtype),
        scratch.empty(xp, (chunk * c * lay.volume,), dtype),
        flat_buffer(xp, chunk * c * k_vol * lay.q if job.w_all is not None else None, dtype,
                      zero=False))


def _backward_flat(problem: Problem, xp: Any, gy: Any, x: Any, weight: Any) -> tuple[Any, Any]:
    """gx, and gW when ``x`` is given, of a stride-1 convolution in one pass that lays
    grad_output out once in the flat layout."""
    geometry, g = problem.geometry, problem.groups
    n, o = gy.shape[:2]
    c, cg, og = problem.in_channels, problem.cg, problem.og
    k_vol = geometry.kernel_volume
    lay = Layout(geometry)
    w_t = weight.reshape(g, og, cg, k_vol).transpose(0, 2, 1, 3)  # (g, C/g, O/g, K)
    stacked = cg <= STACK_MAX_CHANNELS
    w_all = (xp.ascontiguousarray(w_t.transpose(0, 3, 1, 2)).reshape(g, k_vol * cg, og)
             if stacked else None)
    per_image = (o * lay.volume + c * lay.volume + c * k_vol * lay.volume
                 + (c * k_vol * lay.q if stacked else 0) + (0 if x is None else c * lay.volume)
                 ) * gy.dtype.itemsize
    chunk = chunk_of(per_image, n, target=None)
    # every chunk of gx is written once, by the slab sum
    gx = xp.empty((n, c) + geometry.in_size, dtype=gy.dtype)
    job = _Flat(xp, gy, x, w_t, w_all, gx, lay, chunk, g)
    common: dict[str, Any] = dict(scratch=functools.partial(_flat_scratch, job),
                                  per_worker_bytes=chunk * per_image,
                                  arrays=arrays_of(gy, x, weight))
    if x is None:
        executor.map_chunks(_flat_input_chunk, range(0, n, chunk), job, **common)
        return gx, None
    total = xp.empty((g, og, cg, k_vol), dtype=gy.dtype)
    executor.reduce_chunks(_flat_chunk, range(0, n, chunk), total, job, fresh=True, **common)
    return gx, total.reshape(weight.shape)


def _flat_input_chunk(buf: _FlatScratch, start: int, job: _Flat) -> None:
    """gx[start:stop] alone (no grad weight to sum)."""
    _flat_chunk(buf, start, None, job)


def _flat_chunk(buf: _FlatScratch, start: int, acc: Any, job: _Flat) -> Any:
    """gx[start:stop], and acc (g, O/g, C/g, K) += gW of the chunk when x is given."""
    lay, g = job.lay, job.groups
    stop = min(job.gy.shape[0], start + job.chunk)
    b, og = stop - start, job.w_t.shape[2]
    # grad_output in the flat layout (b, g, O/g, Q); its junk positions stay zero
    gys = lay.gy_rows(buf.gy_flat, job.gy, start, stop).reshape(b, g, og, lay.q)
    if job.x is not None:
        acc = _shifted_weight(buf, start, stop, gys, acc, job)
    _flat_input(buf, start, stop, gys, job)
    return acc


def _shifted_weight(buf: _FlatScratch, start: int, stop: int, gys: Any, acc: Any,
                    job: _Flat) -> Any:
    """acc (g, O/g, C/g, K) += gW of x[start:stop], each offset's rows read in place
    (stacked: all offsets copied into one operand of long rows)."""
    xp, lay, g = job.xp, job.lay, job.groups
    assert buf.padder is not None
    b, (cg, og), q, k_vol = stop - start, job.w_t.shape[1:3], lay.q, len(lay.taps)
    xf = lay.source(xp, buf.padder, start, stop).reshape(b, g, cg, lay.volume)
    if acc is None:
        acc = scratch.zeros(xp, (g, og, cg, k_vol), job.gy.dtype)
    if job.w_all is not None:
        cols = take(buf.cols, (b, g, k_vol, cg, q))
        for k, off in enumerate(lay.offsets):
            cols[:, :, k] = xf[..., off: off + q]
        # sum_n gy (b, g, O/g, Q) @ cols^T (b, g, Q, K*C/g) -> (g, O/g, K, C/g)
        part = matmul_tall(xp, gys, cols.reshape(b, g, k_vol * cg, q).transpose(0, 1, 3, 2))
        acc += part.sum(axis=0).reshape(g, og, k_vol, cg).transpose(0, 1, 3, 2)
        return acc
    for k, off in enumerate(lay.offsets):
        # sum_n (b, g, O/g, Q) @ (b, g, Q, C/g) -> (g, O/g, C/g)
        acc[..., k] += matmul_tall(xp, gys, xf[..., off: off + q].transpose(0, 1, 3, 2)).sum(axis=0)
    return acc


def _flat_input(buf: _FlatScratch, start: int, stop: int, gys: Any, job: _Flat) -> None:
    """gx[start:stop]: each offset's column gradient written into its own slab at its
    shift, the slabs summed contiguously (NumPy's strided in-place adds run several
    times slower than copies or matmul writes)."""
    xp, lay, g = job.xp, job.lay, job.groups
    b, cg, q, k_vol = stop - start, job.w_t.shape[1], lay.q, len(lay.taps)
    stack = buf.slabs[:, :b]  # (K, b, C, P)
    if job.w_all is not None:
        # All kernel offsets stacked into one matmul per image, (k, c) rows in the
        # flat layout: the copies into the slabs run over long 1-d rows.
        cols = take(buf.cols, (b, g, k_vol * cg, q))
        # (g, K*C/g, O/g) @ (b, g, O/g, Q) -> (b, g, K*C/g, Q)
        matmul(xp, job.w_all, gys, out=cols)
        cols_k = cols.reshape(b, g, k_vol, cg, q)
        for k, off in enumerate(lay.offsets):
            stack[k].reshape(b, g, cg, lay.volume)[..., off: off + q] = cols_k[:, :, k]
    else:
        for k, off in enumerate(lay.offsets):
            # (g, C/g, O/g) @ (b, g, O/g, Q) -> slab k at its shift
            slab = stack[k].reshape(b, g, cg, lay.volume)
            matmul(xp, job.w_t[..., k], gys, out=slab[..., off: off + q])
    _sum_slabs(xp, stack, take(buf.gx_pad, (b, g * cg, lay.volume)), job.gx[start:stop],
               lay.geometry)


def _sum_slabs(xp: Any, slabs: Any, padded_flat: Any, out: Any, geometry: ConvGeometry) -> None:
    """``out = unpad(sum of slabs)``: without padding the sum lands in ``out`` directly."""
    if not geometry.has_padding:
        xp.sum(slabs, axis=0, out=out.reshape(padded_flat.shape))
        return
    xp.sum(slabs, axis=0, out=padded_flat)
    unpad_add(out, padded_flat.reshape(out.shape[:2] + geometry.padded_size), geometry,
              accumulate=False)


# --------------------------------------------------------------------------- grad weight alone


@dataclass(frozen=True)
class _Columns:
    """What every chunk of a stride-1 grad weight alone reads (gy, x)."""

    xp: Any
    gy: Any
    x: Any
    lay: Layout
    chunk: int
    groups: int
    rows: tuple[int, ...]  # the output rows' whole padded rows: (Out_0, P_1, ...)


@dataclass
class _ColumnsScratch:
    padder: ChunkPadder
    cols: Any  # (g, C/g, K, chunk, span), zero
    gy_buf: Any  # (O, chunk, *rows), zero
    partial: Any  # (g, C/g*K, O/g)


def _columns_scratch(job: _Columns) -> _ColumnsScratch:
    xp, lay, chunk, g = job.xp, job.lay, job.chunk, job.groups
    o, c, dtype = job.gy.shape[1], job.x.shape[1], job.gy.dtype
    # Zero-filled once: the junk positions of gy stay zero, and the columns' tails
    # past lay.q (never written) stay finite, for every chunk.
    return _ColumnsScratch(ChunkPadder(job.x, lay.geometry, chunk),
                           scratch.zeros(xp, (g, c // g, len(lay.taps), chunk,
                                              math.prod(job.rows)), dtype),
                           scratch.zeros(xp, (o, chunk) + job.rows, dtype),
                           scratch.empty(xp, (g, c // g * len(lay.taps), o // g), dtype))


def _grad_weight_columns(problem: Problem, xp: Any, gy: Any, x: Any,
                         shape: tuple[int, ...]) -> Any:
    """gW (O, C/g, *k) of a stride-1 convolution, from columns in the flat layout."""
    geometry, g = problem.geometry, problem.groups
    n, o = gy.shape[:2]
    c, k_vol = x.shape[1], geometry.kernel_volume
    lay = Layout(geometry)
    # whole padded rows (of the last axes) per output row, so (n, q) merge in the matmul
    rows = (geometry.out_size[0],) + lay.padded[1:]
    per_image = ((c * k_vol + o) * math.prod(rows) + c * lay.volume) * gy.dtype.itemsize
    chunk = chunk_of(per_image, n, target=None, positions=math.prod(rows))
    total = xp.empty((g, c // g * k_vol, o // g), dtype=gy.dtype)  # gW transposed
    job = _Columns(xp, gy, x, lay, chunk, g, rows)
    executor.reduce_chunks(_columns_chunk, range(0, n, chunk), total, job,
                           scratch=functools.partial(_columns_scratch, job),
                           per_worker_bytes=chunk * per_image, arrays=arrays_of(gy, x),
                           fresh=True)
    return total.transpose(0, 2, 1).reshape(shape)


def _columns_chunk(buf: _ColumnsScratch, start: int, acc: Any, job: _Columns) -> Any:
    """acc (g, C/g*K, O/g) += gW^T of x[start:stop], from columns in the flat layout.

    ``cols[c, k, n, q] = xpad_flat[n, c, q + off_k]`` holds every kernel offset's
    shifted input as one long row per (channel, image), so building it costs C*K
    row copies per image instead of C*K*Out_0 for im2col's windows. The batch and
    position axes merge into one contraction, ``cols (C*K, bQ) @ gy^T (bQ, O)``,
    with grad_output zero at the junk positions. Junk positions multiply real
    (finite) pixels by zero, so a non-finite input spreads NaN to a few more
    entries than im2col would.
    """
    xp, lay, g = job.xp, job.lay, job.groups
    stop = min(job.gy.shape[0], start + job.chunk)
    b, c, o = stop - start, job.x.shape[1], job.gy.shape[1]
    cg, span = c // g, math.prod(job.rows)
    buf.gy_buf[:, :b][lay.valid] = xp.moveaxis(job.gy[start:stop], 0, 1)
    xf = lay.source(xp, buf.padder, start, stop).reshape(b, g, cg, lay.volume)
    for k, off in enumerate(lay.offsets):
        buf.cols[:, :, k, :b, : lay.q] = xf[..., off: off + lay.q].transpose(1, 2, 0, 3)
    # (g, C/g*K, bQ) @ (g, bQ, O/g) -> (g, C/g*K, O/g), summed over the lane;
    # the long side first ran 1.3x faster here than gy @ cols^T
    cols = buf.cols[:, :, :, :b].reshape(g, cg * len(lay.taps), b * span)
    gy_t = buf.gy_buf[:, :b].reshape(g, o // g, b * span).transpose(0, 2, 1)
    return add_tall(xp, acc, cols, gy_t, buf.partial)


# --------------------------------------------------------------------------- other strides


@dataclass(frozen=True)
class _Strided:
    """What every chunk of one strided map reads (gy, W^T or x) and writes (gx)."""

    xp: Any
    gy: Any
    x: Any  # grad weight: the input; grad input: None
    w_t: Any  # grad input: (g, C/g, O/g, K); grad weight: None
    gx: Any  # grad input: the output; grad weight: None
    lay: Layout
    chunk: int
    groups: int


@dataclass
class _StridedScratch:
    padder: ChunkPadder | None  # grad weight
    gx_pad: Any  # flat (chunk * C * P), grad input
    tmp: Any  # flat (chunk * C * L), grad input


def _strided_scratch(job: _Strided) -> _StridedScratch:
    xp, lay, chunk = job.xp, job.lay, job.chunk
    if job.x is not None:
        return _StridedScratch(ChunkPadder(job.x, lay.geometry, chunk), None, None)
    c, dtype = job.gx.shape[1], job.gx.dtype
    return _StridedScratch(None, scratch.empty(xp, (chunk * c * lay.volume,), dtype),
                           scratch.empty(xp, (chunk * c * lay.length,), dtype))


def _grad_input_strided(problem: Problem, xp: Any, gy: Any, weight: Any) -> Any:
    """gx (N, C, *in) by per-offset matmuls added back through each offset's slices."""
    geometry, g = problem.geometry, problem.groups
    n, o = gy.shape[:2]
    c, cg = problem.in_channels, problem.cg
    lay = Layout(geometry)
    # every chunk of gx is written once, by unpad_add(accumulate=False)
    gx = xp.empty((n, c) + geometry.in_size, dtype=gy.dtype)
    w_t = weight.reshape(g, o // g, cg, geometry.kernel_volume).transpose(0, 2, 1, 3)
    per_image = (2 * c * lay.volume + c * lay.length) * gy.dtype.itemsize
    chunk = chunk_of(per_image, n)
    job = _Strided(xp, gy, None, w_t, gx, lay, chunk, g)
    executor.map_chunks(_grad_input_chunk, range(0, n, chunk), job,
                        scratch=functools.partial(_strided_scratch, job),
                        per_worker_bytes=chunk * per_image, arrays=arrays_of(gy, weight))
    return gx


def _grad_input_chunk(buf: _StridedScratch, start: int, job: _Strided) -> None:
    """gx[start:stop]: each offset's gradient added back through its strided slice."""
    xp, lay, g = job.xp, job.lay, job.groups
    geometry = lay.geometry
    stop = min(job.gy.shape[0], start + job.chunk)
    b, c, o, length = stop - start, job.gx.shape[1], job.gy.shape[1], lay.length
    cg, og = c // g, o // g
    gys = job.gy[start:stop].reshape(b, g, og, length)
    gx_pad = take(buf.gx_pad, (b, c) + lay.padded)
    gx_pad[...] = 0
    tmp = take(buf.tmp, (b, g, cg, length))
    for k, tap in enumerate(lay.taps):
        # (g, C/g, O/g) @ (b, g, O/g, L) -> (b, g, C/g, L)
        matmul(xp, job.w_t[..., k], gys, out=tmp)
        gx_pad[lay.target(tap)] += tmp.reshape((b, c) + geometry.out_size)
    unpad_add(job.gx[start:stop], gx_pad, geometry, accumulate=False)


def _grad_weight_strided(problem: Problem, xp: Any, gy: Any, x: Any,
                         shape: tuple[int, ...]) -> Any:
    """gW (O, C/g, *k) by one matmul per kernel offset over the window view."""
    geometry, g = problem.geometry, problem.groups
    n, o = gy.shape[:2]
    c = x.shape[1]
    lay = Layout(geometry)
    per_image = (c * lay.volume + o * lay.length + c * lay.length) * gy.dtype.itemsize
    chunk = chunk_of(per_image, n)
    total = xp.empty((g, o // g, c // g, geometry.kernel_volume), dtype=gy.dtype)
    job = _Strided(xp, gy, x, None, None, lay, chunk, g)
    executor.reduce_chunks(_grad_weight_chunk, range(0, n, chunk), total, job,
                           scratch=functools.partial(_strided_scratch, job),
                           per_worker_bytes=chunk * per_image, arrays=arrays_of(gy, x),
                           fresh=True)
    return total.reshape(shape)


def _grad_weight_chunk(buf: _StridedScratch, start: int, acc: Any, job: _Strided) -> Any:
    """acc (g, O/g, C/g, K) += gW of x[start:stop] by one matmul per kernel offset."""
    xp, lay, g = job.xp, job.lay, job.groups
    assert buf.padder is not None
    stop = min(job.gy.shape[0], start + job.chunk)
    b, c, o, length = stop - start, job.x.shape[1], job.gy.shape[1], lay.length
    cg, og = c // g, o // g
    gys = job.gy[start:stop].reshape(b, g, og, length)
    source = lay.source(xp, buf.padder, start, stop)
    if acc is None:
        acc = scratch.zeros(xp, (g, og, cg, len(lay.taps)), job.gy.dtype)
    for k in range(len(lay.taps)):
        xs = lay.shifted(source, k).reshape(b, g, cg, length)
        # sum_n (b, g, O/g, L) @ (b, g, L, C/g) -> (g, O/g, C/g)
        acc[..., k] += matmul_tall(xp, gys, xs.transpose(0, 1, 3, 2)).sum(axis=0)
    return acc
