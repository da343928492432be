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
from collections.abc import Iterable
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


class _Tiling:
    """How one call cuts its images into m x m output tiles, and the input transform of
    a chunk of them (images, or tile rows of one image), shared by the forward and the
    weight gradient. ``regions`` are the scratch elements per tile row of one image
    that a worker needs; ``extra`` adds the caller's own needs to each region."""

    def __init__(self, xp: Any, x: Any, pads: tuple[tuple[int, int], ...], m: int,
                 extra: tuple[int, int, int, int]):
        self.xp, self.x, self.m = xp, x, m
        self.a = a = m + 2
        n, c, h, w = x.shape
        (self.top, bottom), (self.left, right) = pads
        self.ho, self.wo = h + self.top + bottom - 2, w + self.left + right - 2
        self.th, self.tw = -(-self.ho // m), -(-self.wo // m)  # tiles per axis (ceil)
        # Blocked input transform (see _input_transform) where tile rows are long enough
        # for its junk tile column to cost less than gathering the overlapping tiles.
        self.blocked = self.tw >= BLOCKED_MIN_TILES
        self.q = q = self.tw + self.blocked  # tiles per row as laid out, junk included
        self.junk_rows = int(self.blocked)  # per chunk
        bt, _, _ = _MATRICES[m]
        self.b_t = _matrix(xp, bt, x.dtype)
        self.terms = _shift_terms(bt, m)
        # Per tile row of one image (elements): the padded rows and a strided copy (kept
        # apart: the pad columns stay zero) | the gathered tiles | the first-axis
        # transform's | V. A blocked chunk of T tile rows holds T + 1 of them (the last
        # one's tiles are junk); a gathered one holds 2 more pixel rows.
        self.width = m * q + 2 * (1 - self.blocked)
        base = (m * c * self.width + (m * c * q if self.blocked else 0),
                0 if self.blocked else a * a * c * q,
                a * (m if self.blocked else a) * c * q, a * a * c * q)
        self.regions = tuple(max(r, e) for r, e in zip(base, extra))

    def chunks(self, per_row_bytes: int) -> tuple[int, int, list[tuple[int, int, int, int]]]:
        """(images, tile rows) per chunk and the chunks (start, stop, p0, p1)."""
        n = self.x.shape[0]
        images, rows = workspace.row_chunks(per_row_bytes, self.th, n,
                                            "one tile row (Winograd)", target=TARGET_CHUNK_BYTES)
        items = [(start, min(n, start + images), p, min(self.th, p + rows))
                 for start in range(0, n, images) for p in range(0, self.th, rows)]
        return images, rows, items

    def buffers(self, images: int, rows: int) -> list[Any]:
        """One worker's scratch regions (the first zero-filled: its pad columns stay so)."""
        sizes = [images * (rows + 1) * size for size in self.regions]
        dtype = self.x.dtype
        return [self.xp.zeros(sizes[0], dtype=dtype)] + [self.xp.empty(size, dtype=dtype)
                                                          for size in sizes[1:]]

    def transform(self, bufs: list[Any], state: dict[str, Any], start: int, stop: int,
                  p0: int, p1: int) -> Any:
        """V = B^T d B of the tiles of x[start:stop], tile rows [p0, p1), in bufs[3]:
        (a_j, a_i, b, C, (T + 1) * Q) blocked, (a_j, a_i, C, b, T * tw) gathered."""
        xp, m, a, q = self.xp, self.m, self.a, self.q
        b, nt = stop - start, p1 - p0
        c = self.x.shape[1]
        blocks = nt + self.junk_rows
        # pad (k, b, C, R, W): pixel row k (first + R) + r of each image at [r, ..., R, :]
        shape = (m, b, c, blocks, m * q) if self.blocked else (1, b, c, m * nt + 2, self.width)
        pad = bufs[0][: math.prod(shape)].reshape(shape)
        if state.get("layout") != shape:  # another layout: its pad columns are not zero yet
            if "layout" in state:
                pad[...] = 0
            state["layout"] = shape
        _fill_rows(xp, pad, self.x[start:stop], p0 if self.blocked else m * p0, self.top,
                   self.left)
        cells = b * c * blocks * q
        v = bufs[3][: a * a * cells].reshape(a, a, cells)
        if self.blocked:
            _input_transform(xp, self.terms, self.b_t, pad, bufs[2], bufs[0][pad.size:], v)
            return v
        # d[j, i, c, b, p, q] = pad[b, c, m p + i, m q + j]: the overlapping tiles
        sb, sc, sh, sw = pad.strides[1:]
        d = bufs[1][: a * a * cells].reshape(a, a, c, b, nt, q)
        d[...] = backend.as_strided_view(
            pad[0], (b, c, nt, q, a, a), (sb, sc, m * sh, m * sw, sh, sw)
        ).transpose(5, 4, 1, 0, 2, 3)
        # B^T on the first tile axis, then on the second
        t = bufs[2][: a * a * cells].reshape(a, a * cells)
        xp.matmul(self.b_t, d.reshape(a, a * cells), out=t)
        xp.matmul(self.b_t, t.reshape(a, a, cells), out=v)
        return v


def _weight_transform(xp: Any, weight: Any, m: int) -> Any:
    """U (a_j, a_i, 1, g-less O, C/g) = G g G^T for every 3x3 filter, as V is laid out.

    One matmul for all filters, (G kron G) (a^2, 9) @ vec(g) (9, O*C/g): a batch of
    per-filter G g G^T products cost more than the whole transform (measured).
    """
    o, cg = weight.shape[:2]
    a = m + 2
    gmat = _matrix(xp, _MATRICES[m][1], weight.dtype)
    u = (xp.kron(gmat, gmat) @ weight.reshape(o * cg, 9).T).reshape(a, a, o, cg)
    return u.transpose(1, 0, 2, 3)


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
    n, c = x.shape[:2]
    o, g = weight.shape[0], groups
    cg, og = c // g, o // g
    m = tile
    a = m + 2
    a2 = a * a
    q_max = -(-(x.shape[3] + sum(pads[1]) - 2) // m) + 1
    # the contraction's M | the output transform's first axis | the output tiles
    tiling = _Tiling(xp, x, pads, m, (0, a2 * o * q_max, m * a * o * q_max, m * m * o * q_max))
    ho, wo, q, blocked = tiling.ho, tiling.wo, tiling.q, tiling.blocked
    y = xp.empty((n, o, ho, wo), dtype=x.dtype)
    if n == 0 or ho <= 0 or wo <= 0:
        return y
    images, rows, items = tiling.chunks(sum(tiling.regions) * x.dtype.itemsize)
    u = _weight_transform(xp, weight, m).reshape(a, a, 1, g, og, cg)
    a_t = _matrix(xp, _MATRICES[m][2], x.dtype)  # (m, a)
    bias_tile = None if bias is None else bias.reshape(g, og, 1)
    ones = _ones_column(_MATRICES[m][2])

    def run(share: list[tuple[int, int, int, int]]) -> None:
        bufs = tiling.buffers(images, rows)
        state: dict[str, Any] = {}
        for start, stop, p0, p1 in share:
            b, nt = stop - start, p1 - p0
            v = tiling.transform(bufs, state, start, stop, p0, p1)
            tiles = nt * q
            mm = bufs[1][: a2 * b * o * tiles]
            if blocked:
                # M[i, j] (b, g, O/g, T) = U[i, j] (g, O/g, C/g) @ V[j, i] (b, g, C/g, T),
                # T the valid tile rows' tiles: one matmul per image, of long rows
                mm = mm.reshape(a, a, b, g, og, tiles)
                v6 = v.reshape(a, a, b, g, cg, (nt + 1) * q)[..., :tiles]
                xp.matmul(u, v6, out=mm.transpose(1, 0, 2, 3, 4, 5))
            else:
                # M[i, j] (g, O/g, bT) = U[i, j] (g, O/g, C/g) @ V[j, i] (g, C/g, bT): the
                # images side by side, short tile rows make one long matmul
                mm = mm.reshape(a, a, g, og, b * tiles)
                xp.matmul(u[:, :, 0], v.reshape(a, a, g, cg, b * tiles),
                          out=mm.transpose(1, 0, 2, 3, 4))
            if bias_tile is not None:
                mm[ones, ones] += bias_tile  # 1/a^2 of the data instead of all of y
            # Y (m_r, N, m_s) = A^T M A, N = (b, O, T) blocked or (O, b, T) gathered
            cols = b * o * tiles
            yt = bufs[3][: m * m * cols].reshape(m * m, cols)
            _output_transform(xp, a_t, mm.reshape(a, a, cols), bufs[2][: m * a * cols], yt)
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

    per_worker = images * (rows + 1) * sum(tiling.regions) * x.dtype.itemsize
    threads.run_shares(run, items, per_worker, x, key=lambda item: item[:2])
    return y


def grad_weight(
    grad_output: Any, x: Any, pads: tuple[tuple[int, int], ...], groups: int,
    tile: int = DEFAULT_TILE,
) -> Any:
    """gW (O, C/g, 3, 3) of y = conv2d(x, W, stride 1, zero padding ``pads``), given gy.

    The transpose of the forward's algorithm, F(3 x 3, m x m): for one tile d of x
    and the m x m tile e of gy over the outputs that d feeds, the tile's share of
    the weight gradient is (by the transposition principle: <gy, Y(g, d)> is one
    trilinear form in gy, g and d)

        dW = G^T [ (A e A^T) * (B^T d B) ] G             (* elementwise)

    so the sum over tiles and images is a^2 matmuls (O, tiles) @ (tiles, C) in the
    transform domain, 4x fewer flops than im2col's for m = 4, and the input
    transform is the forward's. ``x`` must already be conjugated for complex
    adjoints (only real dtypes take this path). Junk tiles of the blocked layout
    meet zeros of gy, so a non-finite input may spread NaN to more entries than
    im2col would.
    """
    xp = backend.get_array_module(grad_output, x)
    gy = grad_output
    n, c = x.shape[:2]
    o, g = gy.shape[1], groups
    cg, og = c // g, o // g
    m = tile
    a = m + 2
    a2 = a * a
    dtype = x.dtype
    q_max = -(-gy.shape[3] // m) + 1
    # gy's padded tile rows | A e A^T | its first-axis transform
    tiling = _Tiling(xp, x, pads, m, (0, 0, 0, 0))
    gy_regions = (m * m * o * q_max, a2 * o * q_max, a * m * o * q_max)
    q, blocked, ho, wo = tiling.q, tiling.blocked, tiling.ho, tiling.wo
    assert (ho, wo) == tuple(gy.shape[2:])
    per_row = (sum(tiling.regions) + sum(gy_regions)) * dtype.itemsize
    images, rows, items = tiling.chunks(per_row)
    a_mat = _matrix(xp, _MATRICES[m][2], dtype).T  # A (a, m)
    g_t = _matrix(xp, _MATRICES[m][1], dtype).T  # G^T (3, a)
    grad = xp.zeros((3, 3, o * cg), dtype=dtype)  # gW[o, c, ki, kj] at [kj, ki, (o, c)]
    lanes = threads.lanes_of(items, grad.nbytes)
    partials: list[Any] = [None] * len(lanes)

    def run(indices: Iterable[int]) -> None:
        bufs = tiling.buffers(images, rows)
        gbuf = xp.zeros(images * rows * gy_regions[0], dtype=dtype)  # zero past gy's edges
        hat_buf = xp.empty(images * rows * gy_regions[1], dtype=dtype)
        tmp_buf = xp.empty(images * rows * max(gy_regions[2], m * o * q_max), dtype=dtype)
        state: dict[str, Any] = {}
        acc = xp.empty((a, a, g, og, cg), dtype=dtype)  # S[j, i] = sum (A e A^T) (B^T d B)^T
        part = xp.empty((a, a, g, og, cg), dtype=dtype)
        for index in indices:
            acc[...] = 0
            for start, stop, p0, p1 in lanes[index]:
                b, nt = stop - start, p1 - p0
                v = tiling.transform(bufs, state, start, stop, p0, p1)
                tiles = nt * q
                # e[r, b, o, p, :] = gy[b, o, m (p0 + p) + r, :wo], zero past gy's edges and
                # in the junk tile column, laid out like V's tiles
                lead = (b, o) if blocked else (o, b)
                e = gbuf[: m * b * o * nt * m * q].reshape((m,) + lead + (nt, m * q))
                if state.get("gy_layout") != e.shape:
                    e[...] = 0
                    state["gy_layout"] = e.shape
                _fill_rows(xp, e if blocked else e.transpose(0, 2, 1, 3, 4),
                           gy[start:stop], p0, 0, 0)
                # hat (a_j, a_i, ..tiles) = A e A^T: along each row's blocks, then rows
                cells = b * o * tiles
                t1 = tmp_buf[: a * m * cells].reshape(a, m * cells)
                xp.matmul(a_mat, e.reshape(-1, m).T, out=t1)
                hat = hat_buf[: a2 * cells].reshape(a, a, cells)
                xp.matmul(a_mat, t1.reshape(a, m, cells), out=hat)
                # S[j, i] (g, O/g, C/g) += hat[j, i] (g, O/g, T) @ V[j, i]^T (g, T, C/g)
                if blocked:
                    hat6 = hat.reshape(a, a, b, g, og, tiles)
                    v6 = v.reshape(a, a, b, g, cg, (nt + 1) * q)[..., :tiles]
                    for i in range(b):
                        xp.matmul(hat6[:, :, i], v6[:, :, i].transpose(0, 1, 2, 4, 3), out=part)
                        acc += part
                else:
                    xp.matmul(hat.reshape(a, a, g, og, b * tiles),
                              v.reshape(a, a, g, cg, b * tiles).transpose(0, 1, 2, 4, 3),
                              out=part)
                    acc += part
            # this lane's gW = G^T S G (linear, so the lanes' sum is the whole one):
            # t[kj, i] = sum_j G^T[kj, j] S[j, i], then [kj, ki] = sum_i G^T[ki, i] t[kj, i]
            flat_acc = acc.reshape(a, a * o * cg)
            t = xp.matmul(g_t, flat_acc).reshape(3, a, o * cg)
            partials[index] = xp.matmul(g_t, t)

    per_worker = images * (rows + 1) * (sum(tiling.regions) + sum(gy_regions)) * dtype.itemsize
    threads.run_lanes(run, len(lanes), per_worker, gy, x)
    threads.sum_lanes(grad, partials)
    # grad[kj, ki, (g, o, c)] -> (O, C/g, 3 (ki), 3 (kj))
    return grad.reshape(3, 3, o, cg).transpose(2, 3, 1, 0)


__all__ = ["supported", "conv2d", "grad_weight", "DEFAULT_TILE"]
