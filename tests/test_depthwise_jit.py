"""The compiled depthwise path (``algorithm='depthwise_jit'``) at its edges.

Reached by its public name, on both of its layouts (planes of phase grids; channels
last for small images with 16+ output channels): strides and dilations, asymmetric
padding, channel multipliers, 1-d layers, many chunks on several threads (the
same bits for any thread count), and non-finite pixels that only the grid's
junk columns read. The hypothesis tests of tests/test_paths.py draw its
geometries too.
"""

from __future__ import annotations

import numpy as np
import pytest
import threadpoolctl

import npconv
from npconv.testing import assert_close

pytest.importorskip("numba")

GEOMETRIES = [
    # (size, kernel, stride, dilation, padding)
    ((13, 11), (3, 3), 1, 1, 1),
    ((13, 11), (3, 3), 2, 1, 1),
    ((12, 10), (3, 3), (2, 1), 2, (2, 1)),  # 3x3 dilated: windows inside and at the edges
    ((15, 12), (3, 2), (3, 2), (1, 2), (2, 1)),
    ((12, 13), (5, 5), 2, 2, 4),
    ((17,), (3,), 2, 3, 3),
    ((11, 10), (4, 2), 1, (1, 3), "same"),  # asymmetric padding
    ((9, 8), (3, 3), 1, 1, 3),  # padding past the kernel's span
    ((16,), (5,), 1, 2, 8),
    ((7, 9), (3, 3), 3, 1, 0),  # pixels no window reads
    ((5, 6), (7, 7), 1, 1, 3),  # a kernel larger than the input
    ((1, 8), (1, 3), 3, 1, 0),  # residues of the stride with no pixel
]


def _arrays(rng, n, c, mult, size, kernel, dtype):
    x = rng.standard_normal((n, c) + size).astype(dtype)
    w = rng.standard_normal((c * mult, 1) + kernel).astype(dtype)
    b = rng.standard_normal(c * mult).astype(dtype)
    return x, w, b


def _check(x, w, b, kw, gy=None):
    """The path's forward and gradients against the float64 reference."""
    c = x.shape[1]
    wide = [a.astype(np.float64) for a in (x, w, b)]
    y_ref = npconv.conv(*wide, groups=c, **kw, algorithm="reference")
    if gy is None:
        gy = np.random.default_rng(1).standard_normal(y_ref.shape).astype(x.dtype)
    g_ref = npconv.conv_backward(gy.astype(np.float64), wide[0], wide[1], groups=c, **kw,
                                 algorithm="reference")
    reduction = int(np.prod(w.shape[2:]))
    y = npconv.conv(x, w, b, groups=c, **kw, algorithm="depthwise_jit")
    assert y.dtype == x.dtype
    assert_close(y, y_ref, reduction=reduction)
    grads = npconv.conv_backward(gy, x, w, groups=c, **kw, algorithm="depthwise_jit")
    for got, want, n in zip(grads, g_ref, (reduction, y_ref[:, 0].size, y_ref[:, 0].size)):
        assert got.dtype == x.dtype
        assert_close(got, want, reduction=n)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("mult", [1, 3])
@pytest.mark.parametrize("channels", [5, 16])  # 16+ outputs on small images: channels last
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_equals_the_reference(geometry, mult, channels, dtype):
    size, kernel, stride, dilation, padding = geometry
    x, w, b = _arrays(np.random.default_rng(0), 3, channels, mult, size, kernel, dtype)
    _check(x, w, b, dict(stride=stride, dilation=dilation, padding=padding))


@pytest.mark.parametrize("n, size, kernel, stride, padding, per_block", [
    (5, (30, 30), 3, 1, 1, 4), (20, (30, 29), 3, 2, 1, 16), (60, (70,), 3, 1, 1, 56),
    (2, (70, 66), 3, 1, 1, 1),
    (7, (12, 11), 2, 1, "same", 7),  # no zero row in front: image blocks must not overlap
])
def test_blocks_of_images_with_a_short_last_one(n, size, kernel, stride, padding, per_block):
    """Small images are stacked in blocks of a few per task (the last block shorter);
    images of 4096+ grid elements go one per task."""
    from npconv.geometry import ConvGeometry
    from npconv.paths.depthwise_jit import layout

    kernel = (kernel,) * len(size)
    geometry = ConvGeometry.build(size, kernel, stride, padding)
    assert layout(geometry).images(n) == per_block
    x, w, b = _arrays(np.random.default_rng(6), n, 2, 2, size, kernel, "float32")
    _check(x, w, b, dict(stride=stride, padding=padding))


@pytest.mark.parametrize("stride", [1, 2])
def test_same_bits_for_any_thread_count(stride):
    """Hundreds of planes in many chunks, threaded even though small (min_work_bytes=0):
    the weight gradient's chunk sums are added in a fixed order."""
    rng = np.random.default_rng(4)
    x, w, b = _arrays(rng, 8, 96, 1, (14, 14), (3, 3), "float32")
    out = 14 // stride
    gy = rng.standard_normal((8, 96, out, out)).astype(np.float32)
    kw = dict(stride=stride, padding=1, groups=96, algorithm="depthwise_jit")
    results = []
    for threads in (1, 2, 3):
        with npconv.num_threads(threads, min_work_bytes=0), threadpoolctl.threadpool_limits(1):
            y = npconv.conv2d(x, w, b, **kw)
            results.append((y,) + tuple(npconv.conv2d_backward(gy, x, w, **kw)))
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            assert np.array_equal(a, b_)
    _check(x, w, b, dict(stride=stride, padding=1), gy)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_pixel_only_junk_columns_read_stays_out_of_grad_weight(bad):
    """'same' 3x3: the last input column is read by taps j = 1, 2 but by no window of
    tap j = 0; on the flat grid tap 0's junk column reads it (times a zero of gy).
    Grad weight must be sum gy * windows: non-finite where that is, equal elsewhere.
    (The reference pads by a matrix product, which spreads a non-finite pixel over its
    row, so the expected sums are taken here from np.pad's windows.)"""
    rng = np.random.default_rng(3)
    x, w, _ = _arrays(rng, 2, 4, 1, (6, 7), (3, 3), "float64")
    x[1, 2, 3, -1] = bad
    gy = rng.standard_normal((2, 4, 6, 7))
    windows = np.lib.stride_tricks.sliding_window_view(
        np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))
    with np.errstate(invalid="ignore"):
        want = np.einsum("ncab,ncabij->cij", gy, windows)[:, None]
    got = npconv.conv_backward(gy, x, w, padding=1, groups=4, algorithm="depthwise_jit")[1]
    assert np.isfinite(want[2, 0, :, 0]).all() and not np.isfinite(want[2, 0, :, 1:]).all()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])
    finite = np.isfinite(want)
    assert_close(got[finite], want[finite], reduction=2 * 42)


def test_inputs_are_read_only_and_left_unchanged():
    rng = np.random.default_rng(5)
    x, w, b = _arrays(rng, 2, 6, 2, (9, 9), (3, 3), "float32")
    gy = rng.standard_normal((2, 12, 5, 5)).astype(np.float32)
    arrays = (x, w, b, gy)
    copies = [a.copy() for a in arrays]
    for a in arrays:
        a.flags.writeable = False
    kw = dict(stride=2, padding=1, groups=6, algorithm="depthwise_jit")
    npconv.conv2d(x, w, b, **kw)
    npconv.conv2d_backward(gy, x, w, **kw)
    for a, c in zip(arrays, copies):
        assert np.array_equal(a, c)


@pytest.mark.parametrize("case, need", [
    (dict(dtype="complex64"), "float32 or float64"),
    (dict(mode="reflect"), "zero padding"),
    (dict(size=(5, 5, 5)), "1-d or 2-d"),
    (dict(groups=1), "depthwise"),
])
def test_refusals_say_what_it_needs(case, need):
    size = case.get("size", (8, 8))
    groups = case.get("groups", 4)
    x = np.ones((1, 4) + size, case.get("dtype", "float32"))
    w = np.ones((4, 4 // groups) + (3,) * len(size), case.get("dtype", "float32"))
    with pytest.raises(ValueError, match=f"algorithm='depthwise_jit' cannot compute .*{need}"):
        npconv.conv(x, w, padding=1, groups=groups, padding_mode=case.get("mode", "zeros"),
                    algorithm="depthwise_jit")


def test_auto_takes_it_for_depthwise_layers_and_says_why():
    x = np.zeros((4, 144, 24, 24), np.float32)
    plan = npconv.explain(x, np.zeros((144, 1, 3, 3), np.float32), padding=1, groups=144)
    assert (plan.forward, plan.grad_input, plan.grad_weight) == ("depthwise_jit",) * 3
    assert "numba" in plan.reasons["forward"]
    reflect = npconv.explain(x, np.zeros((144, 1, 3, 3), np.float32), padding=1, groups=144,
                             padding_mode="reflect")
    assert reflect.forward != "depthwise_jit"
