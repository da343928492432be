"""Fixed-rank names with torch's spelling: ``conv1d`` ... ``conv_transpose3d_backward``.

Each is :mod:`npconv.conv`'s N-d function with the rank checked (a 2-d
weight given to ``conv1d`` is an error, not a 2-d convolution).
"""

from __future__ import annotations

from typing import Any

from .conv import (
    conv_backward_nd,
    conv_nd,
    conv_transpose_backward_nd,
    conv_transpose_nd,
)
from .geometry import IntOrTuple, Padding

__all__ = [
    "conv1d", "conv2d", "conv3d", "conv1d_backward", "conv2d_backward", "conv3d_backward",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "conv_transpose1d_backward",
    "conv_transpose2d_backward", "conv_transpose3d_backward",
]


def conv1d(x: Any, weight: Any, bias: Any = None, stride: IntOrTuple = 1,
           padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
           padding_mode: str = "zeros", algorithm: str = "auto") -> Any:
    """1-d :func:`conv`, equal to ``torch.nn.functional.conv1d``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> npconv.conv1d(np.ones((2, 3, 8)), np.ones((4, 3, 3)), padding="same").shape
    (2, 4, 8)
    """
    return conv_nd(1, x, weight, bias, stride, padding, dilation, groups, padding_mode,
                   algorithm)


def conv2d(x: Any, weight: Any, bias: Any = None, stride: IntOrTuple = 1,
           padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
           padding_mode: str = "zeros", algorithm: str = "auto") -> Any:
    """2-d :func:`conv`, equal to ``torch.nn.functional.conv2d``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> npconv.conv2d(np.ones((2, 3, 8, 8)), np.ones((4, 3, 3, 3)), stride=2).shape
    (2, 4, 3, 3)
    """
    return conv_nd(2, x, weight, bias, stride, padding, dilation, groups, padding_mode,
                   algorithm)


def conv3d(x: Any, weight: Any, bias: Any = None, stride: IntOrTuple = 1,
           padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
           padding_mode: str = "zeros", algorithm: str = "auto") -> Any:
    """3-d :func:`conv`, equal to ``torch.nn.functional.conv3d``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> npconv.conv3d(np.ones((1, 2, 5, 5, 5)), np.ones((4, 2, 3, 3, 3)), padding=1).shape
    (1, 4, 5, 5, 5)
    """
    return conv_nd(3, x, weight, bias, stride, padding, dilation, groups, padding_mode,
                   algorithm)


def conv1d_backward(grad_output: Any, x: Any, weight: Any, stride: IntOrTuple = 1,
                    padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
                    padding_mode: str = "zeros",
                    algorithm: str = "auto") -> tuple[Any, Any, Any]:
    """Gradients of :func:`conv1d`: ``(grad_input, grad_weight, grad_bias)``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> gx, gw, gb = npconv.conv1d_backward(np.ones((2, 4, 6)), np.ones((2, 3, 8)),
    ...                                     np.ones((4, 3, 3)))
    >>> gx.shape, gw.shape, gb.shape
    ((2, 3, 8), (4, 3, 3), (4,))
    """
    return conv_backward_nd(1, grad_output, x, weight, stride, padding, dilation, groups,
                            padding_mode, algorithm)


def conv2d_backward(grad_output: Any, x: Any, weight: Any, stride: IntOrTuple = 1,
                    padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
                    padding_mode: str = "zeros",
                    algorithm: str = "auto") -> tuple[Any, Any, Any]:
    """Gradients of :func:`conv2d`: ``(grad_input, grad_weight, grad_bias)``.

    ``grad_weight`` and ``grad_bias`` are contractions of ``grad_output`` with
    the patch view of ``x`` (and with ones); ``grad_input`` is ``col2im`` of the
    contraction of ``weight`` with ``grad_output`` over the output channels.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x, w = np.ones((2, 3, 8, 8)), np.ones((4, 3, 3, 3))
    >>> gy = np.ones_like(npconv.conv2d(x, w))
    >>> gx, gw, gb = npconv.conv2d_backward(gy, x, w)
    >>> gx.shape, gw.shape, gb.shape
    ((2, 3, 8, 8), (4, 3, 3, 3), (4,))
    """
    return conv_backward_nd(2, grad_output, x, weight, stride, padding, dilation, groups,
                            padding_mode, algorithm)


def conv3d_backward(grad_output: Any, x: Any, weight: Any, stride: IntOrTuple = 1,
                    padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
                    padding_mode: str = "zeros",
                    algorithm: str = "auto") -> tuple[Any, Any, Any]:
    """Gradients of :func:`conv3d`: ``(grad_input, grad_weight, grad_bias)``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> gx, gw, gb = npconv.conv3d_backward(np.ones((1, 4, 3, 3, 3)),
    ...                                     np.ones((1, 2, 5, 5, 5)), np.ones((4, 2, 3, 3, 3)))
    >>> gx.shape, gw.shape
    ((1, 2, 5, 5, 5), (4, 2, 3, 3, 3))
    """
    return conv_backward_nd(3, grad_output, x, weight, stride, padding, dilation, groups,
                            padding_mode, algorithm)


def conv_transpose1d(x: Any, weight: Any, bias: Any = None, stride: IntOrTuple = 1,
                     padding: IntOrTuple = 0, output_padding: IntOrTuple = 0,
                     groups: int = 1, dilation: IntOrTuple = 1, padding_mode: str = "zeros",
                     algorithm: str = "auto") -> Any:
    """1-d :func:`conv_transpose`, equal to ``torch.nn.functional.conv_transpose1d``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> npconv.conv_transpose1d(np.ones((2, 3, 8)), np.ones((3, 4, 3)), stride=2).shape
    (2, 4, 17)
    """
    return conv_transpose_nd(1, x, weight, bias, stride, padding, output_padding, groups,
                             dilation, padding_mode, algorithm)


def conv_transpose2d(x: Any, weight: Any, bias: Any = None, stride: IntOrTuple = 1,
                     padding: IntOrTuple = 0, output_padding: IntOrTuple = 0,
                     groups: int = 1, dilation: IntOrTuple = 1, padding_mode: str = "zeros",
                     algorithm: str = "auto") -> Any:
    """2-d :func:`conv_transpose`, equal to ``torch.nn.functional.conv_transpose2d``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x, w = np.ones((2, 3, 8, 8)), np.ones((3, 4, 3, 3))
    >>> npconv.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1).shape
    (2, 4, 16, 16)
    """
    return conv_transpose_nd(2, x, weight, bias, stride, padding, output_padding, groups,
                             dilation, padding_mode, algorithm)


def conv_transpose3d(x: Any, weight: Any, bias: Any = None, stride: IntOrTuple = 1,
                     padding: IntOrTuple = 0, output_padding: IntOrTuple = 0,
                     groups: int = 1, dilation: IntOrTuple = 1, padding_mode: str = "zeros",
                     algorithm: str = "auto") -> Any:
    """3-d :func:`conv_transpose`, equal to ``torch.nn.functional.conv_transpose3d``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> npconv.conv_transpose3d(np.ones((1, 2, 3, 3, 3)), np.ones((2, 4, 2, 2, 2))).shape
    (1, 4, 4, 4, 4)
    """
    return conv_transpose_nd(3, x, weight, bias, stride, padding, output_padding, groups,
                             dilation, padding_mode, algorithm)


def conv_transpose1d_backward(grad_output: Any, x: Any, weight: Any, stride: IntOrTuple = 1,
                              padding: IntOrTuple = 0, output_padding: IntOrTuple = 0,
                              groups: int = 1, dilation: IntOrTuple = 1,
                              padding_mode: str = "zeros",
                              algorithm: str = "auto") -> tuple[Any, Any, Any]:
    """Gradients of :func:`conv_transpose1d`: ``(grad_input, grad_weight, grad_bias)``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> gx, gw, gb = npconv.conv_transpose1d_backward(np.ones((2, 4, 10)),
    ...                                               np.ones((2, 3, 8)), np.ones((3, 4, 3)))
    >>> gx.shape, gw.shape, gb.shape
    ((2, 3, 8), (3, 4, 3), (4,))
    """
    return conv_transpose_backward_nd(1, grad_output, x, weight, stride, padding,
                                      output_padding, groups, dilation, padding_mode,
                                      algorithm)


def conv_transpose2d_backward(grad_output: Any, x: Any, weight: Any, stride: IntOrTuple = 1,
                              padding: IntOrTuple = 0, output_padding: IntOrTuple = 0,
                              groups: int = 1, dilation: IntOrTuple = 1,
                              padding_mode: str = "zeros",
                              algorithm: str = "auto") -> tuple[Any, Any, Any]:
    """Gradients of :func:`conv_transpose2d`: ``(grad_input, grad_weight, grad_bias)``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x, w = np.ones((2, 3, 8, 8)), np.ones((3, 4, 3, 3))
    >>> gy = np.ones_like(npconv.conv_transpose2d(x, w))
    >>> [a.shape for a in npconv.conv_transpose2d_backward(gy, x, w)]
    [(2, 3, 8, 8), (3, 4, 3, 3), (4,)]
    """
    return conv_transpose_backward_nd(2, grad_output, x, weight, stride, padding,
                                      output_padding, groups, dilation, padding_mode,
                                      algorithm)


def conv_transpose3d_backward(grad_output: Any, x: Any, weight: Any, stride: IntOrTuple = 1,
                              padding: IntOrTuple = 0, output_padding: IntOrTuple = 0,
                              groups: int = 1, dilation: IntOrTuple = 1,
                              padding_mode: str = "zeros",
                              algorithm: str = "auto") -> tuple[Any, Any, Any]:
    """Gradients of :func:`conv_transpose3d`: ``(grad_input, grad_weight, grad_bias)``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> gx, gw, gb = npconv.conv_transpose3d_backward(np.ones((1, 4, 4, 4, 4)),
    ...                                               np.ones((1, 2, 3, 3, 3)),
    ...                                               np.ones((2, 4, 2, 2, 2)))
    >>> gx.shape, gw.shape
    ((1, 2, 3, 3, 3), (2, 4, 2, 2, 2))
    """
    return conv_transpose_backward_nd(3, grad_output, x, weight, stride, padding,
                                      output_padding, groups, dilation, padding_mode,
                                      algorithm)
