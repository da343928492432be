"""Phase images: the windows of a large strided kernel (a 7x7 stride-2 stem) as long runs.

With stride s a window reads every s-th pixel of the zero-padded input, so
the im2col copy of a strided kernel reads short, strided rows. Split the
padded input by *phase* first, ``P_r[u] = xpad[s u + r]`` per axis (one image
per residue ``r`` of each axis): kernel offset ``k`` reads phase
``r = k d % s`` shifted by ``t = k d // s``, at unit stride. Flattened over
its spatial axes (row pitch ``pitch = prod(q[1:])``, ``q = ceil(padded / s)``),
the windows of a block of output rows are then ONE contiguous run of each
phase image per channel and offset, starting ``t`` rows (and columns) further
on. A run is ``pitch`` long per output row where the output row has
``out[1:]`` positions: the positions past the output width are *junk* (they
read the next pixels of the phase image, or of the next plane).

* forward: the columns of a block of output rows are a few long-run copies
  (all offsets of one phase group form one overlapping view), ``y = W @ cols``
  computes the junk columns too (a few percent) and they are dropped when the
  rows are written into ``y``;
* backward: ``gy`` goes into the phase layout with zeros at the junk
  positions, so ``gW = gy_ext @ runs^T`` over the same long runs (junk meets
  zeros), and the column gradient ``W^T gy_ext`` (zero at the junk) is added
  back run by run into phase images of grad input, whose pixels are then
  scattered to the input (each input pixel lies in exactly one phase image).

The path computes every map of any convolution with a stride above 1 on some
axis and zero padding (any rank, kernel, dilation, groups, float or complex);
:func:`npconv.plan.phase_split` and :func:`npconv.plan.phase_backward` decide
when 'auto' uses it.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .. import backend, executor, scratch, workspace
from ..geometry import ConvGeometry
from ..plan import Problem
from ._common import add_tall, empty_grads, image_of, matmul, out_block, row_blocks, take

__all__ = ["backward", "forward", "requires"]

# (phase residue r, kernel offsets as a slice, first shift t, step of t) of one axis
PhaseGroup = tuple[int, slice, int, int]
RowBlock = tuple[int, int, slice]


def requires(problem: Problem, op: str) -> str | None:
    """``None`` if the phase path computes ``op`` for ``problem``, else what it needs.

    Any map of a zero-padded convolution with a stride above 1 on some axis and a
    float or complex dtype (any rank, kernel, dilation and groups).
    """
    g = problem.geometry
    kind = backend.scalar_kind(problem.dtype)
    if all(s == 1 for s in g.stride) or not g.zero_padded or kind not in "fc":
        return ("a stride above 1 on some spatial axis, zero padding and a float or complex "
                f"dtype; got stride {g.stride}, padding_mode {g.padding_mode!r} with padding "
                f"{g.pads}, dtype {backend.numpy_dtype(problem.dtype).name}")
    return None


# --------------------------------------------------------------------------- the layout


def phase_groups(kernel: int, dilation: int, stride: int) -> list[PhaseGroup]:
    """Kernel offsets k of one axis grouped by phase r = k d % s: (r, the offsets as a
    slice, first t = k d // s, step of t). Within a phase both k and t are arithmetic
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


class Phases:
    """Phase images of ``images`` zero-padded inputs of ``channels`` channels, flattened.

    Buffer layout: (count = prod(stride), images, C, *q) followed by ``slack``
    elements, so that a run starting at any offset of any plane stays inside
    the buffer. ``taps[k]`` is (phase index, flat offset) of kernel offset k
    (row-major over the kernel): its windows are the run of that phase image
    starting ``offset`` elements on. A run is at most ``out[0] * pitch <= plane``
    long, so the runs of the (image, channel) planes of one view never overlap.
    """

    def __init__(self, geometry: ConvGeometry, channels: int, images: int):
        g = self.geometry = geometry
        self.q = q = tuple(-(-p // s) for p, s in zip(g.padded_size, g.stride))
        self.pitch = math.prod(q[1:])  # elements per phase row
        self.plane = math.prod(q)
        self.count = math.prod(g.stride)
        self.channels, self.images = channels, images
        self.groups = list(itertools.product(*(
            phase_groups(k, d, s) for k, d, s in zip(g.kernel, g.dilation, g.stride))))
        self.steps = [math.prod(q[a + 1:]) for a in range(g.nd)]
        self.taps = []
        for k in itertools.product(*(range(n) for n in g.kernel)):
            index, offset = 0, 0
            for a, (ka, d, s) in enumerate(zip(k, g.dilation, g.stride)):
                index = index * s + ka * d % s
                offset += ka * d // s * self.steps[a]
            self.taps.append((index, offset))
        # A run reads at most a plane plus a row past its start (junk positions).
        self.slack = max(offset for _, offset in self.taps) + self.pitch
        self.size = self.count * images * channels * self.plane + self.slack

    @property
    def length(self) -> int:
        """Run positions per image (every output row, junk included)."""
        return self.geometry.out_size[0] * self.pitch

    def zeros(self, xp: Any, dtype: Any) -> Any:
        """A flat buffer for the phase images, zero (their border stays so)."""
        return scratch.zeros(xp, (self.size,), dtype)

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
        """``out`` (b, C, *in) <- the input pixels of the phase images in ``buf``
        (every pixel of ``out`` is written: each lies in one phase image)."""
        phases = self.view(buf)
        lead = (slice(0, out.shape[0]), slice(None))
        for index, dst, src in self.parts():
            out[(slice(None), slice(None)) + src] = phases[index][lead + dst]

    def group_views(self, buf: Any) -> list[tuple[tuple[slice, ...], Any]]:
        """Per phase group: the column slices (b, C, *kernel) it fills and one read-only
        view of all its offsets' runs, (images, C, *counts, length), made once per buffer
        (as_strided costs ~10 us; slicing the view per chunk far less)."""
        item = buf.itemsize
        views = []
        for group in self.groups:
            index = 0
            for (r, _, _, _), s in zip(group, self.geometry.stride):
                index = index * s + r
            first = index * self.images * self.channels * self.plane + sum(
                t * st for (_, _, t, _), st in zip(group, self.steps))
            counts = tuple(len(range(k.start, k.stop, k.step)) for _, k, _, _ in group)
            view = backend.as_strided_view(
                buf[first:], (self.images, self.channels) + counts + (self.length,),
                (self.channels * self.plane * item, self.plane * item)
                + tuple(step * st * item for (_, _, _, step), st in zip(group, self.steps))
                + (item,))
            views.append(((slice(None), slice(None)) + tuple(k for _, k, _, _ in group), view))
        return views

    def runs(self, buf: Any, writable: bool = False) -> list[Any]:
        """Per kernel offset, its runs over all images, (images, C, length): views (the
        writable ones are disjoint, see the class docstring)."""
        item = buf.itemsize
        make = backend.as_strided_target if writable else backend.as_strided_view
        shape = (self.images, self.channels, self.length)
        strides = (self.channels * self.plane * item, self.plane * item, item)
        return [make(buf[index * self.images * self.channels * self.plane + offset:],
                     shape, strides) for index, offset in self.taps]


# --------------------------------------------------------------------------- forward


@dataclass
class _ForwardWorker:
    """One worker's buffers for the forward, and which images its phase buffer holds."""

    buf: Any  # flat phase images (zero border)
    cols: Any  # (images, depth, rows * pitch): columns of one chunk, ones row if fused
    ext: Any  # (images, O, rows * pitch): y of one chunk, junk columns included
    views: list[tuple[tuple[slice, ...], Any]]  # Phases.group_views(buf)
    last: tuple[int, int] | None = None


def _forward_worker(layout: Phases, xp: Any, dtype: Any, depth: int, o: int, rows: int,
                    fused: bool) -> _ForwardWorker:
    """Allocate one forward worker's buffers (the scratch factory)."""
    buf = layout.zeros(xp, dtype)
    cols = scratch.empty(xp, (layout.images, depth, rows * layout.pitch), dtype)
    if fused:
        cols[:, -1, :] = 1  # the row of ones under the columns: never overwritten
    ext = scratch.empty(xp, (layout.images, o, rows * layout.pitch), dtype)
    return _ForwardWorker(buf, cols, ext, layout.group_views(buf))


@dataclass(frozen=True)
class _ForwardCall:
    """The arrays and constants shared by every chunk of one forward call."""

    x: Any  # (N, C, *in)
    w: Any  # (g, O/g, depth): the bias as its last column where fused
    y: Any  # (N, O, *out), written block by block
    bias_col: Any  # (1, g, O/g, 1) added after the matmul, or None (fused or no bias)
    layout: Phases
    fused: bool


def _forward_rows(work: _ForwardWorker, share: Sequence[RowBlock], call: _ForwardCall) -> None:
    """y of every (images start:stop, output rows) block of ``share`` (chunk kernel)."""
    layout, y = call.layout, call.y
    geo = layout.geometry
    c, pitch, q = layout.channels, layout.pitch, layout.q
    groups, depth = call.w.shape[0], work.cols.shape[1]
    o = y.shape[1]
    crop = (slice(None),) * 3 + tuple(slice(0, m) for m in geo.out_size[1:])
    for start, stop, rows in share:
        b, nr = stop - start, rows.stop - rows.start
        if work.last != (start, stop):
            layout.fill(work.buf, call.x[start:stop])
            work.last = (start, stop)
        length = nr * pitch
        cols = work.cols[:b, :, :length]  # (b, depth, length)
        cols_k = cols[:, : depth - call.fused].reshape((b, c) + geo.kernel + (length,))
        runs = slice(rows.start * pitch, rows.start * pitch + length)
        for target, view in work.views:
            # (b, C, *counts, length) <- the runs of one phase group's offsets
            cols_k[target] = view[:b, ..., runs]
        ext = work.ext[:b, :, :length]
        # (g, O/g, depth/g) @ (b, g, depth/g, length) -> (b, g, O/g, length), junk included
        matmul(backend.get_array_module(cols), call.w,
               cols.reshape(b, groups, depth // groups, length),
               out=ext.reshape(b, groups, o // groups, length))
        # (b, O, rows, *q[1:]) cropped to (b, O, rows, *out[1:]): the junk columns dropped
        y[start:stop][(slice(None), slice(None), rows)] = ext.reshape((b, o, nr) + q[1:])[crop]
        if call.bias_col is not None:
            out_block(y, start, stop, rows, groups)[...] += call.bias_col


def _shares(items: list[RowBlock], per_worker: int, arrays: Sequence[Any]) -> list[list[Any]]:
    """The row blocks as work items: the blocks of one image chunk together where there
    are enough image chunks to share among the threads (a thread then fills each
    image's phase images once), else one block each. Either way every block is computed
    alike, so the result never depends on the grouping."""
    groups = [list(blocks) for _, blocks in itertools.groupby(items, image_of)]
    workers = executor.workers_for(len(items), per_worker, arrays)
    if workers > 1 and len(groups) >= 2 * workers:
        return groups
    return [[item] for item in items]


def forward(problem: Problem, x: Any, weight: Any, bias: Any) -> Any:
    """y (N, O, *out) = conv(x, weight) + bias through phase images (zero padding).

    The columns of a block of output rows are copies of long runs of the
    flattened phase images; the matmul computes the junk positions of each row
    too, dropped when its rows are copied into ``y``. Without groups the bias
    rides along in the matmul (a row of ones under the columns and the bias as an
    extra weight column save a pass over the output).

    Raises
    ------
    MemoryError
        If the columns of one output row exceed the workspace limit.
    """
    xp = backend.get_array_module(x, weight)
    geo, groups = problem.geometry, problem.groups
    n, c = x.shape[:2]
    o = weight.shape[0]
    y = xp.empty((n, o) + geo.out_size, dtype=x.dtype)
    if y.size == 0:
        return y
    w = weight.reshape(groups, o // groups, (c // groups) * geo.kernel_volume)
    fused = bias is not None and groups == 1
    if fused:
        w = xp.concatenate([w[0], bias.reshape(o, 1)], axis=1)[None]  # (1, O, C*K + 1)
    depth = c * geo.kernel_volume + fused
    out0, pitch = geo.out_size[0], Phases(geo, c, 1).pitch
    images, rows = workspace.row_chunks(depth * pitch * x.dtype.itemsize, out0, n,
                                        positions=pitch)
    layout = Phases(geo, c, images)
    per_worker = (layout.size + (depth + o) * rows * pitch * images) * x.dtype.itemsize
    bias_col = None if bias is None or fused else bias.reshape(1, groups, o // groups, 1)
    call = _ForwardCall(x, w, y, bias_col, layout, fused)
    scratch = functools.partial(_forward_worker, layout, xp, x.dtype, depth, o, rows, fused)
    shares = _shares(row_blocks(n, images, rows, out0), per_worker, (x, w))
    executor.map_chunks(_forward_rows, shares, call, scratch=scratch,
                        per_worker_bytes=per_worker, arrays=(x, w))
    return y


# --------------------------------------------------------------------------- backward


@dataclass
class _BackwardWorker:
    """One worker's buffers for the backward."""

    x_runs: list[Any]  # per offset, (chunk, C, length) runs of x's phase images, or []
    x_buf: Any  # flat phase images of x (zero border), or None without grad weight
    g_runs: list[Any]  # per offset, writable (chunk, C, length) runs of g_buf, or []
    g_buf: Any  # flat phase images of grad input, summed anew per chunk, or None
    gy_ext: Any  # (O, chunk, length): gy in the phase layout, zero at the junk positions
    cols: Any  # flat, g * C/g * K * chunk * length: columns or column gradient
    part: Any  # (g, C/g * K, O/g): one chunk's weight gradient before it joins the lane's


def _backward_worker(layout: Phases, xp: Any, dtype: Any, o: int, groups: int,
                     need_input: bool, need_weight: bool) -> _BackwardWorker:
    """Allocate one backward worker's buffers (the scratch factory)."""
    c, k_vol, chunk = layout.channels, layout.geometry.kernel_volume, layout.images
    x_buf = layout.zeros(xp, dtype) if need_weight else None
    g_buf = layout.zeros(xp, dtype) if need_input else None
    return _BackwardWorker(
        x_runs=[] if x_buf is None else layout.runs(x_buf),
        x_buf=x_buf,
        g_runs=[] if g_buf is None else layout.runs(g_buf, writable=True),
        g_buf=g_buf,
        gy_ext=scratch.zeros(xp, (o, chunk, layout.length), dtype),  # junk stays zero
        cols=scratch.empty(xp, (c * k_vol * chunk * layout.length,), dtype),
        part=scratch.empty(xp, (groups, c // groups * k_vol, o // groups), dtype)
        if need_weight else None)


@dataclass(frozen=True)
class _BackwardCall:
    """The arrays and constants shared by every chunk of one backward call."""

    gy: Any  # (N, O, *out)
    x: Any  # (N, C, *in), or None without grad weight
    w_t: Any  # (g, C/g*K, O/g): the weight transposed per group
    gx: Any  # (N, C, *in), written chunk by chunk, or None without grad input
    layout: Phases  # for ``chunk`` images


def _backward_chunk(work: _BackwardWorker, start: int, acc: Any, call: _BackwardCall) -> Any:
    """Both gradients of the images ``start:start + chunk`` (chunk kernel): writes
    grad input, returns ``acc`` plus the chunk's weight gradient (g, C/g*K, O/g)
    (a new array if ``acc`` is None; None without grad weight)."""
    xp = backend.get_array_module(work.gy_ext)
    layout = call.layout
    geo = layout.geometry
    o = call.gy.shape[1]
    groups, cgk = call.w_t.shape[:2]
    c, k_vol, length = layout.channels, geo.kernel_volume, layout.length
    stop = min(call.gy.shape[0], start + layout.images)
    b = stop - start
    crop = (slice(None),) * 3 + tuple(slice(0, m) for m in geo.out_size[1:])
    # gy (b, O, *out) -> (O, b, out0, *q[1:]) at the valid positions
    work.gy_ext[:, :b].reshape((o, b, geo.out_size[0]) + layout.q[1:])[crop] = xp.moveaxis(
        call.gy[start:stop], 0, 1)
    gy_2d = work.gy_ext[:, :b].reshape(groups, o // groups, b * length)
    # (g, C/g, K, b, length), contiguous whatever b, so that its reshapes are views
    cols = take(work.cols, (groups, c // groups, k_vol, b, length))
    cols_2d = cols.reshape(groups, cgk, b * length)
    if work.x_buf is not None:
        layout.fill(work.x_buf, call.x[start:stop])
        for k, runs in enumerate(work.x_runs):
            # (b, C, length) -> (g, C/g, b, length)
            cols[:, :, k] = runs[:b].reshape(b, groups, c // groups, length).transpose(1, 2, 0, 3)
        # (g, C/g*K, bL) @ (g, bL, O/g) -> (g, C/g*K, O/g): the junk columns meet zeros
        acc = add_tall(xp, acc, cols_2d, gy_2d.transpose(0, 2, 1), work.part)
    if work.g_buf is not None:
        # the column gradient (g, C/g*K, O/g) @ (g, O/g, bL) -> (g, C/g*K, bL), zero at
        # the junk positions, added back into the phase images run by run
        matmul(xp, call.w_t, gy_2d, out=cols_2d)
        work.g_buf[...] = 0
        for k, target in enumerate(work.g_runs):
            # (g, C/g, b, length) -> (b, C, length)
            target[:b] += cols[:, :, k].reshape(c, b, length).transpose(1, 0, 2)
        layout.unfill(work.g_buf, call.gx[start:stop])
    return acc


def _grad_input_chunk(work: _BackwardWorker, start: int, call: _BackwardCall) -> None:
    """Grad input alone of one chunk of images (chunk kernel of a transposed forward)."""
    _backward_chunk(work, start, None, call)


def backward(problem: Problem, gy: Any, x: Any, weight: Any, need_input: bool,
             need_weight: bool) -> tuple[Any, Any]:
    """(grad input (N, C, *in), grad weight (O, C/g, *k)) through phase images.

    ``gy`` goes into the phase layout with zeros at the junk positions, so that
    ``gW = sum_n gy_ext (O, L) @ runs^T (L, C*K)`` over the forward's long runs,
    and the column gradient ``W^T gy_ext`` adds back into phase images of grad
    input as long runs per offset, which then scatter to the input pixels. No
    window copy or fold runs over short rows. Either gradient may be skipped
    (None); ``x`` may be None without ``need_weight``.

    Raises
    ------
    MemoryError
        If one image's buffers exceed the workspace limit.
    """
    xp = backend.get_array_module(gy, x, weight)
    geo, groups = problem.geometry, problem.groups
    n, o = gy.shape[:2]
    c = problem.in_channels
    if not (need_input or need_weight):
        return None, None
    if n == 0 or geo.out_volume == 0:
        return empty_grads(problem, xp, need_input, need_weight, weight.shape)
    k_vol, dtype = geo.kernel_volume, gy.dtype
    probe = Phases(geo, c, 1)
    per_image = ((c * k_vol + o) * probe.length + probe.size) * dtype.itemsize
    chunk = workspace.chunk_length(per_image, n, positions=probe.length)
    layout = Phases(geo, c, chunk)
    w_t = weight.reshape(groups, o // groups, c // groups * k_vol).transpose(0, 2, 1)
    gx = xp.empty((n, c) + geo.in_size, dtype=dtype) if need_input else None
    call = _BackwardCall(gy, x if need_weight else None, w_t, gx, layout)
    scratch = functools.partial(_backward_worker, layout, xp, dtype, o, groups, need_input,
                                need_weight)
    items = list(range(0, n, chunk))
    common: dict[str, Any] = dict(scratch=scratch, per_worker_bytes=chunk * per_image,
                                  arrays=(gy, x, weight))
    if not need_weight:
        executor.map_chunks(_grad_input_chunk, items, call, **common)
        return gx, None
    total = xp.empty((groups, c // groups * k_vol, o // groups), dtype=dtype)
    executor.reduce_chunks(_backward_chunk, items, total, call, fresh=True, **common)
    # (g, C/g*K, O/g) -> (g, O/g, C/g*K) = (O, C/g, *k)
    gw = xp.ascontiguousarray(total.transpose(0, 2, 1)).reshape(weight.shape)
    return gx, gw
