"""Small helpers shared by the paths: chunk lists, output blocks, the flipped kernel."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .. import backend
from ..plan import Problem, full_correlation


def row_blocks(n: int, images: int, rows: int, out0: int) -> list[tuple[int, int, slice]]:
    """(start, stop, output rows) of every chunk: the batch in ``images``, each image's
    first output axis in blocks of ``rows``."""
    return [(start, min(n, start + images), slice(r, min(out0, r + rows)))
            for start in range(0, n, images) for r in range(0, out0, rows)]


def image_of(item: tuple[Any, ...]) -> tuple[int, int]:
    """The images (start, stop) of a chunk: its row blocks share their preparation."""
    return item[0], item[1]


def out_block(y: Any, start: int, stop: int, rows: slice, g: int) -> Any:
    """y[start:stop] restricted to the output ``rows``, as (b, g, O/g, rows * rest): a view."""
    b, o, out0 = stop - start, y.shape[1], y.shape[2]
    rest = math.prod(y.shape[3:])
    block = y[start:stop].reshape(b, g, o // g, out0, rest)[:, :, :, rows]
    return block.reshape(b, g, o // g, (rows.stop - rows.start) * rest)


def take(flat: Any, shape: tuple[int, ...]) -> Any:
    """The first prod(shape) elements of a flat buffer, as a contiguous array of ``shape``."""
    return flat[: math.prod(shape)].reshape(shape)


def flipped(weight: Any, groups: int) -> Any:
    """W'[c, o] = W[o, c] flipped in space, per group: (O, C/g, *k) -> (C, O/g, *k), the
    kernel of the adjoint of a stride-1 convolution (contiguous: BLAS wants + strides)."""
    xp = backend.get_array_module(weight)
    o, cg = weight.shape[:2]
    kernel = weight.shape[2:]
    w = weight.reshape((groups, o // groups, cg) + kernel).swapaxes(1, 2)
    w = xp.flip(w, axis=tuple(range(3, 3 + len(kernel))))
    return xp.ascontiguousarray(w).reshape((groups * cg, o // groups) + kernel)


def adjoint_problem(problem: Problem) -> Problem | None:
    """The stride-1 convolution gy -> gx (flipped kernel), or None if there is none."""
    full = full_correlation(problem.geometry)
    if full is None:
        return None
    return Problem(full, problem.groups, problem.batch, problem.out_channels,
                   problem.in_channels, problem.dtype, problem.backend, problem.host_threads)


def grad_input_by_forward(problem: Problem, gy: Any, weight: Any,
                          forward: Callable[[Problem, Any, Any, Any], Any]) -> Any:
    """grad input of a stride-1, zero-padded convolution as a forward convolution of
    ``gy`` with the flipped, channel-swapped kernel, computed by ``forward``."""
    adjoint = adjoint_problem(problem)
    assert adjoint is not None, "the caller checks full_correlation first"
    return forward(adjoint, gy, flipped(weight, problem.groups), None)


def empty_grads(problem: Problem, xp: Any, need_input: bool, need_weight: bool,
                weight_shape: tuple[int, ...]) -> tuple[Any, Any]:
    """Zero gradients for an empty batch or output (nothing to sum)."""
    g = problem.geometry
    gx = (xp.zeros((problem.batch, problem.in_channels) + g.in_size, dtype=problem.dtype)
          if need_input else None)
    gw = xp.zeros(weight_shape, dtype=problem.dtype) if need_weight else None
    return gx, gw
