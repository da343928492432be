"""Max and average pooling, forward and backward, against torch (1-3-d, every option)."""

from __future__ import annotations

import numpy as np
import pytest
import torch  # the reference: without it these tests must fail, not skip
from hypothesis import given
from hypothesis import strategies as st

import npconv
import npconv.nn as nn
from npconv.testing import assert_close

F = torch.nn.functional
MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
seeds = st.integers(0, 2**31 - 1)


@st.composite
def pool_cases(draw, average=False):
    """(x shape, kwargs) of a valid pooling call: kernel, stride, padding <= kernel // 2,
    dilation (max only), ceil_mode, and an input size that leaves an output."""
    nd = draw(st.integers(1, 3))
    kernel, stride, padding, dilation, size = [], [], [], [], []
    for _ in range(nd):
        k = draw(st.integers(1, 3))
        d = 1 if average else draw(st.integers(1, 2))
        p = draw(st.integers(0, k // 2))
        span = d * (k - 1) + 1
        kernel.append(k)
        stride.append(draw(st.integers(1, 3)))
        padding.append(p)
        dilation.append(d)
        # torch's avg_pool3d (only) refuses an input smaller than the kernel, padding or not
        low = k if average and nd == 3 else max(1, span - 2 * p)
        size.append(draw(st.integers(low, span + 4)))
    batched = draw(st.booleans())
    lead = (draw(st.integers(1, 2)), draw(st.integers(1, 3))) if batched else (2,)
    kw = dict(kernel_size=tuple(kernel), padding=tuple(padding),
              ceil_mode=draw(st.booleans()))
    if draw(st.booleans()):
        kw["stride"] = tuple(stride)
    if average:
        kw["count_include_pad"] = draw(st.booleans())
        if nd > 1 and draw(st.booleans()):  # torch's avg_pool1d has no divisor_override
            kw["divisor_override"] = draw(st.integers(1, 5))
    else:
        kw["dilation"] = tuple(dilation)
    return nd, lead + tuple(size), kw


def torch_pool(function, x, gy, **kw):
    """torch's forward (and its extra outputs) and the gradient of <gy, y> for x."""
    tx = torch.from_numpy(x.copy()).requires_grad_()
    out = function(tx, **kw)
    y = out[0] if isinstance(out, tuple) else out
    (gx,) = torch.autograd.grad(y, tx, torch.from_numpy(gy))
    extra = out[1].numpy() if isinstance(out, tuple) else None
    return y.detach().numpy(), extra, gx.numpy()


@given(pool_cases(), st.sampled_from(["float32", "float64"]), seeds)
def test_max_pool_equals_torch(case, dtype, seed):
    nd, shape, kw = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    y, indices = npconv.max_pool(x, return_indices=True, **kw)
    gy = rng.standard_normal(y.shape).astype(dtype)
    ty, tindices, tgx = torch_pool(MAX[nd], x, gy, return_indices=True, **kw)
    assert y.dtype == x.dtype and indices.dtype == np.int64
    np.testing.assert_array_equal(y, ty)  # a maximum is a copy: exact
    np.testing.assert_array_equal(indices, tindices)
    gx = npconv.max_pool_backward(gy, x, **kw)
    assert gx.shape == x.shape and gx.dtype == x.dtype
    # an input that is the maximum of several windows sums their gradients
    assert_close(gx, tgx, reduction=int(np.prod(kw["kernel_size"])))
    fixed = getattr(npconv, f"max_pool{nd}d")
    np.testing.assert_array_equal(fixed(x, **kw), y)
    np.testing.assert_array_equal(getattr(npconv, f"max_pool{nd}d_backward")(gy, x, **kw), gx)


@given(pool_cases(average=True), st.sampled_from(["float32", "float64"]), seeds)
def test_avg_pool_equals_torch(case, dtype, seed):
    nd, shape, kw = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    y = npconv.avg_pool(x, **kw)
    gy = rng.standard_normal(y.shape).astype(dtype)
    ty, _, tgx = torch_pool(AVG[nd], x, gy, **kw)
    assert y.dtype == x.dtype
    reduction = int(np.prod(kw["kernel_size"]))
    assert_close(y, ty, reduction=reduction)
    gx = npconv.avg_pool_backward(gy, x, **kw)
    assert gx.shape == x.shape and gx.dtype == x.dtype
    assert_close(gx, tgx, reduction=reduction)
    np.testing.assert_array_equal(getattr(npconv, f"avg_pool{nd}d")(x, **kw), y)
    np.testing.assert_array_equal(getattr(npconv, f"avg_pool{nd}d_backward")(gy, x, **kw), gx)


# Seeded cases that hypothesis need not find: ceil_mode windows that stop in the padding,
# count_include_pad against divisor_override, dilation with padding, 3-d with everything.
SEEDED = [
    (2, (1, 2, 7, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    (2, (2, 1, 5, 5), dict(kernel_size=2, stride=2, ceil_mode=True)),
    (1, (2, 3, 10), dict(kernel_size=4, stride=3, padding=2, ceil_mode=True)),
    (3, (1, 2, 5, 6, 7), dict(kernel_size=(3, 2, 3), stride=(2, 1, 3), padding=(1, 1, 0),
                              ceil_mode=True)),
]


@pytest.mark.parametrize("nd, shape, kw", SEEDED)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_seeded_avg_pool_cases(nd, shape, kw, count_include_pad):
    pool, backward = getattr(npconv, f"avg_pool{nd}d"), getattr(npconv, f"avg_pool{nd}d_backward")
    x = np.random.default_rng(0).standard_normal(shape)
    gy = np.random.default_rng(1).standard_normal(pool(x, **kw).shape)
    for extra in ({}, {"divisor_override": 3} if nd > 1 else {}):
        kwargs = dict(kw, count_include_pad=count_include_pad, **extra)
        ty, _, tgx = torch_pool(AVG[nd], x, gy, **kwargs)
        assert_close(pool(x, **kwargs), ty, reduction=9)
        assert_close(backward(gy, x, **kwargs), tgx, reduction=9)


@pytest.mark.parametrize("nd, shape, kw", SEEDED)
@pytest.mark.parametrize("dilation", [1, 2])
def test_seeded_max_pool_cases(nd, shape, kw, dilation):
    pool, backward = getattr(npconv, f"max_pool{nd}d"), getattr(npconv, f"max_pool{nd}d_backward")
    x = np.random.default_rng(0).standard_normal(shape)
    kwargs = dict(kw, dilation=dilation)
    try:
        y, indices = pool(x, return_indices=True, **kwargs)
    except ValueError as exc:  # a dilated kernel larger than the input: torch refuses too
        with pytest.raises(RuntimeError):
            MAX[nd](torch.from_numpy(x), **kwargs)
        assert "too small" in str(exc)
        return
    gy = np.random.default_rng(1).standard_normal(y.shape)
    ty, tindices, tgx = torch_pool(MAX[nd], x, gy, return_indices=True, **kwargs)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(indices, tindices)
    assert_close(backward(gy, x, **kwargs), tgx, reduction=9)


def test_max_pool_ties_take_the_first_maximum_like_torch():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1:3, 1:3] = 1.0
    y, indices = npconv.max_pool2d(x, 3, stride=1, return_indices=True)
    _, tindices = F.max_pool2d(torch.from_numpy(x), 3, stride=1, return_indices=True)
    np.testing.assert_array_equal(indices, tindices.numpy())
    gx = npconv.max_pool2d_backward(np.ones_like(y), x, 3, stride=1)
    assert gx.sum() == y.size and gx[0, 0, 1, 1] == y.size


def test_pooling_does_not_modify_its_inputs_and_accepts_complex_averages():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6)) + 1j * rng.standard_normal((2, 3, 6, 6))
    before = x.copy()
    y = npconv.avg_pool2d(x, 3, stride=2, padding=1)
    gy = np.ones_like(y)
    gx = npconv.avg_pool2d_backward(gy, x, 3, stride=2, padding=1)
    np.testing.assert_array_equal(x, before)
    ty = F.avg_pool2d(torch.from_numpy(x.real), 3, 2, 1) + 1j * F.avg_pool2d(
        torch.from_numpy(x.imag), 3, 2, 1)
    assert_close(y, ty.numpy(), reduction=9)
    assert gx.dtype == x.dtype
    with pytest.raises(TypeError, match="x must have a floating dtype, got complex128"):
        npconv.max_pool2d(x, 2)


# --------------------------------------------------------------------------- layers


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_pool_layers_equal_torch(nd):
    shape = (2, 3) + (7, 6, 5)[:nd]
    x = np.random.default_rng(nd).standard_normal(shape)
    layers = [
        (getattr(nn, f"MaxPool{nd}d")(3, stride=2, padding=1, dilation=1, ceil_mode=True),
         getattr(torch.nn, f"MaxPool{nd}d")(3, stride=2, padding=1, dilation=1, ceil_mode=True)),
        (getattr(nn, f"MaxPool{nd}d")(2), getattr(torch.nn, f"MaxPool{nd}d")(2)),
        (getattr(nn, f"AvgPool{nd}d")(3, stride=2, padding=1, count_include_pad=False),
         getattr(torch.nn, f"AvgPool{nd}d")(3, stride=2, padding=1, count_include_pad=False)),
        (getattr(nn, f"AvgPool{nd}d")(2, ceil_mode=True),
         getattr(torch.nn, f"AvgPool{nd}d")(2, ceil_mode=True)),
    ]
    for layer, tlayer in layers:
        assert repr(layer) == repr(tlayer)
        tx = torch.from_numpy(x.copy()).requires_grad_()
        ty = tlayer(tx)
        y = layer(x)
        assert_close(y, ty.detach().numpy(), reduction=9)
        gy = np.random.default_rng(0).standard_normal(y.shape)
        ty.backward(torch.from_numpy(gy))
        assert_close(layer.backward(gy), tx.grad.numpy(), reduction=9)
        assert layer.parameters() == [] and layer.gradients() == []
        with pytest.raises(RuntimeError, match="forward"):
            layer.backward(gy)


def test_max_pool_layer_with_indices_and_unbatched_input():
    layer = nn.MaxPool2d(2, return_indices=True)
    x = np.random.default_rng(0).standard_normal((3, 4, 4))
    y, indices = layer(x)
    ty, tindices = torch.nn.MaxPool2d(2, return_indices=True)(torch.from_numpy(x))
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(indices, tindices.numpy())
    assert layer.backward(np.ones_like(y)).shape == x.shape


# --------------------------------------------------------------------------- bad input

BAD = [
    (lambda: npconv.max_pool2d(np.ones((1, 1, 4, 4)), 2, padding=2), ValueError, r"padding should be at most half of kernel_size"),
    (lambda: npconv.max_pool2d(np.ones((1, 1, 2, 2)), 3), ValueError, r"output size \(0, 0\) is too small"),
    (lambda: npconv.max_pool2d(np.ones((1, 1, 4, 4)), 0), ValueError, r"kernel_size must be positive"),
    (lambda: npconv.max_pool2d(np.ones((1, 1, 4, 4)), 2, stride=0), ValueError, r"stride must be positive"),
    (lambda: npconv.max_pool2d(np.ones((4, 4)), 2), ValueError, r"x must be 3 or 4-dimensional"),
    (lambda: npconv.max_pool2d(np.ones((1, 1, 4, 4), int), 2), TypeError, r"x must have a floating dtype, got int64"),
    (lambda: npconv.max_pool2d(np.ones((1, 1, 4, 4)), 2, ceil_mode=1), TypeError, r"ceil_mode must be True or False"),
    (lambda: npconv.max_pool2d(np.ones((1, 1, 4, 4)), 2, return_indices="yes"), TypeError, r"return_indices must be True or False"),
    (lambda: npconv.max_pool2d(np.ones((1, 1, 4, 4)), 2, stride=10**18), ValueError, r"stride=\(1000000000000000000, 1000000000000000000\) is out of range"),
    (lambda: npconv.max_pool2d(np.ones((1, 1, 4, 4)), 2, dilation=10**18), ValueError, r"output size .* is too small"),
    (lambda: npconv.avg_pool2d(np.ones((1, 1, 4, 4)), 2, divisor_override=0), ValueError, r"divisor_override must be a non-zero 64-bit integer, got 0"),
    (lambda: npconv.avg_pool2d(np.ones((1, 1, 4, 4)), 2, divisor_override=10**400), ValueError, r"divisor_override must be a non-zero 64-bit integer, got 1000"),
    (lambda: npconv.avg_pool2d(np.ones((1, 1, 4, 4)), 2, count_include_pad=None), TypeError, r"count_include_pad must be True or False"),
    (lambda: npconv.avg_pool2d_backward(np.ones((1, 1, 3, 3)), np.ones((1, 1, 4, 4)), 2), ValueError, r"grad_output must have shape \(1, 1, 2, 2\)"),
    (lambda: npconv.max_pool2d_backward(np.ones((1, 1, 2, 2), np.float32), np.ones((1, 1, 4, 4)), 2), TypeError, r"grad_output is float32, x is float64"),
]


@pytest.mark.parametrize("call, exc, pattern", BAD)
def test_bad_pooling_arguments(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


# --------------------------------------------------------------------------- device branches


def test_pooling_and_integer_folds_on_the_standin_device():
    """The GPU branches (no host threads, CuPy's refusals, no device-to-host sync) give
    NumPy's results: pooling forward and backward, integer and bool folds."""
    from npconv import _standin

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 6))
    xi = rng.integers(0, 9, (2, 3, 7, 6))
    max_kw = dict(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=True)
    avg_kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    fold_kw = dict(padding=1, padding_mode="replicate")
    with npconv.use_backend("standin") as xp:
        d, di, gy = xp.asarray(x), xp.asarray(xi), xp.ones((2, 3, 4, 4))
        with _standin.allow_synchronize(False):
            y, indices = npconv.max_pool2d(d, return_indices=True, **max_kw)
            gx = npconv.max_pool2d_backward(gy, d, **max_kw)
            ya = npconv.avg_pool2d(d, **avg_kw)
            ga = npconv.avg_pool2d_backward(gy, d, **avg_kw)
            cols = npconv.im2col(di, 3, **fold_kw)
            back = npconv.col2im(cols, (7, 6), 3, **fold_kw)
            folded = npconv.fold_patches(npconv.patches(d > 0, 3, stride=2), (7, 6), 3, stride=2)
        got = [a.get() for a in (y, indices, gx, ya, ga, cols, back, folded)]
    ones = np.ones((2, 3, 4, 4))
    cols_host = npconv.im2col(xi, 3, **fold_kw)
    expected = [*npconv.max_pool2d(x, return_indices=True, **max_kw),
                npconv.max_pool2d_backward(ones, x, **max_kw), npconv.avg_pool2d(x, **avg_kw),
                npconv.avg_pool2d_backward(ones, x, **avg_kw), cols_host,
                npconv.col2im(cols_host, (7, 6), 3, **fold_kw),
                npconv.fold_patches(npconv.patches(x > 0, 3, stride=2), (7, 6), 3, stride=2)]
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
