"""CuPy backend: the same results as NumPy, and as torch on CUDA when available.

Every test here is marked ``gpu`` and skips cleanly without CuPy or a CUDA
device (``pytest -m gpu`` selects them; ``-m "not gpu"`` drops them).
TF32 must stay off (``CUPY_TF32`` unset) for the float32 tolerances to hold.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npconv
from npconv.testing import ConvConfig, assert_close, conv_configs, random_conv_arrays

pytestmark = pytest.mark.gpu

ALL_MODES = ("zeros", "reflect", "replicate", "circular")
seeds = st.integers(0, 2**31 - 1)
dtypes = st.sampled_from(["float32", "float64", "complex128"])


@pytest.fixture(scope="module", autouse=True)
def _require_gpu(cupy):
    """Skip the module without CuPy and a GPU (the ``cupy`` fixture lives in conftest)."""
    if os.environ.get("CUPY_TF32", "0") not in ("", "0"):
        pytest.skip("CUPY_TF32 is on: float32 matmuls are TF32, too loose for these tests")


def on_gpu(cupy, arrays):
    return tuple(None if a is None else cupy.asarray(a) for a in arrays)


def to_host(a):
    return None if a is None else a.get()


def reductions(cfg: ConvConfig):
    extra = 1 if cfg.padding_mode == "zeros" else 4**cfg.ndim
    return (cfg.reduction_size + 1,
            cfg.out_channels // cfg.groups * math.prod(cfg.kernel_size) * extra,
            cfg.batch * math.prod(cfg.output_size))


@given(conv_configs(ndim=(1, 2, 3), padding_modes=ALL_MODES, unbatched=True, max_output=3),
       dtypes, seeds)
def test_conv_cupy_matches_numpy(cupy, cfg, dtype, seed):
    host = random_conv_arrays(cfg, dtype, seed, grad_output=True)
    x, w, b, gy = on_gpu(cupy, host)
    with npconv.use_backend("cupy"):
        y = npconv.conv(x, w, b, **cfg.kwargs())
        grads = npconv.conv_backward(gy, x, w, **cfg.kwargs())
    assert isinstance(y, cupy.ndarray) and all(isinstance(g, cupy.ndarray) for g in grads)
    hx, hw, hb, hgy = host
    ref_y = npconv.conv(hx, hw, hb, **cfg.kwargs())
    ref_grads = npconv.conv_backward(hgy, hx, hw, **cfg.kwargs())
    r_y, r_x, r_w = reductions(cfg)
    assert_close(to_host(y), ref_y, reduction=r_y)
    for got, ref, r in zip(grads, ref_grads, (r_x, r_w, r_w)):
        assert_close(to_host(got), ref, reduction=r)
    for dev, h in zip((x, w, b, gy), host):  # inputs untouched
        np.testing.assert_array_equal(to_host(dev), h)


@given(conv_configs(ndim=(1, 2, 3), transposed=True, unbatched=True, max_output=3), dtypes,
       seeds)
def test_conv_transpose_cupy_matches_numpy(cupy, cfg, dtype, seed):
    host = random_conv_arrays(cfg, dtype, seed, grad_output=True)
    x, w, b, gy = on_gpu(cupy, host)
    y = npconv.conv_transpose(x, w, b, **cfg.kwargs())  # computes where its arrays live
    grads = npconv.conv_transpose_backward(gy, x, w, **cfg.kwargs())
    hx, hw, hb, hgy = host
    r = cfg.reduction_size * cfg.batch * math.prod(cfg.output_size)
    assert_close(to_host(y), npconv.conv_transpose(hx, hw, hb, **cfg.kwargs()), reduction=r)
    for got, ref in zip(grads, npconv.conv_transpose_backward(hgy, hx, hw, **cfg.kwargs())):
        assert_close(to_host(got), ref, reduction=r)


@given(conv_configs(ndim=(1, 2, 3), groups=False, padding_modes=ALL_MODES, max_output=3), seeds)
def test_im2col_col2im_patches_cupy_match_numpy(cupy, cfg, seed):
    hx = random_conv_arrays(cfg, "float64", seed)[0]
    x = cupy.asarray(hx)
    kw = dict(kernel_size=cfg.kernel_size, dilation=cfg.dilation, padding=cfg.padding,
              stride=cfg.stride, padding_mode=cfg.padding_mode)
    cols = npconv.im2col(x, **kw)
    np.testing.assert_array_equal(to_host(cols), npconv.im2col(hx, **kw))
    back = npconv.col2im(cols, cfg.input_size, **kw)
    assert_close(to_host(back), npconv.col2im(to_host(cols), cfg.input_size, **kw),
                 reduction=math.prod(cfg.kernel_size) * 4**cfg.ndim)
    view = npconv.patches(x, cfg.kernel_size, **cfg.patch_kwargs())
    np.testing.assert_array_equal(
        to_host(view),
        npconv.patches(hx, cfg.kernel_size, **cfg.patch_kwargs()),
    )


def test_col2im_is_deterministic_on_gpu(cupy):
    rng = np.random.default_rng(0)
    cols = cupy.asarray(rng.standard_normal((2, 3 * 9, 36)))
    first = npconv.col2im(cols, (8, 8), 3, padding=1, stride=1)
    for _ in range(3):
        cupy.testing.assert_array_equal(npconv.col2im(cols, (8, 8), 3, padding=1), first)


def test_mixing_numpy_and_cupy_is_a_type_error(cupy):
    x = np.ones((1, 1, 4, 4))
    with pytest.raises(TypeError, match="cannot mix NumPy and CuPy"):
        npconv.conv2d(x, cupy.ones((1, 1, 3, 3)))


@given(conv_configs(ndim=(1, 2, 3), padding_modes=ALL_MODES, max_output=3), dtypes, seeds)
def test_conv_cupy_matches_torch_cuda(cupy, torch_cuda, cfg, dtype, seed):
    torch = torch_cuda
    F = torch.nn.functional
    x, w, b, gy = on_gpu(cupy, random_conv_arrays(cfg, dtype, seed, grad_output=True))
    tx, tw, tb = (torch.from_dlpack(cupy.ascontiguousarray(a)).clone().requires_grad_()
                  for a in (x, w, b))
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        if cfg.padding_mode == "zeros":
            fn = (F.conv1d, F.conv2d, F.conv3d)[cfg.ndim - 1]
            ty = fn(tx, tw, tb, **cfg.kwargs(padding_mode=False))
        else:
            cls = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)[cfg.ndim - 1]
            m = cls(cfg.in_channels, cfg.out_channels, cfg.kernel_size, device="cuda",
                    dtype=tw.dtype, **cfg.kwargs())
            m.weight, m.bias = torch.nn.Parameter(tw), torch.nn.Parameter(tb)
            tw, tb = m.weight, m.bias
            ty = m(tx)
        tgrads = torch.autograd.grad(ty, (tx, tw, tb), torch.from_dlpack(gy))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    y = npconv.conv(x, w, b, **cfg.kwargs())
    grads = npconv.conv_backward(gy, x, w, **cfg.kwargs())
    r_y, r_x, r_w = reductions(cfg)
    assert_close(to_host(y), ty.detach().cpu().numpy(), reduction=r_y)
    for got, ref, r in zip(grads, tgrads, (r_x, r_w, r_w)):
        assert_close(to_host(got), ref.cpu().numpy(), reduction=r)
