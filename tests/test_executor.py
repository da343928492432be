"""The executor: bitwise-identical results for any thread count and under concurrent
user threads, a working pool after fork, and no worker writing after an error."""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import threadpoolctl

import npconv
from npconv import executor


@pytest.fixture
def restore_threads():
    old, old_bytes = npconv.get_num_threads(), npconv.get_min_work_bytes()
    yield
    npconv.set_num_threads(old, min_work_bytes=old_bytes)


def _calls(rng):
    """One call per threaded path, each split over threads under ``min_work_bytes=0``."""
    f32 = np.float32
    x = rng.standard_normal((8, 16, 40, 40)).astype(f32)
    w = rng.standard_normal((8, 16, 3, 3)).astype(f32)
    w1 = rng.standard_normal((8, 16, 1, 1)).astype(f32)
    wd = rng.standard_normal((16, 1, 3, 3)).astype(f32)
    x3 = rng.standard_normal((16, 3, 40, 40)).astype(f32)
    w3 = rng.standard_normal((8, 3, 3, 3)).astype(f32)
    one = rng.standard_normal((1, 16, 96, 96)).astype(f32)
    stem = rng.standard_normal((3, 3, 60, 150)).astype(f32)
    w7 = rng.standard_normal((8, 3, 7, 7)).astype(f32)
    gy2 = rng.standard_normal((8, 8, 20, 20)).astype(f32)
    gy1 = rng.standard_normal((8, 8, 40, 40)).astype(f32)
    gyd = rng.standard_normal((8, 16, 40, 40)).astype(f32)
    gy3 = rng.standard_normal((16, 8, 40, 40)).astype(f32)
    gy7 = rng.standard_normal((3, 8, 30, 75)).astype(f32)
    cols = npconv.im2col(x.astype(np.float64), 3, padding=1, stride=2)  # a threaded fold
    xs = rng.standard_normal((6, 16, 8, 8)).astype(f32)  # stacked: chunks of 2 images
    bias = rng.standard_normal(8).astype(f32)
    xw = rng.standard_normal((1, 128, 12, 12)).astype(f32)  # winograd_jit: 4 channel ranges
    ww = rng.standard_normal((128, 128, 3, 3)).astype(f32)
    compiled = [
        lambda: (npconv.conv2d(xw, ww, ww[0, :, 0, 0], padding=1, algorithm="winograd_jit"),),
        lambda: npconv.conv2d_backward(xw, xw, ww, padding=1, algorithm="winograd_jit"),
    ] if importlib.util.find_spec("numba") else []
    return compiled + [
        lambda: (npconv.im2col(x, 3, padding=1, stride=2),),
        lambda: (npconv.col2im(cols, (40, 40), 3, padding=1, stride=2),),
        lambda: (npconv.conv2d(x, w, padding=1, stride=2, algorithm="im2col"),),
        lambda: npconv.conv2d_backward(gy2, x, w, padding=1, stride=2, algorithm="im2col"),
        lambda: npconv.conv2d_backward(gy1, x, w, padding=1, algorithm="flipped"),
        lambda: (npconv.conv2d(x, w, padding=1, algorithm="shifted"),),
        lambda: npconv.conv2d_backward(gy2, x, w, padding=1, stride=2, algorithm="shifted"),
        lambda: (npconv.conv2d(x, w, padding=1, algorithm="winograd"),),
        lambda: npconv.conv2d_backward(gy1, x, w, padding=1, algorithm="winograd"),
        lambda: (npconv.conv2d(x, w1), npconv.conv2d(one, w1)),
        lambda: npconv.conv2d_backward(gy1, x, w1),
        lambda: (npconv.conv2d(one, w, padding=1, algorithm="im2col"),
                 npconv.conv2d(one, w, padding=1, algorithm="winograd")),
        lambda: (npconv.conv2d(stem, w7, None, stride=2, padding=3, algorithm="phases"),),
        lambda: npconv.conv2d_backward(gy7, stem, w7, stride=2, padding=3, algorithm="phases"),
        lambda: (npconv.conv2d(x, wd, padding=1, groups=16),),
        lambda: npconv.conv2d_backward(gyd, x, wd, padding=1, groups=16),
        lambda: npconv.conv2d_backward(gy3, x3, w3, padding=1, algorithm="direct"),
        lambda: (npconv.conv2d(xs, w, bias, padding=1, algorithm="stacked"),
                 npconv.conv2d(x[:4, :, :16, :16], w, bias, padding=1, algorithm="stacked")),
    ]


def _run_all(calls):
    return [call() for call in calls]


def _assert_bitwise(results, expected):
    for got, want in zip(results, expected):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


def test_results_do_not_depend_on_the_thread_count(restore_threads):
    """Chunks and the order of the sums over them are fixed by the shapes; the BLAS is
    held to one thread on both sides (OpenBLAS's own threads change its roundings)."""
    calls = _calls(np.random.default_rng(0))
    with threadpoolctl.threadpool_limits(1):
        with npconv.num_threads(1):
            serial = _run_all(calls)
        for count in (2, 3, 4):
            with npconv.num_threads(count, min_work_bytes=0):
                _assert_bitwise(_run_all(calls), serial)


def test_eight_user_threads_making_mixed_calls_agree_with_serial(restore_threads):
    calls = _calls(np.random.default_rng(1))
    with threadpoolctl.threadpool_limits(1):
        with npconv.num_threads(1):
            serial = _run_all(calls)
        npconv.set_num_threads(2, min_work_bytes=0)
        order = [(i * 7 + j) % len(calls) for i in range(8) for j in range(len(calls))]
        with ThreadPoolExecutor(8) as users:
            results = list(users.map(lambda i: (i, calls[i]()), order))
    for i, got in results:
        _assert_bitwise([got], [serial[i]])


def test_num_threads_is_local_to_the_context(restore_threads):
    npconv.set_num_threads(3)
    seen = {}

    def other():
        seen["other"] = npconv.get_num_threads()

    with npconv.num_threads(1):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert npconv.get_num_threads() == 1
    assert seen["other"] == 3 and npconv.get_num_threads() == 3


def _child_conv(queue):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 16, 40, 40))
    w = rng.standard_normal((8, 16, 3, 3))
    y = npconv.conv2d(x, w, padding=1, algorithm="im2col")
    ref = npconv.conv2d(x, w, padding=1, algorithm="reference")
    queue.put(float(np.abs(y - ref).max()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_computes_correctly(restore_threads):
    npconv.set_num_threads(2, min_work_bytes=0)
    _child_conv(multiprocessing.Queue())  # the parent's pool exists and has run
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_conv, args=(queue,))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    assert queue.get(timeout=5) < 1e-10


class _Boom(RuntimeError):
    pass


def _slow_kernel(_, item, log, lock, fail_at):
    if item == fail_at:
        raise _Boom(f"chunk {item}")
    time.sleep(0.01)
    with lock:
        log.append((item, time.perf_counter()))


def test_an_error_in_one_chunk_leaves_no_worker_writing_afterwards(restore_threads):
    log, lock = [], threading.Lock()
    npconv.set_num_threads(4)
    with executor.call(), pytest.raises(_Boom, match="chunk 3"):
        executor.map_chunks(_slow_kernel, list(range(40)), log, lock, 3,
                            arrays=(np.zeros(1),), work_bytes=2**30)
    raised = time.perf_counter()
    count = len(log)
    time.sleep(0.1)
    assert len(log) == count, "a worker went on after the call raised"
    assert all(t <= raised for _, t in log)
    assert count < 39, "the other workers stopped taking chunks after the error"


def _raise_off_the_caller(_, item, caller, done):
    time.sleep(0.002)  # every thread gets items
    if threading.get_ident() != caller:
        raise _Boom(f"on a worker, item {item}")
    done.append(item)


def _record(_, item, out):
    out[item] = threading.get_ident()


def test_a_worker_threads_error_reaches_the_caller_and_the_pool_goes_on(restore_threads):
    npconv.set_num_threads(2)
    with executor.call(), pytest.raises(_Boom, match="on a worker"):
        executor.map_chunks(_raise_off_the_caller, list(range(8)), threading.get_ident(), [],
                            arrays=(np.zeros(1),), work_bytes=2**30)
    for threads in (2, 3, 2):  # the pool grows, and its old workers are let go
        npconv.set_num_threads(threads)
        out = [None] * 64
        with executor.call():
            executor.map_chunks(_record, list(range(64)), out, arrays=(np.zeros(1),),
                                work_bytes=2**30)
        assert all(t is not None for t in out)


def _python_only(_, item, out):
    out[item] = threading.get_ident()  # holds the GIL throughout: no other thread runs


def test_a_region_ends_without_waiting_for_a_worker_that_has_not_started(restore_threads):
    """With the GIL never let go, the caller computes every item itself and returns
    at once; the parked worker makes no scratch and takes nothing, then or later."""
    npconv.set_num_threads(2)
    with executor.call():  # the pool's threads exist before the test's region
        executor.map_chunks(_record, list(range(8)), [None] * 8, arrays=(np.zeros(1),),
                            work_bytes=2**30)
    time.sleep(0.05)  # its worker is parked again
    made, out = [], [None] * 16
    interval = sys.getswitchinterval()
    sys.setswitchinterval(60.0)
    try:
        with executor.call():
            executor.map_chunks(_python_only, list(range(16)), out,
                                scratch=lambda: made.append(threading.get_ident()),
                                arrays=(np.zeros(1),), work_bytes=2**30)
        done = list(out)
    finally:
        sys.setswitchinterval(interval)
    time.sleep(0.05)  # the worker wakes now, and finds the region over
    assert done == [threading.get_ident()] * 16 and out == done
    assert made == [threading.get_ident()]
    again = [None] * 64
    with executor.call():
        executor.map_chunks(_record, list(range(64)), again, arrays=(np.zeros(1),),
                            work_bytes=2**30)
    assert all(t is not None for t in again)


def test_reduce_chunks_sums_lanes_in_order(restore_threads):
    total = np.zeros(3)

    def kernel(_, item, acc):
        part = np.full(3, float(item))
        return part if acc is None else acc + part

    with executor.call(), npconv.num_threads(2):
        executor.reduce_chunks(kernel, list(range(100)), total, arrays=(total,),
                               work_bytes=2**30)
    assert (total == 4950).all()


@pytest.mark.parametrize("count", [0, 1, 5, 100])
def test_a_fresh_total_is_overwritten_not_added_to(count, restore_threads):
    """``fresh``: the total's old contents are never read (it may come from ``empty``),
    and with nothing to sum it is zero."""
    def kernel(_, item, acc):
        part = np.full(3, float(item))
        return part if acc is None else acc + part

    for threads in (1, 2):
        total = np.full(3, np.nan)
        with executor.call(), npconv.num_threads(threads):
            executor.reduce_chunks(kernel, list(range(count)), total, arrays=(total,),
                                   work_bytes=2**30, fresh=True)
        assert (total == count * (count - 1) / 2).all()


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                      ("2", TypeError), (True, TypeError)])
def test_set_num_threads_rejects_bad_counts(bad, exc, restore_threads):
    with pytest.raises(exc, match="count"):
        npconv.set_num_threads(bad)
    with pytest.raises(exc, match="count"):
        with npconv.num_threads(bad):
            pass


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (0.5, TypeError), ("1", TypeError)])
def test_min_work_bytes_rejects_bad_values(bad, exc, restore_threads):
    npconv.set_num_threads(3)
    old = npconv.get_min_work_bytes()
    with pytest.raises(exc, match="min_work_bytes"):
        npconv.set_num_threads(2, min_work_bytes=bad)
    with pytest.raises(exc, match="min_work_bytes"):
        with npconv.num_threads(2, min_work_bytes=bad):
            pass
    assert npconv.get_min_work_bytes() == old  # a refused value changes nothing
    assert npconv.get_num_threads() == 3


def _chunk_threads(work_bytes):
    """Names of the threads that ran 4 chunks of ``work_bytes`` of work."""
    names, lock = set(), threading.Lock()

    def kernel(_, item):
        time.sleep(0.02)  # long enough for a parked worker to wake and take a chunk
        with lock:
            names.add(threading.current_thread().name)

    with executor.call():
        executor.map_chunks(kernel, list(range(4)), arrays=(np.zeros(1),),
                            work_bytes=work_bytes)
    return names


def test_min_work_bytes_decides_which_calls_use_threads(restore_threads):
    if not executor.blas_limited():
        pytest.skip("threadpoolctl finds no BLAS to limit: every call is serial")
    main = threading.current_thread().name
    with npconv.num_threads(2, min_work_bytes=1000):
        assert npconv.get_min_work_bytes() == 1000
        assert _chunk_threads(999) == {main}
        assert any(name.startswith("npconv") for name in _chunk_threads(1000))
    npconv.set_num_threads(2, min_work_bytes=2**40)
    assert _chunk_threads(2**30) == {main}
    with npconv.num_threads(2):  # the count alone keeps the process's threshold
        assert npconv.get_min_work_bytes() == 2**40


@pytest.mark.parametrize("name, value", [("NPCONV_NUM_THREADS", "0"),
                                         ("NPCONV_NUM_THREADS", "-1"),
                                         ("NPCONV_NUM_THREADS", "two"),
                                         ("NPCONV_MIN_WORK_BYTES", "-1"),
                                         ("NPCONV_MIN_WORK_BYTES", "1.5")])
def test_bad_environment_values_fail_at_import(name, value):
    env = dict(os.environ, **{name: value})
    result = subprocess.run([sys.executable, "-c", "import npconv"], env=env,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert name in result.stderr and repr(value) in result.stderr


def test_min_work_bytes_from_the_environment():
    env = dict(os.environ, NPCONV_MIN_WORK_BYTES="4096")
    result = subprocess.run([sys.executable, "-c",
                             "import npconv; print(npconv.get_min_work_bytes())"],
                            env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "4096"


def _blas_threads():
    """Thread counts of NumPy's BLAS, the one npconv calls. A BLAS loaded later by
    another package (SciPy's own OpenBLAS) is not npconv's to limit; with no wheel's
    ``numpy.libs`` to tell them apart, every BLAS counts."""
    blas = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    libs = str(Path(np.__file__).resolve().parent.parent / "numpy.libs")
    numpy_blas = [i for i in blas if i["filepath"].startswith(libs)]
    return [i["num_threads"] for i in numpy_blas or blas]


def test_overlapping_calls_hold_the_blas_at_one_thread(restore_threads):
    """Two calls at once from two threads (e.g. Dask's threaded scheduler): the BLAS
    runs single-threaded while they overlap and gets its own count back afterwards."""
    if not _blas_threads():
        pytest.skip("threadpoolctl finds no BLAS to limit")
    inside, seen = threading.Event(), {}
    release = threading.Event()

    def first():
        with executor.call():
            inside.set()
            release.wait(10)

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        thread = threading.Thread(target=first)
        thread.start()
        inside.wait(10)
        with executor.call():
            seen["overlapping"] = _blas_threads()
        release.set()
        thread.join()
        after = _blas_threads()
    assert set(before) == {2} and set(after) == {2}
    assert set(seen["overlapping"]) == {1}


def test_a_threaded_call_keeps_no_reference_to_its_arrays(restore_threads):
    """A parked worker held its last job, and with it the call's arrays (a temporary
    kernel of the stacked path's grad input stayed alive until the next region)."""
    import gc
    import weakref

    rng = np.random.default_rng(6)
    w = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    refs = []
    with npconv.num_threads(2, min_work_bytes=0):
        for _ in range(5):
            x = rng.standard_normal((4, 16, 16, 16)).astype(np.float32)
            npconv.conv2d(x, w, padding=1, algorithm="im2col")
            refs.append(weakref.ref(x))
            del x
    deadline = time.monotonic() + 5
    while any(r() is not None for r in refs) and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert all(r() is None for r in refs)
