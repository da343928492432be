"""Gradient check used by the examples.

``gradient_check`` is ``npconv.testing.check_grad(..., full=True)`` (every
entry of every input is perturbed, plus random directions); where
``npconv.testing`` is not available it falls back to the plain central
difference :func:`central_difference_check` below. Keep the sizes small and
use float64.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def central_difference_check(
    forward: Callable[..., np.ndarray],
    backward: Callable[..., Sequence[np.ndarray]],
    inputs: Sequence[np.ndarray],
    eps: float = 1e-6,
    rtol: float = 1e-6,
    seed: int = 0,
) -> float:
    """Largest ``|numeric - analytic|`` over every entry of every input.

    ``forward(*inputs)`` returns y; ``backward(grad_output, *inputs)`` returns one
    gradient per input. With a random ``grad_output`` g, the scalar
    ``<g, forward(*inputs)>`` is differentiated by central differences entry by
    entry. Raises ``AssertionError`` if, for some input, the error exceeds
    ``rtol`` times the largest gradient entry.

    Examples
    --------
    >>> import numpy as np
    >>> central_difference_check(lambda a: a ** 3, lambda g, a: (3 * g * a ** 2,),
    ...                          [np.linspace(-1.0, 1.0, 5)]) < 1e-8
    True
    """
    inputs = [np.array(a, dtype=np.float64) for a in inputs]  # copies, perturbed in place
    grad_output = np.random.default_rng(seed).standard_normal(np.shape(forward(*inputs)))
    analytic = backward(grad_output, *inputs)
    if len(analytic) != len(inputs):
        raise ValueError(f"backward returned {len(analytic)} gradients for {len(inputs)} inputs")
    worst = 0.0
    for index, (a, ga) in enumerate(zip(inputs, analytic)):
        ga = np.asarray(ga)
        if ga.shape != a.shape:
            raise ValueError(f"gradient of shape {ga.shape} for an input of shape {a.shape}")
        flat, numeric = a.reshape(-1), np.empty(a.size)
        for i in range(flat.size):
            keep = flat[i]
            values = []
            for step in (eps, -eps):
                flat[i] = keep + step
                values.append(float(np.vdot(grad_output, forward(*inputs))))
            flat[i] = keep
            numeric[i] = (values[0] - values[1]) / (2 * eps)
        error = float(np.abs(numeric - ga.reshape(-1)).max(initial=0.0))
        scale = float(np.abs(ga).max(initial=0.0))
        if error > rtol * max(scale, 1e-12):
            raise AssertionError(
                f"gradient of input {index} is off by {error:.3g} (largest entry {scale:.3g})"
            )
        worst = max(worst, error)
    return worst


try:
    from npconv.testing import check_grad as _check_grad
except ImportError:  # npconv without its testing module
    _check_grad = None

def checker_name():
    return "npconv.testing.check_grad" if _check_grad else "local central differences"


def gradient_check(forward, backward, inputs):
    """Largest ``|numeric - analytic|``; ``AssertionError`` if a gradient is wrong."""
    inputs = [np.asarray(a, dtype=np.float64) for a in inputs]
    if _check_grad is not None:
        return _check_grad(forward, backward, inputs, full=True)
    return central_difference_check(forward, backward, inputs)
