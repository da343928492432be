"""Compiled kernels of the ``depthwise_jit`` path (numba; imported only when it runs).

A *task* is one input channel c of a block of ``nb`` consecutive images (task
t: block ``t // C``, channel ``t % C``) of a 2-d depthwise convolution with
stride (s0, s1), dilation (d0, d1), zero padding (p0, p1) in front and
``mult`` output channels per input channel. The block's planes are split
into the stride's *phase grid*: image k fills rows ``k hb`` to ``(k + 1) hb``
of ``ph[u, v, r, q] = x_pad[k][(r - k hb) s0 + u, q s1 + v]`` (zero outside
the input; a last row of zeros under the block). Tap (i, j) reads residue
((i d0) % s0, (j d1) % s1) at the flat shift ``off_ij = (i d0 // s0) wt +
j d1 // s1``, and output position (a, b) of image k is flat position
``e = (k hb + a) wt + b`` of an accumulator. So every tap is one contiguous
multiply-add over the whole block, however small its images:

    forward      acc[e]             += w[c, m, i, j] ph_ij[off_ij + e]   y = acc at (k, a, b)
    grad input   gph_ij[off_ij + e] += w[c, m, i, j] gyg[e]              gx = the phases merged
    grad weight  gw[c, m, i, j]     += sum_e gyg[e] ph_ij[off_ij + e]

where ``gyg`` is grad_output on the accumulator's grid, zero at the junk
positions (columns b >= ow, rows a >= oh between images). Junk positions of the
forward read real pixels and are dropped. In grad weight a junk position can
read a non-finite pixel that no window of its tap reads (0 * inf is nan): a nan
sum is taken again over the valid positions only.

Every array index is a loop counter into a slice taken beforehand: numba
wraps negative indices, and an index it cannot prove non-negative kept the
loops from vectorizing (5x slower, measured). Kernels release the GIL; the
executor runs chunks of tasks on its threads.
"""

from __future__ import annotations

from typing import Any

import numba

_jit = numba.njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
# grad weight's sums may be reordered (vectorized), like a BLAS dot product
_jit_sum = numba.njit(nogil=True, cache=True, error_model="numpy",
                      fastmath={"contract", "reassoc"})


@_jit
def _span(count: int, step: int, offset: int, size: int) -> tuple[int, int]:
    """[lo, hi): the a in [0, count) with 0 <= a * step + offset < size."""
    lo = 0 if offset >= 0 else (step - 1 - offset) // step
    hi = min(count, (size - offset + step - 1) // step) if size > offset else 0
    return lo, max(lo, hi)


@_jit
def _copy(dst: Any, src: Any) -> None:
    for q in range(dst.shape[0]):
        dst[q] = src[q]


@_jit
def _split(ph: Any, plane: Any, row0: int, hb: int, s0: int, s1: int, p0: int,
           p1: int) -> None:
    """Rows row0:row0 + hb of the zeroed grid ph (s0, s1, rows, wt) <- the phase grid
    of ``plane`` (h, w), zero-padded: one 2-d slice copy per residue."""
    wt = ph.shape[3]
    h, w = plane.shape
    for u in range(s0):
        r0, r1 = _span(hb, s0, u - p0, h)
        a0 = r0 * s0 + u - p0
        for v in range(s1):
            q0, q1 = _span(wt, s1, v - p1, w)
            c0 = q0 * s1 + v - p1
            ph[u, v, row0 + r0:row0 + r1, q0:q1] = plane[a0:a0 + (r1 - r0 - 1) * s0 + 1:s0,
                                                         c0:c0 + (q1 - q0 - 1) * s1 + 1:s1]


@_jit
def _merge(plane: Any, ph: Any, row0: int, hb: int, s0: int, s1: int, p0: int,
           p1: int) -> None:
    """plane (h, w) <- its pixels of rows row0:row0 + hb of the grid: the adjoint of
    :func:`_split` (each pixel lies in one residue, as the grid covers the input)."""
    wt = ph.shape[3]
    h, w = plane.shape
    for u in range(s0):
        r0, r1 = _span(hb, s0, u - p0, h)
        a0 = r0 * s0 + u - p0
        for v in range(s1):
            q0, q1 = _span(wt, s1, v - p1, w)
            c0 = q0 * s1 + v - p1
            plane[a0:a0 + (r1 - r0 - 1) * s0 + 1:s0,
                  c0:c0 + (q1 - q0 - 1) * s1 + 1:s1] = ph[u, v, row0 + r0:row0 + r1, q0:q1]


@_jit
def _block(t: int, c: int, n: int, nb: int) -> tuple[int, int, int]:
    """(channel, first image, images) of task t."""
    n0 = (t // c) * nb
    return t % c, n0, min(n, n0 + nb) - n0


@_jit
def _fill(ph: Any, x: Any, ch: int, n0: int, count: int, hb: int, s0: int, s1: int,
          p0: int, p1: int) -> None:
    """ph <- the phase grids of x[n0:n0 + count, ch], image k at rows k hb."""
    ph[:] = 0
    for k in range(count):
        _split(ph, x[n0 + k, ch], k * hb, hb, s0, s1, p0, p1)


@_jit
def _grid_gy(acc: Any, gy: Any, o: int, n0: int, count: int, hb: int, wt: int) -> None:
    """acc <- gy[n0:n0 + count, o] on the accumulator's grid, zero at junk positions."""
    acc[:] = 0
    oh, ow = gy.shape[2], gy.shape[3]
    for k in range(count):
        for a in range(oh):
            e = (k * hb + a) * wt
            _copy(acc[e:e + ow], gy[n0 + k, o, a])


@_jit
def forward_planes(y: Any, x: Any, w: Any, bias: Any, ph: Any, acc: Any, start: int,
                   stop: int, nb: int, s0: int, s1: int, d0: int, d1: int, p0: int,
                   p1: int) -> None:
    """y[n, c*mult + m] = bias + sum_ij w[c, m, i, j] x_pad[n, c] windows for tasks
    start:stop; x (N, C, h, w), w (C, mult, kh, kw), ph and acc scratch."""
    c, mult, kh, kw = w.shape
    n, oh, ow = y.shape[0], y.shape[2], y.shape[3]
    hb, wt = (ph.shape[2] - 1) // nb, ph.shape[3]
    flat = ph.reshape(s0, s1, ph.shape[2] * wt)
    for t in range(start, stop):
        ch, n0, count = _block(t, c, n, nb)
        _fill(ph, x, ch, n0, count, hb, s0, s1, p0, p1)
        q = ((count - 1) * hb + oh) * wt
        for m in range(mult):
            o = ch * mult + m
            acc[:q] = bias[o]
            for i in range(kh):
                for j in range(kw):
                    off = (i * d0 // s0) * wt + j * d1 // s1
                    src = flat[i * d0 % s0, j * d1 % s1, off:off + q]
                    wv = w[ch, m, i, j]
                    for e in range(q):
                        acc[e] += wv * src[e]
            for k in range(count):
                for a in range(oh):
                    e = (k * hb + a) * wt
                    _copy(y[n0 + k, o, a], acc[e:e + ow])


@_jit
def grad_input_planes(gx: Any, gy: Any, w: Any, ph: Any, acc: Any, start: int, stop: int,
                      nb: int, s0: int, s1: int, d0: int, d1: int, p0: int, p1: int) -> None:
    """gx[n, c] = sum_m sum_ij w[c, m, i, j] gy[n, c*mult + m] scattered back through
    tap (i, j), for tasks start:stop; ph and acc are scratch as in the forward."""
    c, mult, kh, kw = w.shape
    n, oh = gy.shape[0], gy.shape[2]
    hb, wt = (ph.shape[2] - 1) // nb, ph.shape[3]
    flat = ph.reshape(s0, s1, ph.shape[2] * wt)
    for t in range(start, stop):
        ch, n0, count = _block(t, c, n, nb)
        q = ((count - 1) * hb + oh) * wt
        ph[:] = 0
        for m in range(mult):
            _grid_gy(acc, gy, ch * mult + m, n0, count, hb, wt)
            for i in range(kh):
                for j in range(kw):
                    off = (i * d0 // s0) * wt + j * d1 // s1
                    dst = flat[i * d0 % s0, j * d1 % s1, off:off + q]
                    wv = w[ch, m, i, j]
                    for e in range(q):
                        dst[e] += wv * acc[e]
        for k in range(count):
            _merge(gx[n0 + k, ch], ph, k * hb, hb, s0, s1, p0, p1)


@_jit_sum
def _dot_rows(gy: Any, o: int, n0: int, count: int, base: Any, off: int, hb: int,
              wt: int) -> Any:
    """sum over valid positions of gy[n0 + k, o, a, b] base[off + (k hb + a) wt + b]."""
    oh, ow = gy.shape[2], gy.shape[3]
    total = gy[n0, o, 0, 0] * 0
    for k in range(count):
        for a in range(oh):
            e = off + (k * hb + a) * wt
            src, row = base[e:e + ow], gy[n0 + k, o, a]
            for b in range(ow):
                total += row[b] * src[b]
    return total


@_jit_sum
def grad_weight_planes(gw: Any, gy: Any, x: Any, ph: Any, acc: Any, start: int, stop: int,
                       nb: int, s0: int, s1: int, d0: int, d1: int, p0: int, p1: int) -> None:
    """gw (C, mult, kh, kw) += the sums of tasks start:stop of gy[n, c*mult + m] times
    tap (i, j)'s windows of x_pad[n, c]; ph and acc are scratch as in the forward."""
    c, mult, kh, kw = gw.shape
    n, oh = gy.shape[0], gy.shape[2]
    hb, wt = (ph.shape[2] - 1) // nb, ph.shape[3]
    flat = ph.reshape(s0, s1, ph.shape[2] * wt)
    for t in range(start, stop):
        ch, n0, count = _block(t, c, n, nb)
        _fill(ph, x, ch, n0, count, hb, s0, s1, p0, p1)
        q = ((count - 1) * hb + oh) * wt
        for m in range(mult):
            o = ch * mult + m
            _grid_gy(acc, gy, o, n0, count, hb, wt)
            for i in range(kh):
                for j in range(kw):
                    base = flat[i * d0 % s0, j * d1 % s1]
                    off = (i * d0 // s0) * wt + j * d1 // s1
                    src = base[off:off + q]
                    total = acc[0] * 0
                    for e in range(q):
                        total += acc[e] * src[e]
                    if total != total:
                        total = _dot_rows(gy, o, n0, count, base, off, hb, wt)
                    gw[ch, m, i, j] += total


# --------------------------------------------------------------------------- channels last
# Images of a few dozen pixels leave a plane's runs too short to pay for their loops.
# There the kernels below take the arrays channels-last, (N, rows, columns, O) with the
# input's channels repeated mult times, and vectorize over the O channels of one pixel:
#
#     forward      y[n, a, b]   = bias + sum_ij w[i, j] x[n, r_ai, q_bj]
#     grad input   gx[n, r, q]  = sum over the (i, j, a, b) with r_ai = r, q_bj = q of
#                                 w[i, j] gy[n, a, b]
#     grad weight  gw[i, j]    += sum_ab gy[n, a, b] x[n, r_ai, q_bj]
#
# with r_ai = a s0 + i d0 - p0 and q_bj = b s1 + j d1 - p1, each term a vector over
# the channels (taps that fall on the padding are skipped). A task is one output row
# (forward, grad weight) or one input row (grad input, which gathers: no two tasks
# write alike).


@_jit
def _axpy(acc: Any, wv: Any, src: Any) -> None:
    for c in range(acc.shape[0]):
        acc[c] += wv[c] * src[c]


@_jit
def forward_last(y: Any, x: Any, w: Any, bias: Any, start: int, stop: int, s0: int,
                 s1: int, d0: int, d1: int, p0: int, p1: int) -> None:
    """y (N, oh, ow, O) rows start:stop (task t: image t // oh, row t % oh) from
    x (N, h, w, O) and w (kh, kw, O)."""
    oh, ow, h, wd = y.shape[1], y.shape[2], x.shape[1], x.shape[2]
    kh, kw = w.shape[0], w.shape[1]
    for t in range(start, stop):
        n, a = t // oh, t % oh
        for b in range(ow):
            acc = y[n, a, b]
            _copy(acc, bias)
            for i in range(kh):
                r = a * s0 + i * d0 - p0
                if 0 <= r < h:
                    for j in range(kw):
                        q = b * s1 + j * d1 - p1
                        if 0 <= q < wd:
                            _axpy(acc, w[i, j], x[n, r, q])


@_jit
def grad_input_last(gx: Any, gy: Any, w: Any, start: int, stop: int, s0: int, s1: int,
                    d0: int, d1: int, p0: int, p1: int) -> None:
    """gx (N, h, w, O) rows start:stop (task t: image t // h, row t % h), gathered from
    gy (N, oh, ow, O) and w (kh, kw, O)."""
    h, wd, oh, ow = gx.shape[1], gx.shape[2], gy.shape[1], gy.shape[2]
    kh, kw = w.shape[0], w.shape[1]
    for t in range(start, stop):
        n, r = t // h, t % h
        for q in range(wd):
            acc = gx[n, r, q]
            acc[:] = 0
            for i in range(kh):
                num = r + p0 - i * d0
                if num < 0 or num % s0 != 0 or num // s0 >= oh:
                    continue
                for j in range(kw):
                    num1 = q + p1 - j * d1
                    if num1 < 0 or num1 % s1 != 0 or num1 // s1 >= ow:
                        continue
                    _axpy(acc, w[i, j], gy[n, num // s0, num1 // s1])


@_jit
def grad_weight_last(gw: Any, gy: Any, x: Any, start: int, stop: int, s0: int, s1: int,
                     d0: int, d1: int, p0: int, p1: int) -> None:
    """gw (kh, kw, O) += the products of output rows start:stop (task t: image t // oh,
    row t % oh) of gy (N, oh, ow, O) with their windows of x (N, h, w, O)."""
    oh, ow, h, wd = gy.shape[1], gy.shape[2], x.shape[1], x.shape[2]
    kh, kw = gw.shape[0], gw.shape[1]
    for t in range(start, stop):
        n, a = t // oh, t % oh
        for i in range(kh):
            r = a * s0 + i * d0 - p0
            if r < 0 or r >= h:
                continue
            for j in range(kw):
                dst = gw[i, j]
                for b in range(ow):
                    q = b * s1 + j * d1 - p1
                    if 0 <= q < wd:
                        _axpy(dst, gy[n, a, b], x[n, r, q])
