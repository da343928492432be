"""The device branches of npconv, on every commit: the properties of test_paths.py and
test_torch_unfold.py run on the 'standin' backend (npconv/_standin.py).

The stand-in's arrays are NumPy arrays in a wrapper that behaves like CuPy's
for what npconv uses: no host threads, device-sized chunks, writable strided
views, calls under ``with x.device``, and it refuses what CuPy refuses (implicit
host conversion, host arrays mixed into a call, ``from_dlpack`` of host memory).
Every call here also runs under ``allow_synchronize(False)`` (as
``cupyx.allow_synchronize``): a device-to-host sync inside npconv fails the test.
Results are compared with the reference computed by NumPy (and with torch for
im2col/col2im), so a device branch that computes something else fails here,
without a GPU.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_paths import ACCEPTED, FAST, LAYOUTS, WIDE
from test_torch_unfold import col_shape, torch_col2im, torch_im2col, unfold_args

import npconv
import npconv.nn
from npconv import _standin, backend, workspace
from npconv.testing import PADDING_MODES, assert_close, check_grad, conv_configs, random_conv_arrays

F = torch.nn.functional

with npconv.use_backend("standin") as XP:  # the stand-in module (cupy's place)
    pass

general = conv_configs(ndim=(1, 2, 3), min_batch=0, max_batch=3, max_channels=4,
                       padding_modes=PADDING_MODES, max_output=5)


def dev(a, layout="contiguous"):
    """A host array on the stand-in device, in ``layout`` (made on the device)."""
    if a is None:
        return None
    d = XP.asarray(a)
    if layout == "fortran":
        return XP.asfortranarray(d)
    if layout == "negative":
        return XP.flip(XP.flip(d, -1).copy(), -1)
    if layout == "strided":
        big = XP.zeros(d.shape[:-1] + (2 * d.shape[-1],), dtype=d.dtype)
        big[..., ::2] = d
        return big[..., ::2]
    return d


def host(a):
    return None if a is None else a.get()


def on_device(call):
    """Run ``call`` with device-to-host syncs forbidden; its arrays must be stand-ins."""
    with _standin.allow_synchronize(False):
        result = call()
    for a in result if isinstance(result, tuple) else (result,):
        assert a is None or type(a) is XP.ndarray, type(a)
    return result


def refuses(name, call):
    try:
        return on_device(call)
    except ValueError as exc:
        assert f"algorithm={name!r} cannot compute" in str(exc), exc
        return None


def check_conv(name, config, dtype, layout):
    arrays = random_conv_arrays(config, dtype, seed=0, grad_output=True)
    x, w, b, gy = (dev(a, layout) for a in arrays)
    xr, wr, br, gyr = (None if a is None else a.astype(WIDE.get(a.dtype, a.dtype))
                       for a in arrays)
    kw = config.kwargs()
    red = config.reduction_size
    y = refuses(name, lambda: npconv.conv(x, w, b, **kw, algorithm=name))
    if y is not None:
        assert y.dtype == x.dtype
        assert_close(host(y), npconv.conv(xr, wr, br, **kw, algorithm="reference"),
                     reduction=red, err_msg=f"{name} forward, {config}")
    grads = refuses(name, lambda: npconv.conv_backward(gy, x, w, **kw, algorithm=name))
    if grads is not None:
        expected = npconv.conv_backward(gyr, xr, wr, **kw, algorithm="reference")
        out = np.prod(config.output_size) * config.batch
        for what, got, want, n in zip(("grad input", "grad weight", "grad bias"), grads,
                                      expected, (red, out, out)):
            assert got.dtype == x.dtype
            assert_close(host(got), want, reduction=n, err_msg=f"{name} {what}, {config}")
    for a, h in zip((x, w, b, gy), arrays):  # inputs untouched
        if a is not None:
            np.testing.assert_array_equal(host(a), h)


# --------------------------------------------------------------------------- every path


@pytest.mark.parametrize("name", FAST)
@given(config=general, dtype=st.sampled_from(["float64", "float32", "complex128"]),
       layout=st.sampled_from(LAYOUTS))
def test_every_path_on_the_standin_equals_the_reference_or_refuses(name, config, dtype, layout):
    check_conv(name, config, dtype, layout)


@pytest.mark.parametrize("name", sorted(ACCEPTED))
@given(data=st.data(), layout=st.sampled_from(LAYOUTS))
def test_each_path_on_the_standin_on_the_geometries_it_accepts(name, data, layout):
    config = data.draw(ACCEPTED[name], label="config")
    dtypes = ["float64", "float32"] if name == "winograd" else ["float64", "float32", "complex64"]
    check_conv(name, config, data.draw(st.sampled_from(dtypes), label="dtype"), layout)


@pytest.mark.parametrize("name", FAST)
@given(config=conv_configs(ndim=(1, 2, 3), transposed=True, max_channels=4, max_batch=2),
       dtype=st.sampled_from(["float64", "complex128"]), mode=st.sampled_from(PADDING_MODES))
def test_transposed_convolution_on_the_standin(name, config, dtype, mode):
    arrays = random_conv_arrays(config, dtype, seed=1, grad_output=True)
    x, w, b, gy = (dev(a) for a in arrays)
    hx, hw, hb, hgy = arrays
    kw = dict(config.kwargs(padding_mode=False), padding_mode=mode)
    try:
        expected = npconv.conv_transpose(hx, hw, hb, **kw, algorithm="reference")
    except ValueError:
        return  # the mode's padding limit (reflect < size) does not hold for this output
    red = max(1, config.reduction_size)
    y = refuses(name, lambda: npconv.conv_transpose(x, w, b, **kw, algorithm=name))
    if y is not None:
        assert_close(host(y), expected, reduction=red, err_msg=f"{name} transposed, {config}")
    grads = refuses(name, lambda: npconv.conv_transpose_backward(gy, x, w, **kw,
                                                                 algorithm=name))
    if grads is not None:
        want = npconv.conv_transpose_backward(hgy, hx, hw, **kw, algorithm="reference")
        for got, ref in zip(grads, want):
            assert_close(host(got), ref, reduction=red * 8, err_msg=f"{name} transposed grads")


@pytest.mark.parametrize("name", ["im2col", "winograd", "direct", "phases", "flipped"])
def test_a_small_workspace_chunks_every_path_on_the_standin(name):
    """Under a small limit a device call is still cut into chunks (of images, or of
    output rows of one image for the forward): the result must not change."""
    rng = np.random.default_rng(3)
    hx, hw = rng.standard_normal((5, 4, 33, 35)), rng.standard_normal((5, 4, 3, 3))
    stride = 2 if name == "phases" else 1
    kw = dict(padding=1, stride=stride)
    y_ref = npconv.conv(hx, hw, **kw, algorithm="reference")
    hgy = rng.standard_normal(y_ref.shape)
    g_ref = npconv.conv_backward(hgy, hx, hw, **kw, algorithm="reference")
    x, w, gy = dev(hx), dev(hw), dev(hgy)
    old = npconv.get_workspace_limit()
    try:
        npconv.set_workspace_limit(2**20)  # a few images' buffers: several chunks
        y = on_device(lambda: npconv.conv(x, w, **kw, algorithm=name))
        grads = on_device(lambda: npconv.conv_backward(gy, x, w, **kw, algorithm=name))
        npconv.set_workspace_limit(160 * 2**10)  # less than one image's forward buffers
        y_rows = on_device(lambda: npconv.conv(x, w, **kw, algorithm=name))
    finally:
        npconv.set_workspace_limit(old)
    assert_close(host(y), y_ref, reduction=36)
    assert_close(host(y_rows), y_ref, reduction=36)
    for got, want in zip(grads, g_ref):
        assert_close(host(got), want, reduction=5 * 33 * 35)


# --------------------------------------------------------------------------- im2col / col2im

configs_2d = conv_configs(ndim=2, groups=False, allow_same=False, unbatched=True, max_batch=2,
                          max_channels=3)
configs_nd = conv_configs(ndim=(1, 2, 3), groups=False, padding_modes=PADDING_MODES,
                          unbatched=True, max_channels=2, max_output=3, allow_same_upper=True)
seeds = st.integers(0, 2**31 - 1)


@given(configs_2d, st.sampled_from(["float32", "float64"]), seeds)
def test_im2col_and_col2im_on_the_standin_equal_unfold_and_fold(cfg, dtype, seed):
    hx = random_conv_arrays(cfg, dtype, seed, bias=False)[0]
    p = cfg.padding
    cols = on_device(lambda: npconv.im2col(dev(hx), cfg.kernel_size, dilation=cfg.dilation,
                                           padding=p, stride=cfg.stride))
    expected = F.unfold(torch.from_numpy(hx), cfg.kernel_size, cfg.dilation, p, cfg.stride)
    np.testing.assert_array_equal(host(cols), expected.numpy())
    back = on_device(lambda: npconv.col2im(cols, cfg.input_size, cfg.kernel_size,
                                           dilation=cfg.dilation, padding=p, stride=cfg.stride))
    folded = F.fold(expected, cfg.input_size, cfg.kernel_size, cfg.dilation, p, cfg.stride)
    assert_close(host(back), folded.numpy(), reduction=math.prod(cfg.kernel_size))


@given(configs_nd, st.sampled_from(["float32", "float64"]), seeds)
def test_im2col_col2im_nd_on_the_standin_equal_torch(cfg, dtype, seed):
    hx = random_conv_arrays(cfg, dtype, seed, bias=False)[0]
    got = on_device(lambda: npconv.im2col(dev(hx), **unfold_args(cfg)))
    np.testing.assert_array_equal(host(got), torch_im2col(hx, cfg))
    hcols = np.random.default_rng(seed).uniform(-1, 1, col_shape(cfg)).astype(dtype)
    back = on_device(lambda: npconv.col2im(dev(hcols), cfg.input_size, **unfold_args(cfg)))
    reduction = math.prod(cfg.kernel_size) * math.prod(n + 2 * 2 for n in cfg.output_size)
    assert_close(host(back), torch_col2im(hcols, cfg), reduction=reduction)


@given(configs_nd, st.sampled_from(["float32", "float64"]), seeds)
def test_im2col_into_out_on_the_standin_equals_torch(cfg, dtype, seed):
    hx = random_conv_arrays(cfg, dtype, seed, bias=False)[0]
    out = dev(np.full(col_shape(cfg), np.nan, dtype=dtype))
    got = on_device(lambda: npconv.im2col(dev(hx), **unfold_args(cfg), out=out))
    assert got is out
    np.testing.assert_array_equal(host(out), torch_im2col(hx, cfg))
    with pytest.raises(TypeError, match="out must be a standin array like x, got ndarray"):
        npconv.im2col(dev(hx), **unfold_args(cfg), out=np.empty(col_shape(cfg), dtype))


@given(configs_nd, seeds)
def test_patches_on_the_standin_equal_im2col_and_are_writable_views(cfg, seed):
    hx = random_conv_arrays(cfg, "float64", seed, bias=False)[0]
    if not cfg.batched:
        hx = hx[None]
    x = dev(hx)
    view = on_device(lambda: npconv.patches(x, cfg.kernel_size, **cfg.patch_kwargs()))
    assert view.shape == hx.shape[:2] + cfg.kernel_size + cfg.output_size
    np.testing.assert_array_equal(host(view).reshape(hx.shape[0], -1,
                                                     math.prod(cfg.output_size)),
                                  torch_im2col(hx, cfg))
    # the documented difference: CuPy arrays have no read-only flag
    assert not hasattr(view.flags, "writeable")


# --------------------------------------------------------------------------- layers, check_grad


def test_nn_layers_and_check_grad_on_the_standin():
    with npconv.use_backend("standin"):
        layer = npconv.nn.Conv2d(4, 6, 3, stride=2, padding=1, rng=0, dtype="float64")
        up = npconv.nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, rng=1,
                                       dtype="float64")
    assert type(layer.weight) is XP.ndarray
    hx = np.random.default_rng(2).standard_normal((2, 4, 9, 9))
    z = on_device(lambda: up(layer(dev(hx))))
    gz = dev(np.random.default_rng(3).standard_normal(z.shape))
    gx = on_device(lambda: layer.backward(up.backward(gz)))
    hw, hb, hw2, hb2 = (host(a) for a in (layer.weight, layer.bias, up.weight, up.bias))
    y_ref = npconv.conv2d(hx, hw, hb, stride=2, padding=1)
    z_ref = npconv.conv_transpose2d(y_ref, hw2, hb2, stride=2, padding=1, output_padding=1)
    assert_close(host(z), z_ref, reduction=1000)
    gy_ref = npconv.conv_transpose2d_backward(host(gz), y_ref, hw2, stride=2, padding=1,
                                              output_padding=1)[0]
    gx_ref = npconv.conv2d_backward(gy_ref, hx, hw, stride=2, padding=1)[0]
    assert_close(host(gx), gx_ref, reduction=10000)

    kw = dict(stride=(2, 1), padding=1, padding_mode="reflect")
    x, w = dev(hx[:, :3, :6, :5]), dev(hw[:4, :3, :3, :2])
    err = check_grad(lambda x, w: npconv.conv2d(x, w, **kw),
                     lambda gy, x, w: npconv.conv2d_backward(gy, x, w, **kw)[:2], (x, w))
    assert err <= 1.0


# --------------------------------------------------------------------------- CuPy's rules


def test_the_standin_refuses_what_cupy_refuses():
    h = np.ones((1, 1, 4, 4))
    x = dev(h)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array"):
        np.asarray(x)
    with pytest.raises(TypeError):
        x + h  # noqa: B018 - a host array mixed into a device expression
    with pytest.raises(TypeError):
        XP.matmul(x[0, 0], h[0, 0])
    with pytest.raises(RuntimeError, match="DLPack"):
        XP.from_dlpack(h)
    with pytest.raises(TypeError, match="cannot mix NumPy and CuPy"):
        npconv.conv2d(h, dev(np.ones((1, 1, 3, 3))))
    with pytest.raises(TypeError, match="cannot share"):
        npconv.asarray(x)  # the active backend is NumPy: no implicit download
    with _standin.allow_synchronize(False), pytest.raises(RuntimeError, match="disallowed"):
        bool(x.sum() > 0)


def test_asarray_copies_host_arrays_to_the_standin_device():
    h = np.arange(6.0).reshape(2, 3)
    with npconv.use_backend("standin"):
        d = npconv.asarray(h)  # through DLPack: host memory is copied, not shared
        t = npconv.asarray(torch.arange(3.0))
    assert type(d) is XP.ndarray and type(t) is XP.ndarray
    d[0, 0] = 100.0
    assert h[0, 0] == 0.0
    np.testing.assert_array_equal(host(t), [0.0, 1.0, 2.0])


def test_the_standin_is_for_tests_only_and_takes_the_device_branches():
    assert "standin" not in npconv.backend.BACKENDS
    with pytest.raises(ValueError, match="'numpy', 'cupy'"):
        npconv.set_backend("gpu")
    owner = backend.backend_of(dev(np.zeros(1)))
    assert owner.name == "standin" and owner.device and not owner.host_threads
    x = dev(np.ones((2, 3, 8, 8)))
    entered = _standin.DEVICE.entered[0]
    npconv.conv2d(x, dev(np.ones((4, 3, 3, 3))))
    assert _standin.DEVICE.entered[0] > entered  # the call ran under `with x.device`
    with backend.device_of(np.zeros(3)):  # a no-op on NumPy
        pass


def test_device_chunks_run_up_to_the_workspace_limit_below_two_gib():
    old = npconv.get_workspace_limit()
    try:
        npconv.set_workspace_limit(64 * 2**20)
        # on the host: chunks of about TARGET_CHUNK_BYTES, a batch split for threads
        assert workspace.chunk_length(2**20, 64) == 2
        assert workspace.row_chunks(2**10, 1024, 4)[0] < 4
        with workspace.device_chunks(True):
            assert workspace.chunk_length(2**20, 64) == 64  # one chunk
            assert workspace.row_chunks(2**10, 1024, 4) == (4, 1024)
            assert workspace.row_chunks(2**20, 100, 1) == (1, 50)  # 100 MiB: 2 row blocks
        npconv.set_workspace_limit(64 * 2**30)  # a large GPU's limit
        with workspace.device_chunks(True):
            assert workspace.device_target() == 2**31 - 1
            assert workspace.chunk_length(2**30, 8) == 1  # no chunk reaches 2 GiB
    finally:
        npconv.set_workspace_limit(old)


def test_device_calls_do_not_split_a_batch_that_fits():
    """One chunk on a device: the im2col forward of a small batch is one matmul."""
    hx, hw = np.ones((8, 3, 16, 16)), np.ones((4, 3, 3, 3))
    x, w = dev(hx), dev(hw)
    before = _standin.MATMULS[0]
    npconv.conv2d(x, w, padding=1, algorithm="im2col")
    assert _standin.MATMULS[0] == before + 1


@pytest.mark.parametrize("name, x_shape, w_shape, kw", [
    ("im2col", (8, 4, 10, 10), (6, 4, 3, 3), dict(padding=1)),
    ("im2col", (8, 4, 10, 10), (6, 2, 3, 3), dict(padding=1, groups=2)),
    ("im2col", (8, 4, 10, 10), (6, 4, 3, 3), dict(padding=1, stride=2)),
    ("pointwise", (32, 8, 6, 6), (4, 8, 1, 1), {}),
])
def test_a_device_backward_makes_one_matmul_per_gradient(name, x_shape, w_shape, kw):
    """Not one per image: on a GPU each matmul is a launch that holds the host 20-35 us
    (an H200 with CuPy 14), and the weight gradient contracts over the whole batch."""
    rng = np.random.default_rng(2)
    x, w = dev(rng.standard_normal(x_shape)), dev(rng.standard_normal(w_shape))
    gy = npconv.conv2d(x, w, **kw, algorithm=name)
    before = _standin.MATMULS[0]
    gx, gw, _ = npconv.conv2d_backward(gy, x, w, **kw, algorithm=name)
    assert _standin.MATMULS[0] == before + 2
    hx, hw, hgy = x.get(), w.get(), gy.get()
    rgx, rgw, _ = npconv.conv2d_backward(hgy, hx, hw, **kw, algorithm="reference")
    np.testing.assert_allclose(gx.get(), rgx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw.get(), rgw, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- matmul targets

COPY_FREE = [  # (path, x shape, weight shape, kwargs): CuPy would copy no matmul operand
    ("im2col", (4, 16, 20, 20), (16, 8, 3, 3), dict(padding=1, groups=2)),
    ("im2col", (2, 8, 12, 12), (8, 8, 3, 3), dict(padding=1, stride=2)),
    ("flipped", (4, 16, 20, 20), (16, 16, 3, 3), dict(padding=1)),
    ("pointwise", (4, 16, 12, 12), (24, 16, 1, 1), {}),
    ("phases", (2, 3, 140, 140), (8, 3, 7, 7), dict(stride=2, padding=3)),
    ("auto", (16, 64, 14, 14), (128, 64, 3, 3), dict(stride=2, padding=1)),
]


@pytest.mark.parametrize("name, x_shape, w_shape, kw", COPY_FREE)
def test_device_matmuls_have_contiguous_targets_and_operands(name, x_shape, w_shape, kw):
    """What CuPy's matmul would copy (a non-contiguous out or >= 3-d operand, a batch
    broadcast), as the stand-in records it: nothing, on these paths' device branches."""
    rng = np.random.default_rng(0)
    x, w = dev(rng.standard_normal(x_shape)), dev(rng.standard_normal(w_shape))
    _standin.MATMUL_COPIES.clear()
    y = npconv.conv2d(x, w, **kw, algorithm=name)
    npconv.conv2d_backward(y, x, w, **kw, algorithm=name)
    assert _standin.MATMUL_COPIES == []


@pytest.mark.parametrize("a_shape, b_shape, how", [
    ((3, 4), (4, 5), "c"), ((2, 3, 4), (4, 5), "c"), ((3, 4), (6, 4, 5), "c"),
    ((2, 3, 4), (2, 5, 4), "bt"), ((40, 3, 4), (40, 5, 4), "bt"), ((2, 3, 4), (2, 4, 5), "out"),
    ((5, 2, 3, 4), (2, 4, 6), "c"), ((2, 6, 4), (5, 2, 4, 7), "c"),
])
def test_the_device_matmul_equals_numpy(a_shape, b_shape, how):
    from npconv.paths._common import matmul

    rng = np.random.default_rng(1)
    ha, hb = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    if how == "bt":  # b given transposed (a view)
        hb = hb.swapaxes(-1, -2)
    expected = np.matmul(ha, hb)
    a, b = dev(ha), dev(hb.swapaxes(-1, -2)).swapaxes(-1, -2) if how == "bt" else dev(hb)
    if how == "out":  # a non-contiguous target
        out = XP.zeros(expected.shape[:-2] + expected.shape[-1:] + expected.shape[-2:-1])
        got = matmul(XP, a, b, out=out.swapaxes(-1, -2))
    else:
        got = matmul(XP, a, b)
    np.testing.assert_allclose(host(got), expected, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(matmul(np, ha, hb), expected)


def test_python_m_npconv_runs_on_the_standin(capsys):
    from npconv.__main__ import main

    with npconv.use_backend("standin"):
        assert main(["--batch", "4", "--size", "8", "--repeat", "1"]) == 0
    assert "backend standin" in capsys.readouterr().out


def test_winograd_constants_are_device_arrays_built_once_per_dtype():
    from npconv.paths import winograd_transforms as wt

    k32 = wt.constants(XP, np.dtype("float32"), 4)
    assert wt.constants(XP, np.dtype("float32"), 4) is k32  # cached: no upload per call
    assert wt.constants(XP, np.dtype("float64"), 4) is not k32
    assert type(k32.b_t) is XP.ndarray and k32.b_t.dtype == np.float32
    assert type(wt.constants(np, np.dtype("float32"), 4).b_t) is np.ndarray


def test_the_standin_counts_syncs_that_cupy_makes():
    x = dev(np.arange(6.0) - 2)
    with _standin.allow_synchronize(False):
        y = XP.where(x > 0, x, 0)  # elementwise: no sync
        for call in (lambda: x[x > 0], lambda: XP.nonzero(x), lambda: x.nonzero(),
                     lambda: float(x[0]), lambda: x.get()):
            with pytest.raises(RuntimeError, match="disallowed"):
                call()
    np.testing.assert_array_equal(host(y), [0, 0, 0, 1, 2, 3])
