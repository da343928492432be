"""Convolution of any spatial rank, its hand-derived gradients, and its adjoint.

Layout: x (N, C, *in), weight (O, C/g, *k), bias (O,), grad_output gy
(N, O, *out); the patch view of x is (N, C, *k, *out). With K = prod(k),
L = prod(out) and g groups, each formula below is one matmul per batch chunk:

    forward      y[n]  = W (g, O/g, C/g*K) @ cols[n] (g, C/g*K, L)
    grad weight  gW    = sum_n gy[n] (g, O/g, L) @ cols[n]^T (g, L, C/g*K)
    grad input   gx    = fold( W^T (g, C/g*K, O/g) @ gy[n] (g, O/g, L) )
    grad bias    gb    = sum over (N, *out) of gy

A transposed convolution is the adjoint of a convolution: its forward is the
grad-input map above, and its gradients are the forward and grad-weight maps.

Algorithms (``algorithm=``; 'auto' picks per call from the shapes):

    'im2col'    the chunked matmuls above (any convolution)
    'direct'    no column buffer: y = sum_k W_k @ x_k over kernel offsets k
                (x_k the input shifted by k); a 1x1 stride-1 convolution is a
                single matmul on the input; depthwise (C/g == 1) turns each
                matmul into an elementwise multiply-add (module ``direct``)
    'winograd'  F(4x4, 3x3) minimal filtering for 2-d 3x3 stride-1 convolutions
                with zero padding (module ``winograd``); grad input is the same
                transform applied to gy with the flipped, channel-swapped weight
                (pads <= 2), grad weight uses im2col
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from . import backend, direct, threads, winograd, workspace
from ._validate import check_ndim, check_same_dtype, prepare
from .geometry import ConvGeometry, IntOrTuple, Padding, as_int, check_padding_mode
from .patches import ChunkPadder, fold_into, window_view

ALGORITHMS = ("auto", "im2col", "direct", "winograd")

# 'auto' uses Winograd when both channel counts per group reach this (measured:
# below it the tile transforms cost more than the 2.25-4x cheaper contraction).
WINOGRAD_MIN_CHANNELS = 16
# ... and when there are enough output positions (batch x spatial) to amortise the
# weight and tile transforms. Measured with idle BLAS threads not spinning: below
# this, im2col won or tied (N1 C32 64x64, N4 C64 56x56, N2 C256 14x14). The grad
# input of a stride-1 convolution is such a forward convolution and chooses alike.
WINOGRAD_MIN_POSITIONS = 32768

# 'auto' differentiates stride-1 convolutions with at most this many input
# channels per group by the direct path (measured faster for C = 3, 8, 16; not 32),
# unless the output channels per group exceed 2 C/g + 16: there im2col's larger
# matmuls won (measured: 16 -> 64 and 16 -> 128 lost by 1.6-2x; 16 -> 48, 8 -> 32 won).
DIRECT_BACKWARD_MAX_CHANNELS = 16


# The im2col copy reads strided windows through phase images (see _Windows.copy_into)
# when the output rows are at least this long and the kernel covers at least this
# many times the stride's area (measured: 7x7 and 5x5 stride 2 gained, 3x3 lost).
PHASE_MIN_WIDTH = 64
PHASE_MIN_OVERLAP = 4


# --------------------------------------------------------------------------- selection


def _winograd_ok(geometry: ConvGeometry, dtype: Any) -> bool:
    return winograd.supported(geometry.kernel, geometry.stride, geometry.dilation, dtype) and (
        geometry.zero_padded
    )


def _full_correlation(geometry: ConvGeometry) -> ConvGeometry | None:
    """Geometry of the stride-1 convolution that maps grad_output to grad_input, if any.

    With stride 1 and zero padding p <= d(k-1) on both sides, the adjoint of a
    convolution is the convolution with the flipped kernel padded d(k-1) - p.
    """
    g = geometry
    if not g.zero_padded or any(s != 1 for s in g.stride):
        return None
    spans = [d * (k - 1) for k, d in zip(g.kernel, g.dilation)]
    if any(lo > span or hi > span for (lo, hi), span in zip(g.pads, spans)):
        return None
    pads = tuple((span - lo, span - hi) for (lo, hi), span in zip(g.pads, spans))
    size = tuple(n + lo + hi - span for n, (lo, hi), span in zip(g.out_size, pads, spans))
    if size != g.in_size:
        return None  # transposed geometry whose trailing windows touch nothing
    return ConvGeometry(g.out_size, g.kernel, g.stride, g.dilation, pads, g.in_size)


def _flipped(xp: Any, weight: Any, groups: int) -> Any:
    """W'[c, o] = W[o, c] flipped in space, per group: (O, C/g, *k) -> (C, O/g, *k), the
    kernel of the adjoint of a stride-1 convolution (contiguous: BLAS wants + strides)."""
    o, cg = weight.shape[:2]
    kernel = weight.shape[2:]
    w = weight.reshape((groups, o // groups, cg) + kernel).swapaxes(1, 2)
    w = xp.flip(w, axis=tuple(range(3, 3 + len(kernel))))
    return xp.ascontiguousarray(w).reshape((groups * cg, o // groups) + kernel)


def _is_depthwise(channels: int, groups: int) -> bool:
    return groups > 1 and channels == groups


def _choose(algorithm: str, geometry: ConvGeometry, groups: int, c: int, o: int,
            dtype: Any, batch: int = 0) -> str:
    """The forward algorithm for one call: 'pointwise', 'direct', 'winograd' or 'im2col'."""
    if algorithm == "winograd":
        if not _winograd_ok(geometry, dtype):
            raise ValueError(
                "algorithm='winograd' needs a 2-d 3x3 convolution with stride 1, dilation 1, "
                f"zero padding and a float32/float64 dtype; got kernel {geometry.kernel}, "
                f"stride {geometry.stride}, dilation {geometry.dilation}, padding_mode "
                f"{geometry.padding_mode!r}, dtype {backend.numpy_dtype(dtype).name}"
            )
        return "winograd"
    if algorithm == "im2col":
        return "im2col"
    if _is_pointwise(geometry):
        return "pointwise"
    if algorithm == "direct":
        return "direct"
    if _is_depthwise(c, groups):
        return "direct"
    positions = batch * geometry.out_volume
    if (
        _winograd_ok(geometry, dtype)
        and min(c // groups, o // groups) >= WINOGRAD_MIN_CHANNELS
        and positions >= WINOGRAD_MIN_POSITIONS
    ):
        return "winograd"
    return "im2col"


# --------------------------------------------------------------------------- batch chunks


def _phase_groups(kernel: int, dilation: int, stride: int) -> list[tuple[int, slice, int, int]]:
    """Kernel offsets k of one axis grouped by phase r = k*d % s: (r, the offsets as a
    slice, first t = k*d // s, step of t). Within a phase both k and t are arithmetic
    progressions, so each group is one strided block of one phase image."""
    groups = []
    for r in range(stride):
        ks = [k for k in range(kernel) if k * dilation % stride == r]
        if ks:
            k_step = ks[1] - ks[0] if len(ks) > 1 else 1
            t_step = (k_step * dilation) // stride
            groups.append((r, slice(ks[0], ks[-1] + 1, k_step), ks[0] * dilation // stride,
                           t_step))
    return groups


def _phase_split(geometry: ConvGeometry) -> bool:
    """Whether im2col reads the windows through per-phase images (see _Windows)."""
    strides = math.prod(geometry.stride)
    return (strides > 1 and geometry.out_size[-1] >= PHASE_MIN_WIDTH
            and geometry.kernel_volume >= PHASE_MIN_OVERLAP * strides)


class _Windows:
    """Patch views of a batch, one chunk at a time, padding each chunk on the fly.

    One instance per worker thread: it owns the padding (and phase) buffers, and
    keeps the last chunk it padded, so the row blocks of one image pad it once.
    """

    def __init__(self, x: Any, geometry: ConvGeometry, chunk: int, view: Any = None):
        self.geometry, self.view = geometry, view
        self.padder = None if view is not None else ChunkPadder(x, geometry, chunk)
        self.phases: Any = None
        self.last: tuple[int, int] | None = None
        self.padded: Any = None
        if self.padder is not None and _phase_split(geometry):
            xp = backend.get_array_module(x)
            q = tuple(-(-p // s) for p, s in zip(geometry.padded_size, geometry.stride))
            shape = geometry.stride + (min(chunk, x.shape[0]), x.shape[1]) + q
            self.phases = xp.empty(shape, dtype=x.dtype)
            self.groups = list(itertools.product(*(
                _phase_groups(k, d, s)
                for k, d, s in zip(geometry.kernel, geometry.dilation, geometry.stride))))

    def __call__(self, start: int, stop: int) -> Any:
        if self.padder is None:
            return self.view[start:stop]
        return window_view(self._padded(start, stop), self.geometry)

    def _padded(self, start: int, stop: int) -> Any:
        assert self.padder is not None
        if self.last != (start, stop):
            self.padded = self.padder(start, stop)
            self.last = (start, stop)
            if self.phases is not None:
                self._split_phases()
        return self.padded

    def _split_phases(self) -> None:
        g = self.geometry
        b = self.padded.shape[0]
        lead = (slice(None), slice(None))
        for r in itertools.product(*(range(s) for s in g.stride)):
            part = self.padded[lead + tuple(slice(i, None, s) for i, s in zip(r, g.stride))]
            self.phases[r][(slice(0, b), slice(None))
                           + tuple(slice(0, n) for n in part.shape[2:])] = part

    def copy_into(self, dst: Any, start: int, stop: int, rows: slice | None = None) -> None:
        """``dst[...] = self(start, stop)``, restricted to the output ``rows`` of the first
        spatial axis; ``dst`` is (b, C, *kernel, *out), any strides.

        With large strided kernels (a 7x7 stride-2 stem) the windows read every
        s-th pixel. Splitting the padded chunk by phase first (``x[r::s]`` per
        axis) turns the windows of all kernel offsets of one phase into a
        unit-stride window view of one phase image: one copy per phase, reading
        contiguous rows, ran 1.2-1.6x faster (measured) for the whole call.
        """
        g = self.geometry
        rows = slice(0, g.out_size[0]) if rows is None else rows
        lead = (slice(None), slice(None))
        if self.phases is None:
            view = self(start, stop)[lead + (slice(None),) * g.nd + (rows,)]
            threads.copy_into(dst, view, backend.backend_of(dst).host_threads)
            return
        self._padded(start, stop)
        b = stop - start
        spans = (rows.stop - rows.start,) + g.out_size[1:]
        firsts = (rows.start,) + (0,) * (g.nd - 1)
        for group in self.groups:
            image = self.phases[tuple(r for r, _, _, _ in group)][:b]
            # window (t_0 + i * t_step + f + j) of the phase image, for kernel slice i
            base = image[lead + tuple(slice(t + f, None) for (_, _, t, _), f in zip(group, firsts))]
            counts = tuple(len(range(k.start, k.stop, k.step)) for _, k, _, _ in group)
            block = backend.as_strided_view(
                base, base.shape[:2] + counts + spans,
                base.strides[:2] + tuple(st * step for st, (_, _, _, step)
                                         in zip(base.strides[2:], group)) + base.strides[2:])
            dst[lead + tuple(k for _, k, _, _ in group)] = block


def _take(flat: Any, shape: tuple[int, ...]) -> Any:
    """The first prod(shape) elements of a flat buffer, as a contiguous array of ``shape``."""
    return flat[: math.prod(shape)].reshape(shape)


def _conj(xp: Any, a: Any) -> Any:
    # torch's gradients of complex convolutions use the conjugate (adjoint) operator.
    return xp.conj(a) if backend.scalar_kind(a.dtype) == "c" else a


# --------------------------------------------------------------------------- kernels


def _forward(
    x: Any, weight: Any, bias: Any, geometry: ConvGeometry, groups: int, algorithm: str,
    view: Any = None,
) -> Any:
    """y (N, O, *out) = conv(x, weight) + bias, chunked over the batch."""
    xp = backend.get_array_module(x, weight)
    n, c = x.shape[:2]
    o = weight.shape[0]
    g, k_vol, length = groups, geometry.kernel_volume, geometry.out_volume
    if n == 0 or length == 0:
        return xp.empty((n, o) + geometry.out_size, dtype=x.dtype)
    w = weight.reshape(g, o // g, (c // g) * k_vol)  # (g, O/g, C/g*K)
    method = ("im2col" if view is not None
              else _choose(algorithm, geometry, g, c, o, x.dtype, batch=n))
    try:
        if method == "winograd":
            return winograd.conv2d(x, weight, bias, geometry.pads, g)
        if method == "direct" and not _is_pointwise(geometry):
            return direct.forward(x, weight, bias, geometry, g)
    except MemoryError:
        if algorithm != "auto":
            raise
        method = "im2col"  # the fast path's buffers do not fit; im2col's may

    y = xp.empty((n, o) + geometry.out_size, dtype=x.dtype)
    if method == "pointwise":
        _forward_pointwise(xp, x, w, bias, y, geometry, g)
    else:
        _forward_im2col(xp, x, w, bias, y, geometry, g, view)
    return y


def _image_chunk(item: tuple[Any, ...]) -> tuple[int, int]:
    """The images (start, stop) of a chunk: its row blocks share their preparation."""
    return item[0], item[1]


def _row_blocks(n: int, images: int, rows: int, out0: int) -> list[tuple[int, int, slice]]:
    """(start, stop, output rows) of every chunk: the batch in ``images``, each image's
    first output axis in blocks of ``rows``."""
    return [(start, min(n, start + images), slice(r, min(out0, r + rows)))
            for start in range(0, n, images) for r in range(0, out0, rows)]


def _out_block(y: Any, start: int, stop: int, rows: slice, g: int) -> Any:
    """y[start:stop] restricted to the output ``rows``, as (b, g, O/g, rows * rest): a view."""
    b, o, out0 = stop - start, y.shape[1], y.shape[2]
    rest = math.prod(y.shape[3:])
    block = y[start:stop].reshape(b, g, o // g, out0, rest)[:, :, :, rows]
    return block.reshape(b, g, o // g, (rows.stop - rows.start) * rest)


def _forward_pointwise(xp: Any, x: Any, w: Any, bias: Any, y: Any, geometry: ConvGeometry,
                       g: int) -> None:
    """1x1, stride 1, no padding: the input already is its im2col matrix."""
    n, c = x.shape[:2]
    o = y.shape[1]
    out0 = geometry.out_size[0]
    per_row = (c + o) * (geometry.out_volume // out0) * x.dtype.itemsize
    images, rows = workspace.row_chunks(per_row, out0, n)
    items = _row_blocks(n, images, rows, out0)
    bias_col = None if bias is None else bias.reshape(1, g, o // g, 1)

    def run(share: list[tuple[int, int, slice]]) -> None:
        for start, stop, block_rows in share:
            out = _out_block(y, start, stop, block_rows, g)
            xp.matmul(w, _out_block(x, start, stop, block_rows, g), out=out)
            if bias_col is not None:
                out += bias_col

    threads.run_shares(run, items, 0, x)


def _backward_pointwise(xp: Any, gy: Any, x: Any, w_t: Any, geometry: ConvGeometry, g: int,
                        grad_input: Any, grad_weight: Any) -> None:
    """Gradients of a 1x1 stride-1 convolution (``x`` already conjugated, or None
    when only grad_input is wanted), per chunk of images or of rows."""
    n, o = gy.shape[:2]
    c = w_t.shape[1] * g
    out0 = geometry.out_size[0]
    per_row = (c + o) * (geometry.out_volume // out0) * gy.dtype.itemsize
    images, rows = workspace.row_chunks(per_row, out0, n)
    lanes = threads.lanes_of(_row_blocks(n, images, rows, out0),
                             0 if grad_weight is None else grad_weight.nbytes)
    partials: list[Any] = [None] * len(lanes)

    def run(indices: Iterable[int]) -> None:
        part = None if grad_weight is None else xp.empty_like(grad_weight)
        for index in indices:
            acc = None
            for start, stop, block_rows in lanes[index]:
                gy_b = _out_block(gy, start, stop, block_rows, g)  # (b, g, O/g, L')
                if grad_weight is not None:
                    x_b = _out_block(x, start, stop, block_rows, g)
                    for i in range(stop - start):
                        # (g, O/g, L') @ (g, L', C/g) -> (g, O/g, C/g), summed over the lane
                        if acc is None:
                            acc = xp.matmul(gy_b[i], x_b[i].transpose(0, 2, 1))
                        else:
                            xp.matmul(gy_b[i], x_b[i].transpose(0, 2, 1), out=part)
                            acc += part
                if grad_input is not None:
                    # (g, C/g, O/g) @ (b, g, O/g, L') -> (b, g, C/g, L')
                    xp.matmul(w_t, gy_b, out=_out_block(grad_input, start, stop, block_rows, g))
            partials[index] = acc

    threads.run_lanes(run, len(lanes), images * rows * per_row, gy)
    if grad_weight is not None:
        threads.sum_lanes(grad_weight, partials)


def _forward_im2col(xp: Any, x: Any, w: Any, bias: Any, y: Any, geometry: ConvGeometry,
                    g: int, view: Any) -> None:
    """y = W @ cols per chunk of images (or of output rows), straight into NCHW."""
    n, c = x.shape[:2]
    o = y.shape[1]
    k_vol = geometry.kernel_volume
    # Without groups the bias rides along in the matmul: a row of ones under the
    # columns and the bias as an extra weight column save a pass over the output.
    fused = bias is not None and g == 1
    depth = c * k_vol + fused
    if fused:
        w = xp.concatenate([w[0], bias.reshape(o, 1)], axis=1)[None]  # (1, O, C*K + 1)
    out0 = geometry.out_size[0]
    rest = geometry.out_volume // out0
    if view is None and _phase_split(geometry) and geometry.zero_padded:
        _forward_phases(xp, x, w, bias if not fused else None, y, geometry, g, depth)
        return
    images, rows = workspace.row_chunks(depth * rest * x.dtype.itemsize, out0, n)
    items = _row_blocks(n, images, rows, out0)
    span = rows * rest
    per_worker = (depth * span * images + c * math.prod(geometry.padded_size) * images
                  ) * x.dtype.itemsize
    bias_col = None if bias is None or fused else bias.reshape(1, g, o // g, 1)

    def run(share: list[tuple[int, int, slice]]) -> None:
        windows = _Windows(x, geometry, images, view)
        # (images, C*K [+1], span): a chunk with fewer rows uses a prefix of each row
        flat = xp.empty((images, depth, span), dtype=x.dtype)
        if fused:
            flat[:, -1, :] = 1  # never overwritten below
        for start, stop, block_rows in share:
            b, length = stop - start, (block_rows.stop - block_rows.start) * rest
            block = flat[:b, :, :length]
            cols = block[:, : c * k_vol].reshape(
                (b, c) + geometry.kernel + (block_rows.stop - block_rows.start,)
                + geometry.out_size[1:])
            windows.copy_into(cols, start, stop, block_rows)
            out = _out_block(y, start, stop, block_rows, g)
            # (g, O/g, C/g*K [+1]) @ (b, g, C/g*K [+1], rows) -> (b, g, O/g, rows), in NCHW
            xp.matmul(w, block.reshape(b, g, depth // g, length), out=out)
            if bias_col is not None:
                out += bias_col

    threads.run_shares(run, items, per_worker, x, w, key=_image_chunk)


class _Phases:
    """Phase images of the zero-padded input of a strided convolution, flattened.

    Phase image r, P_r[u] = xpad[s u + r] per axis, holds every pixel that kernel
    offsets k with k d = r (mod s) read: offset k's windows are P_r shifted by
    t = k d // s. Flattened over its spatial axes (row pitch ``pitch``), the windows
    of a block of output rows are one contiguous run of P_r per channel and offset,
    starting ``offsets[k]`` further on; the run's positions past each row's output
    width are junk (they read the next pixels of P_r, or of the next plane: hence
    ``slack`` elements after the last plane). Each input pixel lies in exactly one
    phase image.
    """

    def __init__(self, geometry: ConvGeometry, channels: int, images: int):
        g = self.geometry = geometry
        self.q = q = tuple(-(-p // s) for p, s in zip(g.padded_size, g.stride))
        self.pitch = math.prod(q[1:])  # elements per phase row
        self.plane = math.prod(q)
        self.count = math.prod(g.stride)
        self.channels, self.images = channels, images
        self.groups = list(itertools.product(*(
            _phase_groups(k, d, s) for k, d, s in zip(g.kernel, g.dilation, g.stride))))
        steps = [math.prod(q[a + 1:]) for a in range(g.nd)]
        self.taps = []  # per kernel offset (row-major): (phase index, flat offset)
        for k in itertools.product(*(range(n) for n in g.kernel)):
            index, offset = 0, 0
            for a, (ka, d, s) in enumerate(zip(k, g.dilation, g.stride)):
                index = index * s + ka * d % s
                offset += ka * d // s * steps[a]
            self.taps.append((index, offset))
        self.slack = max(offset for _, offset in self.taps) + self.pitch
        self.size = self.count * images * channels * self.plane + self.slack

    def zeros(self, xp: Any, dtype: Any) -> Any:
        return xp.zeros(self.size, dtype=dtype)

    def view(self, buf: Any) -> Any:
        """(count, images, C, *q) over a buffer from :meth:`zeros`."""
        return buf[: self.size - self.slack].reshape(
            (self.count, self.images, self.channels) + self.q)

    def parts(self) -> Iterator[tuple[int, tuple[slice, ...], tuple[slice, ...]]]:
        """(phase index, slices of a phase image, slices of the unpadded input, both
        spatial only) for every phase that holds input pixels."""
        g = self.geometry
        for index, r in enumerate(itertools.product(*(range(s) for s in g.stride))):
            dst, src = [], []
            for size, (lo, _), ra, s, qa in zip(g.in_size, g.pads, r, g.stride, self.q):
                u0 = max(0, -((ra - lo) // s))  # first u with s u + r - lo >= 0
                u1 = min(qa, -(-(size + lo - ra) // s))  # one past the last inside x
                if u0 >= u1:
                    break
                dst.append(slice(u0, u1))
                first = s * u0 + ra - lo
                src.append(slice(first, first + s * (u1 - u0 - 1) + 1, s))
            else:
                yield index, tuple(dst), tuple(src)

    def fill(self, buf: Any, x: Any) -> None:
        """The phase images of ``x`` (b, C, *in) into ``buf``; their zero border stays
        as :meth:`zeros` made it (the same positions are written every time)."""
        phases = self.view(buf)
        lead = (slice(0, x.shape[0]), slice(None))
        for index, dst, src in self.parts():
            phases[index][lead + dst] = x[(slice(None), slice(None)) + src]

    def unfill(self, buf: Any, out: Any) -> None:
        """``out`` (b, C, *in) <- the input pixels of the phase images in ``buf``."""
        phases = self.view(buf)
        lead = (slice(0, out.shape[0]), slice(None))
        for index, dst, src in self.parts():
            out[(slice(None), slice(None)) + src] = phases[index][lead + dst]

    def group_views(self, buf: Any, length: int) -> list[tuple[tuple[slice, ...], Any]]:
        """Per phase group (see _phase_groups): the kernel slices it covers and one view
        of all its offsets' runs, (images, C, *counts, length), made once per buffer
        (as_strided costs ~10 us; slicing the view per chunk far less)."""
        item, steps = buf.itemsize, [math.prod(self.q[a + 1:]) for a in range(len(self.q))]
        views = []
        for group in self.groups:
            index = 0
            for (r, _, _, _), s in zip(group, self.geometry.stride):
                index = index * s + r
            first = index * self.images * self.channels * self.plane + sum(
                t * st for (_, _, t, _), st in zip(group, steps))
            counts = tuple(len(range(k.start, k.stop, k.step)) for _, k, _, _ in group)
            view = backend.as_strided_view(
                buf[first:], (self.images, self.channels) + counts + (length,),
                (self.channels * self.plane * item, self.plane * item)
                + tuple(step * st * item for (_, _, _, step), st in zip(group, steps))
                + (item,))
            views.append(((slice(None), slice(None)) + tuple(k for _, k, _, _ in group), view))
        return views

    def flat(self, buf: Any, index: int, offset: int, b: int, length: int,
             writable: bool = False) -> Any:
        """Runs [offset, offset + length) of phase ``index``, (b, C, length), a view
        (disjoint runs: ``length`` never exceeds a plane)."""
        start = index * self.images * self.channels * self.plane + offset
        item = buf.itemsize
        make = backend.as_strided_target if writable else backend.as_strided_view
        return make(buf[start:], (b, self.channels, length),
                    (self.channels * self.plane * item, self.plane * item, item))


# The strided backward goes through flattened phase images (_backward_phases) where
# the forward does (large kernels, long output rows: 7x7 stride 2 gained 5%, 3x3 stride
# 2 layers tied or lost, measured), while their rows carry at most this fraction of
# junk columns beyond the output width.
PHASE_MAX_JUNK = 0.125


def _phase_backward(geometry: ConvGeometry, view: Any) -> bool:
    g = geometry
    if view is not None or not _phase_split(g) or not g.zero_padded:
        return False
    pitch = math.prod(-(-p // s) for p, s in zip(g.padded_size[1:], g.stride[1:]))
    return pitch <= (1 + PHASE_MAX_JUNK) * math.prod(g.out_size[1:])


def _forward_phases(xp: Any, x: Any, w: Any, bias: Any, y: Any, geometry: ConvGeometry,
                    g: int, depth: int) -> None:
    """im2col forward of a large strided kernel (a 7x7 stride-2 stem), zero padding.

    The columns of a block of output rows are a few copies of long runs of the
    flattened phase images (see _Phases; the offsets of one phase are one
    overlapping view), not one short row per output row; the matmul computes the
    junk positions of each row's extra columns too (a few percent), dropped when
    its rows are copied into y. ``w`` is (g, O/g, depth) with the bias as its last
    column where ``depth`` counts a row of ones (then ``bias`` is None).
    """
    n, c = x.shape[:2]
    o = y.shape[1]
    fused = depth > c * geometry.kernel_volume
    out0 = geometry.out_size[0]
    probe = _Phases(geometry, c, 1)
    pitch = probe.pitch
    images, rows = workspace.row_chunks(depth * pitch * x.dtype.itemsize, out0, n)
    items = _row_blocks(n, images, rows, out0)
    phases = _Phases(geometry, c, images)
    q = phases.q
    per_worker = (phases.size + (depth + o) * rows * pitch * images) * x.dtype.itemsize
    bias_col = None if bias is None else bias.reshape(1, g, o // g, 1)

    def run(share: Iterable[tuple[int, int, slice]]) -> None:
        buf = phases.zeros(xp, x.dtype)
        cols_buf = xp.empty((images, depth, rows * pitch), dtype=x.dtype)
        if fused:
            cols_buf[:, -1, :] = 1
        ext_buf = xp.empty((images, o, rows * pitch), dtype=x.dtype)
        views = phases.group_views(buf, out0 * pitch)  # every output row's runs
        last = None
        for start, stop, block_rows in share:
            b, nr = stop - start, block_rows.stop - block_rows.start
            if last != (start, stop):
                phases.fill(buf, x[start:stop])
                last = (start, stop)
            length = nr * pitch
            cols = cols_buf[:b, :, :length]
            cols_k = cols[:, : depth - fused].reshape((b, c) + geometry.kernel + (length,))
            runs = slice(block_rows.start * pitch, block_rows.start * pitch + length)
            for target, view in views:
                cols_k[target] = view[:b, ..., runs]
            ext = ext_buf[:b, :, :length]
            # (g, O/g, depth) @ (b, g, depth/g, length) -> (b, g, O/g, length), junk included
            xp.matmul(w, cols.reshape(b, g, depth // g, length),
                      out=ext.reshape(b, g, o // g, length))
            valid = ext.reshape((b, o, nr) + q[1:])[
                (slice(None),) * 3 + tuple(slice(0, m) for m in geometry.out_size[1:])]
            y[start:stop][(slice(None), slice(None), block_rows)] = valid
            if bias_col is not None:
                _out_block(y, start, stop, block_rows, g)[...] += bias_col

    threads.run_shares(run, items, per_worker, x, w, key=_image_chunk)


def _backward_phases(xp: Any, gy: Any, x: Any, w_adj: Any, geometry: ConvGeometry, g: int,
                     grad_input: Any, grad_weight: Any) -> None:
    """Both gradients of a strided convolution through flattened phase images (zero
    padding; ``x`` already conjugated, or None without ``grad_weight``).

    grad_output goes into the phase layout (zero at the junk positions), so that
    gW = sum_n gy_ext (O, L) @ runs^T (L, C*K) — the junk meets zeros — and the
    column gradient W^T gy_ext adds back into the phase images as long runs per
    offset, which then scatter to the input pixels (each lies in one phase). No
    window copy or fold runs over short rows.
    """
    n, o = gy.shape[:2]
    c = w_adj.shape[1] * g
    cg, og = c // g, o // g
    k_vol = geometry.kernel_volume
    dtype = gy.dtype
    probe = _Phases(geometry, c, 1)
    out0, pitch = geometry.out_size[0], probe.pitch
    length = out0 * pitch  # positions per image, junk included
    per_image = ((c * k_vol + o) * length + probe.size) * dtype.itemsize
    chunk = workspace.chunk_length(per_image, n)
    phases = _Phases(geometry, c, chunk)
    lanes = threads.lanes_of(list(range(0, n, chunk)),
                             0 if grad_weight is None else grad_weight.nbytes)
    partials: list[Any] = [None] * len(lanes)
    w3 = w_adj.reshape(g, og, cg * k_vol)
    valid = (slice(None), slice(None)) + tuple(slice(0, m) for m in geometry.out_size[1:])

    def run(indices: Iterable[int]) -> None:
        # x's phase images (their zero border written once) | grad input's, summed anew
        # per chunk
        x_buf = phases.zeros(xp, dtype) if grad_weight is not None else None
        g_buf = phases.zeros(xp, dtype) if grad_input is not None else None
        gy_ext = xp.zeros((o, chunk, length), dtype=dtype)  # its junk positions stay zero
        cols_flat = xp.empty(g * cg * k_vol * chunk * length, dtype=dtype)
        part = xp.empty((g, cg * k_vol, og), dtype=dtype)
        # every offset's runs as a view of all the chunk's images, made once (as_strided
        # costs ~10 us, slicing far less)
        x_runs = [] if x_buf is None else [phases.flat(x_buf, phase, offset, chunk, length)
                                           for phase, offset in phases.taps]
        g_runs = [] if g_buf is None else [
            phases.flat(g_buf, phase, offset, chunk, length, writable=True)
            for phase, offset in phases.taps]
        for index in indices:
            acc = xp.zeros_like(part)
            for start in lanes[index]:
                stop = min(n, start + chunk)
                b = stop - start
                gy_ext[:, :b].reshape((o, b, out0) + phases.q[1:])[
                    (slice(None),) + valid] = xp.moveaxis(gy[start:stop], 0, 1)
                gy_2d = gy_ext[:, :b].reshape(g, og, b * length)
                # (C, K, b, L), contiguous whatever b, so that its reshapes are views
                cols = cols_flat[: c * k_vol * b * length].reshape(g, cg, k_vol, b, length)
                if x_buf is not None:
                    phases.fill(x_buf, x[start:stop])
                    for k, runs in enumerate(x_runs):
                        cols[:, :, k] = runs[:b].reshape(b, g, cg, length).transpose(1, 2, 0, 3)
                    # (g, C/g*K, bL) @ (g, bL, O/g) -> (g, C/g*K, O/g), summed over the lane
                    xp.matmul(cols.reshape(g, cg * k_vol, b * length),
                              gy_2d.transpose(0, 2, 1), out=part)
                    acc += part
                if g_buf is not None:
                    # column gradient (g, C/g*K, bL) = W^T (g, C/g*K, O/g) @ gy_ext, zero at
                    # the junk positions, added back run by run
                    grad_cols = cols
                    xp.matmul(w3.transpose(0, 2, 1), gy_2d,
                              out=grad_cols.reshape(g, cg * k_vol, b * length))
                    g_buf[...] = 0
                    for k, target in enumerate(g_runs):
                        target[:b] += grad_cols[:, :, k].reshape(c, b, length).transpose(1, 0, 2)
                    phases.unfill(g_buf, grad_input[start:stop])
            partials[index] = acc

    per_worker = chunk * per_image
    threads.run_lanes(run, len(lanes), per_worker, gy, x)
    if grad_weight is not None:
        # the lanes sum gW transposed, (g, C/g*K, O/g)
        total = xp.zeros((g, cg * k_vol, og), dtype=dtype)
        threads.sum_lanes(total, partials)
        grad_weight[...] = total.transpose(0, 2, 1)


def _is_pointwise(geometry: ConvGeometry) -> bool:
    return (
        geometry.kernel_volume == 1
        and all(s == 1 for s in geometry.stride)
        and not geometry.has_padding
        and geometry.in_size == geometry.out_size
    )


def _backward(
    grad_output: Any,
    x: Any,
    weight: Any,
    geometry: ConvGeometry,
    groups: int,
    need_input: bool = True,
    need_weight: bool = True,
    input_channels: int | None = None,
    view: Any = None,
    adjoint: bool = True,
    algorithm: str = "auto",
) -> tuple[Any, Any]:
    """(grad_input, grad_weight) of y = conv(x, weight); either may be skipped (None).

    ``x`` may be None when only grad_input is needed (then ``input_channels``
    gives C): that is the forward of a transposed convolution, which for
    complex dtypes is the transpose, not the adjoint (``adjoint=False``).
    """
    xp = backend.get_array_module(grad_output, x, weight)
    gy = grad_output
    n, o = gy.shape[:2]
    c = x.shape[1] if x is not None else input_channels
    assert c is not None
    g, k_vol, length = groups, geometry.kernel_volume, geometry.out_volume
    cg, og = c // g, o // g
    dtype = gy.dtype
    # The pointwise and im2col paths below write every element of grad_input.
    grad_input: Any = xp.empty((n, c) + geometry.in_size, dtype=dtype) if need_input else None
    grad_weight: Any = xp.zeros((g, og, cg * k_vol), dtype=dtype) if need_weight else None
    w_adj = _conj(xp, weight) if adjoint else weight
    w_t = w_adj.reshape(g, og, cg * k_vol).transpose(0, 2, 1)  # (g, C/g*K, O/g)
    if n == 0 or length == 0:
        if grad_input is not None:
            grad_input[...] = 0
        return grad_input, _weight_shape(grad_weight, weight)

    method = ("im2col" if view is not None
              else _choose(algorithm, geometry, g, c, o, dtype, batch=n))
    if (algorithm == "auto" and view is None and method == "im2col"
            and cg <= DIRECT_BACKWARD_MAX_CHANNELS and og <= 2 * cg + 16
            and all(s == 1 for s in geometry.stride)):
        # Few input channels: im2col's column fold runs over short rows, while the
        # direct path's stride-1 flat layout adds each kernel offset as long 1-d runs.
        method = "direct"
    try:
        if method == "direct":
            x_adj = None if x is None else _conj(xp, x)
            flipped = _full_correlation(geometry) if (c == g == o) else None
            if need_input and flipped is not None:
                # Depthwise, stride 1: grad input is itself a depthwise convolution of gy
                # with the flipped kernel, padded d(k-1)-p, which the forward does fastest.
                gi = direct.forward(gy, _flipped(xp, w_adj, g), None, flipped, g)
                _, gw = direct.backward(gy, x_adj, w_adj, geometry, g, False, need_weight, c)
            else:
                gi, gw = direct.backward(gy, x_adj, w_adj, geometry, g, need_input,
                                         need_weight, c)
            return gi, _weight_shape(gw, weight)
        full = (_full_correlation(geometry) if need_input and view is None
                and method != "pointwise" else None)
        if full is not None:
            # Stride 1: grad input is the convolution of gy with the flipped kernel, its
            # channel axes swapped, padded d(k-1) - p. The forward paths (Winograd, im2col
            # by rows) gather windows instead of scatter-adding them, so they are faster.
            grad_input = _forward(gy, _flipped(xp, w_adj, g), None, full, g, algorithm)
            if not need_weight:
                return grad_input, None
            _, grad_weight = _backward(gy, x, weight, geometry, g, need_input=False,
                                       algorithm=algorithm)
            return grad_input, grad_weight
        if method in ("im2col", "winograd") and _phase_backward(geometry, view):
            _backward_phases(xp, gy, _conj(xp, x) if need_weight else None, w_adj, geometry,
                             g, grad_input, grad_weight)
            return grad_input, _weight_shape(grad_weight, weight)
    except MemoryError:
        if algorithm != "auto":
            raise
        method = "im2col"  # the fast path's buffers do not fit; im2col's may

    if method == "pointwise":
        _backward_pointwise(xp, gy, _conj(xp, x) if need_weight else None, w_t, geometry, g,
                            grad_input, grad_weight)
        return grad_input, _weight_shape(grad_weight, weight)

    if need_weight and method == "winograd":
        # the transposed Winograd algorithm: a quarter of im2col's flops (winograd.py)
        grad_weight = winograd.grad_weight(gy, x, geometry.pads, g)
        need_weight = False
        if not need_input:
            return None, _weight_shape(grad_weight, weight)
    if need_weight and view is None and all(s == 1 for s in geometry.stride):
        # Stride 1: columns of long shifted rows beat im2col's windows (direct.py)
        grad_weight = direct.grad_weight_flat(gy, _conj(xp, x), geometry, g)
        need_weight = False
        if not need_input:
            return None, _weight_shape(grad_weight, weight)
    per_image = (c * k_vol + o) * length * dtype.itemsize
    chunk = workspace.chunk_length(per_image, n)
    lanes = threads.lanes_of(list(range(0, n, chunk)), grad_weight.nbytes if need_weight else 0)
    partials: list[Any] = [None] * len(lanes)
    nd = geometry.nd

    def run(indices: Iterable[int]) -> None:
        windows = _Windows(x, geometry, chunk, view) if need_weight else None
        flat = xp.empty(chunk * c * k_vol * length, dtype=dtype)
        flat_gy = xp.empty(chunk * o * length, dtype=dtype)
        partial = xp.empty_like(grad_weight) if need_weight else None
        for index in indices:
            partials[index] = _backward_lane(lanes[index], windows, flat, flat_gy, partial)

    def _backward_lane(lane: Sequence[int], windows: Any, flat: Any, flat_gy: Any,
                       partial: Any) -> Any:
        acc = None
        for start in lane:
            stop = min(n, start + chunk)
            b = stop - start
            # Columns laid out (C, *k, b, *out) so that b and L merge into one contraction axis.
            cols = _take(flat, (c,) + geometry.kernel + (b,) + geometry.out_size)
            cols_2d = cols.reshape(g, cg * k_vol, b * length)
            gy_c = _take(flat_gy, (o, b) + geometry.out_size)
            gy_c[...] = xp.moveaxis(gy[start:stop], 0, 1)
            gy_2d = gy_c.reshape(g, og, b * length)
            if need_weight:
                assert windows is not None
                windows.copy_into(xp.moveaxis(cols, 1 + nd, 0), start, stop)
                # (g, O/g, bL) @ (g, bL, C/g*K) -> (g, O/g, C/g*K), summed over the lane
                cols_t = _conj(xp, cols_2d).transpose(0, 2, 1)
                if acc is None:
                    acc = xp.matmul(gy_2d, cols_t)
                else:
                    xp.matmul(gy_2d, cols_t, out=partial)
                    acc += partial
            if need_input:
                # (g, C/g*K, O/g) @ (g, O/g, bL) -> (g, C/g*K, bL): the column gradient, then fold
                xp.matmul(w_t, gy_2d, out=cols_2d)
                fold_into(grad_input[start:stop], xp.moveaxis(cols, 1 + nd, 0), geometry)
        return acc

    per_worker = (chunk * (c * k_vol + o) * length + c * math.prod(geometry.padded_size)
                  ) * dtype.itemsize
    threads.run_lanes(run, len(lanes), per_worker, gy, x)
    if need_weight:
        threads.sum_lanes(grad_weight, partials)
    return grad_input, _weight_shape(grad_weight, weight)


def _weight_shape(grad_weight: Any, weight: Any) -> Any:
    return None if grad_weight is None else grad_weight.reshape(weight.shape)


def _sum_bias(grad_output: Any) -> Any:
    # einsum's sum-of-products loop ran 3x faster here than sum over axes (0, 2, ...)
    xp = backend.get_array_module(grad_output)
    spatial = "abcdefghijklm"[: grad_output.ndim - 2]
    return xp.einsum(f"no{spatial}->o", grad_output)


# --------------------------------------------------------------------------- validation


def _check_algorithm(algorithm: object) -> str:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    return algorithm  # type: ignore[return-value]


def _check_groups(groups: object, in_channels: int, out_channels: int) -> int:
    g = as_int(groups, "groups")
    if g < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    if in_channels % g:
        raise ValueError(f"groups={g} must divide the {in_channels} input channels")
    if out_channels % g:
        raise ValueError(f"groups={g} must divide the {out_channels} output channels")
    return g


def _prepare_arrays(nd: int | None, x: Any, weight: Any, bias: Any) -> tuple[Any, Any, Any, int]:
    backend.backend_of(x, weight, bias)  # TypeError on a NumPy/CuPy mix
    x = prepare("x", x)
    weight = prepare("weight", weight)
    if bias is not None:
        bias = prepare("bias", bias)
    check_same_dtype(x=x, weight=weight, bias=bias)
    if nd is None:
        if weight.ndim < 3:
            raise ValueError(
                f"weight must have shape (out_channels, in_channels/groups, *kernel_size) "
                f"with at least one spatial dim, got shape {tuple(weight.shape)}"
            )
        nd = weight.ndim - 2
    else:
        check_ndim(weight, "weight", (nd + 2,), f"(out, in/groups, *kernel) for {nd}-d")
    check_ndim(x, "x", (nd + 1, nd + 2), f"(N, C, *spatial) or unbatched (C, *spatial), {nd}-d")
    if any(k == 0 for k in weight.shape[2:]):
        raise ValueError(f"weight has an empty kernel: shape {tuple(weight.shape)}")
    return x, weight, bias, nd


def _check_bias(bias: Any, channels: int) -> None:
    if bias is not None and tuple(bias.shape) != (channels,):
        raise ValueError(f"bias must have shape ({channels},), got {tuple(bias.shape)}")


def _conv_setup(
    nd: int | None, x: Any, weight: Any, bias: Any, stride: Any, padding: Any, dilation: Any,
    groups: Any, padding_mode: Any,
) -> tuple[Any, Any, Any, ConvGeometry, int, bool]:
    x, weight, bias, nd = _prepare_arrays(nd, x, weight, bias)
    batched = x.ndim == nd + 2
    if not batched:
        x = x[None]
    c, o = x.shape[1], weight.shape[0]
    g = _check_groups(groups, c, o)
    if weight.shape[1] * g != c:
        raise ValueError(
            f"weight of shape {tuple(weight.shape)} with groups={g} expects "
            f"{weight.shape[1] * g} input channels, but x has {c} (shape {tuple(x.shape)})"
        )
    _check_bias(bias, o)
    check_padding_mode(padding_mode)
    geometry = ConvGeometry.build(
        x.shape[2:], tuple(weight.shape[2:]), stride, padding, dilation, padding_mode,
        input_name="x", single=True,
    )
    return x, weight, bias, geometry, g, batched


def _check_grad_output(grad_output: Any, expected: tuple[int, ...], batched: bool) -> Any:
    gy = prepare("grad_output", grad_output)
    if not batched:
        if tuple(gy.shape) != expected[1:]:
            raise ValueError(
                f"grad_output must have shape {expected[1:]} (the output's), got {tuple(gy.shape)}"
            )
        return gy[None]
    if tuple(gy.shape) != expected:
        raise ValueError(
            f"grad_output must have shape {expected} (the output's), got {tuple(gy.shape)}"
        )
    return gy


# --------------------------------------------------------------------------- public: conv


def conv(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    algorithm: str = "auto",
    *,
    _nd: int | None = None,
) -> Any:
    """N-d convolution (cross-correlation, as in deep learning), any number of spatial dims.

    Equal to ``torch.nn.functional.conv1d/2d/3d`` for 1, 2, 3 spatial dims,
    and to ``torch.nn.ConvNd(padding_mode=...)`` for non-zero padding modes.
    The rank is taken from ``weight``.

    Parameters
    ----------
    x : array, shape (N, C, *spatial) or unbatched (C, *spatial)
    weight : array, shape (O, C // groups, *kernel_size)
    bias : array, shape (O,), optional
    stride, dilation : int or tuple of ints
    padding : int, tuple of ints, 'same' or 'valid'
        'same' pads so the output has the input's size (stride 1 only); an odd
        total goes to the high end, as in torch.
    groups : int
        Split channels into ``groups`` independent convolutions.
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}
    algorithm : {'auto', 'im2col', 'direct', 'winograd'}
        How to compute it (same result up to rounding): 'im2col' builds column
        chunks and matmuls; 'direct' sums shifted inputs over kernel offsets
        (a 1x1 convolution is one matmul, depthwise ones are multiply-adds);
        'winograd' (2-d 3x3 stride 1, zero padding, float32/64 only) uses
        F(4x4, 3x3) tiles. 'auto' picks from the shapes.

    Returns
    -------
    y : array, shape (N, O, *out_size), dtype of ``x``

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.ones((1, 1, 4, 4))
    >>> w = np.ones((1, 1, 3, 3))
    >>> npconv.conv(x, w, padding=1)[0, 0]
    array([[4., 6., 6., 4.],
           [6., 9., 9., 6.],
           [6., 9., 9., 6.],
           [4., 6., 6., 4.]])
    """
    algorithm = _check_algorithm(algorithm)
    x, weight, bias, geometry, g, batched = _conv_setup(
        _nd, x, weight, bias, stride, padding, dilation, groups, padding_mode
    )
    y = _forward(x, weight, bias, geometry, g, algorithm)
    return y if batched else y[0]


def conv_backward(
    grad_output: Any,
    x: Any,
    weight: Any,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    algorithm: str = "auto",
    *,
    _nd: int | None = None,
) -> tuple[Any, Any, Any]:
    """Gradients of :func:`conv` with respect to x, weight and bias.

    Given ``grad_output`` = dL/dy for ``y = conv(x, weight, bias, ...)``,
    returns ``(grad_input, grad_weight, grad_bias)``, equal to what torch
    autograd computes (``grad_bias`` is returned whether or not the forward
    had a bias).

    Parameters
    ----------
    grad_output : array, shape of ``conv(x, weight, ...)``
    x, weight, stride, padding, dilation, groups, padding_mode, algorithm
        As given to :func:`conv`.

    Returns
    -------
    grad_input : array, shape of ``x``
    grad_weight : array, shape of ``weight``
    grad_bias : array, shape (O,)

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.ones((1, 1, 3, 3)); w = np.ones((1, 1, 2, 2))
    >>> gx, gw, gb = npconv.conv_backward(np.ones((1, 1, 2, 2)), x, w)
    >>> gx[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    >>> gw[0, 0], gb
    (array([[4., 4.],
           [4., 4.]]), array([4.]))
    """
    algorithm = _check_algorithm(algorithm)
    x, weight, _, geometry, g, batched = _conv_setup(
        _nd, x, weight, None, stride, padding, dilation, groups, padding_mode
    )
    backend.backend_of(grad_output, x)
    gy = _check_grad_output(
        grad_output, (x.shape[0], weight.shape[0]) + geometry.out_size, batched
    )
    check_same_dtype(grad_output=gy, x=x)
    grad_input, grad_weight = _backward(gy, x, weight, geometry, g, algorithm=algorithm)
    return (grad_input if batched else grad_input[0]), grad_weight, _sum_bias(gy)


# --------------------------------------------------------------------------- public: transposed


def _transpose_setup(
    nd: int | None, x: Any, weight: Any, bias: Any, stride: Any, padding: Any,
    output_padding: Any, groups: Any, dilation: Any,
) -> tuple[Any, Any, Any, ConvGeometry, int, bool]:
    x, weight, bias, nd = _prepare_arrays(nd, x, weight, bias)
    batched = x.ndim == nd + 2
    if not batched:
        x = x[None]
    c_in = x.shape[1]
    g = as_int(groups, "groups")
    if g < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    if weight.shape[0] != c_in:
        raise ValueError(
            f"weight of shape {tuple(weight.shape)} expects {weight.shape[0]} input channels "
            f"(its first axis) for a transposed convolution, but x has {c_in} "
            f"(shape {tuple(x.shape)})"
        )
    c_out = weight.shape[1] * g
    _check_groups(g, c_in, c_out)
    _check_bias(bias, c_out)
    geometry = ConvGeometry.for_transpose(
        x.shape[2:], tuple(weight.shape[2:]), stride, padding, output_padding, dilation
    )
    return x, weight, bias, geometry, g, batched


def conv_transpose(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    groups: int = 1,
    dilation: IntOrTuple = 1,
    *,
    _nd: int | None = None,
) -> Any:
    """Transposed convolution (the adjoint of :func:`conv`), any number of spatial dims.

    Equal to ``torch.nn.functional.conv_transpose1d/2d/3d``. It computes the
    gradient-input map of the convolution whose input is this function's
    output, so it shares all of its code with :func:`conv_backward`.

    Parameters
    ----------
    x : array, shape (N, C_in, *spatial) or unbatched (C_in, *spatial)
    weight : array, shape (C_in, C_out // groups, *kernel_size)
    bias : array, shape (C_out,), optional
    stride, padding, output_padding, dilation : int or tuple of ints
        ``output_padding`` adds to one side of the output and must be smaller
        than the stride or the dilation.
    groups : int

    Returns
    -------
    y : array, shape (N, C_out, *out), out = (in - 1) s - 2 p + d (k - 1) + output_padding + 1

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.ones((1, 1, 2, 2)); w = np.ones((1, 1, 2, 2))
    >>> npconv.conv_transpose(x, w)[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    """
    x, weight, bias, geometry, g, batched = _transpose_setup(
        _nd, x, weight, bias, stride, padding, output_padding, groups, dilation
    )
    c_out = weight.shape[1] * g
    # x plays the conv's grad_output; weight (C_in, C_out/g, *k) is the conv's weight.
    y, _ = _backward(
        x, None, weight, geometry, g, need_weight=False, input_channels=c_out, adjoint=False
    )
    if bias is not None:
        y += bias.reshape((1, c_out) + (1,) * geometry.nd)
    return y if batched else y[0]


def conv_transpose_backward(
    grad_output: Any,
    x: Any,
    weight: Any,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    groups: int = 1,
    dilation: IntOrTuple = 1,
    *,
    _nd: int | None = None,
) -> tuple[Any, Any, Any]:
    """Gradients of :func:`conv_transpose` with respect to x, weight and bias.

    The adjoint of an adjoint is the map itself: grad_input is a plain
    convolution of ``grad_output`` with ``weight``, and grad_weight is the
    convolution's weight gradient with the roles of input and output swapped.

    Returns
    -------
    grad_input : array, shape of ``x``
    grad_weight : array, shape of ``weight``
    grad_bias : array, shape (C_out,)

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.ones((1, 1, 2, 2)); w = np.ones((1, 1, 2, 2))
    >>> gx, gw, gb = npconv.conv_transpose_backward(np.ones((1, 1, 3, 3)), x, w)
    >>> gx[0, 0], gb
    (array([[4., 4.],
           [4., 4.]]), array([9.]))
    """
    x, weight, _, geometry, g, batched = _transpose_setup(
        _nd, x, weight, None, stride, padding, output_padding, groups, dilation
    )
    backend.backend_of(grad_output, x)
    c_out = weight.shape[1] * g
    gy = _check_grad_output(grad_output, (x.shape[0], c_out) + geometry.in_size, batched)
    check_same_dtype(grad_output=gy, x=x)
    xp = backend.get_array_module(gy, x, weight)
    # The conv that this transposes maps gy's shape (its input) to x's shape (its output).
    grad_input = _forward(gy, _conj(xp, weight), None, geometry, g, "auto")
    _, grad_weight = _backward(x, gy, weight, geometry, g, need_input=False)
    grad_weight = _conj(xp, grad_weight)
    return (grad_input if batched else grad_input[0]), grad_weight, _sum_bias(gy)


# --------------------------------------------------------------------------- fixed-rank names
# Thin aliases with torch's names; the rank check is the only difference.

def conv1d(x: Any, weight: Any, bias: Any = None, stride: IntOrTuple = 1,
           padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
           padding_mode: str = "zeros", algorithm: str = "auto") -> Any:
    """1-d :func:`conv`, equal to ``torch.nn.functional.conv1d``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> npconv.conv1d(np.ones((2, 3, 8)), np.ones((4, 3, 3)), padding="same").shape
    (2, 4, 8)
    """
    return conv(x, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm,
                _nd=1)


def conv2d(x: Any, weight: Any, bias: Any = None, stride: IntOrTuple = 1,
           padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
           padding_mode: str = "zeros", algorithm: str = "auto") -> Any:
    """2-d :func:`conv`, equal to ``torch.nn.functional.conv2d``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> npconv.conv2d(np.ones((2, 3, 8, 8)), np.ones((4, 3, 3, 3)), stride=2).shape
    (2, 4, 3, 3)
    """
    return conv(x, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm,
                _nd=2)


def conv3d(x: Any, weight: Any, bias: Any = None, stride: IntOrTuple = 1,
           padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
           padding_mode: str = "zeros", algorithm: str = "auto") -> Any:
    """3-d :func:`conv`, equal to ``torch.nn.functional.conv3d``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> npconv.conv3d(np.ones((1, 2, 5, 5, 5)), np.ones((4, 2, 3, 3, 3)), padding=1).shape
    (1, 4, 5, 5, 5)
    """
    return conv(x, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm,
                _nd=3)


def conv1d_backward(grad_output: Any, x: Any, weight: Any, stride: IntOrTuple = 1,
                    padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
                    padding_mode: str = "zeros",
                    algorithm: str = "auto") -> tuple[Any, Any, Any]:
    """Gradients of :func:`conv1d`: ``(grad_input, grad_weight, grad_bias)``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> gx, gw, gb = npconv.conv1d_backward(np.ones((2, 4, 6)), np.ones((2, 3, 8)),
    ...                                     np.ones((4, 3, 3)))
    >>> gx.shape, gw.shape, gb.shape
    ((2, 3, 8), (4, 3, 3), (4,))
    """
    return conv_backward(grad_output, x, weight, stride, padding, dilation, groups,
                         padding_mode, algorithm, _nd=1)


def conv2d_backward(grad_output: Any, x: Any, weight: Any, stride: IntOrTuple = 1,
                    padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
                    padding_mode: str = "zeros",
                    algorithm: str = "auto") -> tuple[Any, Any, Any]:
    """Gradients of :func:`conv2d`: ``(grad_input, grad_weight, grad_bias)``.

    ``grad_weight`` and ``grad_bias`` are contractions of ``grad_output`` with
    the patch view of ``x`` (and with ones); ``grad_input`` is ``col2im`` of the
    contraction of ``weight`` with ``grad_output`` over the output channels.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x, w = np.ones((2, 3, 8, 8)), np.ones((4, 3, 3, 3))
    >>> gy = np.ones_like(npconv.conv2d(x, w))
    >>> gx, gw, gb = npconv.conv2d_backward(gy, x, w)
    >>> gx.shape, gw.shape, gb.shape
    ((2, 3, 8, 8), (4, 3, 3, 3), (4,))
    """
    return conv_backward(grad_output, x, weight, stride, padding, dilation, groups,
                         padding_mode, algorithm, _nd=2)


def conv3d_backward(grad_output: Any, x: Any, weight: Any, stride: IntOrTuple = 1,
                    padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
                    padding_mode: str = "zeros",
                    algorithm: str = "auto") -> tuple[Any, Any, Any]:
    """Gradients of :func:`conv3d`: ``(grad_input, grad_weight, grad_bias)``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> gx, gw, gb = npconv.conv3d_backward(np.ones((1, 4, 3, 3, 3)),
    ...                                     np.ones((1, 2, 5, 5, 5)), np.ones((4, 2, 3, 3, 3)))
    >>> gx.shape, gw.shape
    ((1, 2, 5, 5, 5), (4, 2, 3, 3, 3))
    """
    return conv_backward(grad_output, x, weight, stride, padding, dilation, groups,
                         padding_mode, algorithm, _nd=3)


def conv_transpose1d(x: Any, weight: Any, bias: Any = None, stride: IntOrTuple = 1,
                     padding: IntOrTuple = 0, output_padding: IntOrTuple = 0,
                     groups: int = 1, dilation: IntOrTuple = 1) -> Any:
    """1-d :func:`conv_transpose`, equal to ``torch.nn.functional.conv_transpose1d``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> npconv.conv_transpose1d(np.ones((2, 3, 8)), np.ones((3, 4, 3)), stride=2).shape
    (2, 4, 17)
    """
    return conv_transpose(x, weight, bias, stride, padding, output_padding, groups, dilation,
                          _nd=1)


def conv_transpose2d(x: Any, weight: Any, bias: Any = None, stride: IntOrTuple = 1,
                     padding: IntOrTuple = 0, output_padding: IntOrTuple = 0,
                     groups: int = 1, dilation: IntOrTuple = 1) -> Any:
    """2-d :func:`conv_transpose`, equal to ``torch.nn.functional.conv_transpose2d``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x, w = np.ones((2, 3, 8, 8)), np.ones((3, 4, 3, 3))
    >>> npconv.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1).shape
    (2, 4, 16, 16)
    """
    return conv_transpose(x, weight, bias, stride, padding, output_padding, groups, dilation,
                          _nd=2)


def conv_transpose3d(x: Any, weight: Any, bias: Any = None, stride: IntOrTuple = 1,
                     padding: IntOrTuple = 0, output_padding: IntOrTuple = 0,
                     groups: int = 1, dilation: IntOrTuple = 1) -> Any:
    """3-d :func:`conv_transpose`, equal to ``torch.nn.functional.conv_transpose3d``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> npconv.conv_transpose3d(np.ones((1, 2, 3, 3, 3)), np.ones((2, 4, 2, 2, 2))).shape
    (1, 4, 4, 4, 4)
    """
    return conv_transpose(x, weight, bias, stride, padding, output_padding, groups, dilation,
                          _nd=3)


def conv_transpose1d_backward(grad_output: Any, x: Any, weight: Any, stride: IntOrTuple = 1,
                              padding: IntOrTuple = 0, output_padding: IntOrTuple = 0,
                              groups: int = 1,
                              dilation: IntOrTuple = 1) -> tuple[Any, Any, Any]:
    """Gradients of :func:`conv_transpose1d`: ``(grad_input, grad_weight, grad_bias)``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> gx, gw, gb = npconv.conv_transpose1d_backward(np.ones((2, 4, 10)),
    ...                                               np.ones((2, 3, 8)), np.ones((3, 4, 3)))
    >>> gx.shape, gw.shape, gb.shape
    ((2, 3, 8), (3, 4, 3), (4,))
    """
    return conv_transpose_backward(grad_output, x, weight, stride, padding, output_padding,
                                   groups, dilation, _nd=1)


def conv_transpose2d_backward(grad_output: Any, x: Any, weight: Any, stride: IntOrTuple = 1,
                              padding: IntOrTuple = 0, output_padding: IntOrTuple = 0,
                              groups: int = 1,
                              dilation: IntOrTuple = 1) -> tuple[Any, Any, Any]:
    """Gradients of :func:`conv_transpose2d`: ``(grad_input, grad_weight, grad_bias)``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x, w = np.ones((2, 3, 8, 8)), np.ones((3, 4, 3, 3))
    >>> gy = np.ones_like(npconv.conv_transpose2d(x, w))
    >>> [a.shape for a in npconv.conv_transpose2d_backward(gy, x, w)]
    [(2, 3, 8, 8), (3, 4, 3, 3), (4,)]
    """
    return conv_transpose_backward(grad_output, x, weight, stride, padding, output_padding,
                                   groups, dilation, _nd=2)


def conv_transpose3d_backward(grad_output: Any, x: Any, weight: Any, stride: IntOrTuple = 1,
                              padding: IntOrTuple = 0, output_padding: IntOrTuple = 0,
                              groups: int = 1,
                              dilation: IntOrTuple = 1) -> tuple[Any, Any, Any]:
    """Gradients of :func:`conv_transpose3d`: ``(grad_input, grad_weight, grad_bias)``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> gx, gw, gb = npconv.conv_transpose3d_backward(np.ones((1, 4, 4, 4, 4)),
    ...                                               np.ones((1, 2, 3, 3, 3)),
    ...                                               np.ones((2, 4, 2, 2, 2)))
    >>> gx.shape, gw.shape
    ((1, 2, 3, 3, 3), (2, 4, 2, 2, 2))
    """
    return conv_transpose_backward(grad_output, x, weight, stride, padding, output_padding,
                                   groups, dilation, _nd=3)
