"""Convolution and its gradients on Dask arrays: beyond one machine's memory.

``npconv.dask`` runs :func:`npconv.conv` and :func:`npconv.conv_backward`
block by block on a chunked :class:`dask.array.Array`, on one machine or on a
``distributed`` cluster, with NumPy or CuPy chunks. It needs the ``[dask]``
extra (``pip install "npconv[dask]"``) and is imported explicitly
(``import npconv.dask``); ``import npconv`` never loads Dask.

Padding is applied at the global border only (``dask.array.pad``); each block
gets its neighbours' halo through ``map_overlap``, with interior chunk borders
on multiples of the stride and channels in one chunk (``x`` is rechunked to
meet that, or a ``ValueError`` says why under ``rechunk=False``). The input
gradient of a block comes from ``grad_output`` with the mirrored halo, then the
adjoint of the padding at the global border; the weight gradient is a tree sum
of per-block partials. Results equal in-memory npconv up to summation order.
The docs page "Beyond one machine" has the geometry rules, cluster set-ups
(distributed, dask-jobqueue, Kubernetes, dask-cuda) and measured figures.

On Dask's threaded scheduler hold the BLAS to one thread while computing
(``threadpoolctl.threadpool_limits(1, "blas")``): a multi-threaded BLAS beside
Dask's busy threads ran ~10x slower here. ``distributed``'s process workers
already set OPENBLAS_NUM_THREADS=1.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from itertools import accumulate
from types import ModuleType
from typing import TYPE_CHECKING, Any

from . import backend

# The package's public functions (not npconv.conv's internals, which may move).
from . import conv as _conv
from . import conv_backward as _conv_backward
from . import conv_transpose as _conv_transpose
from .geometry import ConvGeometry, IntOrTuple, Padding, as_int

if TYPE_CHECKING:
    import dask.array as da

__all__ = ["conv", "conv1d", "conv1d_backward", "conv2d", "conv2d_backward", "conv3d",
           "conv3d_backward", "conv_backward"]

# npconv's padding modes as dask.array.pad modes (dask's map_overlap boundary="reflect" is
# numpy's 'symmetric', not torch's reflect, so the border is padded with da.pad instead).
_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _dask_array() -> ModuleType:
    """``dask.array``, imported on first use, with an install hint."""
    try:
        import dask.array
    except ImportError as exc:
        raise ImportError(
            "npconv.dask needs Dask: pip install 'npconv[dask]' (dask[array] and distributed)"
        ) from exc
    return dask.array


def _check_dask(value: Any, name: str) -> None:
    if not isinstance(value, _dask_array().Array):
        raise TypeError(f"{name} must be a dask array (dask.array.Array), got "
                        f"{type(value).__name__}; use npconv.conv for in-memory arrays")
    if any(math.isnan(c) for chunks in value.chunks for c in chunks):
        raise ValueError(f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes()")
    if not backend.backend_of(value._meta).owns(value._meta):
        raise TypeError(f"{name} must have NumPy or CuPy chunks, got chunks of type "
                        f"{type(value._meta).__module__}.{type(value._meta).__name__}")


def _check_in_memory(value: Any, name: str) -> None:
    if value is not None and not backend.backend_of(value).owns(value):
        hint = " (call .compute() on it first)" if hasattr(value, "dask") else ""
        raise TypeError(f"{name} must be a NumPy or CuPy array, got {type(value).__name__}{hint}")


def _setup(nd: int | None, x: Any, weight: Any, bias: Any, stride: Any, padding: Any,
           dilation: Any, groups: Any, padding_mode: Any) -> tuple[ConvGeometry, int]:
    """Validate ranks, channels, dtypes and backends; return (geometry, groups)."""
    _check_dask(x, "x")
    _check_in_memory(weight, "weight")
    _check_in_memory(bias, "bias")
    backend.backend_of(x._meta, weight, bias)  # TypeError on a NumPy/CuPy mix
    rank = weight.ndim - 2
    if rank < 1 or (nd is not None and rank != nd):
        want = f"{nd + 2}" if nd is not None else "at least 3"
        raise ValueError(f"weight must be {want}-dimensional (out_channels, in_channels/groups, "
                         f"*kernel_size), got shape {tuple(weight.shape)}")
    if x.ndim != rank + 2:
        raise ValueError(f"x must be {rank + 2}-dimensional (N, C, *spatial) for a {rank}-d "
                         f"weight, got shape {x.shape}; add a batch axis with x[None]")
    g = as_int(groups, "groups")
    c, o = x.shape[1], weight.shape[0]
    if g < 1 or c % g or o % g:
        raise ValueError(f"groups must be a positive integer dividing the {c} input and {o} "
                         f"output channels, got {groups!r}")
    if weight.shape[1] * g != c:
        raise ValueError(f"weight of shape {tuple(weight.shape)} with groups={g} expects "
                         f"{weight.shape[1] * g} input channels, but x has {c} (shape {x.shape})")
    if bias is not None and tuple(bias.shape) != (o,):
        raise ValueError(f"bias must have shape ({o},), got {tuple(bias.shape)}")
    named = {"x": x.dtype, "weight": weight.dtype, "bias": getattr(bias, "dtype", x.dtype)}
    if len(set(named.values())) > 1 or backend.scalar_kind(x.dtype) not in ("f", "c"):
        listing = ", ".join(f"{k} is {v}" for k, v in named.items())
        raise TypeError(f"x, weight and bias must share one floating or complex dtype ({listing})")
    return ConvGeometry.build(x.shape[2:], tuple(weight.shape[2:]), stride, padding, dilation,
                              padding_mode, input_name="x", single=True), g


# --------------------------------------------------------------------------- chunk plan


@dataclass(frozen=True)
class _Axis:
    """One spatial axis: sizes in padded coordinates, halos and the block layout.

    Output ``o`` reads padded elements ``[o*s, o*s + span)``; block ``j`` of the padded
    input starts at ``B_j = O_j*s + c`` (``O_j`` its first output) and reads ``c`` more
    elements on the left and ``span - s - c`` on the right. Its input gradient needs
    ``grad_output`` from ``gl`` outputs before to ``gr`` outputs after its own.
    """

    size: int
    pads: tuple[int, int]
    span: int
    stride: int
    shift: int
    in_chunks: tuple[int, ...]
    out_chunks: tuple[int, ...]

    @property
    def halo(self) -> tuple[int, int]:
        if len(self.in_chunks) == 1:
            return (0, 0)
        return (self.shift, max(0, self.span - self.stride - self.shift))

    @property
    def grad_halo(self) -> tuple[int, int]:
        if len(self.out_chunks) == 1:
            return (0, 0)
        s = self.stride
        return ((self.span - 1 - self.shift) // s, -(-self.shift // s))


def _min_out(span: int, stride: int, shift: int) -> int:
    """Fewest outputs per chunk that keep every chunk at least as long as the halos."""
    right = max(0, span - stride - shift)
    grad = max((span - 1 - shift) // stride, -(-shift // stride))
    return max(1, grad, -(-max(shift, right) // stride))


def _plan_axis(axis: int, size: int, cuts: list[int], pads: tuple[int, int], span: int,
               stride: int, out: int, rechunk: bool) -> _Axis:
    """Block layout of one spatial axis from the user's interior chunk borders ``cuts``."""
    lo, hi = pads
    shift = min(lo, max(0, span - stride))
    least = _min_out(span, stride, shift)
    bounds = [0]
    for cut in cuts:
        first, rem = divmod(cut + lo - shift, stride)
        if not rechunk:
            if rem or first - bounds[-1] < least or out - first < least:
                step = least * stride
                raise ValueError(
                    f"rechunk=False, but x's chunk border at {cut} on spatial axis {axis} "
                    f"cannot be used: interior borders must sit at multiples of the stride "
                    f"{stride} (offset by {(shift - lo) % stride} here) and leave at least "
                    f"{least} output(s) per chunk for the halo of a kernel spanning {span}; "
                    f"rechunk x (e.g. to multiples of {step}) or pass rechunk=True")
        elif rem * 2 >= stride:
            first += 1
        if first - bounds[-1] >= least and out - first >= least:
            bounds.append(first)
    bounds.append(out)
    out_chunks = tuple(b - a for a, b in zip(bounds[:-1], bounds[1:]))
    starts = [0] + [b * stride + shift for b in bounds[1:-1]] + [size + lo + hi]
    in_chunks = tuple(b - a for a, b in zip(starts[:-1], starts[1:]))
    return _Axis(size, pads, span, stride, shift, in_chunks, out_chunks)


def _plan(x: Any, geometry: ConvGeometry, rechunk: bool) -> tuple[_Axis, ...]:
    axes = []
    for i in range(geometry.nd):
        span = geometry.dilation[i] * (geometry.kernel[i] - 1) + 1
        axes.append(_plan_axis(
            i, geometry.in_size[i], list(accumulate(x.chunks[2 + i][:-1])), geometry.pads[i], span,
            geometry.stride[i], geometry.out_size[i], rechunk,
        ))
    return tuple(axes)


def _one_channel_chunk(array: Any, name: str, rechunk: bool) -> None:
    if len(array.chunks[1]) == 1:
        return
    message = (f"{name} is chunked along its channel axis {array.chunks[1]}; every output reads "
               f"all channels of its group, so npconv.dask needs them in one chunk")
    if not rechunk:
        raise ValueError(f"{message}: rechunk {name} with {{1: -1}} or pass rechunk=True")
    warnings.warn(f"{message} and rechunks them; rechunk {name} with {{1: -1}} to avoid "
                  f"this warning", UserWarning, stacklevel=4)


def _padded(x: Any, geometry: ConvGeometry, axes: tuple[_Axis, ...], rechunk: bool) -> Any:
    """``x`` padded at the global border and rechunked to the planned blocks."""
    _one_channel_chunk(x, "x", rechunk)
    x = x.rechunk({1: -1})
    if geometry.has_padding:
        # Batch and channels merged into one axis: da.pad builds 3**ndim pieces.
        n, c = x.shape[:2]
        flat = x.reshape((n * c,) + x.shape[2:])
        flat = _dask_array().pad(flat, ((0, 0),) + tuple(a.pads for a in axes),
                                 mode=_PAD_MODES[geometry.padding_mode])
        x = flat.reshape((n, c) + flat.shape[1:])
    return x.rechunk((x.chunks[0], (x.shape[1],)) + tuple(a.in_chunks for a in axes))


def _meta(like: Any, ndim: int, dtype: Any) -> Any:
    return backend.get_array_module(like).empty((0,) * ndim, dtype=dtype)


def _depth(halos: list[tuple[int, int]]) -> dict[int, tuple[int, int]]:
    return {2 + i: h for i, h in enumerate(halos)}


# --------------------------------------------------------------------------- block kernels


def _forward_block(block: Any, weight: Any, bias: Any, stride: tuple[int, ...],
                   dilation: tuple[int, ...], groups: int) -> Any:
    """Valid convolution of one block that already holds its halo."""
    return _conv(block, weight, bias, stride, 0, dilation, groups)


def _grad_input_block(grad: Any, weight: Any, stride: tuple[int, ...],
                      dilation: tuple[int, ...], groups: int, shift: tuple[int, ...],
                      halo: tuple[int, ...], block_info: Any = None) -> Any:
    """Input gradient of one padded block from ``grad_output`` with its mirrored halo.

    ``grad`` covers the block's outputs plus ``halo`` outputs on the left (none for the
    first block); the transposed convolution spans from the first of them, so the block
    starts ``halo * stride + shift`` further on. Elements read by no window stay zero.
    """
    info = block_info[None]
    where, shape = info["chunk-location"], tuple(info["chunk-shape"])
    full = _conv_transpose(grad, weight, None, stride, 0, 0, groups, dilation)
    crop = [slice(None), slice(None)]
    for i in range(len(stride)):
        start = (halo[i] * stride[i] + shift[i]) if where[2 + i] else 0
        crop.append(slice(start, start + shape[2 + i]))
    part = full[tuple(crop)]
    if part.shape == shape:
        return part
    out = backend.get_array_module(grad).zeros(shape, dtype=full.dtype)
    out[tuple(slice(0, n) for n in part.shape)] = part
    return out


def _grad_weight_block(block: Any, grad: Any, weight: Any, stride: tuple[int, ...],
                       dilation: tuple[int, ...], groups: int) -> Any:
    """This block's share of the weight gradient, with a unit axis per block-grid axis."""
    _, grad_weight, _ = _conv_backward(grad, block, weight, stride, 0, dilation, groups)
    return grad_weight.reshape((1,) * grad.ndim + tuple(grad_weight.shape))


# --------------------------------------------------------------------------- public: conv


def conv(x: da.Array, weight: Any, bias: Any = None, stride: IntOrTuple = 1,
         padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
         padding_mode: str = "zeros", *, rechunk: bool = True,
         _nd: int | None = None) -> da.Array:
    """N-d convolution of a Dask array, block by block: lazy :func:`npconv.conv`.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C, *spatial)
        NumPy or CuPy chunks, chunked along the batch and spatial axes (a chunked
        channel axis is merged, with a warning).
    weight : numpy or cupy array, shape (O, C // groups, *kernel_size)
        Of the same library as ``x``'s chunks and of ``x``'s dtype.
    bias : array, shape (O,), optional
    stride, padding, dilation, groups, padding_mode
        As for :func:`npconv.conv`; padding is applied at the global border only.
    rechunk : bool
        Move chunk borders to the nearest stride-aligned positions that leave every
        chunk at least as large as the halo (True), or raise ``ValueError`` when the
        chunks of ``x`` cannot be used as they are (False; the padding is then only
        merged into the border chunks).

    Returns
    -------
    y : dask.array.Array, shape (N, O, *out_size)
        Lazy; equal to ``npconv.conv`` on the computed ``x``. Its chunks follow those
        of ``x`` (divided by the stride). Building it computes nothing.

    Examples
    --------
    >>> import numpy as np, pytest
    >>> da = pytest.importorskip("dask.array")  # needs the [dask] extra
    >>> import npconv, npconv.dask
    >>> x = np.random.default_rng(0).standard_normal((2, 4, 30, 20))
    >>> w = np.random.default_rng(1).standard_normal((6, 2, 3, 3))
    >>> y = npconv.dask.conv(da.from_array(x, chunks=(1, 4, 8, 10)), w, stride=2,
    ...                      padding=1, groups=2, padding_mode="circular")
    >>> y.chunks[2:]
    ((4, 4, 4, 3), (5, 5))
    >>> expected = npconv.conv(x, w, stride=2, padding=1, groups=2, padding_mode="circular")
    >>> bool(np.allclose(y.compute(), expected))
    True
    """
    geometry, g = _setup(_nd, x, weight, bias, stride, padding, dilation, groups, padding_mode)
    axes = _plan(x, geometry, rechunk)
    padded = _padded(x, geometry, axes, rechunk)
    chunks = (padded.chunks[0], (weight.shape[0],)) + tuple(a.out_chunks for a in axes)
    return _dask_array().map_overlap(
        _forward_block, padded, depth=_depth([a.halo for a in axes]), boundary="none",
        trim=False, align_arrays=False, allow_rechunk=False, chunks=chunks,
        meta=_meta(x._meta, x.ndim, x.dtype), dtype=x.dtype, weight=weight, bias=bias,
        stride=geometry.stride, dilation=geometry.dilation, groups=g,
    )


# --------------------------------------------------------------------------- public: backward


def _take(array: Any, axis: int, start: int, stop: int) -> Any:
    index = [slice(None)] * array.ndim
    index[axis] = slice(start, stop)
    return array[tuple(index)]


def _wrap_pieces(grad: Any, axis: int, size: int, low: int, start: int,
                 stop: int) -> list[tuple[int, Any]]:
    """Padded elements ``[start, stop)`` of a circular border as (input index, slab) runs."""
    pieces = []
    while start < stop:
        index = (start - low) % size
        run = min(stop - start, size - index)
        pieces.append((index, _take(grad, axis, start, start + run)))
        start += run
    return pieces


def _border_pieces(grad: Any, axis: int, size: int, pads: tuple[int, int],
                   mode: str) -> list[tuple[int, Any]]:
    """Where the padding's gradient lands in the input: (first index, slab) pairs."""
    da_ = _dask_array()
    lo, hi = pads
    left, right = _take(grad, axis, 0, lo), _take(grad, axis, lo + size, lo + size + hi)
    pieces: list[tuple[int, Any]] = []
    if mode == "replicate":
        pieces += [(0, left.sum(axis=axis, keepdims=True))] if lo else []
        pieces += [(size - 1, right.sum(axis=axis, keepdims=True))] if hi else []
    elif mode == "reflect":  # padded lo - 1 - j mirrors input 1 + j
        pieces += [(1, da_.flip(left, axis))] if lo else []
        pieces += [(size - 1 - hi, da_.flip(right, axis))] if hi else []
    elif mode == "circular":
        pieces += _wrap_pieces(grad, axis, size, lo, 0, lo)
        pieces += _wrap_pieces(grad, axis, size, lo, lo + size, lo + size + hi)
    return pieces


def _unpad_axis(grad: Any, axis: int, size: int, pads: tuple[int, int], mode: str) -> Any:
    """Adjoint of the padding of one axis: crop, and fold the border's gradient back in."""
    lo = pads[0]
    core = _take(grad, axis, lo, lo + size)
    pieces = _border_pieces(grad, axis, size, pads, mode)
    if not pieces:
        return core
    cuts = sorted({0, size} | {i for p, s in pieces for i in (p, p + s.shape[axis])})
    segments = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        segment = _take(core, axis, a, b)
        for first, slab in pieces:
            if first <= a and b <= first + slab.shape[axis]:
                segment = segment + _take(slab, axis, a - first, b - first)
        segments.append(segment)
    return _dask_array().concatenate(segments, axis=axis)


def conv_backward(grad_output: da.Array, x: da.Array, weight: Any, stride: IntOrTuple = 1,
                  padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
                  padding_mode: str = "zeros", *, rechunk: bool = True,
                  split_every: int | None = None,
                  _nd: int | None = None) -> tuple[da.Array, da.Array, da.Array]:
    """Gradients of :func:`conv` on Dask arrays: lazy :func:`npconv.conv_backward`.

    Parameters
    ----------
    grad_output : dask.array.Array, shape of ``conv(x, weight, ...)``
        dL/dy; rechunked to the chunks that :func:`conv` gives ``y`` (unless
        ``rechunk=False``, which then requires exactly those chunks).
    x, weight, stride, padding, dilation, groups, padding_mode, rechunk
        As given to :func:`conv`.
    split_every : int, optional
        Fan-in of the tree reductions of the weight and bias gradients (Dask's default
        when None).

    Returns
    -------
    grad_input : dask.array.Array, shape and chunks of ``x``
    grad_weight : dask.array.Array, shape of ``weight``, one chunk
    grad_bias : dask.array.Array, shape (O,), one chunk

    Examples
    --------
    >>> import numpy as np, pytest
    >>> da = pytest.importorskip("dask.array")  # needs the [dask] extra
    >>> import npconv, npconv.dask
    >>> rng = np.random.default_rng(0)
    >>> x, w = rng.standard_normal((2, 3, 24, 24)), rng.standard_normal((4, 3, 3, 3))
    >>> gy = rng.standard_normal((2, 4, 24, 24))
    >>> lazy = npconv.dask.conv_backward(da.from_array(gy, chunks=(1, 4, 10, 10)),
    ...                                  da.from_array(x, chunks=(1, 3, 10, 10)), w,
    ...                                  padding=1, padding_mode="reflect")
    >>> [g.shape for g in lazy]
    [(2, 3, 24, 24), (4, 3, 3, 3), (4,)]
    >>> expected = npconv.conv_backward(gy, x, w, padding=1, padding_mode="reflect")
    >>> all(np.allclose(a, b) for a, b in zip(da.compute(*lazy), expected))
    True
    """
    geometry, g = _setup(_nd, x, weight, None, stride, padding, dilation, groups, padding_mode)
    _check_dask(grad_output, "grad_output")
    backend.backend_of(x._meta, grad_output._meta)
    expected = (x.shape[0], weight.shape[0]) + geometry.out_size
    if grad_output.shape != expected or grad_output.dtype != x.dtype:
        raise ValueError(
            f"grad_output must have the output's shape {expected} and x's dtype {x.dtype}, "
            f"got shape {grad_output.shape} and dtype {grad_output.dtype}"
        )
    axes = _plan(x, geometry, rechunk)
    padded = _padded(x, geometry, axes, rechunk)
    gy = _grad_output_chunks(grad_output, padded.chunks[0], axes, rechunk)
    kw = {"stride": geometry.stride, "dilation": geometry.dilation, "groups": g}
    grad_input = _grad_input(gy, padded, weight, axes, kw)
    for i, a in enumerate(axes):
        grad_input = _unpad_axis(grad_input, 2 + i, a.size, a.pads, geometry.padding_mode)
    grad_weight = _grad_weight(gy, padded, weight, axes, kw, split_every)
    spatial = (0,) + tuple(range(2, x.ndim))
    grad_bias = grad_output.sum(axis=spatial, split_every=split_every)
    return grad_input.rechunk(x.chunks), grad_weight, grad_bias


def _grad_input(gy: Any, padded: Any, weight: Any, axes: tuple[_Axis, ...],
                kw: dict[str, Any]) -> Any:
    """Gradient with respect to the padded input, in its blocks (mirrored halos of gy)."""
    module = backend.get_array_module(weight)
    adjoint = module.conj(weight) if backend.scalar_kind(weight.dtype) == "c" else weight
    return _dask_array().map_overlap(
        _grad_input_block, gy, depth=_depth([a.grad_halo for a in axes]), boundary="none",
        trim=False, align_arrays=False, allow_rechunk=False, chunks=padded.chunks,
        meta=_meta(padded._meta, padded.ndim, padded.dtype), dtype=padded.dtype,
        weight=adjoint, shift=tuple(a.shift for a in axes),
        halo=tuple(a.grad_halo[0] for a in axes), **kw,
    )


def _grad_weight(gy: Any, padded: Any, weight: Any, axes: tuple[_Axis, ...],
                 kw: dict[str, Any], split_every: int | None) -> Any:
    """Per-block weight-gradient partials (blocks of x with the forward's halo), summed."""
    da_ = _dask_array()
    windows = da_.overlap.overlap(padded, depth=_depth([a.halo for a in axes]),
                                  boundary="none", allow_rechunk=False)
    index = tuple(range(padded.ndim))
    partials = da_.blockwise(
        _grad_weight_block, index + tuple(range(padded.ndim, padded.ndim + weight.ndim)),
        windows, index, gy, index, align_arrays=False, dtype=padded.dtype,
        new_axes={padded.ndim + i: n for i, n in enumerate(weight.shape)},
        adjust_chunks={i: 1 for i in index},
        meta=_meta(padded._meta, padded.ndim + weight.ndim, padded.dtype), weight=weight, **kw,
    )
    return partials.sum(axis=index, split_every=split_every)


def _grad_output_chunks(grad_output: Any, batch: tuple[int, ...], axes: tuple[_Axis, ...],
                        rechunk: bool) -> Any:
    """``grad_output`` in the blocks of the forward's output."""
    chunks = (batch, (grad_output.shape[1],)) + tuple(a.out_chunks for a in axes)
    if grad_output.chunks != chunks and not rechunk:
        raise ValueError(f"rechunk=False, but grad_output has chunks {grad_output.chunks} "
                         f"instead of those of conv's output {chunks}; rechunk it or pass "
                         f"rechunk=True")
    return grad_output.rechunk(chunks)


# --------------------------------------------------------------------------- fixed-rank names
# Thin aliases with torch's names; the rank check is the only difference.


def conv1d(x: da.Array, weight: Any, bias: Any = None, stride: IntOrTuple = 1,
           padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
           padding_mode: str = "zeros", *, rechunk: bool = True) -> da.Array:
    """1-d :func:`conv` of a Dask array (N, C, L).

    Examples
    --------
    >>> import numpy as np, pytest; da = pytest.importorskip("dask.array"); import npconv.dask
    >>> npconv.dask.conv1d(da.ones((2, 3, 100), chunks=(1, 3, 25)), np.ones((4, 3, 3)),
    ...                    padding="same").chunks
    ((1, 1), (4,), (25, 25, 25, 25))
    """
    return conv(x, weight, bias, stride, padding, dilation, groups, padding_mode,
                rechunk=rechunk, _nd=1)


def conv2d(x: da.Array, weight: Any, bias: Any = None, stride: IntOrTuple = 1,
           padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
           padding_mode: str = "zeros", *, rechunk: bool = True) -> da.Array:
    """2-d :func:`conv` of a Dask array (N, C, H, W).

    Examples
    --------
    >>> import numpy as np, pytest; da = pytest.importorskip("dask.array"); import npconv.dask
    >>> npconv.dask.conv2d(da.ones((1, 3, 64, 64), chunks=(1, 3, 32, 32)), np.ones((8, 3, 3, 3)),
    ...                    stride=2, padding=1).chunks[2:]
    ((16, 16), (16, 16))
    """
    return conv(x, weight, bias, stride, padding, dilation, groups, padding_mode,
                rechunk=rechunk, _nd=2)


def conv3d(x: da.Array, weight: Any, bias: Any = None, stride: IntOrTuple = 1,
           padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
           padding_mode: str = "zeros", *, rechunk: bool = True) -> da.Array:
    """3-d :func:`conv` of a Dask array (N, C, D, H, W).

    Examples
    --------
    >>> import numpy as np, pytest; da = pytest.importorskip("dask.array"); import npconv.dask
    >>> y = npconv.dask.conv3d(da.ones((1, 2, 20, 20, 20), chunks=(1, 2, 10, 10, 10)),
    ...                        np.ones((4, 2, 3, 3, 3)), padding=1, padding_mode="replicate")
    >>> float(y[0, 0, 0, 0, 0].compute())
    54.0
    """
    return conv(x, weight, bias, stride, padding, dilation, groups, padding_mode,
                rechunk=rechunk, _nd=3)


def conv1d_backward(grad_output: da.Array, x: da.Array, weight: Any, stride: IntOrTuple = 1,
                    padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
                    padding_mode: str = "zeros", *, rechunk: bool = True,
                    split_every: int | None = None) -> tuple[da.Array, da.Array, da.Array]:
    """Gradients of :func:`conv1d`: ``(grad_input, grad_weight, grad_bias)``.

    Examples
    --------
    >>> import numpy as np, pytest; da = pytest.importorskip("dask.array"); import npconv.dask
    >>> x, gy = da.ones((2, 3, 40), chunks=(1, 3, 10)), da.ones((2, 4, 38), chunks=(1, 4, 10))
    >>> gx, gw, gb = npconv.dask.conv1d_backward(gy, x, np.ones((4, 3, 3)))
    >>> gx.chunks, gw.shape, gb.compute()
    (((1, 1), (3,), (10, 10, 10, 10)), (4, 3, 3), array([76., 76., 76., 76.]))
    """
    return conv_backward(grad_output, x, weight, stride, padding, dilation, groups,
                         padding_mode, rechunk=rechunk, split_every=split_every, _nd=1)


def conv2d_backward(grad_output: da.Array, x: da.Array, weight: Any, stride: IntOrTuple = 1,
                    padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
                    padding_mode: str = "zeros", *, rechunk: bool = True,
                    split_every: int | None = None) -> tuple[da.Array, da.Array, da.Array]:
    """Gradients of :func:`conv2d`: ``(grad_input, grad_weight, grad_bias)``.

    Examples
    --------
    >>> import numpy as np, pytest; da = pytest.importorskip("dask.array"); import npconv.dask
    >>> x = da.ones((2, 3, 32, 32), chunks=(1, 3, 16, 16))
    >>> gy = da.ones((2, 4, 16, 16), chunks=(1, 4, 8, 8))
    >>> grads = npconv.dask.conv2d_backward(gy, x, np.ones((4, 3, 3, 3)), stride=2, padding=1)
    >>> tuple(g.shape for g in grads)
    ((2, 3, 32, 32), (4, 3, 3, 3), (4,))
    """
    return conv_backward(grad_output, x, weight, stride, padding, dilation, groups,
                         padding_mode, rechunk=rechunk, split_every=split_every, _nd=2)


def conv3d_backward(grad_output: da.Array, x: da.Array, weight: Any, stride: IntOrTuple = 1,
                    padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
                    padding_mode: str = "zeros", *, rechunk: bool = True,
                    split_every: int | None = None) -> tuple[da.Array, da.Array, da.Array]:
    """Gradients of :func:`conv3d`: ``(grad_input, grad_weight, grad_bias)``.

    Examples
    --------
    >>> import numpy as np, pytest; da = pytest.importorskip("dask.array"); import npconv.dask
    >>> x = da.ones((1, 2, 12, 12, 12), chunks=(1, 2, 6, 6, 6))
    >>> gy = da.ones((1, 4, 12, 12, 12), chunks=(1, 4, 6, 6, 6))
    >>> gx, gw, gb = npconv.dask.conv3d_backward(gy, x, np.ones((4, 2, 3, 3, 3)), padding=1,
    ...                                          padding_mode="circular")
    >>> float(gx.min().compute()), float(gw[0, 0, 0, 0, 0].compute())  # 4 * 27 taps; 12**3
    (108.0, 1728.0)
    """
    return conv_backward(grad_output, x, weight, stride, padding, dilation, groups,
                         padding_mode, rechunk=rechunk, split_every=split_every, _nd=3)
