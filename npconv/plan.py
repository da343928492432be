"""The planner: which path computes each map of one convolution call, and why.

One convolution call has three linear maps: the forward ``y = conv(x, W)``,
grad input ``gx = conv^T(gy, W)`` and grad weight ``gW = gy (x) patches(x)``.
:func:`plan` names the path (a module of :mod:`npconv.paths`) for each of
them from the call's :class:`Problem`, and says why. This module holds every
selection threshold of npconv but those of the rules that give maps to the compiled
paths ahead of the model (:mod:`npconv.compiled_rules`); the paths themselves only
compute.

With ``algorithm='auto'`` the planner takes, per map, the path of least time
predicted by :mod:`npconv.costmodel` (fitted on measured timings), among the
paths that can compute it; calls under :data:`SMALL_CALL_BYTES` take im2col
without asking, and arrays on a device take :func:`_device_plan`. The
hand-set rules that chose before the model (:func:`rule_plan`, with every
threshold and its measurement) remain as the baseline the model's fit is
compared with. Any other name of :data:`ALGORITHMS` is used for all three
maps, and a path that cannot compute a map for this geometry raises
``ValueError`` saying what it needs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from . import compiled_rules
from .geometry import ConvGeometry

#: Every value ``algorithm=`` accepts. 'auto' lets :func:`plan` choose;
#: 'reference' is :mod:`npconv.reference`, the formulas as written.
ALGORITHMS = ("auto", "reference", "im2col", "flipped", "pointwise", "direct", "depthwise",
              "winograd", "phases", "fft", "serial", "stacked", "shifted", "depthwise_jit",
              "blocked", "winograd_jit")

MAPS = ("forward", "grad_input", "grad_weight")

# Winograd when both channel counts per group reach this (measured: below it the
# tile transforms cost more than the 2.25-4x cheaper contraction) ...
WINOGRAD_MIN_CHANNELS = 16
# ... and there are enough output positions (batch x spatial) to amortise the weight
# and tile transforms. Measured with idle BLAS threads not spinning: below this,
# im2col won or tied (N1 C32 64x64, N4 C64 56x56, N2 C256 14x14).
WINOGRAD_MIN_POSITIONS = 32768
# Stride-1 layers with at most this many input channels per group are differentiated
# by the direct path (measured faster for C = 3, 8, 16; not 32), unless the output
# channels per group exceed 2 C/g + 16: there im2col's larger matmuls won (measured:
# 16 -> 64 and 16 -> 128 lost by 1.6-2x; 16 -> 48, 8 -> 32 won).
DIRECT_BACKWARD_MAX_CHANNELS = 16
# Strided windows are read through phase images when the output rows are at least
# this long and the kernel covers at least this many times the stride's area
# (measured: 7x7 and 5x5 stride 2 gained, 3x3 lost).
PHASE_MIN_WIDTH = 64
PHASE_MIN_OVERLAP = 4
# ... and the phase backward only while phase rows carry at most this fraction of
# junk columns beyond the output width (7x7 stride 2 gained 5%, 3x3 stride 2 tied
# or lost, measured).
PHASE_MAX_JUNK = 0.125


# FFT convolution (paths/fft.py) for stride-1, zero-padded, ungrouped 2-d and 3-d layers
# in float32/float64 on NumPy whose kernels have at least this many taps. Measured
# against the auto choice without fft (CPU time, one thread, 11 interleaved repeats,
# median ratio auto/fft [IQR] for forward, grad input, grad weight; N4 unless said):
# 2-d 7x7 C16 128^2 1.38 [1.31-1.48], 2.50 [2.39-2.55], 1.57 [1.50-1.62]; 7x7 C8 128^2
# 1.26, 2.61, 2.18; 9x9 C16 64^2 1.91, 3.63, 2.85; 7x7 C16 float64 1.45, 2.81, 2.23;
# 11x11 C3 -> 16 1.28, 3.02, 1.91; 3-d 5^3 C8 32^3 (N2) 2.24, 4.46, 3.89; 4^3 C16 24^3
# (N2) 1.11 [1.03-1.24], 2.22, 1.69. Below it no map won clearly: 5x5 C16 128^2 0.66,
# 1.22, 0.79 (C4-32 likewise); 3-d 3^3 C8 0.55, 0.96, 0.83. 1-d never won clearly (k9-31,
# C16-64, 1024 and 4096 long: 0.31-0.78, grad input 1.15 at k31): no 1-d rule. Wall
# clock, 2 threads, default BLAS, 21 repeats on the shared machine (load 4): 7x7 C16
# 128^2 N4 1.33 [1.11-1.57], 2.82 [2.40-3.28], 1.76 [1.68-1.82]; 7x7 C8 1.20, 2.80, 2.27;
# 3-d 5^3 C8 N2 2.39, 9.6, 3.05; N1 7x7 C16 0.79, 6.7, 1.03 (hence the batch rule).
FFT_MIN_KERNEL_VOLUME = 49
# ... for the forward and grad weight also taps x min(C, O) >= this: few channels leave the
# transforms of x and gy unamortised (7x7 C3 -> 16: forward 0.55, grad weight 0.76;
# 11x11 C3 -> 16 = 363 taps x channels won, see above; 7x7 C8 = 392 won), and a batch
# of >= FFT_MIN_BATCH images (N1 7x7 C16: forward 0.79, CPU and wall), while grad input
# won down to C3 (1.18) and N1 (1.77).
FFT_MIN_TAP_CHANNELS = 360
FFT_MIN_BATCH = 2
# ... and at most this many channels per side: at C32 the per-frequency contraction
# dominates and no map won clearly (7x7 C32 64^2 1.11, 1.14, 1.04; 128^2 N2 0.80, 0.83,
# 1.05; C64 32^2 1.25, 1.23, 1.03).
FFT_MAX_CHANNELS = 16


# Stride-1 layers with at most this many output positions per image take im2col's
# backward for both gradients (the images of a chunk merged into one contraction, the
# columns built once for both) instead of flipped + direct, whose per-image matmuls have
# only as many columns as an image has positions. Measured, im2col's time over flipped +
# direct's: in one process with torch (1 thread, min of 5) N4 C512 3x3 0.78x, N4 C256
# 6x6 0.64x, N4/N8 C256 7x7 0.70/0.79x, 12x12-16x16 0.94-0.99x, C64 24x24 1.09x; in
# separate default processes (2 threads, median of 15, after other layers ran) N4 C512
# 3x3 0.68-0.91x, 4x4 0.85-0.93x, N4 C256 6x6 0.87x, 7x7 1.04-1.16x (N4) and 0.89-0.92x
# (N8); in benchmarks/run.py's workers (separate processes, backward ratio to torch,
# two runs) ResNet-18 layer4 N4 C512 3x3 2.02-2.17 against 2.81-2.86, but layer3 N4
# C256 6x6 4.04-4.06 against 2.00-2.08 (its fresh weight-gradient buffers pay page
# faults there). So only images of <= 16 positions (3x3, 4x4) take it.
IM2COL_BACKWARD_MAX_POSITIONS = 16
# Calls whose whole column matrix is below this many bytes take im2col for every map:
# one matmul each, with none of the chunk machinery, which costs more than the
# arithmetic there (a 1x1x8x8 3x3 call: ~150 us through the chunked paths, measured).
SMALL_CALL_BYTES = 64 * 2**10
# Both gradients go to one path (its fused backward) unless the best pair of separate
# paths is predicted at least this much cheaper. The model's pair is the sum of two
# maps timed apart, but run back to back in one call they can cost more: VGG-11's
# 512 -> 512 8x8 took 4.7 ms for im2col's grad input and 6.0 for stacked's grad
# weight apart, 15.6-21 ms as the pair in one call, 12-13.7 ms as im2col's fused
# backward; predicted 11.2 and 11.6 ms (eighth session, 2 threads). The first of the
# pair runs on npconv's threads, which hold the BLAS at one thread to the call's end,
# so the second's matmuls, made for the BLAS's threads, ran on one; letting the BLAS
# go after the threaded stretch was no better (15.8-16.4 ms: its idle workers then
# spin while npconv's threads want the cores, into the next call).
SPLIT_MARGIN = 0.10


@dataclass(frozen=True)
class Problem:
    """Everything about one call that a path or the planner may look at.

    ``in_channels`` (C) and ``out_channels`` (O) are those of the convolution
    whose maps are computed: for a transposed convolution, the convolution it
    is the adjoint of (its ``in_size`` is the transposed call's output size).
    """

    geometry: ConvGeometry
    groups: int
    batch: int
    in_channels: int
    out_channels: int
    dtype: Any  # a numpy.dtype
    backend: str = "numpy"
    host_threads: bool = True

    def __hash__(self) -> int:
        # Problems key the plan cache of every call: hash the fields once.
        try:
            return self.__dict__["_hash"]  # type: ignore[no-any-return]
        except KeyError:
            value = hash((self.geometry, self.groups, self.batch, self.in_channels,
                          self.out_channels, self.dtype, self.backend, self.host_threads))
            object.__setattr__(self, "_hash", value)
            return value

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuilt from the fields, so a cached hash never crosses processes
        return type(self), tuple(getattr(self, f.name) for f in fields(self))

    @classmethod
    def of(cls, geometry: ConvGeometry, groups: int, x_shape: tuple[int, ...],
           weight_shape: tuple[int, ...], dtype: Any, backend: str = "numpy",
           host_threads: bool = True) -> Problem:
        """The problem of ``conv(x, weight)`` from the shapes (x batched)."""
        return cls(geometry, groups, x_shape[0], x_shape[1], weight_shape[0], dtype, backend,
                   host_threads)

    @functools.cached_property
    def cg(self) -> int:
        return self.in_channels // self.groups

    @functools.cached_property
    def og(self) -> int:
        return self.out_channels // self.groups

    @functools.cached_property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.cg == 1

    @functools.cached_property
    def pointwise(self) -> bool:
        g = self.geometry
        return (g.kernel_volume == 1 and all(s == 1 for s in g.stride)
                and not g.has_padding and g.in_size == g.out_size)

    @functools.cached_property
    def stride_one(self) -> bool:
        return all(s == 1 for s in self.geometry.stride)

    @functools.cached_property
    def column_bytes(self) -> int:
        """Bytes of the whole call's im2col matrix (N, C*K, L)."""
        g = self.geometry
        return (self.batch * self.in_channels * g.kernel_volume * g.out_volume
                * self.dtype.itemsize)

    @functools.cached_property
    def small(self) -> bool:
        """A call under SMALL_CALL_BYTES of columns: never chunked or threaded."""
        return self.column_bytes < SMALL_CALL_BYTES

    @functools.cached_property
    def positions(self) -> int:
        return self.batch * self.geometry.out_volume

    @functools.cached_property
    def multiply_adds(self) -> int:
        """Multiply-adds of one map (the forward's, and each gradient's)."""
        g = self.geometry
        return self.positions * self.out_channels * self.cg * g.kernel_volume


def full_correlation(geometry: ConvGeometry) -> ConvGeometry | None:
    """Geometry of the stride-1 convolution mapping grad_output to grad_input, if any.

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
        return None  # a transposed geometry whose trailing windows touch nothing
    return ConvGeometry(g.out_size, g.kernel, g.stride, g.dilation, pads, g.in_size)


def phase_split(geometry: ConvGeometry) -> bool:
    """Whether strided windows are worth reading through phase images."""
    strides = math.prod(geometry.stride)
    return (strides > 1 and geometry.zero_padded and geometry.out_size[-1] >= PHASE_MIN_WIDTH
            and geometry.kernel_volume >= PHASE_MIN_OVERLAP * strides)


def phase_backward(geometry: ConvGeometry) -> bool:
    """Whether the phase layout's junk columns are few enough for its backward."""
    g = geometry
    if not phase_split(g):
        return False
    pitch = math.prod(-(-p // s) for p, s in zip(g.padded_size[1:], g.stride[1:]))
    return pitch <= (1 + PHASE_MAX_JUNK) * math.prod(g.out_size[1:])


@dataclass(frozen=True)
class Plan:
    """The path of each map, with the reason it was chosen.

    ``str(plan)`` is a small table; ``plan.forward`` etc. are path names.
    """

    forward: str
    grad_input: str
    grad_weight: str
    reasons: dict[str, str] = field(default_factory=dict, compare=False)

    def __str__(self) -> str:
        rows = [f"{name:<12} {getattr(self, name):<10} {self.reasons.get(name, '')}"
                for name in MAPS]
        return "\n".join(rows)


def _fft_input(p: Problem) -> bool:
    """Whether 'auto' computes grad input by FFT (and the common part of the other rules)."""
    g = p.geometry
    return (p.stride_one and g.nd >= 2 and p.groups == 1 and g.zero_padded
            and p.backend == "numpy" and p.dtype.kind == "f" and p.dtype.itemsize >= 4
            and g.kernel_volume >= FFT_MIN_KERNEL_VOLUME
            and max(p.cg, p.og) <= FFT_MAX_CHANNELS)


def _fft_dense(p: Problem) -> bool:
    """Whether 'auto' computes the forward and grad weight by FFT."""
    return (_fft_input(p) and p.batch >= FFT_MIN_BATCH
            and p.geometry.kernel_volume * min(p.cg, p.og) >= FFT_MIN_TAP_CHANNELS)


_FFT_WHY = (f"stride 1, a kernel of >= {FFT_MIN_KERNEL_VOLUME} taps and <= {FFT_MAX_CHANNELS} "
            "channels: FFT convolution, whose cost does not grow with the kernel")


def _auto_forward(p: Problem) -> tuple[str, str]:
    from .paths import get_path

    winograd = get_path("winograd")
    if p.pointwise:
        return "pointwise", "1x1 kernel, stride 1, no padding: the input is its own im2col"
    if p.depthwise:
        return "depthwise", "one input channel per group: elementwise multiply-adds"
    if (winograd.requires(p, "forward") is None
            and min(p.cg, p.og) >= WINOGRAD_MIN_CHANNELS
            and p.positions >= WINOGRAD_MIN_POSITIONS):
        return "winograd", (f"3x3 stride 1 with >= {WINOGRAD_MIN_CHANNELS} channels per group "
                            f"and >= {WINOGRAD_MIN_POSITIONS} output positions")
    if _fft_dense(p):
        return "fft", _FFT_WHY + f" (taps x channels >= {FFT_MIN_TAP_CHANNELS})"
    if phase_split(p.geometry):
        return "phases", "large strided kernel over long rows: windows from phase images"
    return "im2col", "the general path: column chunks and one matmul each"


def _auto_grad_input(p: Problem, forward: str) -> tuple[str, str]:
    if forward in ("pointwise", "depthwise"):
        return forward, f"as the forward ({forward})"
    if _fft_input(p):
        return "fft", _FFT_WHY
    if (p.stride_one and p.cg <= DIRECT_BACKWARD_MAX_CHANNELS
            and p.og <= 2 * p.cg + 16 and forward == "im2col"):
        return "direct", (f"stride 1 with <= {DIRECT_BACKWARD_MAX_CHANNELS} input channels "
                          "per group: shifted adds over long rows")
    if (p.stride_one and forward == "im2col"
            and p.geometry.out_volume <= IM2COL_BACKWARD_MAX_POSITIONS):
        return "im2col", (f"stride 1, <= {IM2COL_BACKWARD_MAX_POSITIONS} positions per image: "
                          "matmul over the chunk's images, then col2im's scatter-add")
    full = full_correlation(p.geometry)
    if full is not None:
        adjoint = Problem(full, p.groups, p.batch, p.out_channels, p.in_channels, p.dtype,
                          p.backend, p.host_threads)
        if _auto_forward(adjoint)[0] == "winograd":
            return "winograd", "stride 1: a Winograd convolution of gy with the flipped kernel"
        return "flipped", "stride 1: an im2col convolution of gy with the flipped kernel"
    if forward == "phases" and phase_backward(p.geometry):
        return "phases", "large strided kernel: column gradient added back to phase images"
    return "im2col", "matmul then col2im's scatter-add"


def _auto_grad_weight(p: Problem, forward: str, grad_input: str) -> tuple[str, str]:
    if forward in ("pointwise", "depthwise") or grad_input == "direct":
        return grad_input, f"as grad input ({grad_input})"
    if _fft_dense(p):
        return "fft", _FFT_WHY + f" (taps x channels >= {FFT_MIN_TAP_CHANNELS})"
    if forward == "winograd":
        return "winograd", "the transposed Winograd algorithm: a quarter of im2col's flops"
    if grad_input == "phases":
        return "phases", "shares the phase images with grad input"
    if p.stride_one and grad_input == "im2col":
        return "im2col", "as grad input: one pass builds the columns for both"
    if p.stride_one:
        return "direct", "stride 1: columns of long shifted rows instead of windows"
    return "im2col", "window columns and one matmul per chunk"


def candidates(problem: Problem, maps: tuple[str, ...]) -> list[str]:
    """Every fast path (not 'auto' or 'reference') that can compute all of ``maps``."""
    from .paths import get_path

    return [name for name in ALGORITHMS[2:]
            if all(get_path(name).requires(problem, m) is None for m in maps)]


def _cheapest(p: Problem, op: str, needs: tuple[str, ...],
              table: Any) -> list[tuple[float, str]]:
    """(predicted seconds, path) of the paths that compute ``needs``, cheapest first."""
    from . import costmodel

    found = []
    for name in candidates(p, needs):
        seconds = costmodel.predict(p, op, name, table)
        if seconds is not None:
            found.append((seconds, name))
    return sorted(found)


def _why(ranked: list[tuple[float, str]], table: Any, what: str = "predicted") -> str:
    from . import costmodel

    text = ", ".join(f"{n} {t * 1e3:.3g} ms" for t, n in ranked[:3])
    source = "a given table" if table is not None else f"{costmodel.active_table()} table"
    return f"cost model ({source}), {what}: {text}"


def model_plan(p: Problem, table: Any = None, maps: tuple[str, ...] = MAPS) -> Plan | None:
    """The plan of least predicted time (:mod:`npconv.costmodel`, with ``table`` or the
    fitted coefficients), or None if a map has no fitted path. Both gradients go to one
    path unless the best pair is predicted cheaper by SPLIT_MARGIN."""
    ranked = {op: _cheapest(p, op, (op,), table) for op in MAPS}
    if not all(ranked.values()):
        return None
    reasons = {op: _why(ranked[op], table) for op in MAPS}
    names = {op: ranked[op][0][1] for op in MAPS}
    if "grad_input" in maps and "grad_weight" in maps:
        fused = _cheapest(p, "backward", MAPS[1:], table)
        split = ranked["grad_input"][0][0] + ranked["grad_weight"][0][0]
        if fused and fused[0][0] * (1 - SPLIT_MARGIN) <= split:
            names["grad_input"] = names["grad_weight"] = fused[0][1]
            reasons["grad_input"] = reasons["grad_weight"] = (
                _why(fused, table, "both gradients in one pass predicted")
                + f" (best separate pair {split * 1e3:.3g} ms)")
    return Plan(names["forward"], names["grad_input"], names["grad_weight"], reasons)


def _device_plan(p: Problem) -> Plan:
    """On a GPU, until timings there say otherwise: the paths with the fewest kernel
    launches. The CPU stand-in counted, per call, 14/39 array operations (forward /
    backward) for im2col on the suite's shapes against 69/207 for Winograd, 22/380 for
    the phase images and 645/1971 for the depthwise sums (counted before the depthwise
    rewrite, which copies all taps at once); each is about one launch
    (5-20 us on a GPU), which the CPU paths' cache-sized pieces multiply."""
    if p.pointwise:
        why = "on a device: a 1x1 layer is one matmul on the input"
        return Plan("pointwise", "pointwise", "pointwise", dict.fromkeys(MAPS, why))
    why = "on a device: one column matmul per map, the fewest kernel launches"
    grad_input = "flipped" if full_correlation(p.geometry) is not None else "im2col"
    reasons = dict.fromkeys(MAPS, why)
    if grad_input == "flipped":
        reasons["grad_input"] = "on a device, stride 1: an im2col convolution of gy with the " \
                                "flipped kernel (a gather, no scatter-add)"
    return Plan("im2col", grad_input, "im2col", reasons)


def plan(problem: Problem, algorithm: str = "auto", maps: tuple[str, ...] = MAPS) -> Plan:
    """The paths for ``problem``: 'auto' chooses, any other name is checked for ``maps``.

    Raises
    ------
    ValueError
        If ``algorithm`` is unknown, or names a path that cannot compute one of
        the maps for this problem (the message says what it needs).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if algorithm != "auto":
        from .paths import get_path

        path = get_path(algorithm)
        for name in maps:
            need = path.requires(problem, name)
            if need is not None:
                what = name.replace("_", " ")
                raise ValueError(f"algorithm={algorithm!r} cannot compute the {what} here: "
                                 f"it needs {need}")
        reason = "requested"
        return Plan(algorithm, algorithm, algorithm, dict.fromkeys(MAPS, reason))
    if not problem.host_threads:
        return _device_plan(problem)
    if problem.small:
        why = f"a small call (columns under {SMALL_CALL_BYTES // 2**10} KiB): one matmul"
        return Plan("im2col", "im2col", "im2col", dict.fromkeys(MAPS, why))
    if problem.depthwise and compiled_rules.compiled_depthwise(problem, maps):
        why = "depthwise, numba installed: compiled multiply-adds per channel plane"
        return Plan("depthwise_jit", "depthwise_jit", "depthwise_jit", dict.fromkeys(MAPS, why))
    blocked = compiled_rules.blocked_maps(problem, maps)
    if len(blocked) == len(MAPS):  # nothing left for the model to choose
        chosen = Plan("blocked", "blocked", "blocked", {})
    else:
        chosen = model_plan(problem, maps=maps) or rule_plan(problem)
    for claimed, name, why in compiled_rules.overrides(problem, maps, blocked):
        chosen = _with(chosen, claimed, name, why)
    return chosen


def _with(plan: Plan, maps: tuple[str, ...], path: str, why: str) -> Plan:
    """``plan`` with ``maps`` given to ``path`` for reason ``why``."""
    if not maps:
        return plan
    return replace(plan, **dict.fromkeys(maps, path),
                   reasons={**plan.reasons, **dict.fromkeys(maps, why)})


def rule_plan(problem: Problem) -> Plan:
    """The hand-set rules that chose paths before the cost model (and still do for a
    map with no fitted path): kept as the baseline ``benchmarks/costfit.py`` reports."""
    forward, why_f = _auto_forward(problem)
    grad_input, why_i = _auto_grad_input(problem, forward)
    grad_weight, why_w = _auto_grad_weight(problem, forward, grad_input)
    return Plan(forward, grad_input, grad_weight,
                {"forward": why_f, "grad_input": why_i, "grad_weight": why_w})
