"""Tools for testing convolutions: Hypothesis strategies and a gradient checker.

Import it explicitly (``import npconv.testing``); ``import npconv`` does not
load it. The strategies need `Hypothesis <https://hypothesis.readthedocs.io>`_
(``pip install npconv[test]``), which is imported only when a strategy is
built; :func:`check_grad`, :func:`assert_close` and
:func:`random_conv_arrays` work without it.

* :func:`conv_configs` draws valid convolution (or transposed convolution)
  configurations, :class:`ConvConfig`, *constructively*: the output size,
  kernel, stride, dilation and padding of each axis are drawn first and the
  input size is derived from them, so no draw is ever rejected.
* :func:`conv_arrays` draws ``(x, weight, bias)`` (and optionally
  ``grad_output``) arrays that fit a configuration; :func:`conv_problems`
  draws a configuration together with its arrays.
* :func:`check_grad` compares a hand-written backward pass with central
  finite differences (no autograd framework needed).
* :func:`assert_close` compares two arrays with tolerances scaled to the
  dtype and to the length of the sums that produced them.

Examples
--------
Test a convolution against a reference over many configurations:

>>> import npconv, npconv.testing as nt
>>> from hypothesis import given, settings
>>> @settings(max_examples=10, deadline=None)
... @given(nt.conv_problems(ndim=1))
... def test_conv_is_linear_in_bias(problem):
...     config, (x, w, b) = problem
...     y = npconv.conv(x, w, b, **config.kwargs())
...     y0 = npconv.conv(x, w, None, **config.kwargs())
...     assert y.shape == config.output_shape
...     nt.assert_close(y, y0 + b[:, None], reduction=config.reduction_size)
>>> test_conv_is_linear_in_bias()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import backend, geometry

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

__all__ = [
    "ConvConfig",
    "assert_close",
    "check_grad",
    "conv_arrays",
    "conv_configs",
    "conv_problems",
    "random_conv_arrays",
]

Padding = tuple[int, ...] | str


def _strategies() -> Any:
    """``hypothesis.strategies``, imported on first use, with an install hint."""
    try:
        from hypothesis import strategies
    except ImportError as exc:
        raise ImportError(
            "the strategies of npconv.testing need Hypothesis: "
            "pip install hypothesis (or npconv[test])"
        ) from exc
    return strategies


def _numpy() -> Any:
    # npconv.backend is the only module that imports NumPy; ask it for the module.
    return backend.NumpyBackend().module()


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class ConvConfig:
    """A valid convolution or transposed-convolution configuration.

    Every spatial parameter is a tuple with one entry per spatial axis, except
    ``padding``, which may also be ``'same'`` or ``'valid'`` (convolution only).
    For a transposed convolution ``in_channels``/``input_size`` describe its
    input (``x``) and ``out_channels`` its output, as in
    ``torch.nn.ConvTranspose2d``.

    Attributes
    ----------
    batch : int
        Batch size N (1 when ``batched`` is False).
    in_channels, out_channels, groups : int
    input_size : tuple of int
        Spatial size of ``x``.
    kernel_size, stride, dilation : tuple of int
    padding : tuple of int, 'same' or 'valid'
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}
    output_padding : tuple of int or None
        Only for transposed convolutions (None otherwise).
    transposed : bool
    batched : bool
        False for an unbatched input of shape (C, *input_size).

    Examples
    --------
    >>> from npconv.testing import ConvConfig
    >>> c = ConvConfig(batch=2, in_channels=4, out_channels=6, groups=2, input_size=(5, 7),
    ...                kernel_size=(3, 3), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    >>> c.input_shape, c.weight_shape, c.output_shape
    ((2, 4, 5, 7), (6, 2, 3, 3), (2, 6, 3, 3))
    >>> c.kwargs()
    {'stride': (2, 1), 'padding': (1, 0), 'dilation': (1, 2), 'groups': 2, 'padding_mode': 'zeros'}
    """

    batch: int
    in_channels: int
    out_channels: int
    groups: int
    input_size: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: Padding
    dilation: tuple[int, ...]
    padding_mode: str = "zeros"
    output_padding: tuple[int, ...] | None = None
    transposed: bool = False
    batched: bool = True

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions."""
        return len(self.kernel_size)

    @property
    def pads(self) -> tuple[tuple[int, int], ...]:
        """(low, high) padding of each axis, with 'same'/'valid' resolved as torch does."""
        return geometry.resolve_padding(self.padding, self.kernel_size, self.stride, self.dilation)

    @property
    def output_size(self) -> tuple[int, ...]:
        """Spatial size of the output."""
        if self.transposed:
            extra = self.output_padding or (0,) * self.ndim
            return tuple(
                geometry.transpose_output_size(n, k, s, p, d, op)
                for n, k, s, p, d, op in zip(
                    self.input_size, self.kernel_size, self.stride, self.padding,  # type: ignore[arg-type]
                    self.dilation, extra,
                )
            )
        return tuple(
            geometry.conv_output_size(n, k, s, lo + hi, d)
            for n, k, s, (lo, hi), d in zip(
                self.input_size, self.kernel_size, self.stride, self.pads, self.dilation
            )
        )

    def _lead(self, channels: int) -> tuple[int, ...]:
        return (self.batch, channels) if self.batched else (channels,)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of ``x``: (N, C_in, *input_size), or (C_in, *input_size) if unbatched."""
        return self._lead(self.in_channels) + tuple(self.input_size)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """(O, C/groups, *k) for convolution; (C_in, C_out/groups, *k) when transposed."""
        if self.transposed:
            return (self.in_channels, self.out_channels // self.groups) + tuple(self.kernel_size)
        return (self.out_channels, self.in_channels // self.groups) + tuple(self.kernel_size)

    @property
    def bias_shape(self) -> tuple[int]:
        """(out_channels,)."""
        return (self.out_channels,)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of the output (and of ``grad_output``)."""
        return self._lead(self.out_channels) + self.output_size

    @property
    def reduction_size(self) -> int:
        """Number of products summed into one output element (for error bounds).

        ``(in_channels / groups) * prod(kernel_size)``; exact for a
        convolution, an upper bound for a transposed one.
        """
        return max(1, self.in_channels // self.groups * math.prod(self.kernel_size))

    def kwargs(self, padding_mode: bool = True) -> dict[str, Any]:
        """Keyword arguments for ``npconv.conv``/``conv_transpose`` (and torch's functions).

        ``padding_mode`` is included for convolutions unless ``padding_mode=False``
        (``torch.nn.functional.conv2d`` has no such argument).
        """
        if self.transposed:
            return {
                "stride": self.stride,
                "padding": self.padding,
                "output_padding": self.output_padding or (0,) * self.ndim,
                "groups": self.groups,
                "dilation": self.dilation,
            }
        out: dict[str, Any] = {
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
        }
        if padding_mode:
            out["padding_mode"] = self.padding_mode
        return out


def _rank_strategy(st: Any, ndim: Any) -> Any:
    if isinstance(ndim, int):
        return st.just(ndim)
    if isinstance(ndim, st.SearchStrategy):
        return ndim
    if isinstance(ndim, Iterable):
        return st.sampled_from(list(ndim))
    raise TypeError(f"ndim must be an int, an iterable of ints or a strategy, got {ndim!r}")


def _padding_limit(mode: str, base: int) -> int:
    """Largest padding p with size = base - 2p valid for ``mode`` (torch's limits)."""
    if mode == "reflect":
        return (base - 1) // 3  # p < size
    if mode == "circular":
        return base // 3  # p <= size
    return (base - 1) // 2  # size >= 1


def conv_configs(
    ndim: int | Iterable[int] | Any = 2,
    *,
    max_batch: int = 2,
    min_batch: int = 1,
    max_channels: int = 4,
    groups: bool | int = True,
    padding_modes: Sequence[str] = ("zeros",),
    allow_same: bool = True,
    transposed: bool = False,
    unbatched: bool = False,
    max_kernel: int = 3,
    min_kernel: int = 1,
    max_stride: int = 2,
    max_dilation: int = 2,
    max_padding: int = 2,
    max_output: int = 4,
) -> Any:
    """Hypothesis strategy of valid :class:`ConvConfig` objects.

    Drawn constructively, axis by axis: kernel size, dilation, stride, the
    output size and a remainder ``r < stride`` first, then the largest padding
    that keeps the input non-empty (and within torch's limits for the padding
    mode), and finally the input size
    ``(out - 1) * stride + dilation * (kernel - 1) + 1 + r - 2 * padding``.
    With ``padding='same'`` (stride 1) the input size is the output size and
    is drawn large enough for the mode. Transposed configurations draw the
    input size, ``output_padding < max(stride, dilation)`` and a padding that
    keeps the output non-empty. Nothing is rejected, so Hypothesis never runs
    out of examples and shrinks towards the smallest configuration.

    Parameters
    ----------
    ndim : int, iterable of int, or strategy
        Number of spatial dimensions (an iterable is sampled from).
    max_batch, min_batch : int
        Range of the batch size (``min_batch=0`` allows empty batches).
    max_channels : int
        Upper bound on input and output channels.
    groups : bool or int
        False for ``groups=1``; True to draw any number of groups up to
        ``max_channels``; an int to bound it.
    padding_modes : sequence of str
        Padding modes to draw from (ignored when ``transposed``). Non-zero modes get
        padding within torch's limits: reflect needs padding < size, circular
        padding <= size.
    allow_same : bool
        Also draw ``padding='same'`` and ``'valid'`` (convolution only).
    transposed : bool
        Draw transposed-convolution configurations (``output_padding`` set,
        ``padding_mode='zeros'``).
    unbatched : bool
        Also draw unbatched inputs (``batched=False``, shape (C, *spatial)).
    max_kernel, max_stride, max_dilation, max_padding, max_output : int
        Per-axis upper bounds; ``max_output`` bounds the output size of a
        convolution and the input size of a transposed convolution.
    min_kernel : int
        Per-axis lower bound of the kernel size (``min_kernel=max_kernel=3``
        fixes 3x3 kernels).

    Returns
    -------
    hypothesis.strategies.SearchStrategy[ConvConfig]

    Examples
    --------
    >>> from hypothesis import given, settings
    >>> from npconv.testing import conv_configs
    >>> @settings(max_examples=20)
    ... @given(conv_configs(ndim=(1, 2, 3), padding_modes=("zeros", "reflect", "circular")))
    ... def test_sizes(config):
    ...     assert all(n >= 1 for n in config.input_size + config.output_size)
    ...     assert config.in_channels % config.groups == 0
    >>> test_sizes()
    """
    st = _strategies()

    modes = tuple(padding_modes)
    bad = [m for m in modes if m not in PADDING_MODES]
    if not modes or bad:
        raise ValueError(
            f"padding_modes must be a non-empty subset of {PADDING_MODES}, got {modes}"
        )
    for name, value, low in (
        ("min_batch", min_batch, 0),
        ("max_batch", max_batch, min_batch),
        ("max_channels", max_channels, 1),
        ("min_kernel", min_kernel, 1),
        ("max_kernel", max_kernel, min_kernel),
        ("max_stride", max_stride, 1),
        ("max_dilation", max_dilation, 1),
        ("max_padding", max_padding, 0),
        ("max_output", max_output, 1),
    ):
        if value < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    max_groups = max_channels if groups is True else (1 if groups is False else int(groups))
    max_groups = max(1, min(max_groups, max_channels))
    rank = _rank_strategy(st, ndim)

    @st.composite
    def draw_config(draw: Any) -> ConvConfig:
        nd = draw(rank)
        g = draw(st.integers(1, max_groups))
        cin = g * draw(st.integers(1, max_channels // g))
        cout = g * draw(st.integers(1, max_channels // g))
        batched = draw(st.booleans()) if unbatched else True
        batch = draw(st.integers(min_batch, max_batch)) if batched else 1
        ints = st.integers
        kernel: list[int] = []
        strides: list[int] = []
        dilations: list[int] = []
        pads: list[int] = []
        sizes: list[int] = []
        extra: list[int] = []
        if transposed:
            for _ in range(nd):
                k, s, d = draw(ints(min_kernel, max_kernel)), draw(ints(1, max_stride)), draw(
                    ints(1, max_dilation)
                )
                n = draw(ints(1, max_output))
                op = draw(ints(0, max(s, d) - 1))
                limit = ((n - 1) * s + d * (k - 1) + op) // 2  # keeps the output >= 1
                p = draw(ints(0, min(max_padding, limit)))
                for values, value in zip(
                    (kernel, strides, dilations, sizes, extra, pads), (k, s, d, n, op, p)
                ):
                    values.append(value)
            return ConvConfig(
                batch, cin, cout, g, tuple(sizes), tuple(kernel), tuple(strides), tuple(pads),
                tuple(dilations), "zeros", tuple(extra), True, batched,
            )
        mode = draw(st.sampled_from(modes))
        kind = draw(st.sampled_from(("explicit", "same", "valid"))) if allow_same else "explicit"
        for _ in range(nd):
            k, d = draw(ints(min_kernel, max_kernel)), draw(ints(1, max_dilation))
            span = d * (k - 1) + 1
            if kind == "same":
                s, total = 1, d * (k - 1)
                high = total - total // 2
                need = high + 1 if mode == "reflect" else max(high, 1)
                n = draw(ints(need, max(need, max_output)))
                p = 0
            else:
                s = draw(ints(1, max_stride))
                out = draw(ints(1, max_output))
                base = (out - 1) * s + span + draw(ints(0, s - 1))
                limit = 0 if kind == "valid" else _padding_limit(mode, base)
                p = draw(ints(0, min(max_padding, limit)))
                n = base - 2 * p
            for values, value in zip((kernel, dilations, strides, pads, sizes), (k, d, s, p, n)):
                values.append(value)
        padding: Padding = kind if kind != "explicit" else tuple(pads)
        return ConvConfig(
            batch, cin, cout, g, tuple(sizes), tuple(kernel), tuple(strides), padding,
            tuple(dilations), mode, None, False, batched,
        )

    return draw_config()


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
    return conv_configs(**config_options).flatmap(
        lambda config: conv_arrays(
            config, dtype, bias=bias, grad_output=grad_output, method=method
        ).map(lambda arrays: (config, arrays))
    )


# --------------------------------------------------------------------------- comparisons


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
    inputs = tuple(inputs)
    if not inputs:
        raise ValueError("check_grad needs at least one input")
    xp = backend.get_array_module(*inputs)
    for i, a in enumerate(inputs):
        if not hasattr(a, "dtype") or str(a.dtype) not in ("float64", "complex128"):
            raise TypeError(
                f"check_grad: input {i} must be a float64 or complex128 array (finite "
                f"differences in lower precision are dominated by rounding), got "
                f"{getattr(a, 'dtype', type(a).__name__)}"
            )
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
