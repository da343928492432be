"""Shape arithmetic of convolution, for any number of spatial dimensions.

Pure Python and the single source of truth for output sizes, padding and
parameter validation: forward, backward, transposed convolution, ``patches``
and ``im2col`` all build a :class:`ConvGeometry` here.
"""

from __future__ import annotations

import functools
import math
import operator
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeAlias

IntOrTuple: TypeAlias = int | Sequence[int]
Padding: TypeAlias = int | Sequence[int] | str

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
PADDING_STRINGS = ("same", "valid", "same_upper")

# The largest byte offset an array index may reach (a C ssize_t). Every padded
# image, output and strided view of npconv is checked against it before anything is
# allocated or viewed, so an over-range parameter is a ValueError naming it rather
# than an OverflowError or NumPy's "array is too big".
INDEX_MAX = sys.maxsize
# The widest element (complex128): geometry does not know the dtype, so extents are
# checked as if every element took this many bytes.
MAX_ITEMSIZE = 16


def as_int(value: object, name: str) -> int:
    """``value`` as a Python int, or ``TypeError`` naming ``name``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got the bool {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{name} must be an integer, got {value!r} of type {type(value).__name__}"
        ) from None


def as_tuple(
    value: object, nd: int, name: str, minimum: int | None = None, single: bool = False
) -> tuple[int, ...]:
    """Expand an int, or check a sequence, to a tuple of ``nd`` ints >= ``minimum``.

    With ``single=True`` a one-element sequence is expanded too, as torch's
    convolutions do for stride, padding, dilation and output_padding.

    >>> as_tuple(3, 2, "kernel_size")
    (3, 3)
    >>> as_tuple((1, 2), 2, "stride", minimum=1)
    (1, 2)
    """
    if isinstance(value, str):
        raise TypeError(f"{name} must be an int or a tuple of {nd} ints, got the string {value!r}")
    if not isinstance(value, Sequence) and not _is_int(value):
        if isinstance(value, Sequence) or hasattr(value, "__len__"):
            value = tuple(value)  # type: ignore[arg-type]
        else:
            raise TypeError(
                f"{name} must be an int or a tuple of {nd} ints, got {value!r} "
                f"of type {type(value).__name__}"
            )
    if _is_int(value):
        items = (as_int(value, name),) * nd
    else:
        seq: tuple[Any, ...] = tuple(value)  # type: ignore[arg-type]
        if single and len(seq) == 1:
            seq = seq * nd
        if len(seq) != nd:
            raise ValueError(
                f"{name} must be an int or a tuple of {nd} ints for {nd}-d convolution, "
                f"got {tuple(seq)!r} of length {len(seq)}"
            )
        items = tuple(as_int(v, f"{name}[{i}]") for i, v in enumerate(seq))
    if minimum is not None and any(v < minimum for v in items):
        what = "positive" if minimum == 1 else "non-negative" if minimum == 0 else f">= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return items


def _is_int(value: object) -> bool:
    if isinstance(value, bool):
        return True  # routed to as_int, which rejects it with a clear message
    try:
        operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return False
    return True


def check_padding_mode(padding_mode: object) -> str:
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    return padding_mode  # type: ignore[return-value]


def spatial_rank(kernel_size: object, default: int) -> int:
    """Number of spatial dimensions implied by ``kernel_size`` (``default`` for an int)."""
    if _is_int(kernel_size):
        return default
    if isinstance(kernel_size, str):
        raise TypeError(f"kernel_size must be an int or a tuple of ints, got {kernel_size!r}")
    try:
        return len(kernel_size)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"kernel_size must be an int or a tuple of ints, got {kernel_size!r}"
        ) from None


def conv_output_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int) -> int:
    """Output length of one axis: floor((size + pad - d(k-1) - 1) / s) + 1.

    >>> conv_output_size(32, 3, 1, 2, 1)
    32
    """
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def transpose_output_size(
    size: int, kernel: int, stride: int, padding: int, dilation: int, output_padding: int
) -> int:
    """Output length of one axis of a transposed convolution (torch's formula).

    >>> transpose_output_size(16, 3, 2, 1, 1, 1)
    32
    """
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def resolve_padding(
    padding: Padding, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...],
    single: bool = False, in_size: Sequence[int] | None = None,
) -> tuple[tuple[int, int], ...]:
    """(low, high) padding per axis for an int, a tuple or one of the padding strings.

    * ``'valid'``: no padding.
    * ``'same'`` (torch): total ``d(k-1)`` per axis, an odd extra at the high end; the
      output has the input's size. Stride 1 only, as in torch.
    * ``'same_upper'`` (TensorFlow/JAX ``'SAME'``, ONNX ``auto_pad='SAME_UPPER'``):
      any stride; the output has ``ceil(in / s)`` elements and the total padding is
      ``max((ceil(in/s) - 1) s + d(k-1) + 1 - in, 0)``, the odd extra at the high end.
      It depends on the input size, so ``in_size`` is required. At stride 1 it equals
      ``'same'``.

    >>> resolve_padding("same_upper", (3,), (2,), (1,), in_size=(6,))
    ((0, 1),)
    >>> resolve_padding("same", (4,), (1,), (1,))
    ((1, 2),)
    """
    nd = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * nd
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(
                    f"padding='same' is not supported for strided convolutions, got "
                    f"stride={stride}; padding='same_upper' pads strided convolutions the "
                    f"TensorFlow/JAX way (output size ceil(in / stride))"
                )
            return tuple(_split(d * (k - 1)) for k, d in zip(kernel, dilation))
        if padding == "same_upper":
            if in_size is None:
                raise ValueError("padding='same_upper' depends on the input size: pass in_size")
            return tuple(
                _split(max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0))
                for n, k, s, d in zip(in_size, kernel, stride, dilation)
            )
        raise ValueError(
            f"padding must be 'same', 'valid', 'same_upper', an int or a tuple of {nd} ints, "
            f"got {padding!r}"
        )
    return tuple((p, p) for p in as_tuple(padding, nd, "padding", minimum=0, single=single))


def _split(total: int) -> tuple[int, int]:
    """A total padding as (low, high), the odd extra at the high end."""
    return total // 2, total - total // 2


def check_extent(
    size: Sequence[int], name: str, value: object, lead: int = 1, itemsize: int = MAX_ITEMSIZE
) -> None:
    """ValueError naming ``name=value`` unless an array of ``lead`` images of spatial
    ``size`` (``itemsize`` bytes an element) can be indexed on this platform.

    >>> check_extent((10**9, 10**9), "padding", 10**9)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: padding=1000000000 is out of range: it makes a spatial size of ...
    """
    per_image = math.prod(size) * itemsize
    if per_image * max(lead, 1) > INDEX_MAX:
        times = f" x {lead} images" if lead > 1 else ""
        raise ValueError(
            f"{name}={value!r} is out of range: it makes a spatial size of {tuple(size)}, "
            f"{per_image} bytes per image at {itemsize} bytes an element{times}, more than "
            f"this platform can index ({INDEX_MAX} bytes)"
        )


def _check_steps(
    name: str, value: object, steps: tuple[int, ...], padded: tuple[int, ...]
) -> None:
    """Strides and dilations multiply an axis's byte stride in the patch view: the
    product must stay an index (checked for a contiguous padded array of complex128)."""
    for axis, step in enumerate(steps):
        reach = math.prod(padded[axis + 1 :]) * MAX_ITEMSIZE
        if step * reach > INDEX_MAX:
            raise ValueError(
                f"{name}={value!r} is out of range: {name} {step} on spatial axis {axis} "
                f"times that axis's element spacing ({reach} bytes at most) exceeds what this "
                f"platform can index ({INDEX_MAX} bytes); it must be at most "
                f"{INDEX_MAX // reach}"
            )


@dataclass(frozen=True)
class ConvGeometry:
    """Everything about the spatial shape of one convolution.

    ``in_size`` is the (unpadded) input size, ``pads`` the (low, high) padding
    of each axis and ``out_size`` the number of windows per axis.
    """

    in_size: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    out_size: tuple[int, ...]
    padding_mode: str = "zeros"

    def __hash__(self) -> int:
        # Geometries key the plan and fold caches of every call: hash the fields once.
        try:
            return self.__dict__["_hash"]  # type: ignore[no-any-return]
        except KeyError:
            value = hash((self.in_size, self.kernel, self.stride, self.dilation, self.pads,
                          self.out_size, self.padding_mode))
            object.__setattr__(self, "_hash", value)
            return value

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuilt from the fields, so a cached hash never crosses processes
        return type(self), tuple(getattr(self, f.name) for f in fields(self))

    # The derived sizes below are computed once per geometry: every call reads several
    # of them, and geometries are cached with the checked arguments of a call.

    @functools.cached_property
    def nd(self) -> int:
        return len(self.kernel)

    @functools.cached_property
    def kernel_volume(self) -> int:
        return math.prod(self.kernel)

    @functools.cached_property
    def out_volume(self) -> int:
        return math.prod(self.out_size)

    @functools.cached_property
    def in_volume(self) -> int:
        return math.prod(self.in_size)

    @functools.cached_property
    def padded_size(self) -> tuple[int, ...]:
        return tuple(n + lo + hi for n, (lo, hi) in zip(self.in_size, self.pads))

    @functools.cached_property
    def has_padding(self) -> bool:
        return any(lo or hi for lo, hi in self.pads)

    @functools.cached_property
    def zero_padded(self) -> bool:
        """Padding (if any) is zeros: the border reads 0 and its gradient is dropped."""
        return self.padding_mode == "zeros" or not self.has_padding

    @classmethod
    def build(
        cls,
        in_size: Sequence[int],
        kernel_size: IntOrTuple,
        stride: IntOrTuple = 1,
        padding: Padding = 0,
        dilation: IntOrTuple = 1,
        padding_mode: str = "zeros",
        input_name: str = "input",
        single: bool = False,
    ) -> ConvGeometry:
        """Validate the parameters against ``in_size`` and compute the output size.

        ``single=True`` accepts one-element tuples for stride, padding and
        dilation (torch's convolutions do; its unfold and fold do not).
        """
        nd = len(in_size)
        kernel = as_tuple(kernel_size, nd, "kernel_size", minimum=1)
        strides = as_tuple(stride, nd, "stride", minimum=1, single=single)
        dilations = as_tuple(dilation, nd, "dilation", minimum=1, single=single)
        size = tuple(as_int(n, f"{input_name} size") for n in in_size)
        pads = resolve_padding(padding, kernel, strides, dilations, single=single, in_size=size)
        mode = check_padding_mode(padding_mode)
        if mode != "zeros":
            _check_mode_padding(mode, size, pads, input_name)
        check_extent(size, input_name, tuple(in_size))
        padded = tuple(n + lo + hi for n, (lo, hi) in zip(size, pads))
        check_extent(padded, "padding", padding)
        _check_steps("stride", stride, strides, padded)
        _check_steps("dilation", dilation, dilations, padded)
        out = []
        for axis, (n, k, s, (lo, hi), d) in enumerate(zip(size, kernel, strides, pads, dilations)):
            span = d * (k - 1) + 1
            if n + lo + hi < span:
                raise ValueError(
                    f"kernel_size {kernel} with dilation {dilations} spans {span} elements on "
                    f"spatial axis {axis}, more than the padded {input_name} size {n + lo + hi} "
                    f"(size {n}, padding {(lo, hi)}): the calculated output size would be "
                    f"{conv_output_size(n, k, s, lo + hi, d)}, but it must be at least one"
                )
            out.append(conv_output_size(n, k, s, lo + hi, d))
        return cls(size, kernel, strides, dilations, pads, tuple(out), mode)

    @classmethod
    def for_transpose(
        cls,
        in_size: Sequence[int],
        kernel_size: IntOrTuple,
        stride: IntOrTuple = 1,
        padding: IntOrTuple = 0,
        output_padding: IntOrTuple = 0,
        dilation: IntOrTuple = 1,
    ) -> ConvGeometry:
        """Geometry of the convolution whose adjoint is this transposed convolution.

        Its ``out_size`` is the transposed convolution's input size and its
        ``in_size`` the transposed convolution's output size.

        >>> ConvGeometry.for_transpose((4,), 3, stride=2, padding=1, output_padding=1).in_size
        (8,)
        """
        nd = len(in_size)
        if isinstance(padding, str):
            raise ValueError(
                f"padding must be an int or a tuple of {nd} ints for transposed "
                f"convolution, got {padding!r}"
            )
        kernel = as_tuple(kernel_size, nd, "kernel_size", minimum=1)
        strides = as_tuple(stride, nd, "stride", minimum=1, single=True)
        dilations = as_tuple(dilation, nd, "dilation", minimum=1, single=True)
        pads = as_tuple(padding, nd, "padding", minimum=0, single=True)
        extra = as_tuple(output_padding, nd, "output_padding", minimum=0, single=True)
        for op, s, d in zip(extra, strides, dilations):
            if op >= s and op >= d:
                raise ValueError(
                    f"output_padding must be smaller than either stride or dilation, got "
                    f"output_padding={extra}, stride={strides}, dilation={dilations}"
                )
        size = tuple(as_int(n, "input size") for n in in_size)
        full = tuple(
            transpose_output_size(n, k, s, p, d, op)
            for n, k, s, p, d, op in zip(size, kernel, strides, pads, dilations, extra)
        )
        if any(n < 1 for n in full):
            raise ValueError(
                f"the transposed convolution's output size {full} is not positive for input "
                f"size {size}, kernel_size {kernel}, stride {strides}, padding {pads}, "
                f"output_padding {extra}, dilation {dilations}"
            )
        terms = {"stride": max((n - 1) * s for n, s in zip(size, strides)),
                 "dilation": max(d * (k - 1) for k, d in zip(kernel, dilations)),
                 "kernel_size": max(kernel)}
        culprit = max(terms, key=lambda name: terms[name])
        given = {"stride": stride, "dilation": dilation, "kernel_size": kernel_size}[culprit]
        check_extent(full, culprit, given)
        padded = tuple(n + 2 * p for n, p in zip(full, pads))
        check_extent(padded, "padding", padding)
        _check_steps("stride", stride, strides, padded)
        _check_steps("dilation", dilation, dilations, padded)
        # With output_padding >= stride (allowed when < dilation) the convolution over
        # ``full`` has more windows than ``size``; the trailing ones touch nothing.
        return cls(full, kernel, strides, dilations, tuple((p, p) for p in pads), size)


def _check_mode_padding(
    mode: str, size: tuple[int, ...], pads: tuple[tuple[int, int], ...], input_name: str
) -> None:
    """torch's limits: reflect needs padding < size, circular padding <= size."""
    for axis, (n, (lo, hi)) in enumerate(zip(size, pads)):
        if mode == "reflect" and max(lo, hi) >= n:
            raise ValueError(
                f"padding_mode='reflect' needs padding smaller than the {input_name} size, got "
                f"padding {(lo, hi)} for size {n} on spatial axis {axis}"
            )
        if mode == "circular" and max(lo, hi) > n:
            raise ValueError(
                f"padding_mode='circular' needs padding at most the {input_name} size, got "
                f"padding {(lo, hi)} for size {n} on spatial axis {axis}"
            )
