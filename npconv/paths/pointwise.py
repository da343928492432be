"""The pointwise path: a 1x1, stride-1, unpadded convolution is a matmul on the input.

The input already is its im2col matrix: per image, x[n] reshaped to
(g, C/g, L) with L = prod(out) = prod(in), so no columns are built at all.

    forward      y[n]  = W (g, O/g, C/g) @ x[n] (g, C/g, L)
    grad weight  gW    = sum_n gy[n] (g, O/g, L) @ x[n]^T (g, L, C/g)
    grad input   gx[n] = W^T (g, C/g, O/g) @ gy[n] (g, O/g, L)

The batch is walked in chunks of images, or of output rows of one image (a
large image stays in cache and a batch of one still splits), and every
matmul writes straight into the NCHW output.
"""

from __future__ import annotations

import functools
from typing import Any

from .. import backend, executor, workspace
from ..plan import Problem
from ._common import empty_grads, matmul, matmul_tall, out_block, row_blocks

RowBlock = tuple[int, int, slice]  # images (start, stop) and the first output axis' rows


def requires(problem: Problem, op: str) -> str | None:
    """None for a 1x1 kernel with stride 1 and no padding (any op, rank, dtype)."""
    if problem.pointwise:
        return None
    g = problem.geometry
    return (f"a 1x1 kernel (every spatial axis of size 1) with stride 1 and no padding; got "
            f"kernel {g.kernel}, stride {g.stride}, padding {g.pads}, input size {g.in_size} "
            f"and output size {g.out_size}")


def _chunks(problem: Problem, itemsize: int) -> tuple[list[RowBlock], int]:
    """The row blocks of the batch, and their in + out bytes together."""
    geometry, n = problem.geometry, problem.batch
    out0 = geometry.out_size[0]
    per_row = (problem.in_channels + problem.out_channels) * (geometry.out_volume // out0
                                                              ) * itemsize
    images, rows = workspace.row_chunks(per_row, out0, n,
                                        positions=geometry.out_volume // out0)
    return row_blocks(n, images, rows, out0), n * out0 * per_row


def _forward_chunk(_: Any, item: RowBlock, x: Any, w: Any, bias_col: Any, y: Any,
                   groups: int) -> None:
    """y at one row block = W @ x there (+ bias)."""
    xp = backend.get_array_module(y)
    start, stop, rows = item
    out = out_block(y, start, stop, rows, groups)
    # (g, O/g, C/g) @ (b, g, C/g, rows) -> (b, g, O/g, rows), in NCHW
    matmul(xp, w, out_block(x, start, stop, rows, groups), out=out)
    if bias_col is not None:
        out += bias_col


def forward(problem: Problem, x: Any, weight: Any, bias: Any) -> Any:
    """y (N, O, *out) = conv(x, weight) + bias for a 1x1 stride-1 unpadded kernel.

    Raises
    ------
    MemoryError
        If one row of input and output does not fit in the workspace limit.
    """
    xp = backend.get_array_module(x, weight)
    n, c = x.shape[:2]
    o, g = weight.shape[0], problem.groups
    y = xp.empty((n, o) + problem.geometry.out_size, dtype=x.dtype)
    if n == 0 or problem.geometry.out_volume == 0:
        return y
    w = weight.reshape(g, o // g, c // g)  # (g, O/g, C/g)
    bias_col = None if bias is None else bias.reshape(1, g, o // g, 1)
    items, total = _chunks(problem, x.dtype.itemsize)
    executor.map_chunks(_forward_chunk, items, x, w, bias_col, y, g, arrays=(x, w),
                        work_bytes=total)
    return y


def _empty(xp: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    return xp.empty(shape, dtype=dtype)


def _backward_chunk(part: Any, item: RowBlock, acc: Any, gy: Any, x: Any, w_t: Any,
                    gx: Any, groups: int) -> Any:
    """One row block: its grad-weight partial added to ``acc`` (a new array when
    ``acc`` is None; skipped when ``x`` is None) and returned, and its grad input
    written into ``gx`` (skipped when ``gx`` is None). ``part`` is a scratch
    (g, O/g, C/g)."""
    xp = backend.get_array_module(gy)
    start, stop, rows = item
    gy_b = out_block(gy, start, stop, rows, groups)  # (b, g, O/g, L')
    if x is not None:
        x_b = out_block(x, start, stop, rows, groups)  # (b, g, C/g, L')
        for i in range(stop - start):
            # (g, O/g, L') @ (g, L', C/g) -> (g, O/g, C/g), summed over the lane
            if acc is None:
                acc = matmul_tall(xp, gy_b[i], x_b[i].transpose(0, 2, 1))
            else:
                matmul_tall(xp, gy_b[i], x_b[i].transpose(0, 2, 1), out=part)
                acc += part
    if gx is not None:
        # (g, C/g, O/g) @ (b, g, O/g, L') -> (b, g, C/g, L')
        matmul(xp, w_t, gy_b, out=out_block(gx, start, stop, rows, groups))
    return acc


def backward(problem: Problem, gy: Any, x: Any, weight: Any, need_input: bool,
             need_weight: bool) -> tuple[Any, Any]:
    """(grad input (N, C, *in), grad weight (O, C/g, 1, ...)), either None when not
    needed, both in one pass over the row blocks. ``x`` may be None without
    ``need_weight``.

    Raises
    ------
    MemoryError
        If one row of input and output does not fit in the workspace limit.
    """
    xp = backend.get_array_module(gy, x, weight)
    geometry, g = problem.geometry, problem.groups
    n, o = gy.shape[:2]
    c = problem.in_channels
    if n == 0 or geometry.out_volume == 0 or not (need_input or need_weight):
        return empty_grads(problem, xp, need_input, need_weight, tuple(weight.shape))
    dtype = gy.dtype
    # every element of grad input is written by exactly one row block's matmul
    gx = xp.empty((n, c) + geometry.in_size, dtype=dtype) if need_input else None
    w_t = weight.reshape(g, o // g, c // g).transpose(0, 2, 1)  # (g, C/g, O/g)
    items, total_bytes = _chunks(problem, dtype.itemsize)
    if not need_weight:
        executor.map_chunks(_backward_chunk, items, None, gy, None, w_t, gx, g,
                            arrays=(gy,), work_bytes=total_bytes)
        return gx, None
    total = xp.zeros((g, o // g, c // g), dtype=dtype)
    scratch = functools.partial(_empty, xp, total.shape, dtype)
    executor.reduce_chunks(_backward_chunk, items, total, gy, x, w_t, gx, g, scratch=scratch,
                           arrays=(gy, x), work_bytes=total_bytes)
    return gx, total.reshape(weight.shape)
