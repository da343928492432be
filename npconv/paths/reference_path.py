"""The reference as a path: :mod:`npconv.reference`, for ``algorithm='reference'``."""

from __future__ import annotations

from typing import Any

from .. import reference
from ..plan import Problem


def requires(problem: Problem, op: str) -> str | None:
    """The reference computes every map of every convolution."""
    return None


def forward(problem: Problem, x: Any, weight: Any, bias: Any) -> Any:
    """y = tensordot(W, patches(x)) + b."""
    return reference.forward(x, weight, bias, problem.geometry, problem.groups)


def backward(problem: Problem, gy: Any, x: Any, weight: Any, need_input: bool,
             need_weight: bool) -> tuple[Any, Any]:
    """gx = fold(tensordot(W, gy)), gW = tensordot(gy, patches(x)) (inputs as given)."""
    g, groups = problem.geometry, problem.groups
    gx = reference.transpose(gy, weight, g, groups) if need_input else None
    gw = reference.weight_map(gy, x, g, groups) if need_weight else None
    return gx, gw
