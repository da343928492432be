"""The compiled Winograd path (``algorithm='winograd_jit'``) at its edges.

Reached by its public name: asymmetric and wide padding (grad input pads
grad_output by 2 - p), outputs whose last tiles are partial, one tile or less,
many chunks under a small workspace limit (the grad-weight sums in order), both
tile sizes, and the choice 'auto' makes. The hypothesis tests of
tests/test_paths.py draw its geometries too.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npconv
from npconv.geometry import ConvGeometry
from npconv.paths import get_path
from npconv.plan import Problem
from npconv.testing import assert_close

pytest.importorskip("numba")

CASES = [
    # (n, c, o, size, padding)
    (2, 3, 5, (7, 9), 1),
    (1, 4, 4, (13, 6), 0),
    (3, 2, 3, (5, 5), 2),  # grad input pads by 0
    (2, 8, 3, (1, 3), 1),  # one partial tile
    (2, 5, 6, (11, 14), (2, 0)),  # unequal padding per axis
    (1, 3, 2, (3, 3), 0),  # a 1x1 output
    (2, 6, 7, (16, 17), 1),  # several tile rows, the last partial
]


def _check(x, w, b, padding, gy=None, **path_kw):
    wide = [a.astype(np.float64) for a in (x, w, b)]
    y_ref = npconv.conv(*wide, padding=padding, algorithm="reference")
    if gy is None:
        gy = np.random.default_rng(1).standard_normal(y_ref.shape).astype(x.dtype)
    g_ref = npconv.conv_backward(gy.astype(np.float64), wide[0], wide[1], padding=padding,
                                 algorithm="reference")
    y = npconv.conv(x, w, b, padding=padding, algorithm="winograd_jit")
    assert y.dtype == x.dtype
    c, positions = x.shape[1], y_ref[:, 0].size
    assert_close(y, y_ref, reduction=9 * c)
    grads = npconv.conv_backward(gy, x, w, padding=padding, algorithm="winograd_jit")
    for got, want, n in zip(grads, g_ref, (9 * w.shape[0], positions, positions)):
        assert got.dtype == x.dtype
        assert_close(got, want, reduction=n)


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_equals_the_reference(case, dtype):
    n, c, o, size, padding = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c) + size).astype(dtype)
    w = rng.standard_normal((o, c, 3, 3)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    _check(x, w, b, padding)


def test_non_contiguous_inputs_are_read_as_given():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 9, 10, 4)).transpose(0, 3, 1, 2)[::-1]  # (3, 4, 9, 10)
    w = np.asfortranarray(rng.standard_normal((5, 4, 3, 3)))
    b = rng.standard_normal(10)[::2]
    before = x.copy()
    _check(x, w, b, 1)
    np.testing.assert_array_equal(x, before)


def test_chunks_under_a_small_workspace_limit_give_the_same_result(restore_limit):
    """One image a chunk (the grad-weight partial sums added chunk by chunk) equals
    the whole batch in one chunk; a limit below one image's tiles raises MemoryError
    naming it, and 'auto' then does not take the path."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 8, 20, 20)).astype(np.float32)
    w = rng.standard_normal((6, 8, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((5, 6, 20, 20)).astype(np.float32)
    whole = npconv.conv(x, w, padding=1, algorithm="winograd_jit")
    whole_grads = npconv.conv_backward(gy, x, w, padding=1, algorithm="winograd_jit")
    one_image = 36 * 25 * (8 + 6) * 4  # 36 frequencies x 25 tiles x (C + O) floats
    npconv.set_workspace_limit(one_image + 100)
    assert_close(npconv.conv(x, w, padding=1, algorithm="winograd_jit"), whole, reduction=72)
    for got, want in zip(npconv.conv_backward(gy, x, w, padding=1, algorithm="winograd_jit"),
                         whole_grads):
        assert_close(got, want, reduction=2000)
    npconv.set_workspace_limit(one_image - 100)
    with pytest.raises(MemoryError, match="workspace limit"):
        npconv.conv(x, w, padding=1, algorithm="winograd_jit")


@pytest.mark.parametrize("tile", [2, 4])
def test_both_tile_sizes_equal_the_reference(tile):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 5, 9, 10))
    w = rng.standard_normal((4, 5, 3, 3))
    b = rng.standard_normal(4)
    gy = rng.standard_normal((2, 4, 9, 10))
    problem = Problem(ConvGeometry.build((9, 10), (3, 3), 1, 1), 1, 2, 5, 4, x.dtype)
    path = get_path("winograd_jit")
    np.testing.assert_allclose(path.forward(problem, x, w, b, tile=tile),
                               npconv.conv(x, w, b, padding=1, algorithm="reference"),
                               rtol=1e-12, atol=1e-12)
    gx, gw = path.backward(problem, gy, x, w, True, True, tile=tile)
    want = npconv.conv_backward(gy, x, w, padding=1, algorithm="reference")
    np.testing.assert_allclose(gx, want[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, want[1], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="tile must be one of"):
        path.forward(problem, x, w, b, tile=3)


def test_auto_takes_it_for_wide_3x3_layers_with_enough_tiles():
    def chosen(n, c, o, size):
        x, w = np.zeros((n, c) + size, np.float32), np.zeros((o, c, 3, 3), np.float32)
        plan = npconv.explain(x, w, padding=1)
        return plan.forward, plan.grad_input, plan.grad_weight, plan.reasons

    *paths, reasons = chosen(4, 256, 256, (16, 16))  # VGG-11's features.3: 64 tiles
    assert paths == ["winograd_jit"] * 3
    assert "Winograd" in reasons["forward"]
    *paths, _ = chosen(4, 128, 128, (12, 12))  # ResNet-18's layer2: 36 tiles
    assert paths == ["winograd_jit"] * 3
    for band in [(2, 64, 64, (16, 16)),  # U-Net's 64 channels, 32 tiles: the gradients
                 (2, 128, 64, (16, 16))]:  # (the forward is blocked's)
        *paths, _ = chosen(*band)
        assert paths == ["blocked", "winograd_jit", "winograd_jit"]
    *paths, _ = chosen(2, 32, 64, (16, 16))  # the gradients from 32 channels
    assert paths[0] != "winograd_jit" and paths[1] == paths[2] == "winograd_jit"
    for few in [(4, 256, 512, (8, 8)),  # 16 tiles
                (4, 64, 64, (24, 24)),  # 64 channels, 144 tiles
                (2, 16, 64, (16, 16))]:  # 16 channels
        assert "winograd_jit" not in chosen(*few)[:3]
    x, w = np.zeros((4, 256, 16, 16), np.float32), np.zeros((256, 256, 3, 3), np.float32)
    assert npconv.explain(x, w, padding=1, stride=2).forward != "winograd_jit"
    assert npconv.explain(x.astype(np.complex64), w.astype(np.complex64),
                          padding=1).forward != "winograd_jit"


@pytest.mark.parametrize("padding", [3, (4, 0)])
def test_padding_past_the_kernel_span(padding):
    """Grad input is the forward's adjoint (tiles added back), not a forward of the
    flipped kernel, so padding wider than 2 works in every map."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 6, 7))
    w = rng.standard_normal((4, 3, 3, 3))
    _check(x, w, rng.standard_normal(4), padding)


@given(n=st.integers(1, 2), c=st.integers(64, 100), o=st.integers(64, 100),
       size=st.tuples(st.integers(16, 20), st.integers(16, 20)), padding=st.integers(0, 2),
       threads=st.integers(1, 4), dtype=st.sampled_from(["float32", "float64"]))
@settings(max_examples=20, deadline=None)
def test_a_call_in_channel_ranges_equals_the_reference(n, c, o, size, padding, threads,
                                                       dtype):
    # the whole batch's tiles in one chunk and over 2^23 multiply-adds: the call runs in
    # 2-4 ranges of output channels (forward) or input channels (backward), multiples
    # of 8 with a shorter last one, on 1-4 threads with no work threshold
    rng = np.random.default_rng(n * 1000 + c * 10 + o)
    x = rng.standard_normal((n, c) + size).astype(dtype)
    w = rng.standard_normal((o, c, 3, 3)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    with npconv.num_threads(threads, min_work_bytes=0):
        _check(x, w, b, padding)
        # conv_transpose's forward is the grad input map alone, its weight gradient the
        # grad weight map alone
        xt = rng.standard_normal((n, o) + size).astype(dtype)
        wide = [a.astype(np.float64) for a in (xt, w)]
        want = npconv.conv_transpose(*wide, padding=1, algorithm="reference")
        got = npconv.conv_transpose(xt, w, padding=1, algorithm="winograd_jit")
        assert_close(got, want, reduction=9 * o)
        gy = rng.standard_normal(want.shape).astype(dtype)
        want_gw = npconv.conv_transpose_backward(gy.astype(np.float64), *wide, padding=1,
                                                 algorithm="reference")[1]
        got_gw = npconv.conv_transpose_backward(gy, xt, w, padding=1,
                                                algorithm="winograd_jit")[1]
        assert_close(got_gw, want_gw, reduction=n * size[0] * size[1])
