"""The cost model behind ``algorithm='auto'``: predicted seconds of each path, per map.

For a convolution with batch n, C input and O output channels in g groups, K
kernel taps, L output and I input positions per image, and itemsize b, the
time of one path on one map is modelled as a non-negative sum

    t = c0 + c1 n g + (b / 4) (c2 F + c3 n C K L + c4 n O L + c5 n C I + c6 O (C/g) K
                               + c7 n O K L + c9 n C K L [stride > 1]) + c8 n g K

where F = 2 n O (C/g) K L is the flop count: a per-call overhead, a per-image
(and group) overhead, arithmetic, and the elements the path moves through its
columns, output, input and weight; the last two terms are those of paths that
work tap by tap (a pass over the output per kernel tap, a call per tap and
image), or gather columns of grad_output (the flipped grad input), and the
columns again for strided layers, whose windows no path reads as long rows. FFT
convolution has features of its own (:data:`FFT_FEATURES`): its transforms and
per-frequency products in place of the flops and columns. The coefficients
differ per path and map and are fitted on timings of the benchmark's network
zoo plus randomly drawn layers by ``benchmarks/costfit.py``, which holds a
quarter of the layers out of the fit and reports how well the model predicts
them (``docs/costmodel.md``). The rates of the matmul-bound paths depend on the
BLAS's CPU kernel (OpenBLAS's AVX-512 kernel ran float32 matmuls of the zoo's shapes
1.5-1.9x faster than its AVX2 kernel on the same machine, 2 threads: 202-285 against
137-157 GFLOP/s, which moved the best path of many layers), so
there is one table per kernel family, each measured with that kernel:
:mod:`npconv._cost_table_skylakex` (AVX-512) and :mod:`npconv._cost_table_haswell`
(AVX2), chosen by the kernel the BLAS reports (:func:`table_name`). On another
machine absolute times differ but the ranking mostly holds, and
``npconv.set_autotune(True)`` measures instead of predicting.

Maps are ``forward``, ``grad_input``, ``grad_weight`` and ``backward``: both
gradients in one call of one path, which shares work between them.
"""

from __future__ import annotations

import functools
import importlib
import math
from typing import Any

MAPS = ("forward", "grad_input", "grad_weight", "backward")

FEATURES = ("call", "image", "flops", "columns", "output", "input", "weight", "output taps",
            "tap calls", "strided columns")
# FFT convolution's work does not grow with the kernel: it transforms the n C input and
# n O output planes and the O C/g kernels over the padded frame of V positions (V log V
# each), and contracts channels per frequency (n O C/g V).
FFT_FEATURES = ("call", "image", "transforms", "kernel transforms", "spectral products",
                "output", "input")


def feature_names(path: str) -> tuple[str, ...]:
    return FFT_FEATURES if path == "fft" else FEATURES


def features(problem: Any, path: str = "im2col") -> tuple[float, ...]:
    """The model's features of a :class:`~npconv.plan.Problem` for ``path`` (the same
    for every map of a path)."""
    g = problem.geometry
    n, c, o, groups = problem.batch, problem.in_channels, problem.out_channels, problem.groups
    taps, out, inp = g.kernel_volume, g.out_volume, g.in_volume
    scale = problem.dtype.itemsize / 4
    cg = c // groups
    if path == "fft":
        frame = math.prod(g.padded_size)
        log = math.log2(max(frame, 2))
        return (1.0, float(n * groups), scale * n * (c + o) * frame * log,
                scale * o * cg * frame * log, scale * n * o * cg * frame,
                scale * n * o * out, scale * n * c * inp)
    return (1.0, float(n * groups), scale * 2.0 * n * o * cg * taps * out,
            scale * n * c * taps * out, scale * n * o * out, scale * n * c * inp,
            scale * o * cg * taps, scale * n * o * taps * out, float(n * groups * taps),
            scale * n * c * taps * out * (max(g.stride) > 1))


Table = dict[str, dict[str, tuple[float, ...]]]

# The fitted tables, by the kernel family they were measured with. OpenBLAS names its
# AVX-512 kernels after the CPUs that brought them; every other kernel (AVX2 and
# older, or a BLAS that does not say) takes the AVX2 table.
TABLES = ("skylakex", "haswell")
_AVX512_KERNELS = frozenset({"skylakex", "cooperlake", "sapphirerapids"})


def table_name(kernel: str | None) -> str:
    """The table (one of :data:`TABLES`) for a BLAS kernel name such as 'SkylakeX'.

    >>> table_name("Cooperlake"), table_name("Zen"), table_name(None)
    ('skylakex', 'haswell', 'haswell')
    """
    if kernel is not None and not isinstance(kernel, str):
        raise TypeError(f"kernel must be a str or None, got {type(kernel).__name__}")
    return "skylakex" if kernel and kernel.lower() in _AVX512_KERNELS else "haswell"


@functools.cache
def fitted_table(name: str) -> Table:
    """The coefficients of table ``name`` (one of :data:`TABLES`)."""
    if name not in TABLES:
        raise ValueError(f"name must be one of {TABLES}, got {name!r}")
    return importlib.import_module(f"{__package__}._cost_table_{name}").COEFFICIENTS


@functools.cache
def active_table() -> str:
    """The table 'auto' uses in this process: that of the kernel the BLAS runs."""
    from .executor import blas_kernel

    return table_name(blas_kernel())


def predict(problem: Any, op: str, path: str, table: Table | None = None) -> float | None:
    """Predicted seconds of ``path`` on map ``op`` (from ``table``, by default the
    :func:`active_table`), or None if that path was not fitted on that map."""
    coef = (fitted_table(active_table()) if table is None else table).get(path, {}).get(op)
    if coef is None:
        return None
    return sum(a * b for a, b in zip(coef, features(problem, path)))
