"""Depthwise path: one input channel per group, as K multiply-adds over the batch chunk.

With C/g == 1 and O = C * mult (the channel multiplier), every matmul of the
direct path (:mod:`npconv.paths.direct`, whose flat layout this path shares)
is an elementwise product broadcast over the multiplier:

    forward      y[n, c, t]    = sum_k  w[c, t, k] x_k[n, c]
    grad weight  gW[c, t, k]   = sum_{n, q}  gy[n, c, t, q] x_k[n, c, q]
    grad input   gx_k[n, c]   += sum_t  w[c, t, k] gy[n, c, t],  added back at offset k

At stride 1 the K shifted rows of each (image, channel) are copied into
columns ``cols[n, c, k] = x_k[n, c]`` and contracted by one batched matmul
over the channels; at other strides each offset is one broadcast multiply.
Through im2col a depthwise layer ran 6-7x slower than torch: this is its
fast path. The batch chunks run on host threads through the executor (the
work is elementwise, or matmuls too small for the BLAS to spread).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from .. import backend, executor
from ..patches import ChunkPadder, unpad_add
from ..plan import Problem, full_correlation
from ._common import empty_grads, grad_input_by_forward, take
from .direct import Layout, arrays_of, chunk_of, flat_buffer


def requires(problem: Problem, op: str) -> str | None:
    """None for a depthwise convolution (any map, rank, stride, padding and dtype)."""
    if problem.depthwise:
        return None
    return ("a depthwise convolution (groups > 1 and one input channel per group); got "
            f"{problem.in_channels} input channels in {problem.groups} group(s)")


# --------------------------------------------------------------------------- forward


@dataclass(frozen=True)
class _Forward:
    """What every chunk of one forward call reads (x, w (C, mult, K)) and writes (y)."""

    xp: Any
    x: Any
    w: Any
    bias: Any  # (1, O, 1, ...) or None
    y: Any
    lay: Layout
    chunk: int


@dataclass
class _ForwardScratch:
    padder: ChunkPadder
    acc: Any  # flat (chunk * O * P) or (chunk * O * L)
    tmp: Any  # flat (chunk * O * L) when strided, else None
    cols: Any  # flat (chunk * C * K * Q) when flat, else None


def _forward_scratch(job: _Forward) -> _ForwardScratch:
    xp, lay, chunk = job.xp, job.lay, job.chunk
    (c, o), dtype = (job.x.shape[1], job.y.shape[1]), job.y.dtype
    flat = lay.flat
    return _ForwardScratch(
        ChunkPadder(job.x, lay.geometry, chunk),
        xp.empty(chunk * o * (lay.volume if flat else lay.length), dtype=dtype),
        flat_buffer(xp, None if flat else chunk * o * lay.length, dtype, zero=False),
        flat_buffer(xp, chunk * c * len(lay.taps) * lay.q if flat else None, dtype, zero=False))


def forward(problem: Problem, x: Any, weight: Any, bias: Any) -> Any:
    """y (N, O, *out) = depthwise conv(x, weight) + bias by K multiply-adds per chunk."""
    xp = backend.get_array_module(x, weight)
    geometry = problem.geometry
    n, c = x.shape[:2]
    o = weight.shape[0]
    y = xp.empty((n, o) + geometry.out_size, dtype=x.dtype)
    if n == 0 or geometry.out_volume == 0:
        return y
    lay = Layout(geometry)
    k_vol = geometry.kernel_volume
    w = weight.reshape(c, o // c, k_vol)  # (C, mult, K)
    per_image = (c * lay.volume + 2 * o * (lay.volume if lay.flat else lay.length)
                 + c * k_vol * lay.length) * x.dtype.itemsize
    chunk = chunk_of(per_image, n)
    b_nd = None if bias is None else bias.reshape((1, o) + (1,) * geometry.nd)
    job = _Forward(xp, x, w, b_nd, y, lay, chunk)
    # Depthwise layers are elementwise work and small matmuls that BLAS runs on one
    # core: the chunks go to host threads (each with its own buffers).
    executor.map_chunks(_forward_chunk, range(0, n, chunk), job,
                        scratch=functools.partial(_forward_scratch, job),
                        per_worker_bytes=chunk * per_image, arrays=arrays_of(x, weight))
    return y


def _forward_chunk(buf: _ForwardScratch, start: int, job: _Forward) -> None:
    """y[start:stop] = depthwise conv(x[start:stop], w) + bias for one batch chunk."""
    xp, lay, w = job.xp, job.lay, job.w
    stop = min(job.x.shape[0], start + job.chunk)
    b, c, o, length = stop - start, job.x.shape[1], job.y.shape[1], lay.length
    mult = o // c
    source = lay.source(xp, buf.padder, start, stop)
    out = job.y[start:stop]
    if lay.flat:
        # cols[n, c, k] = x_k[n, c]: K contiguous 1-d copies, in cache
        cols = take(buf.cols, (b, c, len(lay.taps), length))
        for k, off in enumerate(lay.offsets):
            cols[:, :, k] = source[:, :, off: off + length]
        acc_ext = take(buf.acc, (b, o, lay.volume))
        # y[n, c, t] = w[c, t] (mult, K) @ cols[n, c] (K, Q): batched over channels
        xp.matmul(w, cols, out=acc_ext[:, :, :length].reshape(b, c, mult, length))
        out[...] = lay.crop(acc_ext)
    else:
        acc = take(buf.acc, (b, c, mult, length))
        tmp = take(buf.tmp, (b, c, mult, length))
        for k in range(len(lay.taps)):
            xs = lay.shifted(source, k).reshape(b, c, 1, length)
            # (b, C, 1, L) * (C, mult, 1) -> (b, C, mult, L)
            xp.multiply(xs, w[:, :, k, None], out=acc if k == 0 else tmp)
            if k:
                acc += tmp
        out[...] = acc.reshape(out.shape)
    if job.bias is not None:
        out += job.bias


# --------------------------------------------------------------------------- backward


@dataclass(frozen=True)
class _Backward:
    """What every backward chunk reads (gy, x, w (C, mult, K)) and writes (gx, if wanted)."""

    xp: Any
    gy: Any
    x: Any  # None without grad weight
    w: Any
    gx: Any  # None without grad input
    lay: Layout
    chunk: int


@dataclass
class _BackwardScratch:
    padder: ChunkPadder | None
    gy_flat: Any  # flat (chunk * O * P), zero, when flat
    gx_pad: Any  # flat (chunk * C * P) with grad input
    tmp: Any  # flat (chunk * C * L) when strided with grad input
    cols: Any  # flat (chunk * C * K * Q) when flat


def _backward_scratch(job: _Backward) -> _BackwardScratch:
    xp, lay, chunk, dtype = job.xp, job.lay, job.chunk, job.gy.dtype
    o, c = job.gy.shape[1], job.w.shape[0]
    flat, need_input = lay.flat, job.gx is not None
    return _BackwardScratch(
        None if job.x is None else ChunkPadder(job.x, lay.geometry, chunk),
        flat_buffer(xp, chunk * o * lay.volume if flat else None, dtype),
        flat_buffer(xp, chunk * c * lay.volume if need_input else None, dtype, zero=False),
        flat_buffer(xp, chunk * c * lay.length if need_input and not flat else None, dtype,
                      zero=False),
        flat_buffer(xp, chunk * c * len(lay.taps) * lay.q if flat else None, dtype, zero=False))


def backward(problem: Problem, gy: Any, x: Any, weight: Any, need_input: bool,
             need_weight: bool) -> tuple[Any, Any]:
    """(gx, gw) of y = depthwise conv(x, weight); either may be skipped (None).

    ``weight`` and ``x`` are used as given (the caller conjugates them for the
    adjoint of a complex convolution); ``x`` may be None without ``need_weight``.
    """
    xp = backend.get_array_module(gy, x, weight)
    geometry = problem.geometry
    if gy.shape[0] == 0 or geometry.out_volume == 0:
        return empty_grads(problem, xp, need_input, need_weight, tuple(weight.shape))
    n, o = gy.shape[:2]
    c = problem.in_channels
    gx = None
    if need_input and o == c and full_correlation(geometry) is not None:
        # Stride 1: grad input is itself a depthwise convolution of gy with the flipped
        # kernel, padded d(k-1)-p, which the forward does fastest.
        gx = grad_input_by_forward(problem, gy, weight, forward)
        need_input = False
    if not (need_input or need_weight):
        return gx, None
    lay = Layout(geometry)
    k_vol = geometry.kernel_volume
    if need_input:  # every chunk of gx is written once, by unpad_add(accumulate=False)
        gx = xp.empty((n, c) + geometry.in_size, dtype=gy.dtype)
    per_image = (2 * c * lay.volume + o * lay.volume + c * lay.length
                 + (c * k_vol * lay.length if lay.flat else 0)) * gy.dtype.itemsize
    chunk = chunk_of(per_image, n)
    job = _Backward(xp, gy, x if need_weight else None, weight.reshape(c, o // c, k_vol),
                    gx if need_input else None, lay, chunk)
    common = dict(scratch=functools.partial(_backward_scratch, job),
                  per_worker_bytes=chunk * per_image, arrays=arrays_of(gy, x, weight))
    starts = range(0, n, chunk)
    if not need_weight:
        executor.map_chunks(_input_chunk, starts, job, **common)
        return gx, None
    total = xp.zeros((c, o // c, k_vol), dtype=gy.dtype)  # gW[c, t, k] = gW[c*mult + t, 0, k]
    executor.reduce_chunks(_backward_chunk, starts, total, job, **common)
    return gx, total.reshape(weight.shape)


def _input_chunk(buf: _BackwardScratch, start: int, job: _Backward) -> None:
    """gx[start:stop] alone (no grad weight to sum)."""
    _backward_chunk(buf, start, None, job)


def _backward_chunk(buf: _BackwardScratch, start: int, acc: Any, job: _Backward) -> Any:
    """acc (C, mult, K) += gW of chunk [start, stop) and gx[start:stop] (those wanted)."""
    xp, lay = job.xp, job.lay
    stop = min(job.gy.shape[0], start + job.chunk)
    b, c = stop - start, job.w.shape[0]
    gy4 = lay.gy_rows(buf.gy_flat, job.gy, start, stop).reshape(b, c, -1, lay.length)
    if job.x is not None:
        assert buf.padder is not None
        source = lay.source(xp, buf.padder, start, stop)
        weight_part = _weight_flat if lay.flat else _weight_strided
        acc = weight_part(xp, buf, gy4, source, acc, lay)
    if job.gx is not None:
        gx_pad = take(buf.gx_pad, (b, c) + lay.padded)
        gx_pad[...] = 0
        input_part = _input_flat if lay.flat else _input_strided
        input_part(xp, buf, gy4, job.w, gx_pad, lay)
        unpad_add(job.gx[start:stop], gx_pad, lay.geometry, accumulate=False)
    return acc


def _weight_flat(xp: Any, buf: _BackwardScratch, gy4: Any, xf: Any, acc: Any,
                 lay: Layout) -> Any:
    """acc (C, mult, K) += gW of one chunk from the columns of its flat input (b, C, P)."""
    b, c, _, q = gy4.shape
    cols = take(buf.cols, (b, c, len(lay.taps), q))
    for k, off in enumerate(lay.offsets):
        cols[:, :, k] = xf[:, :, off: off + q]
    # gW[c, t, k] = sum_n gy[n, c, t] (mult, Q) @ cols[n, c]^T (Q, K)
    part = xp.matmul(gy4, cols.transpose(0, 1, 3, 2)).sum(axis=0)
    if acc is None:
        return part
    acc += part
    return acc


def _weight_strided(xp: Any, buf: _BackwardScratch, gy4: Any, view: Any, acc: Any,
                    lay: Layout) -> Any:
    """acc (C, mult, K) += gW of one chunk, one contraction per kernel offset."""
    b, c, mult, _ = gy4.shape
    if acc is None:
        acc = xp.zeros((c, mult, len(lay.taps)), dtype=gy4.dtype)
    for k in range(len(lay.taps)):
        # gW[c, t, k] += sum_{n, q} gy[n, c, t, q] x_k[n, c, q]
        acc[:, :, k] += xp.einsum("nctq,ncq->ct", gy4, lay.shifted(view, k))
    return acc


def _input_flat(xp: Any, buf: _BackwardScratch, gy4: Any, w: Any, gx_pad: Any,
                lay: Layout) -> None:
    """gx_pad (b, C, *P) += each offset's column gradient, added back at its offset."""
    b, c, mult, q = gy4.shape
    cols = take(buf.cols, (b, c, len(lay.taps), q))
    w_ck = w.transpose(0, 2, 1)  # (C, K, mult)
    # column gradient (b, C, K, Q) = w[c]^T (K, mult) @ gy[n, c] (mult, Q)
    if mult == 1:  # an outer product: a broadcast multiply beats a k=1 matmul
        xp.multiply(w_ck, gy4, out=cols)
    else:
        xp.matmul(w_ck, gy4, out=cols)
    gxf = gx_pad.reshape(b, c, lay.volume)
    for k, off in enumerate(lay.offsets):
        gxf[:, :, off: off + q] += cols[:, :, k]


def _input_strided(xp: Any, buf: _BackwardScratch, gy4: Any, w: Any, gx_pad: Any,
                   lay: Layout) -> None:
    """gx_pad (b, C, *P) += each offset's gradient, through its strided slice."""
    b, c, mult, length = gy4.shape
    tmp = take(buf.tmp, (b, c, length))
    shape = (b, c) + lay.geometry.out_size
    for k, tap in enumerate(lay.taps):
        if mult == 1:
            # (b, C, L) * (C, 1) -> (b, C, L)
            xp.multiply(gy4[:, :, 0], w[:, 0, k, None], out=tmp)
        else:
            # (b, C, mult, L) . (C, mult) -> (b, C, L)
            tmp[...] = xp.einsum("nctq,ct->ncq", gy4, w[:, :, k])
        gx_pad[lay.target(tap)] += tmp.reshape(shape)
