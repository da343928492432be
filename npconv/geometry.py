"""Shape arithmetic of convolution, for any number of spatial dimensions.

Pure Python and the single source of truth for output sizes, padding and
parameter validation: forward, backward, transposed convolution, ``patches``
and ``im2col`` all build a :class:`ConvGeometry` here.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

IntOrTuple: TypeAlias = int | Sequence[int]
Padding: TypeAlias = int | Sequence[int] | str

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


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
    single: bool = False,
) -> tuple[tuple[int, int], ...]:
    """(low, high) padding per axis; 'same' puts an odd extra at the high end, like torch."""
    nd = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * nd
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(
                    f"padding='same' is not supported for strided convolutions, got stride={stride}"
                )
            pads = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        raise ValueError(
            f"padding must be 'same', 'valid', an int or a tuple of {nd} ints, got {padding!r}"
        )
    return tuple((p, p) for p in as_tuple(padding, nd, "padding", minimum=0, single=single))


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

    @property
    def nd(self) -> int:
        return len(self.kernel)

    @property
    def kernel_volume(self) -> int:
        return math.prod(self.kernel)

    @property
    def out_volume(self) -> int:
        return math.prod(self.out_size)

    @property
    def padded_size(self) -> tuple[int, ...]:
        return tuple(n + lo + hi for n, (lo, hi) in zip(self.in_size, self.pads))

    @property
    def has_padding(self) -> bool:
        return any(lo or hi for lo, hi in self.pads)

    @property
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
        pads = resolve_padding(padding, kernel, strides, dilations, single=single)
        mode = check_padding_mode(padding_mode)
        size = tuple(as_int(n, f"{input_name} size") for n in in_size)
        if mode != "zeros":
            _check_mode_padding(mode, size, pads, input_name)
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
