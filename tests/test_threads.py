"""npconv's own host threads: identical results for any thread count, clear errors."""

import os
import subprocess
import sys

import numpy as np
import pytest
import threadpoolctl

import npconv


@pytest.fixture
def restore_threads():
    old = npconv.get_num_threads()
    yield
    npconv.set_num_threads(old)


def _every_threaded_path(rng):
    """One call per threaded path, each large enough to be split over threads."""
    x = rng.standard_normal((8, 16, 40, 40)).astype(np.float32)
    w = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    w1 = rng.standard_normal((8, 16, 1, 1)).astype(np.float32)
    wd = rng.standard_normal((16, 1, 3, 3)).astype(np.float32)  # depthwise
    x3 = rng.standard_normal((16, 3, 40, 40)).astype(np.float32)  # few channels: direct
    w3 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    one = rng.standard_normal((1, 16, 96, 96)).astype(np.float32)  # split by output rows
    stem = rng.standard_normal((3, 3, 60, 150)).astype(np.float32)  # phase images, 7x7 s2
    w7 = rng.standard_normal((8, 3, 7, 7)).astype(np.float32)
    cols = npconv.im2col(x, 3, padding=1, stride=2)
    gy2 = rng.standard_normal((8, 8, 20, 20)).astype(np.float32)
    gy1 = rng.standard_normal((8, 8, 40, 40)).astype(np.float32)
    gyd = rng.standard_normal((8, 16, 40, 40)).astype(np.float32)
    gy3 = rng.standard_normal((16, 8, 40, 40)).astype(np.float32)
    return (
        (npconv.im2col(x, 3, padding=1, stride=2), npconv.col2im(cols, (40, 40), 3, padding=1, stride=2))
        + (npconv.conv2d(x, w, padding=1, stride=2, algorithm="im2col"),)
        + npconv.conv2d_backward(gy2, x, w, padding=1, stride=2, algorithm="im2col")
        + npconv.conv2d_backward(gy1, x, w, padding=1, algorithm="im2col")  # flat grad weight
        + (npconv.conv2d(x, w, padding=1, algorithm="winograd"),)
        + npconv.conv2d_backward(gy1, x, w, padding=1, algorithm="winograd")
        + (npconv.conv2d(x, w1), npconv.conv2d(one, w1)) + npconv.conv2d_backward(gy1, x, w1)
        + (npconv.conv2d(one, w, padding=1, algorithm="im2col"),
           npconv.conv2d(one, w, padding=1, algorithm="winograd"))
        + (npconv.conv2d(stem, w7, rng.standard_normal(8).astype(np.float32), stride=2,
                         padding=3),)
        + npconv.conv2d_backward(rng.standard_normal((3, 8, 30, 75)).astype(np.float32),
                                 stem, w7, stride=2, padding=3)
        + (npconv.conv2d(x, wd, padding=1, groups=16),)
        + npconv.conv2d_backward(gyd, x, wd, padding=1, groups=16)
        + npconv.conv2d_backward(gy3, x3, w3, padding=1, algorithm="direct")
    )


def test_threaded_loops_do_not_depend_on_the_thread_count(restore_threads):
    """Bitwise equal for any thread count: the chunks and the order of the sums over
    them are fixed by the shapes. Threaded chunks call the BLAS single-threaded, so
    the serial run does too here (OpenBLAS's own threads change its roundings)."""
    results = []
    for count in (1, 2, 3, 4):
        npconv.set_num_threads(count)
        with threadpoolctl.threadpool_limits(1, user_api="blas"):
            results.append(_every_threaded_path(np.random.default_rng(3)))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


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
