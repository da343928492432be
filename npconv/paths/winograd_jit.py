"""Winograd path with compiled transforms, channels last: F(m x m, 3 x 3) for 2-d 3x3 layers.

The :mod:`npconv.paths.winograd` path transforms NCHW tiles with NumPy calls;
on the zoo's layers its transforms and its per-image chunks left it slower than
im2col. This one lays the images out channels last, so that each tile's
transforms are multiply-adds of whole channel vectors, compiled by numba
(:mod:`npconv.paths.winograd_jit_kernels`), and contracts every tile of a chunk
of images at once. With T tiles, a = m + 2 and B^T, G, A^T of F(m x m, 3 x 3):

    forward
        U = (G kron G) vec(w)        (a, a, O, C)  one matmul, (a^2, 9) @ (9, O C)
        V = B^T d_t B                (a, a, T, C)  input_tiles, x channels last
        M = V @ U^T                  (a, a, T, O)  a^2 matmuls, (T, C) @ (C, O)
        y = A^T M_t A + b            (N, Ho, Wo, O) output_tiles, then to NCHW
    grad weight  (y's tiles are linear in U: dL/dU_t = (A e_t A^T) * V_t, e_t gy's tile)
        E = A e_t A^T                (a, a, T, O)  grad_tiles, gy channels last (one E for
                                                   both gradients)
        S = sum over chunks E^T @ V  (a, a, O, C)  a^2 matmuls, (O, T) @ (T, C)
        gW = (G kron G)^T S          (O, C, 3, 3)  one matmul, (O C, a^2) @ (a^2, 9)
    grad input  (the forward's adjoint, from the same E)
        Z = E @ U                    (a, a, T, C)  a^2 matmuls, (T, O) @ (O, C)
        gx += B Z_t B^T              (N, H, W, C)  input_tiles_adjoint: overlapping tiles
                                                   add up, then to NCHW

The contraction costs 2 a^2 O C per m^2 outputs, against 18 O C for im2col: 4x
fewer multiply-adds for m = 4 (the default), 2.25x for m = 2. The transforms'
entries (up to 5 in B^T, 1/24 in G) cost float32 accuracy: errors stay within a
few times those of im2col (tested against the reference with its tolerance).

It takes 2-d 3x3 kernels with stride 1, dilation 1, zero padding (any amount)
and groups=1, in float32 or float64, on NumPy, with numba installed. A call is cut
into chunks of whole images (:data:`TARGET_CHUNK_BYTES` of tiles each) run by the
executor on npconv's threads, the grad-weight sums added in chunk order. Where the
whole batch is one chunk (the zoo's layers) and the map is large enough, it is cut
into ranges of channels instead (:func:`_split`): output channels forward, each
range with its own filter transforms and output tiles; input channels backward,
each with its own grad-input tiles and weight-gradient sums, from one E per thread.
Small calls run as one chunk on the calling thread with the BLAS's threads.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from .. import backend, executor, scratch, workspace
from ..plan import MAPS, Problem
from ._common import empty_grads, map_work, matmul_temp
from .depthwise_jit import compiled_needs
from .winograd_transforms import MATRICES, constants, filter_transforms

DEFAULT_TILE = 4
# Bytes of one chunk's tiles (V and M, or V and E): large enough that the a^2 matmuls
# have hundreds of rows, small enough to stay near the caches.
TARGET_CHUNK_BYTES = 16 * 2**20

# A call whose tiles are one chunk and that has at least SPLIT_MIN_WORK multiply-adds
# is computed in ranges of channels (see :func:`_split`): up to SPLIT_PARTS of them, of
# at least SPLIT_MIN_CHANNELS channels each, multiples of 8 (whole SIMD vectors in the
# transforms' channel loops). The ranges follow from the shapes only, so results do not
# depend on the thread count.
SPLIT_PARTS = 4
SPLIT_MIN_CHANNELS = 32
SPLIT_MIN_WORK = 2**23

_NEEDS = "a 2-d 3x3 kernel with stride 1, dilation 1, zero padding and groups=1"


def requires(problem: Problem, op: str) -> str | None:
    """None if this path computes ``op`` for ``problem``, else what it needs."""
    if op not in MAPS:
        raise ValueError(f"op must be one of {MAPS}, got {op!r}")
    g = problem.geometry
    if not (g.kernel == (3, 3) and g.stride == (1, 1) and g.dilation == (1, 1)
            and g.zero_padded and problem.groups == 1):
        return (f"{_NEEDS}; got kernel {g.kernel}, stride {g.stride}, dilation "
                f"{g.dilation}, padding mode {g.padding_mode!r}, groups {problem.groups}")
    return compiled_needs(problem)


def _check(problem: Problem, op: str, tile: int) -> None:
    need = requires(problem, op)
    if need is not None:
        raise ValueError(f"the winograd_jit path cannot compute the {op.replace('_', ' ')} "
                         f"here: it needs {need}")
    if tile not in MATRICES:
        raise ValueError(f"tile must be one of {tuple(MATRICES)}, got {tile!r}")


@functools.cache
def _kernels() -> Any:
    from . import winograd_jit_kernels

    return winograd_jit_kernels


def tiles(out_size: tuple[int, ...], tile: int = DEFAULT_TILE) -> tuple[int, int]:
    """(tile rows, tiles per row) of an output of ``out_size`` in m x m tiles."""
    return -(-out_size[0] // tile), -(-out_size[1] // tile)


def _image_bytes(c: int, o: int, out_size: tuple[int, ...], itemsize: int,
                 tile: int = DEFAULT_TILE) -> int:
    """Bytes of one image's transformed tiles (V and M, or V and E)."""
    return (tile + 2) ** 2 * math.prod(tiles(out_size, tile)) * (c + o) * itemsize


def fits(problem: Problem) -> bool:
    """Whether one image's tiles fit the workspace limit (else the maps raise
    ``MemoryError``)."""
    g = problem.geometry
    return _image_bytes(problem.in_channels, problem.out_channels, g.out_size,
                        problem.dtype.itemsize) <= workspace.get_workspace_limit()


def _chunks(n: int, per_image_bytes: int) -> list[tuple[int, int]]:
    images = workspace.chunk_length(per_image_bytes, n, "one image (Winograd tiles)",
                                    target=TARGET_CHUNK_BYTES)
    return [(start, min(n, start + images)) for start in range(0, n, images)]


def _split(problem: Problem, channels: int, per_image: int) -> list[tuple[int, int]] | None:
    """Ranges of ``channels`` (output channels forward, input channels backward) that
    the map is computed in, or None: one chunk of images (:func:`_chunks`).

    Each range transforms its own share of the filters, multiplies the tiles of the
    whole batch by it and writes its own outputs; an executor thread transforms the
    tiles once, for its first range. So no thread reads what another wrote, where one
    chunk's two-thread matmuls share their freshly written tiles and filter transforms:
    N4 128@16x16 -> 256 (VGG-11 features.2) took 2.6-2.7 ms as one chunk in normal
    minutes and 4.1-8.1 in slow ones on the 2-core benchmark machine, 2.2-2.4 split
    by output channels when both threads ran (docs/performance.md, nineteenth
    session). Used where the whole batch's tiles are one chunk and the map has
    SPLIT_MIN_WORK multiply-adds."""
    if (problem.multiply_adds < SPLIT_MIN_WORK or channels < 2 * SPLIT_MIN_CHANNELS
            or len(_chunks(problem.batch, per_image)) > 1):
        return None
    parts = min(SPLIT_PARTS, channels // SPLIT_MIN_CHANNELS)
    size = -(-channels // parts)
    size = -(-size // 8) * 8
    return [(start, min(channels, start + size)) for start in range(0, channels, size)]


def _tiles_of(kern: Any, t1: Any, x: Any, top: int, left: int, m: int, th: int, tw: int,
              bt: Any) -> Any:
    """V (a, a, B th tw, C) of the images x (B, C, H, W)."""
    xp, a = backend.get_array_module(x), m + 2
    xt = scratch.copy(xp, x.transpose(0, 2, 3, 1))  # (B, H, W, C)
    v = scratch.empty(xp, (a, a, x.shape[0] * th * tw, x.shape[1]), x.dtype)
    kern.input_tiles(xt, top, left, m, th, tw, bt, v, t1)
    return v


def _grad_tiles_of(kern: Any, r: Any, gy: Any, m: int, th: int, tw: int, at: Any) -> Any:
    """E (a, a, B th tw, O) of grad_output gy (B, O, Ho, Wo)."""
    xp, a = backend.get_array_module(gy), m + 2
    gyt = scratch.copy(xp, gy.transpose(0, 2, 3, 1))  # (B, Ho, Wo, O)
    e = scratch.empty(xp, (a, a, gy.shape[0] * th * tw, gy.shape[1]), gy.dtype)
    kern.grad_tiles(gyt, m, th, tw, at, e, r)
    return e


def _outputs_into(kern: Any, r: Any, mm: Any, m: int, th: int, tw: int, at: Any, bias: Any,
                  y: Any) -> None:
    """y (B, O, Ho, Wo), a view of the result, <- bias + the output tiles of mm."""
    xp = backend.get_array_module(mm)
    yt = scratch.empty(xp, (y.shape[0],) + y.shape[2:] + (y.shape[1],), y.dtype)
    kern.output_tiles(mm, m, th, tw, at, bias, yt, r)  # (B, Ho, Wo, O)
    y[...] = yt.transpose(0, 3, 1, 2)


def _input_grads_into(kern: Any, t1: Any, z: Any, pads: tuple[int, int], m: int, th: int,
                      tw: int, bt: Any, gx: Any) -> None:
    """gx (B, C, H, W), a view of the result, <- the tiles' V gradient z taken back."""
    xp = backend.get_array_module(z)
    gxt = scratch.zeros(xp, (gx.shape[0],) + gx.shape[2:] + (gx.shape[1],), gx.dtype)
    kern.input_tiles_adjoint(z, pads[0], pads[1], m, th, tw, bt, gxt, t1)
    gx[...] = gxt.transpose(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)


def _forward_chunk(held: tuple[Any, Any], item: tuple[int, int], x: Any, u: Any,
                   bias: Any, y: Any, m: int, pads: tuple[int, int], k: Any) -> None:
    """y[start:stop] of the images x[start:stop]: tiles, a^2 matmuls, output tiles."""
    start, stop = item
    xp, kern = backend.get_array_module(x), _kernels()
    th, tw = tiles(y.shape[2:], m)
    v = _tiles_of(kern, held[0], x[start:stop], pads[0], pads[1], m, th, tw, k.b_t)
    # (a, a, T, C) @ (a, a, C, O) -> (a, a, T, O)
    mm = matmul_temp(xp, v, u.transpose(0, 1, 3, 2))
    _outputs_into(kern, held[1], mm, m, th, tw, k.a_t, bias, y[start:stop])


def _forward_part(held: tuple[Any, Any, dict[str, Any]], part: tuple[int, int], x: Any,
                  weight: Any, bias: Any, y: Any, m: int, pads: tuple[int, int],
                  k: Any) -> None:
    """y[:, o0:o1] of every image: the tiles of x (once per thread), the transforms of
    filters o0:o1, a^2 matmuls, output tiles."""
    o0, o1 = part
    xp, kern = backend.get_array_module(x), _kernels()
    th, tw = tiles(y.shape[2:], m)
    if "v" not in held[2]:
        held[2]["v"] = _tiles_of(kern, held[0], x, pads[0], pads[1], m, th, tw, k.b_t)
    u = filter_transforms(xp, k, weight[o0:o1])  # (a, a, Op, C): G w G^T
    # (a, a, T, C) @ (a, a, C, Op) -> (a, a, T, Op)
    mm = matmul_temp(xp, held[2]["v"], u.transpose(0, 1, 3, 2))
    _outputs_into(kern, held[1], mm, m, th, tw, k.a_t, bias[o0:o1], y[:, o0:o1])


def _scratch(xp: Any, dtype: Any, first: tuple[int, ...], second: tuple[int, ...]) -> Any:
    return scratch.empty(xp, first, dtype), scratch.empty(xp, second, dtype)


def _part_scratch(xp: Any, dtype: Any, first: tuple[int, ...],
                  second: tuple[int, ...]) -> tuple[Any, Any, dict[str, Any]]:
    """A thread's buffers for its ranges, and where it keeps the tiles it transformed."""
    return (*_scratch(xp, dtype, first, second), {})


def forward(problem: Problem, x: Any, weight: Any, bias: Any, *,
            tile: int = DEFAULT_TILE) -> Any:
    """y (N, O, Ho, Wo) = conv2d(x, weight, stride 1, zero padding) + bias.

    ``tile`` is m of the F(m x m, 3 x 3) tiles (2 or 4). Raises ``ValueError`` if the
    path cannot compute this forward (see :func:`requires`), ``MemoryError`` if one
    image's tiles exceed the workspace limit.
    """
    _check(problem, "forward", tile)
    xp = backend.get_array_module(x, weight)
    n, c = x.shape[:2]
    o, dtype, m, a = weight.shape[0], x.dtype, tile, tile + 2
    g = problem.geometry
    y = xp.empty((n, o) + g.out_size, dtype=dtype)
    if y.size == 0:
        return y
    k = constants(xp, dtype, m)
    b = xp.zeros(o, dtype=dtype) if bias is None else bias
    per_image = _image_bytes(c, o, g.out_size, dtype.itemsize, m)
    pads, parts = (g.pads[0][0], g.pads[1][0]), _split(problem, o, per_image)
    if parts is not None:
        executor.map_chunks(_forward_part, parts, x, weight, b, y, m, pads, k,
                            scratch=functools.partial(_part_scratch, xp, dtype, (a, a, c),
                                                      (m, a, o)),
                            per_worker_bytes=n * per_image, arrays=(x,),
                            work_bytes=map_work(problem))
        return y
    u = filter_transforms(xp, k, weight)  # (a, a, O, C): G w G^T
    executor.map_chunks(_forward_chunk, _chunks(n, per_image), x, u, b, y, m, pads, k,
                        scratch=functools.partial(_scratch, xp, dtype, (a, a, c), (m, a, o)),
                        per_worker_bytes=2 * per_image, arrays=(x,), work_bytes=n * per_image)
    return y


def _backward_chunk(held: tuple[Any, Any], item: tuple[int, int], acc: Any, gy: Any,
                    x: Any, u: Any, gx: Any, m: int, pads: tuple[int, int], k: Any) -> Any:
    """The images [start, stop): gx[start:stop] (if gx is given) and acc + E^T V (if x is
    given), both from one E."""
    start, stop = item
    xp, kern = backend.get_array_module(gy), _kernels()
    th, tw = tiles(gy.shape[2:], m)
    e = _grad_tiles_of(kern, held[1], gy[start:stop], m, th, tw, k.a_t)  # (a, a, T, O)
    if gx is not None:
        # (a, a, T, O) @ (a, a, O, C) -> (a, a, T, C): the tiles' V gradient
        z = matmul_temp(xp, e, u)
        _input_grads_into(kern, held[0], z, pads, m, th, tw, k.b_t, gx[start:stop])
    if x is None:
        return acc
    v = _tiles_of(kern, held[0], x[start:stop], pads[0], pads[1], m, th, tw, k.b_t)
    # (a, a, O, T) @ (a, a, T, C) -> (a, a, O, C); a partial of one chunk, or the sum
    part = matmul_temp(xp, e.transpose(0, 1, 3, 2), v)
    if acc is None:
        return part
    acc += part
    return acc


def _backward_part(held: tuple[Any, Any, dict[str, Any]], part: tuple[int, int], gy: Any,
                   x: Any, weight: Any, gx: Any, gw: Any, m: int, pads: tuple[int, int],
                   k: Any) -> None:
    """gx[:, c0:c1] (if gx is given) and gw[:, c0:c1] (if gw is given) of the whole batch,
    both from the transform E of grad_output's tiles (made once per thread)."""
    c0, c1 = part
    xp, kern = backend.get_array_module(gy), _kernels()
    th, tw = tiles(gy.shape[2:], m)
    if "e" not in held[2]:
        held[2]["e"] = _grad_tiles_of(kern, held[1], gy, m, th, tw, k.a_t)  # (a, a, T, O)
    e = held[2]["e"]
    if gx is not None:
        u = filter_transforms(xp, k, weight[:, c0:c1])  # (a, a, O, Cp)
        z = matmul_temp(xp, e, u)  # (a, a, T, O) @ (a, a, O, Cp) -> (a, a, T, Cp)
        _input_grads_into(kern, held[0], z, pads, m, th, tw, k.b_t, gx[:, c0:c1])
    if gw is not None:
        v = _tiles_of(kern, held[0], x[:, c0:c1], pads[0], pads[1], m, th, tw, k.b_t)
        # (a, a, O, T) @ (a, a, T, Cp) -> (a, a, O, Cp), then (O, Cp, 3, 3)
        gw[:, c0:c1] = _finish(k.gg, matmul_temp(xp, e.transpose(0, 1, 3, 2), v))


def _grad_input_chunk(held: tuple[Any, Any], item: tuple[int, int], *args: Any) -> None:
    _backward_chunk(held, item, None, *args)


def _finish(gg: Any, s: Any) -> Any:
    """gW (O, C, 3, 3) = (G kron G)^T S of a sum S (a, a, O, C)."""
    o, c = s.shape[2:]
    # (O*C, a*a) @ (a*a, 9) -> (O*C, 9); a temporary: the executor adds it to its total
    return matmul_temp(backend.get_array_module(s), s.reshape(-1, o * c).T, gg).reshape(o, c, 3, 3)


def backward(problem: Problem, gy: Any, x: Any, weight: Any, need_input: bool,
             need_weight: bool, *, tile: int = DEFAULT_TILE) -> tuple[Any, Any]:
    """(grad input, grad weight), either None when not needed: both from one transform
    of grad_output's tiles, E."""
    xp = backend.get_array_module(gy, weight)
    for op, needed in (("grad_input", need_input), ("grad_weight", need_weight)):
        if needed:
            _check(problem, op, tile)
    if gy.size == 0 or (x is not None and x.size == 0):
        return empty_grads(problem, xp, need_input, need_weight, tuple(weight.shape))
    n, o, c = problem.batch, problem.out_channels, problem.in_channels
    dtype, m, a, g = gy.dtype, tile, tile + 2, problem.geometry
    k = constants(xp, dtype, m)
    gx = xp.empty((n, c) + g.in_size, dtype=dtype) if need_input else None
    per_image = _image_bytes(c, o, g.out_size, dtype.itemsize, m)
    parts = _split(problem, c, per_image)
    if parts is not None:
        gw = xp.empty((o, c, 3, 3), dtype=dtype) if need_weight else None
        executor.map_chunks(_backward_part, parts, gy, x, weight, gx, gw, m,
                            (g.pads[0][0], g.pads[1][0]), k,
                            scratch=functools.partial(_part_scratch, xp, dtype, (a, a, c),
                                                      (a, m, o)),
                            per_worker_bytes=2 * n * per_image, arrays=(gy,),
                            work_bytes=map_work(problem) * (int(need_input) + int(need_weight)))
        return gx, gw
    u = filter_transforms(xp, k, weight) if need_input else None  # (a, a, O, C): G w G^T
    args = (gy, x if need_weight else None, u, gx, m, (g.pads[0][0], g.pads[1][0]), k)
    options = dict(scratch=functools.partial(_scratch, xp, dtype, (a, a, c), (a, m, o)),
                   per_worker_bytes=3 * per_image + a * a * o * c * dtype.itemsize,
                   arrays=(gy,), work_bytes=n * per_image)
    if not need_weight:
        executor.map_chunks(_grad_input_chunk, _chunks(n, per_image), *args, **options)
        return gx, None
    gw = xp.empty((o, c, 3, 3), dtype=dtype)
    executor.reduce_chunks(_backward_chunk, _chunks(n, per_image), gw, *args,
                           finish=functools.partial(_finish, k.gg), fresh=True, **options)
    return gx, gw
