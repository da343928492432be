"""Fast paths: named ways to compute the maps of a convolution.

Each module here is one path, equal to :mod:`npconv.reference` up to
rounding, and has the same three functions:

``requires(problem, op) -> str | None``
    ``None`` if the path computes ``op`` (``'forward'``, ``'grad_input'`` or
    ``'grad_weight'``) for this :class:`~npconv.plan.Problem`, else what it
    needs, as a phrase ("a 2-d 3x3 kernel with stride 1 ...").
``forward(problem, x, weight, bias) -> y``
    ``y`` (N, O, *out) = conv(x, weight) + bias (``bias`` may be None).
``backward(problem, gy, x, weight, need_input, need_weight) -> (gx, gw)``
    ``gx = conv^T(gy, weight)`` (N, C, *in) and ``gw = sum gy (x) patches(x)``
    (O, C/g, *k), either skipped (None) by its flag; ``x`` is None without
    ``need_weight``. Both use ``weight`` and ``x`` *as given*: the caller
    conjugates them for the adjoint of a complex convolution.

A path cuts its work into chunks and runs top-level chunk kernels through
:mod:`npconv.executor`; it holds no selection thresholds (those live in
:mod:`npconv.plan`). To add a path: write its module here, add its name to
``_MODULES`` and to :data:`npconv.plan.ALGORITHMS`, and the property tests
compare it with the reference on every geometry it accepts.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_MODULES = {
    "reference": "npconv.paths.reference_path",
    "im2col": "npconv.paths.im2col",
    "flipped": "npconv.paths.flipped",
    "pointwise": "npconv.paths.pointwise",
    "direct": "npconv.paths.direct",
    "depthwise": "npconv.paths.depthwise",
    "depthwise_jit": "npconv.paths.depthwise_jit",
    "blocked": "npconv.paths.blocked",
    "winograd": "npconv.paths.winograd",
    "winograd_jit": "npconv.paths.winograd_jit",
    "phases": "npconv.paths.phases",
    "fft": "npconv.paths.fft",
    "serial": "npconv.paths.serial",
    "stacked": "npconv.paths.stacked",
    "shifted": "npconv.paths.shifted",
}


_LOADED: dict[str, ModuleType] = {}


def get_path(name: str) -> ModuleType:
    """The module of path ``name`` (imported on first use)."""
    try:
        return _LOADED[name]
    except KeyError:
        pass
    try:
        module = _MODULES[name]
    except KeyError:
        raise ValueError(f"unknown path {name!r}; known: {tuple(_MODULES)}") from None
    _LOADED[name] = loaded = importlib.import_module(module)
    return loaded
