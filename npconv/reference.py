"""Convolution as the design states it: the formulas, once, and nothing else.

Every fast path of npconv is tested against this module, and this module is
tested against PyTorch. It is written to be read, and to be copied when you
try a variant. Shapes, with g groups, K the kernel axes and L the output axes:

    x (N, C, *in)    W (O, C/g, *k)    b (O,)    y, gy (N, O, *out)

1. Padding is a linear map per spatial axis, ``xpad = P x`` with P a 0/1
   matrix: row j of P picks the input element that padded position j copies
   (a zero row for zero padding). Its adjoint is ``P^T``.
2. The receptive fields are a zero-copy ``as_strided`` view of ``xpad``:
   ``patches(x)[n, c, *k, *l] = xpad[n, c, *(l * stride + k * dilation)]``.
3. forward       ``y  = tensordot(W, patches(x))`` over (C/g, *k), per group, ``+ b``
4. grad weight   ``gW = tensordot(gy, conj(patches(x)))`` over (N, *out)
5. grad input    ``gx = fold(tensordot(conj(W), gy))`` over O/g, where ``fold`` is
   the adjoint of ``patches``: a scatter-add, one strided slice per kernel
   offset, followed by ``P^T``
6. grad bias     ``gb = sum(gy)`` over (N, *out)
7. A transposed convolution is the map of 5 without the conjugate, plus a
   bias; its gradients are maps 3 and 4 with the roles of x and gy swapped.

The conjugates make 4 and 5 the adjoints of 3 for complex arrays, which is
what torch's autograd computes. No chunking, no threads, no special cases:
memory is O(N C prod(k) prod(out)) for the tensordots.
"""

from __future__ import annotations

import itertools
from typing import Any

from . import backend
from .geometry import ConvGeometry

_NUMPY_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def padding_source(xp: Any, n: int, pads: tuple[int, int], mode: str) -> Any:
    """The input index that each padded position copies along one axis (-1: a zero)."""
    lo, hi = pads
    if mode == "zeros":
        return xp.concatenate([xp.full(lo, -1), xp.arange(n), xp.full(hi, -1)])
    return xp.pad(xp.arange(n), (lo, hi), mode=_NUMPY_PAD_MODE[mode])


def padding_matrix(xp: Any, n: int, pads: tuple[int, int], mode: str, dtype: Any) -> Any:
    """P (n + lo + hi, n): ``xpad = P @ x`` along one axis, for any padding mode."""
    source = padding_source(xp, n, pads, mode)
    return (source[:, None] == xp.arange(n)[None, :]).astype(dtype)


def pad(x: Any, geometry: ConvGeometry) -> Any:
    """xpad (N, C, *padded) = P x, one spatial axis at a time."""
    xp = backend.get_array_module(x)
    for axis, (n, pads) in enumerate(zip(geometry.in_size, geometry.pads), start=2):
        p = padding_matrix(xp, n, pads, geometry.padding_mode, x.dtype)
        # (n + lo + hi, n) . (N, C, .., n, ..) over n -> moved back into place
        x = xp.moveaxis(xp.tensordot(p, x, axes=([1], [axis])), 0, axis)
    return x


def unpad(gpad: Any, geometry: ConvGeometry) -> Any:
    """g (N, C, *in) = P^T gpad: the adjoint of :func:`pad`."""
    xp = backend.get_array_module(gpad)
    for axis, (n, pads) in enumerate(zip(geometry.in_size, geometry.pads), start=2):
        p = padding_matrix(xp, n, pads, geometry.padding_mode, gpad.dtype)
        # (n + lo + hi, n)^T . (N, C, .., n + lo + hi, ..) -> (n, N, C, ..) moved back
        gpad = xp.moveaxis(xp.tensordot(p, gpad, axes=([0], [axis])), 0, axis)
    return gpad


def patches(x: Any, geometry: ConvGeometry) -> Any:
    """Read-only view (N, C, *k, *out) of every receptive field of ``x``."""
    xpad = pad(x, geometry)
    nd = geometry.nd
    lead, axis_strides = xpad.strides[:2], xpad.strides[2:]
    shape = xpad.shape[:2] + geometry.kernel + geometry.out_size
    strides = (lead + tuple(st * d for st, d in zip(axis_strides, geometry.dilation))
               + tuple(st * s for st, s in zip(axis_strides, geometry.stride)))
    assert len(strides) == 2 + 2 * nd
    return backend.as_strided_view(xpad, shape, strides)


def fold(cols: Any, geometry: ConvGeometry) -> Any:
    """The adjoint of :func:`patches`: (N, C, *k, *out) summed back to (N, C, *in)."""
    xp = backend.get_array_module(cols)
    gpad = xp.zeros(cols.shape[:2] + geometry.padded_size, dtype=cols.dtype)
    g = geometry
    for k in itertools.product(*(range(n) for n in g.kernel)):
        # the pixels that kernel offset k reads: one strided slice, no two alike
        window = tuple(slice(ki * d, ki * d + s * (m - 1) + 1, s)
                       for ki, d, s, m in zip(k, g.dilation, g.stride, g.out_size))
        gpad[(slice(None), slice(None)) + window] += cols[(slice(None), slice(None)) + k]
    return unpad(gpad, geometry)


def _grouped(a: Any, groups: int) -> Any:
    """(N, C, ...) -> (N, g, C/g, ...): the channel axis split by group."""
    return a.reshape((a.shape[0], groups, a.shape[1] // groups) + a.shape[2:])


def _weight_groups(weight: Any, groups: int) -> Any:
    """(O, C/g, *k) -> (g, O/g, C/g, *k)."""
    return weight.reshape((groups, weight.shape[0] // groups) + weight.shape[1:])


def forward(x: Any, weight: Any, bias: Any, geometry: ConvGeometry, groups: int) -> Any:
    """y (N, O, *out) = tensordot(W, patches(x)) + b, per group."""
    xp = backend.get_array_module(x, weight)
    nd = geometry.nd
    cols = _grouped(patches(x, geometry), groups)  # (N, g, C/g, *k, *out)
    w = _weight_groups(weight, groups)  # (g, O/g, C/g, *k)
    axes = list(range(1, 2 + nd))  # (C/g, *k) of W's group, and of the columns' group
    # (O/g, C/g, *k) . (N, C/g, *k, *out) -> (O/g, N, *out), for each group
    y = xp.concatenate([xp.tensordot(w[i], cols[:, i], axes=(axes, axes))
                        for i in range(groups)], axis=0)
    y = xp.moveaxis(y, 0, 1)  # (N, O, *out)
    if bias is not None:
        y = y + bias.reshape((1, -1) + (1,) * nd)
    return y


def weight_map(gy: Any, x: Any, geometry: ConvGeometry, groups: int) -> Any:
    """gW (O, C/g, *k) = tensordot(gy, patches(x)) over (N, *out), per group."""
    xp = backend.get_array_module(gy, x)
    nd = geometry.nd
    cols = _grouped(patches(x, geometry), groups)  # (N, g, C/g, *k, *out)
    gyg = _grouped(gy, groups)  # (N, g, O/g, *out)
    out_axes = list(range(2, 2 + nd))
    # (N, O/g, *out) . (N, C/g, *k, *out) -> (O/g, C/g, *k), for each group
    parts = [xp.tensordot(gyg[:, i], cols[:, i],
                          axes=([0] + out_axes, [0] + [a + nd + 1 for a in range(1, 1 + nd)]))
             for i in range(groups)]
    return xp.concatenate(parts, axis=0)


def transpose(gy: Any, weight: Any, geometry: ConvGeometry, groups: int) -> Any:
    """gx (N, C, *in) = fold(tensordot(W, gy)) over O/g, per group: the transpose of
    :func:`forward` (without bias)."""
    xp = backend.get_array_module(gy, weight)
    nd = geometry.nd
    w = _weight_groups(weight, groups)  # (g, O/g, C/g, *k)
    gyg = _grouped(gy, groups)  # (N, g, O/g, *out)
    # (O/g, C/g, *k) . (N, O/g, *out) -> (C/g, *k, N, *out), for each group
    cols = xp.concatenate([xp.tensordot(w[i], gyg[:, i], axes=([0], [1]))
                           for i in range(groups)], axis=0)
    cols = xp.moveaxis(cols, 1 + nd, 0)  # (N, C, *k, *out)
    return fold(cols, geometry)


def grad_bias(gy: Any) -> Any:
    """gb (O,) = sum of gy over (N, *out)."""
    return gy.sum(axis=(0,) + tuple(range(2, gy.ndim)))


def conv_backward(gy: Any, x: Any, weight: Any, geometry: ConvGeometry,
                  groups: int) -> tuple[Any, Any, Any]:
    """(gx, gW, gb) of y = forward(x, W, b): the adjoints, conjugated for complex."""
    xp = backend.get_array_module(gy, x, weight)
    return (transpose(gy, xp.conj(weight), geometry, groups),
            weight_map(gy, xp.conj(x), geometry, groups),
            grad_bias(gy))


def conv_transpose(x: Any, weight: Any, bias: Any, geometry: ConvGeometry,
                   groups: int) -> Any:
    """y = transpose(x, W) + b: ``geometry`` is that of the convolution it transposes."""
    y = transpose(x, weight, geometry, groups)
    if bias is not None:
        y = y + bias.reshape((1, -1) + (1,) * geometry.nd)
    return y


def conv_transpose_backward(gy: Any, x: Any, weight: Any, geometry: ConvGeometry,
                            groups: int) -> tuple[Any, Any, Any]:
    """(gx, gW, gb) of y = conv_transpose(x, W, b): the forward map and the weight map
    with x and gy swapped, conjugated for complex."""
    xp = backend.get_array_module(gy, x, weight)
    return (forward(gy, xp.conj(weight), None, geometry, groups),
            weight_map(xp.conj(x), gy, geometry, groups),
            grad_bias(gy))
