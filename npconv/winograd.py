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
axes swapped (``conv._backward`` calls it so).
"""

from __future__ import annotations

import math
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
# Fewest tiles per tile row for the blocked input transform, which computes one junk
# tile per row (measured against gathering the tiles: see _input_transform).
BLOCKED_MIN_TILES = 6


def _matrix(xp: Any, p: list[list[float]], dtype: Any) -> Any:
    return xp.asarray(p, dtype=dtype)


def _shift_terms(bt: list[list[float]], m: int) -> list[tuple[int, list[tuple[float, int, int]]]]:
    """The entries of B^T[:, m:] (the taps a tile takes from the next block of m pixels)
    as (s, [(value, first row, last row + 1), ...]): runs of equal nonzero values."""
    terms = []
    for s in range(len(bt) - m):
        runs: list[tuple[float, int, int]] = []
        for j, row in enumerate(bt):
            value = row[m + s]
            if value and runs and runs[-1][0] == value and runs[-1][2] == j:
                runs[-1] = (value, runs[-1][1], j + 1)
            elif value:
                runs.append((value, j, j + 1))
        terms.append((s, runs))
    return terms


def _add_shifted(xp: Any, out: Any, src: Any, runs: list[tuple[float, int, int]],
                 tmp: Any) -> None:
    """out[first:last] += value * src for every run; ``src`` broadcasts over the run rows
    (strided sources are copied once into ``tmp`` when several rows read them)."""
    if (len(runs) > 1 or runs[0][2] - runs[0][1] > 1) and src.strides[-1] != src.itemsize:
        tmp = tmp[: src.size].reshape(src.shape)
        tmp[...] = src
        src = tmp
    for value, first, last in runs:
        part = out[first:last]
        if value == 1:
            part += src
        elif value == -1:
            part -= src
        else:
            part += value * src


def _input_transform(xp: Any, terms: Any, b_t: Any, pad: Any, t1: Any, tmp: Any,
                     out: Any) -> None:
    """out (a_j, a_i, b, C, P, Q) = B^T d B of every tile d of the padded images ``pad``.

    ``pad`` (m, b, C, P, m Q) holds pixel row m P + r of every image at [r, :, :, P]:
    rows grouped in blocks of m, and each row in blocks of m pixels. Tile (p, q) spans
    rows m p + i and columns m q + l (i, l < a = m + 2): blocks p and p + 1 along each
    axis. So each axis is one matmul with B^T[:, :m] over the m entries of a block,
    plus adds of the next block's first a - m entries with the (+-1) entries of
    B^T[:, m:], read one block further on. Nothing gathers overlapping tiles, and
    the adds of the row axis run over contiguous memory. The last block along each
    axis has no successor in its row (or column): tiles p = P - 1 and q = Q - 1 are
    junk, to be ignored.
    """
    a, m = b_t.shape[0], pad.shape[0]
    blocks = pad.reshape(-1, m)  # (m*b*C*P*Q, m): m pixels of one row each
    nb = blocks.shape[0]
    # t1 (a_j, m_r, b*C*P*Q) = B^T[:, :m] @ block^T, + the next block's entries   columns
    t1 = t1[: a * nb].reshape(a, nb)
    xp.matmul(b_t[:, :m], blocks.T, out=t1)
    for s, runs in terms:
        _add_shifted(xp, t1[:, :-1], blocks[1:, s], runs, tmp)
    rows = nb // m
    q = pad.shape[-1] // m
    t3 = t1.reshape(a, m, rows)
    # out (a_j, a_i, b*C*P*Q) = B^T[:, :m] @ t1[j], + the next row block's      rows
    v = out.reshape(a, a, rows)
    xp.matmul(b_t[:, :m], t3, out=v)
    for s, runs in terms:
        _add_shifted(xp, v.transpose(1, 0, 2)[:, :, :-q], t3[:, s, q:], runs, tmp)


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


def _fill_rows(xp: Any, dst: Any, x: Any, first: int, top: int, left: int) -> None:
    """dst (m, b, C, P, W) <- zero-padded rows m (first + P) + r of ``x`` (b, C, h, w) at
    [r, :, :, P, left:left + w]; rows outside ``x`` become zero (its columns outside
    [left, left + w) are zero already)."""
    m, _, _, blocks, _ = dst.shape
    h, w = x.shape[2:]
    for r in range(m):
        row0 = m * first + r - top  # x row of block 0; block P holds x row row0 + m P
        lo = max(0, -(row0 // m))  # the first block inside x
        hi = min(blocks, -(-(h - row0) // m))  # one past the last
        part = dst[r]
        if lo >= hi:
            part[:, :, :, left: left + w] = 0
            continue
        part[:, :, :lo, left: left + w] = 0
        part[:, :, hi:, left: left + w] = 0
        part[:, :, lo:hi, left: left + w] = x[:, :, row0 + m * lo: row0 + m * (hi - 1) + 1: m]


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
    # Blocked input transform (see _input_transform) where tile rows are long enough
    # for its junk tile column to cost less than gathering the overlapping tiles.
    blocked = tw >= BLOCKED_MIN_TILES
    q = tw + blocked  # tiles per row as laid out, the junk one included
    extra = int(blocked)  # junk tile rows per chunk

    # U (a_i, a_j, g, O/g, C/g) = (G kron G) (a^2, 9) @ vec(g) (9, O*C/g): one matmul for
    # all filters (a batch of per-filter G g G^T products cost more than the whole transform)
    gmat = _matrix(xp, gm, dtype)
    u = (xp.kron(gmat, gmat) @ weight.reshape(o * cg, 9).T).reshape(a, a, g, og, cg)
    u_ji = u.transpose(1, 0, 2, 3, 4)[:, :, None]  # (a_j, a_i, 1, g, O/g, C/g), as V is laid out
    b_t = _matrix(xp, bt, dtype)  # (a, a)
    a_t = _matrix(xp, at, dtype)  # (m, a)
    terms = _shift_terms(bt, m)

    # Workspace per tile row of one image (elements): the padded rows, and a strided
    # copy (kept apart: the pad columns stay zero) | the gathered tiles, then M | the
    # first-axis transform's, then the output transform's | V, then the output tiles.
    # A blocked chunk of T tile rows holds T + 1 of them (the last one's tiles are junk);
    # a gathered one holds 2 more pixel rows.
    width = m * q + 2 * (1 - extra)
    regions = ((m * c * width + (m * c * q if blocked else 0)),
               max(a2 * o * q, 0 if blocked else a2 * c * q),
               max(a * (m if blocked else a) * c * q, m * a * o * q),
               max(a2 * c * q, m * m * o * q))
    per_row = sum(regions) * dtype.itemsize
    images, rows = workspace.row_chunks(per_row, th, n, "one tile row (Winograd)",
                                        target=TARGET_CHUNK_BYTES)
    items = [(start, min(n, start + images), p, min(th, p + rows))
             for start in range(0, n, images) for p in range(0, th, rows)]
    capacity = [images * (rows + 1) * size for size in regions]
    per_worker = sum(capacity) * dtype.itemsize
    bias_tile = None if bias is None else bias.reshape(g, og, 1)
    ones = _ones_column(at)

    def run(share: list[tuple[int, int, int, int]]) -> None:
        flat = [xp.zeros(capacity[0], dtype=dtype)]  # the pad columns stay zero
        flat += [xp.empty(size, dtype=dtype) for size in capacity[1:]]
        layout = None
        for start, stop, p0, p1 in share:
            b, nt = stop - start, p1 - p0
            blocks = nt + extra
            # pad (k, b, C, R, W): pixel row k (first + R) + r of each image at [r, ..., R, :]
            shape = (m, b, c, blocks, m * q) if blocked else (1, b, c, m * nt + 2, width)
            pad = flat[0][: math.prod(shape)].reshape(shape)
            if layout != shape:  # another layout: its pad columns are not zero yet
                if layout is not None:
                    pad[...] = 0
                layout = shape
            _fill_rows(xp, pad, x[start:stop], p0 if blocked else m * p0, top, left)
            cells = b * c * blocks * q
            v = flat[3][: a2 * cells].reshape(a, a, cells)
            tiles = nt * q
            mm = flat[1][: a2 * b * o * tiles]
            if blocked:
                # V (a_j, a_i, b, C, blocks, Q) = B^T d B for every tile d
                _input_transform(xp, terms, b_t, pad, flat[2], flat[0][pad.size:], v)
                # M[i, j] (b, g, O/g, T) = U[i, j] (g, O/g, C/g) @ V[j, i] (b, g, C/g, T),
                # T the valid tile rows' tiles: one matmul per image, of long rows
                mm = mm.reshape(a, a, b, g, og, tiles)
                v6 = v.reshape(a, a, b, g, cg, blocks * q)[..., :tiles]
                xp.matmul(u_ji, v6, out=mm.transpose(1, 0, 2, 3, 4, 5))
            else:
                # d[j, i, c, b, p, q] = pad[b, c, m p + i, m q + j]: the overlapping tiles
                sb, sc, sh, sw = pad.strides[1:]
                d = flat[1][: a2 * cells].reshape(a, a, c, b, nt, tw)
                d[...] = backend.as_strided_view(
                    pad[0], (b, c, nt, tw, a, a), (sb, sc, m * sh, m * sw, sh, sw)
                ).transpose(5, 4, 1, 0, 2, 3)
                # V (a_j, a_i, C, b, T): B^T on the first tile axis, then the second
                t = flat[2][: a2 * cells].reshape(a, a * cells)
                xp.matmul(b_t, d.reshape(a, a * cells), out=t)
                xp.matmul(b_t, t.reshape(a, a, cells), out=v)
                # M[i, j] (g, O/g, bT) = U[i, j] (g, O/g, C/g) @ V[j, i] (g, C/g, bT): the
                # images side by side, short tile rows make one long matmul
                mm = mm.reshape(a, a, g, og, b * tiles)
                xp.matmul(u_ji[:, :, 0], v.reshape(a, a, g, cg, b * tiles),
                          out=mm.transpose(1, 0, 2, 3, 4))
            if bias_tile is not None:
                mm[ones, ones] += bias_tile  # 1/a^2 of the data instead of all of y
            # Y (m_r, N, m_s) = A^T M A, N = (b, O, T) blocked or (O, b, T) gathered
            cols = b * o * tiles
            yt = flat[3][: m * m * cols].reshape(m * m, cols)
            _output_transform(xp, a_t, mm.reshape(a, a, cols), flat[2][: m * a * cols], yt)
            y5 = yt.reshape((m, b, o, nt, q * m) if blocked else (m, o, b, nt, q * m))
            if not blocked:
                y5 = y5.transpose(0, 2, 1, 3, 4)
            # y[b, o, m p + r, m q + s] = Y[r, b, o, p, q, s], cropped to (Ho, Wo): whole
            # tile rows in one copy that writes y in order (m rows of y are contiguous)
            full = min(p1, ho // m) - p0
            if full > 0:
                out = y[start:stop, :, m * p0: m * (p0 + full)].reshape(b, o, full, m, wo)
                out[...] = y5[:, :, :, :full, :wo].transpose(1, 2, 3, 0, 4)
            if p0 + full < p1:  # the last tile row, cropped
                out = y[start:stop, :, m * (p0 + full):]
                for r in range(out.shape[2]):
                    out[:, :, r] = y5[r, :, :, full, :wo]

    threads.run_shares(run, items, per_worker, x)
    return y


__all__ = ["supported", "conv2d", "DEFAULT_TILE"]
