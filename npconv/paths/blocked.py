"""The blocked path: compiled direct convolution, register-blocked, on padded planes.

A stride-1 convolution of a zero-padded image is a sum over kernel taps of
shifts of its flattened padded frame (:mod:`npconv.paths.blocked_kernels`).
The output is cut into *tiles* of consecutive planes along the leading
spatial axis; a tile's *slab* holds the padded frame's planes its windows
read, each channel flattened, and for tile position ``p`` (a position of the
frame)

    forward      out[o, p]   = sum_t sum_c W[o, c, t] slab[c, p + off[t]]
    grad weight  gW[o, c, t] = sum_p gy[o, p] slab[c, p + off[t]]
    grad input   gx          = the forward of gy with the flipped, channel-swapped kernel
                               (strided: one such forward per input phase)

where ``off[t]`` is tap t's flat shift in the frame. With stride s, the frame
is split into its s-phases (padded position ``q s + r`` of an axis is position q
of phase r) and the slab holds one segment per phase that a tap reads: a tap is
still one shift, into its phase's segment, and tile positions are positions of
the phase grid. Positions at the grid's far edges are junk (their windows wrap
around): the forward drops them (where output rows are long, it computes only
the rows' positions, straight into the output), grad weight reads ``gy`` there
as zeros.

No columns are built: the kernels hold a block of output channels times
positions (grad weight: of input times output channels) in vector registers
over the whole sum, which a BLAS matmul on columns cannot do for 16-64
channels, where the columns are 9-27x the input.

It takes groups=1, zero padding, float32 or float64 on NumPy, when numba is
installed (``pip install "npconv[jit]"``). Tiles run on the executor's threads,
each worker with its own slab and tile (kept by the thread from call to call);
grad weight's partial sums are added in a fixed order. For stride 1, rank <= 3 and
a C-contiguous input, a tile is one compiled call (slab filled by memset and
memcpy runs, the sums, grad output's channels-last copy or the output's rows), so a
thread takes the GIL back once a tile; and both gradients run as one map of
chunks, so the threads start once a backward.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
from dataclasses import dataclass
from typing import Any

from .. import backend, executor, scratch, workspace
from ..geometry import ConvGeometry
from ..plan import Problem, full_correlation
from ._common import (
    adjoint_problem,
    empty_grads,
    flipped,
    grad_input_by_forward,
    grad_input_by_phases,
    map_work,
)
from .depthwise_jit import compiled_needs

# Scratch bytes a thread keeps between calls (see _held).
HELD_BYTES = 8 * 2**20
# The forward writes output rows straight from its registers (no tile, no junk computed)
# when a row holds at least this many vectors; shorter rows get blocks of fewer vectors,
# partly masked, and ran slower. Time direct / tile, one thread, interleaved medians of
# 40: rows of 32 (3-D 16 -> 16 and 4 -> 16 at 32^3, 2-D 32 -> 32) 0.85, 0.79, 0.91; of
# 64 (U-Net 16 -> 16) 0.93; 1-d 4096 0.85; of 24, 16 and 12: 1.14, 1.06-1.15, 1.14.
DIRECT_MIN_VECTORS = 2
# Frame positions of a tile: its slab and output stay in L2 (a few tiles a thread on a
# 32x32x32 image).
TILE_POSITIONS = 8192


def requires(problem: Problem, op: str) -> str | None:
    """None for a groups=1, zero-padded float layer on NumPy with numba."""
    g = problem.geometry
    if problem.groups != 1:
        return f"groups=1; got {problem.groups}"
    if not g.zero_padded or any(lo < 0 or hi < 0 for lo, hi in g.pads):
        return f"zero padding ('zeros' mode, none negative); got {g.padding_mode!r}, {g.pads}"
    return compiled_needs(problem)


@dataclass(frozen=True)
class Tiling:
    """A geometry on its phase grid: tap shifts in a slab, and tiles of output planes.

    With stride s, padded position ``q s + r`` of an axis is position q of its phase
    r; the grid is a phase's size, ceil(padded / s) (the padded size for stride 1).
    A slab holds, per channel, one segment per phase that some tap reads.
    """

    grid: tuple[int, ...]
    plane: int  # positions of one leading-axis plane of the grid
    offsets: tuple[int, ...]  # each tap's slab shift: its phase's segment and grid shift
    phases: tuple[tuple[int, ...], ...]  # residues of the phases in the slab, in order
    span: int  # grid planes a tile's windows read past its last
    planes: int  # output planes of a tile (the last tile may have fewer)
    step: int  # positions of a kernel block (a tile's positions are a multiple)
    segment: int  # slab positions of one phase: a tile's planes and its span

    @classmethod
    def of(cls, g: ConvGeometry, step: int, most: int = 0) -> Tiling:
        """The tiling of ``g`` for kernel blocks of ``step`` positions, tiles of at most
        ``most`` planes (if not 0)."""
        grid = tuple(-(-f // s) for f, s in zip(g.padded_size, g.stride))
        strides = [math.prod(grid[i + 1:]) for i in range(g.nd)]
        planes = max(1, TILE_POSITIONS // strides[0])
        planes = workspace.balanced(g.out_size[0], min(planes, most) if most else planes)
        span = (g.kernel[0] - 1) * g.dilation[0] // g.stride[0]
        taps = [tuple(k * d for k, d in zip(tap, g.dilation))
                for tap in itertools.product(*(range(k) for k in g.kernel))]
        residues = [tuple(e % s for e, s in zip(tap, g.stride)) for tap in taps]
        phases = tuple(sorted(set(residues)))
        segment = (planes + span) * strides[0]
        offsets = tuple(phases.index(r) * segment
                        + sum(e // s * st for e, s, st in zip(tap, g.stride, strides))
                        for tap, r in zip(taps, residues))
        return cls(grid, strides[0], offsets, phases, span, planes, step, segment)

    def tiles(self, n: int, lead: int) -> list[tuple[int, int, int]]:
        """(image, first plane, stop plane) of every tile."""
        return [(i, a, min(lead, a + self.planes)) for i in range(n)
                for a in range(0, lead, self.planes)]

    def positions(self, planes: int) -> int:
        """Kernel positions of a tile of ``planes`` planes (whole blocks)."""
        return -(-planes * self.plane // self.step) * self.step

    @property
    def tile_positions(self) -> int:
        """Kernel positions of a whole tile."""
        return self.positions(self.planes)

    @property
    def slab_length(self) -> int:
        """Positions of a slab: its phases' segments, and what a tile's last block reads."""
        return max(len(self.phases) * self.segment, self.tile_positions + max(self.offsets))

    def scratch_bytes(self, channels: int, rows: int, itemsize: int) -> int:
        """Bytes of a worker's scratch: a slab of ``channels`` and a tile of ``rows``."""
        return (channels * self.slab_length + rows * self.tile_positions) * itemsize


@functools.lru_cache(maxsize=256)
def _tiling(geometry: ConvGeometry, step: int, most: int = 0) -> Tiling:
    return Tiling.of(geometry, step, most)


def _fitted(g: ConvGeometry, step: int, channels: int, rows: int, itemsize: int) -> Tiling:
    """The tiling whose worker scratch (a slab of ``channels`` and a tile of ``rows``)
    fits half the workspace limit: fewer planes a tile if needed.

    Raises MemoryError if one plane's does not fit."""
    tiling, limit = _tiling(g, step), workspace.get_workspace_limit()
    while (need := tiling.scratch_bytes(channels, rows, itemsize)) > limit // 2:
        if tiling.planes == 1:
            raise MemoryError(
                f"the blocked path needs {need / 2**20:.2f} MiB of scratch a "
                f"thread for one plane of the frame ({tiling.plane} positions, {channels} "
                f"input and {rows} output channels), more than half the workspace limit of "
                f"{limit / 2**20:.2f} MiB; raise it with npconv.set_workspace_limit() or "
                f"NPCONV_WORKSPACE_MB, or use another algorithm")
        tiling = _tiling(g, step, max(1, tiling.planes // 2))
    return tiling


def _step(itemsize: int) -> int:
    """Positions of a forward kernel block for elements of ``itemsize`` bytes."""
    from . import blocked_kernels as kernels

    return kernels.VECTORS * kernels.lanes_of(itemsize)


def fill(problem: Problem) -> float:
    """The fraction of the positions the kernels compute that are outputs (the rest:
    the frame's edges and the last vector block of each tile)."""
    g = problem.geometry
    tiling = _tiling(g, _step(problem.dtype.itemsize))
    computed = sum(tiling.positions(b - a) for _, a, b in tiling.tiles(1, g.out_size[0]))
    return g.out_volume / max(computed, 1)


def _phase_slices(residue: tuple[int, ...], g: ConvGeometry, first: int,
                  count: int, grid: tuple[int, ...]) -> tuple[tuple[slice, ...], ...] | None:
    """(grid slices, input slices) of the input pixels in one phase of a tile's planes
    [first, first + count) (None if it has none): grid index q of an axis holds input
    pixel q s + r - lo."""
    dst, src = [], []
    for axis, (r, s, (lo, _), size) in enumerate(zip(residue, g.stride, g.pads, g.in_size)):
        start, stop = (first, first + count) if axis == 0 else (0, grid[axis])
        q0 = max(start, -(-(lo - r) // s))
        q1 = min(stop, (size - 1 + lo - r) // s + 1)
        if q1 <= q0:
            return None
        dst.append(slice(q0 - start, q1 - start))
        src.append(slice(q0 * s + r - lo, (q1 - 1) * s + r - lo + 1, s))
    return tuple(dst), tuple(src)


def _fill_slab(slab: Any, x: Any, item: tuple[int, int, int], g: ConvGeometry,
               tiling: Tiling) -> None:
    """slab (C', >= length) <- for each phase of the tile's planes [a, b + span) of image
    n of x (N, C, *in), its pixels in its segment, zero elsewhere (padding, the
    channels from C on, what the last block reads past them): nothing a buffer held
    before is read; by the kernels where :func:`_kernels_read`."""
    n, a, b = item
    c, count = x.shape[1], b - a + tiling.span
    if _kernels_read(x, g, slab.dtype):
        from . import blocked_kernels as kernels

        table = _phase_table(backend.get_array_module(x), g, tiling, a, count)
        return kernels.fill_phases(slab, _image(x, n, g), table, tiling.slab_length)
    slab[:, :tiling.slab_length] = 0
    for index, residue in enumerate(tiling.phases):
        sliced = _phase_slices(residue, g, a, count, tiling.grid)
        if sliced is None:
            continue
        base = index * tiling.segment
        planes = slab[:c, base:base + count * tiling.plane].reshape(
            (c, count) + tiling.grid[1:])
        planes[(slice(None),) + sliced[0]] = x[(n, slice(None)) + sliced[1]]


@functools.lru_cache(maxsize=1024)
def _phase_table(xp: Any, g: ConvGeometry, tiling: Tiling, a: int, count: int) -> Any:
    """kernels.fill_phases's table (a row per phase with pixels) for planes [a, a + count)."""
    zeros, ones, frame = (0,) * (3 - g.nd), (1,) * (3 - g.nd), (count,) + tiling.grid[1:]
    rows = []
    for i, residue in enumerate(tiling.phases):
        if (sliced := _phase_slices(residue, g, a, count, tiling.grid)) is not None:
            dst, src = sliced
            rows.append((i * tiling.segment,) + (ones + frame)[1:]
                        + zeros + tuple(d.start for d in dst)
                        + ones + tuple(d.stop - d.start for d in dst)
                        + zeros + tuple(r.start for r in src) + ones + tuple(r.step for r in src))
    return xp.asarray(rows, dtype=xp.int64).reshape(len(rows), 15)


def _compiled_fill(x: Any, g: ConvGeometry, dtype: Any) -> bool:
    """Whether kernels.fill_frame fills a tile's slab in the same call as its arithmetic:
    stride 1 and :func:`_kernels_read`. Each return from a compiled call to Python takes
    the GIL back, and when the other thread held it that took 50-100 us here: NumPy's fill
    and copy on both threads took 0.06-0.15 ms a 64 -> 64 24x24 tile, against 0.025 on one."""
    return all(s == 1 for s in g.stride) and _kernels_read(x, g, dtype)


def _kernels_read(x: Any, g: ConvGeometry, dtype: Any) -> bool:
    """Whether the kernels' fills read x: rank <= 3, C-contiguous, of dtype."""
    return g.nd <= 3 and bool(x.flags.c_contiguous) and x.dtype == dtype


def _image(x: Any, n: int, g: ConvGeometry) -> Any:
    """Image n of x in the kernels' three spatial axes (leading ones of size 1)."""
    return x[n].reshape(x.shape[1:2] + (1,) * (3 - g.nd) + x.shape[2:])


def _frame_args(x: Any, n: int, a: int, count: int, g: ConvGeometry,
                tiling: Tiling) -> tuple[Any, tuple[Any, ...]]:
    """kernels.fill_frame's image n of x and box of the frame's planes [a, a + count)."""
    img = _image(x, n, g)
    return img, _box(g, tiling, a, count, img.shape[1:])


@functools.lru_cache(maxsize=1024)
def _box(g: ConvGeometry, tiling: Tiling, a: int, count: int,
         image: tuple[int, ...]) -> tuple[Any, ...]:
    """(frame, at, start, count, length) of _frame_args (the same for every call of a
    layer: cached, a lookup instead of 8 us a tile)."""
    pad = (1,) * (3 - g.nd)
    frame = pad + (count,) + tiling.grid[1:]
    sliced = _phase_slices(tiling.phases[0], g, a, count, tiling.grid)
    if sliced is None:  # no input pixel in these planes
        return frame, (0, 0, 0), (0, 0, 0), (0, 0, 0), tiling.slab_length
    zero = (0,) * len(pad)
    at, start = zero + tuple(d.start for d in sliced[0]), zero + tuple(r.start for r in sliced[1])
    size = pad + tuple(d.stop - d.start for d in sliced[0])
    # the kernel copies by raw memcpy: a box outside the frame or the image would write
    # or read past them
    if math.prod(frame) > tiling.slab_length or not all(
            0 <= p and p + k <= f and 0 <= q and q + k <= m
            for p, q, k, f, m in zip(at, start, size, frame, image)):
        raise AssertionError(f"box outside the frame or image: {frame, at, start, image}")
    return frame, at, start, size, tiling.slab_length


def _valid(tile: Any, count: int, g: ConvGeometry, tiling: Tiling, o: int) -> Any:
    """The view (O, count, *out[1:]) of a tile's valid positions."""
    planes = tile[:o, : count * tiling.plane].reshape((o, count) + tiling.grid[1:])
    return planes[(slice(None), slice(None)) + tuple(slice(0, s) for s in g.out_size[1:])]


@dataclass(frozen=True)
class _Forward:
    """One forward call's arrays and geometry, shared by its tiles."""

    y: Any
    x: Any
    w: Any  # (B, T, C, J)
    off: Any
    bias: Any  # (B J,): the bias, zero past O (and all zero without one)
    g: ConvGeometry
    tiling: Tiling
    direct: bool  # the kernel writes y's rows (y C-contiguous, O a multiple of J, rank <= 3)
    compiled: bool  # a tile is one compiled call (_compiled_fill, y C-contiguous)


def _runs(out: tuple[int, ...], a: int, b: int, t: Tiling) -> tuple[int, ...]:
    """Output planes [a, b) as runs along the last axis: (planes, rows a plane, run
    length, first output position, output positions a plane and a row, slab positions a
    plane and a row); a 1-d tile is one run."""
    if len(out) == 1:
        return 1, 1, b - a, a, 0, 0, 0, 0
    plane = math.prod(out[1:])
    return b - a, plane // out[-1], out[-1], a * plane, plane, out[-1], t.plane, t.grid[-1]


def _forward_tile(scratch: tuple[Any, Any], item: tuple[int, int, int], job: _Forward) -> None:
    from . import blocked_kernels as kernels

    slab, tile = scratch
    n, a, b = item
    o, t = job.y.shape[1], job.tiling
    runs, stop = _runs(job.g.out_size, a, b, t), t.positions(b - a)
    if job.compiled:  # one compiled call: fill, sums, and the valid positions into y
        img, box = _frame_args(job.x, n, a, b - a + t.span, job.g, t)
        y = job.y[n].reshape(o, -1)
        if job.direct:
            kernels.forward_rows_item(y, slab, img, box, job.w, job.off, job.bias, runs)
        else:
            kernels.forward_tile_item(y, tile, slab, img, box, job.w, job.off, job.bias, stop,
                                      t.step, runs)
        return
    _fill_slab(slab, job.x, item, job.g, t)
    if job.direct:
        kernels.forward_rows(job.y[n].reshape(o, -1), slab, job.w, job.off, job.bias, *runs)
        return
    kernels.forward_tile(tile, slab, job.w, job.off, job.bias, stop, t.step)
    job.y[n, :, a:b] = _valid(tile, b - a, job.g, t, o)


def _blocked_weight(xp: Any, weight: Any, block: int) -> Any:
    """weight (O, C, *k) as (B, T, C, J), O padded with zero rows to B J."""
    from . import blocked_kernels as kernels

    o, c = weight.shape[:2]
    taps = math.prod(weight.shape[2:])
    shape = (-(-o // block), taps, c, block)
    w = _held(xp, weight.dtype, math.prod(shape), "weight").reshape(shape)
    kernels.block_weight(w, weight.reshape(o, c, taps), o)
    return w


def _scratch(xp: Any, dtype: Any, channels: int, rows: int, tiling: Tiling,
             columns: int) -> tuple[Any, Any]:
    """A worker's slab (channels, slab length) and tile (rows, columns), in this
    thread's reused buffer."""
    slab = channels * tiling.slab_length
    flat = _held(xp, dtype, slab + rows * columns)
    return flat[:slab].reshape(channels, tiling.slab_length), flat[slab:].reshape(rows, columns)


_HELD = threading.local()


def _held(xp: Any, dtype: Any, size: int, use: str = "scratch") -> Any:
    """A flat buffer of ``size`` elements: a prefix of this thread's kept buffer of
    ``dtype`` for ``use`` (a worker's scratch, or a call's blocked weights), which is
    kept up to HELD_BYTES. A fresh buffer's pages fault on first touch (about 3 us a
    page here), which for a 16-channel 64x64 layer cost more than its arithmetic;
    the contents are garbage, and whoever takes the buffer writes all it reads."""
    held = _HELD.__dict__.setdefault("buffers", {})
    buffer = held.get((use, dtype))
    if buffer is None or buffer.size < size:
        buffer = xp.empty(size, dtype=dtype)
        if size * buffer.itemsize <= HELD_BYTES:
            held[(use, dtype)] = buffer
    return buffer[:size]


def _forward_job(problem: Problem, x: Any, weight: Any, bias: Any,
                 out: Any) -> tuple[_Forward, list[tuple[int, int, int]], Any, int]:
    """A forward's job, tiles, worker scratch factory and scratch bytes a worker (the
    output allocated, or ``out``; x has images and channels)."""
    from . import blocked_kernels as kernels

    xp = backend.get_array_module(x, weight)
    g = problem.geometry
    n, c, o = x.shape[0], x.shape[1], weight.shape[0]
    y = xp.empty((n, o) + g.out_size, dtype=x.dtype) if out is None else out
    rows = -(-o // kernels.OUT_BLOCK) * kernels.OUT_BLOCK
    tiling = _fitted(g, _step(x.dtype.itemsize), c, rows, x.dtype.itemsize)
    w = _blocked_weight(xp, weight, kernels.OUT_BLOCK)
    # the kernel starts its sums at the bias: adding it to the tile afterwards was a
    # NumPy broadcast pass that ran at a third of a copy's speed
    b = xp.zeros(rows, dtype=x.dtype)
    if bias is not None:
        b[:o] = bias
    direct = (out is None and o % kernels.OUT_BLOCK == 0 and g.nd <= 3
              and g.out_size[-1] >= DIRECT_MIN_VECTORS * kernels.lanes_of(x.dtype.itemsize))
    job = _Forward(y, x, w, xp.asarray(tiling.offsets, dtype=xp.int64), b, g, tiling, direct,
                   _compiled_fill(x, g, x.dtype) and y.flags.c_contiguous)
    scratch = functools.partial(_scratch, xp, x.dtype, c, rows, tiling, tiling.tile_positions)
    return (job, tiling.tiles(n, g.out_size[0]), scratch,
            tiling.scratch_bytes(c, rows, x.itemsize))


def forward(problem: Problem, x: Any, weight: Any, bias: Any, out: Any = None) -> Any:
    """y (N, O, *out) = conv(x, weight) + bias, zero padding, groups=1 (written into
    ``out``, any view of that shape, if given)."""
    g, (n, c), o = problem.geometry, x.shape[:2], weight.shape[0]
    if n == 0 or c == 0 or o == 0 or g.out_volume == 0:
        xp = backend.get_array_module(x, weight)
        y = xp.empty((n, o) + g.out_size, dtype=x.dtype) if out is None else out
        y[...] = 0 if bias is None else bias.reshape((1, o) + (1,) * g.nd)
        return y
    job, tiles, scratch, per_worker = _forward_job(problem, x, weight, bias, out)
    executor.map_chunks(_forward_tile, tiles, job, scratch=scratch, per_worker_bytes=per_worker,
                        arrays=(x,), work_bytes=map_work(problem))
    return job.y


@dataclass(frozen=True)
class _Weight:
    """One grad-weight call's arrays and geometry, shared by its tiles."""

    gy: Any
    x: Any
    off: Any
    shape: tuple[int, int, int]  # (T, C', O') of the padded partial sums
    g: ConvGeometry
    tiling: Tiling
    compiled: bool  # the kernels fill the slabs (_compiled_fill; rank <= 3 then)


def _weight_tile(buffers: tuple[Any, Any], item: tuple[int, int, int], acc: Any,
                 job: _Weight) -> Any:
    from . import blocked_kernels as kernels

    slab, tile = buffers
    n, a, b = item
    if acc is None:
        acc = scratch.zeros(backend.get_array_module(slab), job.shape, slab.dtype)
    o, t = job.gy.shape[1], job.tiling
    stop, used = t.positions(b - a), (b - a) * t.plane
    if job.compiled:
        img, box = _frame_args(job.x, n, a, b - a + t.span, job.g, t)
        kernels.weight_item(acc, tile, slab, img, box, job.gy[n].reshape(o, -1), job.off,
                            stop, _runs(job.g.out_size, a, b, t))
        return acc
    _fill_slab(slab, job.x, item, job.g, job.tiling)
    # grad_output channels last, (positions, O'), zero at junk positions and from O on
    tile[:stop] = 0
    out = job.g.out_size
    if len(out) <= 3:
        kernels.transpose_tile(tile, job.gy[n].reshape(o, -1), *_runs(out, a, b, t))
    else:
        planes = tile[:used].reshape((b - a,) + t.grid[1:] + (tile.shape[1],))
        inner = tuple(slice(0, size) for size in out[1:])
        planes[(slice(None),) + inner + (slice(0, o),)] = backend.get_array_module(
            tile).moveaxis(job.gy[n, :, a:b], 0, -1)
    kernels.grad_weight_tile(acc, tile, slab, job.off, stop)
    return acc


def _weight_shape(c: int, o: int, taps: int, lanes: int) -> tuple[int, int, int]:
    """(T, C', O'): the channels padded to grad weight's blocks."""
    from . import blocked_kernels as kernels

    rows, vectors = kernels.NARROW if o <= lanes else kernels.WIDE
    return taps, -(-c // rows) * rows, -(-o // (vectors * lanes)) * vectors * lanes


def _weight_job(problem: Problem, gy: Any, x: Any,
                xp: Any) -> tuple[_Weight, list[tuple[int, int, int]], Any, int]:
    """Grad weight's job, tiles, worker scratch factory and scratch bytes a worker."""
    from . import blocked_kernels as kernels

    g, o, c = problem.geometry, gy.shape[1], x.shape[1]
    lanes = kernels.lanes_of(gy.dtype.itemsize)
    shape = _weight_shape(c, o, math.prod(g.kernel), lanes)
    tiling = _fitted(g, _step(gy.dtype.itemsize), shape[1], shape[2], gy.dtype.itemsize)
    job = _Weight(xp.ascontiguousarray(gy), x, xp.asarray(tiling.offsets, dtype=xp.int64),
                  shape, g, tiling, _compiled_fill(x, g, gy.dtype))
    scratch = functools.partial(_scratch, xp, gy.dtype, shape[1], tiling.tile_positions,
                                tiling, shape[2])
    return (job, tiling.tiles(gy.shape[0], g.out_size[0]), scratch,
            tiling.scratch_bytes(shape[1], shape[2], gy.itemsize))


def _weight_result(problem: Problem, total: Any, gy: Any, x: Any, weight: Any) -> Any:
    """grad weight (O, C, *k) from the summed partials (T, C', O')."""
    xp = backend.get_array_module(total)
    o, c = gy.shape[1], x.shape[1]
    if not xp.isfinite(total[:, :c, :o]).all():
        # a junk position can read a non-finite pixel no window reads (0 * inf is nan):
        # sum again over the windows only
        from . import im2col

        return im2col.backward(problem, gy, x, weight, False, True)[1]
    return xp.ascontiguousarray(total.transpose(2, 1, 0)[:o, :c]).reshape(weight.shape)


def _grad_weight(problem: Problem, gy: Any, x: Any, weight: Any, xp: Any) -> Any:
    job, tiles, buffers, per_worker = _weight_job(problem, gy, x, xp)
    total = scratch.empty(xp, job.shape, gy.dtype)  # (T, C', O'): the result is a copy
    executor.reduce_chunks(_weight_tile, tiles, total, job, scratch=buffers, arrays=(gy,),
                           per_worker_bytes=per_worker, work_bytes=map_work(problem), fresh=True)
    return _weight_result(problem, total, gy, x, weight)


def _both_item(scratch: tuple[Any, Any], item: tuple[bool, int, Any], forward_job: _Forward,
               weight_job: _Weight, partials: list[Any]) -> None:
    """One item of a backward run as one map: a tile of grad input's forward, or a lane
    of grad weight's tiles (its partial sum kept by lane)."""
    is_lane, index, work = item
    if not is_lane:
        _forward_tile(scratch[0](), work, forward_job)
        return
    acc = None
    for tile in work:
        acc = _weight_tile(scratch[1](), tile, acc, weight_job)
    partials[index] = acc


def _both(problem: Problem, gy: Any, x: Any, weight: Any, xp: Any) -> tuple[Any, Any]:
    """Both gradients of a layer whose grad input is a forward (stride 1), as one map
    of executor chunks: grad weight's lanes (summed in lane order, as reduce_chunks
    does) and grad input's tiles, so that the threads start once and share out both."""
    adjoint = adjoint_problem(problem)
    assert adjoint is not None, "the caller checks full_correlation first"
    # the adjoint's kernel as a view: _blocked_weight packs it (one copy, not two)
    f_job, f_tiles, f_scratch, f_bytes = _forward_job(
        adjoint, gy, flipped(weight, problem.groups, contiguous=False), None, None)
    w_job, w_tiles, w_scratch, w_bytes = _weight_job(problem, gy, x, xp)
    total = scratch.empty(xp, w_job.shape, gy.dtype)
    lanes = executor.lanes_of(w_tiles, total.nbytes)
    partials: list[Any] = [None] * len(lanes)
    items = ([(True, i, lane) for i, lane in enumerate(lanes)]
             + [(False, 0, tile) for tile in f_tiles])
    executor.map_chunks(_both_item, items, f_job, w_job, partials,
                        scratch=lambda: (_Lazy(f_scratch), _Lazy(w_scratch)),
                        per_worker_bytes=max(f_bytes, w_bytes), arrays=(gy,),
                        work_bytes=2 * map_work(problem))  # both gradients' work
    executor.sum_lanes(total, partials, fresh=True)
    return f_job.y, _weight_result(problem, total, gy, x, weight)


class _Lazy:
    """A worker's scratch of one kind, made on first use (a thread may get none)."""

    def __init__(self, make: Any) -> None:
        self.make, self.made = make, None

    def __call__(self) -> Any:
        if self.made is None:
            self.made = self.make()
        return self.made


def backward(problem: Problem, gy: Any, x: Any, weight: Any, need_input: bool,
             need_weight: bool) -> tuple[Any, Any]:
    """(grad input (N, C, *in), grad weight (O, C, *k)), either None when not needed."""
    xp = backend.get_array_module(gy, x, weight)
    if gy.size == 0 or problem.in_channels == 0 or not (need_input or need_weight):
        return empty_grads(problem, xp, need_input, need_weight, tuple(weight.shape))
    gx = None
    stride_one = full_correlation(problem.geometry) is not None
    if need_input and need_weight and stride_one:
        return _both(problem, gy, x, weight, xp)
    if need_input and stride_one:
        # the adjoint's kernel as a view: _blocked_weight packs it (one copy, not two)
        gx = grad_input_by_forward(problem, gy, weight, forward, contiguous=False)
    elif need_input:
        gx = grad_input_by_phases(problem, gy, weight, forward, map_work(problem))
    gw = _grad_weight(problem, gy, x, weight, xp) if need_weight else None
    return gx, gw
