"""The cache of temporary buffers: reuse only of what nothing refers to, and its bound."""

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npconv
from npconv import scratch
from npconv.testing import assert_close

SHAPE = (64, 1024)  # 256 KiB of float32: above scratch.MIN_BYTES


@pytest.fixture
def restore_cache():
    old = npconv.get_scratch_cache()
    yield
    npconv.set_scratch_cache(old)


def test_a_dropped_buffer_is_reused_and_a_held_one_is_not(restore_cache):
    npconv.set_scratch_cache(0)
    npconv.set_scratch_cache(64 * 2**20)
    a = scratch.empty(np, SHAPE, np.float32)
    held = scratch.empty(np, SHAPE, np.float32)
    assert not np.shares_memory(a, held)
    address = a.ctypes.data
    del a
    again = scratch.empty(np, SHAPE, np.float32)
    assert again.ctypes.data == address
    view = again[3:]  # a view keeps the buffer in use
    del again
    other = scratch.empty(np, SHAPE, np.float32)
    assert not np.shares_memory(other, view) and not np.shares_memory(other, held)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(16, 300), st.sampled_from(["f4", "f8"])),
                min_size=1, max_size=30))
def test_live_temporaries_never_share_memory(ops):
    """Any sequence of takes and drops: the arrays alive at once are disjoint."""
    live = []
    for mark, (drop, kib, dtype) in enumerate(ops):
        if drop and live:
            live.pop(0)
        a = scratch.empty(np, (kib * 1024 // np.dtype(dtype).itemsize,), dtype)
        assert a.dtype == np.dtype(dtype) and a.flags.c_contiguous and a.flags.writeable
        assert all(not np.shares_memory(a, b) for b, _ in live)
        a.fill(mark)
        live.append((a, mark))
    for a, mark in live:  # nothing alive was written by a later take
        assert (a == mark).all()


def test_zeros_are_zero_after_reuse(restore_cache):
    a = scratch.empty(np, SHAPE, np.float32)
    a.fill(7)
    del a
    assert not scratch.zeros(np, SHAPE, np.float32).any()


def test_the_cache_keeps_its_bound_and_zero_drops_everything(restore_cache):
    npconv.set_scratch_cache(0)
    assert scratch.cached_bytes() == 0
    a = scratch.empty(np, SHAPE, np.float32)  # not kept: the limit is 0
    assert scratch.cached_bytes() == 0
    del a
    npconv.set_scratch_cache(600 * 2**10)
    kept = [scratch.empty(np, SHAPE, np.float32) for _ in range(4)]
    assert scratch.cached_bytes() <= 600 * 2**10
    assert all(not np.shares_memory(x, y) for i, x in enumerate(kept) for y in kept[i + 1:])
    npconv.set_scratch_cache(0)
    assert scratch.cached_bytes() == 0


# (kernel, stride, padding, groups): a layer for every path, the first served is used
LAYERS = [(3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 1, 32), (1, 1, 0, 1)]


def _served_layer(algorithm, x, gy_of):
    for k, s, p, g in LAYERS:
        w = np.random.default_rng(2).standard_normal((32, 32 // g, k, k)).astype(np.float32)
        call = dict(stride=s, padding=p, groups=g, algorithm=algorithm)
        try:
            y = npconv.conv2d(x, w, **call)
        except ValueError:  # the path does not serve this layer
            continue
        return w, call, y, npconv.conv2d_backward(gy_of(y), x, w, **{**call})
    raise AssertionError(f"no layer in LAYERS is served by {algorithm!r}")


@pytest.mark.parametrize("algorithm", [a for a in npconv.ALGORITHMS if a != "auto"])
def test_results_survive_later_calls(algorithm):
    """A result handed out is never a cached buffer: later calls leave it unchanged."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 32, 20, 20)).astype(np.float32)
    w, call, y, (gx, gw, gb) = _served_layer(algorithm, x, lambda y: np.ones_like(y))
    kept = [a.copy() for a in (y, gx, gw, gb)]
    for _ in range(3):
        npconv.conv2d(2 * x, w, **call)
        npconv.conv2d_backward(-np.ones_like(y), 3 * x, 3 * w, **call)
    for a, b in zip((y, gx, gw, gb), kept):
        np.testing.assert_array_equal(a, b)
    reference = {**call, "algorithm": "reference"}
    assert_close(y, npconv.conv2d(x, w, **reference), reduction=288)
    assert_close(gx, npconv.conv2d_backward(np.ones_like(y), x, w, **reference)[0],
                 reduction=288)


# (algorithm, x shape, weight shape, call): a weight gradient of 144-216 KiB, summed in
# lanes whose partials come from the cache
STEADY = [("im2col", (4, 64, 12, 12), (64, 64, 3, 3), dict(padding=1)),
          ("stacked", (4, 64, 12, 12), (64, 64, 3, 3), dict(padding=1)),
          ("pointwise", (4, 96, 6, 6), (576, 96, 1, 1), {})]


@pytest.mark.parametrize("algorithm, x_shape, w_shape, call", STEADY)
def test_a_repeated_backward_allocates_little_beyond_its_results(algorithm, x_shape, w_shape,
                                                                 call, restore_cache):
    """Weight-gradient partial sums are temporaries from the cache: a new one each call
    made the heap grow and shrink by its size, every page faulting again (ResNet-18's
    layer3.0.conv2: 2100 faults and 10 ms a call, against 2.2 ms)."""
    import tracemalloc

    npconv.set_scratch_cache(64 * 2**20)
    rng = np.random.default_rng(4)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    gy = np.ones_like(npconv.conv2d(x, w, algorithm=algorithm, **call))
    for _ in range(2):
        npconv.conv2d_backward(gy, x, w, algorithm=algorithm, **call)
    if scratch.cached_bytes() == 0:
        pytest.skip("the cache keeps nothing on this interpreter")
    tracemalloc.start()
    try:
        results = npconv.conv2d_backward(gy, x, w, algorithm=algorithm, **call)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    extra = peak - sum(r.nbytes for r in results)
    assert extra < results[1].nbytes // 2, (extra, results[1].nbytes)


def test_threads_calling_at_once_get_their_own_results(restore_cache):
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((2, 64, 8, 8)).astype(np.float32) for _ in range(4)]
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    expected = [npconv.conv2d(x, w, padding=1, algorithm="reference") for x in xs]
    results: dict[int, list] = {i: [] for i in range(4)}

    def work(i):
        for _ in range(20):
            results[i].append(npconv.conv2d(xs[i], w, padding=1, algorithm="stacked"))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        for y in results[i]:
            assert_close(y, expected[i], reduction=576)


@pytest.mark.parametrize("value, exc, pattern", [
    (-1, ValueError, r"nbytes must be >= 0, got -1"),
    (1.5, TypeError, r"nbytes must be an integer, got 1.5"),
])
def test_bad_cache_size(value, exc, pattern):
    with pytest.raises(exc, match=pattern):
        npconv.set_scratch_cache(value)


def test_cache_size_from_environment(monkeypatch):
    monkeypatch.setenv("NPCONV_SCRATCH_CACHE_MB", "3")
    assert scratch._from_environment() == 3 * 2**20
    monkeypatch.setenv("NPCONV_SCRATCH_CACHE_MB", "0")
    assert scratch._from_environment() == 0
    for bad in ("-1", "lots"):
        monkeypatch.setenv("NPCONV_SCRATCH_CACHE_MB", bad)
        with pytest.raises(ValueError, match=f"NPCONV_SCRATCH_CACHE_MB.*{bad}"):
            scratch._from_environment()


def test_large_im2col_results_reuse_a_dropped_result_and_never_a_live_one(restore_cache):
    """Columns of at least RESULT_MIN_BYTES come from the cache: a result still held
    (or a view of it) is never written by a later call; a dropped one's memory is
    taken again; each result equals one written into a fresh ``out``."""
    npconv.set_scratch_cache(0)
    npconv.set_scratch_cache(64 * 2**20)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 16, 64, 64))  # float64 columns (8, 144, 4096): 36 MiB
    y = rng.standard_normal(x.shape)
    assert 8 * 144 * 4096 * 8 >= scratch.RESULT_MIN_BYTES
    expected_x = npconv.im2col(x, 3, padding=1, out=np.empty((8, 144, 4096)))
    first = npconv.im2col(x, 3, padding=1)
    np.testing.assert_array_equal(first, expected_x)
    address = first.ctypes.data
    view = first[:, 7]
    del first
    second = npconv.im2col(y, 3, padding=1)  # the first's buffer is still in use (view)
    assert not np.shares_memory(second, view)
    np.testing.assert_array_equal(view, expected_x[:, 7])
    del view
    third = npconv.im2col(x, 3, padding=1)
    assert third.ctypes.data == address and not np.shares_memory(third, second)
    assert third.flags.writeable and third.flags.c_contiguous
    np.testing.assert_array_equal(third, expected_x)
    np.testing.assert_array_equal(second, npconv.im2col(y, 3, padding=1, out=np.empty_like(second)))
    npconv.set_scratch_cache(0)  # no cache: a new array each call, the same values
    np.testing.assert_array_equal(npconv.im2col(x, 3, padding=1), expected_x)
