"""The pointwise path: a 1x1, stride-1, unpadded convolution is a matmul on the input.

The input already is its im2col matrix: per image, x[n] reshaped to
(g, C/g, L) with L = prod(out) = prod(in), so no columns are built at all.

    forward      y[n]  = W (g, O/g, C/g) @ x[n] (g, C/g, L)
    grad weight  gW    = sum_n gy[n] (g, O/g, L) @ x[n]^T (g, L, C/g)
    grad input   gx[n] = W^T (g, C/g, O/g) @ gy[n] (g, O/g, L)

The forward is one matmul over the whole batch, on the calling thread with the
BLAS's own threads, writing straight into the NCHW output. Where the output is
at least as large as the input, the bias rides in that matmul: a row of ones
under the input and the bias as an extra weight column cost a copy of the
input, and save a pass over the (larger) output.

The backward walks the batch in chunks of images, or of output rows of one
image (a large image stays in cache and a batch of one still splits), on
npconv's threads.
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


# The bias is folded into the matmul when the output has at least this many times the
# input's channels. Folding costs a copy of the input into a fresh buffer (whose pages
# the allocator may have to map again: 1.5 ms for 2 MiB on a 2-core VM, measured); adding
# afterwards costs a pass over the output. (4, 32, 4096) -> (4, O, 4096), forward with
# bias, ms, folded / added: O=32 1.94 / 0.42, O=64 0.68 / 0.87, O=96 0.92 / 1.33,
# O=256 1.84 / 3.08 (OpenBLAS SkylakeX, 2 threads).
BIAS_FOLD_RATIO = 2


def _bias_in_matmul(problem: Problem, itemsize: int) -> bool:
    """Whether to fold the bias into the matmul (see BIAS_FOLD_RATIO), if the input's
    copy fits the workspace limit."""
    copy_bytes = (problem.batch * (problem.in_channels + problem.groups)
                  * problem.geometry.in_volume * itemsize)
    return (problem.out_channels >= BIAS_FOLD_RATIO * problem.in_channels
            and copy_bytes <= workspace.get_workspace_limit())


def forward(problem: Problem, x: Any, weight: Any, bias: Any) -> Any:
    """y (N, O, *out) = conv(x, weight) + bias for a 1x1 stride-1 unpadded kernel."""
    xp = backend.get_array_module(x, weight)
    n, c = x.shape[:2]
    o, g = weight.shape[0], problem.groups
    length = problem.geometry.out_volume
    y = xp.empty((n, o) + problem.geometry.out_size, dtype=x.dtype)
    if n == 0 or length == 0:
        return y
    w = weight.reshape(g, o // g, c // g)  # (g, O/g, C/g)
    x_cols = x.reshape(n, g, c // g, length)  # (N, g, C/g, L)
    out = y.reshape(n, g, o // g, length)  # (N, g, O/g, L), a view of y
    if bias is not None and _bias_in_matmul(problem, x.dtype.itemsize):
        w = xp.concatenate([w, bias.reshape(g, o // g, 1)], axis=2)  # (g, O/g, C/g + 1)
        ones = xp.empty((n, g, c // g + 1, length), dtype=x.dtype)
        ones[:, :, :-1] = x_cols
        ones[:, :, -1] = 1
        x_cols, bias = ones, None
    # (g, O/g, C/g) @ (N, g, C/g, L) -> (N, g, O/g, L)
    matmul(xp, w, x_cols, out=out)
    if bias is not None:
        out += bias.reshape(1, g, o // g, 1)
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
