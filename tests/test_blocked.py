"""The compiled direct path (``algorithm='blocked'``) where its kernels cut the work.

Reached by its public name: tiles of leading-axis planes (several per image, the
last one shorter), output channels across the forward's blocks and input and
output channels across grad weight's, a slab's planes outside the input, every
rank, threads (the same bits for any thread count), each thread's scratch kept
from one call to the next (a later call must not read what an earlier one left)
and inputs that are views. The hypothesis tests of tests/test_paths.py draw its
geometries too.
"""

from __future__ import annotations

import numpy as np
import pytest

import npconv
from npconv import compiled_rules
from npconv.testing import assert_close

pytest.importorskip("numba")

CASES = [
    # (x shape, kernel, padding, dilation, out channels)
    ((2, 16, 40, 40), (3, 3), 1, 1, 16),  # one tile an image
    ((2, 5, 9, 10, 11), (3, 3, 3), 1, 1, 13),  # 3-d, channels off the blocks
    ((1, 9, 70, 130), (3, 3), (1, 2), (1, 2), 20),  # several tiles, the last shorter
    ((3, 12, 2000), (4,), "same", 3, 9),  # 1-d, dilated, asymmetric padding (4, 5)
    ((2, 3, 30, 31), (5, 3), 0, 1, 8),  # no padding: frame = input
    ((1, 4, 6, 7, 5), (2, 3, 3), (1, 1, 2), (1, 2, 1), 3),
    # grad_output's channels-last copy: whole blocks of positions and channels, and edges
    ((2, 8, 300), (2,), 0, 5, 32),  # 1-d: a tile is one run of positions
    ((1, 4, 5, 6, 37), (3, 3, 3), 1, 1, 16),  # 3-d: runs along the last axis
    ((2, 3, 4, 5, 4, 6), (2, 2, 2, 3), 1, 1, 5),  # 4-d: NumPy's copy
    # output rows written straight by the kernel (O a multiple of its block, rows of at
    # least 2 vectors): blocks of 1, 2 and 3 vectors, the last masked (68 = 48 + 20 in
    # float32, 24 + 24 + 20 in float64); the 1-d case above ends in a 1-vector block
    ((1, 8, 4, 5, 68), (3, 3, 3), 1, 1, 8),
    ((2, 6, 9, 21), (3, 3), 1, 1, 16),  # float64 only (float32: too short, a tile)
    # tiles whose windows read only padding (the compiled fill writes zeros only)
    ((1, 4, 3, 2000), (3, 3), (6, 1), 1, 8),
]


def _check(x, w, b, kw):
    wide = [a.astype(np.float64) for a in (x, w, b)]
    y_ref = npconv.conv(*wide, **kw, algorithm="reference")
    gy = np.random.default_rng(1).standard_normal(y_ref.shape).astype(x.dtype)
    g_ref = npconv.conv_backward(gy.astype(np.float64), wide[0], wide[1], **kw,
                                 algorithm="reference")
    taps = int(np.prod(w.shape[2:]))
    before = [a.copy() for a in (x, w, b, gy)]
    y = npconv.conv(x, w, b, **kw, algorithm="blocked")
    assert y.dtype == x.dtype
    assert_close(y, y_ref, reduction=taps * w.shape[1], err_msg=f"forward {kw}")
    grads = npconv.conv_backward(gy, x, w, **kw, algorithm="blocked")
    positions = y_ref[:, 0].size
    for what, got, want, n in zip(("grad input", "grad weight"), grads, g_ref,
                                  (taps * w.shape[0], positions)):
        assert got.dtype == x.dtype
        assert_close(got, want, reduction=n, err_msg=f"{what} {kw}")
    for a, kept in zip((x, w, b, gy), before):
        np.testing.assert_array_equal(a, kept)  # inputs unchanged
    return y, grads


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
def test_tiles_blocks_and_ranks_equal_the_reference(case, dtype):
    shape, kernel, padding, dilation, o = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((o, shape[1]) + kernel).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    _check(x, w, b, dict(padding=padding, dilation=dilation))


def test_scratch_kept_between_calls_is_never_read_stale():
    """A large call, a small one with other padding, then the large one again: each
    thread's kept scratch holds the previous call's values, which must not leak."""
    rng = np.random.default_rng(2)
    big = (rng.standard_normal((2, 8, 48, 48)).astype(np.float32),
           rng.standard_normal((16, 8, 3, 3)).astype(np.float32),
           rng.standard_normal(16).astype(np.float32))
    small = (100 * rng.standard_normal((1, 3, 7, 9)).astype(np.float32),
             rng.standard_normal((5, 3, 3, 3)).astype(np.float32),
             rng.standard_normal(5).astype(np.float32))
    first = _check(*big, dict(padding=1))
    _check(*small, dict(padding=2))
    _check(*small, dict(padding=0))
    again = _check(*big, dict(padding=1))
    for a, b in zip((first[0],) + tuple(first[1][:2]), (again[0],) + tuple(again[1][:2])):
        np.testing.assert_array_equal(a, b)


def test_strided_slabs_from_a_view_give_the_same_bits():
    """A strided layer's slabs are filled by a compiled kernel from a C-contiguous
    input and by NumPy from any other view: the same slabs, so the same bits."""
    rng = np.random.default_rng(7)
    view = rng.standard_normal((2, 6, 19, 34)).astype(np.float32)[:, :, :, ::2]
    x = np.ascontiguousarray(view)
    w = rng.standard_normal((10, 6, 3, 3)).astype(np.float32)
    kw = dict(stride=2, padding=1, algorithm="blocked")
    y = npconv.conv(x, w, **kw)
    np.testing.assert_array_equal(npconv.conv(view, w, **kw), y)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    for a, b in zip(npconv.conv_backward(gy, view, w, **kw), npconv.conv_backward(gy, x, w, **kw)):
        np.testing.assert_array_equal(a, b)
    assert_close(y, npconv.conv(x.astype(np.float64), w.astype(np.float64), stride=2,
                                padding=1, algorithm="reference"), reduction=54)


def test_same_bits_for_any_thread_count_and_views_as_inputs():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((3, 12, 64, 70)).astype(np.float32)
    x = base[:, :, :, ::2]  # a strided view (N, C, 64, 35)
    w = np.asfortranarray(rng.standard_normal((24, 12, 3, 3)).astype(np.float32))
    gy = rng.standard_normal((3, 24, 64, 35)).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        with npconv.num_threads(threads, min_work_bytes=0):
            y = npconv.conv(x, w, padding=1, algorithm="blocked")
            gx, gw, _ = npconv.conv_backward(gy, x, w, padding=1, algorithm="blocked")
        results.append((y, gx, gw))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
    ref = npconv.conv(x.astype(np.float64), w.astype(np.float64), padding=1,
                      algorithm="reference")
    assert_close(results[0][0], ref, reduction=108)


def test_auto_takes_it_only_where_it_was_measured_faster():
    """Thin 3x3 layers on images of any size, wide ones on large images, in float32
    and float64; not wide layers on small images, few channels, 1x1 kernels or
    kernels past 121 taps."""
    def plan(c, o, size, kernel=3, dtype=np.float32):
        x = np.zeros((2, c) + size, dtype)
        w = np.zeros((o, c) + (kernel,) * len(size), dtype)
        return npconv.explain(x, w, padding=kernel // 2)

    thin = plan(16, 16, (32, 32, 32))
    assert (thin.forward, thin.grad_input, thin.grad_weight) == ("blocked",) * 3
    assert plan(64, 64, (32, 32)).forward == "blocked"
    stem = plan(3, 16, (64, 64))  # 3 input channels: the forward only
    assert stem.forward == "blocked"
    assert "blocked" not in (stem.grad_input, stem.grad_weight)
    assert plan(6, 16, (64, 64)).grad_weight == "blocked"  # grad weight: blocks of 4
    assert plan(16, 2, (64, 64)).forward != "blocked"  # 2 output channels
    assert "blocked" not in vars(plan(16, 16, (64, 64), kernel=1)).values()  # pointwise
    assert "blocked" not in vars(plan(128, 128, (8, 8))).values()
    assert plan(64, 64, (16, 16), kernel=5).forward == "blocked"  # 64 channels, 256
    assert plan(64, 64, (16, 16)).forward == "blocked"  # positions: forward (3x3 too)
    assert plan(64, 64, (16, 20)).forward == "blocked"
    assert plan(32, 64, (16, 16)).forward == "blocked"  # 32 channels: blocked
    assert "blocked" not in vars(plan(128, 256, (16, 16))).values()  # wider: from 512
    assert plan(16, 16, (64, 64), kernel=7).forward == "blocked"  # ahead of FFT
    assert plan(16, 16, (64, 64), kernel=13).forward != "blocked"
    down = npconv.explain(np.zeros((2, 16, 32, 32, 32), np.float32),
                          np.zeros((32, 16, 3, 3, 3), np.float32), stride=2, padding=1)
    assert (down.forward, down.grad_input, down.grad_weight) == ("blocked",) * 3
    small = npconv.explain(np.zeros((2, 16, 32, 32), np.float32),
                           np.zeros((32, 16, 3, 3), np.float32), stride=2, padding=1)
    assert small.forward == "blocked" and small.grad_input != "blocked"  # 2 million
    up = npconv.explain(np.zeros((2, 16, 64, 64), np.float32),
                        np.zeros((32, 16, 2, 2), np.float32), stride=2)
    assert "blocked" not in vars(up).values()  # windows that do not overlap
    assert plan(16, 16, (32, 32), dtype=np.float64).forward == "blocked"


def test_grad_weight_ignores_pixels_that_no_window_reads():
    """With dilation 3, column 2 of a 5-wide image is in no window; the kernels' junk
    positions (zero grad_output) still read it, and 0 * inf is nan: the weight gradient
    must stay what the windows give, which does not depend on that column (the
    reference, whose padding is a 0/1 matrix, reads it: it gets zeros there)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    x[:, :, :, 2] = np.inf
    w = rng.standard_normal((6, 3, 1, 2)).astype(np.float32)
    gy = rng.standard_normal((2, 6, 4, 2)).astype(np.float32)
    kw = dict(dilation=(1, 3))
    _, gw, _ = npconv.conv_backward(gy, x, w, **kw, algorithm="blocked")
    read = np.where(np.isfinite(x), x, 0).astype(np.float64)
    _, want, _ = npconv.conv_backward(gy.astype(np.float64), read, w.astype(np.float64),
                                      **kw, algorithm="reference")
    assert_close(gw, want, reduction=16)


STRIDED = [
    # (x shape, kernel, stride, padding, dilation, out channels)
    ((2, 16, 20, 20, 20), (3, 3, 3), 2, 1, 1, 32),  # the 3-D U-Net's down layer, smaller
    ((2, 5, 17, 19), (3, 4), (2, 3), (1, 2), (1, 2), 9),  # phases of both axes
    ((3, 8, 50), (5,), 3, 2, 2, 7),  # 1-d, dilated: taps in every phase
    ((1, 4, 9, 9), (1, 1), 2, 0, 1, 6),  # one phase read, three never
    ((2, 6, 13, 11), (3, 3), 2, 0, 1, 17),  # pixels past the last window
    ((2, 4, 12, 10), (3, 3), 1, (4, 3), 1, 5),  # stride 1, padding past d (k - 1)
    ((1, 3, 11, 9, 8), (2, 3, 2), (3, 2, 2), (0, 1, 2), (2, 1, 3), 6),  # 3-d, mixed
    ((2, 5, 30), (3,), 2, 1, 2, 6),  # dilation = stride: a phase's taps are adjacent
    ((1, 4, 23, 41), (3, 3), 2, 1, 1, 8),  # rows written straight, on the phase grid
    ((1, 4, 21, 19), (3, 3), (4, 2), 2, (2, 4), 5),  # dilation and stride share a factor
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", STRIDED)
def test_strided_maps_equal_the_reference(case, dtype):
    """A strided layer's forward and gradients (grad input: one stride-1 forward per
    input phase), through conv and conv_backward, and as the transposed convolution
    it is the adjoint of (whose forward is that grad input)."""
    shape, kernel, stride, padding, dilation, o = case
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((o, shape[1]) + kernel).astype(dtype)
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    y = npconv.conv(x, w, **kw, algorithm="blocked")
    wide = [a.astype(np.float64) for a in (x, w)]
    taps = int(np.prod(kernel))
    assert_close(y, npconv.conv(*wide, **kw, algorithm="reference"),
                 reduction=taps * shape[1])
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx, gw, _ = npconv.conv_backward(gy, x, w, **kw, algorithm="blocked")
    want_gx, want_gw, _ = npconv.conv_backward(gy.astype(np.float64), *wide, **kw,
                                            algorithm="reference")
    assert_close(gx, want_gx, reduction=taps * o, err_msg=f"grad input {case}")
    assert_close(gw, want_gw, reduction=y[:, 0].size, err_msg=f"grad weight {case}")
    # conv_transpose(z, w) is the adjoint of conv(., w): its grad input is conv(g, w)
    # and its grad weight the convolution's, with the roles of z and g swapped
    z = rng.standard_normal(y.shape).astype(dtype)
    output_padding = tuple(a - b for a, b in zip(shape[2:], npconv.conv_transpose(
        z, w, **kw, algorithm="reference").shape[2:]))
    tkw = dict(kw, output_padding=output_padding)
    assert_close(npconv.conv_transpose(z, w, **tkw, algorithm="blocked"),
                 npconv.conv_transpose(z.astype(np.float64), wide[1], **tkw,
                                       algorithm="reference"), reduction=taps * o)
    g = rng.standard_normal(shape).astype(dtype)
    got = npconv.conv_transpose_backward(g, z, w, **tkw, algorithm="blocked")
    want = npconv.conv_transpose_backward(g.astype(np.float64), z.astype(np.float64),
                                          wide[1], **tkw, algorithm="reference")
    positions = int(np.prod(y.shape[2:])) * shape[0]
    for what, a, b, n in zip(("grad input", "grad weight"), got, want,
                             (taps * shape[1], positions)):
        assert a.dtype == x.dtype
        assert_close(a, b, reduction=n, err_msg=f"{what} {case}")


def test_tiles_shrink_to_the_workspace_limit_or_refuse(restore_limit):
    """A small workspace limit cuts tiles to fewer planes (the same result); when one
    plane's scratch does not fit, the path raises MemoryError naming the limit (on
    which 'auto' retries with im2col)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 8, 40, 40)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((2, 8, 40, 40)).astype(np.float32)
    want = npconv.conv(x, w, padding=1, algorithm="blocked")
    want_grads = npconv.conv_backward(gy, x, w, padding=1, algorithm="blocked")
    npconv.set_workspace_limit(64 * 2**10)  # about 10 planes of scratch
    assert_close(npconv.conv(x, w, padding=1, algorithm="blocked"), want, reduction=72)
    for got, ref in zip(npconv.conv_backward(gy, x, w, padding=1, algorithm="blocked"),
                        want_grads):
        assert_close(got, ref, reduction=3200)
    # 3-d: one plane of 42x42 padded positions needs about 140 KiB of scratch
    x3 = rng.standard_normal((1, 4, 6, 40, 40)).astype(np.float32)
    w3 = rng.standard_normal((8, 4, 3, 3, 3)).astype(np.float32)
    with pytest.raises(MemoryError, match=r"0\.1\d MiB .* workspace limit of 0\.06 MiB"):
        npconv.conv(x3, w3, padding=1, algorithm="blocked")


def test_the_16x16_band_forward_is_blocked_for_real_dtypes_only():
    """64 channels at 16x16 (the band too narrow for BLAS's long matmuls): blocked
    computes the forward in float32, 3x3 and 5x5; in complex64 (which the compiled
    paths do not take) the cost model chooses."""
    x = np.zeros((2, 64, 16, 16), np.float32)
    w = np.zeros((64, 64, 5, 5), np.float32)
    for kernel in (w, w[:, :, 1:4, 1:4]):
        real = npconv.explain(x, kernel, padding=kernel.shape[-1] // 2)
        assert real.forward == "blocked" and real.reasons["forward"] == compiled_rules.BLOCKED_WHY
    complex_plan = npconv.explain(x.astype(np.complex64), w.astype(np.complex64), padding=2)
    assert complex_plan.reasons["forward"].startswith("cost model")
