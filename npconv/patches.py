"""Receptive fields: the patch view, its adjoint, and torch's unfold/fold.

``patches`` is a zero-copy ``as_strided`` view of the (padded) input with
shape (N, C, *kernel, *out); ``fold_patches`` is its adjoint, a scatter-add
(each kernel offset's windows copied into image-sized slabs, then summed).
``im2col``/``col2im`` are the same two maps with the kernel and output axes
flattened, as in ``torch.nn.functional.unfold``/``fold``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from . import backend, executor, scratch
from ._validate import CheckedCache, array_key, check_ndim, check_out, prepare_data
from .geometry import (
    INDEX_MAX,
    ConvGeometry,
    IntOrTuple,
    Padding,
    as_tuple,
    check_extent,
    spatial_rank,
)
from .paths.fold import fold_into, gather_windows, scatter_add
from .paths.windows import copy_windows_split, split_pays, takes_planes

_NUMPY_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


# --------------------------------------------------------------------------- padding


def pad(x: Any, geometry: ConvGeometry) -> Any:
    """``x`` (N, C, *in) padded as ``geometry`` says; ``x`` itself when there is no padding."""
    if not geometry.has_padding:
        return x
    xp = backend.get_array_module(x)
    widths = [(0, 0)] * (x.ndim - geometry.nd) + list(geometry.pads)
    if geometry.padding_mode == "zeros":
        padded = xp.zeros(x.shape[:-geometry.nd] + geometry.padded_size, dtype=x.dtype)
        padded[_interior(geometry, x.ndim)] = x
        return padded
    return xp.pad(x, widths, mode=_NUMPY_PAD_MODE[geometry.padding_mode])


def _interior(geometry: ConvGeometry, ndim: int) -> tuple[slice, ...]:
    lead = (slice(None),) * (ndim - geometry.nd)
    return lead + tuple(slice(lo, lo + n) for n, (lo, _) in zip(geometry.in_size, geometry.pads))


class ChunkPadder:
    """Padded copies of batch chunks ``x[start:stop]``, as :func:`pad` makes them.

    With zero padding one buffer is reused for every chunk: its zero border is
    written once and only the interior is copied per chunk, which keeps the
    padded copy small and in cache.
    """

    def __init__(self, x: Any, geometry: ConvGeometry, chunk: int):
        self.x, self.geometry = x, geometry
        self.buffer = None
        if geometry.has_padding and geometry.padding_mode == "zeros":
            xp = backend.get_array_module(x)
            shape = (min(chunk, x.shape[0]),) + x.shape[1 : x.ndim - geometry.nd]
            self.buffer = xp.zeros(shape + geometry.padded_size, dtype=x.dtype)

    def __call__(self, start: int, stop: int) -> Any:
        if self.buffer is None:
            return pad(self.x[start:stop], self.geometry)
        padded = self.buffer[: stop - start]
        padded[_interior(self.geometry, padded.ndim)] = self.x[start:stop]
        return padded


def unpad_add(out: Any, padded_grad: Any, geometry: ConvGeometry,
              accumulate: bool = True) -> None:
    """``out += P^T padded_grad``: the adjoint of :func:`pad`, accumulated into ``out``
    (or ``out = P^T padded_grad`` without ``accumulate``: a copy runs several times
    faster than an in-place add on these strided views)."""
    g = padded_grad
    if geometry.has_padding and geometry.padding_mode != "zeros":
        xp = backend.get_array_module(out, padded_grad)
        lead = out.ndim - geometry.nd
        for i, (n, (lo, hi)) in enumerate(zip(geometry.in_size, geometry.pads)):
            g = _unpad_axis(xp, g, lead + i, n, lo, hi, geometry.padding_mode)
    else:
        g = g[_interior(geometry, out.ndim)]  # the zero border is dropped
    if accumulate:
        out += g
    else:
        out[...] = g


def _unpad_axis(xp: Any, g: Any, axis: int, n: int, lo: int, hi: int, mode: str) -> Any:
    """Fold one axis of padded length n+lo+hi back to length n (the padding's adjoint)."""
    if not lo and not hi:
        return g

    def at(start: int, stop: int) -> tuple[slice, ...]:
        return (slice(None),) * axis + (slice(start, stop),)

    out = g[at(lo, lo + n)].copy()
    low, high = g[at(0, lo)], g[at(lo + n, lo + n + hi)]
    # Padded index j < lo copies reflect: lo - j, replicate: 0, circular: n - lo + j;
    # padded index lo + n + t copies reflect: n - 2 - t, replicate: n - 1, circular: t.
    # Within one border every source index is distinct (or a single one, summed),
    # so each += below is exact.
    if mode == "reflect":
        if lo:
            out[at(1, lo + 1)] += xp.flip(low, axis=axis)
        if hi:
            out[at(n - 1 - hi, n - 1)] += xp.flip(high, axis=axis)
    elif mode == "replicate":
        if lo:
            out[at(0, 1)] += low.sum(axis=axis, keepdims=True)
        if hi:
            out[at(n - 1, n)] += high.sum(axis=axis, keepdims=True)
    else:  # circular
        if lo:
            out[at(n - lo, n)] += low
        if hi:
            out[at(0, hi)] += high
    return out


# --------------------------------------------------------------------------- the view


def window_view(padded: Any, geometry: ConvGeometry) -> Any:
    """Read-only view (N, C, *kernel, *out) of an already padded (N, C, *padded) array."""
    shape, strides = _view_layout(geometry, padded.shape, padded.strides)
    return backend.as_strided_view(padded, shape, strides)


@functools.lru_cache(maxsize=1024)
def _view_layout(geometry: ConvGeometry, padded_shape: tuple[int, ...],
                 padded_strides: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shape and byte strides of the window view (cached: small calls repeat them)."""
    nd = geometry.nd
    lead_shape, lead_strides = padded_shape[:-nd], padded_strides[:-nd]
    axis_strides = padded_strides[-nd:]
    shape = lead_shape + geometry.kernel + geometry.out_size
    strides = (
        lead_strides
        + tuple(st * d for st, d in zip(axis_strides, geometry.dilation))
        + tuple(st * s for st, s in zip(axis_strides, geometry.stride))
    )
    # A step along an axis of length one is never taken; a huge stride or dilation
    # there (ConvGeometry bounds them for contiguous arrays only) must not overflow.
    strides = tuple(0 if n == 1 and abs(st) > INDEX_MAX else st for n, st in zip(shape, strides))
    return shape, strides


# --------------------------------------------------------------------------- integer folds


def _fold(grad_patches: Any, geometry: ConvGeometry, name: str) -> Any:
    """A new (N, C, *in_size) array: the fold of (N, C, *kernel, *out) windows, in their dtype.

    Floating and complex windows take the fast :func:`fold_into`; integers are
    summed in their own dtype; bools are summed as counts and then compared with
    zero, which is NumPy's bool addition (a logical or).
    """
    xp = backend.get_array_module(grad_patches)
    shape = grad_patches.shape[:2] + geometry.in_size
    check_extent(geometry.in_size, name, geometry.in_size, lead=math.prod(shape[:2]),
                 itemsize=grad_patches.dtype.itemsize)
    kind = backend.scalar_kind(grad_patches.dtype)
    if kind == "b":
        counts = xp.empty(shape, dtype=backend.numpy_dtype("intp"))
        scatter_add(counts, grad_patches, geometry)
        return counts != 0
    out = xp.empty(shape, dtype=grad_patches.dtype)
    if kind in ("i", "u"):
        scatter_add(out, grad_patches, geometry)
    else:
        fold_into(out, grad_patches, geometry)
    return out


# --------------------------------------------------------------------------- public


def _batched(x: Any, name: str, lead: int, meaning: str, *sizes: Any) -> tuple[Any, bool]:
    """``x`` with a batch axis (added when ``x`` is unbatched) and whether it had one.

    ``sizes`` are the size arguments that set the rank; when all are ints a wrong
    rank gets a hint that an int means 2 spatial dims.
    """
    ints = not any(hasattr(size, "__len__") for size in sizes)
    hint = "; an int kernel_size means 2 spatial dims, as in torch's unfold" if ints else ""
    check_ndim(x, name, (lead + 1, lead + 2), meaning + hint)
    return (x, True) if x.ndim == lead + 2 else (x[None], False)


def patches(
    x: Any,
    kernel_size: IntOrTuple,
    *,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    padding_mode: str = "zeros",
) -> Any:
    """Read-only view of every receptive field: shape (N, C, *kernel_size, *out_size).

    ``patches(x, k)[n, c, i, j, h, w]`` is the input pixel that kernel tap
    ``(i, j)`` of output position ``(h, w)`` sees. Without padding the view
    shares memory with ``x``; with padding it views a padded copy. Any number
    of spatial dimensions works: the rank is ``len(kernel_size)``, or 2 for an
    int (as in :func:`im2col`); ``x`` may be batched (N, C, *spatial) or
    unbatched (C, *spatial), like the convolutions. Any dtype works, bool and
    integers included.

    Parameters
    ----------
    x : array, shape (N, C, *spatial) or unbatched (C, *spatial)
    kernel_size : int or tuple of ints
    stride, dilation : int or tuple of ints, keyword-only
    padding : int, tuple of ints, 'same', 'valid' or 'same_upper', keyword-only
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}, keyword-only

    Returns
    -------
    view : array (N, C, *kernel_size, *out_size), or (C, *kernel_size, *out_size)
        Read-only on NumPy; CuPy arrays have no read-only flag, so there the view is
        writable (writing through it would change several windows at once).

    See Also
    --------
    fold_patches : the adjoint (scatter-add back to the input shape).

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> v = npconv.patches(x, 3)
    >>> v.shape
    (1, 1, 3, 3, 2, 2)
    >>> v[0, 0, :, :, 1, 1]          # the window whose corner is x[1, 1]
    array([[ 5.,  6.,  7.],
           [ 9., 10., 11.],
           [13., 14., 15.]])
    >>> w = np.ones((2, 1, 3, 3))    # a convolution is one contraction away
    >>> np.einsum("ncijhw,ocij->nohw", v, w).shape
    (1, 2, 2, 2)
    >>> npconv.patches(x[0], 2, stride=2).shape   # unbatched (C, H, W)
    (1, 2, 2, 2, 2)
    """
    batch, batched, geometry = _patch_setup(x, kernel_size, stride, padding, dilation,
                                            padding_mode)
    view = window_view(pad(batch, geometry), geometry)
    return view if batched else view[0]


# Checked geometries of recent calls (see CheckedCache).
_SETUPS = CheckedCache()

# im2col gathers windows whose output rows are at most this long (and that
# ``paths.windows.takes_planes`` leaves to it) through an index
# (``paths.fold.gather_windows``) instead of copying the strided window view, whose
# copy walks rows of that many elements. Measured (N4, 2 threads, im2col / gather):
# 512@3x3 k3 0.78 / 0.27 ms, 256@6x6 k3 s2 0.44 / 0.14; 128@12x12 k3 0.83 / 1.02,
# 64@24x24 k3 0.87 / 1.65.
GATHER_MAX_WIDTH = 8
# ... on calls of at least this many column elements: below, the index lookup and the
# zero-extended copy cost more than the view's copy (1x1x8x8 3x3: ~2-3 us more).
# A 1x1 kernel's view has no overlapping windows and copies faster than the gather
# (N4 384@6x6: 10 / 64 us; 960@3x3: 5 / 63 us, measured).
GATHER_MIN_ELEMENTS = 2**14


def _patch_setup(x: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
                 padding_mode: Any, columns: bool = False) -> tuple[Any, bool, ConvGeometry]:
    """(x with a batch axis, whether it had one, the checked geometry) of ``patches``;
    with ``columns``, also checked that ``im2col``'s columns can be indexed."""
    hit, key = _SETUPS.get(("im2col" if columns else "patches", array_key(x), kernel_size,
                            stride, padding, dilation, padding_mode))
    if hit is not None:
        batched, geometry = hit
        return (x if batched else x[None]), batched, geometry
    array = prepare_data("x", x)
    nd = spatial_rank(kernel_size, 2)
    batch, batched = _batched(array, "x", nd, f"(N, C, *spatial) or (C, *spatial) for {nd}-d",
                              kernel_size)
    geometry = ConvGeometry.build(
        batch.shape[2:], kernel_size, stride, padding, dilation, padding_mode, input_name="x"
    )
    lead = math.prod(batch.shape[:2])
    if geometry.has_padding:
        check_extent(geometry.padded_size, "padding", padding, lead=lead,
                     itemsize=array.dtype.itemsize)
    if columns:
        check_extent(geometry.kernel + geometry.out_size, "kernel_size", kernel_size,
                     lead=lead, itemsize=array.dtype.itemsize)
    if key is not None and array is x and key[1][1] is not None:
        _SETUPS.put(key, (batched, geometry))
    return batch, batched, geometry


def fold_patches(
    grad_patches: Any,
    input_size: IntOrTuple,
    kernel_size: IntOrTuple,
    *,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    padding_mode: str = "zeros",
) -> Any:
    """Adjoint of :func:`patches`: sum every window back into an (N, C, *input_size) array.

    Each element of ``grad_patches`` is added to the input pixel it was read
    from, so overlapping windows accumulate and padding positions are dropped
    (or, for reflect/replicate/circular, added to the pixels they copied).
    This is the gradient of any function of ``patches(x)`` with respect to ``x``.
    The rank is ``len(input_size)`` or ``len(kernel_size)``, or 2 if both are
    ints; unbatched windows (C, *kernel_size, *out_size) give (C, *input_size).

    Integer arrays are summed in their own dtype: like NumPy's integer adds,
    a sum past the dtype's range wraps around silently (use a wider dtype when
    many windows overlap). Bool arrays are summed as NumPy adds bools, a logical
    or: a pixel is True when any window holding it is.

    Parameters
    ----------
    grad_patches : array, shape (N, C, *kernel_size, *out_size) or (C, *kernel_size, *out_size)
    input_size : int or tuple of ints
        Spatial size of the input that ``patches`` was taken from.
    kernel_size : int or tuple of ints
    stride, padding, dilation, padding_mode : keyword-only
        As given to :func:`patches`.

    Returns
    -------
    array (N, C, *input_size), or (C, *input_size), of the dtype of ``grad_patches``

    Examples
    --------
    >>> import numpy as np, npconv
    >>> ones = np.ones((1, 1, 3, 3, 2, 2), dtype=np.int64)
    >>> npconv.fold_patches(ones, (4, 4), 3)[0, 0]   # how many windows cover each pixel
    array([[1, 2, 2, 1],
           [2, 4, 4, 2],
           [2, 4, 4, 2],
           [1, 2, 2, 1]])
    """
    g = prepare_data("grad_patches", grad_patches)
    nd = spatial_rank(kernel_size, spatial_rank(input_size, 2))
    size = as_tuple(input_size, nd, "input_size", minimum=1)
    g, batched = _batched(g, "grad_patches", 2 * nd,
                          f"(N, C, *kernel_size, *out_size) or (C, ...) for {nd}-d",
                          kernel_size, input_size)
    geometry = ConvGeometry.build(
        size, kernel_size, stride, padding, dilation, padding_mode, input_name="input_size"
    )
    expected = g.shape[:2] + geometry.kernel + geometry.out_size
    if tuple(g.shape) != expected:
        got = tuple(g.shape) if batched else tuple(g.shape[1:])
        raise ValueError(
            f"grad_patches must have shape {expected if batched else expected[1:]} for "
            f"input_size={size}, kernel_size={geometry.kernel}, stride={geometry.stride}, "
            f"padding={geometry.pads}, dilation={geometry.dilation}; got {got}"
        )
    out = _fold(g, geometry, "input_size")
    return out if batched else out[0]


def im2col(
    x: Any,
    kernel_size: IntOrTuple,
    *,
    dilation: IntOrTuple = 1,
    padding: Padding = 0,
    stride: IntOrTuple = 1,
    padding_mode: str = "zeros",
    out: Any = None,
) -> Any:
    """Every receptive field as a column: ``torch.nn.functional.unfold``.

    Unlike torch, the geometry is keyword-only (torch's positional order,
    ``dilation, padding, stride``, differs from the convolutions' and from
    :func:`patches`', so a positional call would silently mean something else).
    Any dtype works, bool and integers included (torch's unfold refuses them).

    Parameters
    ----------
    x : array, shape (N, C, *spatial) or unbatched (C, *spatial)
        Two spatial dims unless ``kernel_size`` is a tuple of another length.
    kernel_size : int or tuple of ints
    dilation, padding, stride : keyword-only
        As in torch (ints or tuples); ``padding`` may also be 'same', 'valid' or
        'same_upper'.
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}, keyword-only
    out : array, optional, keyword-only
        Where to write the columns, and what is returned: an array of ``x``'s type
        and dtype, of the result's shape, C-contiguous, writeable and sharing no
        memory with ``x``. Reusing one across calls of the same shape spares each call
        fresh pages, which the operating system zeroes before handing them over; that
        costs as much as the copy itself on large columns (the figures are in
        docs/performance.md). Without ``out``, columns of 32 MiB or more are written
        into a buffer of npconv's scratch cache (:func:`npconv.set_scratch_cache`)
        that an earlier result, since dropped, used.

    Returns
    -------
    cols : array, shape (N, C * prod(kernel_size), L), or (C * prod(kernel_size), L)
        Row ``c * prod(k) + flat_kernel_offset``, column = flat output position;
        ``L`` is the number of windows. A new (contiguous, writeable) array of
        ``x``'s dtype, sharing memory with no other live array, or ``out``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.arange(16).reshape(1, 1, 4, 4)
    >>> cols = npconv.im2col(x, kernel_size=2, stride=2)
    >>> cols.shape
    (1, 4, 4)
    >>> cols[0, :, 0]                 # the top-left 2x2 window
    array([0, 1, 4, 5])
    >>> same = npconv.im2col(x, kernel_size=2, stride=2, out=np.empty_like(cols))
    >>> bool((same == cols).all())
    True
    """
    batch, batched, geometry = _patch_setup(x, kernel_size, stride, padding, dilation,
                                            padding_mode, columns=True)
    n, c = batch.shape[:2]
    shape = (n, c) + geometry.kernel + geometry.out_size
    xp = backend.get_array_module(batch)
    if out is None:
        cols = scratch.result(xp, shape, batch.dtype)
    else:
        rows = (c * geometry.kernel_volume, geometry.out_volume)
        check_out(out, batch, (n,) + rows if batched else rows)
        cols = out.reshape(shape)
    elements = n * c * geometry.kernel_volume * geometry.out_volume
    if (geometry.kernel_volume == 1 and not geometry.has_padding
            and geometry.in_size == geometry.out_size):
        # 1x1, no padding, as many outputs as inputs (unit strides, or a single one): the
        # columns are the input, one plain copy
        cols.reshape(batch.shape)[...] = batch
    elif takes_planes(xp, geometry, elements, batch.dtype):
        copy_windows_split(cols, batch, geometry, xp)
    elif (backend.on_host(xp) and geometry.kernel_volume > 1
            and geometry.out_size[-1] <= GATHER_MAX_WIDTH and elements >= GATHER_MIN_ELEMENTS):
        gather_windows(batch, geometry, out=cols)
    else:  # a copy even where the view is contiguous
        view = window_view(pad(batch, geometry), geometry)
        if split_pays(cols.nbytes):
            executor.copy_into(cols, view)
        else:
            cols[...] = view
    if out is not None:
        return out
    cols = cols.reshape(n, c * geometry.kernel_volume, geometry.out_volume)
    return cols if batched else cols[0]


def col2im(
    cols: Any,
    output_size: IntOrTuple,
    kernel_size: IntOrTuple,
    *,
    dilation: IntOrTuple = 1,
    padding: Padding = 0,
    stride: IntOrTuple = 1,
    padding_mode: str = "zeros",
) -> Any:
    """Sum columns back into an image: ``torch.nn.functional.fold``.

    The adjoint of :func:`im2col`. As in torch, ``output_size`` is the size
    of the *image* being rebuilt (the input of the matching ``im2col``), and
    pixels covered by several windows receive the sum of their entries. The
    geometry is keyword-only, as in :func:`im2col`.

    Integer columns are summed in their own dtype, so a sum past the dtype's
    range wraps around silently (NumPy's integer adds); bool columns give a
    logical or. See :func:`fold_patches`.

    Parameters
    ----------
    cols : array, shape (N, C * prod(kernel_size), L) or unbatched (C * prod(kernel_size), L)
    output_size : int or tuple of ints
        Spatial size of the rebuilt image.
    kernel_size : int or tuple of ints
    dilation, padding, stride, padding_mode : keyword-only
        As given to :func:`im2col`.

    Returns
    -------
    array, shape (N, C, *output_size) or (C, *output_size), of the dtype of ``cols``

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.ones((1, 1, 3, 3), dtype=np.int32)
    >>> npconv.col2im(npconv.im2col(x, 2), (3, 3), 2)[0, 0]
    array([[1, 2, 1],
           [2, 4, 2],
           [1, 2, 1]], dtype=int32)
    """
    cols = prepare_data("cols", cols)
    geometry, key = _SETUPS.get(("col2im", array_key(cols), output_size, kernel_size, stride,
                                 padding, dilation, padding_mode))
    if geometry is None:
        geometry = _col2im_setup(cols, output_size, kernel_size, stride, padding, dilation,
                                 padding_mode)
        if key is not None and key[1][1] is not None:
            _SETUPS.put(key, geometry)
    batched = cols if cols.ndim == 3 else cols[None]
    n, rows, length = batched.shape
    channels = rows // geometry.kernel_volume
    out = _fold(batched.reshape((n, channels) + geometry.kernel + geometry.out_size), geometry,
                "output_size")
    return out if cols.ndim == 3 else out[0]


def _col2im_setup(cols: Any, output_size: Any, kernel_size: Any, stride: Any, padding: Any,
                  dilation: Any, padding_mode: Any) -> ConvGeometry:
    """The checked geometry of ``col2im`` (errors name the argument at fault)."""
    nd = spatial_rank(kernel_size, spatial_rank(output_size, 2))
    size = as_tuple(output_size, nd, "output_size", minimum=1)
    check_ndim(cols, "cols", (2, 3), "(N, C*prod(kernel_size), L) or (C*prod(kernel_size), L)")
    geometry = ConvGeometry.build(
        size, kernel_size, stride, padding, dilation, padding_mode, input_name="output_size"
    )
    batched = cols if cols.ndim == 3 else cols[None]
    n, rows, length = batched.shape
    if rows % geometry.kernel_volume:
        raise ValueError(
            f"cols dimension {cols.ndim - 2} (size {rows}) must be divisible by the product "
            f"of kernel_size {geometry.kernel} = {geometry.kernel_volume}"
        )
    if length != geometry.out_volume:
        raise ValueError(
            f"cols has {length} columns, but output_size={size}, kernel_size={geometry.kernel}, "
            f"dilation={geometry.dilation}, padding={geometry.pads}, stride={geometry.stride} "
            f"give {geometry.out_size} = {geometry.out_volume} sliding blocks"
        )
    return geometry
