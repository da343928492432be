"""Small helpers shared by the paths: chunk lists, output blocks, the flipped kernel."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

from .. import backend, executor, scratch
from ..geometry import ConvGeometry
from ..plan import Problem, full_correlation


def row_blocks(n: int, images: int, rows: int, out0: int) -> list[tuple[int, int, slice]]:
    """(start, stop, output rows) of every chunk: the batch in ``images``, each image's
    first output axis in blocks of ``rows``."""
    return [(start, min(n, start + images), slice(r, min(out0, r + rows)))
            for start in range(0, n, images) for r in range(0, out0, rows)]


def image_of(item: tuple[Any, ...]) -> tuple[int, int]:
    """The images (start, stop) of a chunk: its row blocks share their preparation."""
    return item[0], item[1]


def out_block(y: Any, start: int, stop: int, rows: slice, g: int) -> Any:
    """y[start:stop] restricted to the output ``rows``, as (b, g, O/g, rows * rest): a view."""
    b, o, out0 = stop - start, y.shape[1], y.shape[2]
    rest = math.prod(y.shape[3:])
    block = y[start:stop].reshape(b, g, o // g, out0, rest)[:, :, :, rows]
    return block.reshape(b, g, o // g, (rows.stop - rows.start) * rest)


# Multiply-adds per byte of the executor's work measure (see map_work).
WORK_PER_BYTE = 4


def map_work(problem: Problem) -> int:
    """The executor's measure of a map's work, which decides whether to thread it: its
    multiply-adds over WORK_PER_BYTE, so that the default threshold (4 MiB) falls at
    about 17 million (a backward's map does two gradients: twice this). Measured on
    the blocked path, then also used by the stacked path's threaded chunks.

    A threaded map costs 70-100 us more than a serial one here (waking a thread and
    handing the GIL back and forth, measured on empty and on 200 us items), against
    the 200-450 us a thread spends on one 16-64 channel U-Net tile. On the 2-core AMD
    EPYC (Zen 4) of the twelfth session, threading from 21 million (and backward maps
    at twice the measure) took the 2-D U-Net's network total to 0.92x (0.91-0.96) in
    ``benchmarks/ab.py``, ResNet-18 0.97, VGG-11 1.00, the 3-D U-Net 1.03 (0.98-1.07).
    Once a region stopped waiting for a late worker (fourteenth session), 17 million
    against 21 took the U-Net to 0.96-0.98 (its 19-million 16- and 32-channel
    forwards 0.80-0.85), the float64 stencil network to 0.84, the other five networks
    0.98-1.01. The earlier Xeon had measured the other way (1 thread / 2 on the
    U-Net's 9-38 million: 0.49-0.88), so the threshold then sat at 50 million; with it at 100
    million, WaveNet's 67-million layers took 1.31-1.48x as long backward (A/B)."""
    return problem.multiply_adds // WORK_PER_BYTE


# On a device, a batch of at most this many matrices whose operands CuPy would copy is
# computed one 2-d matmul per matrix; a larger batch is left to CuPy's copies. On an
# H200 (CuPy 14.2) a small matmul cost 23 us of host time and a copy 10-15 us, so
# one matmul per matrix pays for a single matrix only (a batch of 32 made the
# pointwise weight gradient of 32 images cost 1.95 ms, against torch's 0.12).
DEVICE_MAX_MATRICES = 1


def matmul(xp: Any, a: Any, b: Any, out: Any = None) -> Any:
    """``xp.matmul(a, b, out=out)``, arranged on a device so that CuPy copies little.

    On NumPy it is that call. CuPy's matmul (cupy/_core/_routines_linalg.pyx) computes
    into a temporary and copies it when ``out`` is not C-contiguous, copies operands of
    3 or more dims that are not C-contiguous, and CuPy 13 materialises an operand
    broadcast over the batch. On a device the call is made as is when none of that
    applies; a broadcast operand (of any strides: a transposed weight too) is expanded
    in one copy; a single matrix with transposed operands becomes a 2-d matmul, whose
    transposed operands cuBLAS reads in place.
    A non-contiguous ``out`` still costs a temporary and a copy (as CuPy would make):
    the paths give such sites contiguous targets on a device.
    """
    if backend.on_host(xp) or a.ndim < 2 or b.ndim < 2:
        return xp.matmul(a, b, out=out)
    if out is not None and not out.flags.c_contiguous:
        out[...] = matmul(xp, a, b)
        return out
    batch = _batch_shape(a.shape[:-2], b.shape[:-2])
    if out is None:
        out = xp.empty(batch + (a.shape[-2], b.shape[-1]), dtype=xp.result_type(a.dtype, b.dtype))
    if len(batch) == 0 or (a.flags.c_contiguous and b.flags.c_contiguous
                           and a.shape[:-2] == b.shape[:-2]):
        return xp.matmul(a, b, out=out)
    for small, other in ((a, b), (b, a)):
        if small.shape[:-2] != batch and other.shape[:-2] == batch and other.flags.c_contiguous:
            # one copy, whatever the small operand's strides (a transposed weight too)
            full = xp.ascontiguousarray(xp.broadcast_to(small, batch + small.shape[-2:]))
            a, b = (full, b) if small is a else (a, full)
            return xp.matmul(a, b, out=out)
    if math.prod(batch) <= DEVICE_MAX_MATRICES:
        return _per_matrix(xp, a, b, out, batch)
    return xp.matmul(a, b, out=out)


# ``matmul_tall`` swaps a product whose result has at most TALL_MAX_ROWS rows, more
# columns, and a contraction of at least TALL_MIN_LENGTH. With few rows OpenBLAS's sgemm
# ran 1.3-2.2x faster swapped; with more rows the gain (1.05-1.2x) did not pay for
# handling a transposed result (VGG-11's 256-channel weight gradient took 2x longer
# swapped), nor with a short contraction (MobileNetV2's 1x1 projections at 6x6, one
# image a product: 2.5x longer).
TALL_MAX_ROWS = 64
TALL_MIN_LENGTH = 2048


def matmul_temp(xp: Any, a: Any, b: Any) -> Any:
    """``a @ b`` into a temporary from :mod:`npconv.scratch` (never hand it to a caller)."""
    shape = _batch_shape(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    return matmul(xp, a, b, out=scratch.empty(xp, shape, xp.result_type(a.dtype, b.dtype)))


def _swap_tall(xp: Any, a: Any, b: Any) -> bool:
    """Whether :func:`matmul_tall` computes ``a @ b`` as ``(b^T @ a^T)^T``."""
    return (backend.on_host(xp) and a.shape[-2] < b.shape[-1] and a.shape[-2] <= TALL_MAX_ROWS
            and a.shape[-1] >= TALL_MIN_LENGTH)


def matmul_tall(xp: Any, a: Any, b: Any, out: Any = None) -> Any:
    """``a @ b`` for a long contraction (a weight gradient), computed with the result's
    long side as the BLAS rows, ``(b^T @ a^T)^T``, when the result is short and wide.

    (16, 32768) @ (32768, 432) took 12.4 ms as given and 7.1 ms swapped (OpenBLAS,
    SkylakeX kernel, one thread; the Haswell kernel gains less, 1.1-1.3x). On a device
    the call is ``matmul``'s. The result may be a transposed view; ``out`` gets a copy.
    """
    if not _swap_tall(xp, a, b):
        return matmul(xp, a, b, out=out)
    if out is None:
        return xp.matmul(b.swapaxes(-1, -2), a.swapaxes(-1, -2)).swapaxes(-1, -2)
    out[...] = matmul_tall_temp(xp, a, b)
    return out


def matmul_tall_temp(xp: Any, a: Any, b: Any) -> Any:
    """:func:`matmul_tall` into a temporary from :mod:`npconv.scratch`: a lane's first
    partial sum of a weight gradient (never hand it to a caller). A new array each
    call had the heap grow and shrink by its size every call: ResNet-18's
    layer3.0.conv2 backward (2.4 MB partials) faulted 2100 pages and took 10 ms,
    against 2.2 ms."""
    if _swap_tall(xp, a, b):
        return matmul_temp(xp, b.swapaxes(-1, -2), a.swapaxes(-1, -2)).swapaxes(-1, -2)
    return matmul_temp(xp, a, b)


def add_tall(xp: Any, acc: Any, a: Any, b: Any, part: Any) -> Any:
    """A lane's running weight-gradient sum plus ``a @ b`` (:func:`matmul_tall`): the
    lane's first product into a temporary from the cache (``acc`` None), the others
    through ``part``, a buffer of the product's shape, added to ``acc``; returns the sum."""
    if acc is None:
        return matmul_tall_temp(xp, a, b)
    acc += matmul_tall(xp, a, b, out=part)
    return acc


def device_weight_grad(xp: Any, gy4: Any, windows: Any, kernel_rank: int) -> Any:
    """sum over n of gy4[n] @ cols[n]^T on a device, (g, O/g, C/g*K): one matmul whose
    contraction runs over the images and positions together (N*L).

    ``gy4`` is (N, g, O/g, L) and ``windows`` (N, C, *kernel, *out), the window view
    (or, with ``kernel_rank`` 0, the input itself). cuBLAS splits a long contraction
    over the GPU, where a batch of N products, each with a small result and a
    contraction of L, left it idle (a 3-d U-Net layer's weight gradient took
    twice as long that way on an H200).
    """
    n, g, og, length = gy4.shape
    c = windows.shape[1]
    depth = c // g * math.prod(windows.shape[2:2 + kernel_rank])
    grouped = windows.reshape((n, g, c // g) + windows.shape[2:])
    kernel_axes = tuple(range(3, 3 + kernel_rank))
    out_axes = tuple(range(3 + kernel_rank, grouped.ndim))
    gy_t = gy4[0] if n == 1 else xp.ascontiguousarray(gy4.transpose(1, 2, 0, 3))
    gy_t = gy_t.reshape(g, og, n * length)  # (g, O/g, N*L)
    if g == 1:  # (C*K, N*L), copied along the output positions, as the windows lie
        cols = xp.ascontiguousarray(grouped.transpose((1, 2) + kernel_axes + (0,) + out_axes))
        # (O, N*L) @ (N*L, C*K) -> (O, C*K): cuBLAS reads the transposed columns in place
        return matmul(xp, gy_t[0], cols.reshape(depth, n * length).T)[None]
    cols = xp.ascontiguousarray(grouped.transpose((1, 0) + out_axes + (2,) + kernel_axes))
    # (g, O/g, N*L) @ (g, N*L, C/g*K) -> (g, O/g, C/g*K)
    return matmul(xp, gy_t, cols.reshape(g, n * length, depth))


def _batch_shape(sa: tuple[int, ...], sb: tuple[int, ...]) -> tuple[int, ...]:
    n = max(len(sa), len(sb))
    sa, sb = (1,) * (n - len(sa)) + sa, (1,) * (n - len(sb)) + sb
    return tuple(max(p, q) for p, q in zip(sa, sb))


def _per_matrix(xp: Any, a: Any, b: Any, out: Any, batch: tuple[int, ...]) -> Any:
    """out[i] = a[i] @ b[i] for every batch index i, as 2-d matmuls (broadcast by index)."""
    def at(m: Any, index: tuple[int, ...]) -> Any:
        lead = m.shape[:-2]
        tail = index[len(index) - len(lead):] if lead else ()
        return m[tuple(0 if n == 1 else i for n, i in zip(lead, tail))]

    for index in itertools.product(*(range(n) for n in batch)):
        xp.matmul(at(a, index), at(b, index), out=out[index])
    return out


def take(flat: Any, shape: tuple[int, ...]) -> Any:
    """The first prod(shape) elements of a flat buffer, as a contiguous array of ``shape``."""
    return flat[: math.prod(shape)].reshape(shape)


class Buffers:
    """One worker's flat buffers, by name; ``get(name, shape)`` is a contiguous prefix view.
    Those named in ``zeroed`` start zero-filled and stay zero where no chunk of that
    shape writes (they are refilled with zeros when the shape changes)."""

    def __init__(self, xp: Any, dtype: Any, sizes: dict[str, int], zeroed: tuple[str, ...]):
        self.zeroed = zeroed
        self.flat = {name: (scratch.zeros if name in zeroed else scratch.empty)(xp, (size,), dtype)
                     for name, size in sizes.items() if size}
        self.shapes: dict[str, tuple[int, ...]] = {}

    def get(self, name: str, shape: tuple[int, ...]) -> Any:
        view = take(self.flat[name], shape)
        if name in self.zeroed and self.shapes.get(name, shape) != shape:
            view[...] = 0
        self.shapes[name] = shape
        return view


def flipped(weight: Any, groups: int, contiguous: bool = True) -> Any:
    """W'[c, o] = W[o, c] flipped in space, per group: (O, C/g, *k) -> (C, O/g, *k), the
    kernel of the adjoint of a stride-1 convolution: contiguous (BLAS wants + strides),
    or with ``contiguous=False`` a view of ``weight`` where one exists (groups=1)."""
    xp = backend.get_array_module(weight)
    o, cg = weight.shape[:2]
    kernel = weight.shape[2:]
    w = weight.reshape((groups, o // groups, cg) + kernel).swapaxes(1, 2)
    w = xp.flip(w, axis=tuple(range(3, 3 + len(kernel)))).reshape(
        (groups * cg, o // groups) + kernel)
    return xp.ascontiguousarray(w) if contiguous else w


def adjoint_problem(problem: Problem) -> Problem | None:
    """The stride-1 convolution gy -> gx (flipped kernel), or None if there is none."""
    full = full_correlation(problem.geometry)
    if full is None:
        return None
    return Problem(full, problem.groups, problem.batch, problem.out_channels,
                   problem.in_channels, problem.dtype, problem.backend, problem.host_threads)


def grad_input_by_forward(problem: Problem, gy: Any, weight: Any,
                          forward: Callable[[Problem, Any, Any, Any], Any],
                          contiguous: bool = True) -> Any:
    """grad input of a stride-1, zero-padded convolution as a forward convolution of
    ``gy`` with the flipped, channel-swapped kernel (see :func:`flipped`), computed by
    ``forward``."""
    adjoint = adjoint_problem(problem)
    assert adjoint is not None, "the caller checks full_correlation first"
    return forward(adjoint, gy, flipped(weight, problem.groups, contiguous), None)


def _phase_axis(n: int, out: int, k: int, s: int, d: int, lo: int,
                r: int) -> tuple[list[int], int, int, tuple[int, int], int]:
    """One axis of input phase r (pixels s m + r): gx_r[m] = sum_j gy[m + e_j] w[k_j].

    Returns (taps k_j, in descending k, so that the shifts e_j = (r + lo - k_j d) / s
    ascend by d / gcd(d, s); the first and the end of the rows of gy the phase reads;
    the stride-1 padding (low, high) around them; the number of phase pixels)."""
    taps = [t for t in range(k - 1, -1, -1) if (r + lo - t * d) % s == 0]
    size = max(0, -(-(n - r) // s))
    if not taps or size == 0:
        return taps, 0, 0, (0, 0), size
    first = (r + lo - taps[0] * d) // s  # e_0: gy row of phase pixel 0's first tap
    last = first + size - 1 + (len(taps) - 1) * (d // math.gcd(d, s))
    start, stop = max(first, 0), min(last + 1, out)
    return taps, start, stop, (start - first, last + 1 - stop), size


def grad_input_by_phases(problem: Problem, gy: Any, weight: Any, forward: Callable[..., Any],
                         work_bytes: int | None = None) -> Any:
    """grad input of a zero-padded convolution (any stride and padding, groups=1) as one
    stride-1 forward per input phase, each computed by ``forward(problem, x, weight,
    bias, out=view)`` into its phase's view of the result: input pixel s m + r gets gy's
    windows through the taps k with s | r + lo - k d, which read gy at
    m + (r + lo - k d) / s; with those taps in descending order, a correlation of
    dilation d / gcd(d, s). The phases run on the executor's threads (``work_bytes``:
    the whole map's work measure), each forward serial in its thread, largest first."""
    g = problem.geometry
    xp = backend.get_array_module(gy, weight)
    gx = xp.empty((problem.batch, problem.in_channels) + g.in_size, dtype=gy.dtype)
    phases: list[tuple[list[Any], tuple[int, ...]]] = [
        ([_phase_axis(*a, lo, r) for a, (lo, _), r in zip(
            zip(g.in_size, g.out_size, g.kernel, g.stride, g.dilation), g.pads, residue)],
         residue) for residue in itertools.product(*(range(s) for s in g.stride))]
    phases.sort(key=lambda phase: -math.prod(len(axis[0]) for axis in phase[0]))
    executor.map_chunks(_phase_forward, phases, problem, gy, weight, gx, forward,
                        arrays=(gy,), work_bytes=work_bytes)
    return gx


def _phase_forward(_: Any, phase: tuple[list[Any], tuple[int, ...]], problem: Problem,
                   gy: Any, weight: Any, gx: Any, forward: Callable[..., Any]) -> None:
    """One input phase of grad_input_by_phases: (its axes' _phase_axis, its residue)."""
    g, (axes, residue) = problem.geometry, phase
    xp = backend.get_array_module(gy, weight)
    part = gx[(slice(None), slice(None)) + tuple(
        slice(r, None, s) for r, s in zip(residue, g.stride))]
    if part.size == 0:
        return
    if any(not taps or stop <= start for taps, start, stop, _, _ in axes):
        part[...] = 0  # no window reaches these pixels
        return
    sub = weight[(slice(None), slice(None)) + xp.ix_(*(taps for taps, *_ in axes))]
    geometry = ConvGeometry(
        tuple(stop - start for _, start, stop, _, _ in axes), tuple(sub.shape[2:]),
        (1,) * g.nd, tuple(d // math.gcd(d, s) for d, s in zip(g.dilation, g.stride)),
        tuple(pads for *_, pads, _ in axes), tuple(size for *_, size in axes))
    rows = gy[(slice(None), slice(None)) + tuple(slice(a, b) for _, a, b, _, _ in axes)]
    # (C, O, *taps): the kernel of gy -> gx_r
    forward(Problem(geometry, 1, problem.batch, problem.out_channels, problem.in_channels,
                    problem.dtype, problem.backend, problem.host_threads),
            rows, xp.ascontiguousarray(sub.swapaxes(0, 1)), None, out=part)


def empty_grads(problem: Problem, xp: Any, need_input: bool, need_weight: bool,
                weight_shape: tuple[int, ...]) -> tuple[Any, Any]:
    """Zero gradients for an empty batch or output (nothing to sum)."""
    g = problem.geometry
    gx = (xp.zeros((problem.batch, problem.in_channels) + g.in_size, dtype=problem.dtype)
          if need_input else None)
    gw = xp.zeros(weight_shape, dtype=problem.dtype) if need_weight else None
    return gx, gw
