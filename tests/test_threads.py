"""npconv's own host threads: identical results for any thread count, clear errors."""

import os
import subprocess
import sys

import numpy as np
import pytest

import npconv


@pytest.fixture
def restore_threads():
    old = npconv.get_num_threads()
    yield
    npconv.set_num_threads(old)


def test_threaded_loops_do_not_depend_on_the_thread_count(restore_threads):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 16, 40, 40)).astype(np.float32)  # large enough to be threaded
    w = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    cols = npconv.im2col(x, 3, padding=1, stride=2)
    gy = rng.standard_normal(npconv.conv2d(x, w, padding=1, stride=2).shape).astype(np.float32)
    wd = rng.standard_normal((16, 1, 3, 3)).astype(np.float32)  # depthwise: threaded chunks
    gyd = rng.standard_normal((8, 16, 40, 40)).astype(np.float32)
    results = []
    for count in (1, 2, 3):
        npconv.set_num_threads(count)
        results.append(
            (npconv.im2col(x, 3, padding=1, stride=2), npconv.col2im(cols, (40, 40), 3, padding=1, stride=2))
            + npconv.conv2d_backward(gy, x, w, padding=1, stride=2, algorithm="im2col")
            + (npconv.conv2d(x, wd, padding=1, groups=16),)
            + npconv.conv2d_backward(gyd, x, wd, padding=1, groups=16)
        )
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)  # bitwise: each element is summed by one thread


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError)])
def test_set_num_threads_rejects_bad_counts(bad, exc, restore_threads):
    with pytest.raises(exc, match="count must be"):
        npconv.set_num_threads(bad)


@pytest.mark.parametrize("name, value", [("NPCONV_NUM_THREADS", "zero"), ("NPCONV_WORKSPACE_MB", "-1")])
def test_bad_environment_values_fail_at_import(name, value):
    env = dict(os.environ, **{name: value})
    result = subprocess.run([sys.executable, "-c", "import npconv"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode != 0
    assert name in result.stderr and repr(value) in result.stderr


def test_col2im_under_a_tight_workspace_limit_does_not_depend_on_the_thread_count(
        restore_threads):
    """With slabs summed in several passes, the passes must not depend on the threads."""
    rng = np.random.default_rng(4)
    cols = rng.standard_normal((6, 16 * 9, 30 * 30))
    old_limit = npconv.get_workspace_limit()
    npconv.set_workspace_limit(64 * 2**10)  # 8 of the 9 slabs of a 32x32 float64 image
    try:
        results = []
        for count in (1, 2, 3):
            npconv.set_num_threads(count)
            results.append(npconv.col2im(cols, (32, 32), 3))
    finally:
        npconv.set_workspace_limit(old_limit)
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)
