"""``npconv.reference`` (``algorithm='reference'``) equals PyTorch: torch is its oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import npconv
from npconv.testing import PADDING_MODES, assert_close, conv_configs, random_conv_arrays

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _torch_conv(config, x, w, b):
    """torch's convolution of x padded first (as nn.ConvNd does for padding modes), so
    that every padding spelling (ints, 'same', 'same_upper', 'valid') is compared."""
    pads = [v for lo, hi in reversed(config.pads) for v in (lo, hi)]
    mode = "constant" if config.padding_mode == "zeros" else config.padding_mode
    return CONV[config.ndim](F.pad(x, pads, mode=mode), w, b, config.stride, 0,
                             config.dilation, config.groups)


@given(config=conv_configs(ndim=(1, 2, 3), min_batch=1, max_batch=3, max_channels=4,
                           padding_modes=PADDING_MODES, max_output=5),
       dtype=st.sampled_from(["float64", "complex128"]))
def test_reference_convolution_and_gradients_equal_torch(config, dtype):
    x, w, b, gy = random_conv_arrays(config, dtype, seed=2, grad_output=True)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = _torch_conv(config, tx, tw, tb)
    ty.backward(torch.tensor(gy))
    kw = config.kwargs()
    y = npconv.conv(x, w, b, **kw, algorithm="reference")
    assert_close(y, ty.detach().numpy(), reduction=config.reduction_size)
    gx, gw, gb = npconv.conv_backward(gy, x, w, **kw, algorithm="reference")
    out = config.batch * int(np.prod(config.output_size))
    assert_close(gx, tx.grad.numpy(), reduction=config.reduction_size)
    assert_close(gw, tw.grad.numpy(), reduction=out)
    assert_close(gb, tb.grad.numpy(), reduction=out)


@given(config=conv_configs(ndim=(1, 2, 3), transposed=True, max_channels=4, max_batch=2),
       dtype=st.sampled_from(["float64", "complex128"]))
def test_reference_transposed_convolution_equals_torch(config, dtype):
    x, w, b, gy = random_conv_arrays(config, dtype, seed=3, grad_output=True)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = CONV_T[config.ndim](tx, tw, tb, config.stride, config.padding, config.output_padding,
                             config.groups, config.dilation)
    ty.backward(torch.tensor(gy))
    kw = config.kwargs()
    y = npconv.conv_transpose(x, w, b, **kw, algorithm="reference")
    red = max(1, config.reduction_size)
    assert_close(y, ty.detach().numpy(), reduction=red)
    grads = npconv.conv_transpose_backward(gy, x, w, **kw, algorithm="reference")
    for got, want in zip(grads, (tx.grad, tw.grad, tb.grad)):
        assert_close(got, want.numpy(), reduction=red * 8)


@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_reference_padding_is_a_linear_map_with_its_adjoint(mode, nd):
    """<P x, v> = <x, P^T v>: pad and unpad are adjoint for every mode."""
    from npconv import reference
    from npconv.geometry import ConvGeometry

    rng = np.random.default_rng(nd)
    size = (5, 4, 3)[:nd]
    geometry = ConvGeometry.build(size, 3, 1, 2, 1, mode)
    x = rng.standard_normal((2, 3) + size)
    v = rng.standard_normal((2, 3) + geometry.padded_size)
    lhs = np.vdot(reference.pad(x, geometry), v)
    rhs = np.vdot(x, reference.unpad(v, geometry))
    assert abs(lhs - rhs) < 1e-12 * max(1.0, abs(lhs))
