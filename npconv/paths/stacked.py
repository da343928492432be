"""The stacked path: im2col with a chunk's images stacked along one matmul.

im2col multiplies the weights by each image's columns: where the output has a few
dozen positions (the late layers of ResNet-18 or VGG, a U-Net's bottom) each of
those matmuls is as thin as the output, and BLAS runs them far below its peak.
Here the windows of a chunk of b images are gathered channel-major, (C, *k, b,
*out), so that the images sit side by side along the long side of one matmul:

    forward      Y  (g, O/g, bL) = W (g, O/g, C/g*K) @ cols (g, C/g*K, bL),
                 then Y (O, b, L) -> y (b, O, L)
    grad weight  gW (g, O/g, C/g*K) = sum_chunks gy (g, O/g, bL) @ cols^T (g, bL, C/g*K)
    grad input   gx = conv(gy, flip(W)^T) by this forward (stride 1 and zero padding,
                 :func:`npconv.plan.full_correlation`), else
                 fold(W^T (g, C/g*K, O/g) @ gy (g, O/g, bL))

The gather is :func:`npconv.paths.windows.copy_windows` where that pays (unit
strides, outputs 8-48 wide), else one ``take`` per chunk through a cached index of
every window element (padding of any mode included,
:func:`npconv.paths.fold.window_index`), from the chunk laid out (C, b, in + 1) with
a zero behind each image: no strided copy of short window rows. Chunks run in order
on the calling thread and the BLAS brings its own threads to each matmul, except a
large forward whose chunks stack enough positions (:func:`_lanes`): there each of
the executor's threads gathers and multiplies its own chunks on one BLAS thread. Measured
before this path (2 cores, OpenBLAS): N4 512@3x3 -> 512, 3x3: 2.1 ms against
im2col's 4.7; N2 64@8x8 -> 128: 0.34 ms against 0.82; at 24x24 outputs and above
im2col was as fast or faster.
"""

from __future__ import annotations

import functools
from typing import Any

from .. import backend, executor, scratch, workspace
from ..geometry import ConvGeometry
from ..plan import Problem, full_correlation
from ._common import (
    empty_grads,
    grad_input_by_forward,
    map_work,
    matmul,
    matmul_tall,
    matmul_tall_temp,
    matmul_temp,
)
from .fold import fold_into, take_columns, window_index, with_zero_bin
from .windows import copy_windows, takes_planes

# Columns per chunk: every image of a batch whose columns fit this goes into one
# matmul (the point of the path); beyond it the batch is cut into chunks of images.
CHUNK_BYTES = 16 * 2**20
# Outputs of at most this many positions per image: where a matmul per image is thin.
# Timed on the cost model's 244 layers, stacking won the forward on 30 of 33 layers
# with 8-31 positions, 20 of 64 with 64-255, 15 of 166 beyond; there a fit over all
# sizes mispredicted it (grad input by its forward on 32³ outputs: 4x slower).
MAX_POSITIONS = 256
# The forward's chunks go to the executor's threads, one BLAS thread each, where each
# image has at least LANE_MIN_LENGTH output positions; a chunk stacks images up to
# LANE_POSITIONS positions (at most half the batch). On the 2-core benchmark machine a
# two-thread matmul of columns that this thread had just gathered ran at a third of
# its rate in some minutes (the other thread reads what this one wrote), while a
# chunk's gather and matmul on one thread did not. ms, those minutes / the others:
# N2 128@16x16 -> 64, 3x3: 1.4-1.7 / 0.62-0.69 one matmul, 0.62-0.76 / 0.56-0.72
# threaded; N2 128@8x8 -> 128: 0.70-0.72 / 0.34 and 0.38-0.43 / 0.37-0.40; N4 256@6x6
# -> 256 in chunks of 2 images lost (1.29-1.43 / 1.08-1.09). See docs/performance.md
# (eighteenth session).
LANE_MIN_LENGTH = 64
LANE_POSITIONS = 128
# ... and where the map's work measure over LANE_WORK_DIVISOR still reaches the
# executor's threshold (twice its multiply-adds: about 34 million by default). In the
# benchmark's worker processes the 19-million U-Net maps lost threaded (down2.conv2,
# N2 64@16x16 -> 64: 0.53-0.56 ms against 0.39; down3.conv2 0.59-0.61 against
# 0.33-0.58), while the 38-million up2.conv1 ran 0.62-0.72 against 0.66-1.16.
LANE_WORK_DIVISOR = 2


def requires(problem: Problem, op: str) -> str | None:
    """None for outputs of at most MAX_POSITIONS positions per image, not depthwise
    (one matmul per group there: the depthwise path's work)."""
    volume = problem.geometry.out_volume
    if volume <= MAX_POSITIONS and not problem.depthwise:
        return None
    return (f"at most {MAX_POSITIONS} output positions per image and more than one input "
            f"channel per group; got {volume} positions, {problem.in_channels} input "
            f"channel(s) in {problem.groups} group(s)")


@functools.lru_cache(maxsize=64)
def _index(xp: Any, geometry: ConvGeometry, images: int) -> Any:
    """(K, images, L), flattened: where window element (k, l) of image i reads a chunk
    laid out (C, images, in + 1) (per channel; the last slot of each image is zero)."""
    k_vol, length = geometry.kernel_volume, geometry.out_volume
    one = window_index(xp, geometry).reshape(k_vol, 1, length)
    offsets = (geometry.in_volume + 1) * xp.arange(images).reshape(1, images, 1)
    return (one + offsets).ravel()


def gather(x: Any, geometry: ConvGeometry, out: Any) -> Any:
    """``out`` (C, K, b, L) <- every window of ``x`` (b, C, *in), channel-major, padding
    of any mode included; returns ``out``."""
    xp = backend.get_array_module(x)
    b, c = x.shape[:2]
    if takes_planes(xp, geometry, out.size, out.dtype):
        # (C, *k, b, *out) seen as (b, C, *k, *out)
        copy_windows(xp.moveaxis(out.reshape((c,) + geometry.kernel + (b,) + geometry.out_size),
                                 1 + geometry.nd, 0), x, geometry)
        return out
    ext = with_zero_bin(x.reshape(b, c, geometry.in_volume).swapaxes(0, 1))  # (C, b, V + 1)
    index = _index(xp, geometry, b)
    take_columns(ext.reshape(c, -1), index, out.reshape(c, index.size))
    return out


def _chunks(problem: Problem) -> list[tuple[int, int]]:
    """(start, stop) of each chunk of images: columns up to CHUNK_BYTES, and never more
    than the workspace limit (raises MemoryError when one image's columns exceed it)."""
    n = problem.batch
    per_image = problem.column_bytes // max(n, 1)
    images = workspace.chunk_length(per_image, n, target=CHUNK_BYTES)
    return [(start, min(n, start + images)) for start in range(0, n, images)]


def _columns(problem: Problem, x: Any, start: int, stop: int) -> Any:
    """The columns of images start:stop, (g, C/g*K, b*L)."""
    xp = backend.get_array_module(x)
    g = problem.geometry
    cols = scratch.empty(xp, (problem.in_channels, g.kernel_volume, stop - start, g.out_volume),
                         x.dtype)
    gather(x[start:stop], g, cols)
    return cols.reshape(problem.groups, -1, (stop - start) * g.out_volume)


def _lanes(problem: Problem, x: Any) -> tuple[list[tuple[int, int]], int, int] | None:
    """(chunks of images, bytes per worker, work measure) for the executor's threads,
    each chunk's matmul on one BLAS thread, or None: one stacked matmul per chunk on
    the BLAS's own threads.

    Threads take chunks where the map is large enough to thread
    (:func:`npconv.paths._common.map_work` over LANE_WORK_DIVISOR) and each image has
    LANE_MIN_LENGTH output positions; a chunk stacks up to LANE_POSITIONS of them, at
    most half the batch. The chunks depend only on the shapes; whether threads take them
    depends on the thread count, and a chunk's output columns come out of the BLAS as
    they do from one matmul over the batch (``tests/test_executor.py`` checks the
    results bitwise)."""
    n, length = problem.batch, problem.geometry.out_volume
    if length < LANE_MIN_LENGTH or n < 2:
        return None
    images = min(-(-LANE_POSITIONS // length), n // 2)
    per_image = problem.column_bytes // n
    images = min(images, workspace.chunk_length(per_image, n, target=CHUNK_BYTES))
    chunks = [(start, min(n, start + images)) for start in range(0, n, images)]
    per_worker, work = images * per_image, map_work(problem) // LANE_WORK_DIVISOR
    if executor.workers_for(len(chunks), per_worker, (x,), work) < 2:
        return None
    return chunks, per_worker, work


def _forward_chunk(_: Any, chunk: tuple[int, int], problem: Problem, x: Any, w: Any,
                   bias: Any, y: Any) -> None:
    """y[start:stop] = W @ the columns of images start:stop (+ bias)."""
    xp = backend.get_array_module(x, w)
    start, stop = chunk
    b, groups = stop - start, problem.groups
    o, length = problem.out_channels, problem.geometry.out_volume
    cols = _columns(problem, x, start, stop)
    if b == 1:  # the matmul writes the image's output in place
        acc = matmul(xp, w, cols, out=y[start].reshape(groups, o // groups, length))
    else:
        # (g, O/g, C/g*K) @ (g, C/g*K, bL) -> (g, O/g, bL) = (O, b, L)
        acc = matmul_temp(xp, w, cols)
    acc = acc.reshape(o, b, length)
    if bias is not None:
        acc += bias.reshape(o, 1, 1)
    if b > 1:
        y[start:stop].reshape(b, o, length)[...] = acc.swapaxes(0, 1)


def forward(problem: Problem, x: Any, weight: Any, bias: Any) -> Any:
    """y (N, O, *out) = conv(x, weight) + bias, one matmul per chunk of images: on the
    executor's threads where :func:`_lanes` says so, else in order on this thread."""
    xp = backend.get_array_module(x, weight)
    geometry, groups = problem.geometry, problem.groups
    n, o = problem.batch, problem.out_channels
    y = xp.empty((n, o) + geometry.out_size, dtype=x.dtype)
    if n == 0 or geometry.out_volume == 0:
        return y
    w = weight.reshape(groups, o // groups, -1)  # (g, O/g, C/g*K)
    lanes = _lanes(problem, x)
    if lanes is None:
        for chunk in _chunks(problem):
            _forward_chunk(None, chunk, problem, x, w, bias, y)
    else:
        chunks, per_worker, work = lanes
        executor.map_chunks(_forward_chunk, chunks, problem, x, w, bias, y,
                            per_worker_bytes=per_worker, arrays=(x,), work_bytes=work)
    return y


def _gy_stacked(gy: Any, start: int, stop: int, groups: int) -> Any:
    """gy of images start:stop as (g, O/g, b*L)."""
    xp = backend.get_array_module(gy)
    b, o = stop - start, gy.shape[1]
    block = gy[start:stop].reshape(b, o, -1)
    stacked = block[0] if b == 1 else scratch.copy(xp, block.swapaxes(0, 1))
    return stacked.reshape(groups, o // groups, -1)


def backward(problem: Problem, gy: Any, x: Any, weight: Any, need_input: bool,
             need_weight: bool) -> tuple[Any, Any]:
    """(grad input (N, C, *in), grad weight (O, C/g, *k)), either None when not needed:
    grad weight one matmul per chunk of stacked images, grad input by this path's
    forward of ``gy`` with the flipped kernel where the adjoint is a convolution,
    else the column gradient of each chunk folded back."""
    xp = backend.get_array_module(gy, x, weight)
    geometry, groups = problem.geometry, problem.groups
    if problem.batch == 0 or geometry.out_volume == 0 or not (need_input or need_weight):
        return empty_grads(problem, xp, need_input, need_weight, tuple(weight.shape))
    o, c = problem.out_channels, problem.in_channels
    fold = need_input and full_correlation(geometry) is None
    gx: Any = None
    if fold:
        gx = xp.empty((problem.batch, c) + geometry.in_size, dtype=gy.dtype)
    elif need_input:
        gx = grad_input_by_forward(problem, gy, weight, forward)
    w_t = weight.reshape(groups, o // groups, -1).transpose(0, 2, 1)  # (g, C/g*K, O/g)
    gw = xp.empty((groups, o // groups, w_t.shape[1]), dtype=gy.dtype) if need_weight else None
    for start, stop in _chunks(problem):
        gy_s = _gy_stacked(gy, start, stop, groups)
        if need_weight:
            # (g, O/g, bL) @ (g, bL, C/g*K) -> (g, O/g, C/g*K): the first chunk's product
            # straight into gw, the others' added
            cols_t = _columns(problem, x, start, stop).transpose(0, 2, 1)
            if start == 0:
                matmul_tall(xp, gy_s, cols_t, out=gw)
            else:
                gw += matmul_tall_temp(xp, gy_s, cols_t)
        if fold:
            # (g, C/g*K, O/g) @ (g, O/g, bL) -> (g, C/g*K, bL) = (C, *k, b, *out), folded
            cols = matmul_temp(xp, w_t, gy_s).reshape(
                (c,) + geometry.kernel + (stop - start,) + geometry.out_size)
            fold_into(gx[start:stop], xp.moveaxis(cols, 1 + geometry.nd, 0), geometry)
    return gx, None if gw is None else gw.reshape(weight.shape)
