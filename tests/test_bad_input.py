"""Every invalid call raises ValueError/TypeError naming the parameter and the value."""

import numpy as np
import pytest

import npconv

X = np.ones((2, 4, 6, 6))
W = np.ones((8, 4, 3, 3))
B = np.ones(8)
COLS = npconv.im2col(X, 3)
GY = np.ones((2, 8, 4, 4))
_SHARED = np.zeros(2 * 36 * 16)  # x and out cut from one buffer


def _read_only(shape):
    a = np.zeros(shape)
    a.flags.writeable = False
    return a


# (id, call, exception, regex the message must match)
CASES = [
    # ranks and shapes
    ("x ndim", lambda: npconv.conv2d(np.ones((6, 6)), W), ValueError, r"x must be 3 or 4-dim.*\(6, 6\)"),
    ("x ndim 5", lambda: npconv.conv2d(np.ones((1, 4, 6, 6, 1)), W), ValueError, r"x must be"),
    ("weight ndim", lambda: npconv.conv2d(X, np.ones((8, 4, 3))), ValueError, r"weight must be 4-dim.*\(8, 4, 3\)"),
    ("weight ndim generic", lambda: npconv.conv(X, np.ones((8, 4))), ValueError, r"weight must have shape"),
    ("channel mismatch", lambda: npconv.conv2d(X, np.ones((8, 3, 3, 3))), ValueError, r"expects 3 input channels, but x has 4"),
    ("groups divide in", lambda: npconv.conv2d(X, np.ones((9, 4, 3, 3)), groups=3), ValueError, r"groups=3 must divide the 4 input"),
    ("groups divide out", lambda: npconv.conv2d(X, np.ones((6, 1, 3, 3)), groups=4), ValueError, r"groups=4 must divide the 6 output"),
    ("groups zero", lambda: npconv.conv2d(X, W, groups=0), ValueError, r"groups must be a positive integer, got 0"),
    ("groups float", lambda: npconv.conv2d(X, W, groups=1.5), TypeError, r"groups must be an integer, got 1.5"),
    ("stride zero", lambda: npconv.conv2d(X, W, stride=0), ValueError, r"stride must be positive, got 0"),
    ("stride negative tuple", lambda: npconv.conv2d(X, W, stride=(1, -2)), ValueError, r"stride must be positive, got \(1, -2\)"),
    ("dilation zero", lambda: npconv.conv2d(X, W, dilation=0), ValueError, r"dilation must be positive"),
    ("padding negative", lambda: npconv.conv2d(X, W, padding=-1), ValueError, r"padding must be non-negative, got -1"),
    ("padding string", lambda: npconv.conv2d(X, W, padding="full"), ValueError, r"padding must be 'same', 'valid'.*'full'"),
    ("padding same strided", lambda: npconv.conv2d(X, W, padding="same", stride=2), ValueError, r"padding='same' is not supported for strided"),
    ("tuple length", lambda: npconv.conv2d(X, W, stride=(1, 1, 1)), ValueError, r"stride must be an int or a tuple of 2 ints.*length 3"),
    ("tuple of floats", lambda: npconv.conv2d(X, W, padding=(1.0, 1)), TypeError, r"padding\[0\] must be an integer, got 1.0"),
    ("bool parameter", lambda: npconv.conv2d(X, W, stride=True), TypeError, r"stride must be an integer, got the bool True"),
    ("string kernel", lambda: npconv.im2col(X, "3"), TypeError, r"kernel_size must be an int or a tuple"),
    ("kernel too large", lambda: npconv.conv2d(X, np.ones((8, 4, 7, 7))), ValueError, r"kernel_size \(7, 7\).*spans 7.*padded x size 6.*at least one"),
    ("dilated kernel too large", lambda: npconv.conv2d(X, W, dilation=3), ValueError, r"spans 7 elements"),
    ("bias shape", lambda: npconv.conv2d(X, W, np.ones(7)), ValueError, r"bias must have shape \(8,\), got \(7,\)"),
    ("bias 2-d", lambda: npconv.conv2d(X, W, np.ones((8, 1))), ValueError, r"bias must have shape \(8,\), got \(8, 1\)"),
    ("padding_mode", lambda: npconv.conv2d(X, W, padding=1, padding_mode="mirror"), ValueError, r"padding_mode must be one of .*'mirror'"),
    ("reflect too wide", lambda: npconv.conv2d(X, W, padding=6, padding_mode="reflect"), ValueError, r"padding_mode='reflect' needs padding smaller"),
    ("circular too wide", lambda: npconv.conv2d(X, W, padding=7, padding_mode="circular"), ValueError, r"padding_mode='circular' needs padding at most"),
    ("algorithm", lambda: npconv.conv2d(X, W, algorithm="magic"), ValueError, r"algorithm must be one of .*'magic'"),
    # dtypes
    ("int input", lambda: npconv.conv2d(X.astype(int), W.astype(int)), TypeError, r"x must have a floating or complex dtype.*int64"),
    ("bool conv input", lambda: npconv.conv2d(X > 0, W > 0), TypeError, r"x must have a floating or complex dtype.*bool"),
    ("string im2col input", lambda: npconv.im2col(np.full((1, 1, 4, 4), "a"), 3), TypeError, r"x must have a bool, integer, floating or complex dtype, got <U1"),
    ("object patches input", lambda: npconv.patches(np.ones((1, 1, 4, 4), dtype=object), 3), TypeError, r"x must have a bool, integer, floating or complex dtype, got object"),
    ("mixed dtypes", lambda: npconv.conv2d(X.astype(np.float32), W), TypeError, r"x is float32, weight is float64"),
    ("mixed bias dtype", lambda: npconv.conv2d(X, W, B.astype(np.float32)), TypeError, r"bias is float32"),
    ("none input", lambda: npconv.conv2d(None, W), TypeError, r"x must be an array, got None"),
    ("object input", lambda: npconv.conv2d(object(), W), TypeError, r"x must have a floating or complex dtype"),
    # backward
    ("grad_output shape", lambda: npconv.conv2d_backward(np.ones((2, 8, 5, 5)), X, W), ValueError, r"grad_output must have shape \(2, 8, 4, 4\).*\(2, 8, 5, 5\)"),
    ("grad_output channels", lambda: npconv.conv2d_backward(np.ones((2, 7, 4, 4)), X, W), ValueError, r"grad_output must have shape"),
    ("grad_output dtype", lambda: npconv.conv2d_backward(GY.astype(np.float32), X, W), TypeError, r"grad_output is float32, x is float64"),
    ("grad_output unbatched", lambda: npconv.conv2d_backward(GY, X[0], W), ValueError, r"grad_output must have shape \(8, 4, 4\)"),
    # im2col / col2im / patches
    ("im2col ndim", lambda: npconv.im2col(np.ones((4, 6)), 3), ValueError, r"x must be 3 or 4-dimensional"),
    ("im2col kernel len", lambda: npconv.im2col(np.ones((4, 6)), (3, 3, 3)), ValueError, r"x must be 4 or 5-dimensional"),
    ("col2im divisible", lambda: npconv.col2im(np.ones((2, 35, 16)), (6, 6), 3), ValueError, r"cols dimension 1 \(size 35\) must be divisible by the product of kernel_size \(3, 3\) = 9"),
    ("col2im blocks", lambda: npconv.col2im(COLS, (7, 7), 3), ValueError, r"cols has 16 columns, but output_size=\(7, 7\).*25 sliding blocks"),
    ("col2im ndim", lambda: npconv.col2im(np.ones(9), (6, 6), 3), ValueError, r"cols must be 2 or 3-dimensional"),
    ("col2im output_size", lambda: npconv.col2im(COLS, (6, 0), 3), ValueError, r"output_size must be positive, got \(6, 0\)"),
    ("col2im output_size len", lambda: npconv.col2im(COLS, (6, 6, 6), (3, 3)), ValueError, r"output_size must be an int or a tuple of 2 ints"),
    ("patches rank", lambda: npconv.patches(np.ones((6, 6)), (3, 3, 3)), ValueError, r"x must be 4 or 5-dimensional"),
    ("patches int kernel rank", lambda: npconv.patches(np.ones((1, 1, 4, 4, 4)), 3), ValueError, r"x must be 3 or 4-dimensional.*an int kernel_size means 2 spatial dims"),
    ("fold_patches rank", lambda: npconv.fold_patches(np.ones((2, 4, 3, 3)), (6, 6), 3), ValueError, r"grad_patches must be 5 or 6-dimensional"),
    ("fold_patches unbatched shape", lambda: npconv.fold_patches(np.ones((4, 3, 3, 5, 5)), (6, 6), 3), ValueError, r"grad_patches must have shape \(4, 3, 3, 4, 4\).*got \(4, 3, 3, 5, 5\)"),
    # im2col's out
    ("im2col out type", lambda: npconv.im2col(X, 3, out=[0.0]), TypeError, r"out must be a numpy array like x, got list"),
    ("im2col out dtype", lambda: npconv.im2col(X, 3, out=np.empty(COLS.shape, np.float32)), TypeError, r"out must have x's dtype float64, got float32"),
    ("im2col out shape", lambda: npconv.im2col(X, 3, out=np.empty((2, 36, 15))), ValueError, r"out must have shape \(2, 36, 16\), got \(2, 36, 15\)"),
    ("im2col out unbatched shape", lambda: npconv.im2col(X[0], 3, out=np.empty(COLS.shape)), ValueError, r"out must have shape \(36, 16\), got \(2, 36, 16\)"),
    ("im2col out strided", lambda: npconv.im2col(X, 3, out=np.empty((2, 36, 32))[:, :, ::2]), ValueError, r"out must be C-contiguous"),
    ("im2col out read-only", lambda: npconv.im2col(X, 3, out=np.broadcast_to(np.empty(16), COLS.shape)), ValueError, r"out must be C-contiguous"),
    ("im2col out not writeable", lambda: npconv.im2col(X, 3, out=_read_only(COLS.shape)), ValueError, r"out is read-only"),
    ("im2col out overlaps x", lambda: npconv.im2col(_SHARED[:288].reshape(X.shape), 3, out=_SHARED.reshape(COLS.shape)), ValueError, r"out must not share memory with x"),
    # geometry is keyword-only on the receptive-field functions (torch's unfold order differs)
    ("im2col positional", lambda: npconv.im2col(X, 3, 2), TypeError, r"positional argument"),
    ("col2im positional", lambda: npconv.col2im(COLS, (6, 6), 3, 1), TypeError, r"positional argument"),
    ("patches positional", lambda: npconv.patches(X, 3, 2), TypeError, r"positional argument"),
    ("fold_patches positional", lambda: npconv.fold_patches(np.ones((2, 4, 3, 3, 4, 4)), (6, 6), 3, 1), TypeError, r"positional argument"),
    # over-range parameters: a ValueError naming the parameter, before anything is allocated
    ("huge stride", lambda: npconv.conv2d(X, W, stride=10**18), ValueError, r"stride=1000000000000000000 is out of range"),
    ("huge padding", lambda: npconv.conv2d(X, W, padding=10**9), ValueError, r"padding=1000000000 is out of range"),
    ("huge dilation", lambda: npconv.conv2d(X, W, dilation=10**18), ValueError, r"dilation=1000000000000000000 is out of range"),
    ("huge stride tuple", lambda: npconv.conv2d(X, W, stride=(1, 2**62)), ValueError, r"stride=\(1, 4611686018427387904\) is out of range: stride 4611686018427387904 on spatial axis 1"),
    ("huge 1x1 dilation", lambda: npconv.conv2d(X, np.ones((8, 4, 1, 1)), dilation=10**18), ValueError, r"dilation=1000000000000000000 is out of range"),
    ("huge im2col stride", lambda: npconv.im2col(X, 3, stride=10**18), ValueError, r"stride=1000000000000000000 is out of range"),
    ("huge im2col padding", lambda: npconv.im2col(X, 3, padding=10**9), ValueError, r"padding=1000000000 is out of range"),
    ("huge patches dilation", lambda: npconv.patches(X, 1, dilation=10**18), ValueError, r"dilation=1000000000000000000 is out of range"),
    ("huge kernel", lambda: npconv.im2col(X, 10**18), ValueError, r"kernel_size \(1000000000000000000, 1000000000000000000\).*at least one"),
    ("huge output_size", lambda: npconv.col2im(COLS, (10**10, 10**10), 3), ValueError, r"output_size=\(10000000000, 10000000000\) is out of range"),
    ("huge input_size", lambda: npconv.fold_patches(np.ones((2, 4, 3, 3, 4, 4)), (10**10, 10**10), 3), ValueError, r"input_size=\(10000000000, 10000000000\) is out of range"),
    ("huge transpose stride", lambda: npconv.conv_transpose2d(X, np.ones((4, 2, 3, 3)), stride=10**18), ValueError, r"stride=1000000000000000000 is out of range"),
    ("huge transpose dilation", lambda: npconv.conv_transpose2d(X, np.ones((4, 2, 3, 3)), dilation=10**18), ValueError, r"dilation=1000000000000000000 is out of range"),
    ("huge padding many images", lambda: npconv.patches(np.ones((4096, 4096, 1, 1), np.float32), 1, padding=2**20), ValueError, r"padding=1048576 is out of range.*x 16777216 images"),
    ("huge backward stride", lambda: npconv.conv2d_backward(np.ones((2, 8, 1, 1)), X, W, stride=10**18), ValueError, r"stride=1000000000000000000 is out of range"),
    ("fold_patches shape", lambda: npconv.fold_patches(np.ones((2, 4, 3, 3, 5, 5)), (6, 6), 3), ValueError, r"grad_patches must have shape \(2, 4, 3, 3, 4, 4\)"),
    # transposed
    ("output_padding", lambda: npconv.conv_transpose2d(X, np.ones((4, 2, 3, 3)), stride=2, output_padding=2), ValueError, r"output padding must be smaller than either stride or dilation|output_padding must be smaller than either stride or dilation"),
    ("transpose channels", lambda: npconv.conv_transpose2d(X, np.ones((3, 2, 3, 3))), ValueError, r"expects 3 input channels .* but x has 4"),
    ("transpose padding str", lambda: npconv.conv_transpose2d(X, np.ones((4, 2, 3, 3)), padding="same"), ValueError, r"padding must be an int or a tuple of 2 ints for transposed"),
    ("transpose too small", lambda: npconv.conv_transpose2d(np.ones((1, 4, 1, 1)), np.ones((4, 2, 1, 1)), padding=1), ValueError, r"output size \(-1, -1\) is not positive"),
    ("transpose groups", lambda: npconv.conv_transpose2d(X, np.ones((4, 2, 3, 3)), groups=3), ValueError, r"groups=3 must divide the 4 input"),
    # workspace
    ("workspace", lambda: npconv.set_workspace_limit(0), ValueError, r"nbytes must be positive, got 0"),
]


@pytest.mark.parametrize("call, exc, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_reported_clearly(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_workspace_too_small_for_one_image_is_a_memory_error():
    old = npconv.get_workspace_limit()
    try:
        npconv.set_workspace_limit(1024)
        with pytest.raises(MemoryError, match="workspace limit"):
            npconv.conv2d(X, W, padding=1)
    finally:
        npconv.set_workspace_limit(old)


def test_inputs_are_never_modified():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 4, 6, 6)), rng.standard_normal((8, 2, 3, 3)), rng.standard_normal(8)
    gy = rng.standard_normal((2, 8, 6, 6))
    copies = [a.copy() for a in (x, w, b, gy)]
    for mode in ("zeros", "reflect", "replicate", "circular"):
        npconv.conv2d(x, w, b, padding=1, groups=2, padding_mode=mode)
        npconv.conv2d_backward(gy, x, w, padding=1, groups=2, padding_mode=mode)
    cols = npconv.im2col(x, 3, padding=1)
    cols_copy = cols.copy()
    npconv.col2im(cols, (6, 6), 3, padding=1)
    for before, after in zip(copies + [cols_copy], (x, w, b, gy, cols)):
        np.testing.assert_array_equal(before, after)


def test_patch_views_are_read_only():
    view = npconv.patches(X, 3)
    assert not view.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        view[0, 0, 0, 0, 0, 0] = 1.0
    assert np.shares_memory(view, X)
