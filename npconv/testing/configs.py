"""Convolution configurations: :class:`ConvConfig` and the :func:`conv_configs` strategy."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import backend, geometry

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

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
    >>> c.patch_kwargs()        # for npconv.patches(x, c.kernel_size, **c.patch_kwargs())
    {'stride': (2, 1), 'padding': (1, 0), 'dilation': (1, 2), 'padding_mode': 'zeros'}
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
        return geometry.resolve_padding(self.padding, self.kernel_size, self.stride, self.dilation,
                                        in_size=self.input_size)

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

    def patch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``npconv.patches``/``fold_patches`` (and ``im2col``/``col2im``).

        The geometry of :meth:`kwargs` without ``groups``, which the receptive-field
        functions do not take. Pass the kernel size positionally:
        ``npconv.patches(x, config.kernel_size, **config.patch_kwargs())``.
        """
        if self.transposed:
            raise ValueError(
                "patch_kwargs() describes a convolution's windows; a transposed "
                "configuration has none of its own"
            )
        return {
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "padding_mode": self.padding_mode,
        }

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
    allow_same_upper: bool = False,
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
    allow_same_upper : bool
        Also draw ``padding='same_upper'`` (TensorFlow's 'SAME', any stride; convolution
        only). Off by default.
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

    bounds = dict(min_kernel=min_kernel, max_kernel=max_kernel, max_stride=max_stride,
                  max_dilation=max_dilation, max_padding=max_padding, max_output=max_output)

    @st.composite
    def draw_config(draw: Any) -> ConvConfig:
        nd = draw(rank)
        g = draw(st.integers(1, max_groups))
        cin = g * draw(st.integers(1, max_channels // g))
        cout = g * draw(st.integers(1, max_channels // g))
        batched = draw(st.booleans()) if unbatched else True
        batch = draw(st.integers(min_batch, max_batch)) if batched else 1
        if transposed:
            axes = [_draw_transposed_axis(draw, st, **bounds) for _ in range(nd)]
            k, s, d, n, op, p = (tuple(column) for column in zip(*axes))
            return ConvConfig(batch, cin, cout, g, n, k, s, p, d, "zeros", op, True, batched)
        mode = draw(st.sampled_from(modes))
        kinds = ("explicit",) + ("same", "valid") * allow_same + ("same_upper",) * allow_same_upper
        kind = draw(st.sampled_from(kinds))
        axes = [_draw_axis(draw, st, kind, mode, **bounds) for _ in range(nd)]
        k, d, s, p, n = (tuple(column) for column in zip(*axes))
        padding: Padding = kind if kind != "explicit" else p
        return ConvConfig(batch, cin, cout, g, n, k, s, padding, d, mode, None, False, batched)

    return draw_config()


def _draw_transposed_axis(
    draw: Any, st: Any, *, min_kernel: int, max_kernel: int, max_stride: int,
    max_dilation: int, max_padding: int, max_output: int,
) -> tuple[int, ...]:
    """(kernel, stride, dilation, input size, output_padding, padding) of one axis."""
    ints = st.integers
    k, s, d = draw(ints(min_kernel, max_kernel)), draw(ints(1, max_stride)), draw(
        ints(1, max_dilation)
    )
    n = draw(ints(1, max_output))
    op = draw(ints(0, max(s, d) - 1))
    limit = ((n - 1) * s + d * (k - 1) + op) // 2  # keeps the output >= 1
    p = draw(ints(0, min(max_padding, limit)))
    return k, s, d, n, op, p


def _draw_axis(
    draw: Any, st: Any, kind: str, mode: str, *, min_kernel: int, max_kernel: int,
    max_stride: int, max_dilation: int, max_padding: int, max_output: int,
) -> tuple[int, ...]:
    """(kernel, dilation, stride, padding, input size) of one convolution axis."""
    ints = st.integers
    k, d = draw(ints(min_kernel, max_kernel)), draw(ints(1, max_dilation))
    span = d * (k - 1) + 1
    if kind == "same":
        total = d * (k - 1)
        high = total - total // 2
        need = high + 1 if mode == "reflect" else max(high, 1)
        return k, d, 1, 0, draw(ints(need, max(need, max_output)))
    s = draw(ints(1, max_stride))
    if kind == "same_upper":
        # every input size whose TensorFlow-rule padding the mode allows (n = span fits
        # every mode: its total padding is at most span - 1)
        sizes = [n for n in range(1, max(max_output * s, span) + 1)
                 if _same_upper_fits(mode, n, k, s, d)]
        return k, d, s, 0, draw(st.sampled_from(sizes))
    out = draw(ints(1, max_output))
    base = (out - 1) * s + span + draw(ints(0, s - 1))
    limit = 0 if kind == "valid" else _padding_limit(mode, base)
    p = draw(ints(0, min(max_padding, limit)))
    return k, d, s, p, base - 2 * p


def _same_upper_fits(mode: str, n: int, k: int, s: int, d: int) -> bool:
    """Whether ``padding='same_upper'`` pads an axis of size ``n`` within torch's limits."""
    ((_, high),) = geometry.resolve_padding("same_upper", (k,), (s,), (d,), in_size=(n,))
    if mode == "reflect":
        return high < n
    return high <= n if mode == "circular" else True
