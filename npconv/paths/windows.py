"""Window columns copied fast: compiled, or as whole output planes; and the compiled fold.

Copying the window view (b, C, *k, *out) walks one row of ``out[-1]`` elements
per image, channel, kernel offset and output row. On small images NumPy's cost
per row, not the bytes, sets the time (about 7 ns a row against well under
1 ns an element). With unit strides a kernel offset along a leading axis only
moves the output plane, so the copy goes in two steps through a buffer whose
rows are exactly ``out[-1]`` long:

    rows[n, c, j, *p, o] = x_pad[n, c, *p, o + j d]              (kw row copies)
    cols[n, c, *i, j, *o', o] = rows[n, c, j, *(o' + i d'), o]   (one copy)

The first step is ``kw`` copies over the padded rows ``p`` (and zeros at the
padding); in the second, ``rows[n, c, j]`` has the row pitch of the output, so
each offset's last two output axes are one contiguous run. For 3x3 kernels on
ResNet's, VGG's and U-Net's 8-48 pixel images this takes a quarter to a half off
im2col's copy (docs/performance.md); at 64 pixels the rows are long already and
the extra pass costs as much as it saves, and for outputs narrower than 8
:func:`npconv.paths.fold.gather_windows` is faster.

Where numba is installed, 2-d float windows with zero padding (any stride and
dilation, output rows of at most COMPILED_MAX_ROW_BYTES) are copied by a
compiled kernel instead (:mod:`npconv.paths.windows_kernels`): each output row
is one or two masked vector loads and a masked store, so short rows no longer
cost a NumPy loop each. On the zoo's 2-d layers it took 0.2-0.47x torch's
``unfold`` time, against 0.3-1.3x for the copies above. The same module's
compiled fold (:func:`fold_compiled`) sums each output vector over the windows
that cover it (docs/performance.md, 2026-12-04, seventh session).
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any

from .. import backend, executor, scratch
from ..geometry import ConvGeometry
from .depthwise_jit import available

# Outputs whose last axis is this wide or narrower (and at least MIN_WIDTH) take the
# two-step copy; measured on 2-d 3x3 layers, N2-N4, 16-512 channels (see
# docs/performance.md, 2026-12-03).
MAX_WIDTH = 48
MIN_WIDTH = 8
# ... on copies of at least this many elements: below, the few more NumPy calls cost
# more than the rows save (N4 16@8x8, 3x3: 37 against 32 us; N2 64@8x8: 60 against 57).
MIN_ELEMENTS = 2**17
# The compiled copy from this many elements: below, its call costs more than it saves.
COMPILED_MIN_ELEMENTS = 2**12
# ... for output rows up to this long: NumPy's copy of longer rows was faster (one
# thread, ms, compiled / NumPy's view copy: rows of 64 float32 0.49 / 0.37 and 1.01 /
# 0.74, of 64 float64 3.4 / 1.8; of 48 float32 0.50 / 0.58, of 32 0.57 / 0.85).
COMPILED_MAX_ROW_BYTES = 192
LANE_BYTES = 64  # the kernels' vectors (windows_kernels.LANE_BYTES)
# How the compiled copy walks the windows (a loop of one load and one store each way;
# one thread, docs/performance.md, 2026-12-04 (seventh session)):
# - unit strides, outputs as wide as the input and at most TAPS_MAX_HEIGHT rows: a tap's
#   output plane is the input plane shifted, copied a vector at a time over blocks of
#   TAP_BLOCK channels. 512@3x3: 0.037 ms, against 0.071 by rows over blocks of channels;
#   256@6x6 0.067 against 0.097; 128@12x12 0.16 against 0.23 by planes' rows; at 16x16
#   the two tied, at 32x32 rows won (0.58 against 0.97);
# - otherwise a row at a time over blocks of channels (512@3x3 0.071 against 0.57 by
#   planes' rows), unless the blocks would be shorter than MIN_CHANNEL_BLOCK: then a
#   plane at a time, row after row (see :func:`channel_block`).
# npconv.im2col splits compiled copies of this many bytes over two threads (ms, one /
# two threads: N4 64@32x32 3x3 9 MiB 0.57 / 0.50; N4 3@96x96 7x7 s2 5.2 MiB 0.50 / 0.45;
# N4 256@16x16 9 MiB 0.65 / 0.66; N4 128@16x16 4.5 MiB 0.30 / 0.42; 512@8x8 0.36 / 0.44),
# and NumPy's copies of the window view likewise (rows of 64: N2 16@64x64 3x3 4.5 MiB
# 0.38 / 0.49, N2 32@64x64 9 MiB 0.94 / 0.71; interleaved medians of 25).
SPLIT_MIN_BYTES = 2**23
TAPS_MAX_HEIGHT = 15
TAP_BLOCK = 16
# The channels walk reads and writes a block's planes row by row, one plane apart; in
# L1 (8 ways of L1_WAY_BYTES) planes a multiple of L1_WAY_BYTES apart fall in the same
# sets, so a block holds at most ALIASED_PER_SET planes per set offset, at most
# BLOCK_SPAN_BYTES of input and at most CHANNEL_BLOCK channels; below MIN_CHANNEL_BLOCK
# the rows walk is faster. One thread, best of 3 medians, rows / blocks of 8 / 16 / 32
# / 64 (thirteenth session, docs/performance.md): float32 N2 64@32x32 3x3 (4 KiB
# planes) 182 / 490 / 578 / 668 / 718 us; 64@16x16 (1 KiB) 65 / 65 / 63 / 89 / 98;
# 64@24x24 stride 2 66 / 51 / 41 / 38 / 38; float64 64@16x16 (2 KiB) 115 / 100 / 93 /
# 165 / 160; 40x40 and 48x48 planes lost 13-17% at 64 against 32 or 16.
L1_WAY_BYTES = 4096
ALIASED_PER_SET = 4
BLOCK_SPAN_BYTES = 256 * 2**10
CHANNEL_BLOCK = 64
MIN_CHANNEL_BLOCK = 8


def compiled(xp: Any, geometry: ConvGeometry, dtype: Any) -> bool:
    """Whether the compiled kernel copies ``geometry``'s windows: ``jit_float``'s
    conditions and output rows of at most COMPILED_MAX_ROW_BYTES (remembered per
    array module, geometry and dtype: small calls count every microsecond)."""
    return _cached("compiled", _compiled_now, xp, geometry, (xp, dtype))


def _compiled_now(xp: Any, geometry: ConvGeometry, key: tuple[Any, Any]) -> bool:
    dtype = key[1]
    return (geometry.out_size[-1] * dtype.itemsize <= COMPILED_MAX_ROW_BYTES
            and jit_float(xp, geometry, dtype))


def _compiled_pair(xp: Any, geometry: ConvGeometry, cols: Any, x: Any) -> bool:
    """Whether the compiled kernel copies x's windows into cols: ``compiled``, one dtype
    (the kernel reads and writes vectors of one type) and contiguous column rows."""
    return (cols.dtype == x.dtype and cols.strides[-1] == cols.itemsize
            and compiled(xp, geometry, x.dtype))


def jit_float(xp: Any, geometry: ConvGeometry, dtype: Any) -> bool:
    """2-d, zero padding, float32 or float64 NumPy arrays, numba installed: what the
    compiled copy and fold need."""
    return (geometry.nd == 2 and geometry.zero_padded and dtype.kind == "f"
            and dtype.itemsize in (4, 8) and dtype.isnative and backend.on_host(xp)
            and available())


def takes_planes(xp: Any, geometry: ConvGeometry, elements: int, dtype: Any) -> bool:
    """Whether :func:`copy_windows` copies ``elements`` window elements of ``geometry``
    (of ``dtype``) faster than the window view: compiled from COMPILED_MIN_ELEMENTS
    elements; otherwise on the host (array module ``xp``; timed there only), unit
    strides, zero padding, two or more spatial axes with a kernel longer than one on
    some leading axis, an output width from MIN_WIDTH to MAX_WIDTH, and at least
    MIN_ELEMENTS elements. The cheapest tests come first: small calls, whose overhead
    counts, are turned away by the first one."""
    if elements < COMPILED_MIN_ELEMENTS:
        return False
    if compiled(xp, geometry, dtype):
        return True
    return (elements >= MIN_ELEMENTS and MIN_WIDTH <= geometry.out_size[-1] <= MAX_WIDTH
            and geometry.nd >= 2 and geometry.stride == (1,) * geometry.nd
            and geometry.zero_padded and math.prod(geometry.kernel[:-1]) > 1
            and backend.on_host(xp))


def copy_windows(cols: Any, x: Any, geometry: ConvGeometry) -> None:
    """``cols`` (b, C, *kernel, *out) <- every window of ``x`` (b, C, *in), zero padded as
    ``geometry`` says (unit strides unless compiled: see :func:`takes_planes`). ``cols``
    may be any view of that shape (the stacked path passes a channel-major buffer's).

    Always on the calling thread: split by channels over two threads it ran slower in
    the benchmark's worker processes (VGG-11 N4 128@16x16: 0.49 against 0.37 ms; U-Net
    N2 64@32x32: 0.42 against 0.36), where each thread's buffer came fresh, and a path
    that leaves its matmuls to the BLAS's threads must not start npconv's (they hold
    the BLAS at one thread for the rest of the call).
    """
    xp = backend.get_array_module(cols, x)
    if _compiled_pair(xp, geometry, cols, x):
        _copy_compiled(xp, cols, x, geometry)
        return
    rows = _rows(xp, x, geometry)
    nd, item = geometry.nd, rows.itemsize
    lead = rows.strides[3:3 + nd - 1]
    # cols[n, c, *i, j, *o', o] = rows[n, c, j, *(o' + i d'), o]
    view = backend.as_strided_view(
        rows, cols.shape,
        rows.strides[:2] + tuple(st * d for st, d in zip(lead, geometry.dilation))
        + (rows.strides[2],) + lead + (item,))
    cols[...] = view


def _rows(xp: Any, x: Any, geometry: ConvGeometry) -> Any:
    """rows (b, C, kw, *padded[:-1], out[-1]): rows[..., j, *p, o] = x_pad[..., *p, o + j d]."""
    kw, dw, width = geometry.kernel[-1], geometry.dilation[-1], geometry.out_size[-1]
    (lo_w, _), size_w = geometry.pads[-1], geometry.in_size[-1]
    lead_sizes = geometry.padded_size[:-1]
    rows = scratch.empty(xp, x.shape[:2] + (kw,) + lead_sizes + (width,), x.dtype)
    everything = (slice(None),) * 3
    inside = []
    for a, ((lo, _), n) in enumerate(zip(geometry.pads[:-1], geometry.in_size[:-1])):
        before = (slice(None),) * a
        if lo:
            rows[everything + before + (slice(0, lo),)] = 0
        if lo + n < lead_sizes[a]:
            rows[everything + before + (slice(lo + n, None),)] = 0
        inside.append(slice(lo, lo + n))
    for j in range(kw):
        # output o reads input column o + j d - lo_w, inside for first <= o < last
        first = max(0, lo_w - j * dw)
        last = min(width, size_w + lo_w - j * dw)
        target = rows[:, :, j][(Ellipsis,) + tuple(inside) + (slice(None),)]
        if first:
            target[..., :first] = 0
        if last < width:
            target[..., max(last, first):] = 0
        if first < last:
            shift = j * dw - lo_w
            target[..., first:last] = x[..., first + shift:last + shift]
    return rows


def split_pays(nbytes: int) -> bool:
    """Whether npconv.im2col's copy of ``nbytes`` goes over the executor's threads."""
    return nbytes >= SPLIT_MIN_BYTES and executor.get_num_threads() > 1


def copy_windows_split(cols: Any, x: Any, geometry: ConvGeometry, xp: Any) -> None:
    """:func:`copy_windows` into columns that ``xp.empty`` just made (C-contiguous, of
    ``x``'s dtype: npconv.im2col's), split over the executor's threads, by images or,
    with fewer images than threads, by channels, for copies of at least
    SPLIT_MIN_BYTES (the paths copy on their calling thread; see
    :func:`copy_windows`). The compiled 'channels' walk stays on one thread: over two,
    into a fresh array, it took twice its one thread's time (N4 256@16x16 3x3, 9 MiB:
    0.72-0.75 ms against 0.33-0.34; the 'rows' walk 0.31 on two)."""
    fast = compiled(xp, geometry, x.dtype)
    if not split_pays(cols.nbytes) or (fast and walk(geometry, x.itemsize) == "channels"):
        if fast:
            _copy_compiled(xp, cols, x, geometry)
        else:
            copy_windows(cols, x, geometry)
        return
    workers = executor.get_num_threads()
    axis = 0 if x.shape[0] >= workers else 1
    executor.map_chunks(_copy_span, executor.axis_spans(x.shape[axis], axis, workers), cols,
                        x, geometry, arrays=(cols,), work_bytes=cols.nbytes)


def _copy_span(_: Any, span: tuple[slice, ...], cols: Any, x: Any,
               geometry: ConvGeometry) -> None:
    copy_windows(cols[span], x[span], geometry)


@functools.cache
def _kernels() -> Any:
    from . import windows_kernels

    return windows_kernels


# Per (geometry, item size): the kernels' arguments that depend on them only, and
# whether the compiled copy serves (a dict lookup costs less than lru_cache's; small
# calls count every microsecond).
_ARGS: dict[tuple[str, ConvGeometry, Any], Any] = {}
_ARGS_MAX = 256


def _cached(kind: str, make: Any, xp: Any, geometry: ConvGeometry, extra: Any) -> Any:
    key = (kind, geometry, extra)
    args = _ARGS.get(key)
    if args is None:
        args = make(xp, geometry, extra)
        if len(_ARGS) >= _ARGS_MAX:
            _ARGS.clear()
        _ARGS[key] = args
    return args


def _copy_compiled(xp: Any, cols: Any, x: Any, geometry: ConvGeometry) -> None:
    """copy_windows by :func:`npconv.paths.windows_kernels.copy_windows_2d`."""
    item = cols.itemsize
    if x.strides[2:] != (x.shape[3] * item, item):  # planes must be contiguous
        x = xp.ascontiguousarray(x)
    sizes, params, columns, rows, block, taps = _cached("copy", _kernel_args, xp, geometry,
                                                        item)
    st, xs = cols.strides, x.strides  # (spelled out: a generator costs a microsecond)
    _kernels().copy_windows_2d(cols, x, x.shape + sizes, params,
                               (st[0] // item, st[1] // item, st[2] // item, st[3] // item,
                                st[4] // item), (xs[0] // item, xs[1] // item), columns, rows,
                               block, taps)


def _kernel_args(xp: Any, geometry: ConvGeometry, item: int) -> tuple[Any, ...]:
    """The kernel's arguments that depend on the geometry (and item size) only:
    (kernel + out sizes, strides + dilations + leading pads, columns, rows, block,
    taps), with the tables as read-only int64 arrays: columns (3, kw), per kernel
    column, the first input column of its windows and the output columns [lo, hi) that
    read inside the input; rows (2, kh), the same [lo, hi) of output rows per kernel
    row."""
    tables = []
    for axis in range(2):
        size, out = geometry.in_size[axis], geometry.out_size[axis]
        step, dil, lo_pad = geometry.stride[axis], geometry.dilation[axis], geometry.pads[axis][0]
        starts = [k * dil - lo_pad for k in range(geometry.kernel[axis])]
        lows = [min(out, (step - 1 - s) // step) if s < 0 else 0 for s in starts]
        highs = [max(lo, min(out, (size - 1 - s) // step + 1)) if s < size else lo
                 for s, lo in zip(starts, lows)]
        table = xp.asarray([starts, lows, highs], dtype=xp.int64)
        table.flags.writeable = False
        tables.append(table)
    params = geometry.stride + geometry.dilation + tuple(lo for lo, _ in geometry.pads)
    order = walk(geometry, item)
    taps = _taps(xp, geometry, item) if order == "taps" else xp.zeros((2, 0), dtype=xp.int64)
    taps.flags.writeable = False
    block = {"taps": TAP_BLOCK, "rows": 0, "channels": channel_block(geometry, item)}[order]
    return (geometry.kernel + geometry.out_size, params, tables[1], tables[0][1:], block,
            taps)


def walk(geometry: ConvGeometry, item: int) -> str:
    """How the compiled copy walks ``geometry``'s windows (items of ``item`` bytes):
    'taps' (a tap's output plane is its input plane shifted: unit strides, the output
    as wide as the input and at most TAPS_MAX_HEIGHT rows), 'channels' (a row at a time
    over blocks of channels, where :func:`channel_block` allows blocks of at least
    MIN_CHANNEL_BLOCK) or 'rows' (a plane at a time)."""
    (oh, ow), w = geometry.out_size, geometry.in_size[1]
    if geometry.stride == (1, 1) and ow == w and oh <= TAPS_MAX_HEIGHT:
        return "taps"
    return "channels" if channel_block(geometry, item) >= MIN_CHANNEL_BLOCK else "rows"


def channel_block(geometry: ConvGeometry, item: int) -> int:
    """The channels a block of the 'channels' walk holds: at most ALIASED_PER_SET
    planes per L1 set offset (planes of p bytes take L1_WAY_BYTES / gcd(p,
    L1_WAY_BYTES) offsets), at most BLOCK_SPAN_BYTES of planes (a power of two) and at
    most CHANNEL_BLOCK."""
    plane = math.prod(geometry.in_size) * item
    offsets = L1_WAY_BYTES // math.gcd(plane, L1_WAY_BYTES)
    span = max(1, BLOCK_SPAN_BYTES // plane)
    return min(CHANNEL_BLOCK, ALIASED_PER_SET * offsets, 1 << (span.bit_length() - 1))


def _taps(xp: Any, geometry: ConvGeometry, item: int) -> Any:
    """(1 + vectors, K) int64: per tap, the shift of its output plane in the input
    plane, then per vector of the output plane the bits of the lanes that read inside
    the input (for the 'taps' walk)."""
    (h, w), (oh, ow) = geometry.in_size, geometry.out_size
    lanes = LANE_BYTES // item
    vectors = -(-oh * ow // lanes)
    table = []
    for i, j in itertools.product(range(geometry.kernel[0]), range(geometry.kernel[1])):
        dy = i * geometry.dilation[0] - geometry.pads[0][0]
        dx = j * geometry.dilation[1] - geometry.pads[1][0]
        bits = [sum(1 << lane for lane in range(lanes)
                    if _reads_inside(v * lanes + lane, (oh, ow), (h, w), (dy, dx)))
                for v in range(vectors)]
        table.append([dy * w + dx] + bits)
    return xp.asarray(table, dtype=xp.int64).T.copy()


def _reads_inside(e: int, out: tuple[int, int], size: tuple[int, int],
                  shift: tuple[int, int]) -> bool:
    """Whether element e of a (unit stride) output plane reads inside the input."""
    a, b = divmod(e, out[1])
    return e < out[0] * out[1] and 0 <= a + shift[0] < size[0] and 0 <= b + shift[1] < size[1]


# --------------------------------------------------------------------------- folds
# The compiled fold sums each output vector in registers over the windows covering it
# and stores it once, a block of FOLD_BLOCK channels at a time (the same tables).
FOLD_BLOCK = 16


def fold_compiled(out: Any, grad_patches: Any, geometry: ConvGeometry) -> bool:
    """``out[...] = fold(grad_patches)`` by the compiled kernel, where it serves:
    ``jit_float``'s conditions, a horizontal stride of 1 or 2, the last axis of ``out``
    and of ``grad_patches`` (N, C, kh, kw, oh, ow) contiguous (any other strides: the
    paths pass channel-major columns), and at least COMPILED_MIN_ELEMENTS window
    elements. Returns whether it did."""
    if (grad_patches.size < COMPILED_MIN_ELEMENTS or geometry.stride[-1] > 2
            or out.ndim != 4 or grad_patches.ndim != 6 or grad_patches.dtype != out.dtype):
        return False  # the cheapest tests first: every fold_into call passes here
    xp = backend.get_array_module(out, grad_patches)
    item = out.itemsize
    st = grad_patches.strides
    if (not jit_float(xp, geometry, out.dtype) or out.strides[-1] != item or st[-1] != item
            or any(s % item for s in st) or any(s % item for s in out.strides)):
        return False
    rows, columns = _cached("fold", _fold_tables, xp, geometry,
                            (item, st[2] // item, st[3] // item, st[4] // item))
    os_ = out.strides
    _kernels().fold_2d(out, grad_patches, out.shape,
                       (os_[0] // item, os_[1] // item, os_[2] // item),
                       (st[0] // item, st[1] // item), rows, columns, FOLD_BLOCK,
                       geometry.stride[-1] == 2)
    return True


def _fold_tables(xp: Any, geometry: ConvGeometry, layout: tuple[int, ...]) -> tuple[Any, ...]:
    """The compiled fold's tables (see ``windows_kernels.fold_2d``), read-only int64, for
    windows of item size and strides in items (kernel row, kernel column, output row):
    ``layout`` = (item, si, sj, sa)."""
    item, si, sj, sa = layout
    (h, w), (kh, kw), (oh, ow) = geometry.in_size, geometry.kernel, geometry.out_size
    (s0, s1), (d0, d1) = geometry.stride, geometry.dilation
    p0, p1 = geometry.pads[0][0], geometry.pads[1][0]
    rows = []
    for y in range(h):
        starts = [i * si + (y + p0 - i * d0) // s0 * sa for i in range(kh)
                  if (y + p0 - i * d0) % s0 == 0 and 0 <= (y + p0 - i * d0) // s0 < oh]
        rows.append([len(starts)] + starts + [0] * (kh - len(starts)))
    lanes = LANE_BYTES // item
    columns = []
    for v in range(-(-w // lanes)):
        entry = []
        for j in range(kw):
            parity = (j * d1 - p1) % s1
            first = (v * lanes + parity + p1 - j * d1) // s1  # exact
            bits = sum(1 << m for m in range(lanes // s1)
                       if 0 <= first + m < ow and v * lanes + parity + s1 * m < w)
            entry += [j * sj + first, bits, parity]
        columns.append(entry)
    tables = (xp.asarray(rows, dtype=xp.int64), xp.asarray(columns, dtype=xp.int64))
    for table in tables:
        table.flags.writeable = False
    return tables
