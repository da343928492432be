"""The im2col path: window columns, one matmul per chunk, col2im's scatter-add.

Layout: x (N, C, *in), weight (O, C/g, *k), grad_output gy (N, O, *out); the
window view of a padded chunk is (b, C, *k, *out). With K = prod(k),
L = prod(out) and g groups, each map is one matmul per chunk:

    forward      y[n]  = W (g, O/g, C/g*K) @ cols[n] (g, C/g*K, L)
    grad weight  gW    = sum_n gy[n] (g, O/g, L) @ cols[n]^T (g, L, C/g*K)
    grad input   gx    = fold( W^T (g, C/g*K, O/g) @ gy[n] (g, O/g, L) )

It computes every geometry: any rank, groups, dilation, stride, every padding
mode, real and complex dtypes. The forward walks the batch in chunks of
images, or of output rows of one image, and writes each chunk's matmul
straight into the NCHW output. The backward walks it in chunks of images
whose columns are laid out (C, *k, b, *out), so that b and L merge into one
contraction axis; when both gradients are wanted the columns are built once
for both (the column buffer then receives the column gradient ``W^T gy``,
which :func:`npconv.patches.fold_into` scatter-adds into grad input).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from .. import backend, executor, scratch, workspace
from ..geometry import ConvGeometry
from ..patches import ChunkPadder, fold_into, pad, window_view
from ..plan import Problem
from ._common import (
    add_tall,
    device_weight_grad,
    empty_grads,
    image_of,
    map_work,
    matmul,
    matmul_tall,
    matmul_tall_temp,
    matmul_temp,
    out_block,
    row_blocks,
    take,
)
from .fold import small_fold
from .windows import copy_windows, takes_planes

RowBlock = tuple[int, int, slice]  # images (start, stop) and the first output axis' rows


def requires(problem: Problem, op: str) -> str | None:
    """Always None: im2col computes every map of every convolution."""
    return None


# --------------------------------------------------------------------------- windows


class _Windows:
    """Window views (b, C, *k, *out) of batch chunks, each chunk padded on the fly.

    One instance per worker thread: it owns the padding buffer (a
    :class:`~npconv.patches.ChunkPadder`, made on first use: copies by output
    planes never pad) and keeps the last chunk it padded, so the row blocks of
    one image pad it once.
    """

    def __init__(self, x: Any, geometry: ConvGeometry, chunk: int):
        self.x, self.geometry, self.chunk = x, geometry, chunk
        self.padder: ChunkPadder | None = None
        self.last: tuple[int, int] | None = None
        self.padded: Any = None

    def __call__(self, start: int, stop: int) -> Any:
        """The read-only window view of images ``start:stop`` (b, C, *k, *out)."""
        if self.last != (start, stop):
            if self.padder is None:
                self.padder = ChunkPadder(self.x, self.geometry, self.chunk)
            self.padded = self.padder(start, stop)
            self.last = (start, stop)
        return window_view(self.padded, self.geometry)

    def copy(self, dst: Any, start: int, stop: int, rows: slice | None = None) -> None:
        """``dst`` (b, C, *k, *out[rows]) <- the windows of images ``start:stop`` (at the
        first output axis' ``rows``): by whole output planes where every row is wanted
        and that pays (:func:`npconv.paths.windows.takes_planes`), else from the view."""
        g = self.geometry
        whole = rows is None or (rows.start, rows.stop) == (0, g.out_size[0])
        if whole and takes_planes(backend.get_array_module(dst), g, dst.size, dst.dtype):
            copy_windows(dst, self.x[start:stop], g)
            return
        view = self(start, stop)
        if rows is not None:
            view = view[(slice(None),) * (2 + g.nd) + (rows,)]
        executor.copy_into(dst, view)


def _shares(items: list[RowBlock], per_worker: int, arrays: tuple[Any, ...]) -> list[Any]:
    """The chunks as the executor hands them out: the row blocks of one image go to
    one thread together where there are enough images to share (each thread then
    pads an image once), otherwise one by one. Which thread computes a block never
    changes its result."""
    groups: dict[tuple[int, int], list[RowBlock]] = {}
    for item in items:
        groups.setdefault(image_of(item), []).append(item)
    workers = executor.workers_for(len(items), per_worker, arrays)
    if workers > 1 and len(groups) < 2 * workers:
        return [(item,) for item in items]
    return [tuple(group) for group in groups.values()]


# --------------------------------------------------------------------------- forward


@dataclass
class _ForwardBuffers:
    """One worker's forward buffers: its windows and the column buffer
    (images, C*K [+1], span); a chunk with fewer rows uses a prefix of each row."""

    windows: _Windows
    flat: Any


def _forward_buffers(x: Any, geometry: ConvGeometry, images: int, depth: int, span: int,
                     fused: bool) -> _ForwardBuffers:
    xp = backend.get_array_module(x)
    flat = scratch.empty(xp, (images, depth, span), x.dtype)
    if fused:
        flat[:, -1, :] = 1  # the row of ones under the columns, never overwritten
    return _ForwardBuffers(_Windows(x, geometry, images), flat)


def _forward_chunk(buffers: _ForwardBuffers, share: tuple[RowBlock, ...], y: Any, w: Any,
                   bias_col: Any, groups: int, channels: int) -> None:
    """y[start:stop] at the output ``rows`` = W @ cols (+ bias), for each block of the share."""
    xp = backend.get_array_module(y)
    geometry, c = buffers.windows.geometry, channels
    depth = buffers.flat.shape[1]
    rest = geometry.out_volume // geometry.out_size[0]
    for start, stop, rows in share:
        b, count = stop - start, rows.stop - rows.start
        block = buffers.flat[:b, :, : count * rest]
        cols = block[:, : c * geometry.kernel_volume].reshape(
            (b, c) + geometry.kernel + (count,) + geometry.out_size[1:])
        buffers.windows.copy(cols, start, stop, rows)
        out = out_block(y, start, stop, rows, groups)
        # (g, O/g, C/g*K [+1]) @ (b, g, C/g*K [+1], rows) -> (b, g, O/g, rows), in NCHW
        matmul(xp, w, block.reshape(b, groups, depth // groups, count * rest), out=out)
        if bias_col is not None:
            out += bias_col


def forward(problem: Problem, x: Any, weight: Any, bias: Any) -> Any:
    """y (N, O, *out) = conv(x, weight) + bias: W @ cols per chunk of images (or of
    output rows of one image), straight into NCHW.

    The executor's threads take the chunks by the columns' bytes or, as in the other
    paths, by the multiply-adds (:func:`npconv.paths._common.map_work`): ResNet-18's N4
    64@24x24 -> 128 3x3 stride 2, 42 million multiply-adds in 2 MiB of columns, took
    0.72 ms in order on the BLAS's threads and 0.49 on the executor's (Intel Xeon,
    2 threads).

    Raises
    ------
    MemoryError
        If the columns of one output row do not fit in the workspace limit.
    """
    if _small(problem):
        return whole_forward(problem, x, weight, bias)
    xp = backend.get_array_module(x, weight)
    geometry, g = problem.geometry, problem.groups
    n, c = x.shape[:2]
    o, k_vol = weight.shape[0], geometry.kernel_volume
    y = xp.empty((n, o) + geometry.out_size, dtype=x.dtype)
    if n == 0 or geometry.out_volume == 0:
        return y
    w = weight.reshape(g, o // g, (c // g) * k_vol)  # (g, O/g, C/g*K)
    # Without groups the bias rides along in the matmul: a row of ones under the
    # columns and the bias as an extra weight column save a pass over the output.
    fused = bias is not None and g == 1
    depth = c * k_vol + fused
    if fused:
        w = xp.concatenate([w[0], bias.reshape(o, 1)], axis=1)[None]  # (1, O, C*K + 1)
    out0 = geometry.out_size[0]
    rest = geometry.out_volume // out0
    itemsize = x.dtype.itemsize
    images, rows = workspace.row_chunks(depth * rest * itemsize, out0, n, positions=rest)
    items = row_blocks(n, images, rows, out0)
    per_worker = (depth * rows * rest + c * math.prod(geometry.padded_size)) * images * itemsize
    bias_col = None if bias is None or fused else bias.reshape(1, g, o // g, 1)
    scratch = functools.partial(_forward_buffers, x, geometry, images, depth, rows * rest, fused)
    executor.map_chunks(_forward_chunk, _shares(items, per_worker, (x, w)), y, w, bias_col, g,
                        c, scratch=scratch, per_worker_bytes=per_worker, arrays=(x, w),
                        work_bytes=max(len(items) * per_worker, map_work(problem)))
    return y


# --------------------------------------------------------------------------- backward


@dataclass
class _BackwardBuffers:
    """One worker's backward buffers: windows of x (None without grad weight), the
    flat column and grad-output buffers of a chunk, and a grad-weight partial."""

    windows: _Windows | None
    cols: Any
    gy: Any
    part: Any


def _backward_buffers(gy: Any, x: Any, geometry: ConvGeometry, chunk: int, col_size: int,
                      gy_size: int, part_shape: tuple[int, ...] | None) -> _BackwardBuffers:
    """Windows of ``x`` and a partial of ``part_shape`` only for grad weight."""
    xp, dtype = backend.get_array_module(gy), gy.dtype
    windows = None if part_shape is None else _Windows(x, geometry, chunk)
    part = None if part_shape is None else scratch.empty(xp, part_shape, dtype)
    return _BackwardBuffers(windows, scratch.empty(xp, (col_size,), dtype),
                            scratch.empty(xp, (gy_size,), dtype), part)


def _backward_chunk(buffers: _BackwardBuffers, start: int, acc: Any, gy: Any, gx: Any,
                    w_t: Any, geometry: ConvGeometry, groups: int, chunk: int) -> Any:
    """Images ``start:start+chunk``: their grad-weight partial added to ``acc`` (a new
    array when ``acc`` is None; skipped without windows) and returned, and their
    grad input written into ``gx`` (skipped when ``gx`` is None)."""
    xp = backend.get_array_module(gy)
    stop = min(gy.shape[0], start + chunk)
    b, o, nd = stop - start, gy.shape[1], geometry.nd
    g, length = groups, geometry.out_volume
    c = w_t.shape[1] * g // geometry.kernel_volume
    # Columns laid out (C, *k, b, *out) so that b and L merge into one contraction axis.
    cols = take(buffers.cols, (c,) + geometry.kernel + (b,) + geometry.out_size)
    cols_2d = cols.reshape(g, c // g * geometry.kernel_volume, b * length)
    gy_c = take(buffers.gy, (o, b) + geometry.out_size)
    gy_c[...] = xp.moveaxis(gy[start:stop], 0, 1)
    gy_2d = gy_c.reshape(g, o // g, b * length)
    if buffers.windows is not None:
        buffers.windows.copy(xp.moveaxis(cols, 1 + nd, 0), start, stop)
        cols_t = cols_2d.transpose(0, 2, 1)
        # (g, O/g, bL) @ (g, bL, C/g*K) -> (g, O/g, C/g*K), summed over the lane
        acc = add_tall(xp, acc, gy_2d, cols_t, buffers.part)
    if gx is not None:
        # (g, C/g*K, O/g) @ (g, O/g, bL) -> (g, C/g*K, bL): the column gradient, then fold
        matmul(xp, w_t, gy_2d, out=cols_2d)
        fold_into(gx[start:stop], xp.moveaxis(cols, 1 + nd, 0), geometry)
    return acc


def backward(problem: Problem, gy: Any, x: Any, weight: Any, need_input: bool,
             need_weight: bool) -> tuple[Any, Any]:
    """(grad input (N, C, *in), grad weight (O, C/g, *k)), either None when not needed.

    Per chunk of images: grad weight ``gy @ cols^T`` from the window columns of
    ``x``, grad input ``fold(W^T @ gy)``; one pass builds the columns once for
    both. ``x`` may be None without ``need_weight``.

    Raises
    ------
    MemoryError
        If the columns of one image do not fit in the workspace limit.
    """
    if _small(problem) and problem.batch > 0:
        return whole_backward(problem, gy, x, weight, need_input, need_weight)
    xp = backend.get_array_module(gy, x, weight)
    geometry, g = problem.geometry, problem.groups
    n, o = gy.shape[:2]
    c, k_vol, length = problem.in_channels, geometry.kernel_volume, geometry.out_volume
    if n == 0 or length == 0 or not (need_input or need_weight):
        return empty_grads(problem, xp, need_input, need_weight, tuple(weight.shape))
    cg, og, dtype = c // g, o // g, gy.dtype
    # every element of grad input is written by exactly one chunk's fold
    gx = xp.empty((n, c) + geometry.in_size, dtype=dtype) if need_input else None
    w_t = weight.reshape(g, og, cg * k_vol).transpose(0, 2, 1)  # (g, C/g*K, O/g)
    per_image = (c * k_vol + o) * length * dtype.itemsize
    chunk = workspace.chunk_length(per_image, n, positions=length)
    per_worker = chunk * per_image + c * math.prod(geometry.padded_size) * dtype.itemsize
    part_shape = (g, og, cg * k_vol) if need_weight else None
    scratch = functools.partial(_backward_buffers, gy, x, geometry, chunk,
                                chunk * c * k_vol * length, chunk * o * length, part_shape)
    starts = list(range(0, n, chunk))
    args = (gy, gx, w_t, geometry, g, chunk)
    if not need_weight:
        executor.map_chunks(_backward_chunk, starts, None, *args, scratch=scratch,
                            per_worker_bytes=per_worker, arrays=(gy,))
        return gx, None
    total = xp.empty((g, og, cg * k_vol), dtype=dtype)
    executor.reduce_chunks(_backward_chunk, starts, total, *args, scratch=scratch,
                           per_worker_bytes=per_worker, arrays=(gy, x), fresh=True)
    return gx, total.reshape(weight.shape)


# --------------------------------------------------------------------------- small calls


def _small(problem: Problem) -> bool:
    """A call computed whole, without the chunk machinery (row blocks, scratch,
    executor): on a host when its column matrix is tiny, as that machinery costs
    more than the matmul; on a device whenever the columns fit the workspace, as
    a call there is bound by its launches (one device chunk would be the whole
    batch anyway, and the whole-batch code launches fewer kernels)."""
    return ((problem.small or not problem.host_threads)
            and problem.column_bytes <= workspace.device_target())


class _Whole(NamedTuple):
    """The shapes of a whole-batch call, computed once per problem (small calls repeat)."""

    cols: tuple[int, ...]  # (N, g, C/g*K, L)
    weight: tuple[int, ...]  # (g, O/g, C/g*K)
    y: tuple[int, ...]  # (N, O, *out)
    bias: tuple[int, ...]  # (1, O, 1, ...)
    gy: tuple[int, ...]  # (N, g, O/g, L)
    cols_grad: tuple[int, ...]  # (N, C, *k, *out)
    gx: tuple[int, ...]  # (N, C, *in)


@functools.lru_cache(maxsize=256)
def _whole(problem: Problem) -> _Whole:
    geometry, g, n = problem.geometry, problem.groups, problem.batch
    c, o, length = problem.in_channels, problem.out_channels, geometry.out_volume
    depth = problem.cg * geometry.kernel_volume
    return _Whole((n, g, depth, length), (g, o // g, depth), (n, o) + geometry.out_size,
                  (1, o) + (1,) * geometry.nd, (n, g, o // g, length),
                  (n, c) + geometry.kernel + geometry.out_size, (n, c) + geometry.in_size)


def whole_forward(problem: Problem, x: Any, weight: Any, bias: Any) -> Any:
    """y = W @ cols + b for the whole batch at once (small calls, and the serial path)."""
    xp = backend.get_array_module(x, weight)
    geometry, shapes = problem.geometry, _whole(problem)
    cols = window_view(pad(x, geometry), geometry).reshape(shapes.cols)
    # (g, O/g, C/g*K) @ (N, g, C/g*K, L) -> (N, g, O/g, L)
    y = matmul(xp, weight.reshape(shapes.weight), cols).reshape(shapes.y)
    if bias is not None:
        y += bias.reshape(shapes.bias)
    return y


def whole_backward(problem: Problem, gy: Any, x: Any, weight: Any, need_input: bool,
                   need_weight: bool) -> tuple[Any, Any]:
    """gW = sum_n gy @ cols^T and gx = fold(W^T @ gy) for the whole batch at once (small
    calls, and the serial path)."""
    xp = backend.get_array_module(gy, weight)
    geometry, shapes = problem.geometry, _whole(problem)
    gy4 = gy.reshape(shapes.gy)
    gx = gw = None
    if need_weight:
        view = window_view(pad(x, geometry), geometry)
        if backend.on_host(xp):
            cols = view.reshape(shapes.cols)
            # sum over N of (g, O/g, L) @ (g, L, C/g*K) -> (g, O/g, C/g*K)
            if problem.batch == 1:
                gw = matmul_tall(xp, gy4, cols.transpose(0, 1, 3, 2))[0]
            else:
                gw = matmul_tall_temp(xp, gy4, cols.transpose(0, 1, 3, 2)).sum(axis=0)
        else:
            gw = device_weight_grad(xp, gy4, view, geometry.nd)
        gw = gw.reshape(weight.shape)
    if need_input:
        # (g, C/g*K, O/g) @ (N, g, O/g, L) -> (N, g, C/g*K, L): the column gradient, folded
        w_t = weight.reshape(shapes.weight).transpose(0, 2, 1)  # (g, C/g*K, O/g)
        # (a temporary from the cache costs a tiny call 4 us of its 18: measured)
        product = matmul(xp, w_t, gy4) if problem.small else matmul_temp(xp, w_t, gy4)
        cols_grad = product.reshape(shapes.cols_grad)
        gx = xp.empty(shapes.gx, dtype=gy.dtype)
        if problem.small:  # fold_into's choice for small folds, without its checks
            small_fold(gx, cols_grad, geometry, problem.host_threads)
        else:
            fold_into(gx, cols_grad, geometry)
    return gx, gw
