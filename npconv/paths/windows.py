"""Window columns copied as whole output planes (unit strides, small images).

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
"""

from __future__ import annotations

import math
from typing import Any

from .. import backend
from ..geometry import ConvGeometry

# Outputs whose last axis is this wide or narrower (and at least MIN_WIDTH) take the
# two-step copy; measured on 2-d 3x3 layers, N2-N4, 16-512 channels (see
# docs/performance.md, 2026-12-03).
MAX_WIDTH = 48
MIN_WIDTH = 8
# ... on copies of at least this many elements: below, the few more NumPy calls cost
# more than the rows save (N4 16@8x8, 3x3: 37 against 32 us; N2 64@8x8: 60 against 57).
MIN_ELEMENTS = 2**17


def takes_planes(xp: Any, geometry: ConvGeometry, elements: int) -> bool:
    """Whether :func:`copy_windows` copies ``elements`` window elements of ``geometry``
    faster than the window view: on the host (array module ``xp``; timed there only),
    unit strides, zero padding, two or more spatial axes with a kernel longer than one
    on some leading axis, an output width from MIN_WIDTH to MAX_WIDTH, and at least
    MIN_ELEMENTS elements. The cheapest tests come first: small calls, whose overhead
    counts, are turned away by the first one."""
    return (elements >= MIN_ELEMENTS and MIN_WIDTH <= geometry.out_size[-1] <= MAX_WIDTH
            and geometry.nd >= 2 and geometry.stride == (1,) * geometry.nd
            and geometry.zero_padded and math.prod(geometry.kernel[:-1]) > 1
            and backend.on_host(xp))


def copy_windows(cols: Any, x: Any, geometry: ConvGeometry) -> None:
    """``cols`` (b, C, *kernel, *out) <- every window of ``x`` (b, C, *in), zero padded as
    ``geometry`` says (unit strides: see :func:`takes_planes`). ``cols`` may be any
    view of that shape (the stacked path passes a channel-major buffer's).

    Always on the calling thread: split by channels over two threads it ran slower in
    the benchmark's worker processes (VGG-11 N4 128@16x16: 0.49 against 0.37 ms; U-Net
    N2 64@32x32: 0.42 against 0.36), where each thread's buffer came fresh, and a path
    that leaves its matmuls to the BLAS's threads must not start npconv's (they hold
    the BLAS at one thread for the rest of the call).
    """
    xp = backend.get_array_module(cols, x)
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
    rows = xp.empty(x.shape[:2] + (kw,) + lead_sizes + (width,), dtype=x.dtype)
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
