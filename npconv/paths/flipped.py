"""The flipped path: im2col, except that grad input is a forward convolution.

With stride 1 and zero padding p <= d(k-1) on each side, the adjoint of a
convolution is the convolution of grad_output with the flipped kernel, its
channel axes swapped per group, padded d(k-1) - p
(:func:`npconv.plan.full_correlation`):

    grad input   gx = conv(gy (N, O, *out), flip(W)^T (C, O/g, *k))

im2col computes it as a forward: each window gathers its pixels (a copy of
strided windows) where col2im's fold would scatter-add them, which ran faster
(:mod:`npconv.paths.im2col`'s forward by row blocks). The forward and grad
weight are those of :mod:`npconv.paths.im2col`.
"""

from __future__ import annotations

from typing import Any

from .. import backend
from ..plan import Problem, full_correlation
from . import im2col
from ._common import empty_grads, grad_input_by_forward

forward = im2col.forward


def requires(problem: Problem, op: str) -> str | None:
    """None, except for a grad input that is no stride-1 full correlation: that needs
    stride 1 and zero padding of at most d(k-1) on each side."""
    if op != "grad_input" or full_correlation(problem.geometry) is not None:
        return None
    g = problem.geometry
    spans = tuple(d * (k - 1) for k, d in zip(g.kernel, g.dilation))
    return (f"stride 1 and zero padding of at most dilation * (kernel - 1) = {spans} on each "
            f"side, with every input position reached by a window; got stride {g.stride}, "
            f"padding {g.pads}, padding_mode {g.padding_mode!r}, input size {g.in_size} and "
            f"output size {g.out_size}")


def backward(problem: Problem, gy: Any, x: Any, weight: Any, need_input: bool,
             need_weight: bool) -> tuple[Any, Any]:
    """(grad input (N, C, *in), grad weight (O, C/g, *k)), either None when not needed:
    grad input by an im2col forward convolution of ``gy`` with the flipped kernel,
    grad weight by :func:`npconv.paths.im2col.backward`."""
    if problem.batch == 0 or problem.geometry.out_volume == 0:
        xp = backend.get_array_module(gy, x, weight)
        return empty_grads(problem, xp, need_input, need_weight, tuple(weight.shape))
    gx = grad_input_by_forward(problem, gy, weight, im2col.forward) if need_input else None
    gw = None
    if need_weight:
        _, gw = im2col.backward(problem, gy, x, weight, False, True)
    return gx, gw
