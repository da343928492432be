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
positions (columns b >= ow, rows a >= oh between images). A 3x3 stride-1 layer
with one output channel per input channel gathers its grad input instead, in
one pass: ``gph[f] = sum_ij w[c, 0, i, j] gyg[f - off_ij]`` (:func:`_gather_nine`).
Junk positions of the forward read real pixels and are dropped. In grad weight a
junk position can read a non-finite pixel that no window of its tap reads (0 * inf
is nan): a nan sum is taken again over the valid positions only.

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
def _copy(dst: Any, src: Any) -> None:
    for q in range(dst.shape[0]):
        dst[q] = src[q]


@_jit
def _runs(dst: Any, at: int, pitch: int, step: int, src: Any, start: int, src_pitch: int,
          src_step: int, rows: int, count: int) -> None:
    """dst[at + r pitch + i step] = src[start + r src_pitch + i src_step] for r < rows,
    i < count, between flat arrays (all indices non-negative). Offsets into flat arrays,
    not views: a row's view cost 15-25 ns, as much as copying its pixels, and an image's
    2-d view left the copy unvectorized (strides unknown). Unsigned indices spare numba's
    negative-index fix-up, which also kept LLVM from vectorizing (as in
    blocked_kernels._strided_run)."""
    d, s = numba.uint64(at), numba.uint64(start)
    p, sp = numba.uint64(pitch), numba.uint64(src_pitch)
    k, sk = numba.uint64(step), numba.uint64(src_step)
    for _ in range(rows):
        for i in range(numba.uint64(count)):
            dst[d + i * k] = src[s + i * sk]
        d += p
        s += sp


@_jit
def _deinterleave(dst: Any, at: int, at_odd: int, pitch: int, src: Any, start: int,
                  src_pitch: int, rows: int, pairs: int) -> None:
    """dst[at + r pitch + i] = src[start + r src_pitch + 2 i] and dst[at_odd + r pitch + i]
    = src[start + r src_pitch + 2 i + 1] for r < rows, i < pairs: a stride-2 row's two
    column residues in one pass over it (flat arrays, as :func:`_runs`). The two
    strided runs took 4.8x as long (MobileNetV2's 48x48 stride-2 layer's planes)."""
    d, e, s = numba.uint64(at), numba.uint64(at_odd), numba.uint64(start)
    p, sp, two, one = numba.uint64(pitch), numba.uint64(src_pitch), numba.uint64(2), numba.uint64(1)
    for _ in range(rows):
        for i in range(numba.uint64(pairs)):
            dst[d + i] = src[s + two * i]
            dst[e + i] = src[s + two * i + one]
        d += p
        e += p
        s += sp


@_jit
def _interleave(dst: Any, start: int, dst_pitch: int, src: Any, at: int, at_odd: int,
                pitch: int, rows: int, pairs: int) -> None:
    """The adjoint of :func:`_deinterleave`: dst's rows from the two residues' runs."""
    d, s, e = numba.uint64(start), numba.uint64(at), numba.uint64(at_odd)
    dp, p, two, one = numba.uint64(dst_pitch), numba.uint64(pitch), numba.uint64(2), numba.uint64(1)
    for _ in range(rows):
        for i in range(numba.uint64(pairs)):
            dst[d + two * i] = src[s + i]
            dst[d + two * i + one] = src[e + i]
        d += dp
        s += p
        e += p


@_jit
def _stride2_rows(ph: Any, h: int, row0: int, s0: int, p0: int, p1: int,
                  u: int) -> tuple[int, int, int, int]:
    """Row residue u of a plane of height h, for column stride 2: (first input row,
    rows, the grid's flat offset of its even input columns, and of its odd ones)."""
    r_first, rows, g0 = _residue(h, s0, p0, u)
    grid_rows, wt, even = ph.shape[2], ph.shape[3], p1 % 2
    at = ((u * 2 + even) * grid_rows + row0 + g0) * wt + p1 // 2
    at_odd = ((u * 2 + 1 - even) * grid_rows + row0 + g0) * wt + (p1 + 1) // 2
    return r_first, rows, at, at_odd


@_jit
def _columns(w: int, s1: int, p1: int, v: int) -> tuple[int, int, int]:
    """(first input column, count, first grid column) of column residue v."""
    first = (v - p1) % s1
    return first, max(0, -(-(w - first) // s1)), (first + p1) // s1


@_jit
def _residue(h: int, s0: int, p0: int, u: int) -> tuple[int, int, int]:
    """(first input row, count, first grid row) of row residue u (as _columns)."""
    first = (u - p0) % s0
    return first, max(0, -(-(h - first) // s0)), (first + p0) // s0


@_jit
def _split(ph: Any, x: Any, n: int, ch: int, row0: int, s0: int, s1: int, p0: int,
           p1: int) -> None:
    """The phase grid ph (s0, s1, rows, wt) from row row0 on <- plane x[n, ch] (h, w),
    input pixel (r, q) to residue ((r + p0) % s0, (q + p1) % s1) at grid position
    ((r + p0) // s0, (q + p1) // s1) (the padding is left as it is): one block of
    runs per residue."""
    h, w = x.shape[2], x.shape[3]
    flat, pixels = ph.reshape(ph.size), x.reshape(x.size)
    plane = (n * x.shape[1] + ch) * h * w
    if s1 == 2:  # even and odd columns in one pass
        for u in range(s0):
            r_first, rows, at, at_odd = _stride2_rows(ph, h, row0, s0, p0, p1, u)
            start = plane + r_first * w
            _deinterleave(flat, at, at_odd, ph.shape[3], pixels, start, s0 * w, rows, w // 2)
            if w % 2:
                _runs(flat, at + w // 2, ph.shape[3], 1, pixels, start + w - 1, s0 * w, 1, rows, 1)
        return
    for u in range(s0):
        r_first, rows, g0 = _residue(h, s0, p0, u)
        for v in range(s1):
            first, count, t0 = _columns(w, s1, p1, v)
            at = ((u * s1 + v) * ph.shape[2] + row0 + g0) * ph.shape[3] + t0
            _runs(flat, at, ph.shape[3], 1, pixels, plane + r_first * w + first, s0 * w, s1,
                  rows, count)


@_jit
def _merge(gx: Any, n: int, ch: int, ph: Any, row0: int, s0: int, s1: int, p0: int,
           p1: int) -> None:
    """Plane gx[n, ch] (h, w) <- its pixels of the phase grid from row row0 on: the
    adjoint of :func:`_split` (each pixel lies in one residue, as the grid covers the
    input)."""
    h, w = gx.shape[2], gx.shape[3]
    flat, pixels = ph.reshape(ph.size), gx.reshape(gx.size)
    plane = (n * gx.shape[1] + ch) * h * w
    if s1 == 2:
        for u in range(s0):
            r_first, rows, at, at_odd = _stride2_rows(ph, h, row0, s0, p0, p1, u)
            start = plane + r_first * w
            _interleave(pixels, start, s0 * w, flat, at, at_odd, ph.shape[3], rows, w // 2)
            if w % 2:
                _runs(pixels, start + w - 1, s0 * w, 1, flat, at + w // 2, ph.shape[3], 1, rows, 1)
        return
    for u in range(s0):
        r_first, rows, g0 = _residue(h, s0, p0, u)
        for v in range(s1):
            first, count, t0 = _columns(w, s1, p1, v)
            at = ((u * s1 + v) * ph.shape[2] + row0 + g0) * ph.shape[3] + t0
            _runs(pixels, plane + r_first * w + first, s0 * w, s1, flat, at, ph.shape[3], 1,
                  rows, count)


@_jit
def _grid(ph: Any, nb: int) -> tuple[int, int, Any]:
    """(rows per image hb, columns wt, the grid as (s0, s1, rows * wt)) of a task's
    phase grid ph for blocks of nb images."""
    s0, s1, rows, wt = ph.shape
    return (rows - 1) // nb, wt, ph.reshape(s0, s1, rows * wt)


@_jit
def _block(t: int, c: int, n: int, nb: int, hb: int, oh: int,
           wt: int) -> tuple[int, int, int, int]:
    """(channel, first image, images, accumulator length) of task t."""
    n0 = (t // c) * nb
    count = min(n, n0 + nb) - n0
    return t % c, n0, count, ((count - 1) * hb + oh) * wt


@_jit
def _tap(flat: Any, i: int, j: int, s0: int, s1: int, d0: int, d1: int,
         wt: int) -> tuple[Any, int]:
    """(the residue's grid row, the flat shift) that tap (i, j) reads."""
    return flat[i * d0 % s0, j * d1 % s1], (i * d0 // s0) * wt + j * d1 // s1


@_jit
def _fill(ph: Any, x: Any, ch: int, n0: int, count: int, hb: int, s0: int, s1: int,
          p0: int, p1: int) -> None:
    """ph <- the phase grids of x[n0:n0 + count, ch], image k at rows k hb. The grid
    is zero when its worker gets it, and fills write the same pixel positions every
    time: its padding stays zero. Rows past the last image of a short block keep an
    earlier block's pixels, which only junk positions read."""
    for k in range(count):
        _split(ph, x, n0 + k, ch, k * hb, s0, s1, p0, p1)


@_jit
def _grid_gy(acc: Any, gy: Any, o: int, n0: int, count: int, hb: int, wt: int) -> None:
    """acc <- gy[n0:n0 + count, o] on the accumulator's grid, zero at junk positions."""
    acc[:] = 0
    oh, ow = gy.shape[2], gy.shape[3]
    flat = gy.reshape(gy.size)
    for k in range(count):
        _runs(acc, k * hb * wt, wt, 1, flat, ((n0 + k) * gy.shape[1] + o) * oh * ow, ow, 1,
              oh, ow)


@_jit
def _scaled_add(dst: Any, wv: Any, src: Any) -> None:
    for e in range(dst.shape[0]):
        dst[e] += wv * src[e]


@_jit
def _all_taps(acc: Any, flat: Any, wcm: Any, wt: int, s0: int, s1: int, d0: int, d1: int,
              back: bool) -> None:
    """Every tap (i, j) of one output channel's weights wcm (kh, kw): the forward's
    acc += w_ij run_ij, or with ``back`` grad input's run_ij += w_ij acc (run_ij: the
    tap's shifted run of the grid, as long as acc)."""
    q = acc.shape[0]
    for i in range(wcm.shape[0]):
        for j in range(wcm.shape[1]):
            base, off = _tap(flat, i, j, s0, s1, d0, d1, wt)
            if back:
                _scaled_add(base[off:off + q], wcm[i, j], acc)
            else:
                _scaled_add(acc, wcm[i, j], base[off:off + q])


@_jit
def _run(flat: Any, i: int, j: int, geo: tuple[int, ...]) -> Any:
    """Tap (i, j)'s run of q grid elements; geo = (s0, s1, d0, d1, wt, q)."""
    s0, s1, d0, d1, wt, q = geo
    base, off = _tap(flat, i, j, s0, s1, d0, d1, wt)
    return base[off:off + q]


@_jit
def _nine_taps(acc: Any, flat: Any, w: Any, bias: Any, wt: int, s0: int, s1: int, d0: int,
               d1: int) -> None:
    """acc = bias + sum_ij w[i, j] run_ij for a 3x3 kernel: the nine taps' runs of the
    grid in one pass (nine passes, each reading and writing acc, took 1.5-2x as long
    on MobileNetV2's 24x24 and 48x48 layers; measured on one thread)."""
    q = acc.shape[0]
    geo = (s0, s1, d0, d1, wt, q)
    a0, a1, a2 = _run(flat, 0, 0, geo), _run(flat, 0, 1, geo), _run(flat, 0, 2, geo)
    b0, b1, b2 = _run(flat, 1, 0, geo), _run(flat, 1, 1, geo), _run(flat, 1, 2, geo)
    c0, c1, c2 = _run(flat, 2, 0, geo), _run(flat, 2, 1, geo), _run(flat, 2, 2, geo)
    w00, w01, w02 = w[0, 0], w[0, 1], w[0, 2]
    w10, w11, w12 = w[1, 0], w[1, 1], w[1, 2]
    w20, w21, w22 = w[2, 0], w[2, 1], w[2, 2]
    for e in range(q):
        acc[e] = (bias + w00 * a0[e] + w01 * a1[e] + w02 * a2[e]
                  + w10 * b0[e] + w11 * b1[e] + w12 * b2[e]
                  + w20 * c0[e] + w21 * c1[e] + w22 * c2[e])


@_jit
def forward_planes(y: Any, x: Any, w: Any, bias: Any, ph: Any, acc: Any, start: int,
                   stop: int, nb: int, s0: int, s1: int, d0: int, d1: int, p0: int,
                   p1: int) -> None:
    """y[n, c*mult + m] = bias + sum_ij w[c, m, i, j] x_pad[n, c] windows for tasks
    start:stop; x (N, C, h, w), w (C, mult, kh, kw), ph and acc scratch."""
    c, mult, kh, kw = w.shape
    n, oh, ow = y.shape[0], y.shape[2], y.shape[3]
    hb, wt, flat = _grid(ph, nb)
    flat_y = y.reshape(y.size)
    for t in range(start, stop):
        ch, n0, count, q = _block(t, c, n, nb, hb, oh, wt)
        _fill(ph, x, ch, n0, count, hb, s0, s1, p0, p1)
        for m in range(mult):
            o = ch * mult + m
            if kh == 3 and kw == 3:
                _nine_taps(acc[:q], flat, w[ch, m], bias[o], wt, s0, s1, d0, d1)
            else:
                acc[:q] = bias[o]
                _all_taps(acc[:q], flat, w[ch, m], wt, s0, s1, d0, d1, False)
            for k in range(count):
                _runs(flat_y, ((n0 + k) * y.shape[1] + o) * oh * ow, ow, 1, acc, k * hb * wt,
                      wt, 1, oh, ow)


@_jit
def _gather_nine(ph: Any, acc: Any, gy: Any, w: Any, o: int, n0: int, count: int, hb: int,
                 wt: int, d0: int, d1: int) -> None:
    """ph (1, 1, rows, wt) = a stride-1 3x3 layer's grad input of one task with one
    output channel o, as a gather: gph[f] = sum_ij w[i, j] gyg[f - off_ij], the taps'
    runs of gyg with the kernel's reach of zeros in front, in one pass
    (:func:`_nine_taps` with the kernel flipped), where the scatter's nine passes each
    read and write the grid."""
    reach = 2 * d0 * wt + 2 * d1
    whole = ph.reshape(ph.size)
    padded = acc[:whole.shape[0] + reach]
    _grid_gy(padded[reach:], gy, o, n0, count, hb, wt)
    padded[:reach] = 0
    zero = w.dtype.type(0)  # not w[0, 0] * 0: numba makes that a float64, and the sums too
    _nine_taps(whole, padded.reshape(1, 1, padded.shape[0]), w[::-1, ::-1], zero, wt, 1, 1,
               d0, d1)


@_jit
def _four_runs(out: Any, src: Any, at: int, wt: int, runs: int, a: Any, b: Any, c: Any,
               d: Any) -> None:
    """out[f] = a src[at + f] + b src[at - 1 + f] + c src[at - wt + f] + d src[at - wt - 1 + f],
    in one pass, with only the runs ``runs`` names (0: a's; 1: a's and b's; 2: a's and
    c's; 3: all four)."""
    q = out.shape[0]
    r0, r1 = src[at:at + q], src[at - 1:at - 1 + q]
    r2, r3 = src[at - wt:at - wt + q], src[at - wt - 1:at - wt - 1 + q]
    if runs == 0:
        for f in range(q):
            out[f] = a * r0[f]
    elif runs == 1:
        for f in range(q):
            out[f] = a * r0[f] + b * r1[f]
    elif runs == 2:
        for f in range(q):
            out[f] = a * r0[f] + c * r2[f]
    else:
        for f in range(q):
            out[f] = a * r0[f] + b * r1[f] + c * r2[f] + d * r3[f]


@_jit
def _gather_stride2(ph: Any, acc: Any, gy: Any, w: Any, o: int, n0: int, count: int, hb: int,
                    wt: int) -> None:
    """ph (2, 2, rows, wt) = a 3x3 stride-2 layer's grad input of one task with one output
    channel o, gathered as :func:`_gather_nine` does, residue by residue: residue (u, v)
    gets the taps (i, j) with i % 2 = u and j % 2 = v, tap (i, j) at the flat shift
    (i // 2) wt + j // 2, in one pass each."""
    size = ph.shape[2] * wt
    reach = wt + 1
    padded = acc[:size + reach]
    _grid_gy(padded[reach:], gy, o, n0, count, hb, wt)
    padded[:reach] = 0
    flat, zero = ph.reshape(4, size), w.dtype.type(0)
    _four_runs(flat[0], padded, reach, wt, 3, w[0, 0], w[0, 2], w[2, 0], w[2, 2])
    _four_runs(flat[1], padded, reach, wt, 2, w[0, 1], zero, w[2, 1], zero)
    _four_runs(flat[2], padded, reach, wt, 1, w[1, 0], w[1, 2], zero, zero)
    _four_runs(flat[3], padded, reach, wt, 0, w[1, 1], zero, zero, zero)


@_jit
def grad_input_planes(gx: Any, gy: Any, w: Any, ph: Any, acc: Any, start: int, stop: int,
                      nb: int, s0: int, s1: int, d0: int, d1: int, p0: int, p1: int) -> None:
    """gx[n, c] = sum_m sum_ij w[c, m, i, j] gy[n, c*mult + m] scattered back through
    tap (i, j), for tasks start:stop; ph and acc are scratch as in the forward."""
    c, mult, kh, kw = w.shape
    n, oh = gy.shape[0], gy.shape[2]
    hb, wt, flat = _grid(ph, nb)
    gather = kh == 3 and kw == 3 and s0 == 1 and s1 == 1 and mult == 1
    gather2 = kh == 3 and kw == 3 and s0 == 2 and s1 == 2 and d0 == 1 and d1 == 1 and mult == 1
    for t in range(start, stop):
        ch, n0, count, q = _block(t, c, n, nb, hb, oh, wt)
        if gather or gather2:
            if gather:
                _gather_nine(ph, acc, gy, w[ch, 0], ch, n0, count, hb, wt, d0, d1)
            else:
                _gather_stride2(ph, acc, gy, w[ch, 0], ch, n0, count, hb, wt)
            for k in range(count):
                _merge(gx, n0 + k, ch, ph, k * hb, s0, s1, p0, p1)
            continue
        ph[:] = 0
        for m in range(mult):
            _grid_gy(acc, gy, ch * mult + m, n0, count, hb, wt)
            _all_taps(acc[:q], flat, w[ch, m], wt, s0, s1, d0, d1, True)
        for k in range(count):
            _merge(gx, n0 + k, ch, ph, k * hb, s0, s1, p0, p1)


@_jit_sum
def _dot_rows(gy: Any, o: int, n0: int, count: int, base: Any, off: int, hb: int,
              wt: int) -> Any:
    """sum over valid positions of gy[n0 + k, o, a, b] base[off + (k hb + a) wt + b]."""
    oh, ow = gy.shape[2], gy.shape[3]
    total = gy.dtype.type(0)
    for k in range(count):
        for a in range(oh):
            e = off + (k * hb + a) * wt
            src, row = base[e:e + ow], gy[n0 + k, o, a]
            for b in range(ow):
                total += row[b] * src[b]
    return total


@_jit_sum
def _dot(a: Any, b: Any) -> Any:
    """sum_e a[e] b[e], in the arrays' precision (a float32 sum stays float32)."""
    total = a.dtype.type(0)
    for e in range(a.shape[0]):
        total += a[e] * b[e]
    return total


@_jit_sum
def _nine_dots(acc: Any, flat: Any, geo: tuple[int, ...], go: bool) -> Any:
    """A 3x3 kernel's nine sums of acc times tap (i, j)'s run (at 3 i + j), in one pass
    over acc; zeros unless ``go``. Nine passes of :func:`_dot`, each a chain of vector
    adds waiting on the last, took 1.1-1.3x as long (MobileNetV2's 48x48 and 24x24
    layers, one thread; measured)."""
    zero = acc.dtype.type(0)
    t00 = t01 = t02 = t10 = t11 = t12 = t20 = t21 = t22 = zero
    if go:
        a0, a1, a2 = _run(flat, 0, 0, geo), _run(flat, 0, 1, geo), _run(flat, 0, 2, geo)
        b0, b1, b2 = _run(flat, 1, 0, geo), _run(flat, 1, 1, geo), _run(flat, 1, 2, geo)
        c0, c1, c2 = _run(flat, 2, 0, geo), _run(flat, 2, 1, geo), _run(flat, 2, 2, geo)
        for e in range(acc.shape[0]):
            g = acc[e]
            t00 += g * a0[e]
            t01 += g * a1[e]
            t02 += g * a2[e]
            t10 += g * b0[e]
            t11 += g * b1[e]
            t12 += g * b2[e]
            t20 += g * c0[e]
            t21 += g * c1[e]
            t22 += g * c2[e]
    return (t00, t01, t02, t10, t11, t12, t20, t21, t22)


@_jit_sum
def grad_weight_planes(gw: Any, gy: Any, x: Any, ph: Any, acc: Any, start: int, stop: int,
                       nb: int, s0: int, s1: int, d0: int, d1: int, p0: int, p1: int) -> None:
    """gw (C, mult, kh, kw) += the sums of tasks start:stop of gy[n, c*mult + m] times
    tap (i, j)'s windows of x_pad[n, c]; ph and acc are scratch as in the forward."""
    c, mult, kh, kw = gw.shape
    n, oh = gy.shape[0], gy.shape[2]
    hb, wt, flat = _grid(ph, nb)
    for t in range(start, stop):
        ch, n0, count, q = _block(t, c, n, nb, hb, oh, wt)
        _fill(ph, x, ch, n0, count, hb, s0, s1, p0, p1)
        for m in range(mult):
            o = ch * mult + m
            _grid_gy(acc, gy, o, n0, count, hb, wt)
            nine = _nine_dots(acc[:q], flat, (s0, s1, d0, d1, wt, q), kh == 3 and kw == 3)
            for i in range(kh):
                for j in range(kw):
                    base, off = _tap(flat, i, j, s0, s1, d0, d1, wt)
                    if kh == 3 and kw == 3:
                        total = nine[3 * i + j]
                    else:
                        total = _dot(acc[:q], base[off:off + q])
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
def _window9(out: Any, bias: Any, w: Any, x0: Any, x1: Any, x2: Any, q: int, d1: int) -> None:
    """out = bias + sum_ij w[i, j] x_i[q + j d1]: a 3x3 window inside the image, its
    rows x0, x1, x2 (w, O). One pass over the channels with nine terms (the taps'
    runs of one pixel are too short to pay a loop each: 1.6-2.3x faster on
    MobileNetV2's 12x12 and 24x24 layers, measured on one thread)."""
    a0, a1, a2 = x0[q], x0[q + d1], x0[q + 2 * d1]
    b0, b1, b2 = x1[q], x1[q + d1], x1[q + 2 * d1]
    c0, c1, c2 = x2[q], x2[q + d1], x2[q + 2 * d1]
    w00, w01, w02 = w[0, 0], w[0, 1], w[0, 2]
    w10, w11, w12 = w[1, 0], w[1, 1], w[1, 2]
    w20, w21, w22 = w[2, 0], w[2, 1], w[2, 2]
    for c in range(out.shape[0]):
        out[c] = (bias[c] + w00[c] * a0[c] + w01[c] * a1[c] + w02[c] * a2[c]
                  + w10[c] * b0[c] + w11[c] * b1[c] + w12[c] * b2[c]
                  + w20[c] * c0[c] + w21[c] * c1[c] + w22[c] * c2[c])


@_jit
def forward_last(y: Any, x: Any, w: Any, bias: Any, start: int, stop: int, s0: int,
                 s1: int, d0: int, d1: int, p0: int, p1: int) -> None:
    """y (N, oh, ow, O) rows start:stop (task t: image t // oh, row t % oh) from
    x (N, h, w, O) and w (kh, kw, O); a 3x3 window inside the image in one pass."""
    oh, ow, h, wd = y.shape[1], y.shape[2], x.shape[1], x.shape[2]
    kh, kw = w.shape[0], w.shape[1]
    for t in range(start, stop):
        n, a = t // oh, t % oh
        r0 = a * s0 - p0
        rows_inside = kh == 3 and kw == 3 and r0 >= 0 and r0 + 2 * d0 < h
        for b in range(ow):
            acc = y[n, a, b]
            q0 = b * s1 - p1
            if rows_inside and q0 >= 0 and q0 + 2 * d1 < wd:
                _window9(acc, bias, w, x[n, r0], x[n, r0 + d0], x[n, r0 + 2 * d0], q0, d1)
                continue
            _copy(acc, bias)
            for i in range(kh):
                r = r0 + i * d0
                if 0 <= r < h:
                    for j in range(kw):
                        q = q0 + j * d1
                        if 0 <= q < wd:
                            _axpy(acc, w[i, j], x[n, r, q])


@_jit
def _gather9(out: Any, w: Any, g0: Any, g1: Any, g2: Any, b: int, d1: int) -> None:
    """out = sum_ij w[i, j] g_i[b - j d1]: the nine taps that reach an input pixel of a
    stride-1 3x3 layer inside the output, g_i the grad_output row of tap row i (w, O)
    (one pass over the channels, as :func:`_window9`)."""
    a0, a1, a2 = g0[b], g0[b - d1], g0[b - 2 * d1]
    b0, b1, b2 = g1[b], g1[b - d1], g1[b - 2 * d1]
    c0, c1, c2 = g2[b], g2[b - d1], g2[b - 2 * d1]
    w00, w01, w02 = w[0, 0], w[0, 1], w[0, 2]
    w10, w11, w12 = w[1, 0], w[1, 1], w[1, 2]
    w20, w21, w22 = w[2, 0], w[2, 1], w[2, 2]
    for c in range(out.shape[0]):
        out[c] = (w00[c] * a0[c] + w01[c] * a1[c] + w02[c] * a2[c]
                  + w10[c] * b0[c] + w11[c] * b1[c] + w12[c] * b2[c]
                  + w20[c] * c0[c] + w21[c] * c1[c] + w22[c] * c2[c])


@_jit
def grad_input_last(gx: Any, gy: Any, w: Any, start: int, stop: int, s0: int, s1: int,
                    d0: int, d1: int, p0: int, p1: int) -> None:
    """gx (N, h, w, O) rows start:stop (task t: image t // h, row t % h), gathered from
    gy (N, oh, ow, O) and w (kh, kw, O); with stride 1, a 3x3 kernel's nine taps of a
    pixel inside the output in one pass."""
    h, wd, oh, ow = gx.shape[1], gx.shape[2], gy.shape[1], gy.shape[2]
    kh, kw = w.shape[0], w.shape[1]
    nine = kh == 3 and kw == 3 and s0 == 1 and s1 == 1
    for t in range(start, stop):
        n, r = t // h, t % h
        top = r + p0  # the grad_output row that tap row 0 reads back from (stride 1)
        rows_inside = nine and top - 2 * d0 >= 0 and top < oh
        for q in range(wd):
            acc = gx[n, r, q]
            if rows_inside and q + p1 - 2 * d1 >= 0 and q + p1 < ow:
                _gather9(acc, w, gy[n, top], gy[n, top - d0], gy[n, top - 2 * d0], q + p1, d1)
                continue
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
