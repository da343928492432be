"""Every convolution algorithm ('auto', 'im2col', 'direct', 'winograd') against torch and each other.

The fast paths (1x1 matmul, depthwise multiply-adds, Winograd F(4x4, 3x3),
chunked im2col) must agree with torch's convolution and its autograd
gradients in float64 (tight) and float32 (tolerance scaled by sqrt(C*K)),
and must keep honouring the workspace limit.
"""

from __future__ import annotations

import importlib
import math
import tracemalloc

import numpy as np
import pytest
import torch  # the reference: without it these tests must fail, not skip
from hypothesis import given
from hypothesis import strategies as st

import npconv
from npconv import workspace

conv_module = importlib.import_module("npconv.conv")

F = torch.nn.functional

ALGOS = ("auto", "im2col", "direct")
MODULES = {1: "Conv1d", 2: "Conv2d", 3: "Conv3d"}


@pytest.fixture
def restore_limit():
    old = npconv.get_workspace_limit()
    yield
    npconv.set_workspace_limit(old)


def _torch_conv(x, w, b, stride, padding, dilation, groups, mode, gy):
    """torch's output and (grad_input, grad_weight, grad_bias) for a float64/32 problem."""
    nd = w.ndim - 2
    c, o = x.shape[1], w.shape[0]
    mod = getattr(torch.nn, MODULES[nd])(
        c, o, w.shape[2:], stride, padding, dilation, groups, True, mode,
        dtype=torch.float64,
    )
    with torch.no_grad():
        mod.weight.copy_(torch.from_numpy(w.astype(np.float64)))
        mod.bias.copy_(torch.from_numpy(b.astype(np.float64)))
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    y = mod(xt)
    if gy is None:
        return y.detach().numpy(), None
    y.backward(torch.from_numpy(gy.astype(np.float64)))
    return y.detach().numpy(), (xt.grad.numpy(), mod.weight.grad.numpy(), mod.bias.grad.numpy())


def _random_case(rng, depthwise):
    nd = int(rng.integers(1, 4))
    n = int(rng.integers(0, 3))
    if depthwise:
        c = int(rng.integers(2, 5))
        g, o = c, c * int(rng.integers(1, 3))
    else:
        g = int(rng.integers(1, 3))
        c, o = g * int(rng.integers(1, 3)), g * int(rng.integers(1, 3))
    k = tuple(int(v) for v in rng.integers(1, 4, nd))
    s = tuple(int(v) for v in rng.integers(1, 3, nd)) if rng.random() < 0.6 else (1,) * nd
    d = tuple(int(v) for v in rng.integers(1, 3, nd))
    p = tuple(int(v) for v in rng.integers(0, 3, nd))
    mode = ("zeros", "reflect", "replicate", "circular")[int(rng.integers(0, 4))]
    size = []
    for i in range(nd):
        span = d[i] * (k[i] - 1) + 1
        lo = max(1, span - 2 * p[i], p[i] + 1 if mode != "zeros" else 1)
        size.append(int(rng.integers(lo, lo + 5)))
    return n, c, o, g, tuple(size), k, s, d, p, mode


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("depthwise", [False, True])
def test_every_algorithm_matches_torch_float64(seed, depthwise):
    rng = np.random.default_rng(1000 * depthwise + seed)
    n, c, o, g, size, k, s, d, p, mode = _random_case(rng, depthwise)
    x = rng.standard_normal((n, c) + size)
    w = rng.standard_normal((o, c // g) + k)
    b = rng.standard_normal(o)
    y_ref, _ = _torch_conv(x, w, b, s, p, d, g, mode, None)
    gy = rng.standard_normal(y_ref.shape)
    _, (gx_ref, gw_ref, gb_ref) = _torch_conv(x, w, b, s, p, d, g, mode, gy)
    for algo in ALGOS:
        y = npconv.conv(x, w, b, s, p, d, g, mode, algo)
        np.testing.assert_allclose(y, y_ref, atol=1e-10, err_msg=algo)
        gx, gw, gb = npconv.conv_backward(gy, x, w, s, p, d, g, mode, algo)
        np.testing.assert_allclose(gx, gx_ref, atol=1e-10, err_msg=f"{algo} grad_input")
        np.testing.assert_allclose(gw, gw_ref, atol=1e-10, err_msg=f"{algo} grad_weight")
        np.testing.assert_allclose(gb, gb_ref, atol=1e-10, err_msg=f"{algo} grad_bias")


WINOGRAD_CASES = [
    # n, c, o, groups, (h, w), padding
    (2, 3, 4, 1, (7, 9), 1),
    (1, 4, 6, 2, (5, 5), 0),
    (3, 2, 2, 1, (3, 3), 0),  # a single output pixel
    (2, 5, 3, 1, (4, 11), 2),
    (1, 2, 2, 1, (1, 1), 1),  # output 1x1 from a 1x1 image
    (0, 3, 4, 1, (6, 6), 1),  # empty batch
    (2, 6, 4, 2, (8, 6), "same"),
    (1, 3, 5, 1, (9, 10), (0, 2)),
    (1, 16, 16, 1, (13, 14), 1),  # several tiles with a ragged edge
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", WINOGRAD_CASES)
def test_winograd_matches_torch(case, dtype):
    n, c, o, g, size, padding = case
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, c) + size).astype(dtype)
    w = (rng.standard_normal((o, c // g, 3, 3)) / math.sqrt(9 * c // g)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    y_ref, _ = _torch_conv(x, w, b, 1, padding, 1, g, "zeros", None)
    gy = rng.standard_normal(y_ref.shape).astype(dtype)
    _, (gx_ref, gw_ref, gb_ref) = _torch_conv(x, w, b, 1, padding, 1, g, "zeros", gy)
    if dtype == "float64":
        tol = 1e-10
    else:
        tol = 1e-4 * math.sqrt(9 * c // g)
    y = npconv.conv2d(x, w, b, 1, padding, 1, g, algorithm="winograd")
    assert y.dtype == np.dtype(dtype)
    _close(y, y_ref, tol)
    gx, gw, gb = npconv.conv2d_backward(gy, x, w, 1, padding, 1, g, algorithm="winograd")
    _close(gx, gx_ref, tol)
    _close(gw, gw_ref, tol)
    _close(gb, gb_ref, tol)


def _close(a, ref, tol):
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    np.testing.assert_allclose(a, ref, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("blocked", [True, False])
@pytest.mark.parametrize("chunks", ["whole images", "tile rows"])
@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("case", [(2, 6, 4, 2, (7, 9), ((1, 1), (1, 1))),
                                  (3, 4, 8, 1, (13, 14), ((1, 1), (0, 2))),
                                  (2, 4, 6, 2, (10, 26), ((1, 0), (2, 1))),
                                  (5, 3, 4, 1, (17, 6), ((2, 2), (2, 0))),
                                  (1, 3, 5, 1, (3, 3), ((0, 0), (0, 0)))])
def test_winograd_tiles_match_torch(case, tile, chunks, blocked, monkeypatch):
    """The forward (bias added inside the tile transform) and the transposed algorithm
    for the weight gradient: both tile sizes, both input transforms (the blocked one
    with junk tiles), uneven padding, and chunks of whole images or of a few tile rows
    (pad rows refilled per chunk, the last chunk of another shape, lanes summed)."""
    n, c, o, g, size, pads = case
    rng = np.random.default_rng(11)
    x = rng.standard_normal((n, c) + size)
    w = torch.from_numpy(rng.standard_normal((o, c // g, 3, 3))).requires_grad_()
    b = rng.standard_normal(o)
    ref = F.conv2d(torch.from_numpy(np.pad(x, ((0, 0), (0, 0)) + pads)), w,
                   torch.from_numpy(b), groups=g)
    gy = rng.standard_normal(tuple(ref.shape))
    ref.backward(torch.from_numpy(gy))
    winograd = importlib.import_module("npconv.winograd")
    monkeypatch.setattr(winograd, "BLOCKED_MIN_TILES", 1 if blocked else 10**9)
    if chunks == "tile rows":
        monkeypatch.setattr(winograd, "TARGET_CHUNK_BYTES", 1)
        monkeypatch.setattr(workspace, "MIN_SPLIT_BYTES", 1)
    y = winograd.conv2d(x, w.detach().numpy(), b, pads, g, tile=tile)
    np.testing.assert_allclose(y, ref.detach().numpy(), rtol=1e-11, atol=1e-11)
    got = winograd.grad_weight(gy, x, pads, g, tile=tile)
    np.testing.assert_allclose(got, w.grad.numpy(), rtol=1e-11, atol=1e-11)


def test_winograd_rejects_what_it_cannot_do():
    x = np.ones((1, 2, 6, 6))
    with pytest.raises(ValueError, match="winograd"):
        npconv.conv2d(x, np.ones((2, 2, 3, 3)), stride=2, algorithm="winograd")
    with pytest.raises(ValueError, match="winograd"):
        npconv.conv2d(x, np.ones((2, 2, 5, 5)), algorithm="winograd")
    with pytest.raises(ValueError, match="winograd"):
        npconv.conv2d(x.astype(complex), np.ones((2, 2, 3, 3), complex), algorithm="winograd")
    with pytest.raises(ValueError, match="winograd"):
        npconv.conv2d(x, np.ones((2, 2, 3, 3)), padding=1, padding_mode="reflect",
                      algorithm="winograd")
    with pytest.raises(ValueError, match="algorithm"):
        npconv.conv2d(x, np.ones((2, 2, 3, 3)), algorithm="fft")


def test_auto_picks_winograd_only_with_enough_positions():
    geometry = npconv.geometry.ConvGeometry.build((32, 32), 3, 1, 1)
    enough = conv_module.WINOGRAD_MIN_POSITIONS // geometry.out_volume
    pick = conv_module._choose
    assert pick("auto", geometry, 1, 16, 24, np.float32, batch=enough) == "winograd"
    assert pick("auto", geometry, 1, 16, 24, np.float32, batch=enough - 1) == "im2col"
    assert pick("auto", geometry, 1, 8, 24, np.float32, batch=enough) == "im2col"  # channels


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_auto_picks_and_matches_fast_paths(dtype):
    """The shapes that select Winograd / depthwise / pointwise in 'auto', against float64 torch."""
    rng = np.random.default_rng(3)
    cases = [
        # (n, c, o, groups, size, k, padding, expected method)
        (2, 16, 24, 1, (10, 9), 3, 1, "im2col"),  # Winograd-able, too few positions
        (2, 8, 16, 8, (9, 8), 3, 1, "direct"),  # depthwise with channel multiplier 2
        (2, 8, 8, 8, (7, 7), 3, 0, "direct"),
        (2, 16, 8, 1, (6, 7), 1, 0, "pointwise"),
        (2, 3, 16, 1, (9, 9), 3, 1, "im2col"),  # too few channels for Winograd
    ]
    for n, c, o, g, size, k, padding, expected in cases:
        x = rng.standard_normal((n, c) + size).astype(dtype)
        w = (rng.standard_normal((o, c // g, k, k)) / math.sqrt(k * k * c // g)).astype(dtype)
        b = rng.standard_normal(o).astype(dtype)
        geometry = npconv.geometry.ConvGeometry.build(size, k, 1, padding)
        assert conv_module._choose("auto", geometry, g, c, o, x.dtype, batch=n) == expected
        y_ref, _ = _torch_conv(x, w, b, 1, padding, 1, g, "zeros", None)
        gy = rng.standard_normal(y_ref.shape).astype(dtype)
        _, refs = _torch_conv(x, w, b, 1, padding, 1, g, "zeros", gy)
        tol = 1e-10 if dtype == "float64" else 1e-4 * math.sqrt(k * k * c // g)
        _close(npconv.conv2d(x, w, b, 1, padding, 1, g), y_ref, tol)
        for got, ref in zip(npconv.conv2d_backward(gy, x, w, 1, padding, 1, g), refs):
            assert got.dtype == np.dtype(dtype)
            _close(got, ref, tol)


@pytest.mark.parametrize("groups, c_in, c_out", [(1, 16, 16), (8, 8, 16), (4, 4, 4)])
def test_transposed_convolution_on_fast_paths(groups, c_in, c_out):
    """conv_transpose runs the grad-input map (Winograd / depthwise in 'auto')."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, c_in, 7, 6))
    w = rng.standard_normal((c_in, c_out // groups, 3, 3))
    b = rng.standard_normal(c_out)
    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    yt = F.conv_transpose2d(xt, wt, torch.from_numpy(b), 1, 1, 0, groups)
    y = npconv.conv_transpose2d(x, w, b, 1, 1, 0, groups)
    np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-10)
    gy = rng.standard_normal(y.shape)
    yt.backward(torch.from_numpy(gy))
    gx, gw, _ = npconv.conv_transpose2d_backward(gy, x, w, 1, 1, 0, groups)
    np.testing.assert_allclose(gx, xt.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(gw, wt.grad.numpy(), atol=1e-10)


@st.composite
def _small_conv(draw):
    nd = draw(st.integers(1, 3))
    depthwise = draw(st.booleans())
    if depthwise:
        c = draw(st.integers(2, 4))
        g, o = c, c * draw(st.integers(1, 2))
    else:
        g = draw(st.integers(1, 2))
        c, o = g * draw(st.integers(1, 3)), g * draw(st.integers(1, 3))
    k = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    s = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    d = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    out = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    p = tuple(draw(st.integers(0, 2)) for _ in range(nd))
    # an input size that yields `out` windows: (n + 2p - span) // s + 1 == out
    size = tuple(max(1, (o_ - 1) * s_ + d_ * (k_ - 1) + 1 - 2 * p_ + draw(st.integers(0, s_ - 1)))
                 for o_, s_, d_, k_, p_ in zip(out, s, d, k, p))
    n = draw(st.integers(0, 2))
    seed = draw(st.integers(0, 2**16))
    return n, c, o, g, size, k, s, d, p, seed


@given(_small_conv())
def test_algorithms_agree_float32(case):
    """im2col, direct and auto give the same float32 results (no torch needed)."""
    n, c, o, g, size, k, s, d, p, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c) + size).astype(np.float32)
    w = rng.standard_normal((o, c // g) + k).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    y0 = npconv.conv(x, w, b, s, p, d, g, algorithm="im2col")
    gy = rng.standard_normal(y0.shape).astype(np.float32)
    g0 = npconv.conv_backward(gy, x, w, s, p, d, g, algorithm="im2col")
    tol = 1e-5 * math.sqrt(c // g * math.prod(k)) * 10
    for algo in ("direct", "auto"):
        y = npconv.conv(x, w, b, s, p, d, g, algorithm=algo)
        assert y.dtype == np.float32
        _close(y, y0, tol)
        for got, ref in zip(npconv.conv_backward(gy, x, w, s, p, d, g, algorithm=algo), g0):
            assert got.dtype == np.float32
            _close(got, ref, tol)


@pytest.mark.parametrize("algo", ["im2col", "direct", "winograd", "auto"])
def test_small_workspace_limit_gives_same_result(algo, restore_limit):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 16, 9, 9))
    w = rng.standard_normal((16, 16, 3, 3))
    b = rng.standard_normal(16)
    gy = rng.standard_normal((5, 16, 9, 9))
    y0 = npconv.conv2d(x, w, b, padding=1, algorithm=algo)
    g0 = npconv.conv2d_backward(gy, x, w, padding=1, algorithm=algo)
    npconv.set_workspace_limit(256_000)  # about one image's buffers: chunks of one or two
    y1 = npconv.conv2d(x, w, b, padding=1, algorithm=algo)
    np.testing.assert_allclose(y1, y0, atol=1e-12)
    for got, ref in zip(npconv.conv2d_backward(gy, x, w, padding=1, algorithm=algo), g0):
        np.testing.assert_allclose(got, ref, atol=1e-12)


@pytest.mark.parametrize("groups, c, padding", [(1, 3, 1), (2, 4, 0), (1, 2, 2)])
def test_stacked_direct_backward_in_uneven_chunks_matches_torch(groups, c, padding,
                                                                restore_limit):
    """Few channels per group, stride 1: the direct backward stacks every kernel offset
    into one matmul and sums per-offset slabs. Chunks of a few images, the last one
    smaller, must give torch's gradients."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((7, c, 12, 10))
    w = rng.standard_normal((6, c // groups, 3, 3))
    b = rng.standard_normal(6)
    y, _ = _torch_conv(x, w, b, 1, padding, 1, groups, "zeros", None)
    gy = rng.standard_normal(y.shape)
    _, expected = _torch_conv(x, w, b, 1, padding, 1, groups, "zeros", gy)
    npconv.set_workspace_limit(300_000)  # chunks of 2-3 images for these shapes
    got = npconv.conv2d_backward(gy, x, w, padding=padding, groups=groups, algorithm="direct")
    for a, ref in zip(got, expected):
        _close(a, ref, 1e-12)


@pytest.mark.parametrize("size, kernel, dilation, padding, groups, mode", [
    ((12, 10), (3, 3), 1, 1, 1, "zeros"),
    ((11, 9), (3, 2), (2, 1), (2, 0), 2, "reflect"),
    ((17,), (4,), 3, 2, 1, "circular"),
    ((5, 6, 7), (2, 3, 2), 1, (1, 0, 1), 2, "zeros"),
])
def test_flat_grad_weight_in_uneven_chunks_matches_torch(size, kernel, dilation, padding,
                                                         groups, mode, restore_limit):
    """Stride 1 on the im2col path: grad weight from flat shifted rows, with junk
    positions between rows, chunks of a few images and a smaller last chunk."""
    rng = np.random.default_rng(12)
    c, o = 4, 6
    x = rng.standard_normal((7, c) + size)
    w = rng.standard_normal((o, c // groups) + kernel)
    b = rng.standard_normal(o)
    y, _ = _torch_conv(x, w, b, 1, padding, dilation, groups, mode, None)
    gy = rng.standard_normal(y.shape)
    _, expected = _torch_conv(x, w, b, 1, padding, dilation, groups, mode, gy)
    npconv.set_workspace_limit(8 * x[0].nbytes * math.prod(kernel) // 2)  # a few images
    got = npconv.conv_backward(gy, x, w, 1, padding, dilation, groups, mode, algorithm="im2col")
    for a, ref in zip(got, expected):
        _close(a, ref, 1e-12)


@pytest.mark.parametrize("algo", ["im2col", "direct", "winograd"])
@pytest.mark.parametrize("groups", [1, 16])
def test_workspace_limit_too_small_raises(algo, groups, restore_limit):
    if algo == "winograd" and groups == 16:
        groups = 2
    x = np.ones((2, 16, 32, 32), np.float32)
    w = np.ones((16, 16 // groups, 3, 3), np.float32)
    npconv.set_workspace_limit(1024)
    with pytest.raises(MemoryError, match="workspace"):
        npconv.conv2d(x, w, padding=1, groups=groups, algorithm=algo)
    with pytest.raises(MemoryError, match="workspace"):
        npconv.conv2d_backward(np.ones((2, 16, 32, 32), np.float32), x, w, padding=1,
                               groups=groups, algorithm=algo)


def test_auto_falls_back_when_a_fast_path_does_not_fit(restore_limit):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 16, 9, 9))
    w = rng.standard_normal((16, 16, 3, 3))
    y0 = npconv.conv2d(x, w, padding=1, algorithm="im2col")
    gy = rng.standard_normal(y0.shape)
    ref = npconv.conv2d_backward(gy, x, w, padding=1, algorithm="im2col")
    # Forward: one output row of im2col columns (145 x 9 float64) fits, one Winograd
    # tile row (5184 float64) does not.
    npconv.set_workspace_limit(30_000)
    with pytest.raises(MemoryError):
        npconv.conv2d(x, w, padding=1, algorithm="winograd")
    np.testing.assert_allclose(npconv.conv2d(x, w, padding=1), y0, atol=1e-12)
    # Backward: one image's im2col buffers fit, the direct path's (auto's choice) do not.
    npconv.set_workspace_limit(150_000)
    with pytest.raises(MemoryError):
        npconv.conv2d_backward(gy, x, w, padding=1, algorithm="direct")
    for got, expected in zip(npconv.conv2d_backward(gy, x, w, padding=1), ref):
        np.testing.assert_allclose(got, expected, atol=1e-12)


def test_workspace_limit_from_environment(monkeypatch):
    monkeypatch.setenv("NPCONV_WORKSPACE_MB", "3")
    assert workspace._from_environment() == 3 * 2**20
    monkeypatch.setenv("NPCONV_WORKSPACE_MB", "-1")
    with pytest.raises(ValueError, match="NPCONV_WORKSPACE_MB"):
        workspace._from_environment()


def test_forward_memory_is_bounded():
    """No whole-batch buffer: peak extra memory stays near output + a chunk per thread."""
    x = np.ones((256, 16, 28, 28), np.float32)
    w = np.ones((16, 16, 3, 3), np.float32)
    out_bytes = x.nbytes
    whole_batch_cols = 9 * x.nbytes
    for algo in ("im2col", "winograd", "direct"):
        tracemalloc.start()
        npconv.conv2d(x, w, padding=1, algorithm=algo)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < out_bytes + whole_batch_cols / 4, (algo, peak)


@pytest.mark.parametrize("limit_mib", [256, 1])
def test_col2im_scratch_memory_follows_the_workspace_limit(limit_mib, restore_limit):
    """col2im's slabs take at most min(FOLD_BLOCK_BYTES, limit) per thread (plus the
    output), however many kernel offsets there are."""
    cols = np.ones((16, 128 * 9, 14 * 14), np.float32)
    npconv.set_workspace_limit(limit_mib * 2**20)
    patches_module = importlib.import_module("npconv.patches")
    budget = min(patches_module.FOLD_BLOCK_BYTES, limit_mib * 2**20)
    tracemalloc.start()
    out = npconv.col2im(cols, (28, 28), 3, padding=1, stride=2)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak <= out.nbytes + npconv.get_num_threads() * budget + 2**16, peak


@pytest.mark.parametrize("shape, kernel, stride, padding, dilation, groups", [
    ((5, 4, 28, 28), (3, 3), 2, 1, 1, 2),
    ((3, 3, 17, 40), (5, 3), (2, 3), (2, 1), 1, 1),
    ((2, 4, 9, 10, 12), (3, 2, 3), (2, 1, 2), 1, 1, 2),
    ((3, 2, 30, 29), (3, 3), 2, 0, 2, 1),
    ((4, 3, 33), (5,), 3, 2, 1, 1),
])
def test_phase_image_paths_match_torch(shape, kernel, stride, padding, dilation, groups,
                                       monkeypatch, restore_limit):
    """Forward and both gradients through flattened phase images, forced for any strided
    geometry (auto takes them only for large kernels over long rows): groups, dilation,
    1-3 spatial dims, uneven padding, chunks of a few images with a smaller last one."""
    monkeypatch.setattr(conv_module, "_phase_split",
                        lambda g: any(s > 1 for s in g.stride))
    monkeypatch.setattr(conv_module, "PHASE_MAX_JUNK", 10.0)
    rng = np.random.default_rng(13)
    x = rng.standard_normal(shape)
    o = 3 * groups
    w = rng.standard_normal((o, shape[1] // groups) + kernel)
    b = rng.standard_normal(o)
    y_ref, _ = _torch_conv(x, w, b, stride, padding, dilation, groups, "zeros", None)
    gy = rng.standard_normal(y_ref.shape)
    _, grads_ref = _torch_conv(x, w, b, stride, padding, dilation, groups, "zeros", gy)
    npconv.set_workspace_limit(3 * x[0].nbytes * math.prod(kernel))  # chunks of ~2 images
    y = npconv.conv(x, w, b, stride, padding, dilation, groups, algorithm="im2col")
    _close(y, y_ref, 1e-12)
    grads = npconv.conv_backward(gy, x, w, stride, padding, dilation, groups,
                                 algorithm="im2col")
    for got, ref in zip(grads, grads_ref):
        _close(got, ref, 1e-12)


@pytest.mark.parametrize("groups, bias, rows", [(1, True, "whole images"), (2, True, "rows"),
                                               (2, False, "whole images"), (1, False, "rows")])
def test_phase_image_forward_matches_torch(groups, bias, rows, monkeypatch):
    """The forward of large strided kernels from flattened phase images: groups (bias
    added after the matmul) or not (bias in the matmul), whole images or blocks of
    output rows per chunk, asymmetric padding."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 4, 23, 141))
    w = rng.standard_normal((6, 4 // groups, 7, 5))
    b = rng.standard_normal(6) if bias else None
    assert conv_module._phase_split(npconv.geometry.ConvGeometry.build(
        x.shape[2:], w.shape[2:], 2, (3, 1), 1))
    if rows == "rows":
        monkeypatch.setattr(workspace, "TARGET_CHUNK_BYTES", 1)
        monkeypatch.setattr(workspace, "MIN_SPLIT_BYTES", 1)
    y = npconv.conv2d(x, w, b, stride=2, padding=(3, 1), groups=groups, algorithm="im2col")
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                   None if b is None else torch.from_numpy(b), 2, (3, 1), 1, groups).numpy()
    _close(y, ref, 1e-12)


@pytest.mark.parametrize("shape, kernel, stride, padding, dilation, mode", [
    ((2, 3, 300), (9,), (2,), 4, 1, "zeros"),
    ((2, 2, 20, 140), (7, 7), (2, 2), 3, 1, "zeros"),
    ((1, 2, 17, 200), (5, 5), (2, 3), 2, (1, 2), "reflect"),
    ((1, 2, 6, 7, 140), (2, 3, 5), (1, 1, 2), 1, 1, "circular"),
])
def test_phase_split_windows_match_torch(shape, kernel, stride, padding, dilation, mode):
    """Long output rows under a large strided kernel: the im2col copy goes through
    per-phase images. Forward and all gradients must still be torch's."""
    w_shape = (4, shape[1]) + kernel
    win = importlib.import_module("npconv.conv")._Windows
    geometry = npconv.geometry.ConvGeometry.build(shape[2:], kernel, stride, padding,
                                                  dilation, mode)
    assert win(np.zeros(shape), geometry, shape[0]).phases is not None  # the path under test
    rng = np.random.default_rng(8)
    x, w, b = rng.standard_normal(shape), rng.standard_normal(w_shape), rng.standard_normal(4)
    y_ref, _ = _torch_conv(x, w, b, stride, padding, dilation, 1, mode, None)
    gy = rng.standard_normal(y_ref.shape)
    _, grads_ref = _torch_conv(x, w, b, stride, padding, dilation, 1, mode, gy)
    y = npconv.conv(x, w, b, stride, padding, dilation, padding_mode=mode, algorithm="im2col")
    _close(y, y_ref, 1e-12)
    grads = npconv.conv_backward(gy, x, w, stride, padding, dilation, padding_mode=mode,
                                 algorithm="im2col")
    for got, ref in zip(grads, grads_ref):
        _close(got, ref, 1e-12)
