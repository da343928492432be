"""Convolution and pooling layers with explicit ``forward`` / ``backward``, like ``torch.nn``.

Each layer owns its parameters (``weight``, ``bias``) as arrays of the active
backend, computes ``y = layer(x)`` and, after that, ``grad_input =
layer.backward(grad_output)``, which also stores ``weight_grad`` and
``bias_grad``. There is no autograd: a network is a list of layers whose
``backward`` methods are called in reverse order.

Layout and semantics are torch's: ``ConvNd`` weights are
``(out_channels, in_channels // groups, *kernel_size)``, ``ConvTransposeNd``
weights ``(in_channels, out_channels // groups, *kernel_size)``, and
parameters start from torch's default initialisation,
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with ``fan_in = weight.shape[1] *
prod(kernel_size)`` (``kaiming_uniform_(a=sqrt(5))`` for the weight, the same
bound for the bias). Pooling layers (``MaxPoolNd``, ``AvgPoolNd``) have no
parameters; they call :mod:`npconv.pooling`.
"""

from __future__ import annotations

import math
from typing import Any

from . import backend, pooling
from ._validate import check_groups, check_layer_dtype
from .conv import conv, conv_backward, conv_transpose, conv_transpose_backward
from .geometry import (
    INDEX_MAX,
    ConvGeometry,
    IntOrTuple,
    Padding,
    as_int,
    as_tuple,
    check_padding_mode,
    resolve_padding,
)

__all__ = [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "default_rng",
]


def default_rng(seed: Any = None) -> Any:
    """Random generator of the active backend: ``xp.random.default_rng(seed)``.

    ``seed`` may be ``None`` (fresh entropy), an int, or an existing generator,
    which is returned unchanged. On NumPy this is a ``numpy.random.Generator``,
    on CuPy a ``cupy.random.Generator``; both provide ``random(shape)``, the
    only method the layers use.

    Examples
    --------
    >>> import npconv.nn
    >>> a = npconv.nn.default_rng(0).random(3)
    >>> b = npconv.nn.default_rng(0).random(3)
    >>> bool((a == b).all())
    True
    """
    if seed is None:
        return backend.active_module().random.default_rng()
    if callable(getattr(seed, "random", None)) and not isinstance(seed, (int, str)):
        return seed
    if isinstance(seed, bool):
        raise TypeError(f"rng must be None, an int seed or a Generator, got the bool {seed!r}")
    try:
        value = as_int(seed, "rng")
    except TypeError:
        raise TypeError(
            f"rng must be None, an int seed or a random Generator, got {seed!r} "
            f"of type {type(seed).__name__}"
        ) from None
    if value < 0:
        raise ValueError(f"rng seed must be non-negative, got {value}")
    return backend.active_module().random.default_rng(value)


def _uniform(rng: Any, shape: tuple[int, ...], bound: float, dtype: Any) -> Any:
    """Samples of U(-bound, bound) as an array of the active backend (both parts if complex)."""
    xp = backend.active_module()

    def draw() -> Any:
        return (xp.asarray(rng.random(shape)) * 2.0 - 1.0) * bound

    if backend.scalar_kind(dtype) == "c":
        return (draw() + 1j * draw()).astype(dtype)
    return draw().astype(dtype)


class _ConvBase:
    """Shared machinery of every convolution layer (any rank, plain or transposed).

    Subclasses set ``_nd`` (spatial rank) and ``transposed`` and provide the
    constructor signature; everything else lives here.
    """

    _nd: int = 0
    transposed: bool = False

    def _setup(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        stride: IntOrTuple,
        padding: Padding,
        dilation: IntOrTuple,
        groups: int,
        bias: bool,
        padding_mode: str,
        output_padding: IntOrTuple,
        dtype: Any,
        rng: Any,
    ) -> None:
        nd = self._nd
        self.in_channels = as_int(in_channels, "in_channels")
        self.out_channels = as_int(out_channels, "out_channels")
        for name, value in (("in_channels", self.in_channels),
                            ("out_channels", self.out_channels)):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        self.kernel_size = as_tuple(kernel_size, nd, "kernel_size", minimum=1)
        self.stride = as_tuple(stride, nd, "stride", minimum=1, single=True)
        self.dilation = as_tuple(dilation, nd, "dilation", minimum=1, single=True)
        self.groups = check_groups(groups, self.in_channels, self.out_channels)
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        self.padding_mode = check_padding_mode(padding_mode)
        if self.transposed:
            if isinstance(padding, str):
                raise ValueError(
                    f"padding must be an int or a tuple of {nd} ints for "
                    f"{type(self).__name__}, got {padding!r}"
                )
            pads = as_tuple(padding, nd, "padding", minimum=0, single=True)
            # for_transpose checks output_padding against stride and dilation; the
            # input size is any one for which the output size is positive.
            ConvGeometry.for_transpose(
                tuple(2 * p + 1 for p in pads), self.kernel_size, self.stride, pads,
                output_padding, self.dilation,
            )
            self.padding: tuple[int, ...] | str = pads
            self.output_padding = as_tuple(output_padding, nd, "output_padding", minimum=0,
                                           single=True)
        else:
            if padding != "same_upper":  # depends on the input size: resolved per call
                resolve_padding(padding, self.kernel_size, self.stride, self.dilation, single=True)
            self.padding = (padding if isinstance(padding, str)
                            else as_tuple(padding, nd, "padding", single=True))
            self.output_padding = (0,) * nd

        self.dtype = backend.numpy_dtype(dtype)
        if backend.scalar_kind(self.dtype) not in ("f", "c"):
            raise TypeError(
                f"dtype must be a floating or complex dtype (float16, float32, float64, "
                f"complex64, complex128), got {dtype!r}"
            )
        generator = default_rng(rng)
        if self.transposed:
            shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        else:
            shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        if math.prod(shape) * self.dtype.itemsize > INDEX_MAX:  # before allocating it
            raise ValueError(
                f"in_channels={in_channels!r}, out_channels={out_channels!r} and kernel_size="
                f"{kernel_size!r} are out of range: a {self.dtype} weight of shape {shape} is "
                f"larger than this platform can index ({INDEX_MAX} bytes)"
            )
        bound = 1.0 / math.sqrt(shape[1] * math.prod(self.kernel_size))
        self.weight = _uniform(generator, shape, bound, self.dtype)
        self.bias = _uniform(generator, (self.out_channels,), bound, self.dtype) if bias else None
        self.weight_grad: Any = None
        self.bias_grad: Any = None
        self._cache: Any = None

    # ------------------------------------------------------------------ public

    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    def forward(self, x: Any) -> Any:
        raise NotImplementedError

    def backward(self, grad_output: Any) -> Any:
        raise NotImplementedError

    def parameters(self) -> list[Any]:
        """``[weight, bias]`` (``[weight]`` without bias); updated in place by optimisers."""
        return [self.weight] if self.bias is None else [self.weight, self.bias]

    def gradients(self) -> list[Any]:
        """``[weight_grad, bias_grad]`` of the last backward, in :meth:`parameters` order."""
        if self.weight_grad is None:
            raise RuntimeError(f"{type(self).__name__}.gradients(): call backward() first")
        return [self.weight_grad] if self.bias is None else [self.weight_grad, self.bias_grad]

    def extra_repr(self) -> str:
        nd = self._nd
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0,) * nd:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * nd:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * nd:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def _take_cache(self) -> Any:
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() needs a forward() first (each forward "
                f"allows one backward)"
            )
        cache, self._cache = self._cache, None
        return cache


class _Conv(_ConvBase):
    """Convolution layer (base of Conv1d/2d/3d); see :class:`Conv2d`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        stride: IntOrTuple = 1,
        padding: Padding = 0,
        dilation: IntOrTuple = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        dtype: Any = "float32",
        rng: Any = None,
    ) -> None:
        self._setup(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                    bias, padding_mode, 0, dtype, rng)

    def _args(self) -> tuple[Any, ...]:
        return self.stride, self.padding, self.dilation, self.groups, self.padding_mode

    def forward(self, x: Any) -> Any:
        """``npconv.conv(x, weight, bias, ...)``; caches ``x`` for :meth:`backward`.

        ``x`` is (N, C_in, *spatial) or unbatched (C_in, *spatial) with the
        layer's dtype; returns (N, C_out, *out) (or unbatched). The layer calls
        the public functions, so it runs the algorithm they choose.
        """
        x = check_layer_dtype(self, "x", x, self.weight.dtype)
        y = conv(x, self.weight, self.bias, *self._args())
        self._cache = x
        return y

    def backward(self, grad_output: Any) -> Any:
        """Gradient with respect to the last forward's input; stores weight/bias gradients.

        ``grad_output`` has the shape of the last output. Returns
        ``grad_input`` (shape of that input) and sets ``weight_grad`` and
        ``bias_grad`` (``None`` without bias), overwriting earlier values.
        """
        x = self._take_cache()
        gy = check_layer_dtype(self, "grad_output", grad_output, self.weight.dtype)
        grad_input, grad_weight, grad_bias = conv_backward(gy, x, self.weight, *self._args())
        self.weight_grad = grad_weight
        self.bias_grad = None if self.bias is None else grad_bias
        return grad_input


class _ConvTranspose(_ConvBase):
    """Transposed convolution layer (base of ConvTranspose1d/2d/3d); see ConvTranspose2d."""

    transposed = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        stride: IntOrTuple = 1,
        padding: IntOrTuple = 0,
        output_padding: IntOrTuple = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: IntOrTuple = 1,
        padding_mode: str = "zeros",
        *,
        dtype: Any = "float32",
        rng: Any = None,
    ) -> None:
        self._setup(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                    bias, padding_mode, output_padding, dtype, rng)

    def _args(self) -> tuple[Any, ...]:
        return (self.stride, self.padding, self.output_padding, self.groups, self.dilation,
                self.padding_mode)

    def forward(self, x: Any) -> Any:
        """``npconv.conv_transpose(x, weight, bias, ...)``; caches ``x`` for :meth:`backward`."""
        x = check_layer_dtype(self, "x", x, self.weight.dtype)
        y = conv_transpose(x, self.weight, self.bias, *self._args())
        self._cache = x
        return y

    def backward(self, grad_output: Any) -> Any:
        """Gradient with respect to the last forward's input; stores weight/bias gradients."""
        x = self._take_cache()
        gy = check_layer_dtype(self, "grad_output", grad_output, self.weight.dtype)
        grad_input, grad_weight, grad_bias = conv_transpose_backward(
            gy, x, self.weight, *self._args()
        )
        self.weight_grad = grad_weight
        self.bias_grad = None if self.bias is None else grad_bias
        return grad_input


_CONV_DOC = """{nd}-d convolution layer, like ``torch.nn.Conv{nd}d``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or tuple of {nd} ints
    padding : int, tuple of {nd} ints, 'same' or 'valid'
    groups : int
        Must divide ``in_channels`` and ``out_channels``.
    bias : bool
    padding_mode : {{'zeros', 'reflect', 'replicate', 'circular'}}
    dtype : dtype specifier, keyword-only, default ``'float32'``
    rng : None, int or Generator, keyword-only
        Seed or generator (:func:`default_rng`) for the initial parameters.

    Attributes
    ----------
    weight : array (out_channels, in_channels // groups, *kernel_size)
    bias : array (out_channels,) or None
    weight_grad, bias_grad : array or None
        The parameter gradients of the last :meth:`backward`.

    Examples
    --------
    >>> import numpy as np, npconv.nn
    >>> layer = npconv.nn.Conv{nd}d(2, 4, 3, padding=1, rng=0)
    >>> layer
    Conv{nd}d(2, 4, kernel_size={k}, stride={s}, padding={p})
    >>> x = np.ones((5, 2) + (6,) * {nd}, dtype=np.float32)
    >>> y = layer(x)
    >>> y.shape == (5, 4) + (6,) * {nd}
    True
    >>> gx = layer.backward(np.ones_like(y))
    >>> gx.shape == x.shape, layer.weight_grad.shape == layer.weight.shape
    (True, True)
    """

_TRANSPOSE_DOC = """{nd}-d transposed convolution layer, like ``torch.nn.ConvTranspose{nd}d``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, output_padding, dilation : int or tuple of {nd} ints
        ``output_padding`` must be smaller than the stride or the dilation.
    groups : int
    bias : bool
    padding_mode : {{'zeros', 'reflect', 'replicate', 'circular'}}
        torch accepts only 'zeros' here. Other modes make the layer the adjoint of
        the convolution with that padding mode (see :func:`npconv.conv_transpose`).
    dtype : dtype specifier, keyword-only, default ``'float32'``
    rng : None, int or Generator, keyword-only

    Attributes
    ----------
    weight : array (in_channels, out_channels // groups, *kernel_size)
    bias : array (out_channels,) or None
    weight_grad, bias_grad : array or None
        The parameter gradients of the last :meth:`backward`.

    Examples
    --------
    >>> import numpy as np, npconv.nn
    >>> layer = npconv.nn.ConvTranspose{nd}d(4, 2, 3, stride=2, padding=1,
    ...                                       output_padding=1, rng=0)
    >>> x = np.ones((5, 4) + (3,) * {nd}, dtype=np.float32)
    >>> y = layer(x)
    >>> y.shape == (5, 2) + (6,) * {nd}
    True
    >>> layer.backward(np.ones_like(y)).shape == x.shape
    True
    """


def _tuple_text(value: int, nd: int) -> str:
    return str((value,) * nd)


class Conv1d(_Conv):
    _nd = 1
    __doc__ = _CONV_DOC.format(nd=1, k=_tuple_text(3, 1), s=_tuple_text(1, 1),
                               p=_tuple_text(1, 1))


class Conv2d(_Conv):
    _nd = 2
    __doc__ = _CONV_DOC.format(nd=2, k=_tuple_text(3, 2), s=_tuple_text(1, 2),
                               p=_tuple_text(1, 2))


class Conv3d(_Conv):
    _nd = 3
    __doc__ = _CONV_DOC.format(nd=3, k=_tuple_text(3, 3), s=_tuple_text(1, 3),
                               p=_tuple_text(1, 3))


class ConvTranspose1d(_ConvTranspose):
    _nd = 1
    __doc__ = _TRANSPOSE_DOC.format(nd=1)


class ConvTranspose2d(_ConvTranspose):
    _nd = 2
    __doc__ = _TRANSPOSE_DOC.format(nd=2)


class ConvTranspose3d(_ConvTranspose):
    _nd = 3
    __doc__ = _TRANSPOSE_DOC.format(nd=3)


# --------------------------------------------------------------------------- pooling


class _PoolBase:
    """A pooling layer: no parameters; ``forward`` caches ``x`` for one ``backward``."""

    _nd: int = 0
    _cache: Any = None
    kernel_size: IntOrTuple

    def __call__(self, x: Any) -> Any:
        return self.forward(x)  # type: ignore[attr-defined]

    def extra_repr(self) -> str:
        raise NotImplementedError

    def parameters(self) -> list[Any]:
        """``[]``: pooling has no parameters."""
        return []

    def gradients(self) -> list[Any]:
        """``[]``, in :meth:`parameters` order."""
        return []

    def _kernel(self) -> tuple[int, ...]:
        return as_tuple(self.kernel_size, self._nd, "kernel_size", minimum=1, single=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def _take_cache(self) -> Any:
        return _ConvBase._take_cache(self)  # type: ignore[arg-type]


class _MaxPool(_PoolBase):
    def __init__(self, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
                 padding: IntOrTuple = 0, dilation: IntOrTuple = 1,
                 return_indices: bool = False, ceil_mode: bool = False) -> None:
        self.kernel_size, self.padding, self.dilation = kernel_size, padding, dilation
        self.stride = kernel_size if stride is None else stride
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def _args(self) -> tuple[Any, ...]:
        return self._kernel(), self.stride, self.padding, self.dilation, self.ceil_mode

    def forward(self, x: Any) -> Any:
        """:func:`npconv.max_pool` of ``x`` (and the indices with ``return_indices``)."""
        kernel, stride, padding, dilation, ceil_mode = self._args()
        out = pooling.max_pool(x, kernel, stride, padding, dilation, ceil_mode,
                               self.return_indices)
        self._cache = x
        return out

    def backward(self, grad_output: Any) -> Any:
        """Gradient with respect to the last forward's input (``grad_output`` of ``y``)."""
        return pooling.max_pool_backward(grad_output, self._take_cache(), *self._args())

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class _AvgPool(_PoolBase):
    def __init__(self, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
                 padding: IntOrTuple = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None) -> None:
        self.kernel_size, self.padding = kernel_size, padding
        self.stride = kernel_size if stride is None else stride
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self.divisor_override = divisor_override

    def _args(self) -> tuple[Any, ...]:
        return (self._kernel(), self.stride, self.padding, self.ceil_mode,
                self.count_include_pad, self.divisor_override)

    def forward(self, x: Any) -> Any:
        """:func:`npconv.avg_pool` of ``x``; caches ``x`` for :meth:`backward`."""
        y = pooling.avg_pool(x, *self._args())
        self._cache = x
        return y

    def backward(self, grad_output: Any) -> Any:
        """Gradient with respect to the last forward's input."""
        return pooling.avg_pool_backward(grad_output, self._take_cache(), *self._args())

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


_POOL_DOC = """{nd}-d {what} pooling layer, like ``torch.nn.{name}{nd}d`` (same arguments).

    ``layer(x)`` is :func:`npconv.{function}` and ``layer.backward(grad_output)``
    its gradient with respect to the last input; see there for the arguments.

    Examples
    --------
    >>> import numpy as np, npconv.nn
    >>> layer = npconv.nn.{name}{nd}d(2)
    >>> y = layer(np.ones((5, 3) + (8,) * {nd}))
    >>> y.shape == (5, 3) + (4,) * {nd}
    True
    >>> layer.backward(np.ones_like(y)).shape == (5, 3) + (8,) * {nd}
    True
    """


class MaxPool1d(_MaxPool):
    _nd = 1
    __doc__ = _POOL_DOC.format(nd=1, what="max", name="MaxPool", function="max_pool")


class MaxPool2d(_MaxPool):
    _nd = 2
    __doc__ = _POOL_DOC.format(nd=2, what="max", name="MaxPool", function="max_pool")


class MaxPool3d(_MaxPool):
    _nd = 3
    __doc__ = _POOL_DOC.format(nd=3, what="max", name="MaxPool", function="max_pool")


class AvgPool1d(_AvgPool):
    _nd = 1
    __doc__ = _POOL_DOC.format(nd=1, what="average", name="AvgPool", function="avg_pool")

    def __init__(self, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
                 padding: IntOrTuple = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True) -> None:
        # torch's AvgPool1d keeps its sizes as 1-tuples and has no divisor_override
        one = [tuple(v) if isinstance(v, (tuple, list)) else (v,) for v in (kernel_size, padding)]
        super().__init__(one[0], None if stride is None else as_tuple(stride, 1, "stride"),
                         one[1], ceil_mode, count_include_pad)


class AvgPool2d(_AvgPool):
    _nd = 2
    __doc__ = _POOL_DOC.format(nd=2, what="average", name="AvgPool", function="avg_pool")


class AvgPool3d(_AvgPool):
    _nd = 3
    __doc__ = _POOL_DOC.format(nd=3, what="average", name="AvgPool", function="avg_pool")
