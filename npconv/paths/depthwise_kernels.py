"""Compiled kernels of the ``depthwise_jit`` path (numba; imported only when it runs).

Each kernel computes a range ``[start, stop)`` of *planes*: plane t is image
``t // C`` and input channel ``t % C`` of a 2-d depthwise convolution with
stride (s0, s1), dilation (d0, d1) and zero padding (p0, p1) in front, and
``mult`` output channels per input channel. A plane is first split into its
*phase grid* ``ph[u, v, r, q] = x_pad[r s0 + u, q s1 + v]`` (hr x wt per
residue (u, v) of the stride; zero outside the input). Tap (i, j) then reads
residue ((i d0) % s0, (j d1) % s1) at the flat shift
``off_ij = (i d0 // s0) wt + j d1 // s1``, and output position (a, b) is flat
position ``e = a wt + b`` of an accumulator of oh rows of wt. So for every tap
one contiguous multiply-add covers the whole plane:

    forward      acc[e]          += w[c, m, i, j] ph_ij[off_ij + e]     y[a, b] = acc[a wt + b]
    grad input   gph_ij[off_ij + e] += w[c, m, i, j] gyg[e]              gx = the phases merged
    grad weight  gw[c, m, i, j]  += sum_{a, b < ow} gy[a, b] ph_ij[off_ij + a wt + b]

where ``gyg`` is grad_output on the accumulator's grid, zero at the junk
columns b >= ow. The junk columns of the forward read real pixels and are
dropped; grad weight sums valid columns only, so a non-finite pixel that no
window reads stays out of it.

Every array index is a loop counter into a slice taken beforehand: numba
wraps negative indices, and an index it cannot prove non-negative kept the
loops from vectorizing (5x slower, measured). Kernels release the GIL; the
executor runs chunks of planes on its threads.
"""

from __future__ import annotations

from typing import Any

import numba

_jit = numba.njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
# grad weight's last sums may be reordered (vectorized), like a BLAS dot product
_jit_sum = numba.njit(nogil=True, cache=True, error_model="numpy",
                      fastmath={"contract", "reassoc"})


@_jit
def _span(count: int, step: int, offset: int, size: int) -> tuple[int, int]:
    """[lo, hi): the a in [0, count) with 0 <= a * step + offset < size."""
    lo = 0 if offset >= 0 else (step - 1 - offset) // step
    hi = min(count, (size - offset + step - 1) // step) if size > offset else 0
    return lo, max(lo, hi)


@_jit
def _split(ph: Any, plane: Any, s0: int, s1: int, p0: int, p1: int) -> None:
    """ph (s0, s1, hr, wt) <- the phase grid of ``plane`` (h, w), zero-padded."""
    ph[:] = 0
    hr, wt = ph.shape[2], ph.shape[3]
    h, w = plane.shape
    for u in range(s0):
        r0, r1 = _span(hr, s0, u - p0, h)
        for v in range(s1):
            q0, q1 = _span(wt, s1, v - p1, w)
            c0 = q0 * s1 + v - p1
            for r in range(r0, r1):
                dst = ph[u, v, r, q0:q1]
                if s1 == 1:  # a contiguous run: the copy vectorizes
                    src = plane[r * s0 + u - p0, c0:c0 + q1 - q0]
                    for q in range(q1 - q0):
                        dst[q] = src[q]
                else:
                    src = plane[r * s0 + u - p0, c0::s1]
                    for q in range(q1 - q0):
                        dst[q] = src[q]


@_jit
def _merge(plane: Any, ph: Any, s0: int, s1: int, p0: int, p1: int) -> None:
    """plane (h, w) <- its pixels of the phase grid ph: the adjoint of :func:`_split`
    (each pixel lies in one residue, as the grid covers the padded input)."""
    hr, wt = ph.shape[2], ph.shape[3]
    h, w = plane.shape
    for u in range(s0):
        r0, r1 = _span(hr, s0, u - p0, h)
        for v in range(s1):
            q0, q1 = _span(wt, s1, v - p1, w)
            c0 = q0 * s1 + v - p1
            for r in range(r0, r1):
                src = ph[u, v, r, q0:q1]
                if s1 == 1:
                    dst = plane[r * s0 + u - p0, c0:c0 + q1 - q0]
                    for q in range(q1 - q0):
                        dst[q] = src[q]
                else:
                    dst = plane[r * s0 + u - p0, c0::s1]
                    for q in range(q1 - q0):
                        dst[q] = src[q]


@_jit
def forward_planes(y: Any, x: Any, w: Any, bias: Any, ph: Any, acc: Any, start: int,
                   stop: int, s0: int, s1: int, d0: int, d1: int, p0: int, p1: int) -> None:
    """y[n, c*mult + m] (oh, ow) = bias + sum_ij w[c, m, i, j] x_pad windows, planes
    start:stop; x (N, C, h, w), w (C, mult, kh, kw), acc (oh * wt,) scratch."""
    c, mult, kh, kw = w.shape
    oh, ow = y.shape[2], y.shape[3]
    wt = ph.shape[3]
    flat = ph.reshape(s0, s1, ph.shape[2] * wt)
    q = oh * wt
    for t in range(start, stop):
        n, ch = t // c, t % c
        _split(ph, x[n, ch], s0, s1, p0, p1)
        for m in range(mult):
            o = ch * mult + m
            acc[:] = bias[o]
            for i in range(kh):
                for j in range(kw):
                    off = (i * d0 // s0) * wt + j * d1 // s1
                    src = flat[i * d0 % s0, j * d1 % s1, off:off + q]
                    wv = w[ch, m, i, j]
                    for e in range(q):
                        acc[e] += wv * src[e]
            out = y[n, o]
            for a in range(oh):
                row, dst = acc[a * wt:a * wt + ow], out[a]
                for b in range(ow):
                    dst[b] = row[b]


@_jit
def grad_input_planes(gx: Any, gy: Any, w: Any, ph: Any, acc: Any, start: int, stop: int,
                      s0: int, s1: int, d0: int, d1: int, p0: int, p1: int) -> None:
    """gx[n, c] (h, w) = sum_m sum_ij w[c, m, i, j] gy[n, c*mult + m] scattered back
    through tap (i, j), planes start:stop; ph and acc are scratch as in the forward."""
    c, mult, kh, kw = w.shape
    oh, ow = gy.shape[2], gy.shape[3]
    wt = ph.shape[3]
    flat = ph.reshape(s0, s1, ph.shape[2] * wt)
    q = oh * wt
    for t in range(start, stop):
        n, ch = t // c, t % c
        ph[:] = 0
        for m in range(mult):
            o = ch * mult + m
            acc[:] = 0
            for a in range(oh):
                row, src = acc[a * wt:a * wt + ow], gy[n, o, a]
                for b in range(ow):
                    row[b] = src[b]
            for i in range(kh):
                for j in range(kw):
                    off = (i * d0 // s0) * wt + j * d1 // s1
                    dst = flat[i * d0 % s0, j * d1 % s1, off:off + q]
                    wv = w[ch, m, i, j]
                    for e in range(q):
                        dst[e] += wv * acc[e]
        _merge(gx[n, ch], ph, s0, s1, p0, p1)


@_jit_sum
def _grid_gy(gyg: Any, g: Any, wt: int) -> None:
    """gyg (oh * wt,) <- g (oh, ow) on the accumulator's grid, zero at the junk columns."""
    oh, ow = g.shape
    gyg[:] = 0
    for a in range(oh):
        row, src = gyg[a * wt:a * wt + ow], g[a]
        for b in range(ow):
            row[b] = src[b]


@_jit_sum
def _dot_rows(g: Any, base: Any, off: int, wt: int) -> Any:
    """sum_{a, b < ow} g[a, b] base[off + a wt + b]: valid columns only, row by row."""
    oh, ow = g.shape
    total = g[0, 0] * 0
    for a in range(oh):
        src, row = base[off + a * wt:off + a * wt + ow], g[a]
        for b in range(ow):
            total += row[b] * src[b]
    return total


@_jit_sum
def grad_weight_planes(gw: Any, gy: Any, x: Any, ph: Any, acc: Any, start: int, stop: int,
                       s0: int, s1: int, d0: int, d1: int, p0: int, p1: int) -> None:
    """gw (C, mult, kh, kw) += sum over planes start:stop of gy[n, c*mult + m] times
    tap (i, j)'s window of x_pad[n, c]; ph and acc are scratch as in the forward.

    Each tap's sum runs over the whole grid (``acc``: gy with zero junk columns).
    A junk column can read a non-finite pixel that no window of the tap reads, and
    0 * inf is nan: a nan sum is taken again over the valid columns only."""
    c, mult, kh, kw = gw.shape
    oh, wt = gy.shape[2], ph.shape[3]
    flat = ph.reshape(s0, s1, ph.shape[2] * wt)
    q = oh * wt
    for t in range(start, stop):
        n, ch = t // c, t % c
        _split(ph, x[n, ch], s0, s1, p0, p1)
        for m in range(mult):
            g = gy[n, ch * mult + m]
            _grid_gy(acc, g, wt)
            for i in range(kh):
                for j in range(kw):
                    base = flat[i * d0 % s0, j * d1 % s1]
                    off = (i * d0 // s0) * wt + j * d1 // s1
                    src = base[off:off + q]
                    total = acc[0] * 0
                    for e in range(q):
                        total += acc[e] * src[e]
                    if total != total:
                        total = _dot_rows(g, base, off, wt)
                    gw[ch, m, i, j] += total
