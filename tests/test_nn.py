"""npconv.nn layers against torch.nn.Conv*/ConvTranspose* (float64), init, seeding, bad args."""

import math

import numpy as np
import pytest
import torch  # the reference: without it these tests must fail, not skip

import npconv
import npconv.nn as nn

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
TRANSPOSE = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
TORCH_CONV = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
TORCH_TRANSPOSE = {
    1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d, 3: torch.nn.ConvTranspose3d
}

CONV_CONFIGS = [
    dict(),
    dict(stride=2, padding=1),
    dict(padding="same", dilation=2),
    dict(padding="valid", bias=False),
    dict(groups=2, stride=(2, 1, 1), padding=(1, 0, 2)),
    dict(padding=2, padding_mode="reflect"),
    dict(padding=1, padding_mode="replicate", groups=2),
    dict(padding=(2, 1, 1), padding_mode="circular", stride=2),
    dict(kernel_size=1),
    dict(kernel_size=(1, 3, 2), dilation=(1, 2, 1)),
]
TRANSPOSE_CONFIGS = [
    dict(),
    dict(stride=2, padding=1, output_padding=1),
    dict(stride=(2, 3, 1), dilation=2, output_padding=(1, 2, 0)),
    dict(groups=2, bias=False, padding=(0, 1, 1)),
    dict(kernel_size=(2, 3, 1), stride=2, dilation=(3, 1, 1), output_padding=(2, 1, 0)),
]


def rank_kwargs(config, nd):
    """Cut every 3-tuple of a config down to ``nd`` entries."""
    return {k: v[:nd] if isinstance(v, tuple) else v for k, v in config.items()}


def compare_with_torch(layer, tlayer, x, rtol=1e-10, atol=1e-12):
    with torch.no_grad():
        tlayer.weight.copy_(torch.from_numpy(layer.weight))
        if layer.bias is not None:
            tlayer.bias.copy_(torch.from_numpy(layer.bias))
    tx = torch.from_numpy(x).requires_grad_()
    ty = tlayer(tx)
    y = layer(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=rtol, atol=atol)
    gy = np.random.default_rng(7).standard_normal(y.shape).astype(x.dtype)
    ty.backward(torch.from_numpy(gy))
    gx = layer.backward(gy)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(layer.weight_grad, tlayer.weight.grad.numpy(), rtol=rtol, atol=atol)
    if layer.bias is None:
        assert layer.bias_grad is None
    else:
        np.testing.assert_allclose(layer.bias_grad, tlayer.bias.grad.numpy(), rtol=rtol,
                                   atol=atol)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("config", CONV_CONFIGS, ids=repr)
def test_conv_matches_torch(nd, config):
    kw = rank_kwargs(dict({"kernel_size": 3}, **config), nd)
    layer = CONV[nd](4, 6, dtype="float64", rng=nd, **kw)
    tlayer = TORCH_CONV[nd](4, 6, dtype=torch.float64, **kw)
    assert repr(layer) == repr(tlayer)
    x = np.random.default_rng(nd).standard_normal((3, 4) + (7, 6, 5)[:nd])
    compare_with_torch(layer, tlayer, x)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("config", TRANSPOSE_CONFIGS, ids=repr)
def test_conv_transpose_matches_torch(nd, config):
    kw = rank_kwargs(dict({"kernel_size": 3}, **config), nd)
    layer = TRANSPOSE[nd](4, 6, dtype="float64", rng=nd, **kw)
    tlayer = TORCH_TRANSPOSE[nd](4, 6, dtype=torch.float64, **kw)
    assert repr(layer) == repr(tlayer)
    x = np.random.default_rng(nd).standard_normal((3, 4) + (5, 4, 3)[:nd])
    compare_with_torch(layer, tlayer, x)


@pytest.mark.parametrize("cls, tcls", [(nn.Conv2d, torch.nn.Conv2d),
                                       (nn.ConvTranspose2d, torch.nn.ConvTranspose2d)])
def test_unbatched_input(cls, tcls):
    layer = cls(3, 5, (2, 3), stride=2, dtype="float64", rng=0)
    tlayer = tcls(3, 5, (2, 3), stride=2, dtype=torch.float64)
    x = np.random.default_rng(0).standard_normal((3, 7, 8))
    compare_with_torch(layer, tlayer, x)


def test_float32_default_matches_torch():
    layer = nn.Conv2d(8, 16, 3, padding=1, rng=0)
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    tlayer = torch.nn.Conv2d(8, 16, 3, padding=1)
    x = np.random.default_rng(0).standard_normal((2, 8, 10, 10)).astype(np.float32)
    compare_with_torch(layer, tlayer, x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("args, kw, shape", [
    ((2, 3, 3), dict(stride=2), (2, 2, 9, 9)),
    ((16, 16, 3), dict(padding=1), (8, 16, 64, 64)),  # large enough for 'auto' to pick Winograd
    ((8, 8, 3), dict(padding=1, groups=8), (2, 8, 12, 12)),  # depthwise
    ((8, 4, 1), dict(), (2, 8, 6, 6)),  # pointwise
    ((4, 4, 3), dict(padding=2, padding_mode="reflect", dilation=2), (2, 4, 7, 7)),
])
def test_conv_layer_caches_x_and_equals_the_functions_bitwise(args, kw, shape):
    """The layer calls npconv.conv/conv_backward: same algorithm, same bits."""
    layer = nn.Conv2d(*args, rng=0, dtype="float64", **kw)
    x = np.random.default_rng(1).standard_normal(shape)
    y = layer(x)
    assert layer._cache is x
    fkw = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
               groups=layer.groups, padding_mode=layer.padding_mode)
    np.testing.assert_array_equal(y, npconv.conv(x, layer.weight, layer.bias, **fkw))
    gy = np.random.default_rng(2).standard_normal(y.shape)
    gx = layer.backward(gy)
    ex, ew, eb = npconv.conv_backward(gy, x, layer.weight, **fkw)
    for got, expected in ((gx, ex), (layer.weight_grad, ew), (layer.bias_grad, eb)):
        np.testing.assert_array_equal(got, expected)


def test_conv_transpose_layer_equals_the_functions_bitwise():
    layer = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, rng=0,
                               dtype="float64")
    x = np.random.default_rng(1).standard_normal((2, 4, 5, 5))
    y = layer(x)
    assert layer._cache is x
    fkw = dict(stride=2, padding=1, output_padding=1)
    np.testing.assert_array_equal(y, npconv.conv_transpose(x, layer.weight, layer.bias, **fkw))
    gy = np.random.default_rng(2).standard_normal(y.shape)
    gx = layer.backward(gy)
    ex, ew, eb = npconv.conv_transpose_backward(gy, x, layer.weight, **fkw)
    for got, expected in ((gx, ex), (layer.weight_grad, ew), (layer.bias_grad, eb)):
        np.testing.assert_array_equal(got, expected)


def test_nn_imports_no_private_names_from_conv():
    import ast
    import pathlib

    tree = ast.parse(pathlib.Path(nn.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("conv", "npconv.conv"):
            assert all(not alias.name.startswith("_") for alias in node.names)


def test_backward_needs_a_forward_each_time():
    layer = nn.Conv1d(2, 3, 3, rng=0)
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.ones((1, 3, 4), np.float32))
    y = layer(np.ones((1, 2, 6), np.float32))
    layer.backward(np.ones_like(y))
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.ones_like(y))
    with pytest.raises(RuntimeError, match="backward"):
        nn.Conv1d(2, 3, 3).gradients()


def test_parameters_and_gradients_line_up():
    layer = nn.ConvTranspose1d(2, 4, 3, rng=0)
    y = layer(np.ones((2, 2, 5), np.float32))
    layer.backward(np.ones_like(y))
    assert [p.shape for p in layer.parameters()] == [g.shape for g in layer.gradients()]
    no_bias = nn.Conv1d(2, 4, 3, bias=False, rng=0)
    no_bias.backward(np.ones_like(no_bias(np.ones((1, 2, 5), np.float32))))
    assert len(no_bias.parameters()) == len(no_bias.gradients()) == 1


def test_grad_output_checked():
    layer = nn.Conv2d(2, 3, 3, rng=0)
    layer(np.ones((2, 2, 6, 6), np.float32))
    with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 3, 4, 4\)"):
        layer.backward(np.ones((2, 3, 5, 5), np.float32))
    layer(np.ones((2, 2, 6, 6), np.float32))
    with pytest.raises(TypeError, match=r"grad_output is float64, but Conv2d computes in float32 "
                                        r".*cast grad_output, grad_output.astype\('float32'\), "
                                        r"or build the layer with dtype='float64'"):
        layer.backward(np.ones((2, 3, 4, 4)))


def test_input_dtype_must_match_layer():
    layer = nn.Conv2d(2, 3, 3, rng=0)  # float32
    with pytest.raises(TypeError, match=r"x is float64, but Conv2d computes in float32 .*cast the "
                                        r"input, x.astype\('float32'\), or build the layer with "
                                        r"dtype='float64'"):
        layer(np.ones((1, 2, 5, 5)))
    with pytest.raises(TypeError, match=r"x is int64, but ConvTranspose1d computes in float32 "
                                        r".*x.astype\('float32'\)$"):
        nn.ConvTranspose1d(2, 3, 3, rng=0)(np.ones((1, 2, 5), dtype=np.int64))


def test_input_channels_checked():
    with pytest.raises(ValueError, match="input channels"):
        nn.Conv2d(2, 3, 3, rng=0)(np.ones((1, 4, 5, 5), np.float32))
    with pytest.raises(ValueError, match="input channels"):
        nn.ConvTranspose2d(2, 3, 3, rng=0)(np.ones((1, 4, 5, 5), np.float32))


# ---------------------------------------------------------------------- initialisation


@pytest.mark.parametrize("cls, tcls, args", [
    (nn.Conv2d, torch.nn.Conv2d, (24, 48, 3)),
    (nn.Conv3d, torch.nn.Conv3d, (12, 16, (3, 2, 2))),
    (nn.Conv1d, torch.nn.Conv1d, (32, 64, 5)),
    (nn.ConvTranspose2d, torch.nn.ConvTranspose2d, (48, 24, 3)),
    (nn.ConvTranspose1d, torch.nn.ConvTranspose1d, (16, 64, 5)),
])
@pytest.mark.parametrize("groups", [1, 4])
def test_init_distribution_like_torch(cls, tcls, args, groups):
    layer = cls(*args, groups=groups, dtype="float64", rng=0)
    tlayer = tcls(*args, groups=groups, dtype=torch.float64)
    assert layer.weight.shape == tuple(tlayer.weight.shape)
    fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(tlayer.weight)
    bound = 1 / math.sqrt(fan_in)
    assert fan_in == layer.weight.shape[1] * math.prod(layer.kernel_size)
    # torch's own init stays inside the same bound (a sanity check of the formula)
    assert tlayer.weight.abs().max().item() <= bound and tlayer.bias.abs().max().item() <= bound
    w, b = layer.weight, layer.bias
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    # uniform on (-bound, bound): extremes near the bound, mean 0, std bound/sqrt(3)
    assert np.abs(w).max() > 0.98 * bound
    assert abs(w.mean()) < 0.05 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound
    hist, _ = np.histogram(w, bins=4, range=(-bound, bound))
    assert hist.min() > 0.8 * w.size / 4


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", np.float32])
def test_init_dtype(dtype):
    layer = nn.Conv2d(4, 8, 3, dtype=dtype, rng=0)
    assert layer.weight.dtype == np.dtype(dtype) == layer.bias.dtype
    bound = 1 / math.sqrt(36)
    tol = 1e-3 if np.dtype(dtype) == np.float16 else 1e-6
    assert np.abs(layer.weight).max() <= bound * (1 + tol)


def test_init_complex_draws_both_parts():
    layer = nn.Conv1d(4, 8, 3, dtype="complex128", rng=0)
    bound = 1 / math.sqrt(12)
    for part in (layer.weight.real, layer.weight.imag, layer.bias.real, layer.bias.imag):
        assert np.abs(part).max() <= bound and np.abs(part).max() > 0.5 * bound


def test_seeding_is_reproducible():
    a, b = nn.Conv2d(3, 8, 3, rng=123), nn.Conv2d(3, 8, 3, rng=123)
    np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(a.bias, b.bias)
    c = nn.Conv2d(3, 8, 3, rng=124)
    assert not np.array_equal(a.weight, c.weight)
    # a Generator is used as given (and advanced): two layers from one generator differ
    gen = np.random.default_rng(5)
    d, e = nn.ConvTranspose2d(3, 8, 3, rng=gen), nn.ConvTranspose2d(3, 8, 3, rng=gen)
    assert not np.array_equal(d.weight, e.weight)
    gen2 = np.random.default_rng(5)
    np.testing.assert_array_equal(nn.ConvTranspose2d(3, 8, 3, rng=gen2).weight, d.weight)
    # rng=None draws fresh entropy
    assert not np.array_equal(nn.Conv2d(3, 8, 3).weight, nn.Conv2d(3, 8, 3).weight)


def test_default_rng_follows_the_active_backend():
    assert type(nn.default_rng(0)) is type(npconv.xp.random.default_rng(0))
    gen = np.random.default_rng(0)
    assert nn.default_rng(gen) is gen


# ---------------------------------------------------------------------- bad arguments

BAD = [
    (lambda: nn.Conv2d(0, 4, 3), ValueError, r"in_channels must be positive, got 0"),
    (lambda: nn.Conv2d(2, -1, 3), ValueError, r"out_channels must be positive"),
    (lambda: nn.Conv2d(2.0, 4, 3), TypeError, r"in_channels must be an integer"),
    (lambda: nn.Conv2d(2, 4, (3, 3, 3)), ValueError, r"kernel_size must be an int or a tuple of 2"),
    (lambda: nn.Conv2d(2, 4, 0), ValueError, r"kernel_size must be positive"),
    (lambda: nn.Conv2d(2, 4, "3"), (TypeError, ValueError), r"kernel_size must be an int or a tuple"),
    (lambda: nn.Conv2d(2, 4, 3, stride=0), ValueError, r"stride must be positive, got 0"),
    (lambda: nn.Conv1d(2, 4, 3, dilation=(1, 1)), ValueError, r"dilation must be an int or a tuple of 1"),
    (lambda: nn.Conv2d(2, 4, 3, padding=-1), ValueError, r"padding must be non-negative"),
    (lambda: nn.Conv2d(2, 4, 3, padding="full"), ValueError, r"padding must be 'same', 'valid'.*'full'"),
    (lambda: nn.Conv2d(2, 4, 3, padding="same", stride=2), ValueError, r"padding='same' is not supported for strided"),
    (lambda: nn.Conv2d(2, 4, 3, groups=0), ValueError, r"groups must be a positive integer, got 0"),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError, r"groups=2 must divide the 3 input"),
    (lambda: nn.Conv2d(4, 6, 3, groups=4), ValueError, r"groups=4 must divide the 6 output"),
    (lambda: nn.Conv2d(2, 4, 3, bias="yes"), TypeError, r"bias must be True or False"),
    (lambda: nn.Conv2d(2, 4, 3, padding_mode="mirror"), ValueError, r"padding_mode must be one of .*'mirror'"),
    (lambda: nn.Conv2d(2, 4, 3, dtype="int32"), TypeError, r"dtype must be a floating or complex dtype"),
    (lambda: nn.Conv2d(2, 4, 3, rng="seed"), TypeError, r"rng must be None, an int seed or a"),
    (lambda: nn.Conv2d(2, 4, 3, rng=1.5), TypeError, r"rng must be None"),
    (lambda: nn.Conv2d(2, 4, 3, rng=-1), ValueError, r"rng seed must be non-negative"),
    (lambda: nn.ConvTranspose2d(2, 4, 3, padding="same"), ValueError, r"padding must be an int or a tuple of 2 ints for ConvTranspose2d"),
    (lambda: nn.ConvTranspose2d(2, 4, 3, stride=2, output_padding=2), ValueError, r"output_padding must be smaller than either stride or dilation"),
    (lambda: nn.ConvTranspose2d(2, 4, 3, output_padding=-1), ValueError, r"output_padding must be non-negative"),
    (lambda: nn.ConvTranspose3d(2, 4, 3, output_padding=(0, 0)), ValueError, r"output_padding must be an int or a tuple of 3"),
    (lambda: nn.Conv2d(2, 4, 5, padding=1)(np.ones((1, 2, 2, 2), np.float32)), ValueError, r"kernel_size \(5, 5\).*at least one"),
    (lambda: nn.Conv2d(2, 4, 10**9), ValueError, r"in_channels=2, out_channels=4 and kernel_size=1000000000 are out of range: a float32 weight of shape \(4, 2, 1000000000, 1000000000\)"),
    (lambda: nn.Conv2d(10**18, 10**18, 3), ValueError, r"in_channels=1000000000000000000, out_channels=1000000000000000000 and kernel_size=3 are out of range"),
    (lambda: nn.Conv2d(2, 4, 3, stride=10**18)(np.ones((1, 2, 5, 5), np.float32)), ValueError, r"stride=\(1000000000000000000, 1000000000000000000\) is out of range"),
    (lambda: nn.MaxPool2d(2)(np.ones((1, 2, 5, 5), np.int32)), TypeError, r"x must have a floating dtype, got int32"),
    (lambda: nn.Conv2d(2, 4, 3)(np.ones((2, 5, 5), np.float32)[None, None]), ValueError, r"x must be 3 or 4-dim"),
]


@pytest.mark.parametrize("call, exc, pattern", BAD, ids=lambda v: v if isinstance(v, str) else "")
def test_bad_arguments(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_transposed_layers_with_a_padding_mode_run_the_functions(mode):
    """torch refuses these; npconv's layer is the adjoint of the padded convolution."""
    layer = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, padding_mode=mode,
                               dtype="float64", rng=0)
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 5))
    y = layer(x)
    expected = npconv.conv_transpose2d(x, layer.weight, layer.bias, stride=2, padding=1,
                                       padding_mode=mode)
    np.testing.assert_array_equal(y, expected)
    gy = np.ones_like(y)
    gx = layer.backward(gy)
    want = npconv.conv_transpose2d_backward(gy, x, layer.weight, stride=2, padding=1,
                                            padding_mode=mode)
    np.testing.assert_array_equal(gx, want[0])
    np.testing.assert_array_equal(layer.weight_grad, want[1])
    assert f"padding_mode={mode}" in repr(layer)
