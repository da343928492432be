"""The fast fold (col2im): windows (N, C, *k, *out) summed back into (N, C, *in).

This is the adjoint of the patch view, used by ``col2im``/``fold_patches`` and
by the im2col path's grad input. :func:`npconv.reference.fold` states it in
four lines (a strided slice-add per kernel offset); this version is faster:

NumPy copies between strided views at close to memory speed, but runs ufuncs
on strided views (a slice-add per kernel offset) several times slower than on
contiguous arrays. So the windows of each kernel offset are *copied* into
zero-filled image-sized slabs and the slabs are summed with contiguous adds.
Offsets whose windows cannot overlap (different phases ``k*d % s`` along some
axis) share a slab, so a stride-``s`` fold needs about ``s**nd`` times fewer
slabs than it has kernel offsets.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any

from .. import backend, executor, scratch, workspace
from ..geometry import ConvGeometry
from .windows import fold_compiled

# Slab bytes per block of the fold: larger blocks mean fewer NumPy calls, which beat
# cache locality here (measured: 4 MiB against 256 KiB and 1 MiB).
FOLD_BLOCK_BYTES = 4 * 2**20
# Threaded folds cut the images into a few blocks per thread, but none whose slabs
# are smaller than this (more, smaller blocks cost more NumPy calls than they balance).
MIN_THREADED_BLOCK_BYTES = 2 * 2**20

# Folds of fewer bytes of windows than this run on the calling thread: waking a thread
# cost more than it saved (2 threads against 1, measured on ResNet-18's and U-Net's
# folds: 72 KiB-1.3 MiB of windows ran 1.0-3.8x slower threaded, 2.6 MiB 1.5x faster).
MIN_THREADED_FOLD_BYTES = 2 * 2**20

# Below this many bytes of slabs a fold adds each kernel offset's windows in place
# (scatter_add): the slab copies and sums cost more than they save on tiny images.
SMALL_FOLD_BYTES = 64 * 2**10

# Images of at most this many pixels (zero padding) are folded planes last: the windows
# turned to (*kernel, *out, planes), one add per kernel offset over every plane at
# once. On tiny images each slab copy is a strided run of a few elements: ResNet-18's
# N4 256@6x6 -> 3x3 stride 2 took 0.18 ms by slabs and 0.14 planes last, N4 512@3x3
# 0.25 -> 0.15; at 6x6 stride 1 the two were even, at 8x8 the transposes cost more
# than they saved (0.13 -> 0.26 ms).
LAST_MAX_PIXELS = 36

Copies = list[tuple[tuple[Any, ...], tuple[Any, ...]]]


def fold_slabs(geometry: ConvGeometry, size: tuple[int, ...], lows: list[int]) -> list[Copies]:
    """Per slab, the (target, source) index pairs of the kernel offsets it receives.

    Along an axis, offsets ``k`` with equal phase ``k*d % s`` hit overlapping
    pixels; the j-th offset of every phase goes to slab j of that axis. Cached per
    geometry (building the lists cost more than a small fold itself); read-only.
    """
    return _slabs(geometry, tuple(size), tuple(lows))


@functools.lru_cache(maxsize=512)
def _slabs(geometry: ConvGeometry, size: tuple[int, ...], lows: tuple[int, ...]) -> list[Copies]:
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
    slabs: dict[tuple[int, ...], Copies] = {}
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


@dataclass(frozen=True)
class _Fold:
    """What every block of one fold shares: the slabs, the pass size and the layout."""

    geometry: ConvGeometry
    slabs: list[Copies]
    per_pass: int
    size: tuple[int, ...]
    lead_shape: tuple[int, ...]
    direct: bool  # nothing overlaps: copy straight into out


@dataclass
class _Scratch:
    stack: Any  # (per_pass, *lead, *size) slabs, None when direct
    padded: Any  # (*lead, *size) for non-zero padding modes, else None


def _scratch(xp: Any, fold: _Fold, dtype: Any) -> _Scratch:
    # Every block copies to the same slab positions, so in a single pass the
    # positions no window reaches stay zero from this one fill.
    stack = None if fold.direct else scratch.zeros(
        xp, (fold.per_pass,) + fold.lead_shape + fold.size, dtype)
    padded = None if fold.geometry.zero_padded else scratch.empty(
        xp, fold.lead_shape + fold.size, dtype)
    return _Scratch(stack, padded)


def _fold_block(scratch: _Scratch, block: tuple[slice, ...], out: Any, grad_patches: Any,
                fold: _Fold) -> None:
    """out[block] = fold(grad_patches[block]), one pass of ``per_pass`` slabs at a time."""
    xp = backend.get_array_module(out)
    nd = fold.geometry.nd
    o_block, g_block = out[block], grad_patches[block]
    cut = tuple(slice(0, m) for m in o_block.shape[: o_block.ndim - nd])
    target = o_block if scratch.padded is None else scratch.padded[cut]
    for p in range(0, len(fold.slabs), fold.per_pass):
        part = fold.slabs[p : p + fold.per_pass]
        if scratch.stack is None:
            stack = target[None]
            stack[...] = 0
        else:
            stack = scratch.stack[(slice(0, len(part)),) + cut]
            if fold.per_pass < len(fold.slabs):
                stack[...] = 0
        for slab, copies in zip(stack, part):
            for to, source in copies:
                slab[to] = g_block[source]
        if scratch.stack is not None and p == 0:
            xp.sum(stack, axis=0, out=target)
        elif scratch.stack is not None:
            target += stack.sum(axis=0)
    if scratch.padded is not None:
        from ..patches import unpad_add

        unpad_add(o_block, target, fold.geometry, accumulate=False)


def _per_block(images: int, stack_bytes: int, limit: int, workers: int,
               block_bytes: int = FOLD_BLOCK_BYTES) -> int:
    """Images per block: about ``block_bytes`` of slabs, and with threads a few blocks
    per thread (a multiple of the thread count), none under MIN_THREADED_BLOCK_BYTES."""
    budget = max(stack_bytes, min(block_bytes, limit // workers))
    per_block = max(1, budget // stack_bytes)
    if workers > 1:
        most = max(1, images * stack_bytes // MIN_THREADED_BLOCK_BYTES)
        count = min(4 * workers, most)
        count = max(workers, count - count % workers)
        per_block = min(per_block, -(-images // count))
    return per_block


def fold_into(out: Any, grad_patches: Any, geometry: ConvGeometry) -> None:
    """``out[...] = fold(grad_patches)``: sum windows (N, C, *kernel, *out) into (N, C, *in).

    The leading (N, C) axes are walked in blocks of about FOLD_BLOCK_BYTES of
    slabs (more slabs than fit are summed in several passes), on several host
    threads when that pays; every output element is summed in the same order
    whatever the thread count. With zero padding the copies are clipped to the
    unpadded image; other padding modes fold into a padded block and apply the
    padding's adjoint.
    """
    if fold_compiled(out, grad_patches, geometry):
        return
    zero_padded = geometry.zero_padded
    size = geometry.in_size if zero_padded else geometry.padded_size
    lead = out.shape[: out.ndim - geometry.nd]
    image = max(1, math.prod(size) * out.dtype.itemsize)
    images = math.prod(lead)
    host = backend.backend_of(out).host_threads
    # A 1x1 kernel's windows never overlap: below the threaded size its fold is a
    # zero fill and one strided copy (N4 256@6x6 s2: 28 against 40 us, measured).
    alone = geometry.kernel_volume == 1 and grad_patches.nbytes < MIN_THREADED_FOLD_BYTES
    if alone or images * image * geometry.kernel_volume < SMALL_FOLD_BYTES:
        small_fold(out, grad_patches, geometry, host)
        return
    if (host and zero_padded and geometry.in_volume <= LAST_MAX_PIXELS
            and out.flags.c_contiguous):
        planes_last_fold(out, grad_patches, geometry)
        return
    lows = [lo for lo, _ in geometry.pads] if zero_padded else [0] * geometry.nd
    slabs = fold_slabs(geometry, size, lows)
    xp = backend.get_array_module(out, grad_patches)
    limit = workspace.get_workspace_limit()
    # On a device (no host threads) one block up to the workspace limit: each block and
    # pass is a loop of kernel launches, and cache-sized blocks gain nothing there.
    block_bytes = FOLD_BLOCK_BYTES if host else workspace.device_target()
    # Slabs summed per pass: as many as FOLD_BLOCK_BYTES (and the workspace limit) hold
    # for one image, at least one. This fixes the order of the sums; the thread count
    # only changes how images are blocked.
    per_pass = max(1, min(len(slabs), min(block_bytes, limit) // image))
    stack_bytes = image * per_pass
    threaded = host and grad_patches.nbytes >= MIN_THREADED_FOLD_BYTES
    workers = max(1, min(executor.get_num_threads(), limit // stack_bytes)) if threaded else 1
    blocks = _blocks(lead, _per_block(images, stack_bytes, limit, workers, block_bytes))
    first = out[blocks[0]]  # the largest block
    fold = _Fold(geometry, slabs, per_pass, size, first.shape[: first.ndim - geometry.nd],
                 zero_padded and len(slabs) == 1)
    if not threaded:  # in the caller, one block after another
        scratch = _scratch(xp, fold, out.dtype)
        for block in blocks:
            _fold_block(scratch, block, out, grad_patches, fold)
        return
    per_worker = stack_bytes * math.prod(fold.lead_shape)
    executor.map_chunks(_fold_block, blocks, out, grad_patches, fold,
                        scratch=functools.partial(_scratch, xp, fold, out.dtype),
                        per_worker_bytes=per_worker, arrays=(out,),
                        work_bytes=images * image)


@functools.lru_cache(maxsize=256)
def _tap_spans(geometry: ConvGeometry) -> list[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """(kernel offset, the slices of the padded image its windows cover), per offset."""
    g = geometry
    return [(tap, tuple(slice(t * d, t * d + (m - 1) * s + 1, s) for t, d, s, m in zip(
                tap, g.dilation, g.stride, g.out_size)))
            for tap in itertools.product(*(range(k) for k in g.kernel))]


def planes_last_fold(out: Any, grad_patches: Any, geometry: ConvGeometry) -> None:
    """``out[...] = fold(grad_patches)`` for zero-padded images of few pixels, planes
    last: per block of planes (at most FOLD_BLOCK_BYTES, and the workspace limit, of
    windows and padded images), the windows are transposed to (*kernel, *out, planes)
    and each kernel offset's windows added to a zero padded image (*padded, planes)
    in one contiguous add. ``out`` is C-contiguous."""
    xp = backend.get_array_module(out, grad_patches)
    g, nd = geometry, geometry.nd
    planes = math.prod(out.shape[: out.ndim - nd])
    flat_out = out.reshape(planes, g.in_volume)
    windows = grad_patches.reshape(planes, g.kernel_volume * g.out_volume)
    per_plane = (windows.shape[1] + math.prod(g.padded_size)) * out.dtype.itemsize
    step = max(1, min(FOLD_BLOCK_BYTES, workspace.get_workspace_limit()) // per_plane)
    inner = tuple(slice(lo, lo + n) for (lo, _), n in zip(g.pads, g.in_size))
    for start in range(0, planes, step):
        count = min(planes, start + step) - start
        # (count, K*L) -> (*kernel, *out, count): every plane's windows side by side
        block = xp.ascontiguousarray(windows[start:start + count].T)
        block = block.reshape(g.kernel + g.out_size + (count,))
        frame = scratch.zeros(xp, g.padded_size + (count,), out.dtype)
        for tap, span in _tap_spans(g):
            frame[span] += block[tap]
        flat_out[start:start + count] = frame[inner].reshape(g.in_volume, count).T


def small_fold(out: Any, grad_patches: Any, geometry: ConvGeometry, host: bool) -> None:
    """``out[...] = fold(grad_patches)`` for a fold under SMALL_FOLD_BYTES: on the host,
    floating and complex windows of several kernel offsets take :func:`count_fold`;
    1x1 kernels (one slice-add, 4-5x faster than the bincount on ResNet-18's and
    MobileNetV2's 1x1 folds), integers and devices take :func:`scatter_add`."""
    if host and geometry.kernel_volume > 1 and backend.scalar_kind(out.dtype) in "fc":
        count_fold(out, grad_patches, geometry)
    else:
        scatter_add(out, grad_patches, geometry)


def scatter_add(out: Any, grad_patches: Any, geometry: ConvGeometry) -> None:
    """``out[...] = fold(grad_patches)`` by one strided slice-add per kernel offset.

    The plain form of :func:`fold_into` (as :func:`npconv.reference.fold` writes
    it), used for small folds and for integer dtypes, whose sums then stay in
    ``out``'s dtype (wrapping around on overflow, as NumPy's integer adds do).
    Within one kernel offset no two windows reach the same pixel, so each ``+=``
    is exact.
    """
    zero_padded = geometry.zero_padded
    size = geometry.in_size if zero_padded else geometry.padded_size
    lows = [lo for lo, _ in geometry.pads] if zero_padded else [0] * geometry.nd
    xp = backend.get_array_module(out, grad_patches)
    lead = out.shape[: out.ndim - geometry.nd]
    target = out if zero_padded else scratch.empty(xp, lead + size, out.dtype)
    target[...] = 0
    alone = geometry.kernel_volume == 1  # windows never overlap: copy, nothing to add
    for slab in fold_slabs(geometry, size, lows):
        for to, source in slab:
            if alone:
                target[to] = grad_patches[source]
            else:
                target[to] += grad_patches[source]
    if not zero_padded:
        from ..patches import unpad_add

        unpad_add(out, target, geometry, accumulate=False)


@functools.lru_cache(maxsize=256)
def _source_index(xp: Any, geometry: ConvGeometry, images: int) -> Any:
    """Per element of ``images`` windows (images, *k, *out), flattened: the input pixel
    it reads, ``images * (in_volume + 1)`` bins in all (the last bin of each image
    collects the reads of zero padding). Padding of any mode is a gather, so every
    window element reads exactly one input pixel or a zero."""
    from ..reference import padding_source

    nd, volume = geometry.nd, math.prod(geometry.in_size)
    index, valid = xp.zeros((1,) * 2 * nd, dtype=int), None
    for a, (n, pads, k, d, s, m) in enumerate(zip(
            geometry.in_size, geometry.pads, geometry.kernel, geometry.dilation,
            geometry.stride, geometry.out_size)):
        source = padding_source(xp, n, pads, geometry.padding_mode)
        reads = source[xp.arange(k)[:, None] * d + xp.arange(m)[None, :] * s]  # (k, m)
        shape = [1] * (2 * nd)
        shape[a], shape[nd + a] = k, m
        reads = reads.reshape(shape)
        index = index + reads * math.prod(geometry.in_size[a + 1:])
        valid = reads >= 0 if valid is None else valid & (reads >= 0)
    flat = xp.where(valid, index, volume).ravel()
    return (flat[None, :] + (volume + 1) * xp.arange(images)[:, None]).ravel()


def window_index(xp: Any, geometry: ConvGeometry) -> Any:
    """(*k, *out), flattened: the input pixel that each element of one image's windows
    reads, or ``in_volume`` for a read of zero padding (cached)."""
    return _source_index(xp, geometry, 1)


def with_zero_bin(rows: Any) -> Any:
    """``rows`` (..., V) as a new array (..., V + 1) whose last element is zero: the bin
    that :func:`window_index` sends reads of zero padding to."""
    xp = backend.get_array_module(rows)
    ext = scratch.empty(xp, rows.shape[:-1] + (rows.shape[-1] + 1,), rows.dtype)
    ext[..., -1] = 0
    ext[..., :-1] = rows
    return ext


def count_fold(out: Any, grad_patches: Any, geometry: ConvGeometry) -> None:
    """``out[...] = fold(grad_patches)`` for small real or complex folds on the host: one
    ``bincount`` over the cached input index of every window element (sums in float64,
    then cast), instead of a slice-add per kernel offset."""
    xp = backend.get_array_module(out)
    images = math.prod(out.shape[: out.ndim - geometry.nd])
    index = _source_index(xp, geometry, images)
    flat = grad_patches.reshape(-1)
    if flat.dtype.kind == "c":
        total = (_bin_sums(xp, index, flat.real, images, geometry.in_volume)
                 + 1j * _bin_sums(xp, index, flat.imag, images, geometry.in_volume))
    else:
        total = _bin_sums(xp, index, flat, images, geometry.in_volume)
    out[...] = total.reshape(out.shape)


def _bin_sums(xp: Any, index: Any, weights: Any, images: int, volume: int) -> Any:
    """(images, volume): the sums of ``weights`` per bin of ``index``, zero bins dropped."""
    return xp.bincount(index, weights=weights, minlength=images * (volume + 1)).reshape(
        images, volume + 1)[:, :volume]


def gather_windows(x: Any, geometry: ConvGeometry, out: Any = None) -> Any:
    """Every window of ``x`` (N, C, *in) as a new array (N, C, *kernel, *out), padding of
    any mode included: one ``take`` per image and channel through the cached input
    index of one window set (:func:`count_fold`'s, for a single image), from ``x`` with
    a zero appended per image and channel. Copying the strided window view instead
    walks rows of out_size[-1] elements each, which costs several times more when
    they are short (see ``npconv.patches.GATHER_MAX_WIDTH``). With ``out`` (C-contiguous,
    of that shape and ``x``'s dtype) the windows go there."""
    xp = backend.get_array_module(x)
    nd = geometry.nd
    lead = x.shape[: x.ndim - nd]
    ext = with_zero_bin(x.reshape(math.prod(lead), geometry.in_volume))
    index = window_index(xp, geometry)
    if out is None:
        return ext.take(index, axis=1).reshape(lead + geometry.kernel + geometry.out_size)
    take_columns(ext, index, out.reshape(ext.shape[0], index.size))
    return out


def take_columns(src: Any, index: Any, out: Any) -> None:
    """out (R, len(index)) <- src (R, M)[:, index], every index in range."""
    xp = backend.get_array_module(src)
    if backend.on_host(xp):  # 'clip' (indices are in range) spares take a buffered copy
        xp.take(src, index, axis=1, out=out, mode="clip")
    else:
        out[...] = xp.take(src, index, axis=1)
