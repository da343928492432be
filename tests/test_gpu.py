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
from hypothesis import given, settings
from hypothesis import strategies as st
from test_paths import ACCEPTED

import npconv
from npconv.testing import ConvConfig, assert_close, conv_configs, random_conv_arrays

pytestmark = pytest.mark.gpu

ALL_MODES = ("zeros", "reflect", "replicate", "circular")
seeds = st.integers(0, 2**31 - 1)
dtypes = st.sampled_from(["float32", "float64", "complex128"])
# The properties run once per algorithm or path: fewer examples each, so that the
# module fits the device check's time (benchmarks/gpu_check.sh).
per_name = settings(max_examples=max(1, min(settings.default.max_examples, 20)))


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
    cols = cupy.asarray(rng.standard_normal((2, 3 * 9, 64)))  # 8x8 blocks: padding 1
    first = npconv.col2im(cols, (8, 8), 3, padding=1, stride=1)
    for _ in range(3):
        cupy.testing.assert_array_equal(npconv.col2im(cols, (8, 8), 3, padding=1), first)


def test_mixing_numpy_and_cupy_is_a_type_error(cupy):
    x = np.ones((1, 1, 4, 4))
    with pytest.raises(TypeError, match="cannot mix NumPy and CuPy"):
        npconv.conv2d(x, cupy.ones((1, 1, 3, 3)))


def torch_cuda_conv(torch, cupy, cfg: ConvConfig, x, w, b, gy):
    """torch's y and (gx, gw, gb) on CUDA, TF32 off, for a convolution of ``cfg``."""
    F = torch.nn.functional
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
        tgrads = torch.autograd.grad(ty, (tx, tw, tb),
                                     torch.from_dlpack(cupy.ascontiguousarray(gy)))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    return ty.detach(), tgrads


def check_against_torch(cupy, torch, cfg, dtype, seed, algorithm):
    """conv and conv_backward on CuPy with ``algorithm`` equal torch CUDA's (or refuse)."""
    x, w, b, gy = on_gpu(cupy, random_conv_arrays(cfg, dtype, seed, grad_output=True))
    try:
        y = npconv.conv(x, w, b, **cfg.kwargs(), algorithm=algorithm)
        grads = npconv.conv_backward(gy, x, w, **cfg.kwargs(), algorithm=algorithm)
    except ValueError as exc:
        assert f"algorithm={algorithm!r} cannot compute" in str(exc), exc
        return
    assert isinstance(y, cupy.ndarray) and all(isinstance(g, cupy.ndarray) for g in grads)
    ty, tgrads = torch_cuda_conv(torch, cupy, cfg, x, w, b, gy)
    r_y, r_x, r_w = reductions(cfg)
    assert_close(to_host(y), ty.cpu().numpy(), reduction=r_y, err_msg=f"{algorithm} y")
    for got, ref, r in zip(grads, tgrads, (r_x, r_w, r_w)):
        assert_close(to_host(got), ref.cpu().numpy(), reduction=r, err_msg=algorithm)


@given(conv_configs(ndim=(1, 2, 3), padding_modes=ALL_MODES, max_output=3), dtypes, seeds)
def test_conv_cupy_matches_torch_cuda(cupy, torch_cuda, cfg, dtype, seed):
    check_against_torch(cupy, torch_cuda, cfg, dtype, seed, "auto")


@per_name
@pytest.mark.parametrize("name", npconv.ALGORITHMS)
@given(conv_configs(ndim=(1, 2, 3), min_batch=1, max_batch=3, max_channels=4,
                    padding_modes=ALL_MODES, max_output=5), dtypes, seeds)
def test_every_algorithm_on_cupy_matches_torch_cuda(cupy, torch_cuda, name, cfg, dtype, seed):
    check_against_torch(cupy, torch_cuda, cfg, dtype, seed, name)


@per_name
@pytest.mark.parametrize("name", sorted(ACCEPTED))
@given(data=st.data(), seed=seeds)
def test_each_path_on_cupy_on_the_geometries_it_accepts(cupy, torch_cuda, name, data, seed):
    cfg = data.draw(ACCEPTED[name], label="config")
    dtype = data.draw(st.sampled_from(["float64", "float32"]), label="dtype")
    if cfg.batch == 0:
        return  # torch's autograd of an empty batch says nothing
    check_against_torch(cupy, torch_cuda, cfg, dtype, seed, name)


@per_name
@pytest.mark.parametrize("name", npconv.ALGORITHMS)
@given(conv_configs(ndim=(1, 2, 3), transposed=True, max_channels=4, max_batch=2),
       st.sampled_from(["float64", "complex128"]), seeds)
def test_transposed_on_every_algorithm_matches_torch_cuda(cupy, torch_cuda, name, cfg, dtype,
                                                          seed):
    torch = torch_cuda
    F = torch.nn.functional
    x, w, b, gy = on_gpu(cupy, random_conv_arrays(cfg, dtype, seed, grad_output=True))
    kw = cfg.kwargs(padding_mode=False)
    try:
        y = npconv.conv_transpose(x, w, b, **kw, algorithm=name)
        grads = npconv.conv_transpose_backward(gy, x, w, **kw, algorithm=name)
    except ValueError as exc:
        assert f"algorithm={name!r} cannot compute" in str(exc), exc
        return
    tx, tw, tb = (torch.from_dlpack(cupy.ascontiguousarray(a)).clone().requires_grad_()
                  for a in (x, w, b))
    fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[cfg.ndim - 1]
    ty = fn(tx, tw, tb, **kw)
    tgrads = torch.autograd.grad(ty, (tx, tw, tb), torch.from_dlpack(cupy.ascontiguousarray(gy)))
    r = max(1, cfg.reduction_size) * cfg.batch * math.prod(cfg.output_size)
    assert_close(to_host(y), ty.detach().cpu().numpy(), reduction=r, err_msg=name)
    for got, ref in zip(grads, tgrads):
        assert_close(to_host(got), ref.cpu().numpy(), reduction=r, err_msg=name)


@given(conv_configs(ndim=2, groups=False, allow_same=False, unbatched=True, max_batch=2,
                    max_channels=3), st.sampled_from(["float32", "float64"]), seeds)
def test_im2col_col2im_on_cupy_match_torch_unfold_fold(cupy, torch_cuda, cfg, dtype, seed):
    F = torch_cuda.nn.functional
    x = cupy.asarray(random_conv_arrays(cfg, dtype, seed, bias=False)[0])
    geo = dict(dilation=cfg.dilation, padding=cfg.padding, stride=cfg.stride)
    cols = npconv.im2col(x, cfg.kernel_size, **geo)
    ref = F.unfold(torch_cuda.from_dlpack(x), cfg.kernel_size, **geo)
    np.testing.assert_array_equal(to_host(cols), ref.cpu().numpy())
    back = npconv.col2im(cols, cfg.input_size, cfg.kernel_size, **geo)
    folded = F.fold(ref, cfg.input_size, cfg.kernel_size, **geo)
    assert_close(to_host(back), folded.cpu().numpy(), reduction=math.prod(cfg.kernel_size))


def test_asarray_copies_host_arrays_to_the_gpu(cupy):
    h = np.arange(6.0).reshape(2, 3)
    with npconv.use_backend("cupy"):
        d = npconv.asarray(h)
    assert isinstance(d, cupy.ndarray)
    d[0, 0] = 100.0
    assert h[0, 0] == 0.0


def test_calls_run_on_the_inputs_device_in_one_chunk(cupy):
    """Scratch goes to the input's device; a batch that fits runs as one im2col matmul."""
    x, w = cupy.ones((8, 3, 16, 16)), cupy.ones((4, 3, 3, 3))
    calls = [0]
    real = cupy.matmul

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    cupy.matmul = counting
    try:
        with cupy.cuda.Device(0):
            y = npconv.conv2d(x, w, padding=1, algorithm="im2col")
    finally:
        cupy.matmul = real
    assert calls[0] == 1 and y.device.id == x.device.id
