"""Receptive fields: the patch view, its adjoint, and torch's unfold/fold.

``patches`` is a zero-copy ``as_strided`` view of the (padded) input with
shape (N, C, *kernel, *out); ``fold_patches`` is its adjoint, a scatter-add
(each kernel offset's windows copied into image-sized slabs, then summed).
``im2col``/``col2im`` are the same two maps with the kernel and output axes
flattened, as in ``torch.nn.functional.unfold``/``fold``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import Any

from . import backend, threads, workspace
from ._validate import check_ndim, prepare
from .geometry import ConvGeometry, IntOrTuple, Padding, as_tuple, spatial_rank

# Slab bytes per block of the col2im fold: larger blocks mean fewer NumPy calls,
# which beat cache locality here (measured: 4 MiB against 256 KiB and 1 MiB).
FOLD_BLOCK_BYTES = 4 * 2**20
# Below this output size a scatter-add is not worth handing to threads.
THREADED_FOLD_BYTES = 256 * 2**10
# Threaded folds cut the images into a few blocks per thread, but none whose slabs
# are smaller than this (more, smaller blocks cost more NumPy calls than they balance).
MIN_THREADED_BLOCK_BYTES = 2 * 2**20

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
    nd = geometry.nd
    lead_shape, lead_strides = padded.shape[:-nd], padded.strides[:-nd]
    axis_strides = padded.strides[-nd:]
    shape = lead_shape + geometry.kernel + geometry.out_size
    strides = (
        lead_strides
        + tuple(st * d for st, d in zip(axis_strides, geometry.dilation))
        + tuple(st * s for st, s in zip(axis_strides, geometry.stride))
    )
    return backend.as_strided_view(padded, shape, strides)


def fold_into(out: Any, grad_patches: Any, geometry: ConvGeometry) -> None:
    """``out[...] = fold(grad_patches)``: sum windows (N, C, *kernel, *out) into (N, C, *in).

    NumPy copies between strided views at close to memory speed, but runs
    ufuncs on strided views (a slice-add per kernel offset) several times
    slower than on contiguous arrays. So the windows of each kernel offset are
    *copied* into zero-filled image-sized slabs and the slabs are summed with
    contiguous adds. Offsets whose windows cannot overlap (different phases
    ``k*d % s`` along some axis) share a slab, so a stride-``s`` fold needs
    about ``s**nd`` times fewer slabs than it has kernel offsets.

    The leading (N, C) axes are walked in blocks of about FOLD_BLOCK_BYTES of
    slabs (more slabs than fit are summed in several passes), on several host
    threads when that pays; every output element is summed in the same order
    whatever the thread count. With zero padding the copies are clipped to the
    unpadded image; other padding modes fold into a padded block and apply the
    padding's adjoint.
    """
    zero_padded = geometry.zero_padded
    size = geometry.in_size if zero_padded else geometry.padded_size
    lows = [lo for lo, _ in geometry.pads] if zero_padded else [0] * geometry.nd
    slabs = _fold_slabs(geometry, size, lows)
    xp = backend.get_array_module(out, grad_patches)
    lead = out.shape[: out.ndim - geometry.nd]
    image = max(1, math.prod(size) * out.dtype.itemsize)
    images = math.prod(lead)
    limit = workspace.get_workspace_limit()
    # Slabs summed per pass: as many as FOLD_BLOCK_BYTES (and the workspace limit) hold
    # for one image, at least one (never more than the output itself). This fixes the
    # order of the sums; the thread count only changes how images are blocked.
    per_pass = max(1, min(len(slabs), min(FOLD_BLOCK_BYTES, limit) // image))
    stack_bytes = image * per_pass
    workers = 1
    if backend.backend_of(out).host_threads and images * image >= THREADED_FOLD_BYTES:
        workers = max(1, min(threads.get_num_threads(), limit // stack_bytes))
    budget = max(stack_bytes, min(FOLD_BLOCK_BYTES, limit // workers))
    per_block = max(1, budget // stack_bytes)
    if workers > 1:
        # a few blocks per thread (a multiple of the thread count), handed out as
        # threads come free, but none smaller than MIN_THREADED_BLOCK_BYTES of slabs
        most = max(1, images * stack_bytes // MIN_THREADED_BLOCK_BYTES)
        count = min(4 * workers, most)
        count = max(workers, count - count % workers)
        per_block = min(per_block, -(-images // count))
    direct = zero_padded and len(slabs) == 1  # nothing overlaps: copy straight into out
    blocks = _blocks(lead, per_block)
    first = out[blocks[0]]  # the largest block
    lead_shape = first.shape[: first.ndim - geometry.nd]

    def fold_blocks(share: Iterable[tuple[slice, ...]]) -> None:
        # Every block copies to the same slab positions, so in a single pass the
        # positions no window reaches stay zero from this one fill.
        stack_all = None if direct else xp.zeros((per_pass,) + lead_shape + size, out.dtype)
        padded_all = None if zero_padded else xp.empty(lead_shape + size, out.dtype)
        for block in share:
            o_block, g_block = out[block], grad_patches[block]
            cut = tuple(slice(0, m) for m in o_block.shape[: o_block.ndim - geometry.nd])
            target = o_block if padded_all is None else padded_all[cut]
            for p in range(0, len(slabs), per_pass):
                part = slabs[p : p + per_pass]
                if stack_all is None:
                    stack = target[None]
                    stack[...] = 0
                else:
                    stack = stack_all[(slice(0, len(part)),) + cut]
                    if per_pass < len(slabs):
                        stack[...] = 0
                for slab, copies in zip(stack, part):
                    for to, source in copies:
                        slab[to] = g_block[source]
                if stack_all is not None and p == 0:
                    xp.sum(stack, axis=0, out=target)
                elif stack_all is not None:
                    target += stack.sum(axis=0)
            if padded_all is not None:
                unpad_add(o_block, target, geometry, accumulate=False)

    threads.run_dynamic(fold_blocks, blocks, workers)


def _fold_slabs(
    geometry: ConvGeometry, size: tuple[int, ...], lows: list[int]
) -> list[list[tuple[tuple[Any, ...], tuple[Any, ...]]]]:
    """Per slab, the (target, source) index pairs of the kernel offsets it receives.

    Along an axis, offsets ``k`` with equal phase ``k*d % s`` hit overlapping
    pixels; the j-th offset of every phase goes to slab j of that axis.
    """
    per_axis = []
    for n, k, s, d, o_n, lo in zip(
        size, geometry.kernel, geometry.stride, geometry.dilation, geometry.out_size, lows
    ):
        seen: dict[int, int] = {}
        choices = []
        for offset in range(k):
            slab = seen.get(offset * d % s, 0)
            seen[offset * d % s] = slab + 1
            start = offset * d - lo  # image position of window 0 at this offset
            first = -(start // s) if start < 0 else 0  # ceil(-start / s)
            last = min(o_n - 1, (n - 1 - start) // s) if n - 1 - start >= 0 else -1
            if first <= last:
                target = slice(start + first * s, start + last * s + 1, s)
                choices.append((slab, offset, target, slice(first, last + 1)))
        per_axis.append(choices)
    slabs: dict[tuple[int, ...], list[tuple[tuple[Any, ...], tuple[Any, ...]]]] = {}
    for combo in itertools.product(*per_axis):
        key = tuple(c[0] for c in combo)
        to = (Ellipsis,) + tuple(c[2] for c in combo)
        source = (Ellipsis,) + tuple(c[1] for c in combo) + tuple(c[3] for c in combo)
        slabs.setdefault(key, []).append((to, source))
    return list(slabs.values()) or [[]]


def _blocks(lead: tuple[int, ...], per_block: int) -> list[tuple[slice, ...]]:
    """Index tuples that tile the leading axes, each covering about ``per_block`` images."""
    if len(lead) == 0 or math.prod(lead) <= per_block:
        return [()]
    inner = math.prod(lead[1:])
    if inner <= per_block:
        step = per_block // inner
        return [(slice(i, i + step),) for i in range(0, lead[0], step)]
    return [
        (slice(i, i + 1),) + rest
        for i in range(lead[0])
        for rest in _blocks(lead[1:], per_block)
    ]


# --------------------------------------------------------------------------- public


def _batched_rank(x: Any, kernel_size: IntOrTuple) -> int:
    nd = spatial_rank(kernel_size, x.ndim - 2)
    check_ndim(x, "x", (nd + 2,), f"(N, C, *spatial) for {nd} spatial dims")
    return nd


def patches(
    x: Any,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    padding_mode: str = "zeros",
) -> Any:
    """Read-only view of every receptive field: shape (N, C, *kernel_size, *out_size).

    ``patches(x, k)[n, c, i, j, h, w]`` is the input pixel that kernel tap
    ``(i, j)`` of output position ``(h, w)`` sees. Without padding the view
    shares memory with ``x``; with padding it views a padded copy. Any number
    of spatial dimensions works: the rank is ``len(kernel_size)``, or
    ``x.ndim - 2`` for an int.

    Parameters
    ----------
    x : array, shape (N, C, *spatial)
    kernel_size, stride, dilation : int or tuple of ints
    padding : int, tuple of ints, 'same' or 'valid'
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}

    Returns
    -------
    view : read-only array (N, C, *kernel_size, *out_size)

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
    """
    x = prepare("x", x)
    nd = _batched_rank(x, kernel_size)
    geometry = ConvGeometry.build(
        x.shape[2:], kernel_size, stride, padding, dilation, padding_mode, input_name="x"
    )
    assert geometry.nd == nd
    return window_view(pad(x, geometry), geometry)


def fold_patches(
    grad_patches: Any,
    input_size: IntOrTuple,
    kernel_size: IntOrTuple,
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

    Parameters
    ----------
    grad_patches : array, shape (N, C, *kernel_size, *out_size)
    input_size : int or tuple of ints
        Spatial size of the input that ``patches`` was taken from.
    kernel_size, stride, padding, dilation, padding_mode
        As given to :func:`patches`.

    Returns
    -------
    array (N, C, *input_size)

    Examples
    --------
    >>> import numpy as np, npconv
    >>> ones = np.ones((1, 1, 3, 3, 2, 2))
    >>> npconv.fold_patches(ones, (4, 4), 3)[0, 0]   # how many windows cover each pixel
    array([[1., 2., 2., 1.],
           [2., 4., 4., 2.],
           [2., 4., 4., 2.],
           [1., 2., 2., 1.]])
    """
    g = prepare("grad_patches", grad_patches)
    nd = spatial_rank(kernel_size, spatial_rank(input_size, (g.ndim - 2) // 2))
    size = as_tuple(input_size, nd, "input_size", minimum=1)
    check_ndim(g, "grad_patches", (2 + 2 * nd,), f"(N, C, *kernel_size, *out_size) for {nd}-d")
    geometry = ConvGeometry.build(
        size, kernel_size, stride, padding, dilation, padding_mode, input_name="input"
    )
    expected = g.shape[:2] + geometry.kernel + geometry.out_size
    if tuple(g.shape) != expected:
        raise ValueError(
            f"grad_patches must have shape {expected} for input_size={size}, "
            f"kernel_size={geometry.kernel}, stride={geometry.stride}, "
            f"padding={geometry.pads}, dilation={geometry.dilation}; got {tuple(g.shape)}"
        )
    xp = backend.get_array_module(g)
    out = xp.empty(g.shape[:2] + size, dtype=g.dtype)
    fold_into(out, g, geometry)
    return out


def im2col(
    x: Any,
    kernel_size: IntOrTuple,
    dilation: IntOrTuple = 1,
    padding: Padding = 0,
    stride: IntOrTuple = 1,
    padding_mode: str = "zeros",
) -> Any:
    """Every receptive field as a column: ``torch.nn.functional.unfold``.

    Parameters
    ----------
    x : array, shape (N, C, *spatial) or unbatched (C, *spatial)
        Two spatial dims unless ``kernel_size`` is a tuple of another length.
    kernel_size, dilation, padding, stride
        As in torch (ints or tuples); ``padding`` may also be 'same'/'valid'.
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}

    Returns
    -------
    cols : array, shape (N, C * prod(kernel_size), L), or (C * prod(kernel_size), L)
        Row ``c * prod(k) + flat_kernel_offset``, column = flat output position;
        ``L`` is the number of windows. A new (contiguous) array.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> cols = npconv.im2col(x, kernel_size=2, stride=2)
    >>> cols.shape
    (1, 4, 4)
    >>> cols[0, :, 0]                 # the top-left 2x2 window
    array([0., 1., 4., 5.])
    """
    x = prepare("x", x)
    nd = spatial_rank(kernel_size, 2)
    check_ndim(x, "x", (nd + 1, nd + 2), f"(N, C, *spatial) or (C, *spatial) for {nd}-d")
    batched = x if x.ndim == nd + 2 else x[None]
    view = patches(batched, kernel_size, stride, padding, dilation, padding_mode)
    n, c = view.shape[:2]
    rows, length = c * math.prod(view.shape[2 : 2 + nd]), math.prod(view.shape[2 + nd :])
    xp = backend.get_array_module(view)
    cols = xp.empty(view.shape, dtype=view.dtype)  # a copy even where the view is contiguous
    threads.copy_into(cols, view, backend.backend_of(view).host_threads)
    cols = cols.reshape(n, rows, length)
    return cols if x.ndim == nd + 2 else cols[0]


def col2im(
    cols: Any,
    output_size: IntOrTuple,
    kernel_size: IntOrTuple,
    dilation: IntOrTuple = 1,
    padding: Padding = 0,
    stride: IntOrTuple = 1,
    padding_mode: str = "zeros",
) -> Any:
    """Sum columns back into an image: ``torch.nn.functional.fold``.

    The adjoint of :func:`im2col`. As in torch, ``output_size`` is the size
    of the *image* being rebuilt (the input of the matching ``im2col``), and
    pixels covered by several windows receive the sum of their entries.

    Parameters
    ----------
    cols : array, shape (N, C * prod(kernel_size), L) or unbatched (C * prod(kernel_size), L)
    output_size : int or tuple of ints
        Spatial size of the rebuilt image.
    kernel_size, dilation, padding, stride, padding_mode
        As given to :func:`im2col`.

    Returns
    -------
    array, shape (N, C, *output_size) or (C, *output_size)

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.ones((1, 1, 3, 3))
    >>> npconv.col2im(npconv.im2col(x, 2), (3, 3), 2)[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    """
    cols = prepare("cols", cols)
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
    channels = rows // geometry.kernel_volume
    grad_patches = batched.reshape((n, channels) + geometry.kernel + geometry.out_size)
    xp = backend.get_array_module(cols)
    out = xp.empty((n, channels) + size, dtype=cols.dtype)
    fold_into(out, grad_patches, geometry)
    return out if cols.ndim == 3 else out[0]
