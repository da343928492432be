"""Comparisons: :func:`assert_close` (tolerances that scale with the sums) and
:func:`check_grad` (a hand-written backward against central finite differences)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from .. import backend
from .configs import _numpy

_UNIT_ROUNDOFF = {2: 2.0**-11, 4: 2.0**-24, 8: 2.0**-53}  # by real itemsize


def _unit_roundoff(dtype: Any) -> float:
    dt = backend.numpy_dtype(dtype)
    size = dt.itemsize // 2 if dt.kind == "c" else dt.itemsize
    return _UNIT_ROUNDOFF.get(size, 2.0**-53)


def _to_float(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


def assert_close(
    actual: Any,
    expected: Any,
    *,
    reduction: int = 1,
    rtol: float | None = None,
    atol: float | None = None,
    factor: float = 32.0,
    err_msg: str = "",
) -> float:
    """Assert that two arrays agree within a dtype- and reduction-aware tolerance.

    The comparison is *normwise*, which suits sums whose terms may cancel::

        max|actual - expected| <= atol + rtol * max|expected|

    By default ``rtol = atol = factor * u * sqrt(reduction)``, with ``u`` the
    unit roundoff of the dtype of ``actual`` (``2**-53`` for float64 and
    complex128, ``2**-24`` for float32, ``2**-11`` for float16) and
    ``reduction`` the number of products summed into one element (for a
    convolution ``C/groups * prod(kernel_size)``): random rounding errors grow
    like its square root. ``atol`` is in units of the inputs, which are
    assumed to be of order one.

    Parameters
    ----------
    actual, expected : arrays of the same shape (NumPy or CuPy; ``expected``
        may be any array-like of the same backend)
    reduction : int
    rtol, atol : float, optional
        Override the defaults.
    factor : float
        Safety factor of the default tolerances.
    err_msg : str
        Prepended to the failure message.

    Returns
    -------
    float
        The maximum absolute difference.

    Raises
    ------
    AssertionError
        On a shape mismatch, non-finite values, or too large a difference.

    Examples
    --------
    >>> import numpy as np
    >>> from npconv.testing import assert_close
    >>> a = np.linspace(0, 1, 5)
    >>> assert_close(a + 1e-16, a) < 1e-15
    True
    >>> assert_close(a + 1e-6, a)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    AssertionError: arrays differ: max |actual - expected| = 1e-06 at index ...
    """
    xp = backend.get_array_module(actual)
    expected = xp.asarray(expected)
    prefix = f"{err_msg}: " if err_msg else ""
    if tuple(actual.shape) != tuple(expected.shape):
        raise AssertionError(
            f"{prefix}shape mismatch: actual {tuple(actual.shape)}, "
            f"expected {tuple(expected.shape)}"
        )
    if actual.size == 0:
        return 0.0
    if not bool(xp.all(xp.isfinite(actual))) or not bool(xp.all(xp.isfinite(expected))):
        raise AssertionError(f"{prefix}non-finite values (actual or expected)")
    default = factor * _unit_roundoff(actual.dtype) * math.sqrt(max(reduction, 1))
    rtol = default if rtol is None else rtol
    atol = default if atol is None else atol
    diff = xp.abs(actual.astype(xp.complex128 if actual.dtype.kind == "c" else xp.float64)
                  - expected.astype(xp.complex128 if expected.dtype.kind == "c" else xp.float64))
    err = _to_float(diff.max())
    scale = _to_float(xp.abs(expected).max())
    tol = atol + rtol * scale
    if not err <= tol:
        index = tuple(int(i) for i in _numpy().unravel_index(int(diff.argmax()), diff.shape))
        raise AssertionError(
            f"{prefix}arrays differ: max |actual - expected| = {err:.3g} at index {index} "
            f"(actual {actual[index]!r}, expected {expected[index]!r}); tolerance "
            f"{tol:.3g} = atol {atol:.3g} + rtol {rtol:.3g} * max|expected| {scale:.3g} "
            f"(dtype {actual.dtype}, reduction {reduction})"
        )
    return err


# --------------------------------------------------------------------------- gradients


def _inner(xp: Any, a: Any, b: Any) -> float:
    """Re <a, b> = Re sum(conj(a) * b), the real inner product of (complex) arrays."""
    return _to_float(xp.real(xp.sum(xp.conj(a) * b)))


def _abs_inner(xp: Any, a: Any, b: Any) -> float:
    return _to_float(xp.sum(xp.abs(a) * xp.abs(b)))


def check_grad(
    forward: Callable[..., Any],
    backward: Callable[..., Sequence[Any]],
    inputs: Sequence[Any],
    grad_output: Any = None,
    *,
    eps: float = 1e-6,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    directions: int = 3,
    full: bool = False,
    wrt: Sequence[int] | None = None,
    seed: int = 0,
) -> float:
    """Check a hand-written backward pass against central finite differences.

    ``forward(*inputs)`` returns an array ``y`` and ``backward(grad_output,
    *inputs)`` returns one gradient per input (``None`` for inputs it does not
    differentiate). With the scalar ``L(inputs) = Re <grad_output, y>`` the
    gradient of input ``i`` must satisfy, for every direction ``v``,

        (L(..., x_i + eps v, ...) - L(..., x_i - eps v, ...)) / (2 eps)
            == Re <grad_i, v>

    where ``<a, b> = sum(conj(a) * b)``. This is the convention of PyTorch and
    of npconv's ``*_backward`` functions for complex arrays too: ``backward``
    applies the adjoint (conjugate transpose) of the derivative to
    ``grad_output``.

    Each differentiated input is checked along ``directions`` random unit
    directions (two ``forward`` calls each; cheap at any size), and with
    ``full=True`` also along every coordinate (and, for complex inputs, every
    imaginary coordinate): two ``forward`` calls per element, so keep the
    arrays small. Only one input is perturbed at a time, which also tells
    which gradient is wrong. Nothing here needs an autograd framework.

    A difference passes if ``|numeric - analytic| <= atol + rtol *
    max(|numeric|, |analytic|) + noise``, where ``noise = 64 * 2**-53 *
    sum|grad_output * y| / eps`` bounds the rounding error of the difference
    quotient.

    Parameters
    ----------
    forward : callable
        ``forward(*inputs) -> y``.
    backward : callable
        ``backward(grad_output, *inputs) -> sequence of gradients``, one per
        input, each shaped like its input, or None.
    inputs : sequence of arrays
        float64 or complex128 arrays (NumPy or CuPy). They are not modified.
    grad_output : array, optional
        The output weighting; default: random normal of ``y``'s shape and dtype.
    eps : float
        Finite-difference step along a unit direction.
    rtol, atol : float
        Tolerances of each comparison.
    directions : int
        Random directions per input.
    full : bool
        Also check every element.
    wrt : sequence of int, optional
        Indices of the inputs to check (default: all with a non-None gradient).
    seed : int
        Seed of the random directions (and of the default ``grad_output``).

    Returns
    -------
    float
        The largest ``|numeric - analytic|`` observed.

    Raises
    ------
    AssertionError
        Listing the input, the direction or element, the numeric and analytic
        values and the tolerance of every failed comparison (first ten).
    TypeError, ValueError
        For inputs that are not float64/complex128, or gradients of the wrong shape.

    Examples
    --------
    Check ``npconv.conv2d_backward`` for the input and the weight:

    >>> import numpy as np, npconv
    >>> from npconv.testing import check_grad
    >>> rng = np.random.default_rng(0)
    >>> x, w = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 2))
    >>> kw = dict(stride=(2, 1), padding=1, padding_mode="reflect")
    >>> err = check_grad(
    ...     lambda x, w: npconv.conv2d(x, w, **kw),
    ...     lambda gy, x, w: npconv.conv2d_backward(gy, x, w, **kw)[:2],
    ...     (x, w),
    ... )
    >>> err < 1e-6
    True

    A wrong gradient is reported:

    >>> check_grad(lambda x: x ** 3, lambda gy, x: (2 * gy * x ** 2,), (x,))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    AssertionError: check_grad: 3 of 3 finite-difference comparisons failed ...
    """
    inputs = _check_inputs(inputs)
    xp = backend.get_array_module(*inputs)
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps!r}")
    np = _numpy()
    rng = np.random.default_rng(seed)

    def normal(shape: tuple[int, ...], complex_: bool) -> Any:
        a = rng.standard_normal(shape)
        if complex_:
            a = a + 1j * rng.standard_normal(shape)
        return xp.asarray(a)

    y = forward(*inputs)
    if grad_output is None:
        grad_output = normal(tuple(y.shape), y.dtype.kind == "c")
    elif tuple(grad_output.shape) != tuple(y.shape):
        raise ValueError(
            f"grad_output has shape {tuple(grad_output.shape)}, but forward returned "
            f"{tuple(y.shape)}"
        )
    grads = tuple(backward(grad_output, *inputs))
    checked = _checked_gradients(grads, inputs, wrt)

    u = 2.0**-53

    def loss(i: int, delta: Any) -> tuple[float, float]:
        args = list(inputs)
        args[i] = inputs[i] + delta
        out = forward(*args)
        return _inner(xp, grad_output, out), _abs_inner(xp, grad_output, out)

    failures: list[str] = []
    worst = 0.0
    count = 0

    def compare(i: int, where: str, direction: Any, analytic: float) -> None:
        nonlocal worst, count
        plus, size_plus = loss(i, eps * direction)
        minus, size_minus = loss(i, -eps * direction)
        numeric = (plus - minus) / (2 * eps)
        noise = 64 * u * (size_plus + size_minus) / (2 * eps)
        err = abs(numeric - analytic)
        tol = atol + rtol * max(abs(numeric), abs(analytic)) + noise
        worst = max(worst, err)
        count += 1
        if not err <= tol:
            failures.append(
                f"  input {i} {where}: numeric {numeric:.10g}, analytic {analytic:.10g}, "
                f"|diff| {err:.3g} > tolerance {tol:.3g}"
            )

    for i in checked:
        a, g = inputs[i], grads[i]
        is_complex = a.dtype.kind == "c"
        for j in range(directions):
            v = normal(tuple(a.shape), is_complex)
            norm = math.sqrt(_to_float(xp.sum(xp.abs(v) ** 2))) or 1.0
            v = v / norm
            compare(i, f"random direction {j}", v, _inner(xp, g, v))
        if full:
            for flat in range(a.size):
                index = tuple(int(k) for k in np.unravel_index(flat, a.shape))
                units = [(1.0, "")] + ([(1j, " imag")] if is_complex else [])
                for unit, label in units:
                    e = xp.zeros(a.shape, dtype=a.dtype)
                    e[index] = unit
                    compare(i, f"element {index}{label}", e, _inner(xp, g, e))
    if failures:
        shown = "\n".join(failures[:10])
        more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
        raise AssertionError(
            f"check_grad: {len(failures)} of {count} finite-difference comparisons failed "
            f"(eps={eps}, rtol={rtol}, atol={atol}):\n{shown}{more}"
        )
    return worst


def _check_inputs(inputs: Sequence[Any]) -> tuple[Any, ...]:
    inputs = tuple(inputs)
    if not inputs:
        raise ValueError("check_grad needs at least one input")
    for i, a in enumerate(inputs):
        if not hasattr(a, "dtype") or str(a.dtype) not in ("float64", "complex128"):
            raise TypeError(
                f"check_grad: input {i} must be a float64 or complex128 array (finite "
                f"differences in lower precision are dominated by rounding), got "
                f"{getattr(a, 'dtype', type(a).__name__)}"
            )
    return inputs


def _checked_gradients(
    grads: tuple[Any, ...], inputs: tuple[Any, ...], wrt: Sequence[int] | None
) -> list[int]:
    """The indices of the gradients to check, each verified to be there with its input's shape."""
    if len(grads) != len(inputs):
        raise ValueError(
            f"backward returned {len(grads)} gradients for {len(inputs)} inputs"
        )
    checked = [i for i, g in enumerate(grads) if g is not None] if wrt is None else list(wrt)
    for i in checked:
        if grads[i] is None:
            raise ValueError(f"backward returned None for input {i}, which wrt asks to check")
        if tuple(grads[i].shape) != tuple(inputs[i].shape):
            raise ValueError(
                f"gradient {i} has shape {tuple(grads[i].shape)}, input {i} has "
                f"{tuple(inputs[i].shape)}"
            )
    return checked
