"""Compiled tile transforms of the ``winograd_jit`` path (numba; imported only when it runs).

Images are channels last, so that every transform is a multiply-add of whole
channel vectors: tile t = (n th + i) tw + j of a block of images holds output
rows i m .. i m + m - 1 and columns j m .. j m + m - 1, and reads the a x a
input pixels (i m - top + k, j m - left + s), k, s < a (a = m + 2), zero
outside the image. With B^T (a, a) and A^T (m, a) of F(m x m, 3 x 3):

    input_tiles          v[p, q, t] = sum_ks B^T[p, k] d_t[k, s] B^T[q, s]      d_t: x tile
    output_tiles         y[n, i m + p, j m + q] = b + sum_ks A^T[p, k] M_t[k, s] A^T[q, s]
    grad_tiles           g[k, s, t] = sum_pq A^T[p, k] e_t[p, q] A^T[q, s]      e_t: gy tile
    input_tiles_adjoint  gx[n, i m - top + k, j m - left + s]
                             += sum_pq B^T[p, k] Z_t[p, q] B^T[q, s]

every entry a vector over the channels. grad_tiles is the adjoint of the output
transform (grad_output's m x m tile, zero past the output's edge, taken back to the
a x a transform domain), input_tiles_adjoint that of the input transform (overlapping
tiles add up, pixels outside the image are dropped). Each applies its matrix to one
tile axis, then the other, skipping the zero entries. Kernels
release the GIL; the vectors are channel rows, so the loops vectorize.

The four kernels spell out the same multiply-add loops on purpose: one helper taking
(coefficients, source rows) as slices made every kernel about 3x slower (numba builds
a view per slice, and slices across a strided axis lose the unit-stride loops; measured
on VGG-11's 256@16x16: input transform 1.06 against 0.33-0.38 ms).
"""

from __future__ import annotations

from typing import Any

import numba

_jit = numba.njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})


@_jit
def input_tiles(xt: Any, top: int, left: int, m: int, th: int, tw: int, bt: Any,
                v: Any, t1: Any) -> None:
    """v (a, a, T, C) <- B^T d_t B of every tile t of xt (B, H, W, C), zero padded;
    t1 (a, a, C) scratch: B^T d_t, the rows transformed."""
    nb, h, w, channels = xt.shape
    a = bt.shape[0]
    for n in range(nb):
        xn = xt[n]
        for i in range(th):
            for j in range(tw):
                t = (n * th + i) * tw + j
                for p in range(a):
                    for s in range(a):
                        acc = t1[p, s]
                        for c in range(channels):
                            acc[c] = 0.0
                        col = j * m - left + s
                        if col < 0 or col >= w:
                            continue
                        for k in range(a):
                            coef = bt[p, k]
                            row = i * m - top + k
                            if coef == 0.0 or row < 0 or row >= h:
                                continue
                            for c in range(channels):
                                acc[c] += coef * xn[row, col, c]
                for p in range(a):
                    for q in range(a):
                        out = v[p, q, t]
                        for c in range(channels):
                            out[c] = 0.0
                        for s in range(a):
                            coef = bt[q, s]
                            if coef == 0.0:
                                continue
                            src = t1[p, s]
                            for c in range(channels):
                                out[c] += coef * src[c]


@_jit
def output_tiles(mm: Any, m: int, th: int, tw: int, at: Any, bias: Any, yt: Any,
                 r: Any) -> None:
    """yt (B, Ho, Wo, O) <- bias + A^T M_t A of every tile t of mm (a, a, T, O); the
    rows and columns of the last tiles past (Ho, Wo) are dropped. r (m, a, O) scratch:
    A^T M_t, the rows transformed."""
    nb, ho, wo, channels = yt.shape
    a = at.shape[1]
    for n in range(nb):
        yn = yt[n]
        for i in range(th):
            for j in range(tw):
                t = (n * th + i) * tw + j
                for p in range(m):
                    for s in range(a):
                        acc = r[p, s]
                        for o in range(channels):
                            acc[o] = 0.0
                        for k in range(a):
                            coef = at[p, k]
                            if coef == 0.0:
                                continue
                            src = mm[k, s, t]
                            for o in range(channels):
                                acc[o] += coef * src[o]
                for p in range(m):
                    row = i * m + p
                    if row >= ho:
                        continue
                    for q in range(m):
                        col = j * m + q
                        if col >= wo:
                            continue
                        for o in range(channels):
                            yn[row, col, o] = bias[o]
                        for s in range(a):
                            coef = at[q, s]
                            if coef == 0.0:
                                continue
                            src = r[p, s]
                            for o in range(channels):
                                yn[row, col, o] += coef * src[o]


@_jit
def grad_tiles(gyt: Any, m: int, th: int, tw: int, at: Any, g: Any, r: Any) -> None:
    """g (a, a, T, O) <- A e_t A^T of every m x m tile e_t of gyt (B, Ho, Wo, O), zero
    past (Ho, Wo). r (a, m, O) scratch: A e_t, the rows transformed."""
    nb, ho, wo, channels = gyt.shape
    a = at.shape[1]
    for n in range(nb):
        gn = gyt[n]
        for i in range(th):
            for j in range(tw):
                t = (n * th + i) * tw + j
                for k in range(a):
                    for q in range(m):
                        acc = r[k, q]
                        for o in range(channels):
                            acc[o] = 0.0
                        col = j * m + q
                        if col >= wo:
                            continue
                        for p in range(m):
                            coef = at[p, k]
                            row = i * m + p
                            if coef == 0.0 or row >= ho:
                                continue
                            for o in range(channels):
                                acc[o] += coef * gn[row, col, o]
                for k in range(a):
                    for s in range(a):
                        out = g[k, s, t]
                        for o in range(channels):
                            out[o] = 0.0
                        for q in range(m):
                            coef = at[q, s]
                            if coef == 0.0:
                                continue
                            src = r[k, q]
                            for o in range(channels):
                                out[o] += coef * src[o]


@_jit
def input_tiles_adjoint(z: Any, top: int, left: int, m: int, th: int, tw: int, bt: Any,
                        gxt: Any, t1: Any) -> None:
    """gxt (B, H, W, C) += B Z_t B^T of every tile t of z (a, a, T, C), added back to the
    a x a pixels tile t read (those inside the image): the adjoint of input_tiles.
    t1 (a, a, C) scratch: B Z_t, the rows taken back."""
    nb, h, w, channels = gxt.shape
    a = bt.shape[0]
    for n in range(nb):
        gn = gxt[n]
        for i in range(th):
            for j in range(tw):
                t = (n * th + i) * tw + j
                for k in range(a):
                    for q in range(a):
                        acc = t1[k, q]
                        for c in range(channels):
                            acc[c] = 0.0
                        for p in range(a):
                            coef = bt[p, k]
                            if coef == 0.0:
                                continue
                            src = z[p, q, t]
                            for c in range(channels):
                                acc[c] += coef * src[c]
                for k in range(a):
                    row = i * m - top + k
                    if row < 0 or row >= h:
                        continue
                    for s in range(a):
                        col = j * m - left + s
                        if col < 0 or col >= w:
                            continue
                        for q in range(a):
                            coef = bt[q, s]
                            if coef == 0.0:
                                continue
                            src = t1[k, q]
                            for c in range(channels):
                                gn[row, col, c] += coef * src[c]
