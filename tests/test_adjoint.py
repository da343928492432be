"""Adjoint identities (no torch) and the read-only, zero-copy patch view.

For a linear map A and its claimed adjoint A*, <A x, c> = <x, A* c> for all x
and c. This is the cheapest strong test of fold_patches/col2im (including every
padding mode) and of the gradient formulas: in float64 it holds to rounding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npconv
from npconv.testing import conv_configs, random_conv_arrays

ALL_MODES = ("zeros", "reflect", "replicate", "circular")
seeds = st.integers(0, 2**31 - 1)
configs = conv_configs(ndim=(1, 2, 3), padding_modes=ALL_MODES, max_output=3)


def assert_inner_equal(lhs_a, lhs_b, rhs_a, rhs_b, rtol=1e-12):
    """<lhs_a, lhs_b> == <rhs_a, rhs_b> (bilinear, no conjugation), relative to sum|terms|."""
    lhs = np.sum(lhs_a * lhs_b)
    rhs = np.sum(rhs_a * rhs_b)
    scale = np.sum(np.abs(lhs_a * lhs_b)) + np.sum(np.abs(rhs_a * rhs_b)) + 1e-300
    assert abs(lhs - rhs) <= rtol * scale, (lhs, rhs, abs(lhs - rhs) / scale)


def random_like(rng, shape, dtype="float64"):
    a = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * rng.standard_normal(shape)
    return a.astype(dtype)


def geometry_args(cfg):
    return dict(stride=cfg.stride, padding=cfg.padding, dilation=cfg.dilation,
                padding_mode=cfg.padding_mode)


@given(configs, seeds)
def test_fold_patches_is_adjoint_of_patches(cfg, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(cfg.input_shape)
    view = npconv.patches(x, cfg.kernel_size, **geometry_args(cfg))
    c = rng.standard_normal(view.shape)
    folded = npconv.fold_patches(c, cfg.input_size, cfg.kernel_size, **geometry_args(cfg))
    assert folded.shape == x.shape
    assert_inner_equal(view, c, x, folded)


@given(configs, seeds, st.booleans())
def test_col2im_is_adjoint_of_im2col(cfg, seed, unbatched):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(cfg.input_shape[1:] if unbatched else cfg.input_shape)
    kw = dict(kernel_size=cfg.kernel_size, dilation=cfg.dilation, padding=cfg.padding,
              stride=cfg.stride, padding_mode=cfg.padding_mode)
    cols = npconv.im2col(x, **kw)
    assert cols.shape[-2:] == (cfg.in_channels * math.prod(cfg.kernel_size),
                               math.prod(cfg.output_size))
    c = rng.standard_normal(cols.shape)
    back = npconv.col2im(c, cfg.input_size, **kw)
    assert back.shape == x.shape
    assert_inner_equal(cols, c, x, back)


@given(conv_configs(ndim=(1, 2, 3), padding_modes=ALL_MODES, max_output=3, unbatched=True),
       seeds, st.sampled_from(["float64", "complex128"]))
def test_conv_backward_is_adjoint_of_conv(cfg, seed, dtype):
    x, w, _, gy = random_conv_arrays(cfg, dtype, seed, bias=False, grad_output=True)
    kw = cfg.kwargs()
    gx, gw, gb = npconv.conv_backward(gy, x, w, **kw)
    y = npconv.conv(x, w, **kw)
    # y is linear in x and in w: <conj(gy), y> = <conj(gx), x> = <conj(gw), w>
    assert_inner_equal(np.conj(gy), y, np.conj(gx), x)
    assert_inner_equal(np.conj(gy), y, np.conj(gw), w)
    ones = np.ones(cfg.bias_shape, dtype=dtype)
    yb = npconv.conv(x, w, ones, **kw) - y  # the bias map applied to ones
    assert_inner_equal(np.conj(gy), yb, np.conj(gb), ones)


@given(conv_configs(ndim=(1, 2, 3), transposed=True, max_output=3, unbatched=True), seeds,
       st.sampled_from(["float64", "complex128"]))
def test_conv_transpose_backward_is_adjoint(cfg, seed, dtype):
    x, w, _, gy = random_conv_arrays(cfg, dtype, seed, bias=False, grad_output=True)
    kw = cfg.kwargs()
    y = npconv.conv_transpose(x, w, **kw)
    gx, gw, _ = npconv.conv_transpose_backward(gy, x, w, **kw)
    assert_inner_equal(np.conj(gy), y, np.conj(gx), x)
    assert_inner_equal(np.conj(gy), y, np.conj(gw), w)


@given(conv_configs(ndim=(1, 2, 3), max_output=3, allow_same=False), seeds,
       st.sampled_from(["float64", "complex128"]))
def test_conv_transpose_is_transpose_of_conv(cfg, seed, dtype):
    """conv_transpose(z, w) with the matching output_padding is the transpose of conv(., w)."""
    x, w, _, z = random_conv_arrays(cfg, dtype, seed, bias=False, grad_output=True)
    kw = dict(stride=cfg.stride, padding=cfg.padding, dilation=cfg.dilation, groups=cfg.groups)
    full = [(o - 1) * s - 2 * p + d * (k - 1) + 1 for o, s, p, d, k in zip(
        cfg.output_size, cfg.stride, cfg.padding, cfg.dilation, cfg.kernel_size)]
    output_padding = tuple(n - f for n, f in zip(cfg.input_size, full))
    assert all(0 <= op < s for op, s in zip(output_padding, cfg.stride))
    xt = npconv.conv_transpose(z, w, output_padding=output_padding, **kw)
    assert xt.shape == x.shape
    assert_inner_equal(npconv.conv(x, w, **kw), z, x, xt)


# --------------------------------------------------------------------------- the patch view


@given(conv_configs(ndim=(1, 2, 3), padding_modes=ALL_MODES, max_output=3), seeds)
def test_patches_view_is_read_only(cfg, seed):
    x = np.random.default_rng(seed).standard_normal(cfg.input_shape)
    view = npconv.patches(x, cfg.kernel_size, **geometry_args(cfg))
    assert not view.flags.writeable
    with pytest.raises(ValueError):
        view[(0,) * view.ndim] = 1.0
    with pytest.raises(ValueError):
        view += 1.0


@given(conv_configs(ndim=(1, 2, 3), max_output=3, max_padding=0, allow_same=False,
                    padding_modes=ALL_MODES), seeds)
def test_patches_without_padding_share_memory(cfg, seed):
    x = np.random.default_rng(seed).standard_normal(cfg.input_shape)
    before = x.copy()
    view = npconv.patches(x, cfg.kernel_size, **geometry_args(cfg))
    assert np.shares_memory(view, x)
    x[(0,) * x.ndim] += 1.0  # the view follows its base
    assert view[(0,) * view.ndim] == x[(0,) * x.ndim]
    x[(0,) * x.ndim] = before[(0,) * x.ndim]
    valid = npconv.patches(x, cfg.kernel_size, stride=cfg.stride, padding="valid",
                           dilation=cfg.dilation)
    assert np.shares_memory(valid, x)
    np.testing.assert_array_equal(valid, view)


LAYOUTS = {
    "contiguous": lambda a: a,
    "fortran": np.asfortranarray,
    "reversed": lambda a: a[:, :, ::-1, ::-1],  # negative strides
    "every other column": lambda a: np.repeat(a, 2, axis=-1)[..., ::2],
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("stride, dilation", [(1, 1), (2, 1), (1, 2)])
def test_patches_of_any_memory_layout_read_the_right_pixels(layout, stride, dilation):
    # NumPy's sliding_window_view, windows of the dilated extent, is the independent oracle
    x = LAYOUTS[layout](np.arange(2 * 3 * 7 * 6, dtype=np.float64).reshape(2, 3, 7, 6))
    k = (3, 2)
    extent = tuple(dilation * (n - 1) + 1 for n in k)
    windows = np.lib.stride_tricks.sliding_window_view(x, extent, axis=(2, 3))
    expected = windows[:, :, ::stride, ::stride, ::dilation, ::dilation].transpose(
        0, 1, 4, 5, 2, 3)
    view = npconv.patches(x, k, stride=stride, dilation=dilation)
    assert view.dtype == x.dtype and not view.flags.writeable
    np.testing.assert_array_equal(view, expected)
    assert np.shares_memory(view, x)


def test_patches_with_padding_do_not_touch_the_input():
    x = np.arange(2 * 3 * 5 * 4, dtype=np.float64).reshape(2, 3, 5, 4)
    before = x.copy()
    for mode in ALL_MODES:
        view = npconv.patches(x, (3, 2), padding=1, padding_mode=mode)
        assert not np.shares_memory(view, x)
        assert not view.flags.writeable
    np.testing.assert_array_equal(x, before)


def test_fold_patches_counts_overlaps_in_3d():
    ones = np.ones((1, 1, 2, 2, 2, 3, 3, 3))
    counts = npconv.fold_patches(ones, (4, 4, 4), 2)
    per_axis = np.array([1, 2, 2, 1])
    expected = per_axis[:, None, None] * per_axis[None, :, None] * per_axis[None, None, :]
    np.testing.assert_array_equal(counts[0, 0], expected)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_transposed_convolution_with_a_padding_mode_is_the_adjoint(mode, stride, nd):
    """<conv(x), v> = <x, conv_transpose(v)> with the same padding mode (torch refuses
    these modes for transposed convolution), and conv_transpose is conv_backward's
    grad input."""
    rng = np.random.default_rng(10 * nd + stride)
    size = (7, 6, 5)[:nd]
    x = rng.standard_normal((2, 4) + size)
    w = rng.standard_normal((6, 2) + (3,) * nd)  # groups=2
    kw = dict(stride=stride, padding=1, groups=2, padding_mode=mode)
    y = npconv.conv(x, w, **kw)
    v = rng.standard_normal(y.shape)
    # conv_transpose's weight is (C_in of the transpose, C_out / g, *k): w as given
    xt = npconv.conv_transpose(v, w, stride=stride, padding=1, groups=2, padding_mode=mode,
                               output_padding=tuple(
                                   (n + 2 - 3) % stride for n in size))
    assert xt.shape == x.shape
    lhs, rhs = np.vdot(y, v), np.vdot(x, xt)
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))
    gx, _, _ = npconv.conv_backward(v, x, w, **kw)
    np.testing.assert_allclose(xt, gx, rtol=1e-12, atol=1e-12)
