"""The Winograd path: F(m x m, 3 x 3) minimal filtering for 2-d 3x3 stride-1 convolutions.

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

(the Kronecker products of the tiles are applied one tile axis at a time: P X P^T
is two matmuls with P, at a fraction of the flops of one with P kron P).

The contraction costs 2 a^2 O C per m^2 outputs instead of 18 O C for
im2col: 2.25x fewer for m = 2, 4x fewer for m = 4. For m = 2 the input and
output transforms have entries 0, +-1 (exact), the weight transform +-1/2.

The three maps:

forward
    the tiles of chunks of images (or of tile rows of one image) through
    :func:`_forward_chunk` on :func:`npconv.executor.map_chunks`.
grad weight
    the transposed algorithm F(3 x 3, m x m) (:func:`grad_weight`): lanes of
    chunks summed in the transform domain by :func:`_grad_weight_chunk` on
    :func:`npconv.executor.reduce_chunks`, each lane's sum finished by G^T S G.
grad input
    of a 3x3 stride-1 convolution it is itself such a convolution: of grad_output,
    padded by 2 - p, with the weight flipped and its two channel axes swapped
    (:func:`npconv.paths._common.grad_input_by_forward`).

:func:`forward`, :func:`backward` and :func:`grad_weight` take two keywords
beyond the path interface, for tests and experiments: ``tile`` (m, 2 or 4;
default :data:`DEFAULT_TILE`) and ``blocked`` (the input transform's layout:
True blocked, False gathered tiles, None decided by :data:`BLOCKED_MIN_TILES`),
e.g. ``forward(problem, x, w, b, tile=2, blocked=False)``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from .. import backend, executor, scratch, workspace
from ..plan import MAPS, Problem, full_correlation
from . import _common
from . import winograd_transforms as wt

# m of the F(m x m, 3 x 3) tiles: m = 4 needs 4x fewer contraction flops than im2col,
# m = 2 only 2.25x, for larger transform entries (up to 5 in B^T, 1/24 in G: float32
# results stay within a few times torch's own float32 error, measured on N16 C64 56x56).
DEFAULT_TILE = 4
# Buffer bytes per chunk (per host thread): larger than im2col's, because the 36
# matmuls of a chunk have one column per tile and smaller matmuls run far below
# peak (measured on S1 of the benchmark: 2 MiB 1.55x torch, 8 MiB 1.40x, 16 MiB 1.61x).
TARGET_CHUNK_BYTES = 8 * 2**20
# Fewest tiles per tile row for the blocked input transform, which computes one junk
# tile per row (measured against gathering the tiles: see wt.input_transform).
BLOCKED_MIN_TILES = 6

_NEEDS = "a 2-d 3x3 kernel with stride 1, dilation 1, zero padding and a float32/float64 dtype"


# --------------------------------------------------------------------------- requires


def requires(problem: Problem, op: str) -> str | None:
    """None if this path computes ``op`` for ``problem``, else what it needs.

    Every map needs a 2-d 3x3 kernel, stride 1, dilation 1, zero padding and a
    real float32/float64 dtype; grad input also needs the stride-1 adjoint
    (:func:`npconv.plan.full_correlation`): padding at most 2 on each side.
    """
    if op not in MAPS:
        raise ValueError(f"op must be one of {MAPS}, got {op!r}")
    g = problem.geometry
    dtype = backend.numpy_dtype(problem.dtype)
    if not (g.kernel == (3, 3) and g.stride == (1, 1) and g.dilation == (1, 1)
            and g.zero_padded and dtype.char in "fd"):  # float32, float64
        return (f"{_NEEDS}; got kernel {g.kernel}, stride {g.stride}, dilation {g.dilation}, "
                f"padding {g.pads} in mode {g.padding_mode!r}, dtype {dtype.name}")
    if op == "grad_input" and full_correlation(g) is None:
        return ("padding of at most 2 on each side and no input beyond the last window (grad "
                "input is a Winograd convolution of grad_output padded 2 - padding); got "
                f"padding {g.pads}, input size {g.in_size}, output size {g.out_size}")
    return None


def _check(problem: Problem, op: str, tile: int) -> None:
    need = requires(problem, op)
    if need is not None:
        raise ValueError(f"the winograd path cannot compute the {op.replace('_', ' ')} here: "
                         f"it needs {need}")
    if tile not in wt.MATRICES:
        raise ValueError(f"tile must be one of {tuple(wt.MATRICES)}, got {tile!r}")


# --------------------------------------------------------------------------- tiling


@dataclass(frozen=True)
class _Tiling:
    """How one call cuts its images (b, C, h, w) into m x m output tiles.

    ``regions`` are the scratch elements per tile row of one image that a worker
    needs: the padded rows (and the blocked transform's strided copies) | the
    gathered tiles or M | the first-axis transforms | V or the output tiles.
    """

    m: int
    a: int
    top: int
    left: int
    ho: int
    wo: int
    th: int  # tile rows (ceil)
    tw: int  # tiles per row (ceil)
    blocked: bool
    q: int  # tiles per row as laid out, junk included
    width: int  # pixels per padded row as laid out
    regions: tuple[int, int, int, int]


def _tiling(x_shape: tuple[int, ...], pads: tuple[tuple[int, int], ...], m: int,
            extra: tuple[int, int, int, int], blocked: bool | None) -> _Tiling:
    """The tiling of images ``x_shape`` (N, C, h, w), ``extra`` added to each region."""
    c, h, w = x_shape[1:]
    (top, bottom), (left, right) = pads
    a = m + 2
    ho, wo = h + top + bottom - 2, w + left + right - 2
    th, tw = -(-ho // m), -(-wo // m)
    if blocked is None:
        # Blocked input transform (see wt.input_transform) where tile rows are long enough
        # for its junk tile column to cost less than gathering the overlapping tiles.
        blocked = tw >= BLOCKED_MIN_TILES
    q = tw + blocked
    # A blocked chunk of T tile rows holds T + 1 of them (the last one's tiles are
    # junk); a gathered one holds 2 more pixel rows. The padded rows and their strided
    # copy are kept apart: the pad columns stay zero.
    width = m * q + 2 * (1 - blocked)
    base = (m * c * width + (m * c * q if blocked else 0),
            0 if blocked else a * a * c * q,
            a * (m if blocked else a) * c * q, a * a * c * q)
    regions = (max(base[0], extra[0]), max(base[1], extra[1]), max(base[2], extra[2]),
               max(base[3], extra[3]))
    return _Tiling(m, a, top, left, ho, wo, th, tw, blocked, q, width, regions)


def _chunks(t: _Tiling, n: int,
            per_row_bytes: int) -> tuple[int, int, list[tuple[int, int, int, int]]]:
    """(images, tile rows) per chunk and the chunks (start, stop, p0, p1): the row blocks
    of one image are adjacent, so threads taking items in order share out whole images."""
    images, rows = workspace.row_chunks(per_row_bytes, t.th, n, "one tile row (Winograd)",
                                        target=TARGET_CHUNK_BYTES)
    items = [(start, min(n, start + images), p, min(t.th, p + rows))
             for start in range(0, n, images) for p in range(0, t.th, rows)]
    return images, rows, items


@dataclass
class _Scratch:
    """One worker's buffers: ``bufs`` the tiling's regions (bufs[0] zero-filled: its pad
    columns stay so), ``extra`` a caller's own, ``state`` what bufs hold: 'layout' the
    shape of the padded rows last filled (another shape must zero its pad columns first),
    'gy_layout' the same for grad weight's gy tiles."""

    bufs: list[Any]
    extra: list[Any]
    state: dict[str, Any]


def _make_scratch(xp: Any, dtype: Any, t: _Tiling, images: int, rows: int,
                  zeros: tuple[int, ...] = (), empties: tuple[int, ...] = ()) -> _Scratch:
    """A worker's scratch: the tiling's regions for chunks of ``images`` x ``rows`` tile
    rows, then zero-filled buffers of ``zeros`` and empty ones of ``empties`` elements."""
    sizes = [images * (rows + 1) * size for size in t.regions]
    bufs = [scratch.zeros(xp, (sizes[0],), dtype)] + [scratch.empty(xp, (s,), dtype)
                                                        for s in sizes[1:]]
    extra = [scratch.zeros(xp, (s,), dtype) for s in zeros] + [scratch.empty(xp, (s,), dtype)
                                                               for s in empties]
    return _Scratch(bufs, extra, {})


def _transform(xp: Any, t: _Tiling, k: wt.Constants, s: _Scratch, x: Any,
               start: int, stop: int, p0: int, p1: int) -> Any:
    """V = B^T d B of the tiles of x[start:stop], tile rows [p0, p1), in s.bufs[3]:
    (a_j, a_i, b, C, (T + 1) * Q) blocked, (a_j, a_i, C, b, T * tw) gathered."""
    m, a, q, bufs = t.m, t.a, t.q, s.bufs
    b, nt = stop - start, p1 - p0
    c = x.shape[1]
    blocks = nt + int(t.blocked)
    # pad (k, b, C, R, W): pixel row k (first + R) + r of each image at [r, ..., R, :]
    shape = (m, b, c, blocks, m * q) if t.blocked else (1, b, c, m * nt + 2, t.width)
    pad = bufs[0][: math.prod(shape)].reshape(shape)
    if s.state.get("layout") != shape:  # another layout: its pad columns are not zero yet
        if "layout" in s.state:
            pad[...] = 0
        s.state["layout"] = shape
    wt.fill_rows(pad, x[start:stop], p0 if t.blocked else m * p0, t.top, t.left)
    cells = b * c * blocks * q
    v = bufs[3][: a * a * cells].reshape(a, a, cells)
    if t.blocked:
        wt.input_transform(xp, k, pad, bufs[2], bufs[0][pad.size:], v)
        return v
    # d[j, i, c, b, p, q] = pad[b, c, m p + i, m q + j]: the overlapping tiles
    sb, sc, sh, sw = pad.strides[1:]
    d = bufs[1][: a * a * cells].reshape(a, a, c, b, nt, q)
    d[...] = backend.as_strided_view(
        pad[0], (b, c, nt, q, a, a), (sb, sc, m * sh, m * sw, sh, sw)
    ).transpose(5, 4, 1, 0, 2, 3)
    # t (a_j', a_i*C*b*T) = B^T (a, a) @ d (a_j, ...): the first tile axis, then the second
    tt = bufs[2][: a * a * cells].reshape(a, a * cells)
    _common.matmul(xp, k.b_t, d.reshape(a, a * cells), out=tt)
    # v[j] (a_i', C*b*T) = B^T (a, a) @ t[j] (a_i, C*b*T)
    _common.matmul(xp, k.b_t, tt.reshape(a, a, cells), out=v)
    return v


# --------------------------------------------------------------------------- forward


def _write_tiles(y: Any, y5: Any, start: int, stop: int, p0: int, p1: int, m: int,
                 ho: int, wo: int) -> None:
    """y[b, o, m p + r, m q + s] = Y[r, b, o, p, q, s] for tile rows [p0, p1), cropped to
    (Ho, Wo): whole tile rows in one copy that writes y in order (m rows of y are
    contiguous), the last, cropped tile row row by row."""
    b, o = stop - start, y.shape[1]
    full = min(p1, ho // m) - p0
    if full > 0:
        out = y[start:stop, :, m * p0: m * (p0 + full)].reshape(b, o, full, m, wo)
        out[...] = y5[:, :, :, :full, :wo].transpose(1, 2, 3, 0, 4)
    if p0 + full < p1:
        out = y[start:stop, :, m * (p0 + full):]
        for r in range(out.shape[2]):
            out[:, :, r] = y5[r, :, :, full, :wo]


def _forward_chunk(s: _Scratch, item: tuple[int, int, int, int], xp: Any, t: _Tiling,
                   k: wt.Constants, x: Any, u: Any, bias_tile: Any, y: Any) -> None:
    """y[start:stop] at tile rows [p0, p1) of ``item``: input transform, the a^2
    contractions with U (a, a, 1, g, O/g, C/g), bias, output transform, crop."""
    start, stop, p0, p1 = item
    m, a, q = t.m, t.a, t.q
    _, _, _, g, og, cg = u.shape
    o = g * og
    b, nt = stop - start, p1 - p0
    v = _transform(xp, t, k, s, x, start, stop, p0, p1)
    tiles = nt * q
    mm = s.bufs[1][: a * a * b * o * tiles]
    if t.blocked:
        # M[i, j] (b, g, O/g, T) = U[i, j] (g, O/g, C/g) @ V[j, i] (b, g, C/g, T),
        # T the valid tile rows' tiles: one matmul per image, of long rows
        mm = mm.reshape(a, a, b, g, og, tiles)
        v6 = v.reshape(a, a, b, g, cg, (nt + 1) * q)[..., :tiles]
        _common.matmul(xp, u, v6, out=mm.transpose(1, 0, 2, 3, 4, 5))
    else:
        # M[i, j] (g, O/g, bT) = U[i, j] (g, O/g, C/g) @ V[j, i] (g, C/g, bT): the
        # images side by side, short tile rows make one long matmul
        mm = mm.reshape(a, a, g, og, b * tiles)
        _common.matmul(xp, u[:, :, 0], v.reshape(a, a, g, cg, b * tiles),
                  out=mm.transpose(1, 0, 2, 3, 4))
    if bias_tile is not None:
        mm[k.ones, k.ones] += bias_tile  # 1/a^2 of the data instead of all of y
    # Y (m_r, N, m_s) = A^T M A, N = (b, O, T) blocked or (O, b, T) gathered
    cols = b * o * tiles
    yt = s.bufs[3][: m * m * cols].reshape(m * m, cols)
    wt.output_transform(xp, k.a_t, mm.reshape(a, a, cols), s.bufs[2][: m * a * cols], yt)
    y5 = yt.reshape((m, b, o, nt, q * m) if t.blocked else (m, o, b, nt, q * m))
    if not t.blocked:
        y5 = y5.transpose(0, 2, 1, 3, 4)
    _write_tiles(y, y5, start, stop, p0, p1, m, t.ho, t.wo)


def forward(problem: Problem, x: Any, weight: Any, bias: Any, *, tile: int = DEFAULT_TILE,
            blocked: bool | None = None) -> Any:
    """y (N, O, Ho, Wo) = conv2d(x, weight, stride 1, zero padding) + bias.

    Parameters
    ----------
    problem : Problem
        The call; :func:`requires` must accept its forward.
    x : array (N, C, h, w)
    weight : array (O, C/g, 3, 3)
    bias : array (O,) or None
    tile : {2, 4}
        m of the F(m x m, 3 x 3) tiles.
    blocked : bool or None
        The blocked input transform (True) or gathered tiles (False); None chooses
        by :data:`BLOCKED_MIN_TILES`.

    The batch is walked in chunks of images (or of tile rows of one image) that
    fit the workspace limit, on host threads where the backend has them.

    Raises
    ------
    ValueError
        If the path cannot compute this forward (see :func:`requires`).
    MemoryError
        If one tile row's buffers exceed the workspace limit.
    """
    _check(problem, "forward", tile)
    xp = backend.get_array_module(x, weight)
    n, c, _, w = x.shape
    o, g, dtype = weight.shape[0], problem.groups, x.dtype
    m = tile
    a = m + 2
    pads = problem.geometry.pads
    q_max = -(-(w + sum(pads[1]) - 2) // m) + 1
    # the contraction's M | the output transform's first axis | the output tiles
    t = _tiling(x.shape, pads, m, (0, a * a * o * q_max, m * a * o * q_max, m * m * o * q_max),
                blocked)
    y = xp.empty((n, o, t.ho, t.wo), dtype=dtype)
    if n == 0 or t.ho <= 0 or t.wo <= 0:
        return y
    images, rows, items = _chunks(t, n, sum(t.regions) * dtype.itemsize)
    k = wt.constants(xp, dtype, m)
    u = wt.weight_transform(xp, k, weight).reshape(a, a, 1, g, o // g, c // g)
    bias_tile = None if bias is None else bias.reshape(g, o // g, 1)
    per_worker = images * (rows + 1) * sum(t.regions) * dtype.itemsize
    executor.map_chunks(_forward_chunk, items, xp, t, k, x, u, bias_tile, y,
                        scratch=functools.partial(_make_scratch, xp, dtype, t, images, rows),
                        per_worker_bytes=per_worker, arrays=(x,))
    return y


# --------------------------------------------------------------------------- grad weight


def _gy_tiles(s: _Scratch, t: _Tiling, gy: Any, start: int, stop: int, p0: int,
              p1: int) -> Any:
    """e (m_r, b, O, T, m Q) blocked, (m_r, O, b, T, m Q) gathered: e[r, .., p, :] =
    gy[b, o, m (p0 + p) + r, :wo], zero past gy's edges and in the junk tile column,
    laid out like V's tiles (in s.extra[0], zero-filled when its layout changes)."""
    m, b, o, nt = t.m, stop - start, gy.shape[1], p1 - p0
    lead = (b, o) if t.blocked else (o, b)
    e = s.extra[0][: m * b * o * nt * m * t.q].reshape((m,) + lead + (nt, m * t.q))
    if s.state.get("gy_layout") != e.shape:
        e[...] = 0
        s.state["gy_layout"] = e.shape
    wt.fill_rows(e if t.blocked else e.transpose(0, 2, 1, 3, 4), gy[start:stop], p0, 0, 0)
    return e


def _grad_weight_chunk(s: _Scratch, item: tuple[int, int, int, int], acc: Any, xp: Any,
                       t: _Tiling, k: wt.Constants, x: Any, gy: Any, groups: int) -> Any:
    """acc (a_j, a_i, g, O/g, C/g) += S of ``item``: sum over its tiles of
    (A e A^T) * (B^T d B), transposed; a new array when ``acc`` is None."""
    start, stop, p0, p1 = item
    m, a, q = t.m, t.a, t.q
    b, nt = stop - start, p1 - p0
    o, c = gy.shape[1], x.shape[1]
    og, cg = o // groups, c // groups
    hat_buf, tmp_buf, part = s.extra[1:]
    part = part.reshape(a, a, groups, og, cg)
    v = _transform(xp, t, k, s, x, start, stop, p0, p1)
    e = _gy_tiles(s, t, gy, start, stop, p0, p1)
    tiles = nt * q
    cells = b * o * tiles
    a_mat = k.a_t.T  # A (a, m)
    # t1 (a, m_r*cells) = A (a, m) @ e^T (m, m_r*cells): along each row's blocks
    t1 = tmp_buf[: a * m * cells].reshape(a, m * cells)
    _common.matmul(xp, a_mat, e.reshape(-1, m).T, out=t1)
    # hat[j] (a_i, cells) = A (a, m) @ t1[j] (m, cells): then along the rows
    hat = hat_buf[: a * a * cells].reshape(a, a, cells)
    _common.matmul(xp, a_mat, t1.reshape(a, m, cells), out=hat)
    if acc is None:
        acc = scratch.zeros(xp, (a, a, groups, og, cg), x.dtype)
    # S[j, i] (g, O/g, C/g) += hat[j, i] (g, O/g, T) @ V[j, i]^T (g, T, C/g)
    if t.blocked:
        hat6 = hat.reshape(a, a, b, groups, og, tiles)
        v6 = v.reshape(a, a, b, groups, cg, (nt + 1) * q)[..., :tiles]
        for i in range(b):
            _common.matmul_tall(xp, hat6[:, :, i], v6[:, :, i].transpose(0, 1, 2, 4, 3), out=part)
            acc += part
    else:
        _common.matmul_tall(xp, hat.reshape(a, a, groups, og, b * tiles),
                  v.reshape(a, a, groups, cg, b * tiles).transpose(0, 1, 2, 4, 3), out=part)
        acc += part
    return acc


def _finish_lane(xp: Any, g_t: Any, acc: Any) -> Any:
    """A lane's gW (3 (kj), 3 (ki), O*C/g) = G^T S G (linear: the lanes' sum is the whole)."""
    a = g_t.shape[1]
    # t[kj] (a_i, O*C/g) = G^T (3, a_j) @ S (a_j, a_i*O*C/g)
    tt = _common.matmul(xp, g_t, acc.reshape(a, -1)).reshape(3, a, -1)
    # [kj] (3 (ki), O*C/g) = G^T (3, a_i) @ t[kj] (a_i, O*C/g)
    return _common.matmul(xp, g_t, tt)


def grad_weight(problem: Problem, gy: Any, x: Any, *, tile: int = DEFAULT_TILE,
                blocked: bool | None = None) -> Any:
    """gW (O, C/g, 3, 3) of y = conv2d(x, W, stride 1, zero padding), given gy.

    The transpose of the forward's algorithm, F(3 x 3, m x m): for one tile d of x
    and the m x m tile e of gy over the outputs that d feeds, the tile's share of
    the weight gradient is (by the transposition principle: <gy, Y(g, d)> is one
    trilinear form in gy, g and d)

        dW = G^T [ (A e A^T) * (B^T d B) ] G             (* elementwise)

    so the sum over tiles and images is a^2 matmuls (O, tiles) @ (tiles, C) in the
    transform domain, 4x fewer flops than im2col's for m = 4, and the input
    transform is the forward's. ``x`` is used as given (real dtypes only). Junk
    tiles of the blocked layout meet zeros of gy, so a non-finite input may spread
    NaN to more entries than im2col would. ``tile`` and ``blocked`` as in
    :func:`forward`.
    """
    _check(problem, "grad_weight", tile)
    xp = backend.get_array_module(gy, x)
    n, c = x.shape[:2]
    o, g, dtype = gy.shape[1], problem.groups, x.dtype
    m = tile
    a = m + 2
    grad = xp.zeros((3, 3, o * (c // g)), dtype=dtype)  # gW[o, c, ki, kj] at [kj, ki, (o, c)]
    t = _tiling(x.shape, problem.geometry.pads, m, (0, 0, 0, 0), blocked)
    if n > 0 and t.ho > 0 and t.wo > 0:
        assert (t.ho, t.wo) == tuple(gy.shape[2:])
        q_max = -(-gy.shape[3] // m) + 1
        # gy's padded tile rows | A e A^T | its first-axis transform
        gy_regions = (m * m * o * q_max, a * a * o * q_max, a * m * o * q_max)
        per_row = sum(t.regions) + sum(gy_regions)
        images, rows, items = _chunks(t, n, per_row * dtype.itemsize)
        k = wt.constants(xp, dtype, m)
        size = images * rows
        # extra: gy's tiles (zero past its edges) | A e A^T | its first axis | S's part
        scratch = functools.partial(
            _make_scratch, xp, dtype, t, images, rows, (size * gy_regions[0],),
            (size * gy_regions[1], size * max(gy_regions[2], m * o * q_max),
             a * a * o * (c // g)))
        executor.reduce_chunks(
            _grad_weight_chunk, items, grad, xp, t, k, x, gy, g, scratch=scratch,
            per_worker_bytes=images * (rows + 1) * per_row * dtype.itemsize, arrays=(gy, x),
            finish=functools.partial(_finish_lane, xp, k.g_mat.T))
    # grad[kj, ki, (g, o, c)] -> (O, C/g, 3 (ki), 3 (kj)): a transposed view (copying it
    # cost about 1% of a small call; the caller copies if it needs C order)
    return grad.reshape(3, 3, o, c // g).transpose(2, 3, 1, 0)


# --------------------------------------------------------------------------- backward


def backward(problem: Problem, gy: Any, x: Any, weight: Any, need_input: bool,
             need_weight: bool, *, tile: int = DEFAULT_TILE,
             blocked: bool | None = None) -> tuple[Any, Any]:
    """(gx, gw) of a 3x3 stride-1 convolution; either None when not needed.

    gx (N, C, h, w) is the forward of ``gy`` with the flipped, channel-swapped
    kernel, padded 2 - p (:func:`forward`); gw (O, C/g, 3, 3) the transposed
    algorithm (:func:`grad_weight`). ``tile`` and ``blocked`` as in :func:`forward`.

    Raises
    ------
    ValueError
        If the path cannot compute a needed map (see :func:`requires`).
    MemoryError
        If one tile row's buffers exceed the workspace limit.
    """
    for op, need in (("grad_input", need_input), ("grad_weight", need_weight)):
        if need:
            _check(problem, op, tile)
    xp = backend.get_array_module(gy, x, weight)
    if problem.batch == 0 or problem.geometry.out_volume == 0:
        return _common.empty_grads(problem, xp, need_input, need_weight, tuple(weight.shape))
    gx = (_common.grad_input_by_forward(
        problem, gy, weight, functools.partial(forward, tile=tile, blocked=blocked))
        if need_input else None)
    gw = grad_weight(problem, gy, x, tile=tile, blocked=blocked) if need_weight else None
    return gx, gw


__all__ = ["BLOCKED_MIN_TILES", "DEFAULT_TILE", "TARGET_CHUNK_BYTES", "backward", "forward",
           "grad_weight", "requires"]
