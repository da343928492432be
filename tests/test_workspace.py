"""The workspace bound: chunked paths stay within it, refuse clearly when one item
cannot fit, and 'auto' falls back to im2col when a fast path's buffers do not fit."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import npconv
from npconv import workspace
from npconv.paths import fold
from npconv.testing import assert_close


@pytest.mark.parametrize("algo", ["im2col", "direct", "winograd"])
@pytest.mark.parametrize("groups", [1, 2])
def test_workspace_limit_too_small_raises(algo, groups, restore_limit):
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
    x = rng.standard_normal((2, 16, 40, 40))
    w = rng.standard_normal((16, 16, 13, 13))
    y0 = npconv.conv2d(x, w, padding=6, algorithm="reference")
    assert npconv.explain(x, w, padding=6).forward == "fft"  # a 13x13 kernel: FFT
    # 4 MiB: a few output rows of im2col's columns (16 x 169 x 40 float64 each) fit, the
    # FFT path's spectra of one image and of the kernel do not.
    npconv.set_workspace_limit(4 * 2**20)
    with pytest.raises(MemoryError):
        npconv.conv2d(x, w, padding=6, algorithm="fft")
    assert_close(npconv.conv2d(x, w, padding=6), y0, reduction=16 * 169)


def test_workspace_limit_from_environment(monkeypatch):
    monkeypatch.setenv("NPCONV_WORKSPACE_MB", "3")
    assert workspace._from_environment() == 3 * 2**20
    monkeypatch.setenv("NPCONV_WORKSPACE_MB", "-1")
    with pytest.raises(ValueError, match="NPCONV_WORKSPACE_MB"):
        workspace._from_environment()


@pytest.mark.parametrize("algo", ["im2col", "winograd", "direct", "auto"])
def test_forward_memory_is_bounded(algo):
    """No whole-batch buffer: peak extra memory stays near output + a chunk per thread."""
    x = np.ones((256, 16, 28, 28), np.float32)
    w = np.ones((16, 16, 3, 3), np.float32)
    tracemalloc.start()
    npconv.conv2d(x, w, padding=1, algorithm=algo)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < x.nbytes + 9 * x.nbytes / 4, (algo, peak)


@pytest.mark.parametrize("limit_mib", [256, 1])
def test_col2im_scratch_memory_follows_the_workspace_limit(limit_mib, restore_limit):
    """col2im's slabs take at most min(FOLD_BLOCK_BYTES, limit) per thread (plus the
    output), however many kernel offsets there are."""
    cols = np.ones((16, 128 * 9, 14 * 14), np.float32)
    npconv.set_workspace_limit(limit_mib * 2**20)
    budget = min(fold.FOLD_BLOCK_BYTES, limit_mib * 2**20)
    tracemalloc.start()
    out = npconv.col2im(cols, (28, 28), 3, padding=1, stride=2)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak <= out.nbytes + npconv.get_num_threads() * budget + 2**16, peak
