"""The shifted path: im2col whose columns are long shifted runs of the flattened batch.

A chunk of b images is laid out channel-major and flattened, (C, phases, b*V): the
padded images one after another (strided layers split into phase images first),
as the depthwise path lays them out (:class:`npconv.paths.depthwise.Phases`). Kernel
tap k then reads one phase row at a fixed flat shift, so its columns are one
contiguous run per channel, ``x_k[c] = row[c, phase_k, shift_k : shift_k + bV]``,
and one matmul covers the whole chunk. Outputs are computed on the phase grid (V
positions per image, a few more than the output's: the junk positions are dropped):

    forward      Y  (g, O/g, bV) = W (g, O/g, C/g*K) @ cols (g, C/g*K, bV),
                 y = Y at the valid positions, (O, b, *out) -> (b, O, *out)
    grad weight  gW (g, O/g, C/g*K) = sum_chunks gy_ext (g, O/g, bV) @ cols^T (g, bV, C/g*K)
    grad input   gx = conv(gy, flip(W)^T) by this forward (stride 1 and zero padding,
                 :func:`npconv.plan.full_correlation`), else the column gradient
                 W^T (g, C/g*K, O/g) @ gy_ext added back run by run into phase rows

where ``gy_ext`` is grad_output on the phase grid, zero at the junk positions (so
they add nothing). im2col copies windows one output row at a time (rows as short as
the output is wide) and multiplies image by image on threads with a one-thread BLAS;
here the copies are long runs and a chunk's matmul spans all of its images.
Measured before this path (2 cores, OpenBLAS): ResNet-18's N4 64@24² -> 64, 3x3
forward 2.4 ms against 'auto' (im2col) 4.2 ms, N2 16@64² -> 16 0.8 against 1.7 ms.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from .. import backend, executor, workspace
from ..geometry import ConvGeometry
from ..patches import pad
from ..plan import Problem, full_correlation
from ._common import Buffers, empty_grads, grad_input_by_forward, matmul
from .depthwise import Phases, phases

# Columns per chunk of whole images (at least one image). Chunks run on the executor's
# threads; a batch that fits one chunk is one matmul on the BLAS's threads. 2, 4 and
# 16 MiB timed within noise of each other on U-Net and ResNet layers; 4 MiB keeps a
# chunk's buffers near the cache.
CHUNK_BYTES = 4 * 2**20
# Where it pays. Timed on the cost model's 244 layers against every other path, it won
# about 2 forwards in 5 on 2-d layers with at most 9 taps and 4096 output positions
# (geomean 1.05-1.3x the best other path there), and rarely elsewhere: 1-d and 3-d
# layers, larger kernels (more, shorter copies) and larger outputs ran 1.5-3.5x the
# best other path, and a cost model fitted over all of them chose it wrongly.
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


_ZEROED = ("rows", "gy")  # buffers whose unwritten positions must read as zero


@dataclass(frozen=True)
class _Job:
    """What every chunk of one call reads and writes. Forward: x, w (g, O/g, C/g*K),
    y, bias. Backward: gy, x (None without grad weight), w_t (g, C/g*K, O/g), gx
    (None unless grad input is folded run by run)."""

    xp: Any
    lay: Phases
    groups: int
    x: Any
    w: Any
    out: Any  # y, or gx
    bias: Any = None
    gy: Any = None


def _chunks(problem: Problem, lay: Phases, forward: bool, weight: bool,
            fold: bool) -> tuple[list[tuple[int, int]], dict[str, int]]:
    """(start, stop) of each chunk of images and the elements of each buffer a worker
    needs (reused chunk after chunk: fresh pages cost more than the copies); raises
    MemoryError when one image's columns exceed the workspace limit."""
    n, c, o = problem.batch, problem.in_channels, problem.out_channels
    volume, taps, count = lay.volume, len(lay.taps), lay.count
    images = workspace.chunk_length(c * taps * volume * problem.dtype.itemsize, n,
                                    target=CHUNK_BYTES)
    if problem.host_threads:  # an even count of equal chunks, for the threads
        images = workspace.balanced(n, images)
    length = images * volume
    sizes = {"rows": c * count * (length + lay.margin) if forward or weight else 0,
             "cols": c * taps * length, "out": o * length if forward else 0,
             "gy": o * length if not forward else 0,
             "gx_rows": c * count * (length + lay.margin) if fold else 0}
    return [(start, min(n, start + images)) for start in range(0, n, images)], sizes


def _run(kernel: Any, problem: Problem, bounds: list[tuple[int, int]], sizes: dict[str, int],
         job: _Job, total: Any = None) -> None:
    """The chunk kernels on the executor's threads (one matmul each; a single chunk
    runs in the caller, its matmul on the BLAS's threads)."""
    itemsize = problem.dtype.itemsize
    common: dict[str, Any] = dict(
        scratch=functools.partial(Buffers, job.xp, problem.dtype, sizes, _ZEROED),
        per_worker_bytes=sum(sizes.values()) * itemsize,
        arrays=tuple(a for a in (job.x, job.gy, job.w) if a is not None))
    if total is None:
        executor.map_chunks(kernel, bounds, job, **common)
    else:
        executor.reduce_chunks(kernel, bounds, total, job, **common)


def _columns(buf: Buffers, lay: Phases, x: Any) -> Any:
    """cols (C, K, b*V): every tap's run of the phase rows of ``x`` (b, C, *in), which
    hold its phase images one after another, a zero margin behind for the shifts."""
    b, c = x.shape[:2]
    length = b * lay.volume
    rows = buf.get("rows", (c, lay.count, length + lay.margin))
    lay.fill(rows, x, None if lay.geometry.zero_padded else pad(x, lay.geometry))
    cols = buf.get("cols", (c, len(lay.taps), length))
    if lay.count == 1:  # all taps in one copy of an overlapping view
        cols.reshape((c,) + lay.geometry.kernel + (length,))[...] = \
            lay.taps_view(rows, length)[:, 0]
    else:
        for k, (r, shift) in enumerate(zip(lay.tap_phase, lay.tap_shift)):
            cols[:, k] = rows[:, r, shift: shift + length]
    return cols


def _forward_chunk(buf: Buffers, item: tuple[int, int], job: _Job) -> None:
    """y[start:stop] = W @ cols (+ bias) of one chunk, the junk positions dropped."""
    xp, lay, groups = job.xp, job.lay, job.groups
    start, stop = item
    b, o = stop - start, job.out.shape[1]
    cols = _columns(buf, lay, job.x[start:stop]).reshape(groups, -1, b * lay.volume)
    acc = buf.get("out", (groups, o // groups, b * lay.volume))
    # (g, O/g, C/g*K) @ (g, C/g*K, bV) -> (g, O/g, bV) = (O, b, *grid)
    matmul(xp, job.w, cols, out=acc)
    out = job.out[start:stop]
    out[...] = xp.moveaxis(acc.reshape((o, b) + lay.size)[(Ellipsis,) + lay.valid], 1, 0)
    if job.bias is not None:
        out += job.bias.reshape((1, o) + (1,) * lay.geometry.nd)


def forward(problem: Problem, x: Any, weight: Any, bias: Any) -> Any:
    """y (N, O, *out) = conv(x, weight) + bias, one matmul per chunk of images."""
    xp = backend.get_array_module(x, weight)
    geometry, groups = problem.geometry, problem.groups
    n, o = problem.batch, problem.out_channels
    y = xp.empty((n, o) + geometry.out_size, dtype=x.dtype)
    if n == 0 or geometry.out_volume == 0:
        return y
    lay = phases(geometry)
    w = weight.reshape(groups, o // groups, -1)  # (g, O/g, C/g*K)
    bounds, sizes = _chunks(problem, lay, forward=True, weight=False, fold=False)
    _run(_forward_chunk, problem, bounds, sizes, _Job(xp, lay, groups, x, w, y, bias))
    return y


def _gy_ext(buf: Buffers, lay: Phases, gy: Any, groups: int) -> Any:
    """grad_output of a chunk (b, O, *out) on the phase grid, (g, O/g, b*V), zero at
    the junk positions."""
    xp = backend.get_array_module(gy)
    b, o = gy.shape[:2]
    rows = buf.get("gy", (o, b * lay.volume))
    rows.reshape((o, b) + lay.size)[(Ellipsis,) + lay.valid] = xp.moveaxis(gy, 0, 1)
    return rows.reshape(groups, o // groups, b * lay.volume)


def _fold_runs(buf: Buffers, lay: Phases, cols_grad: Any, gx: Any) -> None:
    """gx (b, C, *in) <- the column gradient (C, K, b*V) added back run by run into
    phase rows, then scattered to the input (through the padding's adjoint)."""
    xp = backend.get_array_module(cols_grad)
    c, _, length = cols_grad.shape
    rows = buf.get("gx_rows", (c, lay.count, length + lay.margin))
    rows[...] = 0
    for k, (r, shift) in enumerate(zip(lay.tap_phase, lay.tap_shift)):
        rows[:, r, shift: shift + length] += cols_grad[:, k]
    g: ConvGeometry = lay.geometry
    gx_pad = None if g.zero_padded else xp.empty(gx.shape[:2] + g.padded_size, dtype=gx.dtype)
    lay.unfill(gx, rows, gx_pad)


def _backward_chunk(buf: Buffers, item: tuple[int, int], acc: Any, job: _Job) -> Any:
    """acc (g, O/g, C/g*K) += gW of one chunk (when x is given; a new array when acc is
    None), and its grad input folded run by run (when gx is given)."""
    xp, lay, groups = job.xp, job.lay, job.groups
    start, stop = item
    gy_e = _gy_ext(buf, lay, job.gy[start:stop], groups)
    if job.x is not None:
        cols = _columns(buf, lay, job.x[start:stop]).reshape(groups, -1, gy_e.shape[-1])
        # (g, O/g, bV) @ (g, bV, C/g*K) -> (g, O/g, C/g*K)
        part = matmul(xp, gy_e, cols.transpose(0, 2, 1))
        if acc is None:
            acc = part
        else:
            acc += part
    if job.out is not None:
        c = job.out.shape[1]
        # (g, C/g*K, O/g) @ (g, O/g, bV) -> (g, C/g*K, bV) = (C, K, bV), in the column
        # buffer (grad weight is done with it)
        cols_grad = buf.get("cols", (c, len(lay.taps), gy_e.shape[-1]))
        matmul(xp, job.w, gy_e, out=cols_grad.reshape(job.w.shape[:2] + gy_e.shape[-1:]))
        _fold_runs(buf, lay, cols_grad, job.out[start:stop])
    return acc


def backward(problem: Problem, gy: Any, x: Any, weight: Any, need_input: bool,
             need_weight: bool) -> tuple[Any, Any]:
    """(grad input (N, C, *in), grad weight (O, C/g, *k)), either None when not needed:
    grad weight one matmul per chunk over the runs of ``x``; grad input by this path's
    forward of ``gy`` with the flipped kernel where the adjoint is a convolution, else
    the column gradient added back run by run."""
    xp = backend.get_array_module(gy, x, weight)
    geometry, groups = problem.geometry, problem.groups
    if problem.batch == 0 or geometry.out_volume == 0 or not (need_input or need_weight):
        return empty_grads(problem, xp, need_input, need_weight, tuple(weight.shape))
    o, c, lay = problem.out_channels, problem.in_channels, phases(geometry)
    fold = need_input and full_correlation(geometry) is None
    gx: Any = None
    if fold:
        gx = xp.empty((problem.batch, c) + geometry.in_size, dtype=gy.dtype)
    elif need_input:
        gx = grad_input_by_forward(problem, gy, weight, forward)
    if not (need_weight or fold):
        return gx, None
    w_t = weight.reshape(groups, o // groups, -1).transpose(0, 2, 1)  # (g, C/g*K, O/g)
    job = _Job(xp, lay, groups, x if need_weight else None, w_t, gx if fold else None, gy=gy)
    bounds, sizes = _chunks(problem, lay, forward=False, weight=need_weight, fold=fold)
    if not need_weight:
        _run(_backward_chunk_input, problem, bounds, sizes, job)
        return gx, None
    gw = xp.zeros((groups, o // groups, w_t.shape[1]), dtype=gy.dtype)
    _run(_backward_chunk, problem, bounds, sizes, job, total=gw)
    return gx, gw.reshape(weight.shape)


def _backward_chunk_input(buf: Buffers, item: tuple[int, int], job: _Job) -> None:
    """The grad input of one chunk alone (no grad weight to sum)."""
    _backward_chunk(buf, item, None, job)
