"""Finite-difference checks of the hand-derived gradients (npconv.testing.check_grad, no torch)."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npconv
import npconv.testing
import npconv.testing.arrays
import npconv.testing.checks
import npconv.testing.configs
from npconv.testing import ConvConfig, check_grad, conv_configs, random_conv_arrays

ALL_MODES = ("zeros", "reflect", "replicate", "circular")
seeds = st.integers(0, 2**31 - 1)
dtypes = st.sampled_from(["float64", "complex128"])


def conv_pair(kw):
    def forward(x, w, b):
        return npconv.conv(x, w, b, **kw)

    def backward(gy, x, w, b):
        return npconv.conv_backward(gy, x, w, **kw)

    return forward, backward


def transpose_pair(kw):
    def forward(x, w, b):
        return npconv.conv_transpose(x, w, b, **kw)

    def backward(gy, x, w, b):
        return npconv.conv_transpose_backward(gy, x, w, **kw)

    return forward, backward


@given(conv_configs(ndim=(1, 2), padding_modes=ALL_MODES, max_output=3, unbatched=True), seeds,
       dtypes)
def test_conv_backward_directional(cfg, seed, dtype):
    x, w, b, gy = random_conv_arrays(cfg, dtype, seed, grad_output=True)
    check_grad(*conv_pair(cfg.kwargs()), (x, w, b), gy, seed=seed)


@given(conv_configs(ndim=(1, 2), transposed=True, max_output=3, unbatched=True), seeds, dtypes)
def test_conv_transpose_backward_directional(cfg, seed, dtype):
    x, w, b, gy = random_conv_arrays(cfg, dtype, seed, grad_output=True)
    check_grad(*transpose_pair(cfg.kwargs()), (x, w, b), gy, seed=seed)


tiny = dict(max_batch=1, max_channels=2, max_kernel=2, max_output=2, max_padding=1)


@given(conv_configs(ndim=(1, 2), padding_modes=ALL_MODES, **tiny), seeds)
def test_conv_backward_every_element(cfg, seed):
    x, w, b, gy = random_conv_arrays(cfg, "float64", seed, grad_output=True)
    check_grad(*conv_pair(cfg.kwargs()), (x, w, b), gy, directions=0, full=True)


@given(conv_configs(ndim=(1, 2), transposed=True, **tiny), seeds)
def test_conv_transpose_backward_every_element(cfg, seed):
    x, w, b, gy = random_conv_arrays(cfg, "float64", seed, grad_output=True)
    check_grad(*transpose_pair(cfg.kwargs()), (x, w, b), gy, directions=0, full=True)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_padding_modes_every_element_complex(mode):
    cfg = ConvConfig(1, 2, 2, 1, (4, 3), (3, 2), (1, 2), (2, 1), (1, 2), padding_mode=mode)
    x, w, b, gy = random_conv_arrays(cfg, "complex128", 11, grad_output=True)
    check_grad(*conv_pair(cfg.kwargs()), (x, w, b), gy, full=True)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_patches_fold_patches_gradient(mode):
    """fold_patches is the gradient of any function of patches(x): here sum(view**2 * c)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 5, 4))
    kw = dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2),
              padding_mode=mode)
    c = rng.standard_normal(npconv.patches(x, **kw).shape)

    def forward(x):
        return npconv.patches(x, **kw) ** 2 * c

    def backward(gy, x):
        return (npconv.fold_patches(2 * gy * c * npconv.patches(x, **kw), x.shape[2:], **kw),)

    check_grad(forward, backward, (x,), full=True)


# --------------------------------------------------------------------------- check_grad itself


def test_check_grad_detects_a_wrong_gradient():
    cfg = ConvConfig(2, 3, 4, 1, (6,), (3,), (1,), (1,), (1,), padding_mode="reflect")
    x, w, b, gy = random_conv_arrays(cfg, "float64", 0, grad_output=True)
    forward, backward = conv_pair(cfg.kwargs())

    def wrong(gy, x, w, b):  # grad_input computed as if padding were zeros
        gx, gw, gb = backward(gy, x, w, b)
        gx0, _, _ = npconv.conv_backward(gy, x, w, padding=1)
        return gx0, gw, gb

    with pytest.raises(AssertionError, match=r"input 0 random direction"):
        check_grad(forward, wrong, (x, w, b), gy)
    # the other gradients are right, and are checked on their own
    check_grad(forward, wrong, (x, w, b), gy, wrt=(1, 2))


def test_check_grad_detects_a_missing_conjugate():
    cfg = ConvConfig(1, 2, 2, 1, (5,), (2,), (1,), (0,), (1,))
    x, w, b, gy = random_conv_arrays(cfg, "complex128", 1, grad_output=True)
    forward, backward = conv_pair(cfg.kwargs())
    check_grad(forward, backward, (x, w, b), gy)

    def unconjugated(gy, x, w, b):
        gx, gw, gb = backward(gy, x, w, b)
        return gx, npconv.conv_backward(gy, np.conj(x), w)[1], gb  # sum gy * x, not conj(x)

    with pytest.raises(AssertionError, match="input 1"):
        check_grad(forward, unconjugated, (x, w, b), gy)


def test_check_grad_returns_the_largest_error_and_leaves_inputs_alone():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    before = x.copy()
    err = check_grad(np.sin, lambda gy, x: (gy * np.cos(x),), (x,), full=True)
    assert 0 <= err < 1e-7
    np.testing.assert_array_equal(x, before)


def test_check_grad_rejects_low_precision_and_bad_shapes():
    x32 = np.ones((2, 2), dtype=np.float32)
    with pytest.raises(TypeError, match="float64 or complex128"):
        check_grad(lambda x: x, lambda gy, x: (gy,), (x32,))
    x = np.ones((2, 2))
    with pytest.raises(ValueError, match="gradient 0 has shape"):
        check_grad(lambda x: x, lambda gy, x: (gy[0],), (x,))
    with pytest.raises(ValueError, match="returned 2 gradients for 1 inputs"):
        check_grad(lambda x: x, lambda gy, x: (gy, gy), (x,))
    with pytest.raises(ValueError, match="grad_output has shape"):
        check_grad(lambda x: x, lambda gy, x: (gy,), (x,), np.ones(3))


def test_check_grad_skips_inputs_without_gradient():
    x, k = np.linspace(0, 1, 5), np.float64(3.0) * np.ones(5)
    check_grad(lambda x, k: x * k, lambda gy, x, k: (gy * k, None), (x, k))


def test_testing_module_examples_run():
    """The runnable examples in npconv.testing's docstrings (strategies included) pass."""
    attempted = 0
    for module in (npconv.testing, npconv.testing.configs, npconv.testing.arrays,
                   npconv.testing.checks):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted > 20


# --------------------------------------------------------------------------- testing helpers


def test_a_failing_conv_problems_example_prints_the_configuration():
    from hypothesis import settings

    @settings(max_examples=5, database=None, derandomize=True)
    @given(npconv.testing.conv_problems(ndim=1))
    def fails(problem):
        raise ZeroDivisionError("a deliberate failure")

    with pytest.raises(ZeroDivisionError) as info:
        fails()
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "ConvConfig(" in notes and "kernel_size=(" in notes
    assert "(config," not in notes  # was the source text of a lambda


def test_patch_kwargs_fit_patches_and_fold_patches():
    cfg = ConvConfig(2, 4, 6, 2, (7, 6), (3, 2), (2, 1), (1, 0), (1, 2), padding_mode="reflect")
    assert "groups" not in cfg.patch_kwargs() and cfg.kwargs()["groups"] == 2
    x, w, _ = random_conv_arrays(cfg, "float64", 0, bias=False)
    view = npconv.patches(x, cfg.kernel_size, **cfg.patch_kwargs())
    assert view.shape == (2, 4) + cfg.kernel_size + cfg.output_size
    folded = npconv.fold_patches(np.ones(view.shape), cfg.input_size, cfg.kernel_size,
                                 **cfg.patch_kwargs())
    assert folded.shape == x.shape
    # the patch view contracted with the grouped weight is the convolution
    g = cfg.groups
    v = view.reshape((2, g, 2) + view.shape[2:])
    wg = w.reshape((g, 3) + w.shape[1:])
    y = np.einsum("ngcijhw,gocij->ngohw", v, wg).reshape(cfg.output_shape)
    np.testing.assert_allclose(y, npconv.conv(x, w, **cfg.kwargs()), rtol=1e-12, atol=1e-12)
    transposed = ConvConfig(1, 2, 2, 1, (3,), (2,), (2,), (0,), (1,), output_padding=(1,),
                            transposed=True)
    with pytest.raises(ValueError, match="transposed"):
        transposed.patch_kwargs()
