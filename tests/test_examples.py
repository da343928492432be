"""The examples: gradient checks pass, results match independent references, digits >= 97%."""

import importlib
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import npconv

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module", autouse=True)
def examples_on_path():
    sys.path.insert(0, str(EXAMPLES))
    yield
    sys.path.remove(str(EXAMPLES))


def example(name):
    return importlib.import_module(name)


# ---------------------------------------------------------------------- gradient checker


def test_gradient_checker_catches_a_wrong_backward():
    gradcheck = example("_gradcheck")
    x = np.linspace(-1.0, 1.0, 7)
    for check in (gradcheck.gradient_check, gradcheck.central_difference_check):
        assert check(np.sin, lambda g, a: (g * np.cos(a),), [x]) < 1e-8
        with pytest.raises(AssertionError):
            check(np.sin, lambda g, a: (1.01 * g * np.cos(a),), [x])


@pytest.mark.parametrize("name", ["adder_conv", "polynomial_conv"])
def test_main_with_the_local_checker(name, monkeypatch):
    # the fallback used where npconv.testing is missing
    monkeypatch.setattr(example("_gradcheck"), "_check_grad", None)
    assert example(name).main(batch=1, size=5) < 1e-5


# ---------------------------------------------------------------------- adder convolution


def adder_reference(x, w, stride, padding, dilation):
    """Direct loops over output pixels (2-d, zero padding)."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (wd + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    y = np.empty((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            win = xp[:, :, i * stride:i * stride + dilation * (kh - 1) + 1:dilation,
                     j * stride:j * stride + dilation * (kw - 1) + 1:dilation]
            y[:, :, i, j] = -np.abs(win[:, None] - w[None]).sum(axis=(2, 3, 4))
    return y


def test_adder_main_gradient_check():
    assert example("adder_conv").main() < 1e-5  # check_grad raises on a wrong gradient


@pytest.mark.parametrize("stride, padding, dilation", [(1, 0, 1), (2, 1, 1), (1, 2, 2)])
def test_adder_forward_matches_loops(stride, padding, dilation):
    adder = example("adder_conv")
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 7, 8)), rng.standard_normal((4, 3, 3, 2))
    y = adder.adder_conv(x, w, stride=stride, padding=padding, dilation=dilation)
    np.testing.assert_allclose(y, adder_reference(x, w, stride, padding, dilation), rtol=1e-12)


def test_adder_addernet_gradients():
    adder = example("adder_conv")
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    gy = rng.standard_normal((2, 4, 4, 4))
    gx, gw = adder.adder_conv_backward(gy, x, w, gradient="addernet")
    v = npconv.patches(x, 3)  # (N, C, 3, 3, 4, 4)
    diff = v[:, None] - w[None, :, :, :, :, None, None]  # (N, O, C, 3, 3, 4, 4)
    g = gy[:, :, None, None, None]
    np.testing.assert_allclose(gw, (diff * g).sum(axis=(0, 5, 6)), rtol=1e-12)
    expected = npconv.fold_patches((np.clip(-diff, -1, 1) * g).sum(axis=1), (6, 6), 3)
    np.testing.assert_allclose(gx, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="gradient must be"):
        adder.adder_conv_backward(gy, x, w, gradient="sign")


# ---------------------------------------------------------------------- polynomial convolution


def test_polynomial_main_gradient_check():
    assert example("polynomial_conv").main() < 1e-5


def test_polynomial_degree_one_is_conv():
    poly = example("polynomial_conv")
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    np.testing.assert_allclose(poly.polynomial_conv(x, w, 0.0, 1, padding=1),
                               npconv.conv(x, w, padding=1), rtol=1e-12)


def test_polynomial_matches_torch_autograd():
    import torch
    poly = example("polynomial_conv")
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 4, 7, 6)), 0.3 * rng.standard_normal((6, 2, 3, 2))
    c = rng.uniform(0.5, 1.5, 6)
    args = dict(stride=2, padding=1, groups=2)
    tx, tw, tc = (torch.from_numpy(a).requires_grad_() for a in (x, w, c))
    ty = torch.nn.functional.conv2d(tx, tw, tc, **args) ** 3
    y = poly.polynomial_conv(x, w, c, 3, **args)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10)
    gy = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(gy))
    grads = poly.polynomial_conv_backward(gy, x, w, c, 3, **args)
    for mine, theirs in zip(grads, (tx, tw, tc)):
        np.testing.assert_allclose(mine, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["adder_conv", "polynomial_conv"])
def test_script_runs(name):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--bench", "0", "0", "0", "0"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "max gradient-check error" in result.stdout


# ---------------------------------------------------------------------- digits CNN


def test_digits_building_blocks_match_torch():
    import torch
    digits = example("digits_cnn")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 8, 6)).astype(np.float32)
    pool = digits.MaxPool(2)
    tx = torch.from_numpy(x).requires_grad_()
    ty = torch.nn.functional.max_pool2d(tx, 2)
    y = pool.forward(x)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    gy = rng.standard_normal(y.shape).astype(np.float32)
    ty.backward(torch.from_numpy(gy))
    np.testing.assert_array_equal(pool.backward(gy), tx.grad.numpy())

    logits = rng.standard_normal((5, 10))
    labels = rng.integers(0, 10, 5)
    tl = torch.from_numpy(logits).requires_grad_()
    tloss = torch.nn.functional.cross_entropy(tl, torch.from_numpy(labels))
    tloss.backward()
    loss, grad = digits.softmax_cross_entropy(logits, labels)
    np.testing.assert_allclose(loss, tloss.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, tl.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_digits_default_run_reaches_97_percent():
    # The full default configuration (20 epochs, seed 0): a few seconds on 2 cores.
    accuracy = example("digits_cnn").main()
    assert accuracy >= 0.97
