"""The compiled window copy behind ``npconv.im2col`` and the im2col and stacked paths,
and the compiled fold behind ``npconv.col2im`` and the paths' folds.

2-d float windows with zero padding, output rows of at most
``paths.windows.COMPILED_MAX_ROW_BYTES`` and at least ``COMPILED_MIN_ELEMENTS`` elements
are copied by ``npconv.paths.windows_kernels`` (masked vector loads and
stores, a two-register permute for stride 2, a gather for larger strides). Each of
its three walks ('taps', 'rows', 'channels') is reached through ``npconv.im2col``
and checked element for element against the reference's window view, from
contiguous and strided inputs, batched and unbatched; hypothesis draws the
geometries constructively. The fold (horizontal strides 1 and 2) is checked
against the reference's fold within its rounding, the sums being in another order.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npconv
from npconv import reference
from npconv.geometry import ConvGeometry
from npconv.testing import assert_close

pytest.importorskip("numba")
windows = importlib.import_module("npconv.paths.windows")


def _reference_columns(x, geometry):
    n, c = x.shape[:2]
    view = reference.patches(x, geometry)
    return np.ascontiguousarray(view).reshape(n, c * geometry.kernel_volume,
                                              geometry.out_volume)


def _check(x, kernel, stride, padding, dilation):
    """im2col of x equals the reference's columns, and the compiled copy made them."""
    geometry = ConvGeometry.build(x.shape[2:], kernel, stride, padding, dilation,
                                  input_name="x")
    elements = x.shape[0] * x.shape[1] * geometry.kernel_volume * geometry.out_volume
    assert windows.takes_planes(np, geometry, elements, x.dtype)
    assert windows.compiled(np, geometry, x.dtype)
    before = x.copy()
    cols = npconv.im2col(x, kernel, stride=stride, padding=padding, dilation=dilation)
    want = _reference_columns(x, geometry)
    assert cols.dtype == x.dtype and cols.flags.c_contiguous and cols.flags.writeable
    np.testing.assert_array_equal(cols, want)
    np.testing.assert_array_equal(x, before)
    return geometry, cols


CASES = [
    # (x shape, kernel, stride, padding, dilation, walk)
    ((4, 64, 3, 3), 3, 1, 1, 1, "taps"),  # ResNet's last stage: a vector a plane
    ((2, 20, 6, 6), 3, 1, 1, 1, "taps"),  # 36 = 16 + 16 + 4: the last vector masked
    ((2, 9, 11, 11), 5, 1, 2, 1, "taps"),  # rows past the plane in both directions
    ((1, 40, 7, 7), 3, 1, (1, 2), (1, 2), "taps"),  # dilated columns
    ((2, 16, 12, 12), 3, 2, 1, 1, "channels"),  # stride 2: the pair permute
    ((1, 500, 6, 6), 1, 2, 0, 1, "channels"),  # ResNet's downsample, blocks of channels
    ((2, 37, 16, 16), 2, 2, 0, 1, "channels"),  # U-Net up-conv: 1 KiB planes, 16 + 16 + 5
    ((2, 45, 24, 16), 3, 2, 1, 1, "channels"),  # 1.5 KiB planes: blocks of 32 (+ 13)
    ((2, 30, 10, 9), 3, 3, 2, 2, "channels"),  # stride 3: the gather
    ((1, 2, 400, 21), 3, 1, 1, 1, "rows"),  # 21 = 16 + 5 = 8 + 8 + 5: the last vector masked
    ((1, 3, 200, 46), 7, 2, 3, 1, "rows"),  # a ResNet-like stem: stride 2, 23 wide
    ((1, 5, 200, 70), (2, 5), (1, 3), (0, 4), (1, 2), "rows"),  # stride 3, wide padding
    ((1, 6, 128, 8), 3, 1, 6, 1, "rows"),  # 4 KiB planes; padding past the kernel
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape, kernel, stride, padding, dilation, order", CASES)
def test_each_walk_equals_the_reference(shape, kernel, stride, padding, dilation, order,
                                        dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(dtype)
    geometry, cols = _check(x, kernel, stride, padding, dilation)
    assert windows.walk(geometry, x.itemsize) == order
    # a strided input (copied contiguous first) and an unbatched one
    wide = np.repeat(x, 2, axis=-1)[..., ::2]
    np.testing.assert_array_equal(
        npconv.im2col(wide, kernel, stride=stride, padding=padding, dilation=dilation), cols)
    np.testing.assert_array_equal(
        npconv.im2col(x[-1], kernel, stride=stride, padding=padding, dilation=dilation),
        cols[-1])


def test_same_padding_asymmetric():
    """'same' with an even kernel pads one side more: the tables take each side."""
    x = np.random.default_rng(6).standard_normal((2, 50, 7, 8)).astype(np.float32)
    geometry, _ = _check(x, (4, 2), 1, "same", (1, 3))
    assert geometry.pads == ((1, 2), (1, 2))


@st.composite
def _axis(draw, max_stride=4):
    """(size, kernel, stride, padding, dilation) of one axis with at least one output."""
    k, s, d = (draw(st.integers(1, 5)), draw(st.integers(1, max_stride)),
               draw(st.integers(1, 3)))
    out = draw(st.integers(1, 20))
    base = (out - 1) * s + d * (k - 1) + 1
    p = draw(st.integers(0, min(d * (k - 1) + 1, (base - 1) // 2)))
    size = base - 2 * p + draw(st.integers(0, s - 1))
    return size, k, s, p, d


@settings(max_examples=60, deadline=None)
@given(rows=_axis(), cols=_axis(), n=st.integers(1, 3), c=st.integers(1, 9),
       dtype=st.sampled_from(["float32", "float64"]))
def test_drawn_geometries_equal_the_reference(rows, cols, n, c, dtype):
    axes = list(zip(rows, cols))
    size, kernel, stride, padding, dilation = axes
    k_vol = kernel[0] * kernel[1]
    out = [(sz + 2 * p - d * (k - 1) - 1) // s + 1
           for sz, k, s, p, d in zip(size, kernel, stride, padding, dilation)]
    # enough channels for the compiled copy
    c = max(c, math.ceil(windows.COMPILED_MIN_ELEMENTS / (n * k_vol * out[0] * out[1])))
    x = np.random.default_rng(c).standard_normal((n, c) + tuple(size)).astype(dtype)
    _check(x, tuple(kernel), tuple(stride), tuple(padding), tuple(dilation))


@pytest.mark.parametrize("algorithm", ["im2col", "stacked"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("stride, dilation", [(1, 2), (2, 1), (3, 2)])
def test_strided_paths_copying_windows_equal_the_reference(algorithm, threads, stride,
                                                           dilation):
    """The im2col and stacked paths build a strided layer's columns with the compiled
    copy (stacked: into its channel-major buffer): the reference's results."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 40, 13, 14))
    w = rng.standard_normal((6, 40, 3, 3))
    kw = dict(stride=stride, padding=1, dilation=dilation)
    geometry = ConvGeometry.build((13, 14), 3, stride, 1, dilation)
    assert windows.takes_planes(np, geometry, x.shape[0] * x.shape[1] * 9 * geometry.out_volume,
                                x.dtype)
    y_ref = npconv.conv(x, w, **kw, algorithm="reference")
    gy = rng.standard_normal(y_ref.shape)
    g_ref = npconv.conv_backward(gy, x, w, **kw, algorithm="reference")
    with npconv.num_threads(threads, min_work_bytes=0):
        y = npconv.conv(x, w, **kw, algorithm=algorithm)
        grads = npconv.conv_backward(gy, x, w, **kw, algorithm=algorithm)
    depth = 40 * 9
    assert_close(y, y_ref, reduction=depth)
    for got, want in zip(grads, g_ref):
        assert_close(got, want, reduction=depth * gy.shape[0] * gy[0, 0].size)


def _check_fold(cols, size, kernel, stride, padding, dilation):
    """col2im of cols equals the reference's fold, and the compiled fold made it."""
    geometry = ConvGeometry.build(size, kernel, stride, padding, dilation,
                                  input_name="output_size")
    n, rows, _ = cols.shape
    patches = cols.reshape((n, rows // geometry.kernel_volume) + geometry.kernel
                           + geometry.out_size)
    out = np.empty((n, patches.shape[1]) + tuple(size), dtype=cols.dtype)
    assert windows.fold_compiled(out, patches, geometry)  # the kernel serves it
    before = cols.copy()
    got = npconv.col2im(cols, size, kernel, stride=stride, padding=padding,
                        dilation=dilation)
    want = reference.fold(patches.astype(np.float64), geometry)
    assert got.dtype == cols.dtype and got.shape == want.shape
    assert_close(got, want, reduction=geometry.kernel_volume)
    np.testing.assert_array_equal(cols, before)
    return got


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape, kernel, stride, padding, dilation, order",
                         [c for c in CASES if np.max(c[2]) <= 2 or np.ndim(c[2])
                          and c[2][-1] <= 2])
def test_fold_equals_the_reference(shape, kernel, stride, padding, dilation, order, dtype):
    del order
    rng = np.random.default_rng(8)
    geometry = ConvGeometry.build(shape[2:], kernel, stride, padding, dilation)
    cols = rng.standard_normal((shape[0], shape[1] * geometry.kernel_volume,
                                geometry.out_volume)).astype(dtype)
    got = _check_fold(cols, shape[2:], kernel, stride, padding, dilation)
    np.testing.assert_array_equal(
        npconv.col2im(cols[-1], shape[2:], kernel, stride=stride, padding=padding,
                      dilation=dilation), got[-1])


@settings(max_examples=60, deadline=None)
@given(rows=_axis(), cols=_axis(max_stride=2), n=st.integers(1, 3), c=st.integers(1, 9),
       dtype=st.sampled_from(["float32", "float64"]))
def test_drawn_folds_equal_the_reference(rows, cols, n, c, dtype):
    """Horizontal strides 1 and 2 (the kernel's), any other geometry."""
    size, kernel, stride, padding, dilation = zip(rows, cols)
    geometry = ConvGeometry.build(size, kernel, stride, padding, dilation)
    c = max(c, math.ceil(windows.COMPILED_MIN_ELEMENTS
                         / (n * geometry.kernel_volume * geometry.out_volume)))
    data = np.random.default_rng(c).standard_normal(
        (n, c * geometry.kernel_volume, geometry.out_volume)).astype(dtype)
    _check_fold(data, tuple(size), tuple(kernel), tuple(stride), tuple(padding),
                tuple(dilation))


@pytest.mark.parametrize("dtype, width", [("float32", 49), ("float64", 25)])
def test_long_rows_take_numpys_copy(dtype, width):
    """Rows longer than COMPILED_MAX_ROW_BYTES are NumPy's to copy (faster there):
    the same columns."""
    x = np.random.default_rng(9).standard_normal((2, 8, 20, width)).astype(dtype)
    geometry = ConvGeometry.build((20, width), 3, 1, 1, 1)
    assert geometry.out_size[-1] * x.itemsize > windows.COMPILED_MAX_ROW_BYTES
    assert not windows.compiled(np, geometry, x.dtype) and windows.jit_float(np, geometry,
                                                                            x.dtype)
    np.testing.assert_array_equal(npconv.im2col(x, 3, padding=1),
                                  _reference_columns(x, geometry))


@pytest.mark.parametrize("stride", [1, 2])
def test_fold_of_channel_major_windows(stride):
    """The paths fold channel-major columns (C, kh, kw, b, oh, ow) seen as (b, C, kh,
    kw, oh, ow): the compiled fold takes any strides but the last one's."""
    geometry = ConvGeometry.build((9, 11), (3, 2), stride, (1, 0), (2, 1))
    rng = np.random.default_rng(10)
    buf = rng.standard_normal((70, 3, 2, 3) + geometry.out_size).astype(np.float32)
    view = np.moveaxis(buf, 3, 0)
    out = np.full((3, 70, 9, 11), np.nan, dtype=np.float32)
    assert windows.fold_compiled(out, view, geometry)
    want = reference.fold(np.ascontiguousarray(view).astype(np.float64), geometry)
    assert_close(out, want, reduction=geometry.kernel_volume)


@pytest.mark.parametrize("shape, stride, padding", [
    ((2, 3, 5, 6), 1, 0),  # the plain copy: the columns are the input
    ((2, 3, 2, 2), 2, 1),  # as many outputs as inputs, but strided and padded
    ((1, 2, 1, 7), (2, 1), 0),  # one row: stride 2 along it changes nothing
    ((2, 3, 4, 4), 1, (1, 0)),
])
def test_one_by_one_columns(shape, stride, padding):
    """1x1 windows: unpadded ones with as many outputs as inputs are one plain copy
    (the others are windows like any); both equal the reference's columns."""
    x = np.random.default_rng(11).standard_normal(shape)
    geometry = ConvGeometry.build(shape[2:], 1, stride, padding, 1)
    cols = npconv.im2col(x, 1, stride=stride, padding=padding)
    np.testing.assert_array_equal(cols, _reference_columns(x, geometry))
    assert not np.shares_memory(cols, x)


def test_columns_of_another_dtype_take_numpys_copy():
    """The kernel reads and writes one vector type: float32 windows copied into float64
    columns go through NumPy's copy (and its cast)."""
    x = np.random.default_rng(12).standard_normal((2, 30, 9, 9)).astype(np.float32)
    geometry = ConvGeometry.build((9, 9), 3, 1, 1, 1)
    cols = np.empty((2, 30, 3, 3, 9, 9), dtype=np.float64)
    windows.copy_windows(cols, x, geometry)
    np.testing.assert_array_equal(cols, reference.patches(x, geometry).astype(np.float64))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 40), st.integers(1, 40),
       st.sampled_from(["float32", "float64"]))
def test_transpose_of_images_in_register_blocks(n, a, b, dtype):
    """The depthwise path's channels-last moves: whole L x L blocks swapped in
    registers and the ragged edges, each image apart, equal to NumPy's transpose."""
    kernels = importlib.import_module("npconv.paths.windows_kernels")
    src = np.arange(n * a * b, dtype=dtype).reshape(n, a, b)
    dst = np.full((n, b, a), -1, dtype=dtype)
    kernels.transpose_images(dst, src)
    np.testing.assert_array_equal(dst, src.transpose(0, 2, 1))


@pytest.mark.parametrize("size", [12, 4])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_channels_last_moves_against_the_reference(size, contiguous, stride):
    """Small depthwise layers run channels last: the compiled transpose for contiguous
    arrays with a whole block each way, NumPy's moves otherwise (a 2x2 output, a strided
    input). Forward and backward against the reference."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 40, size, size * (1 if contiguous else 2))).astype(np.float32)
    x = x if contiguous else x[..., ::2]
    w = rng.standard_normal((40, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    kw = dict(stride=stride, padding=1, groups=40)
    y = npconv.conv(x, w, b, algorithm="depthwise_jit", **kw)
    assert_close(y, npconv.conv(x, w, b, algorithm="reference", **kw), reduction=9)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    got = npconv.conv_backward(gy, x, w, algorithm="depthwise_jit", **kw)
    want = npconv.conv_backward(gy, x, w, algorithm="reference", **kw)
    sums = (9, gy.shape[0] * gy.shape[2] * gy.shape[3], gy.size // gy.shape[1])
    for g_got, g_want, reduction, name in zip(got, want, sums, ("input", "weight", "bias")):
        assert_close(g_got, g_want, reduction=reduction, err_msg=f"grad {name}")


@pytest.mark.parametrize("shape, itemsize, block", [
    ((16, 16), 4, 16),  # 1 KiB planes: 4 set offsets, 4 planes each
    ((24, 16), 4, 32),  # 1.5 KiB: 8 offsets
    ((16, 16), 8, 8),  # 2 KiB: 2 offsets
    ((32, 32), 4, 4),  # 4 KiB: every plane in the same sets (the rows walk)
    ((6, 6), 4, 64),  # small planes: CHANNEL_BLOCK
    ((40, 40), 4, 32),  # 6.4 KiB: at most BLOCK_SPAN_BYTES of planes
])
def test_channel_blocks_follow_the_planes_cache_sets(shape, itemsize, block):
    geometry = ConvGeometry.build(shape, 3, 2, 1, 1, input_name="x")
    assert windows.channel_block(geometry, itemsize) == block
    want = "channels" if block >= windows.MIN_CHANNEL_BLOCK else "rows"
    assert windows.walk(geometry, itemsize) == want


@pytest.mark.parametrize("shape, dtype, order", [
    ((4, 64, 32, 32), "float32", "rows"),  # compiled, split over the threads
    ((4, 256, 16, 16), "float32", "channels"),  # compiled, kept on one thread
    ((8, 64, 32, 32), "float16", None),  # not compiled: NumPy's copies, split
])
def test_large_columns_split_over_threads_equal_the_reference(shape, dtype, order):
    """npconv.im2col's copies of at least SPLIT_MIN_BYTES, with two threads."""
    x = np.random.default_rng(7).standard_normal(shape).astype(dtype)
    geometry = ConvGeometry.build(x.shape[2:], 3, 1, 1, 1, input_name="x")
    assert x.size * 9 * x.itemsize >= windows.SPLIT_MIN_BYTES
    assert windows.compiled(np, geometry, x.dtype) == (order is not None)
    if order is not None:
        assert windows.walk(geometry, x.itemsize) == order
    with npconv.num_threads(2):
        assert windows.split_pays(x.size * 9 * x.itemsize)
        cols = npconv.im2col(x, 3, padding=1)
    np.testing.assert_array_equal(cols, _reference_columns(x, geometry))
