"""Winograd minimal filtering F(m x m, 3 x 3) for 2-d, 3x3, stride-1 convolutions.

For one a x a input tile d (a = m + 2) and one 3x3 filter g, the m x m
output tile of the cross-correlation is (Lavin & Gray, 2015)

    Y = A^T [ (G g G^T) * (B^T d B) ] A            (* elementwise)

With row-major vectorisation vec(P X Q^T) = (P kron Q) vec(X), every
transform is one matmul with a Kronecker matrix, batched over all tiles and
channels at once, and the channel sum becomes a^2 independent matmuls:

    U[t]  = (G kron G) (a^2, 9) @ vec(g)                -> (a^2, O, C)   weights, once
    V[t]  = (B^T kron B^T) (a^2, a^2) @ vec(d)          -> (a^2, C, T)   input tiles
    M[t]  = U[t] (O, C) @ V[t] (C, T)                   for t < a^2      the contraction
    Y     = A^T M A, one tile axis at a time            -> (m, O, T, m)  output tiles

(the Kronecker products are applied one tile axis at a time: P X P^T is two
matmuls with P, at a fraction of the flops of one with P kron P).

The contraction costs 2 a^2 O C per m^2 outputs instead of 18 O C for
im2col: 2.25x fewer for m = 2, 4x fewer for m = 4. For m = 2 the input and
output transforms have entries 0, +-1 (exact), the weight transform +-1/2.

Grad input of a 3x3 stride-1 convolution is itself such a convolution: of
grad_output, padded by 2 - p, with the weight flipped and its two channel
axes swapped (see :func:`grad_input`).
"""

from __future__ import annotations

from typing import Any

from . import backend, threads, workspace

# Transform matrices (B^T, G, A^T) of F(2x2, 3x3) and F(4x4, 3x3), Lavin & Gray (2015).
_MATRICES: dict[int, tuple[list[list[float]], list[list[float]], list[list[float]]]] = {
    2: (
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]],
    ),
    4: (
        [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
         [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
    ),
}

DEFAULT_TILE = 4
# Buffer bytes per chunk (per host thread): larger than im2col's, because the 36
# matmuls of a chunk have one column per tile and smaller matmuls run far below
# peak (measured on S1 of the benchmark: 2 MiB 1.55x torch, 8 MiB 1.40x, 16 MiB 1.61x).
TARGET_CHUNK_BYTES = 8 * 2**20
# Fewest tiles per tile row for the banded input transform (measured: it won by 9-17%
# at 7, 14 and 16 tiles per row and lost by 9-22% at 4).
BANDED_MIN_TILES = 6


def _matrix(xp: Any, p: list[list[float]], dtype: Any) -> Any:
    return xp.asarray(p, dtype=dtype)


def _both_axes(xp: Any, p: Any, src: Any, tmp: Any, out: Any) -> None:
    """out (r, r, N) = P src P^T for P (r, q), src (q, q, N): one axis, then the other.

    Equal to the Kronecker form (P kron P) vec(src) at 2 (q + r) / (r q) of its flops.
    """
    r, q = p.shape
    n = src.shape[-1]
    # tmp (r, q*N) = P (r, q) @ src (q, q*N)        first tile axis
    xp.matmul(p, src.reshape(q, q * n), out=tmp.reshape(r, q * n))
    # out[i] (r, N) = P (r, q) @ tmp[i] (q, N)      second tile axis, batched over i
    xp.matmul(p, tmp.reshape(r, q, n), out=out.reshape(r, r, n))


def _input_transform(xp: Any, bt: list[list[float]], b_t: Any, rows: Any, tmp: Any,
                     out: Any) -> None:
    """out (a_j, a_i, ...) = B^T d B of every tile d, from the tile-row bands ``rows``.

    ``rows`` (a, R) holds, for each row offset i < a, the pixel rows m p + i of every
    tile row p, full width (a multiple of m). Row axis: one matmul with B^T. Column
    axis: tile q spans pixels m q + l, l < a, so with l = r + m s (r < m, s in {0, 1})
    it reads blocks q and q + 1 of m pixels. Seen as a (.., m) matrix of blocks, the
    block-q part is one matmul with B^T[:, :m] and the block-(q + 1) part is an add
    shifted by one block. Neither needs the overlapping tiles gathered: that copy
    runs over a-pixel rows, whose per-row cost outweighed the arithmetic (measured).
    The last block of each pixel row has no successor in its row: the shift reads the
    next row's first block there, so the last tile column of each band is junk.
    """
    a = b_t.shape[0]
    m = a - 2
    # tmp (a_i, R) = B^T (a, a) @ rows (a, R)                    row axis
    r = tmp.reshape(a, rows.shape[1])
    xp.matmul(b_t, rows, out=r)
    blocks = r.reshape(-1, m)  # (a_i * ... * tile columns, m)
    # out (a_j, a_i * ...) = B^T[:, :m] (a, m) @ blocks^T (m, ...)   column axis, block q
    v = out.reshape(a, blocks.shape[0])
    xp.matmul(b_t[:, :m], blocks.T, out=v)
    for s in range(a - m):  # column axis, block q + 1: the entries of B^T[:, m:] are +-1, 0
        nxt = blocks[1:, s]
        for j in range(a):
            coef = bt[j][m + s]
            if coef == 1:
                v[j, :-1] += nxt
            elif coef == -1:
                v[j, :-1] -= nxt
            elif coef:
                v[j, :-1] += coef * nxt


def _output_transform(xp: Any, a_t: Any, mm: Any, tmp: Any, out: Any) -> None:
    """out (m, N, m) = A^T M A for A^T (m, a), M (a, a, N): the second tile axis lands
    innermost, so each output row block is m*tw contiguous values (a quarter of the
    scattered rows of the (m, m, N) order, on a machine where rows cost more than bytes)."""
    m, a = a_t.shape
    n = mm.shape[-1]
    # tmp (m, a*N) = A^T (m, a) @ M (a, a*N)        first tile axis
    xp.matmul(a_t, mm.reshape(a, a * n), out=tmp.reshape(m, a * n))
    # out[i] (N, m) = tmp[i]^T (N, a) @ A (a, m)     second tile axis, batched over i
    xp.matmul(tmp.reshape(m, a, n).transpose(0, 2, 1), a_t.T, out=out.reshape(m, n, m))


def _ones_column(p: list[list[float]]) -> int:
    """Index k with A^T[:, k] all ones: adding b at M[k, k] adds b to every output of a tile."""
    return next(k for k, col in enumerate(zip(*p)) if all(v == 1 for v in col))


def supported(kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...],
              dtype: Any) -> bool:
    """Whether Winograd applies: 2-d, 3x3, stride 1, dilation 1, real floating point."""
    return (
        len(kernel) == 2
        and tuple(kernel) == (3, 3)
        and all(s == 1 for s in stride)
        and all(d == 1 for d in dilation)
        and backend.numpy_dtype(dtype).name in ("float32", "float64")
    )


def conv2d(
    x: Any, weight: Any, bias: Any, pads: tuple[tuple[int, int], ...], groups: int,
    tile: int = DEFAULT_TILE,
) -> Any:
    """y (N, O, Ho, Wo) = conv2d(x, weight, stride 1, zero padding ``pads``) + bias.

    ``pads`` is ((top, bottom), (left, right)); ``weight`` is (O, C/g, 3, 3).
    The batch is walked in chunks of images (or of tile rows of one image) that
    fit the workspace limit, on host threads where the backend has them.
    """
    xp = backend.get_array_module(x, weight)
    n, c, h, w = x.shape
    o, g = weight.shape[0], groups
    cg, og = c // g, o // g
    m = tile
    a = m + 2
    a2 = a * a
    (top, bottom), (left, right) = pads
    ho, wo = h + top + bottom - 2, w + left + right - 2
    y = xp.empty((n, o, ho, wo), dtype=x.dtype)
    if n == 0 or ho <= 0 or wo <= 0:
        return y
    bt, gm, at = _MATRICES[m]
    dtype = x.dtype
    th, tw = -(-ho // m), -(-wo // m)  # tiles per axis (ceil)
    # Banded input transform (see _input_transform): one junk tile column per tile
    # row, so only where tile rows are long enough for it to cost less than the copy
    # of overlapping tiles it saves.
    banded = tw >= BANDED_MIN_TILES
    tw1 = tw + banded
    hb, wb = m * th + 2, m * (tw + 1)  # padded tile grid; extra rows/cols are zeros

    # U (a, a, g, O/g, C/g) = (G kron G) (a^2, 9) @ vec(g) (9, O*C/g): one matmul for all
    # filters (a batch of per-filter G g G^T products cost more than the whole transform)
    gmat = _matrix(xp, gm, dtype)
    u = (xp.kron(gmat, gmat) @ weight.reshape(o * cg, 9).T).reshape(a, a, g, og, cg)
    b_t = _matrix(xp, bt, dtype)  # (a, a)
    a_t = _matrix(xp, at, dtype)  # (m, a)

    # Workspace per tile row of one image in three regions, each reused in turn
    # (sizes in elements, T = tiles in the row):
    #   input stage (row bands, or the gathered tiles), then M (a^2 O T)
    #   | its second buffer, then the output transform's (m a O T)
    #   | V (a^2 C T), then the output tiles (m^2 O T)
    stage = a * c * wb if banded else a2 * c * tw1
    sizes = (max(stage, a2 * o * tw1), max(stage, m * a * o * tw1),
             max(a2 * c * tw1, m * m * o * tw1))
    per_row = sum(sizes) * dtype.itemsize
    images, rows = workspace.row_chunks(per_row, th, n, "one tile row (Winograd)",
                                        target=TARGET_CHUNK_BYTES)
    items = [(start, min(n, start + images), p, min(th, p + rows))
             for start in range(0, n, images) for p in range(0, th, rows)]
    per_worker = (per_row * rows + c * hb * wb * dtype.itemsize) * images
    bias_tile = None if bias is None else bias.reshape(g, og, 1)
    ones = _ones_column(at)

    def run(share: list[tuple[int, int, int, int]]) -> None:
        buf = xp.zeros((images, c, hb, wb), dtype=dtype)  # zero border written once
        flat = xp.empty(images * rows * sum(sizes), dtype=dtype)
        sb, sc, sh, sw = buf.strides
        last = None
        for start, stop, p0, p1 in share:
            b, nt = stop - start, p1 - p0
            bt_ = b * nt * tw1
            pad = buf[:b]
            if last != (start, stop):
                pad[:, :, top: top + h, left: left + w] = x[start:stop]
                last = (start, stop)
            band = pad[:, :, m * p0:]
            r0, r1, r2 = (flat[images * rows * at_: images * rows * at_ + b * nt * size]
                          for at_, size in zip((0, sizes[0], sizes[0] + sizes[1]), sizes))
            # V (a_j, a_i, C*b*T) = B^T d B for every tile d, with the column offset first
            v = r2[: a2 * c * bt_].reshape(a, a, c * bt_)
            if banded:
                # rows[i, c, b, p, :] = pad[b, c, m p + i, :]: each tile row band, copied once
                band_rows = r0[: b * nt * stage].reshape(a, c, b, nt, wb)
                band_rows[...] = backend.as_strided_view(
                    band, (b, c, nt, a, wb), (sb, sc, m * sh, sh, sw)).transpose(3, 1, 0, 2, 4)
                _input_transform(xp, bt, b_t, band_rows.reshape(a, -1), r1[: b * nt * stage], v)
            else:
                # d[j, i, c, b, p, q] = pad[b, c, m p + i, m q + j]: the overlapping tiles
                d = r0[: b * nt * stage].reshape(a, a, c, b, nt, tw)
                d[...] = backend.as_strided_view(
                    band, (b, c, nt, tw, a, a), (sb, sc, m * sh, m * sw, sh, sw)
                ).transpose(5, 4, 1, 0, 2, 3)
                _both_axes(xp, b_t, d.reshape(a, a, c * bt_), r1[: b * nt * stage], v)
            # M (a, a, g, O/g, bT) = U (a, a, g, O/g, C/g) @ V[j, i] (g, C/g, bT)
            mm = r0[: a2 * o * bt_].reshape(a, a, g, og, bt_)
            xp.matmul(u, v.reshape(a, a, g, cg, bt_).transpose(1, 0, 2, 3, 4), out=mm)
            if bias_tile is not None:
                mm[ones, ones] += bias_tile  # 1/a^2 of the data instead of all of y
            # Y (m, O*b*T, m) = A^T M A
            yt = r2[: m * m * o * bt_].reshape(m * m, o * bt_)
            _output_transform(xp, a_t, mm.reshape(a, a, o * bt_), r1[: m * a * o * bt_], yt)
            y5 = yt.reshape(m, o, b, nt, tw1 * m)
            # y[b, o, m p + i, m q + j] = Y[i, o, b, p, q, j], cropped to (Ho, Wo): whole
            # tile rows in one copy that writes y in order (m rows of y are contiguous)
            full = min(p1, ho // m) - p0
            if full > 0:
                out = y[start:stop, :, m * p0: m * (p0 + full)].reshape(b, o, full, m, wo)
                out[...] = y5[:, :, :, :full, :wo].transpose(2, 1, 3, 0, 4)
            if p0 + full < p1:  # the last tile row, cropped
                out = y[start:stop, :, m * (p0 + full):]
                for i in range(out.shape[2]):
                    out[:, :, i] = y5[i, :, :, full, :wo].transpose(1, 0, 2)

    threads.run_shares(run, items, per_worker, x)
    return y


def flipped_weight(weight: Any, groups: int) -> Any:
    """W'[c, o] = W[o, c] flipped in space, per group: (O, C/g, 3, 3) -> (C, O/g, 3, 3)."""
    o, cg = weight.shape[:2]
    g = groups
    w5 = weight.reshape(g, o // g, cg, 3, 3)
    return w5.transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1].reshape(g * cg, o // g, 3, 3)


def grad_input(
    grad_output: Any, weight: Any, pads: tuple[tuple[int, int], ...], groups: int,
    tile: int = DEFAULT_TILE,
) -> Any:
    """gx (N, C, H, W) of y = conv2d(x, weight, stride 1, zero padding ``pads``).

    gx = conv2d(gy, W', padding 2 - p per side), W' from :func:`flipped_weight`:
    the adjoint of a 3x3 correlation is the full correlation with the flipped filter.
    Requires every pad <= 2.
    """
    full = tuple((2 - lo, 2 - hi) for lo, hi in pads)
    return conv2d(grad_output, flipped_weight(weight, groups), None, full, groups, tile)


__all__ = ["supported", "conv2d", "grad_input", "flipped_weight", "DEFAULT_TILE"]
