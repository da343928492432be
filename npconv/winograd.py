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

from . import backend, workspace

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
# Fewest tiles (matmul columns) per chunk: smaller matmuls run far below peak.
MIN_COLUMNS = 128


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
    The batch is walked in chunks bounded by the workspace limit.
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
    hb, wb = m * th + 2, m * tw + 2  # padded tile grid; extra rows/cols are zeros
    tiles = th * tw

    # U (a^2, g, O/g, C/g) = (G kron G) (a^2, 9) @ vec(g) (9, O*C/g): one matmul for all
    # filters (a batch of per-filter G g G^T products cost more than the whole transform)
    gmat = _matrix(xp, gm, dtype)
    u = (xp.kron(gmat, gmat) @ weight.reshape(o * cg, 9).T).reshape(a2, g, og, cg)
    b_t = _matrix(xp, bt, dtype)  # (a, a)
    a_t = _matrix(xp, at, dtype)  # (m, a)

    # workspace per image: d, v (a^2 C T each), mm (a^2 O T), tmp (a^2 max(C, O) T), y tiles
    per_tile = a2 * (2 * c + o + max(c, o)) + m * m * o
    per_image = (per_tile * tiles + c * hb * wb) * dtype.itemsize
    chunk = workspace.chunk_length(per_image, n, "one image (Winograd)")
    # At least MIN_COLUMNS tile columns per matmul, where the workspace limit allows.
    fit = max(1, workspace.get_workspace_limit() // per_image)
    chunk = max(chunk, min(n, fit, -(-MIN_COLUMNS // tiles)))
    buf = xp.zeros((chunk, c, hb, wb), dtype=dtype)
    flat = xp.empty(chunk * tiles * per_tile, dtype=dtype)
    bias_tile = None if bias is None else bias.reshape(g, og, 1)
    ones = _ones_column(at)
    sb, sc, sh, sw = buf.strides
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        b = stop - start
        bt_ = b * tiles
        pad = buf[:b]  # its zero border is written once; only the interior changes
        pad[:, :, top: top + h, left: left + w] = x[start:stop]
        sizes = (a2 * c * bt_, a2 * c * bt_, a2 * o * bt_, a2 * max(c, o) * bt_, m * m * o * bt_)
        at_ = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        d = flat[at_[0]:at_[1]].reshape(a, a, c, b, th, tw)
        v = flat[at_[1]:at_[2]].reshape(a2, c * bt_)
        mm = flat[at_[2]:at_[3]].reshape(a2, g, og, bt_)
        tmp = flat[at_[3]:at_[4]]
        yt = flat[at_[4]:at_[5]].reshape(m * m, o * bt_)
        # d[i, j, c, b, p, q] = pad[b, c, m p + i, m q + j]: the overlapping tiles, copied once
        tiles_view = backend.as_strided_view(
            pad, (b, c, th, tw, a, a), (sb, sc, m * sh, m * sw, sh, sw)
        )
        d[...] = tiles_view.transpose(4, 5, 1, 0, 2, 3)
        # V (a, a, C*b*T) = B^T d B, tile by tile
        _both_axes(xp, b_t, d.reshape(a, a, c * bt_), tmp[: a2 * c * bt_], v)
        # M (a^2, g, O/g, bT) = U (a^2, g, O/g, C/g) @ V (a^2, g, C/g, bT)
        xp.matmul(u, v.reshape(a2, g, cg, bt_), out=mm)
        if bias_tile is not None:
            mm[ones * a + ones] += bias_tile  # 1/a^2 of the data instead of all of y
        # Y (m, O*b*T, m) = A^T M A
        _output_transform(xp, a_t, mm.reshape(a, a, o * bt_), tmp[: m * a * o * bt_], yt)
        y5 = yt.reshape(m, o, b, th, tw * m)
        out = y[start:stop]
        # y[b, o, m p + i, m q + j] = Y[i, o, b, p, q, j], cropped to (Ho, Wo)
        for i in range(m):
            nh = (ho - i + m - 1) // m
            out[:, :, i::m, :] = y5[i, :, :, :nh, :wo].transpose(1, 0, 2, 3)
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
