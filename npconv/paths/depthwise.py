"""Depthwise path: one input channel per group, as per-channel contractions over taps.

With C/g == 1 and O = C * mult (the channel multiplier), every map is a sum
over the K kernel taps of one channel's shifted input, weighted per channel:

    forward      y[c, t, q]   = sum_k  w[c, t, k] x_k[c, q]
    grad weight  gW[c, t, k]  = sum_q  gy[c, t, q] x_k[c, q]
    grad input   gx_k[c]     += sum_t  w[c, t, k] gy[c, t],  added back at tap k

(q runs over the batch and the output positions). A chunk of images is laid
out *channel-major*, (C, images x positions): each channel's images follow one
another in one long row. Strided layers are split into phase images first
(``x_pad[..., r::s]`` for each residue r of the stride s), so that every tap
reads one phase image at a fixed shift: ``x_k`` is then a contiguous 1-d slice
of a row, for any rank, stride and dilation, and nothing is read through
strided windows. Each map is K slice copies into a column buffer
``cols[c, k] = x_k[c]`` (long rows) and one matmul batched over the channels:
a matrix-vector product per channel whose rows span all images of the chunk.

Output positions are those of the phase grid (padded size / stride), so a few
junk positions per row are computed and dropped; grad_output is laid out with
zeros there, so they add nothing to the gradients. Grad input gathers instead
of scattering: a padded input position m of phase r is the sum over the taps k
of r of ``w_k gy[m - shift_k]``, read from grad_output laid out once with a
zero margin in front. Junk positions multiply real (finite) pixels by zero: a
non-finite input may spread NaN to a few more weight-gradient entries.

Chunks are blocks of images (or of channels of one image) from
:func:`npconv.workspace.row_chunks`, run on host threads by the executor.
Through im2col a depthwise layer ran 6-7x slower than torch, and the batch-
major flat layout with one matrix-vector product per image and channel spent
most of its time in those calls on small images (measured 3-9x below this).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any

from .. import backend, executor, scratch, workspace
from ..geometry import ConvGeometry
from ..patches import pad, unpad_add
from ..plan import Problem
from ._common import Buffers, empty_grads, matmul, matmul_tall

# Buffer bytes per chunk: the column buffer (K times the input chunk) and its
# matmul stay in a core's cache. Measured on MobileNetV2's layers and S6
# (2 cores): see docs/performance.md (2026-12-02).
TARGET_CHUNK_BYTES = 4 * 2**20
# Positions per channel row of a chunk (images x phase-grid positions) that a chunk
# takes whole images for, before it takes more channels: below about this the call
# of one matrix-vector product per channel costs more than its work (measured).
MIN_ROW = 4096


def requires(problem: Problem, op: str) -> str | None:
    """None for a depthwise convolution (any map, rank, stride, padding and dtype)."""
    if problem.depthwise:
        return None
    return ("a depthwise convolution (groups > 1 and one input channel per group); got "
            f"{problem.in_channels} input channels in {problem.groups} group(s)")


# --------------------------------------------------------------------------- the layout


class Phases:
    """The phase images of a geometry and where each kernel tap reads them.

    Residue r (a tuple, one per axis) holds ``x_pad[..., r_0::s_0, r_1::s_1, ...]``
    in a grid of ``size`` (padded size / stride, rounded up; at stride 1 with zero
    padding in + max(lo, hi): consecutive blocks share their zeros) per image; tap k reads
    phase ``tap_phase[k]`` at flat shift ``tap_shift[k]``, and output position o
    (flat in the grid) reads it at ``o + tap_shift[k]``. ``order`` lists the taps
    phase by phase (``bounds[r]`` its range for phase r).
    """

    def __init__(self, geometry: ConvGeometry):
        g = geometry
        self.geometry = g
        self.padded = g.padded_size
        spans = [d * (k - 1) + 1 for k, d in zip(g.kernel, g.dilation)]
        # Stride 1 with zero padding: each image (and row) shares its trailing zeros
        # with the next one's leading zeros (a grid of in + max(lo, hi) per axis), fewer
        # junk positions; a window running past a block reads the next block's leading
        # zeros, and its valid outputs stay within the block while min(lo, hi) < span.
        self.shared = (all(s == 1 for s in g.stride) and g.zero_padded
                       and all(min(p) < sp for p, sp in zip(g.pads, spans)))
        if self.shared:
            self.size = tuple(n + max(p) for n, p in zip(g.in_size, g.pads))
        else:
            self.size = tuple(-(-p // s) for p, s in zip(self.padded, g.stride))
        self.volume = math.prod(self.size)
        self.residues = list(itertools.product(*(range(s) for s in g.stride)))
        pitch = [math.prod(self.size[a + 1:]) for a in range(g.nd)]
        self.taps = list(itertools.product(*(range(k) for k in g.kernel)))
        self.tap_phase: list[int] = []
        self.tap_shift: list[int] = []
        for tap in self.taps:
            pos = [t * d for t, d in zip(tap, g.dilation)]
            self.tap_phase.append(self.residues.index(
                tuple(p % s for p, s in zip(pos, g.stride))))
            self.tap_shift.append(sum((p // s) * st for p, s, st in zip(pos, g.stride, pitch)))
        self.margin = max(self.tap_shift)
        self.order = sorted(range(len(self.taps)), key=lambda k: self.tap_phase[k])
        self.bounds: list[tuple[int, int]] = []
        for r in range(len(self.residues)):
            ks = [i for i, k in enumerate(self.order) if self.tap_phase[k] == r]
            self.bounds.append((ks[0], ks[-1] + 1) if ks else (0, 0))
        self.valid = tuple(slice(0, n) for n in g.out_size)

    @property
    def count(self) -> int:
        return len(self.residues)

    def taps_view(self, rows: Any, length: int, back: bool = False) -> Any:
        """(cb, m, *kernel, length): every tap's shifted row of ``rows`` (cb, m, row) in
        one strided view (one phase only, i.e. stride 1): ``row[shift_k + q]``, or with
        ``back`` ``row[margin - shift_k + q]``. One copy or product over it replaces K."""
        g, item = self.geometry, rows.itemsize
        pitch = [math.prod(self.size[a + 1:]) for a in range(g.nd)]
        taps = tuple((-1 if back else 1) * d * p * item for d, p in zip(g.dilation, pitch))
        base = rows[:, :, self.margin:] if back else rows
        return backend.as_strided_view(base, rows.shape[:2] + g.kernel + (length,),
                                       rows.strides[:2] + taps + (item,))

    def copy_taps(self, cols: Any, rows: Any, start: int = 0) -> None:
        """cols (cb, K, length) <- every tap's run of ``rows`` (cb, P, row) from flat
        position ``start`` on: ``cols[:, k] = rows[:, phase_k, start + shift_k:][:length]``
        (one copy of the overlapping taps view with one phase; one per tap otherwise)."""
        cb, length = cols.shape[0], cols.shape[-1]
        if self.count == 1:  # all taps in one copy (fewer calls: the chunks share the GIL)
            cols.reshape((cb,) + self.geometry.kernel + (length,))[...] = \
                self.taps_view(rows[:, :, start:], length)[:, 0]
            return
        for k, (r, shift) in enumerate(zip(self.tap_phase, self.tap_shift)):
            cols[:, k] = rows[:, r, start + shift: start + shift + length]

    def spans(self, r: int) -> list[tuple[slice, slice]]:
        """Per axis, (phase-grid slice, input slice) of the input pixels in phase r."""
        g, out = self.geometry, []
        for res, s, (lo, _), n in zip(self.residues[r], g.stride, g.pads, g.in_size):
            first = max(0, -(-(lo - res) // s))  # first grid position inside the input
            i0 = first * s + res - lo
            count = max(0, -(-(n - i0) // s))
            out.append((slice(first, first + count), slice(i0, i0 + s * (count - 1) + 1, s)))
        return out

    def fill(self, xph: Any, x: Any, padded: Any) -> None:
        """xph (cb, P, b*V + margin) <- the phase images of x (b, cb, *in) (zero padding:
        pad positions, never written, stay zero) or of ``padded`` (b, cb, *padded)."""
        cb, b = xph.shape[0], x.shape[0]
        lead = (slice(None), slice(None))
        for r, res in enumerate(self.residues):
            grid = xph[:, r, : b * self.volume].reshape((cb, b) + self.size)
            if padded is None:
                spans = self.spans(r)
                src = x[lead + tuple(s for _, s in spans)]
                grid[lead + tuple(d for d, _ in spans)] = src.swapaxes(0, 1)
            else:
                src = padded[lead + tuple(slice(q, None, s)
                                          for q, s in zip(res, self.geometry.stride))]
                grid[lead + tuple(slice(0, n) for n in src.shape[2:])] = src.swapaxes(0, 1)

    def unfill(self, gx: Any, gxph: Any, gx_pad: Any) -> None:
        """gx (b, cb, *in) <- the phase images gxph (cb, P, b*V): each input pixel is
        in one phase (zero padding), or through ``gx_pad`` and the padding's adjoint."""
        cb, b = gxph.shape[0], gx.shape[0]
        lead = (slice(None), slice(None))
        for r, res in enumerate(self.residues):
            grid = gxph[:, r, : b * self.volume].reshape((cb, b) + self.size)
            if gx_pad is None:
                spans = self.spans(r)
                gx[lead + tuple(s for _, s in spans)] = grid[
                    lead + tuple(d for d, _ in spans)].swapaxes(0, 1)
            else:
                dst = gx_pad[lead + tuple(slice(q, None, s)
                                          for q, s in zip(res, self.geometry.stride))]
                dst[...] = grid[lead + tuple(slice(0, n) for n in dst.shape[2:])].swapaxes(0, 1)
        if gx_pad is not None:
            unpad_add(gx, gx_pad, self.geometry, accumulate=False)


@functools.lru_cache(maxsize=256)
def phases(geometry: ConvGeometry) -> Phases:
    """The :class:`Phases` of ``geometry`` (built once per geometry)."""
    return Phases(geometry)


def _chunks(lay: Phases, n: int, c: int, per_channel: int, what: str,
            host: bool) -> tuple[int, int, list[tuple[int, int, int, int]]]:
    """(images, channels) per chunk and the chunks (start, stop, c0, c1).

    Rows are long first: enough images for MIN_ROW positions per channel (a matrix-
    vector product per channel and chunk costs a call), then as many channels as fit
    TARGET_CHUNK_BYTES; on the host both counts are balanced for the threads as
    :func:`npconv.workspace.row_chunks` balances (on a device a chunk runs up to the
    workspace limit). Bounds depend on the shapes and the workspace limit only.
    """
    images = workspace.chunk_length(per_channel, n, what,
                                    target=-(-MIN_ROW // lay.volume) * per_channel)
    block = workspace.chunk_length(per_channel * images, c, what, target=TARGET_CHUNK_BYTES)
    if host:
        images = workspace.balanced(n, images)
        block = workspace.balanced(c, block)
    items = [(start, min(n, start + images), c0, min(c, c0 + block))
             for start in range(0, n, images) for c0 in range(0, c, block)]
    return images, block, items


_ZEROED = ("xph", "gy")  # buffers whose unwritten positions must read as zero


def _source(lay: Phases, x: Any, start: int, stop: int, c0: int, c1: int) -> tuple[Any, Any]:
    """(x block, padded block or None) of images start:stop, channels c0:c1."""
    block = x[start:stop, c0:c1]
    if lay.geometry.zero_padded:
        return block, None
    return block, pad(block, lay.geometry)


def _phase_rows(buf: Buffers, lay: Phases, x: Any, item: tuple[int, int, int, int]) -> Any:
    """xph (cb, P, b*V + margin): the phase images of the chunk, one row per channel and
    phase (a zero margin behind, for the taps' shifts)."""
    start, stop, c0, c1 = item
    xph = buf.get("xph", (c1 - c0, lay.count, (stop - start) * lay.volume + lay.margin))
    lay.fill(xph, *_source(lay, x, start, stop, c0, c1))
    return xph


def _columns(buf: Buffers, lay: Phases, x: Any, item: tuple[int, int, int, int],
             ones: bool = False) -> Any:
    """cols (cb, K [+ 1], b*V): x_k of every tap, from the phase images of the chunk
    (and a row of ones under them when ``ones``: the bias rides along in the matmul)."""
    cb, length = item[3] - item[2], (item[1] - item[0]) * lay.volume
    xph = _phase_rows(buf, lay, x, item)
    shape = (cb, len(lay.taps) + ones, length)
    fresh = buf.shapes.get("cols") != shape
    cols = buf.get("cols", shape)
    if ones and fresh:
        cols[:, -1] = 1
    lay.copy_taps(cols[:, :len(lay.taps)], xph)
    return cols


# --------------------------------------------------------------------------- forward


@dataclass(frozen=True)
class _Forward:
    """What every chunk of one forward call reads (x, w (C, mult, K [+ 1])) and writes (y)."""

    xp: Any
    x: Any
    w: Any  # with the bias as a last column, if any
    y: Any
    lay: Phases


def _forward_chunk(buf: Buffers, item: tuple[int, int, int, int], job: _Forward) -> None:
    """y[start:stop, channels c0:c1 (times mult)] = depthwise conv (+ bias) of one chunk."""
    xp, lay = job.xp, job.lay
    start, stop, c0, c1 = item
    b, cb, mult = stop - start, c1 - c0, job.w.shape[1]
    cols = _columns(buf, lay, job.x, item, ones=job.w.shape[2] > len(lay.taps))
    acc = buf.get("acc", (cb, mult, b * lay.volume))
    # y[c] (mult, bV) = w[c] (mult, K [+ 1]) @ cols[c] (K [+ 1], bV): one product per channel
    matmul(xp, job.w[c0:c1], cols, out=acc)
    grid = acc.reshape((cb, mult, b) + lay.size)[(Ellipsis,) + lay.valid]
    out = job.y[start:stop, c0 * mult: c1 * mult].reshape((b, cb, mult) + lay.geometry.out_size)
    out[...] = xp.moveaxis(grid, 2, 0)


def _sizes(lay: Phases, images: int, block: int, mult: int, columns: bool,
           grad: bool, grad_input: bool, phase_rows: bool | None = None) -> dict[str, int]:
    """Elements of each buffer of a worker for chunks of ``images`` x ``block`` channels
    (phase rows of x with the columns, unless ``phase_rows`` says otherwise)."""
    length, k_vol = images * lay.volume, len(lay.taps)
    phased = block * lay.count * (length + lay.margin)
    other_mode = not lay.geometry.zero_padded
    return {
        "xph": phased if (columns if phase_rows is None else phase_rows) else 0,
        "cols": block * k_vol * length if columns else 0,
        "acc": block * mult * length if not grad else 0,
        "gy": block * mult * (lay.margin + length) if grad else 0,
        "colsT": block * k_vol * mult * length if grad_input else 0,
        "gxph": block * lay.count * length if grad_input else 0,
        "gx_pad": images * block * math.prod(lay.padded) if grad_input and other_mode else 0,
    }


def forward(problem: Problem, x: Any, weight: Any, bias: Any) -> Any:
    """y (N, O, *out) = depthwise conv(x, weight) + bias, chunk by chunk."""
    xp = backend.get_array_module(x, weight)
    geometry = problem.geometry
    n, c = x.shape[:2]
    o = weight.shape[0]
    y = xp.empty((n, o) + geometry.out_size, dtype=x.dtype)
    if n == 0 or geometry.out_volume == 0 or c == 0:
        return y
    lay = phases(geometry)
    mult, k_vol, itemsize = o // c, len(lay.taps), x.dtype.itemsize
    per_channel = (lay.count + k_vol + mult) * lay.volume * itemsize
    images, block, items = _chunks(lay, n, c, per_channel, "one channel of one image",
                                   backend.backend_of(x).host_threads)
    sizes = _sizes(lay, images, block, mult, True, False, False)
    sizes["cols"] += block * images * lay.volume  # the row of ones
    w = weight.reshape(c, mult, k_vol)
    if bias is not None:
        w = xp.concatenate([w, bias.reshape(c, mult, 1).astype(w.dtype, copy=False)], axis=2)
    job = _Forward(xp, x, w, y, lay)
    executor.map_chunks(_forward_chunk, items, job,
                        scratch=functools.partial(Buffers, xp, x.dtype, sizes, _ZEROED),
                        per_worker_bytes=sum(sizes.values()) * itemsize,
                        arrays=(x, weight))
    return y


# --------------------------------------------------------------------------- backward


@dataclass(frozen=True)
class _Backward:
    """What every backward chunk reads (gy, x, w) and writes (gx, if wanted)."""

    xp: Any
    gy: Any
    x: Any  # None without grad weight
    w_in: Any  # (C, 1, K*mult): w[c, t, k] at [c, 0, (k, t)], taps in phase order
    gx: Any  # None without grad input
    lay: Phases
    mult: int


def _gy_rows(buf: Buffers, job: _Backward, item: tuple[int, int, int, int]) -> Any:
    """gy of the chunk as (cb, mult, margin + b*V): a zero margin, then the phase grid,
    zero at its junk positions."""
    lay, (start, stop, c0, c1) = job.lay, item
    b, cb, mult = stop - start, c1 - c0, job.mult
    rows = buf.get("gy", (cb, mult, lay.margin + b * lay.volume))
    grid = rows[:, :, lay.margin:].reshape((cb, mult, b) + lay.size)
    src = job.gy[start:stop, c0 * mult: c1 * mult].reshape(
        (b, cb, mult) + lay.geometry.out_size)
    grid[(Ellipsis,) + lay.valid] = job.xp.moveaxis(src, 0, 2)
    return rows


def _grad_input(buf: Buffers, job: _Backward, item: tuple[int, int, int, int],
                rows: Any) -> None:
    """gx of the chunk: phase r at m gathers w_k gy[m - shift_k] over its taps k."""
    xp, lay, mult = job.xp, job.lay, job.mult
    start, stop, c0, c1 = item
    b, cb = stop - start, c1 - c0
    length, m0 = b * lay.volume, lay.margin
    cols = buf.get("colsT", (cb, len(lay.taps), mult, length))
    if lay.count == 1:  # one phase: taps in their natural order, one copy
        nd = lay.geometry.nd
        cols.reshape((cb,) + lay.geometry.kernel + (mult, length))[...] = xp.moveaxis(
            lay.taps_view(rows, length, back=True), 1, 1 + nd)
    else:
        for i, k in enumerate(lay.order):
            shift = lay.tap_shift[k]
            cols[:, i] = rows[:, :, m0 - shift: m0 - shift + length]
    gxph = buf.get("gxph", (cb, lay.count, length))
    flat = cols.reshape(cb, len(lay.taps) * mult, length)
    for r, (k0, k1) in enumerate(lay.bounds):
        if k0 == k1:
            gxph[:, r] = 0
            continue
        # gx_r[c] (1, bV) = w[c] (1, K_r*mult) @ gy shifted (K_r*mult, bV)
        matmul(xp, job.w_in[c0:c1, :, k0 * mult: k1 * mult], flat[:, k0 * mult: k1 * mult],
               out=gxph[:, r: r + 1])
    gx_pad = None
    if not lay.geometry.zero_padded:
        gx_pad = buf.get("gx_pad", (b, cb) + lay.padded)
    lay.unfill(job.gx[start:stop, c0:c1], gxph, gx_pad)


def _input_chunk(buf: Buffers, item: tuple[int, int, int, int], job: _Backward) -> None:
    """gx of one chunk alone (no grad weight to sum)."""
    _grad_input(buf, job, item, _gy_rows(buf, job, item))


def _grad_weight(buf: Buffers, job: _Backward, item: tuple[int, int, int, int],
                 rows: Any, acc: Any) -> None:
    """acc (C, mult, K) += gW of the chunk, from grad_output ``rows`` (cb, mult, m + bV)."""
    xp, lay = job.xp, job.lay
    start, stop, c0, c1 = item
    gy_rows = rows[:, :, lay.margin:]  # (cb, mult, bV)
    vecdot = getattr(xp, "vecdot", None)
    if vecdot is None:  # gW[c] (K, mult) = cols[c] (K, bV) @ gy[c]^T (bV, mult)
        part = matmul_tall(xp, _columns(buf, lay, job.x, item), gy_rows.transpose(0, 2, 1))
        acc[c0:c1] += part.transpose(0, 2, 1)
        return
    # gW[c, t, k] = <gy[c, t], x_k[c]>, x_k read in place from the phase rows: no
    # columns (2x faster than columns and a matrix-vector product per channel,
    # measured); vecdot conjugates its first argument
    xph, length = _phase_rows(buf, lay, job.x, item), (stop - start) * lay.volume
    left = xp.conj(gy_rows) if gy_rows.dtype.kind == "c" else gy_rows
    if lay.count == 1:  # all taps in one call
        nd, mult = lay.geometry.nd, job.mult
        part = vecdot(left.reshape(left.shape[:2] + (1,) * nd + (length,)),
                      lay.taps_view(xph, length))
        acc[c0:c1] += part.reshape(c1 - c0, mult, len(lay.taps))
        return
    for k, (r, shift) in enumerate(zip(lay.tap_phase, lay.tap_shift)):
        acc[c0:c1, :, k] += vecdot(left, xph[:, r, None, shift: shift + length])


def _backward_chunk(buf: Buffers, item: tuple[int, int, int, int], acc: Any,
                    job: _Backward) -> Any:
    """acc (C, mult, K) += gW of the chunk, and its gx when wanted."""
    rows = _gy_rows(buf, job, item)
    if acc is None:
        acc = scratch.zeros(job.xp, (job.w_in.shape[0], job.mult, len(job.lay.taps)), rows.dtype)
    _grad_weight(buf, job, item, rows, acc)
    if job.gx is not None:
        _grad_input(buf, job, item, rows)
    return acc


def backward(problem: Problem, gy: Any, x: Any, weight: Any, need_input: bool,
             need_weight: bool) -> tuple[Any, Any]:
    """(gx, gw) of y = depthwise conv(x, weight); either may be skipped (None).

    ``weight`` and ``x`` are used as given (the caller conjugates them for the
    adjoint of a complex convolution); ``x`` may be None without ``need_weight``.
    """
    xp = backend.get_array_module(gy, x, weight)
    geometry = problem.geometry
    c = problem.in_channels
    if gy.shape[0] == 0 or geometry.out_volume == 0 or c == 0 or not (need_input or need_weight):
        return empty_grads(problem, xp, need_input, need_weight, tuple(weight.shape))
    n, o = gy.shape[:2]
    lay = phases(geometry)
    mult, k_vol, itemsize = o // c, len(lay.taps), gy.dtype.itemsize
    # every element of gx is written once, by its chunk's unfill
    gx = xp.empty((n, c) + geometry.in_size, dtype=gy.dtype) if need_input else None
    columns = need_weight and getattr(xp, "vecdot", None) is None  # else read in place
    sizes_of = functools.partial(_sizes, lay, columns=columns, grad=True,
                                 grad_input=need_input, mult=mult, phase_rows=need_weight)
    per_channel = sum(sizes_of(images=1, block=1).values()) * itemsize
    images, block, items = _chunks(lay, n, c, per_channel, "one channel of one image",
                                   backend.backend_of(gy).host_threads)
    sizes = sizes_of(images=images, block=block)
    w_in = weight.reshape(c, mult, k_vol)[:, :, lay.order].transpose(0, 2, 1)
    job = _Backward(xp, gy, x if need_weight else None,
                    xp.ascontiguousarray(w_in).reshape(c, 1, k_vol * mult), gx, lay, mult)
    common: dict[str, Any] = dict(scratch=functools.partial(Buffers, xp, gy.dtype, sizes, _ZEROED),
                                  per_worker_bytes=sum(sizes.values()) * itemsize,
                                  arrays=tuple(a for a in (gy, x, weight) if a is not None))
    if not need_weight:
        executor.map_chunks(_input_chunk, items, job, **common)
        return gx, None
    total = xp.zeros((c, mult, k_vol), dtype=gy.dtype)  # gW[c, t, k] = gW[c*mult + t, 0, k]
    executor.reduce_chunks(_backward_chunk, items, total, job, **common)
    return gx, total.reshape(weight.shape)
