"""im2col/col2im against torch: F.unfold/F.fold in 2-d, identity convolutions in 1/2/3-d.

im2col copies values, so it must match torch *exactly*. col2im sums
overlapping windows; the order of the additions may differ from torch's, so it
is compared with a tight dtype-aware tolerance.
"""

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

ALL_MODES = ("zeros", "reflect", "replicate", "circular")
TORCH_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
                  "circular": "circular"}
real_dtypes = st.sampled_from(["float32", "float64"])
seeds = st.integers(0, 2**31 - 1)


def to_torch(a):
    return torch.from_numpy(np.array(a))  # a copy: torch never sees npconv's memory


def torch_pad(t, cfg: ConvConfig):
    """Pad the spatial axes of a batched tensor as npconv pads them (F.pad: last axis first)."""
    widths = [w for lo_hi in reversed(cfg.pads) for w in lo_hi]
    if not any(widths):
        return t
    return F.pad(t, widths, mode=TORCH_PAD_MODE[cfg.padding_mode])


def identity_kernel(cfg: ConvConfig, dtype):
    """(K, 1, *k) one-hot kernels: a convolution with them extracts every tap."""
    kvol = math.prod(cfg.kernel_size)
    return torch.eye(kvol, dtype=dtype).reshape((kvol, 1) + cfg.kernel_size)


def torch_im2col(x, cfg: ConvConfig):
    """Reference im2col for 1/2/3-d: pad, then convolve each channel with one-hot kernels."""
    conv = (F.conv1d, F.conv2d, F.conv3d)[cfg.ndim - 1]
    batched = x.ndim == cfg.ndim + 2
    t = to_torch(x if batched else x[None])
    n, c = t.shape[:2]
    padded = torch_pad(t.reshape((n * c, 1) + t.shape[2:]), cfg)
    y = conv(padded, identity_kernel(cfg, t.dtype), stride=cfg.stride, dilation=cfg.dilation)
    cols = y.reshape(n, c * math.prod(cfg.kernel_size), -1).numpy()
    return cols if batched else cols[0]


def torch_col2im(cols, cfg: ConvConfig):
    """Reference col2im: the vector-Jacobian product of torch's im2col (any mode, any rank)."""
    conv = (F.conv1d, F.conv2d, F.conv3d)[cfg.ndim - 1]
    batched = cols.ndim == 3
    g = to_torch(cols if batched else cols[None])
    n, c = g.shape[0], g.shape[1] // math.prod(cfg.kernel_size)
    x = torch.zeros((n * c, 1) + cfg.input_size, dtype=g.dtype, requires_grad=True)
    y = conv(torch_pad(x, cfg), identity_kernel(cfg, g.dtype), stride=cfg.stride,
             dilation=cfg.dilation)
    (grad,) = torch.autograd.grad(y, x, g.reshape(y.shape))
    out = grad.reshape((n, c) + cfg.input_size).numpy()
    return out if batched else out[0]


def unfold_args(cfg: ConvConfig):
    return dict(kernel_size=cfg.kernel_size, dilation=cfg.dilation, padding=cfg.padding,
                stride=cfg.stride, padding_mode=cfg.padding_mode)


def col_shape(cfg: ConvConfig):
    rows = cfg.in_channels * math.prod(cfg.kernel_size)
    lead = (cfg.batch, rows) if cfg.batched else (rows,)
    return lead + (math.prod(cfg.output_size),)


configs_2d = conv_configs(ndim=2, groups=False, allow_same=False, unbatched=True, max_batch=2,
                          max_channels=3)


# --------------------------------------------------------------------------- F.unfold / F.fold


@given(configs_2d, real_dtypes, seeds)
def test_im2col_equals_unfold(cfg, dtype, seed):
    x, _, _ = random_conv_arrays(cfg, dtype, seed, bias=False)
    p = cfg.padding
    expected = F.unfold(to_torch(x), cfg.kernel_size, cfg.dilation, p, cfg.stride).numpy()
    got = npconv.im2col(x, cfg.kernel_size, dilation=cfg.dilation, padding=p, stride=cfg.stride)
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got, expected)


@given(configs_2d, real_dtypes, seeds)
def test_col2im_equals_fold(cfg, dtype, seed):
    rng = np.random.default_rng(seed)
    cols = rng.uniform(-1, 1, col_shape(cfg)).astype(dtype)
    p = cfg.padding
    expected = F.fold(to_torch(cols), cfg.input_size, cfg.kernel_size, cfg.dilation, p,
                      cfg.stride).numpy()
    got = npconv.col2im(cols, cfg.input_size, cfg.kernel_size, dilation=cfg.dilation,
                        padding=p, stride=cfg.stride)
    assert got.dtype == cols.dtype
    assert_close(got, expected, reduction=math.prod(cfg.kernel_size))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_unfold_fold_int_arguments_and_defaults(dtype):
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 7, 6)).astype(dtype)
    for kw in ({}, {"dilation": 2}, {"padding": 1}, {"stride": 2}, {"padding": 2, "stride": 3}):
        got = npconv.im2col(x, 3, **kw)
        np.testing.assert_array_equal(got, F.unfold(to_torch(x), 3, **kw).numpy())
        back = npconv.col2im(got, (7, 6), 3, **kw)
        assert_close(back, F.fold(to_torch(got), (7, 6), 3, **kw).numpy(), reduction=9)


def test_fold_of_unfold_counts_windows():
    x = np.ones((1, 1, 5, 5))
    counts = npconv.col2im(npconv.im2col(x, 3, padding=1), (5, 5), 3, padding=1)
    expected = F.fold(F.unfold(torch.ones(1, 1, 5, 5, dtype=torch.float64), 3, padding=1),
                      (5, 5), 3, padding=1).numpy()
    np.testing.assert_array_equal(counts, expected)


# --------------------------------------------------------------------------- any rank, any mode

configs_nd = conv_configs(ndim=(1, 2, 3), groups=False, padding_modes=ALL_MODES, unbatched=True,
                          max_channels=2, max_output=3, allow_same_upper=True)


@given(configs_nd, real_dtypes, seeds)
def test_im2col_nd_equals_identity_convolution(cfg, dtype, seed):
    x, _, _ = random_conv_arrays(cfg, dtype, seed, bias=False)
    before = x.copy()
    got = npconv.im2col(x, **unfold_args(cfg))
    np.testing.assert_array_equal(got, torch_im2col(x, cfg))
    np.testing.assert_array_equal(x, before)


@given(configs_nd, real_dtypes, seeds)
def test_im2col_into_out_equals_torch(cfg, dtype, seed):
    """Every element of ``out`` is written (it starts as NaN), and ``out`` is returned."""
    x, _, _ = random_conv_arrays(cfg, dtype, seed, bias=False)
    before = x.copy()
    out = np.full(col_shape(cfg), np.nan, dtype=dtype)
    got = npconv.im2col(x, **unfold_args(cfg), out=out)
    assert got is out
    np.testing.assert_array_equal(out, torch_im2col(x, cfg))
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize(
    "shape, kw, dtype",
    [
        ((2, 3, 5, 4), dict(kernel_size=1), "float64"),  # the columns are x: one copy
        ((4, 64, 8, 8), dict(kernel_size=3, padding=1), "float32"),  # gathered: short rows
        ((2, 16, 32, 32), dict(kernel_size=3, padding=1), "float32"),  # copied by planes
        ((8, 16, 64, 64), dict(kernel_size=3, padding=1), "float64"),  # split over threads
        ((2, 8, 40, 40), dict(kernel_size=3, stride=2, dilation=2), "float64"),  # the view
        ((3, 20, 20), dict(kernel_size=3, padding=2), "float32"),  # unbatched
    ],
)
def test_im2col_into_out_on_large_calls_equals_unfold(shape, kw, dtype):
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    out = np.full(npconv.im2col(x, **kw).shape, np.nan, dtype=dtype)
    assert npconv.im2col(x, **kw, out=out) is out
    np.testing.assert_array_equal(out, F.unfold(torch.from_numpy(x), **kw).numpy())


@given(configs_nd, real_dtypes, seeds)
def test_col2im_nd_equals_torch_vjp(cfg, dtype, seed):
    cols = np.random.default_rng(seed).uniform(-1, 1, col_shape(cfg)).astype(dtype)
    before = cols.copy()
    got = npconv.col2im(cols, cfg.input_size, **unfold_args(cfg))
    np.testing.assert_array_equal(cols, before)
    # replicate padding can pile many windows onto an edge pixel
    reduction = math.prod(cfg.kernel_size) * math.prod(n + 2 * 2 for n in cfg.output_size)
    assert_close(got, torch_col2im(cols, cfg), reduction=reduction)


@given(configs_nd, seeds)
def test_col2im_in_small_blocks_and_several_passes(cfg, seed):
    """With a one-byte workspace limit the fold walks one image at a time and sums its
    slabs one pass each: the result must not change."""
    cols = np.random.default_rng(seed).uniform(-1, 1, col_shape(cfg))
    whole = npconv.col2im(cols, cfg.input_size, **unfold_args(cfg))
    saved = npconv.get_workspace_limit()
    npconv.set_workspace_limit(1)
    try:
        blocked = npconv.col2im(cols, cfg.input_size, **unfold_args(cfg))
    finally:
        npconv.set_workspace_limit(saved)
    assert_close(blocked, whole, reduction=math.prod(cfg.kernel_size))
    assert_close(blocked, torch_col2im(cols, cfg), reduction=math.prod(cfg.kernel_size)
                 * math.prod(n + 4 for n in cfg.output_size))


@given(configs_nd, seeds)
def test_patches_view_equals_im2col(cfg, seed):
    x, _, _ = random_conv_arrays(cfg, "float64", seed, bias=False)
    if not cfg.batched:
        x = x[None]
    view = npconv.patches(x, cfg.kernel_size, **cfg.patch_kwargs())
    assert view.shape == x.shape[:2] + cfg.kernel_size + cfg.output_size
    np.testing.assert_array_equal(view.reshape(x.shape[0], -1, math.prod(cfg.output_size)),
                                  torch_im2col(x, cfg))


@pytest.mark.parametrize(
    "shape, kw",
    [
        ((2, 3, 5, 4), dict(kernel_size=3)),
        ((2, 3, 5, 4), dict(kernel_size=2, padding=1)),
        # contiguous patch views (1x1 kernels, a kernel covering the whole input) must be
        # copied too: a regression test for im2col once returning a read-only view of x
        ((2, 3, 5, 4), dict(kernel_size=1)),
        ((1, 2, 3, 3), dict(kernel_size=3)),
        ((2, 4), dict(kernel_size=(1,))),
    ],
)
def test_im2col_returns_a_new_writable_array(shape, kw):
    x = np.random.default_rng(0).standard_normal(shape)
    before = x.copy()
    cols = npconv.im2col(x, **kw)
    assert cols.flags.c_contiguous
    assert not np.shares_memory(cols, x)
    cols[...] = 0.0
    np.testing.assert_array_equal(x, before)


# --------------------------------------------------------------------------- keyword-only, unbatched


def test_geometry_is_keyword_only():
    """torch's unfold takes (kernel_size, dilation, padding, stride) and patches took
    (kernel_size, stride, padding, dilation): positional geometry is refused."""
    x = np.ones((1, 1, 6, 6))
    for call in (lambda: npconv.im2col(x, 3, 2), lambda: npconv.patches(x, 3, 2),
                 lambda: npconv.col2im(np.ones((1, 9, 16)), (6, 6), 3, 1),
                 lambda: npconv.fold_patches(np.ones((1, 1, 3, 3, 4, 4)), (6, 6), 3, 1)):
        with pytest.raises(TypeError, match="positional argument"):
            call()


@given(configs_nd, seeds)
def test_unbatched_patches_and_fold_patches(cfg, seed):
    """(C, *spatial) works like (1, C, *spatial) without the batch axis, in any rank."""
    x, _, _ = random_conv_arrays(cfg, "float64", seed, bias=False)
    x = x[0] if cfg.batched else x
    view = npconv.patches(x, cfg.kernel_size, **cfg.patch_kwargs())
    batched = npconv.patches(x[None], cfg.kernel_size, **cfg.patch_kwargs())
    assert view.shape == batched.shape[1:] and not view.flags.writeable
    np.testing.assert_array_equal(view, batched[0])
    g = np.random.default_rng(seed).uniform(-1, 1, view.shape)
    folded = npconv.fold_patches(g, cfg.input_size, cfg.kernel_size, **cfg.patch_kwargs())
    np.testing.assert_array_equal(
        folded, npconv.fold_patches(g[None], cfg.input_size, cfg.kernel_size,
                                    **cfg.patch_kwargs())[0])


def test_int_kernel_size_means_two_spatial_dims():
    x = np.arange(2 * 5 * 6.0).reshape(2, 5, 6)  # unbatched 2-d (C, H, W), as conv2d reads it
    assert npconv.patches(x, 3).shape == (2, 3, 3, 3, 4)
    np.testing.assert_array_equal(npconv.patches(x, 3), npconv.patches(x, (3, 3)))
    assert npconv.patches(x, (3,)).shape == (2, 5, 3, 4)  # a tuple asks for batched 1-d
    with pytest.raises(ValueError, match="an int kernel_size means 2 spatial dims"):
        npconv.patches(x[None, None], 3)


# --------------------------------------------------------------------------- int and bool


@given(configs_nd, st.sampled_from(["int64", "int32", "uint8", "int8"]), seeds)
def test_integer_im2col_col2im_equal_torch_in_float(cfg, dtype, seed):
    """torch's unfold refuses integers (pytorch#44989); npconv moves them exactly."""
    x = np.random.default_rng(seed).integers(0, 100, cfg.input_shape).astype(dtype)
    cols = npconv.im2col(x, **unfold_args(cfg))
    assert cols.dtype == x.dtype
    np.testing.assert_array_equal(cols, torch_im2col(x.astype(np.float64), cfg).astype(dtype))
    back = npconv.col2im(cols, cfg.input_size, **unfold_args(cfg))
    assert back.dtype == x.dtype
    # torch's float64 sums are exact here; npconv's sums wrap around modulo 2**bits in
    # the input dtype, as the exact sums cast through int64 do
    expected = torch_col2im(cols.astype(np.float64), cfg)
    np.testing.assert_array_equal(back, expected.astype(np.int64).astype(dtype))
    view = npconv.patches(x, cfg.kernel_size, **cfg.patch_kwargs())
    assert view.dtype == x.dtype


def test_im2col_of_int64_equals_torch_unfold_cast_back():
    x = np.random.default_rng(0).integers(-10**12, 10**12, (2, 3, 7, 6))
    cols = npconv.im2col(x, (3, 2), dilation=(1, 2), padding=1, stride=(2, 1))
    assert cols.dtype == np.int64
    # float64 holds these integers exactly, so the cast back is exact
    expected = F.unfold(to_torch(x.astype(np.float64)), (3, 2), (1, 2), 1, (2, 1)).numpy()
    np.testing.assert_array_equal(cols, expected.astype(np.int64))


def test_col2im_of_int32_keeps_int32_and_wraps_like_numpy():
    cols = np.ones((1, 9, 16), dtype=np.int32)
    counts = npconv.col2im(cols, (6, 6), 3)
    assert counts.dtype == np.int32
    expected = F.fold(to_torch(cols.astype(np.float64)), (6, 6), 3).numpy().astype(np.int32)
    np.testing.assert_array_equal(counts, expected)
    # the sums stay in int32: 4 windows of 2**30 on the centre pixel wrap 2**32 to 0
    overlap = npconv.col2im(np.full((1, 4, 4), 2**30, dtype=np.int32), (3, 3), 2)
    assert overlap.dtype == np.int32
    assert overlap[0, 0, 1, 1] == 0 and overlap[0, 0, 0, 0] == 2**30


@pytest.mark.parametrize("mode", ALL_MODES)
def test_bool_patches_are_bool_and_fold_is_a_logical_or(mode):
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 6, 5)) < 0.3
    kw = dict(stride=(2, 1), padding=1, dilation=(1, 2), padding_mode=mode)
    view = npconv.patches(x, (3, 2), **kw)
    assert view.dtype == np.bool_
    np.testing.assert_array_equal(view, npconv.patches(x.astype(np.float64), (3, 2), **kw) > 0)
    cols = npconv.im2col(x, (3, 2), **kw)
    assert cols.dtype == np.bool_
    g = rng.random(view.shape) < 0.2
    folded = npconv.fold_patches(g, (6, 5), (3, 2), **kw)
    assert folded.dtype == np.bool_
    counts = npconv.fold_patches(g.astype(np.int64), (6, 5), (3, 2), **kw)
    np.testing.assert_array_equal(folded, counts > 0)
    assert folded.any() and not folded.all()


# --------------------------------------------------------------------------- 'same_upper'


def tf_same_pads(n, k, s, d):
    """TensorFlow/JAX 'SAME': out = ceil(n / s), total pad as the rule says, extra high."""
    out = -(-n // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
    return total // 2, total - total // 2


@given(st.integers(1, 3), st.data())
def test_same_upper_follows_the_tensorflow_rule(nd, data):
    sizes = data.draw(st.tuples(*[st.integers(1, 9)] * nd))
    kernel = data.draw(st.tuples(*[st.integers(1, 4)] * nd))
    stride = data.draw(st.tuples(*[st.integers(1, 3)] * nd))
    dilation = data.draw(st.tuples(*[st.integers(1, 2)] * nd))
    x = np.random.default_rng(0).standard_normal((2, 3) + sizes)
    pads = [tf_same_pads(*a) for a in zip(sizes, kernel, stride, dilation)]
    w = np.random.default_rng(1).standard_normal((4, 3) + kernel)
    y = npconv.conv(x, w, stride=stride, dilation=dilation, padding="same_upper")
    assert y.shape[2:] == tuple(-(-n // s) for n, s in zip(sizes, stride))
    # torch with the same pads written out: F.pad (last axis first), then a valid conv
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    padded = F.pad(to_torch(x), [p for lo_hi in reversed(pads) for p in lo_hi])
    expected = conv(padded, to_torch(w), stride=stride, dilation=dilation).numpy()
    assert_close(y, expected, reduction=3 * math.prod(kernel))
    view = npconv.patches(x, kernel, stride=stride, dilation=dilation, padding="same_upper")
    assert view.shape[2 + nd:] == y.shape[2:]


def test_same_upper_by_hand_and_same_at_stride_one():
    from npconv.geometry import resolve_padding

    # in 7, k 3, s 2: out 4, total (4-1)*2 + 3 - 7 = 2 -> (1, 1)
    assert resolve_padding("same_upper", (3,), (2,), (1,), in_size=(7,)) == ((1, 1),)
    # in 6, k 3, s 2: out 3, total 2*2 + 3 - 6 = 1 -> (0, 1), the extra on the high side
    assert resolve_padding("same_upper", (3,), (2,), (1,), in_size=(6,)) == ((0, 1),)
    # in 5, k 1, s 3: out 2, total 3 + 1 - 5 < 0 -> no padding
    assert resolve_padding("same_upper", (1,), (3,), (1,), in_size=(5,)) == ((0, 0),)
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 7))
    w = np.random.default_rng(1).standard_normal((3, 2, 4, 3))
    np.testing.assert_array_equal(npconv.conv2d(x, w, padding="same_upper", dilation=2),
                                  npconv.conv2d(x, w, padding="same", dilation=2))
    with pytest.raises(ValueError, match="padding='same' is not supported for strided .*"
                                         "padding='same_upper'"):
        npconv.conv2d(x, w, padding="same", stride=2)
    layer = npconv.nn.Conv2d(2, 3, 3, stride=2, padding="same_upper", rng=0, dtype="float64")
    assert layer(x).shape == (1, 3, 3, 4)
