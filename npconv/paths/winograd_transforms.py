"""Transforms of Winograd's minimal filtering F(m x m, 3 x 3) (Lavin & Gray, 2015).

The matrices B^T (a, a), G (a, 3) and A^T (m, a) of F(2x2, 3x3) and F(4x4, 3x3)
(a = m + 2), built once per module, device and dtype (:func:`constants`), and
the transforms that :mod:`npconv.paths.winograd` applies to chunks of tiles:

    V = B^T d B      input tiles          :func:`input_transform` (blocked layout)
    U = G g G^T      weights, once        :func:`weight_transform`
    Y = A^T M A      output tiles         :func:`output_transform`

plus :func:`fill_rows`, which copies rows of an image into the zero-padded,
row-blocked layout the tiles are read from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._common import matmul, matmul_temp

_Matrix = list[list[float]]
# Transform matrices (B^T, G, A^T) of F(2x2, 3x3) and F(4x4, 3x3), Lavin & Gray (2015).
MATRICES: dict[int, tuple[_Matrix, _Matrix, _Matrix]] = {
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


@dataclass(frozen=True)
class Constants:
    """The transform matrices of one tile size in one dtype, on one device."""

    b_t: Any  # B^T (a, a)
    g_mat: Any  # G (a, 3)
    gg: Any  # G kron G (a^2, 9)
    a_t: Any  # A^T (m, a)
    terms: list[tuple[int, list[tuple[float, int, int]]]]  # shift_terms(B^T, m)
    ones: int  # ones_column(A^T)


_CONSTANTS: dict[tuple[str, Any, int, int | None], Constants] = {}


def constants(xp: Any, dtype: Any, m: int) -> Constants:
    """The matrices of F(m x m, 3 x 3), built once per (module, device, dtype, m): a GPU
    would otherwise upload them from Python lists on every call."""
    device = int(xp.cuda.Device().id) if xp.__name__ == "cupy" else None
    key = (xp.__name__, dtype, m, device)  # dtype: a numpy.dtype (CuPy uses NumPy's)
    found = _CONSTANTS.get(key)
    if found is None:
        bt, gm, at = MATRICES[m]
        g_mat = xp.asarray(gm, dtype=dtype)
        found = Constants(xp.asarray(bt, dtype=dtype), g_mat, xp.kron(g_mat, g_mat),
                          xp.asarray(at, dtype=dtype), shift_terms(bt, m), ones_column(at))
        found = _CONSTANTS.setdefault(key, found)
    return found


def shift_terms(bt: _Matrix, m: int) -> list[tuple[int, list[tuple[float, int, int]]]]:
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


def ones_column(p: _Matrix) -> int:
    """Index k with A^T[:, k] all ones: adding b at M[k, k] adds b to every output of a tile."""
    return next(k for k, col in enumerate(zip(*p)) if all(v == 1 for v in col))


# --------------------------------------------------------------------------- transforms


def add_shifted(out: Any, src: Any, runs: list[tuple[float, int, int]], tmp: Any) -> None:
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


def input_transform(xp: Any, k: Constants, pad: Any, t1: Any, tmp: Any, out: Any) -> None:
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
    b_t = k.b_t
    a, m = b_t.shape[0], pad.shape[0]
    blocks = pad.reshape(-1, m)  # (m*b*C*P*Q, m): m pixels of one row each
    nb = blocks.shape[0]
    # t1 (a_j, m_r*b*C*P*Q) = B^T[:, :m] (a, m) @ block^T (m, nb), + the next block's  columns
    t1 = t1[: a * nb].reshape(a, nb)
    matmul(xp, b_t[:, :m], blocks.T, out=t1)
    for s, runs in k.terms:
        add_shifted(t1[:, :-1], blocks[1:, s], runs, tmp)
    rows = nb // m
    q = pad.shape[-1] // m
    t3 = t1.reshape(a, m, rows)
    # out[j] (a_i, b*C*P*Q) = B^T[:, :m] (a, m) @ t1[j] (m, rows), + the next row block's
    v = out.reshape(a, a, rows)
    matmul(xp, b_t[:, :m], t3, out=v)
    for s, runs in k.terms:
        add_shifted(v.transpose(1, 0, 2)[:, :, :-q], t3[:, s, q:], runs, tmp)


def output_transform(xp: Any, a_t: Any, mm: Any, tmp: Any, out: Any) -> None:
    """out (m, N, m) = A^T M A for A^T (m, a), M (a, a, N): the second tile axis lands
    innermost, so each output row block is m*tw contiguous values (a quarter of the
    scattered rows of the (m, m, N) order, on a machine where rows cost more than bytes)."""
    m, a = a_t.shape
    n = mm.shape[-1]
    # tmp (m, a*N) = A^T (m, a) @ M (a, a*N)        first tile axis
    matmul(xp, a_t, mm.reshape(a, a * n), out=tmp.reshape(m, a * n))
    # out[i] (N, m) = tmp[i]^T (N, a) @ A (a, m)     second tile axis, batched over i
    matmul(xp, tmp.reshape(m, a, n).transpose(0, 2, 1), a_t.T, out=out.reshape(m, n, m))


def filter_transforms(xp: Any, k: Constants, weight: Any) -> Any:
    """U (a_i, a_j, O, C/g) = G g G^T for every 3x3 filter g of ``weight`` (O, C/g, 3, 3).

    One matmul for all filters, (G kron G) (a^2, 9) @ vec(g) (9, O*C/g): a batch of
    per-filter G g G^T products cost more than the whole transform (measured).
    """
    o, cg = weight.shape[:2]
    a = k.g_mat.shape[0]
    # u (a*a, O*C/g) = (G kron G) (a^2, 9) @ vec(g)^T (9, O*C/g): vec(G g G^T) per filter
    return matmul_temp(xp, k.gg, weight.reshape(o * cg, 9).T).reshape(a, a, o, cg)


def weight_transform(xp: Any, k: Constants, weight: Any) -> Any:
    """U (a_j, a_i, O, C/g), as V is laid out: :func:`filter_transforms`, its tile
    axes swapped."""
    return filter_transforms(xp, k, weight).transpose(1, 0, 2, 3)


def fill_rows(dst: Any, x: Any, first: int, top: int, left: int) -> None:
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


__all__ = ["MATRICES", "Constants", "add_shifted", "constants", "fill_rows", "input_transform",
           "ones_column", "output_transform", "shift_terms", "weight_transform"]
