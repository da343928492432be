"""The FFT path: the convolution theorem, one batch chunk at a time.

Layout: x (N, C, *in), weight (O, C/g, *k), gy (N, O, *out); g groups. Each
map is three transforms and a per-frequency channel contraction, a batched
matmul over the frequencies ``f`` (and the groups)::

    forward      Y[f]  = X[f] (g, b, C/g*S) @ W[-f] (g, C/g*S, O/g)
    grad input   GX[f] = GY[f] (g, b, O/g) @ W[f] (g, O/g, C/g*S)
    grad weight  GW[f] = sum over chunks of GY[-f]^T (g, O/g, b) @ X[f] (g, b, C/g*S)

where ``X`` and ``GY`` are ``rfftn`` (``fftn`` for complex dtypes) of the
input and of grad output over the spatial axes, zero-extended to a 2,3,5-smooth
size per axis (:func:`next_smooth`), and ``W`` is the spectrum of the (dilated)
kernel, a direct DFT of its few taps. The forward is a cross-correlation: it
takes the *reflected* spectrum ``W[-f]`` (``conj(W[f])`` for real kernels),
so no flipped copy of the kernel is made; grad weight likewise reflects the
grad-output spectrum. Grad weight is summed in the frequency domain over the
chunks and transformed back once, at the taps only. Sums over the channels are
in the contraction, so the three maps cost O((C + O) L log L + C O L) per image
for L transformed points, whatever the kernel size: this path wins for large
kernels with few channels.

Why the circular products are exact. The transforms are circular, so every
axis is sized to keep the wrap-around away from the values that are kept:
with the zero padding ``lo`` moved into the kernel (tap ``j`` at ``j*d - lo``,
negative positions wrapping to the end of the kernel buffer), the FFT size
``L >= max(ceil(n/s) - qmin, m + qmax, m, qmax - qmin + 1)`` (``n`` input,
``m`` output length, ``q`` the taps' positions in their phase) makes each kept
output read only true input values or zeros. No padded copy of the input is
made for zero padding; other padding modes pad the chunk first
(:func:`npconv.patches.pad`) and take their gradient back with
:func:`npconv.patches.unpad_add`.

Stride is polyphase, not subsample-afterwards: with stride ``s`` the input is
split into ``s`` phase images per axis (``x[..., r::s]``) and the kernel
likewise, and the phases become extra channels of the contraction
(``S = prod(stride)`` of them). The forward transforms and the contraction
cost the same flops as at stride 1, but the inverse transform runs on the
subsampled output (S times fewer points) and no discarded output is ever
computed; grad input and grad weight use the same layout, with no
zero-inserted upsampled copy of grad output.

Precision: float16 is computed in float32 and rounded at the end (pocketfft
has no half precision); float32 and complex64 transform in single precision.
The error grows with ``u log2(L)`` of the transforms (see docs/fft.md for
measured figures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .. import backend, executor, workspace
from ..patches import pad, unpad_add
from ..plan import Problem
from ._common import empty_grads

# Chunks of up to this many bytes of spectra: the per-frequency matmuls have the
# chunk's images as rows (or, for grad weight, as the contraction), and NumPy's stacked
# matmul pays ~0.3-0.6 us per frequency per call: per image, b = 1 ran 3-5x slower than
# b = 4, and b = 8 no faster than b = 4 (C = O = 16, 9180 frequencies, measured).
TARGET_CHUNK_BYTES = 64 * 2**20
# Batches of at least this many images are cut into two or more chunks for the host
# threads (each chunk keeping >= MIN_CHUNK_IMAGES // 2 images' rows per matmul).
MIN_CHUNK_IMAGES = 4
# The kernel's spectrum and grad weight's read-back, left products with K = taps or
# frequencies, run as this many column blocks on the executor.
LEFT_BLOCKS = 8


def next_smooth(n: int) -> int:
    """The smallest 2,3,5-smooth integer >= ``n`` (a fast FFT size for pocketfft/cuFFT).

    Examples
    --------
    >>> [next_smooth(n) for n in (1, 7, 11, 97, 131, 257)]
    [1, 8, 12, 100, 135, 270]
    """
    m = max(1, int(n))
    while True:
        rest = m
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return m
        m += 1


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Axis:
    """One spatial axis: frame length ``n`` (the input, or the mode-padded input),
    stride ``s``, phase length ``nr = ceil(n/s)``, FFT size ``lp``, output length ``m``,
    and each kernel tap's phase ``r`` and position ``q mod lp`` in its phase."""

    n: int
    s: int
    nr: int
    lp: int
    m: int
    r: tuple[int, ...]
    q: tuple[int, ...]


def _axis(n: int, lo: int, k: int, s: int, d: int, m: int) -> _Axis:
    """Output ``t`` reads frame index ``t*s + j*d - lo`` = ``(t + q)*s + r`` for tap ``j``."""
    shifts = [j * d - lo for j in range(k)]
    qs, rs = [v // s for v in shifts], [v % s for v in shifts]
    nr = -(-n // s)
    qmin, qmax = min(qs), max(qs)
    # wrap-around stays on zeros: negative reads land beyond the data (lp + qmin >= nr),
    # every output and its reads stay below lp, and the taps of one phase stay distinct
    lp = next_smooth(max(nr - qmin, m + qmax, m, qmax - qmin + 1))
    return _Axis(n, s, nr, lp, m, tuple(rs), tuple(q % lp for q in qs))


@dataclass(frozen=True)
class _Layout:
    """The transforms of one problem: per-axis layout, dtypes and chunking."""

    axes: tuple[_Axis, ...]
    padded: bool  # a non-zero padding mode: the frame is the mode-padded input
    complex: bool
    work: Any  # real or complex dtype the transforms run in
    spectral: Any  # complex dtype of the spectra
    groups: int
    host: bool  # host threads (NumPy); False on a device

    @property
    def nd(self) -> int:
        return len(self.axes)

    @property
    def phases(self) -> int:
        return math.prod(a.s for a in self.axes)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(a.lp for a in self.axes)

    @property
    def freqs(self) -> tuple[int, ...]:
        """Shape of a spectrum: the half axis last for real transforms."""
        if self.complex:
            return self.sizes
        return self.sizes[:-1] + (self.sizes[-1] // 2 + 1,)

    @property
    def spatial(self) -> tuple[int, ...]:
        return tuple(range(-self.nd, 0))


def _layout(problem: Problem, xp: Any) -> _Layout:
    g = problem.geometry
    padded = not g.zero_padded
    frame = g.padded_size if padded else g.in_size
    lows = [0 if padded else lo for lo, _ in g.pads]
    axes = tuple(_axis(n, lo, k, s, d, m) for n, lo, k, s, d, m in
                 zip(frame, lows, g.kernel, g.stride, g.dilation, g.out_size))
    kind = backend.scalar_kind(problem.dtype)
    work = problem.dtype
    if kind == "f" and backend.numpy_dtype(work).itemsize < 4:
        work = backend.numpy_dtype("float32")  # no half-precision transforms
    spectral = xp.result_type(work, xp.complex64)
    return _Layout(axes, padded, kind == "c", backend.numpy_dtype(work),
                   backend.numpy_dtype(spectral), problem.groups, problem.host_threads)


# Both directions are 'ortho' (scaled by 1/sqrt(L) each), and the kernel's spectrum is
# unnormalised, so a product inverted is scaled 1/L as the plain transforms would. NumPy
# 2.4 runs its float32 transforms 2-4x slower with the unit scale of the 'backward'
# forward or the 'forward' inverse (a float64 loop for the scale 1, measured).
def _fft(lay: _Layout, a: Any, xp: Any) -> Any:
    """The spectrum over the last nd axes, zero-extended to the FFT sizes, / sqrt(L)."""
    a = a.astype(lay.work, copy=False)
    if lay.complex:
        return xp.fft.fftn(a, s=lay.sizes, axes=lay.spatial, norm="ortho")
    return xp.fft.rfftn(a, s=lay.sizes, axes=lay.spatial, norm="ortho")


def _ifft(lay: _Layout, spec: Any, xp: Any) -> Any:
    """The inverse transform over the last nd axes, / sqrt(L)."""
    if lay.complex:
        return xp.fft.ifftn(spec, s=lay.sizes, axes=lay.spatial, norm="ortho")
    return xp.fft.irfftn(spec, s=lay.sizes, axes=lay.spatial, norm="ortho")


def _phases(lay: _Layout, frame: Any, xp: Any) -> Any:
    """(b, C, *n) -> (b, C, *s, *nr): phase image ``r`` holds ``frame[..., r::s]``."""
    b, c = frame.shape[:2]
    if lay.phases == 1:
        return frame.reshape((b, c) + (1,) * lay.nd + frame.shape[2:])
    ext = xp.zeros((b, c) + tuple(a.nr * a.s for a in lay.axes), dtype=frame.dtype)
    ext[(slice(None),) * 2 + tuple(slice(0, a.n) for a in lay.axes)] = frame
    split = ext.reshape((b, c) + sum(((a.nr, a.s) for a in lay.axes), ()))
    order = (0, 1) + tuple(3 + 2 * i for i in range(lay.nd)) + tuple(2 + 2 * i
                                                                    for i in range(lay.nd))
    return split.transpose(order)


def _unphase(lay: _Layout, a: Any, xp: Any) -> Any:
    """(b, C, *s, *lp) -> (b, C, *n): the inverse of :func:`_phases` (cropped)."""
    b, c, nd = a.shape[0], a.shape[1], lay.nd
    if lay.phases == 1:
        a = a.reshape((b, c) + a.shape[2 + nd:])
        return a[(slice(None),) * 2 + tuple(slice(0, ax.n) for ax in lay.axes)]
    a = a[(slice(None),) * (2 + nd) + tuple(slice(0, ax.nr) for ax in lay.axes)]
    order = (0, 1) + sum(((2 + nd + i, 2 + i) for i in range(nd)), ())
    whole = xp.ascontiguousarray(a.transpose(order))
    whole = whole.reshape((b, c) + tuple(ax.nr * ax.s for ax in lay.axes))
    return whole[(slice(None),) * 2 + tuple(slice(0, ax.n) for ax in lay.axes)]


def _freq_major(lay: _Layout, spec: Any, xp: Any) -> Any:
    """(b, X, [*s,] *F) spectrum -> contiguous (F, g, b, X/g [* S]) for the matmuls."""
    b, g = spec.shape[0], lay.groups
    fv = math.prod(lay.freqs)
    flat = spec.reshape(b, g, -1, fv)
    return xp.ascontiguousarray(flat.transpose(3, 1, 0, 2))


def _from_freq_major(lay: _Layout, z: Any, lead: tuple[int, ...]) -> Any:
    """(F, g, b, X) -> (b, *lead, *F) with lead = (g*X,) or (C, *s): a transposed view."""
    b = z.shape[2]
    return z.transpose(2, 1, 3, 0).reshape((b,) + lead + lay.freqs)


def _reflect(lay: _Layout, spec: Any, reverse: Any, xp: Any) -> Any:
    """``spec[-f]`` of a frequency-major spectrum: the spectrum of the reflected signal,
    ``conj`` for a real signal's (Hermitian) spectrum."""
    if lay.complex:
        return xp.take(spec, reverse, axis=0)
    return xp.conj(spec)


def _reverse_index(lay: _Layout, xp: Any) -> Any:
    """Flat index of ``-f mod L`` for each flat frequency ``f`` (complex spectra only)."""
    if not lay.complex:
        return None
    index = xp.arange(math.prod(lay.sizes)).reshape(lay.sizes)
    for axis in range(lay.nd):
        index = xp.roll(xp.flip(index, axis=axis), 1, axis=axis)
    return index.reshape(-1)


# --------------------------------------------------------------------------- the kernel


def _wave(lay: _Layout, axis: int, sign: int, xp: Any) -> Any:
    """(F, k): ``exp(sign 2 pi i f q(j) / L)`` for frequency ``f`` and tap ``j`` of ``axis``.

    The kernel is tiny next to its zero-extended buffer, so its spectrum is a
    direct DFT of its taps, one axis at a time (exact angles ``f q mod L``,
    computed in double precision), instead of an FFT of a mostly zero buffer;
    likewise grad weight is read back at the taps only."""
    ax = lay.axes[axis]
    f = xp.arange(lay.freqs[axis])
    angle = (f[:, None] * xp.asarray(ax.q)[None, :]) % ax.lp * (2 * math.pi / ax.lp)
    return (xp.cos(angle) + (1j * sign) * xp.sin(angle)).astype(lay.spectral)


def _left_block(_: Any, cols: slice, m: Any, a: Any, out: Any) -> None:
    out[:, cols] = backend.get_array_module(a).matmul(m, a[:, cols])


def _left(lay: _Layout, m: Any, t: Any, xp: Any) -> Any:
    """``m (P, K) @ t (K, ...)``: a left product keeps the frequencies leading, so the
    spectra come out frequency-major with no transposed copy of their full size.

    On the host the columns go to the executor in LEFT_BLOCKS blocks (fixed by the
    shape): the BLAS then runs single-threaded inside npconv's threads (OpenBLAS' own
    two threads tripled the CPU time of these K = k products on a busy machine)."""
    a = xp.ascontiguousarray(t).reshape(m.shape[1], -1).astype(m.dtype, copy=False)
    shape = m.shape[:1] + t.shape[1:]
    if not lay.host or a.shape[1] < LEFT_BLOCKS:
        return xp.matmul(m, a).reshape(shape)
    out = xp.empty((m.shape[0], a.shape[1]), dtype=m.dtype)
    step = -(-a.shape[1] // LEFT_BLOCKS)
    blocks = [slice(i, i + step) for i in range(0, a.shape[1], step)]
    executor.map_chunks(_left_block, blocks, m, a, out, arrays=(a,),
                        per_worker_bytes=out.nbytes // len(blocks), work_bytes=out.nbytes)
    return out.reshape(shape)


def _phase_index(lay: _Layout, xp: Any) -> tuple[Any, ...]:
    """Index (.., *s, *k) picking each tap's phase: ``[:, :, r(j1), .., j1, ..]``."""
    nd = lay.nd

    def mesh(values: Any, axis: int) -> Any:
        shape = [1] * nd
        shape[axis] = -1
        return xp.asarray(values).reshape(shape)

    phases = tuple(mesh(a.r, i) for i, a in enumerate(lay.axes))
    taps = tuple(mesh(list(range(len(a.r))), i) for i, a in enumerate(lay.axes))
    return (slice(None), slice(None)) + phases + taps


def _kernel_spectrum(lay: _Layout, weight: Any, sign: int, xp: Any) -> Any:
    """The unnormalised spectrum of the dilated, shifted, phase-split kernel, frequency-major:
    ``W[f]`` (F, g, O/g, C/g*S) for sign -1, ``W[-f]`` (F, g, C/g*S, O/g) for sign +1."""
    o, cg, nd, g = weight.shape[0], weight.shape[1], lay.nd, lay.groups
    phases = tuple(a.s for a in lay.axes)
    split = xp.zeros((o, cg) + phases + weight.shape[2:], dtype=lay.work)
    split[_phase_index(lay, xp)] = weight  # tap j in its phase r(j), zero in the others
    split = split.reshape((g, o // g, cg) + phases + weight.shape[2:])
    rest = (0, 2) + tuple(range(3, 3 + nd)) + (1,) if sign > 0 else tuple(range(3 + nd))
    t = split.transpose(tuple(range(3 + nd, 3 + 2 * nd)) + rest)  # (*k, *rest)
    for axis in reversed(range(nd)):  # (.., k_a, rest) -> (F_a, .., rest)
        t = _left(lay, _wave(lay, axis, sign, xp), xp.moveaxis(t, nd - 1, 0), xp)
    fv, og = math.prod(lay.freqs), o // g
    return t.reshape((fv, g, -1, og) if sign > 0 else (fv, g, og, -1))


def _weight_from_spectrum(lay: _Layout, total: Any, weight_shape: tuple[int, ...],
                          xp: Any) -> Any:
    """gW (O, C/g, *k) from the sum (F, g, O/g, C/g*S) of products of 'ortho' spectra
    (scaled 1/L): the inverse DFT at the taps only, ``sum_f total[f] exp(+2 pi i f q / L)``,
    one axis at a time (for real data: the half axis counted twice but at 0 and L/2,
    and the real part), then each tap read from its phase."""
    o, cg, nd = weight_shape[0], weight_shape[1], lay.nd
    t = total.reshape(lay.freqs + (o, cg) + tuple(a.s for a in lay.axes))
    for axis in range(nd):  # (F_a, .., rest) -> (.., rest, k_a)
        back = _wave(lay, axis, 1, xp).T  # (k, F)
        if not lay.complex and axis == nd - 1:
            count = xp.full(lay.freqs[axis], 2.0)
            count[0] = 1.0
            if lay.sizes[axis] % 2 == 0:
                count[-1] = 1.0
            back = back * count.astype(lay.work)
        t = xp.moveaxis(_left(lay, back, t, xp), 0, -1)
    taps = t[_phase_index(lay, xp)]
    return taps if lay.complex else taps.real


def _spectrum_bytes(lay: _Layout, channels: int) -> int:
    return channels * math.prod(lay.freqs) * lay.spectral.itemsize


def _chunk(lay: _Layout, per_image: int, fixed: int, n: int, what: str, host: bool) -> int:
    """Images per chunk: up to TARGET_CHUNK_BYTES, at most half a batch of MIN_CHUNK_IMAGES;
    on a device (no ``host`` threads) one chunk up to :func:`npconv.workspace.device_target`.

    Raises MemoryError when one image and the ``fixed`` spectra exceed the workspace."""
    limit = workspace.get_workspace_limit()
    if per_image + fixed > limit:
        raise MemoryError(
            f"the FFT path needs {(per_image + fixed) / 2**20:.1f} MiB for {what} (one image's "
            f"spectra and the kernel's, FFT sizes {lay.sizes}), more than the workspace limit "
            f"of {limit / 2**20:.1f} MiB; raise it with npconv.set_workspace_limit() or "
            f"NPCONV_WORKSPACE_MB, or use another algorithm")
    if not host:  # kernel launches cost per chunk on a GPU: as few chunks as fit
        return max(1, min(n, (workspace.device_target() - fixed) // per_image))
    chunk = max(1, min(n, (limit - fixed) // per_image, TARGET_CHUNK_BYTES // per_image))
    return min(chunk, -(-n // 2)) if n >= MIN_CHUNK_IMAGES else chunk


# --------------------------------------------------------------------------- forward


@dataclass(frozen=True)
class _Job:
    """Everything a chunk kernel needs besides its arrays."""

    lay: _Layout
    geometry: Any
    chunk: int
    reverse: Any  # index of -f (complex spectra) or None
    host: bool = True  # False on a device: matmul operands contiguous (CuPy copies others)


def _frame(job: _Job, x: Any, start: int, stop: int) -> Any:
    """Images ``start:stop`` of x as the transforms see them (mode-padded if needed)."""
    part = x[start:stop]
    return pad(part, job.geometry) if job.lay.padded else part


def _input_spectrum(job: _Job, x: Any, start: int, stop: int, xp: Any) -> Any:
    """(F, g, b, C/g*S): the phase images of the chunk, transformed."""
    return _freq_major(job.lay, _fft(job.lay, _phases(job.lay, _frame(job, x, start, stop), xp),
                                     xp), xp)


def _batched(xp: Any, a: Any, b: Any) -> Any:
    """``a @ b`` for (F, g, m, k) @ (F, g, k, n) stacks, batched over F*g in 3-d
    (NumPy's 4-d matmul ran 3-5x slower on these many small matrices, measured)."""
    f, g = a.shape[:2]
    out = xp.matmul(a.reshape((f * g,) + a.shape[2:]), b.reshape((f * g,) + b.shape[2:]))
    return out.reshape((f, g) + out.shape[1:])


def _forward_chunk(_: Any, start: int, job: _Job, x: Any, y: Any, w_spec: Any,
                   bias: Any) -> None:
    """y[start:stop] = irfftn(X @ W~), cropped to the output (+ bias)."""
    xp = backend.get_array_module(y)
    stop = min(x.shape[0], start + job.chunk)
    lay, o = job.lay, y.shape[1]
    z = _batched(xp, _input_spectrum(job, x, start, stop, xp), w_spec)  # (F, g, b, O/g)
    out = _ifft(lay, _from_freq_major(lay, z, (o,)), xp)
    crop = out[(slice(None),) * 2 + tuple(slice(0, a.m) for a in lay.axes)]
    if bias is None:
        y[start:stop] = crop
    else:
        y[start:stop] = crop + bias


def forward(problem: Problem, x: Any, weight: Any, bias: Any) -> Any:
    """y (N, O, *out) = conv(x, weight) + bias through the convolution theorem.

    Raises
    ------
    MemoryError
        If the spectra of one image and of the kernel exceed the workspace limit.
    """
    xp = backend.get_array_module(x, weight)
    g = problem.geometry
    n, c, o = x.shape[0], x.shape[1], weight.shape[0]
    y = xp.empty((n, o) + g.out_size, dtype=x.dtype)
    if n == 0 or g.out_volume == 0:
        return y
    lay = _layout(problem, xp)
    s = lay.phases
    per_image = 2 * _spectrum_bytes(lay, c * s + o) + lay.work.itemsize * (
        c * s * math.prod(a.nr for a in lay.axes) + o * math.prod(lay.sizes))
    fixed = 2 * _spectrum_bytes(lay, o * (c // problem.groups) * s)
    chunk = _chunk(lay, per_image, fixed, n, "the forward", problem.host_threads)
    w_spec = _kernel_spectrum(lay, weight, 1, xp)  # reflected: (F, g, C/g*S, O/g)
    bias_b = None if bias is None else bias.reshape((1, o) + (1,) * g.nd)
    job = _Job(lay, g, chunk, None, problem.host_threads)
    starts = list(range(0, n, chunk))
    executor.map_chunks(_forward_chunk, starts, job, x, y, w_spec, bias_b,
                        per_worker_bytes=chunk * per_image, arrays=(x, weight))
    return y


# --------------------------------------------------------------------------- backward


def _backward_chunk(_: Any, start: int, acc: Any, job: _Job, gy: Any, x: Any, gx: Any,
                    w_spec: Any) -> Any:
    """Images ``start:start+chunk``: grad input written into ``gx`` (if not None), and
    their grad-weight spectrum added to ``acc`` (if ``x`` is not None) and returned."""
    xp = backend.get_array_module(gy)
    lay = job.lay
    stop = min(gy.shape[0], start + job.chunk)
    g_spec = _freq_major(lay, _fft(lay, gy[start:stop], xp), xp)  # (F, g, b, O/g)
    if gx is not None:
        c = gx.shape[1]
        z = _batched(xp, g_spec, w_spec)  # (F, g, b, C/g*S)
        frame = _unphase(lay, _ifft(lay, _from_freq_major(
            lay, z, (c,) + tuple(a.s for a in lay.axes)), xp), xp)
        if lay.padded:
            unpad_add(gx[start:stop], frame, job.geometry, accumulate=False)
        else:
            gx[start:stop] = frame
    if x is not None:
        reflected = _reflect(lay, g_spec, job.reverse, xp).swapaxes(-1, -2)
        if not job.host:
            reflected = xp.ascontiguousarray(reflected)
        # (F, g, O/g, b) @ (F, g, b, C/g*S) -> (F, g, O/g, C/g*S), summed over the lane
        part = _batched(xp, reflected, _input_spectrum(job, x, start, stop, xp))
        if acc is None:
            return part
        acc += part
    return acc


def backward(problem: Problem, gy: Any, x: Any, weight: Any, need_input: bool,
             need_weight: bool) -> tuple[Any, Any]:
    """(grad input (N, C, *in), grad weight (O, C/g, *k)), either None when not needed.

    Per chunk of images: the grad-output spectrum, then grad input as the
    product with the kernel spectrum, inverted and put back in place (the
    padding's adjoint for non-zero modes), and the grad-weight spectrum as the
    product of the reflected grad-output spectrum with the input spectrum,
    summed over chunks in a fixed lane order and inverted once.

    Raises
    ------
    MemoryError
        If the spectra of one image and of the kernel exceed the workspace limit.
    """
    xp = backend.get_array_module(gy, x, weight)
    geo = problem.geometry
    n, o = gy.shape[:2]
    c, groups = problem.in_channels, problem.groups
    if n == 0 or not (need_input or need_weight):
        return empty_grads(problem, xp, need_input, need_weight, tuple(weight.shape))
    lay = _layout(problem, xp)
    s, cg = lay.phases, c // groups
    volume = math.prod(lay.sizes)
    per_image = 2 * _spectrum_bytes(lay, o + 2 * c * s) + lay.work.itemsize * (
        o * math.prod(geo.out_size) + 2 * c * s * volume)
    # the kernel spectrum, and grad weight's total and one lane partial (executor.lanes_of
    # keeps the other lanes' partials within a quarter of the workspace)
    fixed = _spectrum_bytes(lay, o * cg * s) * (need_input + 2 * need_weight)
    chunk = _chunk(lay, per_image, fixed, n, "the backward", problem.host_threads)
    job = _Job(lay, geo, chunk, _reverse_index(lay, xp), problem.host_threads)
    gx = w_spec = None
    if need_input:
        gx = xp.empty((n, c) + geo.in_size, dtype=gy.dtype)
        w_spec = _kernel_spectrum(lay, weight, -1, xp)  # (F, g, O/g, C/g*S)
    starts = list(range(0, n, chunk))
    common = dict(per_worker_bytes=chunk * per_image, arrays=(gy, weight))
    if not need_weight:
        executor.map_chunks(_backward_chunk, starts, None, job, gy, None, gx, w_spec, **common)
        return gx, None
    total = xp.zeros((math.prod(lay.freqs), groups, o // groups, cg * s), dtype=lay.spectral)
    executor.reduce_chunks(_backward_chunk, starts, total, job, gy, x, gx, w_spec, **common)
    gw = _weight_from_spectrum(lay, total, tuple(weight.shape), xp)
    return gx, gw.astype(gy.dtype, copy=False)


def requires(problem: Problem, op: str) -> str | None:
    """Always None: every map of every convolution (any rank, groups, stride, dilation,
    padding mode; float16 is transformed in float32)."""
    return None
