"""conv_transpose1d/2d/3d and their *_backward against torch (F.conv_transposeNd and autograd)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch  # the reference: without it these tests must fail, not skip
from hypothesis import given
from hypothesis import strategies as st

import npconv
from npconv.testing import ConvConfig, assert_close, conv_configs, random_conv_arrays

F = torch.nn.functional

FIXED = {
    1: (npconv.conv_transpose1d, npconv.conv_transpose1d_backward),
    2: (npconv.conv_transpose2d, npconv.conv_transpose2d_backward),
    3: (npconv.conv_transpose3d, npconv.conv_transpose3d_backward),
}
real_dtypes = st.sampled_from(["float32", "float64"])
seeds = st.integers(0, 2**31 - 1)


def to_torch(a, grad=False):
    return torch.from_numpy(np.array(a)).requires_grad_(grad)


def torch_transpose(cfg: ConvConfig, x, w, b, gy):
    fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[cfg.ndim - 1]
    tx, tw = to_torch(x, True), to_torch(w, True)
    tb = None if b is None else to_torch(b, True)
    y = fn(tx, tw, tb, **cfg.kwargs())
    want = [tx, tw] + ([tb] if tb is not None else [])
    grads = torch.autograd.grad(y, want, to_torch(gy))
    gb = grads[2].numpy() if tb is not None else None
    return y.detach().numpy(), grads[0].numpy(), grads[1].numpy(), gb


def check_transpose(cfg: ConvConfig, x, w, b, gy, fixed_rank=True):
    before = [None if a is None else a.copy() for a in (x, w, b, gy)]
    forward, backward = (
        FIXED[cfg.ndim] if fixed_rank else (npconv.conv_transpose, npconv.conv_transpose_backward)
    )
    y = forward(x, w, b, **cfg.kwargs())
    gx, gw, gb = backward(gy, x, w, **cfg.kwargs())
    ty, tgx, tgw, tgb = torch_transpose(cfg, x, w, b, gy)
    kvol = math.prod(cfg.kernel_size)
    out_vol = cfg.batch * math.prod(cfg.output_size)
    assert y.shape == cfg.output_shape
    assert y.dtype == gx.dtype == gw.dtype == gb.dtype == x.dtype
    assert_close(y, ty, reduction=cfg.reduction_size + 1, err_msg="output")
    assert_close(gx, tgx, reduction=cfg.out_channels // cfg.groups * kvol, err_msg="grad_input")
    assert_close(gw, tgw, reduction=out_vol, err_msg="grad_weight")
    if tgb is not None:
        assert_close(gb, tgb, reduction=out_vol, err_msg="grad_bias")
    for a, a0 in zip((x, w, b, gy), before):
        if a is not None:
            np.testing.assert_array_equal(a, a0, err_msg="an input was modified")


@given(conv_configs(ndim=(1, 2, 3), transposed=True, unbatched=True, max_output=3), real_dtypes,
       seeds, st.booleans())
def test_conv_transpose_matches_torch(cfg, dtype, seed, bias):
    x, w, b, gy = random_conv_arrays(cfg, dtype, seed, bias=bias, grad_output=True)
    check_transpose(cfg, x, w, b, gy)


@given(conv_configs(ndim=2, transposed=True, max_channels=6, max_kernel=4, max_stride=3,
                    max_dilation=3, max_padding=3, max_output=4), real_dtypes, seeds)
def test_conv_transpose2d_wider_ranges_match_torch(cfg, dtype, seed):
    x, w, b, gy = random_conv_arrays(cfg, dtype, seed, grad_output=True)
    check_transpose(cfg, x, w, b, gy)


@given(conv_configs(ndim=(1, 2, 3), transposed=True, min_batch=0, max_batch=1, max_output=3),
       seeds)
def test_generic_and_empty_batch(cfg, seed):
    x, w, b, gy = random_conv_arrays(cfg, "float64", seed, grad_output=True)
    check_transpose(cfg, x, w, b, gy, fixed_rank=False)


@given(conv_configs(ndim=(1, 2), transposed=True, unbatched=True, max_output=3), seeds,
       st.booleans())
def test_complex128_matches_torch(cfg, seed, bias):
    x, w, b, gy = random_conv_arrays(cfg, "complex128", seed, bias=bias, grad_output=True)
    check_transpose(cfg, x, w, b, gy)


def tcfg(x_shape, w_shape, groups=1, **kw):
    nd = len(w_shape) - 2
    tup = lambda v: (v,) * nd if isinstance(v, int) else tuple(v)  # noqa: E731
    batched = len(x_shape) == nd + 2
    return ConvConfig(
        batch=x_shape[0] if batched else 1, in_channels=w_shape[0],
        out_channels=w_shape[1] * groups, groups=groups, input_size=tuple(x_shape[-nd:]),
        kernel_size=tuple(w_shape[2:]), stride=tup(kw.get("stride", 1)),
        padding=tup(kw.get("padding", 0)), dilation=tup(kw.get("dilation", 1)),
        output_padding=tup(kw.get("output_padding", 0)), transposed=True, batched=batched,
    )


EXPLICIT = [
    # output_padding >= stride is allowed while it is < dilation
    ((2, 3, 4), (3, 2, 3), dict(stride=1, dilation=2, output_padding=1)),
    ((1, 2, 3, 4), (2, 3, 3, 2), dict(stride=(1, 2), dilation=(3, 1), output_padding=(2, 1))),
    ((1, 2, 3, 3, 2), (2, 1, 2, 2, 3), dict(stride=(2, 1, 1), dilation=(1, 3, 2),
                                            output_padding=(1, 2, 1))),
    ((2, 4, 5, 5), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1, groups=2)),
    ((2, 6, 4, 3), (6, 1, 2, 3), dict(stride=(3, 2), padding=(0, 2), groups=6)),  # depthwise
    ((3, 4, 5), (4, 5, 1), dict()),  # 1x1
    ((4, 3, 3), (4, 2, 3, 3), dict(stride=2, output_padding=1)),  # unbatched
    ((0, 2, 3, 3), (2, 2, 3, 3), dict(stride=2)),  # empty batch
]


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex128"])
@pytest.mark.parametrize("x_shape, w_shape, kw", EXPLICIT)
def test_explicit_configurations(x_shape, w_shape, kw, dtype):
    cfg = tcfg(x_shape, w_shape, **kw)
    assert cfg.input_shape == x_shape and cfg.weight_shape == w_shape
    x, w, b, gy = random_conv_arrays(cfg, dtype, 5, grad_output=True)
    check_transpose(cfg, x, w, b, gy)


def test_output_padding_at_least_stride_and_dilation_is_rejected_like_torch():
    x, w = np.ones((1, 1, 4)), np.ones((1, 1, 3))
    with pytest.raises(RuntimeError):
        F.conv_transpose1d(to_torch(x), to_torch(w), stride=2, dilation=2, output_padding=2)
    with pytest.raises(ValueError, match="output_padding"):
        npconv.conv_transpose1d(x, w, stride=2, dilation=2, output_padding=2)
