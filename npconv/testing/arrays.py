"""Arrays that fit a configuration: seeded (:func:`random_conv_arrays`) or drawn by Hypothesis."""

from __future__ import annotations

from typing import Any

from .. import backend
from .configs import ConvConfig, _numpy, _strategies, conv_configs

# --------------------------------------------------------------------------- arrays


def random_conv_arrays(
    config: ConvConfig,
    dtype: Any = "float64",
    seed: int = 0,
    *,
    bias: bool = True,
    grad_output: bool = False,
    bound: float = 1.0,
    xp: Any = None,
) -> tuple[Any, ...]:
    """Random ``(x, weight, bias[, grad_output])`` for ``config``, from a seed.

    Elements are uniform in ``[-bound, bound)`` (real and imaginary parts
    separately for complex dtypes), generated in float64 by NumPy's
    ``default_rng(seed)`` and then cast, so the same seed gives the same
    values on every backend and for every dtype (up to rounding).

    Parameters
    ----------
    config : ConvConfig
    dtype : dtype specifier
    seed : int
    bias : bool
        If False the bias entry is None.
    grad_output : bool
        Also return an array of ``config.output_shape``.
    bound : float
    xp : module, optional
        Array module of the results (default: the active backend, ``npconv.xp``).

    Returns
    -------
    tuple
        ``(x, weight, bias)`` or ``(x, weight, bias, grad_output)``.

    Examples
    --------
    >>> from npconv.testing import ConvConfig, random_conv_arrays
    >>> c = ConvConfig(1, 2, 3, 1, (5,), (3,), (1,), (0,), (1,))
    >>> x, w, b = random_conv_arrays(c, "float32", seed=1)
    >>> x.shape, w.shape, b.shape, str(x.dtype)
    ((1, 2, 5), (3, 2, 3), (3,), 'float32')
    """
    np = _numpy()
    dtype = backend.numpy_dtype(dtype)
    xp = backend.active_module() if xp is None else xp
    rng = np.random.default_rng(seed)

    def make(shape: tuple[int, ...]) -> Any:
        a = rng.uniform(-bound, bound, size=shape)
        if dtype.kind == "c":
            a = a + 1j * rng.uniform(-bound, bound, size=shape)
        return xp.asarray(a.astype(dtype))

    out = [make(config.input_shape), make(config.weight_shape)]
    out.append(make(config.bias_shape) if bias else None)
    if grad_output:
        out.append(make(config.output_shape))
    return tuple(out)


def conv_arrays(
    config: ConvConfig,
    dtype: Any = "float64",
    *,
    bias: bool | None = True,
    grad_output: bool = False,
    bound: float = 1.0,
    method: str = "seed",
    xp: Any = None,
) -> Any:
    """Hypothesis strategy of ``(x, weight, bias[, grad_output])`` arrays for ``config``.

    Parameters
    ----------
    config : ConvConfig
    dtype : dtype specifier
        float16/32/64 or complex64/128.
    bias : bool or None
        True: draw a bias; False: the bias entry is None; None: draw either.
    grad_output : bool
        Also draw an array of ``config.output_shape``.
    bound : float
        Elements (real and imaginary parts) lie in ``[-bound, bound]``.
    method : {'seed', 'elements'}
        ``'seed'`` (default, cheap) draws one integer seed and fills the
        arrays with :func:`random_conv_arrays`: continuous values, fast for
        any size, but Hypothesis can only shrink the seed. ``'elements'``
        draws every element with ``hypothesis.extra.numpy.arrays`` (bounded,
        finite floats): slower, but finds and shrinks towards special values
        (zeros, equal elements, extremes).
    xp : module, optional
        Array module of the results (default: the active backend).

    Returns
    -------
    hypothesis.strategies.SearchStrategy[tuple]

    Examples
    --------
    >>> from hypothesis import given, settings, strategies as st
    >>> import npconv
    >>> from npconv.testing import conv_configs, conv_arrays
    >>> @settings(max_examples=10, deadline=None)
    ... @given(st.data())
    ... def test_shapes(data):
    ...     config = data.draw(conv_configs(ndim=2))
    ...     x, w, b = data.draw(conv_arrays(config, "float32"))
    ...     assert npconv.conv(x, w, b, **config.kwargs()).shape == config.output_shape
    >>> test_shapes()
    """
    st = _strategies()

    if method not in ("seed", "elements"):
        raise ValueError(f"method must be 'seed' or 'elements', got {method!r}")
    dt = backend.numpy_dtype(dtype)
    if dt.kind not in "fc":
        raise TypeError(f"dtype must be a floating or complex dtype, got {dt}")
    with_bias = st.booleans() if bias is None else st.just(bool(bias))

    if method == "seed":
        return st.tuples(st.integers(0, 2**32 - 1), with_bias).map(
            lambda args: random_conv_arrays(
                config, dt, args[0], bias=args[1], grad_output=grad_output, bound=bound, xp=xp
            )
        )

    from hypothesis.extra import numpy as hnp

    width = dt.itemsize * 8
    if dt.kind == "c":
        elements = st.complex_numbers(
            max_magnitude=bound, allow_nan=False, allow_infinity=False, width=width
        )
    else:
        elements = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=width)
    target = backend.active_module() if xp is None else xp

    def arrays(shape: tuple[int, ...]) -> Any:
        return hnp.arrays(dt, shape, elements=elements).map(target.asarray)

    shapes = [config.input_shape, config.weight_shape]
    if grad_output:
        shapes.append(config.output_shape)

    @st.composite
    def draw_arrays(draw: Any) -> tuple[Any, ...]:
        x, w = draw(arrays(shapes[0])), draw(arrays(shapes[1]))
        b = draw(arrays(config.bias_shape)) if draw(with_bias) else None
        return (x, w, b, draw(arrays(shapes[2]))) if grad_output else (x, w, b)

    return draw_arrays()


def conv_problems(
    dtype: Any = "float64",
    *,
    bias: bool | None = True,
    grad_output: bool = False,
    method: str = "seed",
    **config_options: Any,
) -> Any:
    """Strategy of ``(config, arrays)``: a :func:`conv_configs` draw and its :func:`conv_arrays`.

    ``config_options`` go to :func:`conv_configs`; the other arguments to
    :func:`conv_arrays`.

    Examples
    --------
    >>> from hypothesis import given, settings
    >>> import npconv
    >>> from npconv.testing import conv_problems
    >>> @settings(max_examples=10, deadline=None)
    ... @given(conv_problems(ndim=1, transposed=True, grad_output=True))
    ... def test_transpose_shapes(problem):
    ...     config, (x, w, b, gy) = problem
    ...     y = npconv.conv_transpose(x, w, b, **config.kwargs())
    ...     assert y.shape == gy.shape == config.output_shape
    >>> test_transpose_shapes()
    """
    st = _strategies()
    configs = conv_configs(**config_options)

    # A composite, not flatmap(lambda config: ...): Hypothesis prints a failing
    # example from the source of a lambda, which showed the word ``config`` instead
    # of the configuration that failed.
    @st.composite
    def draw_problem(draw: Any) -> tuple[ConvConfig, tuple[Any, ...]]:
        config = draw(configs)
        arrays = draw(conv_arrays(config, dtype, bias=bias, grad_output=grad_output,
                                  method=method))
        return config, arrays

    return draw_problem()
