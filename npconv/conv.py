"""Convolution of any spatial rank, its gradients and its adjoint: the public functions.

Each function checks its arguments, describes the call as a
:class:`~npconv.plan.Problem`, asks :func:`npconv.plan.plan` which path computes
each map, and runs it. The formulas themselves are in :mod:`npconv.reference`
(``algorithm='reference'``); the fast paths are in :mod:`npconv.paths`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

from . import autotune, backend, executor, workspace
from ._validate import (
    CheckedCache,
    array_key,
    check_groups,
    check_ndim,
    check_same_dtype,
    prepare,
)
from .geometry import (
    ConvGeometry,
    IntOrTuple,
    Padding,
    as_int,
    check_extent,
    check_padding_mode,
)
from .geometry import _check_mode_padding as check_mode_padding
from .paths import get_path
from .plan import ALGORITHMS, MAPS, Plan, Problem
from .plan import plan as _make_plan

__all__ = ["conv", "conv_backward", "conv_transpose", "conv_transpose_backward", "explain"]


# --------------------------------------------------------------------------- running a plan


@functools.lru_cache(maxsize=1024)
def _cached_plan(problem: Problem, algorithm: str, maps: tuple[str, ...]) -> Plan:
    return _make_plan(problem, algorithm, maps)


def _problem(geometry: ConvGeometry, groups: int, batch: int, c: int, o: int,
             array: Any) -> Problem:
    owner = backend.backend_of(array)
    return Problem(geometry, groups, batch, c, o, backend.numpy_dtype(array.dtype), owner.name,
                   owner.host_threads)


def _running(problem: Problem, array: Any) -> contextlib.AbstractContextManager[None]:
    """One call's region: the executor's; on a device (no host threads) also on
    ``array``'s device (scratch is allocated there) and with device-sized chunks."""
    if not problem.host_threads:
        return _on_device(array)
    if problem.small:
        return contextlib.nullcontext()  # never threaded: skip the region's bookkeeping
    return executor.call()


@contextlib.contextmanager
def _on_device(array: Any) -> Iterator[None]:
    with executor.call(), backend.device_of(array), workspace.device_chunks(True):
        yield


def _tuned_plan(problem: Problem, algorithm: str, maps: tuple[str, ...]) -> Plan | None:
    """The plan of a call: the planner's, or with autotuning on, the tuned one (None
    when this problem has not been tuned yet)."""
    if algorithm == "auto" and autotune.enabled():
        return autotune.cached(problem, maps)
    return _cached_plan(problem, algorithm, maps)


def _conj(a: Any) -> Any:
    # torch's gradients of complex convolutions use the conjugate (adjoint) operator
    if a is None or backend.scalar_kind(a.dtype) != "c":
        return a
    return backend.get_array_module(a).conj(a)


def _forward(problem: Problem, x: Any, weight: Any, bias: Any, algorithm: str) -> Any:
    """y = conv(x, weight) + bias by the planned path (im2col if auto's choice does not fit)."""
    if problem.batch == 0:
        return backend.get_array_module(x, weight).empty(
            (0, problem.out_channels) + problem.geometry.out_size, dtype=x.dtype)
    maps = ("forward",)
    plan = _tuned_plan(problem, algorithm, maps)
    if plan is None:  # autotuning, first call of this problem: time every path
        with _running(problem, x):
            return autotune.tune(problem, maps, lambda p: get_path(p.forward).forward(
                problem, x, weight, bias))[1]
    name = plan.forward
    with _running(problem, x):
        try:
            return get_path(name).forward(problem, x, weight, bias)
        except MemoryError:
            if algorithm != "auto" or name == "im2col":
                raise
            return get_path("im2col").forward(problem, x, weight, bias)


_BACKWARD_MAPS = {(True, True): MAPS[1:], (True, False): MAPS[1:2], (False, True): MAPS[2:],
                  (False, False): ()}


def _backward(problem: Problem, gy: Any, x: Any, weight: Any, algorithm: str,
              need_input: bool = True, need_weight: bool = True) -> tuple[Any, Any]:
    """(grad_input, grad_weight) of y = conv(x, weight), inputs used as given."""
    if problem.batch == 0:
        xp, g = backend.get_array_module(gy, weight), problem.geometry
        gx = xp.zeros((0, problem.in_channels) + g.in_size, dtype=gy.dtype)
        return (gx if need_input else None,
                xp.zeros(weight.shape, dtype=gy.dtype) if need_weight else None)
    maps = _BACKWARD_MAPS[need_input, need_weight]
    plan = _tuned_plan(problem, algorithm, maps)
    if plan is None:  # autotuning, first call of this problem: time every path
        with _running(problem, gy):
            return autotune.tune(problem, maps, lambda p: _run_backward(
                problem, p, gy, x, weight, need_input, need_weight))[1]
    with _running(problem, gy):
        try:
            return _run_backward(problem, plan, gy, x, weight, need_input, need_weight)
        except MemoryError:
            if algorithm != "auto":
                raise
            fallback = Plan("im2col", "im2col", "im2col")
            return _run_backward(problem, fallback, gy, x, weight, need_input, need_weight)


def _run_backward(problem: Problem, plan: Plan, gy: Any, x: Any, weight: Any,
                  need_input: bool, need_weight: bool) -> tuple[Any, Any]:
    if need_input and need_weight and plan.grad_input == plan.grad_weight:
        return get_path(plan.grad_input).backward(problem, gy, x, weight, True, True)
    gx = gw = None
    if need_input:
        gx, _ = get_path(plan.grad_input).backward(problem, gy, None, weight, True, False)
    if need_weight:
        _, gw = get_path(plan.grad_weight).backward(problem, gy, x, weight, False, True)
    return gx, gw


# grad_output of at most this many elements sums its bias gradient with sum, not einsum
_SUM_MAX_SIZE = 256


@functools.cache
def _summed_axes(ndim: int) -> tuple[int, ...]:
    """The batch and spatial axes of an array of rank ``ndim``."""
    return (0,) + tuple(range(2, ndim))


def _sum_bias(grad_output: Any) -> Any:
    # einsum's sum-of-products loop ran 3x faster than sum over axes (0, 2, ...) on
    # 8x64x32x32 and 1.5x on 2x64x4x4; on 256 elements or fewer its setup costs more
    # than the sum (1x4x8x8: 2.3 against 1.6 us)
    # on a device CuPy's einsum costs several launches and much Python (about 0.2 ms
    # a call on an H200, profiled), its reduction kernel one launch
    xp = backend.get_array_module(grad_output)
    if grad_output.size <= _SUM_MAX_SIZE or not backend.on_host(xp):
        return grad_output.sum(axis=_summed_axes(grad_output.ndim))
    spatial = "abcdefghijklm"[: grad_output.ndim - 2]
    return xp.einsum(f"no{spatial}->o", grad_output)


# --------------------------------------------------------------------------- validation


def _check_algorithm(algorithm: object) -> str:
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    return algorithm


def _prepare_arrays(nd: int | None, x: Any, weight: Any, bias: Any) -> tuple[Any, Any, Any, int]:
    backend.backend_of(x, weight, bias)  # TypeError on a NumPy/CuPy mix
    x = prepare("x", x)
    weight = prepare("weight", weight)
    if bias is not None:
        bias = prepare("bias", bias)
    check_same_dtype(x=x, weight=weight, bias=bias)
    if nd is None:
        if weight.ndim < 3:
            raise ValueError(
                f"weight must have shape (out_channels, in_channels/groups, *kernel_size) "
                f"with at least one spatial dim, got shape {tuple(weight.shape)}"
            )
        nd = weight.ndim - 2
    else:
        check_ndim(weight, "weight", (nd + 2,), f"(out, in/groups, *kernel) for {nd}-d")
    check_ndim(x, "x", (nd + 1, nd + 2), f"(N, C, *spatial) or unbatched (C, *spatial), {nd}-d")
    if any(k == 0 for k in weight.shape[2:]):
        raise ValueError(f"weight has an empty kernel: shape {tuple(weight.shape)}")
    return x, weight, bias, nd


def _check_bias(bias: Any, channels: int) -> None:
    if bias is not None and tuple(bias.shape) != (channels,):
        raise ValueError(f"bias must have shape ({channels},), got {tuple(bias.shape)}")


def _check_grad_output(grad_output: Any, x: Any, expected: tuple[int, ...],
                       batched: bool) -> Any:
    """grad_output checked against x (type, dtype) and the output's shape, batched."""
    want = expected if batched else expected[1:]
    if not (type(grad_output) is type(x) and getattr(grad_output, "dtype", None) == x.dtype
            and tuple(grad_output.shape) == want):
        backend.backend_of(grad_output, x)  # TypeError on a NumPy/CuPy mix
        gy = prepare("grad_output", grad_output)
        if tuple(gy.shape) != want:
            raise ValueError(f"grad_output must have shape {want} (the output's), "
                             f"got {tuple(gy.shape)}")
        check_same_dtype(grad_output=gy, x=x)
        grad_output = gy
    return grad_output if batched else grad_output[None]


def conv_setup(nd: int | None, x: Any, weight: Any, bias: Any, stride: Any, padding: Any,
               dilation: Any, groups: Any, padding_mode: Any) -> tuple[Any, ...]:
    """Checked (x batched, weight, bias, geometry, groups, batched) of a convolution."""
    x, weight, bias, nd = _prepare_arrays(nd, x, weight, bias)
    batched = x.ndim == nd + 2
    if not batched:
        x = x[None]
    c, o = x.shape[1], weight.shape[0]
    g = check_groups(groups, c, o)
    if weight.shape[1] * g != c:
        raise ValueError(
            f"weight of shape {tuple(weight.shape)} with groups={g} expects "
            f"{weight.shape[1] * g} input channels, but x has {c} (shape {tuple(x.shape)})"
        )
    _check_bias(bias, o)
    check_padding_mode(padding_mode)
    geometry = ConvGeometry.build(
        x.shape[2:], tuple(weight.shape[2:]), stride, padding, dilation, padding_mode,
        input_name="x", single=True,
    )
    shape = (x.shape[0], o) + geometry.out_size
    check_extent(geometry.out_size, "output shape", shape, lead=x.shape[0] * o,
                 itemsize=x.dtype.itemsize)
    return x, weight, bias, geometry, g, batched


def transpose_setup(nd: int | None, x: Any, weight: Any, bias: Any, stride: Any, padding: Any,
                    output_padding: Any, groups: Any, dilation: Any,
                    padding_mode: Any) -> tuple[Any, ...]:
    """Checked (x batched, weight, bias, geometry, groups, batched) of a transposed
    convolution; ``geometry`` is that of the convolution it is the adjoint of."""
    x, weight, bias, nd = _prepare_arrays(nd, x, weight, bias)
    batched = x.ndim == nd + 2
    if not batched:
        x = x[None]
    c_in = x.shape[1]
    g = as_int(groups, "groups")
    if g < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    if weight.shape[0] != c_in:
        raise ValueError(
            f"weight of shape {tuple(weight.shape)} expects {weight.shape[0]} input channels "
            f"(its first axis) for a transposed convolution, but x has {c_in} "
            f"(shape {tuple(x.shape)})"
        )
    c_out = weight.shape[1] * g
    check_groups(g, c_in, c_out)
    _check_bias(bias, c_out)
    mode = check_padding_mode(padding_mode)
    geometry = ConvGeometry.for_transpose(
        x.shape[2:], tuple(weight.shape[2:]), stride, padding, output_padding, dilation
    )
    shape = (x.shape[0], c_out) + geometry.in_size
    check_extent(geometry.in_size, "output shape", shape, lead=x.shape[0] * c_out,
                 itemsize=x.dtype.itemsize)
    if mode != "zeros":
        # the transposed output is the input of the convolution with this mode
        check_mode_padding(mode, geometry.in_size, geometry.pads, "output")
        geometry = dataclasses.replace(geometry, padding_mode=mode)
    return x, weight, bias, geometry, g, batched


# --------------------------------------------------------------------------- setup cache

# Checked setups of recent calls (see CheckedCache).
_SETUPS = CheckedCache()


def _setup(setup: Any, nd: int | None, x: Any, weight: Any, bias: Any,
           params: tuple[Any, ...]) -> tuple[Any, ...]:
    """``setup(nd, x, weight, bias, *params)`` plus the call's Problem, from the cache
    when an identical call (same array types, shapes, dtypes and arguments) ran before.
    Only calls whose arrays were used as given (no conversion) are cached."""
    hit, key = _SETUPS.get((setup, nd, array_key(x), array_key(weight), array_key(bias),
                            params))
    if hit is not None:
        geometry, g, batched, problem = hit
        return (x if batched else x[None]), weight, bias, geometry, g, batched, problem
    xb, w, b, geometry, g, batched, problem = setup(nd, x, weight, bias, *params)
    as_given = w is weight and b is bias and (xb is x if batched else xb.base is x)
    if key is not None and as_given and None not in (key[2][1], key[3][1]):
        _SETUPS.put(key, (geometry, g, batched, problem))
    return xb, w, b, geometry, g, batched, problem


def _conv_call(nd: int | None, x: Any, weight: Any, bias: Any, stride: Any, padding: Any,
               dilation: Any, groups: Any, padding_mode: Any) -> tuple[Any, ...]:
    """conv_setup's results and the convolution's Problem."""
    x, weight, bias, geometry, g, batched = conv_setup(
        nd, x, weight, bias, stride, padding, dilation, groups, padding_mode)
    problem = _problem(geometry, g, x.shape[0], x.shape[1], weight.shape[0], x)
    return x, weight, bias, geometry, g, batched, problem


def _transpose_call(nd: int | None, x: Any, weight: Any, bias: Any, stride: Any,
                    padding: Any, output_padding: Any, groups: Any, dilation: Any,
                    padding_mode: Any) -> tuple[Any, ...]:
    """transpose_setup's results and the Problem of the convolution it transposes."""
    x, weight, bias, geometry, g, batched = transpose_setup(
        nd, x, weight, bias, stride, padding, output_padding, groups, dilation, padding_mode)
    problem = _problem(geometry, g, x.shape[0], weight.shape[1] * g, weight.shape[0], x)
    return x, weight, bias, geometry, g, batched, problem


# --------------------------------------------------------------------------- public


def conv(x: Any, weight: Any, bias: Any = None, stride: IntOrTuple = 1,
         padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
         padding_mode: str = "zeros", algorithm: str = "auto") -> Any:
    """N-d convolution (cross-correlation, as in deep learning), any number of spatial dims.

    Equal to ``torch.nn.functional.conv1d/2d/3d`` for 1, 2, 3 spatial dims,
    and to ``torch.nn.ConvNd(padding_mode=...)`` for non-zero padding modes.
    The rank is taken from ``weight``.

    Parameters
    ----------
    x : array, shape (N, C, *spatial) or unbatched (C, *spatial)
    weight : array, shape (O, C // groups, *kernel_size)
    bias : array, shape (O,), optional
    stride, dilation : int or tuple of ints
    padding : int, tuple of ints, 'same' or 'valid'
        'same' pads so the output has the input's size (stride 1 only); an odd
        total goes to the high end, as in torch.
    groups : int
        Split channels into ``groups`` independent convolutions.
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}
    algorithm : str, one of :data:`npconv.ALGORITHMS`
        'auto' (default) lets the planner choose (see :func:`explain`);
        'reference' computes the formulas of :mod:`npconv.reference` as written;
        any other name forces that path, which raises ``ValueError`` if it
        cannot compute this convolution. All give the same result up to rounding.

    Returns
    -------
    y : array, shape (N, O, *out_size), dtype of ``x``

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.ones((1, 1, 4, 4))
    >>> w = np.ones((1, 1, 3, 3))
    >>> npconv.conv(x, w, padding=1)[0, 0]
    array([[4., 6., 6., 4.],
           [6., 9., 9., 6.],
           [6., 9., 9., 6.],
           [4., 6., 6., 4.]])
    """
    return conv_nd(None, x, weight, bias, stride, padding, dilation, groups, padding_mode,
                   algorithm)


def conv_nd(nd: int | None, x: Any, weight: Any, bias: Any, stride: Any, padding: Any,
            dilation: Any, groups: Any, padding_mode: Any, algorithm: Any) -> Any:
    """:func:`conv` with the rank checked against ``nd`` (None: from ``weight``)."""
    algorithm = _check_algorithm(algorithm)
    x, weight, bias, geometry, g, batched, problem = _setup(
        _conv_call, nd, x, weight, bias, (stride, padding, dilation, groups, padding_mode))
    y = _forward(problem, x, weight, bias, algorithm)
    return y if batched else y[0]


def conv_backward(grad_output: Any, x: Any, weight: Any, stride: IntOrTuple = 1,
                  padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
                  padding_mode: str = "zeros", algorithm: str = "auto") -> tuple[Any, Any, Any]:
    """Gradients of :func:`conv` with respect to x, weight and bias.

    Given ``grad_output`` = dL/dy for ``y = conv(x, weight, bias, ...)``,
    returns ``(grad_input, grad_weight, grad_bias)``, equal to what torch
    autograd computes (``grad_bias`` is returned whether or not the forward
    had a bias). For complex arrays these are the adjoints (conjugated), as in
    torch.

    Parameters
    ----------
    grad_output : array, shape of ``conv(x, weight, ...)``
    x, weight, stride, padding, dilation, groups, padding_mode, algorithm
        As given to :func:`conv`.

    Returns
    -------
    grad_input : array, shape of ``x``
    grad_weight : array, shape of ``weight``
    grad_bias : array, shape (O,)

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.ones((1, 1, 3, 3)); w = np.ones((1, 1, 2, 2))
    >>> gx, gw, gb = npconv.conv_backward(np.ones((1, 1, 2, 2)), x, w)
    >>> gx[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    >>> gw[0, 0], gb
    (array([[4., 4.],
           [4., 4.]]), array([4.]))
    """
    return conv_backward_nd(None, grad_output, x, weight, stride, padding, dilation, groups,
                            padding_mode, algorithm)


def conv_backward_nd(nd: int | None, grad_output: Any, x: Any, weight: Any, stride: Any,
                     padding: Any, dilation: Any, groups: Any, padding_mode: Any,
                     algorithm: Any) -> tuple[Any, Any, Any]:
    """:func:`conv_backward` with the rank checked against ``nd``."""
    algorithm = _check_algorithm(algorithm)
    x, weight, _, geometry, g, batched, problem = _setup(
        _conv_call, nd, x, weight, None, (stride, padding, dilation, groups, padding_mode))
    gy = _check_grad_output(grad_output, x, (x.shape[0], weight.shape[0]) + geometry.out_size,
                            batched)
    gx, gw = _backward(problem, gy, _conj(x), _conj(weight), algorithm)
    return (gx if batched else gx[0]), gw, _sum_bias(gy)


def conv_transpose(x: Any, weight: Any, bias: Any = None, stride: IntOrTuple = 1,
                   padding: IntOrTuple = 0, output_padding: IntOrTuple = 0, groups: int = 1,
                   dilation: IntOrTuple = 1, padding_mode: str = "zeros",
                   algorithm: str = "auto") -> Any:
    """Transposed convolution (the adjoint of :func:`conv`), any number of spatial dims.

    Equal to ``torch.nn.functional.conv_transpose1d/2d/3d``. It is the
    grad-input map of the convolution whose input is this function's output.
    ``padding_mode`` other than 'zeros' (which torch refuses) makes it the
    transpose of the convolution with that padding mode: windows that read the
    padded border add back into the pixels the border copies.

    Parameters
    ----------
    x : array, shape (N, C_in, *spatial) or unbatched (C_in, *spatial)
    weight : array, shape (C_in, C_out // groups, *kernel_size)
    bias : array, shape (C_out,), optional
    stride, padding, output_padding, dilation : int or tuple of ints
        ``output_padding`` adds to one side of the output and must be smaller
        than the stride or the dilation.
    groups : int
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}
    algorithm : str, one of :data:`npconv.ALGORITHMS`

    Returns
    -------
    y : array, shape (N, C_out, *out), out = (in - 1) s - 2 p + d (k - 1) + output_padding + 1

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.ones((1, 1, 2, 2)); w = np.ones((1, 1, 2, 2))
    >>> npconv.conv_transpose(x, w)[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    """
    return conv_transpose_nd(None, x, weight, bias, stride, padding, output_padding, groups,
                             dilation, padding_mode, algorithm)


def conv_transpose_nd(nd: int | None, x: Any, weight: Any, bias: Any, stride: Any,
                      padding: Any, output_padding: Any, groups: Any, dilation: Any,
                      padding_mode: Any, algorithm: Any) -> Any:
    """:func:`conv_transpose` with the rank checked against ``nd``."""
    algorithm = _check_algorithm(algorithm)
    x, weight, bias, geometry, g, batched, problem = _setup(
        _transpose_call, nd, x, weight, bias,
        (stride, padding, output_padding, groups, dilation, padding_mode))
    c_out = weight.shape[1] * g
    # x plays the convolution's grad_output; weight (C_in, C_out/g, *k) is its weight
    y, _ = _backward(problem, x, None, weight, algorithm, need_weight=False)
    if bias is not None:
        with backend.device_of(y):
            y += bias.reshape((1, c_out) + (1,) * geometry.nd)
    return y if batched else y[0]


def conv_transpose_backward(grad_output: Any, x: Any, weight: Any, stride: IntOrTuple = 1,
                            padding: IntOrTuple = 0, output_padding: IntOrTuple = 0,
                            groups: int = 1, dilation: IntOrTuple = 1,
                            padding_mode: str = "zeros",
                            algorithm: str = "auto") -> tuple[Any, Any, Any]:
    """Gradients of :func:`conv_transpose` with respect to x, weight and bias.

    The adjoint of an adjoint is the map itself: grad_input is a plain
    convolution of ``grad_output`` with ``weight``, and grad_weight is the
    convolution's weight map with the roles of input and output swapped.

    Returns
    -------
    grad_input : array, shape of ``x``
    grad_weight : array, shape of ``weight``
    grad_bias : array, shape (C_out,)

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.ones((1, 1, 2, 2)); w = np.ones((1, 1, 2, 2))
    >>> gx, gw, gb = npconv.conv_transpose_backward(np.ones((1, 1, 3, 3)), x, w)
    >>> gx[0, 0], gb
    (array([[4., 4.],
           [4., 4.]]), array([9.]))
    """
    return conv_transpose_backward_nd(None, grad_output, x, weight, stride, padding,
                                      output_padding, groups, dilation, padding_mode, algorithm)


def conv_transpose_backward_nd(nd: int | None, grad_output: Any, x: Any, weight: Any,
                               stride: Any, padding: Any, output_padding: Any, groups: Any,
                               dilation: Any, padding_mode: Any,
                               algorithm: Any) -> tuple[Any, Any, Any]:
    """:func:`conv_transpose_backward` with the rank checked against ``nd``."""
    algorithm = _check_algorithm(algorithm)
    x, weight, _, geometry, g, batched, problem = _setup(
        _transpose_call, nd, x, weight, None,
        (stride, padding, output_padding, groups, dilation, padding_mode))
    c_out = weight.shape[1] * g
    gy = _check_grad_output(grad_output, x, (x.shape[0], c_out) + geometry.in_size, batched)
    # gx = conv(gy, conj W); gW = the weight map of conj(x) (as grad_output) with gy
    grad_input = _forward(problem, gy, _conj(weight), None, algorithm)
    _, grad_weight = _backward(problem, _conj(x), gy, weight, algorithm, need_input=False)
    return (grad_input if batched else grad_input[0]), grad_weight, _sum_bias(gy)


def explain(x: Any, weight: Any, stride: IntOrTuple = 1, padding: Padding = 0,
            dilation: IntOrTuple = 1, groups: int = 1, padding_mode: str = "zeros",
            algorithm: str = "auto") -> Plan:
    """Which path computes each map of ``conv(x, weight, ...)``, and why.

    Takes the arguments of :func:`conv` (arrays, or anything with ``shape``
    and ``dtype``) and computes nothing. ``str()`` of the result is a table.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> plan = npconv.explain(np.zeros((4, 16, 64, 64), np.float32),
    ...                       np.zeros((16, 16, 13, 13), np.float32), padding=6)
    >>> plan.forward, plan.grad_input, plan.grad_weight
    ('fft', 'fft', 'fft')
    >>> plan.reasons["forward"]  # doctest: +ELLIPSIS
    'cost model (... table), predicted: fft ... ms, ...'
    >>> print(npconv.explain(np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 3, 3))))
    forward      im2col     a small call (columns under 64 KiB): one matmul
    grad_input   im2col     a small call (columns under 64 KiB): one matmul
    grad_weight  im2col     a small call (columns under 64 KiB): one matmul
    """
    algorithm = _check_algorithm(algorithm)
    x, weight, _, geometry, g, _ = conv_setup(None, x, weight, None, stride, padding, dilation,
                                              groups, padding_mode)
    problem = _problem(geometry, g, x.shape[0], x.shape[1], weight.shape[0], x)
    plan = _cached_plan(problem, algorithm, MAPS)
    if algorithm == "auto" and autotune.enabled():
        forward = autotune.cached(problem, ("forward",))
        backward = autotune.cached(problem, MAPS[1:])
        reasons = dict(plan.reasons)
        for tuned, names in ((forward, ("forward",)), (backward, MAPS[1:])):
            for name in names:
                if tuned is not None:
                    reasons[name] = tuned.reasons.get(name, "autotuned")
        plan = Plan(forward.forward if forward else plan.forward,
                    backward.grad_input if backward else plan.grad_input,
                    backward.grad_weight if backward else plan.grad_weight, reasons)
    return plan
