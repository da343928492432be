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

from .arrays import conv_arrays, conv_problems, random_conv_arrays
from .checks import assert_close, check_grad
from .configs import PADDING_MODES, ConvConfig, conv_configs

__all__ = [
    "PADDING_MODES",
    "ConvConfig",
    "assert_close",
    "check_grad",
    "conv_arrays",
    "conv_configs",
    "conv_problems",
    "random_conv_arrays",
]
