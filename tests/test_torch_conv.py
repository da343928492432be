"""conv/conv1d/conv2d/conv3d and their *_backward against torch (F.convNd, nn.ConvNd, autograd)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch  # the reference: without it these tests must fail, not skip
from hypothesis import given
from hypothesis import strategies as st

import npconv
from npconv.testing import ConvConfig, assert_close, conv_configs, random_conv_arrays

F = torch.nn.functional

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

ALL_MODES = ("zeros", "reflect", "replicate", "circular")
FIXED = {1: (npconv.conv1d, npconv.conv1d_backward), 2: (npconv.conv2d, npconv.conv2d_backward),
         3: (npconv.conv3d, npconv.conv3d_backward)}
real_dtypes = st.sampled_from(["float32", "float64"])
seeds = st.integers(0, 2**31 - 1)


def to_torch(a, grad=False):
    t = torch.from_numpy(np.array(a))  # a copy: torch never touches npconv's memory
    return t.requires_grad_(grad)


def torch_conv(cfg: ConvConfig, x, w, b, gy=None):
    """torch's output (and with ``gy`` its autograd gradients) for ``cfg``, as NumPy arrays.

    Zero padding uses F.convNd; other padding modes use nn.ConvNd(padding_mode=...),
    whose parameters are replaced by ``w`` and ``b``.
    """
    tx, tw = to_torch(x, gy is not None), to_torch(w, gy is not None)
    tb = None if b is None else to_torch(b, gy is not None)
    if cfg.padding_mode == "zeros":
        fn = (F.conv1d, F.conv2d, F.conv3d)[cfg.ndim - 1]
        y = fn(tx, tw, tb, **cfg.kwargs(padding_mode=False))
    else:
        cls = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)[cfg.ndim - 1]
        module = cls(cfg.in_channels, cfg.out_channels, cfg.kernel_size, bias=tb is not None,
                     dtype=tw.dtype, **cfg.kwargs())
        module.weight = torch.nn.Parameter(tw)
        if tb is not None:
            module.bias = torch.nn.Parameter(tb)
        y = module(tx)
        if gy is not None:
            tw = module.weight
            tb = module.bias
    if gy is None:
        return y.detach().numpy()
    want = [tx, tw] + ([tb] if tb is not None else [])
    grads = torch.autograd.grad(y, want, to_torch(gy))
    gb = grads[2].numpy() if tb is not None else None
    return y.detach().numpy(), grads[0].numpy(), grads[1].numpy(), gb


def reductions(cfg: ConvConfig):
    """Terms summed per element of (y, grad_input, grad_weight, grad_bias)."""
    out_vol = math.prod(cfg.output_size) * cfg.batch
    kvol = math.prod(cfg.kernel_size)
    # reflect/replicate/circular padding folds several taps onto one input pixel
    extra = 1 if cfg.padding_mode == "zeros" else 4**cfg.ndim
    return (cfg.reduction_size + 1, cfg.out_channels // cfg.groups * kvol * extra, out_vol,
            out_vol)


def check_forward_and_backward(cfg: ConvConfig, x, w, b, gy, fixed_rank=True, **options):
    """npconv's y and gradients == torch's; inputs untouched. ``options``: e.g. algorithm."""
    before = [None if a is None else a.copy() for a in (x, w, b, gy)]
    conv, conv_backward = FIXED[cfg.ndim] if fixed_rank else (npconv.conv, npconv.conv_backward)
    y = conv(x, w, b, **cfg.kwargs(), **options)
    gx, gw, gb = conv_backward(gy, x, w, **cfg.kwargs(), **options)
    ty, tgx, tgw, tgb = torch_conv(cfg, x, w, b, gy)
    r_y, r_x, r_w, r_b = reductions(cfg)
    assert y.dtype == gx.dtype == gw.dtype == gb.dtype == x.dtype
    assert y.shape == cfg.output_shape
    assert_close(y, ty, reduction=r_y, err_msg="output")
    assert_close(gx, tgx, reduction=r_x, err_msg="grad_input")
    assert_close(gw, tgw, reduction=r_w, err_msg="grad_weight")
    if tgb is not None:
        assert_close(gb, tgb, reduction=r_b, err_msg="grad_bias")
    else:
        axes = (0,) + tuple(range(2, gy.ndim)) if cfg.batched else tuple(range(1, gy.ndim))
        assert_close(gb, gy.sum(axis=axes), reduction=r_b, err_msg="grad_bias")
    for a, a0 in zip((x, w, b, gy), before):
        if a is not None:
            np.testing.assert_array_equal(a, a0, err_msg="an input was modified")


# --------------------------------------------------------------------------- hypothesis


@given(conv_configs(ndim=(1, 2, 3), unbatched=True, max_output=3), real_dtypes, seeds,
       st.booleans())
def test_conv_matches_torch(cfg, dtype, seed, bias):
    x, w, b, gy = random_conv_arrays(cfg, dtype, seed, bias=bias, grad_output=True)
    check_forward_and_backward(cfg, x, w, b, gy)


@given(conv_configs(ndim=2, max_channels=6, max_kernel=4, max_stride=3, max_dilation=3,
                    max_padding=3, max_output=5), real_dtypes, seeds)
def test_conv2d_wider_ranges_match_torch(cfg, dtype, seed):
    x, w, b, gy = random_conv_arrays(cfg, dtype, seed, grad_output=True)
    check_forward_and_backward(cfg, x, w, b, gy)


@given(conv_configs(ndim=(1, 2, 3), padding_modes=ALL_MODES[1:], max_output=3, unbatched=True),
       real_dtypes, seeds, st.booleans())
def test_padding_modes_match_torch_modules(cfg, dtype, seed, bias):
    x, w, b, gy = random_conv_arrays(cfg, dtype, seed, bias=bias, grad_output=True)
    check_forward_and_backward(cfg, x, w, b, gy)


@given(conv_configs(ndim=(1, 2), padding_modes=ALL_MODES, max_output=3), seeds)
def test_generic_conv_matches_torch(cfg, seed):
    x, w, b, gy = random_conv_arrays(cfg, "float64", seed, grad_output=True)
    check_forward_and_backward(cfg, x, w, b, gy, fixed_rank=False)


@given(conv_configs(ndim=(1, 2, 3), min_batch=0, max_batch=1, padding_modes=ALL_MODES,
                    max_output=3), seeds)
def test_batch_zero_and_one(cfg, seed):
    x, w, b, gy = random_conv_arrays(cfg, "float64", seed, grad_output=True)
    check_forward_and_backward(cfg, x, w, b, gy)


@given(conv_configs(ndim=(1, 2), padding_modes=ALL_MODES, max_output=3, unbatched=True),
       seeds, st.booleans())
def test_complex128_matches_torch(cfg, seed, bias):
    x, w, b, gy = random_conv_arrays(cfg, "complex128", seed, bias=bias, grad_output=True)
    check_forward_and_backward(cfg, x, w, b, gy)


@given(conv_configs(ndim=(1, 2), max_output=3), seeds)
def test_complex64_forward_matches_torch(cfg, seed):
    x, w, b = random_conv_arrays(cfg, "complex64", seed)
    y = npconv.conv(x, w, b, **cfg.kwargs())
    assert y.dtype == np.complex64
    assert_close(y, torch_conv(cfg, x, w, b), reduction=cfg.reduction_size + 1)


@given(conv_configs(ndim=2, max_output=3, max_channels=3), seeds)
def test_float16_forward_close_to_float64_reference(cfg, seed):
    x, w, b = random_conv_arrays(cfg, "float16", seed)
    y = npconv.conv(x, w, b, **cfg.kwargs())
    assert y.dtype == np.float16
    ref = torch_conv(cfg, *(a.astype(np.float64) for a in (x, w, b)))
    # float16 accumulation: the error grows with the length of the sum, not its square root
    assert_close(y, ref, reduction=cfg.reduction_size**2)


# --------------------------------------------------------------------------- algorithms


@given(conv_configs(ndim=(1, 2, 3), padding_modes=ALL_MODES, max_output=3, unbatched=True),
       real_dtypes, seeds, st.sampled_from(["im2col", "direct"]))
def test_forced_algorithms_match_torch(cfg, dtype, seed, algorithm):
    x, w, b, gy = random_conv_arrays(cfg, dtype, seed, grad_output=True)
    check_forward_and_backward(cfg, x, w, b, gy, algorithm=algorithm)


winograd_configs = conv_configs(ndim=2, min_kernel=3, max_kernel=3, max_stride=1, max_padding=3,
                                max_dilation=1, max_output=6, unbatched=True,
                                padding_modes=ALL_MODES)


@given(winograd_configs, real_dtypes, seeds, st.sampled_from(["winograd", "auto"]),
       st.integers(16, 18), st.integers(16, 18))
def test_winograd_matches_torch(cfg, dtype, seed, algorithm, cin, cout):
    """3x3 stride-1 2-d convolutions; 16+ channels per group so that 'auto' picks Winograd too."""
    cfg = dataclasses.replace(cfg, in_channels=cin, out_channels=cout, groups=1)
    x, w, b, gy = random_conv_arrays(cfg, dtype, seed, grad_output=True)
    if cfg.padding_mode != "zeros" and any(p for lo_hi in cfg.pads for p in lo_hi):
        algorithm = "auto"  # Winograd rejects non-zero padding modes
    check_forward_and_backward(cfg, x, w, b, gy, algorithm=algorithm)


# --------------------------------------------------------------------------- memory layouts


def relayout(a, kind):
    """The same values as ``a`` in a different memory layout."""
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "negative":
        return np.flip(np.flip(a, -1).copy(), -1)
    if kind == "strided":
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if kind == "transposed" and a.ndim >= 2:
        return a.swapaxes(0, 1).copy().swapaxes(0, 1)
    return a


@given(conv_configs(ndim=(1, 2, 3), padding_modes=ALL_MODES, max_output=3), seeds,
       st.sampled_from(["fortran", "negative", "strided", "transposed"]),
       st.sampled_from(["x", "w", "gy", "all"]))
def test_memory_layout_does_not_matter(cfg, seed, kind, which):
    arrays = random_conv_arrays(cfg, "float64", seed, grad_output=True)
    x, w, b, gy = arrays
    y0 = npconv.conv(x, w, b, **cfg.kwargs())
    g0 = npconv.conv_backward(gy, x, w, **cfg.kwargs())
    names = ("x", "w", "b", "gy")
    moved = [relayout(a, kind) if which in (n, "all") else a for a, n in zip(arrays, names)]
    assert all(np.array_equal(a, m) for a, m in zip(arrays, moved))
    check_forward_and_backward(cfg, *moved)
    x, w, b, gy = moved
    assert_close(npconv.conv(x, w, b, **cfg.kwargs()), y0, reduction=cfg.reduction_size)
    for got, ref in zip(npconv.conv_backward(gy, x, w, **cfg.kwargs()), g0):
        assert_close(got, ref, reduction=max(reductions(cfg)))


# --------------------------------------------------------------------------- explicit cases


def cfg_of(x_shape, w_shape, **kw):
    nd = len(w_shape) - 2
    tup = lambda v: (v,) * nd if isinstance(v, int) else tuple(v)  # noqa: E731
    padding = kw.get("padding", 0)
    return ConvConfig(
        batch=x_shape[0] if len(x_shape) == nd + 2 else 1,
        in_channels=x_shape[-nd - 1], out_channels=w_shape[0], groups=kw.get("groups", 1),
        input_size=tuple(x_shape[-nd:]), kernel_size=tuple(w_shape[2:]),
        stride=tup(kw.get("stride", 1)),
        padding=padding if isinstance(padding, str) else tup(padding),
        dilation=tup(kw.get("dilation", 1)), padding_mode=kw.get("padding_mode", "zeros"),
        batched=len(x_shape) == nd + 2,
    )


EXPLICIT = [
    ((2, 4, 9, 8), (6, 2, 3, 2), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)),
    ((1, 3, 7, 7), (3, 1, 3, 3), dict(padding="same", groups=3, padding_mode="reflect")),
    ((2, 2, 6, 5), (4, 2, 4, 2), dict(padding="same", dilation=(1, 3))),  # odd total padding
    ((2, 2, 6, 5), (4, 2, 4, 2), dict(padding="same", padding_mode="circular")),
    ((2, 2, 6, 5), (4, 2, 3, 3), dict(padding="valid", stride=2)),
    ((3, 5, 8), (4, 5, 1), dict()),  # 1x1 fast path
    ((3, 4, 6, 6), (8, 2, 1, 1), dict(groups=2)),  # grouped 1x1
    ((3, 4, 6, 6), (4, 4, 1, 1), dict(stride=2)),
    ((4, 6, 6), (5, 4, 3, 3), dict(padding=1, padding_mode="replicate")),  # unbatched
    ((1, 2, 4, 5, 3), (3, 2, 2, 3, 1), dict(padding=(1, 2, 0), padding_mode="circular")),
    ((1, 2, 5, 4, 6), (4, 1, 3, 2, 2), dict(stride=(1, 2, 3), dilation=(2, 1, 1), groups=2)),
    ((0, 2, 5, 5), (3, 2, 3, 3), dict(padding=1, padding_mode="reflect")),  # empty batch
    ((2, 3, 5), (6, 1, 5), dict(padding=4, padding_mode="replicate", groups=3)),  # pad >= size
    ((2, 3, 4), (6, 3, 3), dict(padding=4, padding_mode="circular")),  # circular pad == size
    ((2, 3, 4), (6, 3, 3), dict(padding=3, padding_mode="reflect")),  # reflect pad == size - 1
]


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex128"])
@pytest.mark.parametrize("x_shape, w_shape, kw", EXPLICIT)
def test_explicit_configurations(x_shape, w_shape, kw, dtype):
    cfg = cfg_of(x_shape, w_shape, **kw)
    assert cfg.weight_shape == w_shape and cfg.input_shape == x_shape
    x, w, b, gy = random_conv_arrays(cfg, dtype, 7, grad_output=True)
    check_forward_and_backward(cfg, x, w, b, gy)


@pytest.mark.parametrize("algorithm", ["auto", "im2col", "direct"])
@pytest.mark.parametrize("x_shape, w_shape, kw", EXPLICIT[:8])
def test_algorithms_agree_with_torch(x_shape, w_shape, kw, algorithm):
    cfg = cfg_of(x_shape, w_shape, **kw)
    x, w, b, gy = random_conv_arrays(cfg, "float64", 3, grad_output=True)
    y = npconv.conv(x, w, b, algorithm=algorithm, **cfg.kwargs())
    grads = npconv.conv_backward(gy, x, w, algorithm=algorithm, **cfg.kwargs())
    ty, *tgrads = torch_conv(cfg, x, w, b, gy)
    assert_close(y, ty, reduction=cfg.reduction_size)
    for got, ref in zip(grads, tgrads):
        assert_close(got, ref, reduction=max(reductions(cfg)))


def test_int_and_tuple_arguments_are_equivalent():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 7, 7)), rng.standard_normal((4, 3, 3, 3))
    a = npconv.conv2d(x, w, stride=2, padding=1, dilation=2)
    b = npconv.conv2d(x, w, stride=(2, 2), padding=(1, 1), dilation=(2, 2))
    np.testing.assert_array_equal(a, b)
    ref = F.conv2d(to_torch(x), to_torch(w), stride=2, padding=1, dilation=2).numpy()
    assert_close(a, ref, reduction=27)


def run_with_smallest_workspace(fn):
    """Call ``fn`` under the smallest workspace limit that fits one image (batch chunks of 1-2)."""
    old = npconv.get_workspace_limit()
    try:
        limit = 256
        while True:
            npconv.set_workspace_limit(limit)
            try:
                return fn()
            except MemoryError:
                limit = int(limit * 1.5)
    finally:
        npconv.set_workspace_limit(old)


@given(conv_configs(ndim=(1, 2, 3), min_batch=3, max_batch=5, padding_modes=ALL_MODES,
                    max_output=3), seeds)
def test_batch_chunking_does_not_change_results(cfg, seed):
    x, w, b, gy = random_conv_arrays(cfg, "float64", seed, grad_output=True)
    run_with_smallest_workspace(lambda: check_forward_and_backward(cfg, x, w, b, gy))


@given(conv_configs(ndim=(1, 2), min_batch=3, max_batch=5, transposed=True, max_output=3), seeds)
def test_batch_chunking_transposed(cfg, seed):
    x, w, b, gy = random_conv_arrays(cfg, "float64", seed, grad_output=True)
    kw = cfg.kwargs()
    ref = (npconv.conv_transpose(x, w, b, **kw),) + npconv.conv_transpose_backward(gy, x, w, **kw)
    got = run_with_smallest_workspace(
        lambda: (npconv.conv_transpose(x, w, b, **kw),)
        + npconv.conv_transpose_backward(gy, x, w, **kw)
    )
    for a, r in zip(got, ref):
        assert_close(a, r, reduction=cfg.batch * cfg.reduction_size * math.prod(cfg.output_size))


@pytest.mark.parametrize("kwargs", [{"stride": (2,)}, {"padding": (1,)}, {"dilation": (2,)}])
def test_one_element_tuples_expand_like_torch_conv(kwargs):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, 3, 2))
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), **kwargs).numpy()
    np.testing.assert_allclose(npconv.conv2d(x, w, **kwargs), expected, rtol=1e-12, atol=1e-12)
    gy = rng.standard_normal(expected.shape)
    assert npconv.conv2d_backward(gy, x, w, **kwargs)[0].shape == x.shape


def test_unfold_rejects_one_element_tuples_like_torch():
    with pytest.raises(ValueError, match=r"stride must be an int or a tuple of 2 ints"):
        npconv.im2col(np.ones((1, 1, 5, 5)), 2, stride=(2,))
