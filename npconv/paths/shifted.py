"""The shifted path: im2col whose columns are long shifted runs of the flattened batch.

The batch is laid out channel-major and flattened once, (C, phases, N*V): the padded
images one after another (strided layers split into phase images first), as the
depthwise path lays them out (:class:`npconv.paths.depthwise.Phases`). Kernel tap k
then reads one phase row at a fixed flat shift, so the columns of any block of flat
positions [q0, q1) are one contiguous run per channel and tap,
``x_k[c] = rows[c, phase_k, q0 + shift_k : q1 + shift_k]``, whatever images and rows
the block spans. Outputs are computed on the phase grid (V positions per image, a few
more than the output's: the junk positions are dropped at the end):

    forward      Y[:, q0:q1] (g, O/g, q) = W (g, O/g, C/g*K) @ cols (g, C/g*K, q),
                 y = Y (O, N, *grid) at the valid positions, as (N, O, *out)
    grad weight  gW (g, O/g, C/g*K) = sum_blocks gy_ext[:, q0:q1] @ cols^T (g, q, C/g*K)
    grad input   gx = conv(gy, flip(W)^T) by this forward (stride 1 and zero padding,
                 :func:`npconv.plan.full_correlation`), else, per chunk of images, the
                 column gradient W^T (g, C/g*K, O/g) @ gy_ext added back run by run

where ``gy_ext`` is grad_output on the phase grid, zero at the junk positions (so they
add nothing). im2col copies windows one output row at a time (rows as short as the
output is wide) and multiplies image by image; here the copies are long runs and a
block's matmul spans as many positions as fit its buffer. Blocks run on the
executor's threads. Measured before this path (2 cores, OpenBLAS): ResNet-18's N4
64@24² -> 64, 3x3 forward 2.4 ms against 'auto' (im2col) 4.2 ms, N2 16@64² -> 16 0.8
against 1.7 ms.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from .. import backend, executor, scratch, workspace
from ..geometry import ConvGeometry
from ..patches import pad
from ..plan import Problem, full_correlation
from ._common import (
    Buffers,
    empty_grads,
    grad_input_by_forward,
    matmul,
    matmul_tall_temp,
)
from .depthwise import Phases, phases

# Column bytes per block of positions (at least MIN_BLOCK positions). 2, 4 and 16 MiB
# timed within noise of each other on U-Net and ResNet layers; 4 MiB keeps a block's
# buffers near the cache.
CHUNK_BYTES = 4 * 2**20
MIN_BLOCK = 256
# Where it pays. Timed on the cost model's layers against every other path, it won
# 2 in 5 forwards of 2-d layers with at most 9 taps and 4096 output positions per
# image (geomean 1.05-1.3x the best other path there) and rarely elsewhere: 1-d and
# 3-d layers, larger kernels (more, shorter copies) and larger outputs ran 1.5-4.5x
# the best other path, where a cost model fitted over all of them chose it wrongly.
MAX_TAPS = 9
MAX_POSITIONS = 4096


def requires(problem: Problem, op: str) -> str | None:
    """None for 2-d layers of at most MAX_TAPS taps and MAX_POSITIONS output positions
    per image, not depthwise (one matmul per group there: the depthwise path's work)."""
    g = problem.geometry
    if (g.nd == 2 and g.kernel_volume <= MAX_TAPS and g.out_volume <= MAX_POSITIONS
            and not problem.depthwise):
        return None
    return (f"a 2-d layer of at most {MAX_TAPS} kernel taps and {MAX_POSITIONS} output "
            "positions per image, with more than one input channel per group; got "
            f"{g.nd}-d, kernel {g.kernel}, output {g.out_size}, {problem.in_channels} "
            f"input channel(s) in {problem.groups} group(s)")


@dataclass(frozen=True)
class _Job:
    """What every block of one call reads and writes: the phase rows of x (C, P, N*V +
    margin), grad_output on the grid (g, O/g, N*V), the weight as (g, O/g, C/g*K) or
    transposed (g, C/g*K, O/g), and the flat output (g, O/g, N*V) or grad input."""

    xp: Any
    lay: Phases
    rows: Any = None
    gy: Any = None
    w: Any = None
    out: Any = None


def _blocks(problem: Problem, lay: Phases) -> tuple[list[tuple[int, int]], int]:
    """Blocks [q0, q1) of the N*V flat positions, and the positions of the largest."""
    total = problem.batch * lay.volume
    per_position = problem.in_channels * len(lay.taps) * problem.dtype.itemsize
    most = workspace.chunk_length(per_position, total, "one output position",
                                  target=CHUNK_BYTES)
    most = min(total, max(most, MIN_BLOCK))
    if problem.host_threads:  # an even count of equal blocks, for the threads
        most = workspace.balanced(total, most, least=min(MIN_BLOCK, total))
    return [(q, min(total, q + most)) for q in range(0, total, most)], most


def _run(kernel: Any, items: list[Any], sizes: dict[str, int], job: _Job, dtype: Any,
         total: Any = None) -> None:
    """The block kernels on the executor's threads, each worker with its own buffers."""
    common: dict[str, Any] = dict(
        scratch=functools.partial(Buffers, job.xp, dtype, sizes, ()),
        per_worker_bytes=sum(sizes.values()) * dtype.itemsize,
        arrays=tuple(a for a in (job.rows, job.gy) if a is not None))
    if total is None:
        executor.map_chunks(kernel, items, job, **common)
    else:
        executor.reduce_chunks(kernel, items, total, job, **common)


def _phase_rows(xp: Any, lay: Phases, x: Any) -> Any:
    """(C, P, N*V + margin): the phase images of x (N, C, *in) one after another per
    channel and phase, a zero margin behind for the taps' shifts."""
    n, c = x.shape[:2]
    rows = scratch.zeros(xp, (c, lay.count, n * lay.volume + lay.margin), x.dtype)
    lay.fill(rows, x, None if lay.geometry.zero_padded else pad(x, lay.geometry))
    return rows


def _columns(buf: Buffers, lay: Phases, rows: Any, q0: int, q1: int) -> Any:
    """cols (C, K, q1 - q0): every tap's run of ``rows`` for flat positions q0:q1."""
    cols = buf.get("cols", (rows.shape[0], len(lay.taps), q1 - q0))
    lay.copy_taps(cols, rows, q0)
    return cols


def _forward_block(buf: Buffers, item: tuple[int, int], job: _Job) -> None:
    """Y[:, :, q0:q1] = W @ cols of one block of flat positions."""
    q0, q1 = item
    g, og = job.w.shape[:2]
    cols = _columns(buf, job.lay, job.rows, q0, q1).reshape(g, -1, q1 - q0)
    acc = buf.get("acc", (g, og, q1 - q0))
    # (g, O/g, C/g*K) @ (g, C/g*K, q) -> (g, O/g, q)
    matmul(job.xp, job.w, cols, out=acc)
    job.out[:, :, q0:q1] = acc


def forward(problem: Problem, x: Any, weight: Any, bias: Any) -> Any:
    """y (N, O, *out) = conv(x, weight) + bias, one matmul per block of positions."""
    xp = backend.get_array_module(x, weight)
    geometry, groups = problem.geometry, problem.groups
    n, o = problem.batch, problem.out_channels
    y = xp.empty((n, o) + geometry.out_size, dtype=x.dtype)
    if n == 0 or geometry.out_volume == 0:
        return y
    lay = phases(geometry)
    flat = xp.empty((groups, o // groups, n * lay.volume), dtype=x.dtype)
    blocks, most = _blocks(problem, lay)
    sizes = {"cols": problem.in_channels * len(lay.taps) * most, "acc": o * most}
    job = _Job(xp, lay, rows=_phase_rows(xp, lay, x), out=flat,
               w=weight.reshape(groups, o // groups, -1))  # (g, O/g, C/g*K)
    _run(_forward_block, blocks, sizes, job, x.dtype)
    executor.copy_into(y, xp.moveaxis(flat.reshape((o, n) + lay.size)[(Ellipsis,) + lay.valid],
                                      1, 0))
    if bias is not None:
        y += bias.reshape((1, o) + (1,) * geometry.nd)
    return y


def _gy_ext(xp: Any, lay: Phases, gy: Any, groups: int) -> Any:
    """grad_output (N, O, *out) on the phase grid, (g, O/g, N*V), zero at the junk
    positions."""
    n, o = gy.shape[:2]
    rows = xp.zeros((o, n * lay.volume), dtype=gy.dtype)
    executor.copy_into(rows.reshape((o, n) + lay.size)[(Ellipsis,) + lay.valid],
                       xp.moveaxis(gy, 0, 1))
    return rows.reshape(groups, o // groups, n * lay.volume)


def _weight_block(buf: Buffers, item: tuple[int, int], acc: Any, job: _Job) -> Any:
    """acc (g, O/g, C/g*K) += gy_ext[:, :, q0:q1] @ cols^T of one block (a new array
    when acc is None)."""
    q0, q1 = item
    g = job.gy.shape[0]
    cols = _columns(buf, job.lay, job.rows, q0, q1).reshape(g, -1, q1 - q0)
    # (g, O/g, q) @ (g, q, C/g*K) -> (g, O/g, C/g*K)
    part = matmul_tall_temp(job.xp, job.gy[:, :, q0:q1], cols.transpose(0, 2, 1))
    if acc is None:
        return part
    acc += part
    return acc


def _input_chunk(buf: Buffers, item: tuple[int, int], job: _Job) -> None:
    """gx of images start:stop: the column gradient W^T @ gy_ext added back run by run
    into phase rows, then scattered to the input (through the padding's adjoint)."""
    xp, lay = job.xp, job.lay
    start, stop = item
    c, length = job.out.shape[1], (stop - start) * lay.volume
    cols = buf.get("cols", (c, len(lay.taps), length))
    # (g, C/g*K, O/g) @ (g, O/g, bV) -> (g, C/g*K, bV) = (C, K, bV)
    matmul(xp, job.w, job.gy[:, :, start * lay.volume: stop * lay.volume],
           out=cols.reshape(job.w.shape[:2] + (length,)))
    rows = buf.get("rows", (c, lay.count, length + lay.margin))
    rows[...] = 0
    for k, (r, shift) in enumerate(zip(lay.tap_phase, lay.tap_shift)):
        rows[:, r, shift: shift + length] += cols[:, k]
    g: ConvGeometry = lay.geometry
    gx = job.out[start:stop]
    gx_pad = None if g.zero_padded else xp.empty(gx.shape[:2] + g.padded_size, dtype=gx.dtype)
    lay.unfill(gx, rows, gx_pad)


def _fold_input(problem: Problem, lay: Phases, gy_e: Any, weight: Any) -> Any:
    """Grad input of a strided layer, chunk of images by chunk of images."""
    xp = backend.get_array_module(gy_e)
    n, c, o, groups = problem.batch, problem.in_channels, problem.out_channels, problem.groups
    gx = xp.empty((n, c) + problem.geometry.in_size, dtype=gy_e.dtype)
    per_image = c * (len(lay.taps) + lay.count) * lay.volume * problem.dtype.itemsize
    images = workspace.chunk_length(per_image, n, target=CHUNK_BYTES)
    if problem.host_threads:
        images = workspace.balanced(n, images)
    length = images * lay.volume
    sizes = {"cols": c * len(lay.taps) * length, "rows": c * lay.count * (length + lay.margin)}
    w_t = weight.reshape(groups, o // groups, -1).transpose(0, 2, 1)  # (g, C/g*K, O/g)
    job = _Job(xp, lay, gy=gy_e, w=w_t, out=gx)
    _run(_input_chunk, [(i, min(n, i + images)) for i in range(0, n, images)], sizes, job,
         gy_e.dtype)
    return gx


def backward(problem: Problem, gy: Any, x: Any, weight: Any, need_input: bool,
             need_weight: bool) -> tuple[Any, Any]:
    """(grad input (N, C, *in), grad weight (O, C/g, *k)), either None when not needed:
    grad weight one matmul per block of positions over the runs of ``x``; grad input
    by this path's forward of ``gy`` with the flipped kernel where the adjoint is a
    convolution, else the column gradient added back run by run."""
    xp = backend.get_array_module(gy, x, weight)
    geometry, groups = problem.geometry, problem.groups
    if problem.batch == 0 or geometry.out_volume == 0 or not (need_input or need_weight):
        return empty_grads(problem, xp, need_input, need_weight, tuple(weight.shape))
    lay = phases(geometry)
    fold = need_input and full_correlation(geometry) is None
    gy_e = _gy_ext(xp, lay, gy, groups) if need_weight or fold else None
    gx = None
    if fold:
        gx = _fold_input(problem, lay, gy_e, weight)
    elif need_input:
        gx = grad_input_by_forward(problem, gy, weight, forward)
    if not need_weight:
        return gx, None
    o = problem.out_channels
    blocks, most = _blocks(problem, lay)
    gw = xp.zeros((groups, o // groups, weight[0].size), dtype=gy.dtype)
    job = _Job(xp, lay, rows=_phase_rows(xp, lay, x), gy=gy_e)
    _run(_weight_block, blocks, {"cols": problem.in_channels * len(lay.taps) * most}, job,
         gy.dtype, total=gw)
    return gx, gw.reshape(weight.shape)
