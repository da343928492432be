"""The speed mechanisms of the fast paths give the reference's results at their edges.

Reached by public names only (``algorithm=``, ``npconv.set_workspace_limit``,
``npconv.num_threads``): the depthwise path's chunks of images and channel
blocks (a short last chunk, one channel of one image per chunk), its phase
images for strides and dilations, every padding mode, channel multipliers and
complex data; and the chunk policy that keeps the weight-gradient contraction
long on small images.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import threadpoolctl

import npconv
from npconv import workspace
from npconv.geometry import ConvGeometry
from npconv.plan import Problem, rule_plan
from npconv.testing import assert_close


def _arrays(rng, n, c, mult, size, kernel, dtype):
    x = rng.standard_normal((n, c) + size)
    w = rng.standard_normal((c * mult, 1) + kernel)
    b = rng.standard_normal(c * mult)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(x.shape)
        w = w + 1j * rng.standard_normal(w.shape)
    return x.astype(dtype), w.astype(dtype), b.astype(dtype)


def _check_depthwise(x, w, b, kw, reduction):
    c = x.shape[1]
    y_ref = npconv.conv(x, w, b, groups=c, **kw, algorithm="reference")
    gy = np.random.default_rng(1).standard_normal(y_ref.shape).astype(x.dtype)
    g_ref = npconv.conv_backward(gy, x, w, groups=c, **kw, algorithm="reference")
    y = npconv.conv(x, w, b, groups=c, **kw, algorithm="depthwise")
    assert_close(y, y_ref, reduction=reduction)
    grads = npconv.conv_backward(gy, x, w, groups=c, **kw, algorithm="depthwise")
    for got, want in zip(grads, g_ref):
        assert_close(got, want, reduction=reduction * x.shape[0] * y_ref[0, 0].size)


GEOMETRIES = [
    # (size, kernel, stride, dilation, padding, padding_mode)
    ((13, 11), (3, 3), 1, 1, 1, "zeros"),
    ((13, 11), (3, 3), 2, 1, 1, "zeros"),
    ((14, 9), (3, 3), 2, 1, 1, "reflect"),
    ((15, 12), (3, 2), (3, 2), (1, 2), (2, 1), "circular"),
    ((12, 13), (5, 5), 2, 2, 4, "replicate"),
    ((17,), (3,), 2, 3, 3, "zeros"),
    ((11, 10), (4, 2), 1, (1, 3), "same", "zeros"),  # shared zeros, asymmetric padding
    ((9, 8), (3, 3), 1, 1, 3, "zeros"),  # padding past the span: no shared zeros
    ((16,), (5,), 1, 2, 8, "zeros"),
    ((6, 5, 7), (3, 3, 3), (2, 1, 2), 1, 1, "zeros"),
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("limit", [None, 120_000, 400_000])
def test_depthwise_chunks_phases_and_padding_modes(geometry, limit, restore_limit):
    """A workspace of some 100 KiB cuts the batch into a few images and the channels into
    blocks (the last chunk shorter): results equal the reference's."""
    size, kernel, stride, dilation, padding, mode = geometry
    rng = np.random.default_rng(0)
    x, w, b = _arrays(rng, 9, 7, 2, size, kernel, "float64")
    if limit is not None:
        npconv.set_workspace_limit(limit)
    kw = dict(stride=stride, dilation=dilation, padding=padding, padding_mode=mode)
    _check_depthwise(x, w, b, kw, reduction=int(np.prod(kernel)))


@pytest.mark.parametrize("dtype", ["float32", "complex64", "complex128"])
@pytest.mark.parametrize("mult", [1, 3])
def test_depthwise_dtypes_and_channel_multipliers(dtype, mult):
    rng = np.random.default_rng(2)
    x, w, b = _arrays(rng, 3, 6, mult, (9, 10), (3, 3), dtype)
    for stride in (1, 2):
        _check_depthwise(x, w, b, dict(stride=stride, padding=1), reduction=9)


def test_depthwise_same_result_for_any_thread_count():
    rng = np.random.default_rng(4)
    x, w, b = _arrays(rng, 8, 96, 1, (14, 14), (3, 3), "float32")
    gy = rng.standard_normal((8, 96, 7, 7)).astype(np.float32)
    results = []
    # bitwise equality holds with the BLAS on one thread (OpenBLAS's results depend on its
    # own thread count, as in test_executor)
    for threads in (1, 2, 3):
        with npconv.num_threads(threads, min_work_bytes=0), threadpoolctl.threadpool_limits(1):
            y = npconv.conv2d(x, w, b, stride=2, padding=1, groups=96, algorithm="depthwise")
            grads = npconv.conv2d_backward(gy, x, w, stride=2, padding=1, groups=96,
                                           algorithm="depthwise")
        results.append((y,) + tuple(grads))
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            assert np.array_equal(a, b_)


def test_depthwise_one_channel_of_one_image_must_fit(restore_limit):
    x = np.ones((1, 2, 64, 64), np.float32)
    w = np.ones((2, 1, 3, 3), np.float32)
    npconv.set_workspace_limit(4096)
    with pytest.raises(MemoryError, match="workspace"):
        npconv.conv2d(x, w, padding=1, groups=2, algorithm="depthwise")


@pytest.mark.parametrize("kernel, padding, dilation", [(11, 5, 1), (11, 0, 2), (3, 1, 1)])
def test_depthwise_backward_in_chunks_of_one_channel(kernel, padding, dilation, restore_limit):
    """Chunks of one channel of one image make grad_output's rows one contiguous row;
    the grad input's backward-stepping view of them raised ValueError there (found by
    the cost model's random layers: 11x11 depthwise kernels on 64x64 and 128x128)."""
    rng = np.random.default_rng(7)
    x, w, b = _arrays(rng, 2, 3, 1, (40, 40), (kernel, kernel), "float64")
    # about one channel of one image per chunk (its K + 3 rows of ~2500 float64 fit)
    npconv.set_workspace_limit(int((kernel * kernel + 3) * 2600 * 8 * 1.2))
    _check_depthwise(x, w, b, dict(padding=padding, dilation=dilation), kernel * kernel)


def test_balanced_parts_of_nothing():
    """Nothing to cut is one part of any size (was a ZeroDivisionError)."""
    assert workspace.balanced(0, 0) == 1
    assert workspace.balanced(0, 5) == 5
    assert workspace.row_chunks(1024, 4, 0) == (1, 4)


def test_chunks_keep_the_contraction_long_on_small_images():
    """Batch chunks of small images hold at least MIN_CHUNK_POSITIONS output positions
    where the workspace allows, and row blocks of one image at least that many."""
    least = workspace.MIN_CHUNK_POSITIONS
    per_image = (2304 + 256) * 36 * 4  # im2col backward of a 6x6 256-channel layer
    assert workspace.chunk_length(per_image, 4, positions=36) == 4
    assert workspace.chunk_length(per_image, 64, positions=36) * 36 >= least
    big = 1536 * 2**10  # 1.5 MiB per 36-position image: bytes alone take one image
    assert workspace.chunk_length(big, 64) == 1
    assert workspace.chunk_length(big, 64, positions=36) * 36 >= least
    images, rows = workspace.row_chunks(4 * 64 * 9 * 4, 64, 2, positions=4)
    assert images == 1 and rows * 4 >= least


@pytest.mark.parametrize("algorithm", ["auto", "im2col", "direct", "flipped", "phases"])
@pytest.mark.parametrize("size, stride", [(6, 1), (3, 1), (12, 2)])
def test_small_images_same_result_for_any_thread_count(algorithm, size, stride):
    """Late-ResNet-like layers (few positions, many channels): equal to the reference and
    bitwise equal for 1, 2 and 3 threads (chunks of at least MIN_CHUNK_POSITIONS)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 32, size, size)).astype(np.float32)
    w = rng.standard_normal((48, 32, 3, 3)).astype(np.float32)
    kw = dict(stride=stride, padding=1)
    if (algorithm, stride) in (("phases", 1), ("flipped", 2)):
        algorithm = "im2col"
    y_ref = npconv.conv2d(x.astype(np.float64), w.astype(np.float64), **kw,
                          algorithm="reference")
    gy = rng.standard_normal(y_ref.shape).astype(np.float32)
    g_ref = npconv.conv2d_backward(gy.astype(np.float64), x.astype(np.float64),
                                   w.astype(np.float64), **kw, algorithm="reference")
    results = []
    for threads in (1, 2, 3):  # the BLAS on one thread, as in test_executor
        with npconv.num_threads(threads, min_work_bytes=0), threadpoolctl.threadpool_limits(1):
            results.append((npconv.conv2d(x, w, **kw, algorithm=algorithm),)
                           + tuple(npconv.conv2d_backward(gy, x, w, **kw, algorithm=algorithm)))
    assert_close(results[0][0], y_ref, reduction=288)
    for got, want in zip(results[0][1:], g_ref):
        assert_close(got, want, reduction=288 * 6 * size * size)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


def test_rules_differentiate_small_images_through_im2col():
    """The hand-set rules (the cost model's baseline): stride-1 layers of few positions
    per image take im2col's backward for both gradients (images merged into one
    contraction); larger images keep flipped + direct."""
    for size, want in ((3, "im2col"), (4, "im2col"), (6, "flipped"), (14, "flipped"),
                       (24, "flipped")):
        problem = Problem(ConvGeometry.build((size, size), (3, 3), 1, 1), 1, 4, 256, 256,
                          np.dtype("float32"))
        plan = rule_plan(problem)
        assert (plan.grad_input, plan.grad_weight) == (
            (want, "im2col") if want == "im2col" else (want, "direct")), size


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("dtype", ["float32", "int64", "bool", "complex64"])
def test_im2col_of_short_rows_is_the_window_view(mode, dtype):
    """Outputs at most patches.GATHER_MAX_WIDTH wide and calls of at least
    GATHER_MIN_ELEMENTS column elements are gathered through an index: the same columns
    as the window view, for every padding mode and dtype, batched or not, from a
    non-contiguous input."""
    patches_module = importlib.import_module("npconv.patches")  # npconv.patches: the function
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((3, 130, 9, 14)) * 4).astype(dtype)[:, ::2, :, ::2]  # 65 x 9 x 7
    kw = dict(stride=(2, 1), padding=(1, 1), dilation=(1, 2), padding_mode=mode)
    view = npconv.patches(x, (3, 2), **kw)
    assert view.shape[-2:] == (5, 7) and view.shape[-1] <= patches_module.GATHER_MAX_WIDTH
    cols = npconv.im2col(x, (3, 2), **kw)
    assert cols.size >= patches_module.GATHER_MIN_ELEMENTS
    assert cols.dtype == x.dtype and cols.flags.c_contiguous
    assert np.array_equal(cols, view.reshape(cols.shape))
    single = npconv.im2col(x[1], (3, 2), **kw)
    assert np.array_equal(single, cols[1])


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool", "complex64"])
@pytest.mark.parametrize("case", [
    # (input (N, C, *in), kernel, padding, dilation): unit strides, outputs 8-48 wide
    ((2, 70, 10, 12), (3, 3), 1, 1),
    ((3, 70, 9, 14), (2, 3), "same", (2, 1)),    # asymmetric padding, dilated rows
    ((1, 50, 5, 6, 11), (2, 3, 2), (1, 0, 1), 1),  # 3-d
    ((2, 20, 40, 48), (3, 1), (0, 0), 1),        # no padding, no horizontal taps
])
def test_im2col_by_output_planes_is_the_window_view(dtype, case):
    """Unit-stride kernels with outputs paths.windows.MIN_WIDTH to MAX_WIDTH wide and at
    least MIN_ELEMENTS column elements are copied by whole output planes: the same
    columns as the window view, from a non-contiguous input, batched or not, with one
    thread or two."""
    windows = importlib.import_module("npconv.paths.windows")
    shape, kernel, padding, dilation = case
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(shape[:-1] + (2 * shape[-1],)) * 4).astype(dtype)[..., ::2]
    kw = dict(padding=padding, dilation=dilation)
    view = npconv.patches(x, kernel, **kw)
    nd = len(kernel)
    assert windows.MIN_WIDTH <= view.shape[-1] <= windows.MAX_WIDTH
    assert view.size >= windows.MIN_ELEMENTS
    with npconv.num_threads(1):
        cols = npconv.im2col(x, kernel, **kw)
    assert cols.dtype == x.dtype and cols.flags.c_contiguous
    assert np.array_equal(cols, view.reshape(cols.shape))
    with npconv.num_threads(2, min_work_bytes=0):
        assert np.array_equal(npconv.im2col(x, kernel, **kw), cols)
    assert np.array_equal(npconv.im2col(x[1 % shape[0]], kernel, **kw), cols[1 % shape[0]])
    assert view.shape[2:2 + nd] == kernel


@pytest.mark.parametrize("algorithm", ["im2col", "stacked"])
@pytest.mark.parametrize("threads", [1, 2])
def test_paths_copying_output_planes_equal_the_reference(algorithm, threads):
    """The stacked path builds its columns by output planes on unit-stride layers of
    8-48 wide outputs, and so does the im2col path where a chunk holds whole images
    (here its backward's columns for grad weight): the reference's results, on one
    thread and on two."""
    windows = importlib.import_module("npconv.paths.windows")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 96, 12, 9)).astype("float64")
    w = rng.standard_normal((5, 96, 3, 2)).astype("float64")
    b = rng.standard_normal(5)
    kw = dict(padding=(1, 1), dilation=(1, 2))
    geometry = ConvGeometry.build((12, 9), (3, 2), 1, (1, 1), (1, 2))
    assert windows.takes_planes(np, geometry, x.shape[0] * x.shape[1] * 6 * geometry.out_volume,
                                x.dtype)
    y_ref = npconv.conv(x, w, b, **kw, algorithm="reference")
    gy = rng.standard_normal(y_ref.shape)
    g_ref = npconv.conv_backward(gy, x, w, **kw, algorithm="reference")
    with npconv.num_threads(threads, min_work_bytes=0):
        y = npconv.conv(x, w, b, **kw, algorithm=algorithm)
        grads = npconv.conv_backward(gy, x, w, **kw, algorithm=algorithm)
    depth = 96 * 3 * 2  # the forward's contraction: C * K
    assert_close(y, y_ref, reduction=depth)
    for got, want in zip(grads, g_ref):
        assert_close(got, want, reduction=depth * gy.shape[0] * gy[0, 0].size)


@pytest.mark.parametrize("shape", [(16, 4096, 432), (2, 3, 16, 2048, 72), (64, 4096, 65),
                                   (65, 4096, 432), (16, 2047, 432), (16, 4096, 8)])
def test_matmul_tall_is_a_matmul(shape):
    """Weight gradients' long products, swapped on the host when the result is short
    and wide (at most 64 rows, more columns, a contraction of 2048 or more) and made
    as given otherwise: either way ``a @ b``, into ``out`` or a new array."""
    common = importlib.import_module("npconv.paths._common")
    rng = np.random.default_rng(9)
    *batch, m, k, n = shape
    a = rng.standard_normal((*batch, m, k))
    b = rng.standard_normal((*batch, n, k)).swapaxes(-1, -2)  # a layout the paths pass
    want = np.matmul(a, b)
    np.testing.assert_allclose(common.matmul_tall(np, a, b), want, rtol=1e-12, atol=1e-10)
    out = np.full(want.shape, np.nan)
    assert common.matmul_tall(np, a, b, out=out) is out
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("algorithm, kernel, stride", [
    ("im2col", 3, 1), ("serial", 3, 1), ("shifted", 3, 1),
    ("direct", 3, 1), ("flipped", 3, 1), ("winograd", 3, 1), ("pointwise", 1, 1),
    ("phases", 7, 2), ("im2col", 5, 2)])
def test_long_weight_gradients_equal_the_reference(algorithm, kernel, stride):
    """Few output channels over 64x64 images: each path's weight-gradient products are
    long (4096 positions an image) and short and wide (4 rows), the shape in which the
    host computes them swapped. Their gradients equal the reference's."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 8, 64, 64))
    w = rng.standard_normal((4, 8, kernel, kernel))
    kw = dict(stride=stride, padding=kernel // 2)
    gy = rng.standard_normal(npconv.conv(x, w, **kw, algorithm="reference").shape)
    want = npconv.conv_backward(gy, x, w, **kw, algorithm="reference")
    got = npconv.conv_backward(gy, x, w, **kw, algorithm=algorithm)
    reduction = 2 * gy[0, 0].size
    for g, r in zip(got, want):
        assert_close(g, r, reduction=reduction)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("c, o", [(8, 4), (8, 8), (4, 8), (4, 24)])
@pytest.mark.parametrize("dtype", ["float32", "complex128"])
def test_pointwise_bias_folded_or_added_equals_the_reference(c, o, groups, dtype):
    """The pointwise forward adds the bias after its matmul when the output has fewer
    than twice the input's channels, and folds it in as a row of ones otherwise; both
    equal the reference, with the inputs left as they were."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, c, 5, 7)).astype(dtype)
    w = rng.standard_normal((o, c // groups, 1, 1)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    if dtype.startswith("complex"):
        x = x + 1j * rng.standard_normal(x.shape)
        b = b - 2j * rng.standard_normal(b.shape)
    before = x.copy(), w.copy(), b.copy()
    want = npconv.conv(x, w, b, groups=groups, algorithm="reference")
    got = npconv.conv(x, w, b, groups=groups, algorithm="pointwise")
    assert_close(got, want, reduction=c)
    for arg, kept in zip((x, w, b), before):
        np.testing.assert_array_equal(arg, kept)


@pytest.mark.parametrize("limit", [None, 1600, 100])  # all images, two a block, one a block
@pytest.mark.parametrize("groups", [1, 2])
def test_pointwise_gradients_in_blocks_of_images_equal_the_reference(limit, groups,
                                                                      restore_limit):
    """The pointwise weight gradient sums its per-image products in blocks of images
    (as many as a quarter of the workspace limit holds, at least one); any blocking
    gives the reference's gradients."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((5, 6, 7, 3))
    w = rng.standard_normal((4, 6 // groups, 1, 1))
    gy = rng.standard_normal((5, 4, 7, 3))
    want = npconv.conv_backward(gy, x, w, groups=groups, algorithm="reference")
    if limit is not None:
        npconv.set_workspace_limit(limit)
    got = npconv.conv_backward(gy, x, w, groups=groups, algorithm="pointwise")
    for g, r in zip(got, want):
        assert_close(g, r, reduction=x.shape[0] * 21)


@pytest.mark.parametrize("x_shape, kernel, kw", [
    ((4, 256, 6, 6), (3, 3), dict(stride=2, padding=1)),  # ResNet-18's layer4.0.conv1
    ((4, 512, 3, 3), (3, 3), dict(padding=1)),
    ((2, 300, 5, 7), (2, 3), dict(stride=(1, 2), padding=(1, 0), dilation=(2, 1))),
    ((64, 40, 30), (3,), dict(stride=2, padding=2)),  # 1-d, 30 pixels
    ((3, 40, 3, 3, 4), (2, 2, 2), dict(padding=1)),  # 3-d, 36 pixels
    ((2, 128, 8, 8), (3, 3), dict(padding=1)),  # 64 pixels: by slabs
])
@pytest.mark.parametrize("limit", [None, 4096])  # whole, or a few planes a block
def test_folds_of_tiny_images_equal_the_reference(x_shape, kernel, kw, limit, restore_limit):
    """Zero-padded folds of images of at most 36 pixels add every kernel offset's windows
    over all planes at once (planes last), in blocks of planes under the workspace
    limit; they equal the reference's fold, and their windows are left as they were."""
    from npconv.reference import fold

    x = np.zeros(x_shape)
    geometry = ConvGeometry.build(x_shape[2:], kernel, kw.get("stride", 1),
                                  kw.get("padding", 0), kw.get("dilation", 1))
    windows = np.random.default_rng(14).standard_normal(
        x_shape[:2] + kernel + geometry.out_size).astype(np.float32)
    kept = windows.copy()
    if limit is not None:
        npconv.set_workspace_limit(limit)
    got = npconv.fold_patches(windows, x_shape[2:], kernel, **kw)
    assert got.shape == x.shape and got.dtype == np.float32
    assert_close(got, fold(windows.astype(np.float64), geometry),
                 reduction=int(np.prod(kernel)))
    np.testing.assert_array_equal(windows, kept)
