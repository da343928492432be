"""npconv.dask against in-memory npconv: random geometries and chunkings on a LocalCluster.

Skipped without the ``[dask]`` extra (dask[array] and distributed).
"""

from __future__ import annotations

import math
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import npconv  # noqa: E402
import npconv.dask as ndask  # noqa: E402
from npconv.testing import PADDING_MODES, conv_configs, random_conv_arrays  # noqa: E402

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
# Each example computes a graph on the cluster (~0.1-0.5 s on 2 cores): a bounded number
# keeps this file well under a minute; the `thorough` profile (>= 1000) is honoured.
_DEFAULT = settings.default.max_examples
MAX_EXAMPLES = _DEFAULT if _DEFAULT >= 1000 else min(_DEFAULT, 40)
MAX_BLOCKS = 48  # per array, so that tiny chunks do not make thousands of tasks


@pytest.fixture(scope="module")
def client():
    """An in-process cluster (no sockets): the scheduler every test here computes on."""
    with distributed.LocalCluster(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ) as cluster, distributed.Client(cluster, set_as_default=True) as c:
        yield c


def assert_matches(actual, expected, what):
    """Equal up to 1e-10 of the largest magnitude of ``expected`` (float64 summation order)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, what
    assert actual.dtype == expected.dtype, what
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    error = float(np.abs(actual - expected).max()) if expected.size else 0.0
    assert error <= 1e-10 * scale, f"{what}: max error {error:.3g}, scale {scale:.3g}"


def _axis_chunks(draw, n, most):
    """Chunks of one axis with at most ``most`` blocks: single, uniform (often smaller
    than the kernel span, uneven last) or random borders."""
    kind = draw(st.sampled_from(("single", "uniform", "random")))
    if kind == "single" or most == 1 or n == 1:
        return (n,)
    if kind == "uniform":
        size = draw(st.integers(max(1, -(-n // most)), n))
        return (size,) * (n // size) + ((n % size,) if n % size else ())
    cuts = draw(st.lists(st.integers(1, n - 1), unique=True, max_size=min(most, n) - 1))
    bounds = [0, *sorted(cuts), n]
    return tuple(b - a for a, b in zip(bounds[:-1], bounds[1:]))


@st.composite
def chunkings(draw, shape):
    """Chunks for an (N, C, *spatial) array: batch chunks of 1 or one chunk, channels in
    one chunk, spatial axes drawn with a block budget."""
    batch = (1,) * shape[0] if draw(st.booleans()) else (shape[0],)
    budget = MAX_BLOCKS // len(batch)
    spatial = []
    for n in shape[2:]:
        chunks = _axis_chunks(draw, n, max(1, budget))
        budget //= len(chunks)
        spatial.append(chunks)
    return (batch, (shape[1],), *spatial)


CONFIGS = conv_configs(
    ndim=(1, 2, 3), max_batch=3, max_channels=4, padding_modes=PADDING_MODES,
    max_kernel=3, max_stride=3, max_dilation=2, max_padding=2, max_output=7,
)


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(data=st.data(), config=CONFIGS)
def test_forward_and_gradients_equal_in_memory(client, data, config):
    x, w, b, gy = random_conv_arrays(config, seed=data.draw(st.integers(0, 2**16)),
                                     grad_output=True)
    kwargs = config.kwargs()
    x_chunks = data.draw(chunkings(x.shape), label="x chunks")
    gy_chunks = data.draw(chunkings(gy.shape), label="grad_output chunks")
    dx, dgy = da.from_array(x, chunks=x_chunks), da.from_array(gy, chunks=gy_chunks)

    y = ndask.conv(dx, w, b, **kwargs)
    gx, gw, gb = ndask.conv_backward(dgy, dx, w, **kwargs, split_every=2)
    assert gx.chunks == dx.chunks
    got = da.compute(y, gx, gw, gb)

    expected = (npconv.conv(x, w, b, **kwargs),) + tuple(npconv.conv_backward(gy, x, w, **kwargs))
    for name, mine, theirs in zip(("y", "grad_input", "grad_weight", "grad_bias"), got, expected):
        assert_matches(mine, theirs, f"{name} of {config} with x chunks {x_chunks}")


def test_same_padding_keeps_the_chunks_and_rechunk_false_accepts_aligned_ones(client):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 3, 48, 40)), rng.standard_normal((5, 3, 5, 3))
    dx = da.from_array(x, chunks=(1, 3, 16, 8))
    for mode in ("zeros", "reflect", "replicate", "circular"):
        y = ndask.conv2d(dx, w, padding="same", padding_mode=mode, rechunk=False)
        assert y.chunks[2:] == dx.chunks[2:]
        assert_matches(y.compute(), npconv.conv2d(x, w, padding="same", padding_mode=mode), mode)
    y = ndask.conv2d(dx, w, stride=2, padding=(2, 1), rechunk=False)  # borders at 16k, 8k
    assert y.chunks[2:] == ((8, 8, 8), (4, 4, 4, 4, 4))
    assert_matches(y.compute(), npconv.conv2d(x, w, stride=2, padding=(2, 1)), "stride 2")


def test_rechunk_false_names_the_unusable_border():
    dx = da.ones((1, 2, 30), chunks=(1, 2, 7))
    w = np.ones((1, 2, 3))
    with pytest.raises(ValueError, match=r"chunk border at 7 on spatial axis 0.*stride 2"):
        ndask.conv1d(dx, w, stride=2, rechunk=False)
    small = da.ones((1, 2, 30), chunks=(1, 2, 2))  # a dilated span of 9 needs 8-element halos
    with pytest.raises(ValueError, match="rechunk=False"):
        ndask.conv1d(small, w, dilation=4, rechunk=False)
    y = ndask.conv1d(dx, w, stride=2)  # rechunked to the nearest even borders
    assert y.chunks[2] == (4, 3, 4, 3)
    np.testing.assert_array_equal(y.compute(), npconv.conv1d(np.ones((1, 2, 30)), w, stride=2))
    gy = da.ones((1, 1, 14), chunks=(1, 1, 5))
    with pytest.raises(ValueError, match="grad_output has chunks"):
        ndask.conv1d_backward(gy, dx.rechunk((1, 2, 8)), w, stride=2, rechunk=False)


def test_channel_chunks_warn_or_raise():
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((2, 4, 9)), rng.standard_normal((6, 2, 3)), np.ones(6)
    dx = da.from_array(x, chunks=(1, 2, 5))
    with pytest.warns(UserWarning, match="chunked along its channel axis"):
        y = ndask.conv1d(dx, w, b, groups=2)
    assert_matches(y.compute(scheduler="sync"), npconv.conv1d(x, w, b, groups=2), "y")
    with pytest.raises(ValueError, match="channel axis"):
        ndask.conv1d(dx, w, b, groups=2, rechunk=False)


def test_complex_gradients_equal_in_memory():
    rng = np.random.default_rng(5)
    shape = (2, 2, 11, 9)
    x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    w = rng.standard_normal((3, 2, 3, 2)) + 1j * rng.standard_normal((3, 2, 3, 2))
    kwargs = {"stride": (2, 1), "padding": 1, "padding_mode": "reflect"}
    y = npconv.conv2d(x, w, **kwargs)
    gy = rng.standard_normal(y.shape) + 1j * rng.standard_normal(y.shape)
    dx, dgy = da.from_array(x, chunks=(1, 2, 4, 3)), da.from_array(gy, chunks=(2, 3, 3, 3))
    got = da.compute(ndask.conv2d(dx, w, **kwargs), *ndask.conv2d_backward(dgy, dx, w, **kwargs),
                     scheduler="sync")
    for mine, theirs in zip(got, (y, *npconv.conv2d_backward(gy, x, w, **kwargs))):
        assert_matches(mine, theirs, "complex128")


def test_bad_input_names_the_parameter():
    x = da.ones((1, 2, 8, 8), chunks=(1, 2, 4, 4))
    w = np.ones((3, 2, 3, 3))
    with pytest.raises(TypeError, match="x must be a dask array"):
        ndask.conv(np.ones((1, 2, 8, 8)), w)
    with pytest.raises(TypeError, match=r"weight must be a NumPy or CuPy array.*compute"):
        ndask.conv(x, da.from_array(w))
    with pytest.raises(TypeError, match="share one floating or complex dtype"):
        ndask.conv(x, w.astype(np.float32))
    with pytest.raises(ValueError, match="x must be 4-dimensional"):
        ndask.conv(x[0], w)
    with pytest.raises(ValueError, match="weight must be 3-dimensional"):
        ndask.conv1d(x, w)
    with pytest.raises(ValueError, match="groups"):
        ndask.conv(x, w, groups=2)
    with pytest.raises(ValueError, match="bias must have shape"):
        ndask.conv(x, w, np.ones(2))
    with pytest.raises(ValueError, match="stride"):
        ndask.conv(x, w, stride=0)
    with pytest.raises(ValueError, match="padding_mode"):
        ndask.conv(x, w, padding=1, padding_mode="mirror")
    with pytest.raises(ValueError, match=r"grad_output must have the output's shape \(1, 3, 6, 6\)"):
        ndask.conv_backward(da.ones((1, 3, 8, 8)), x, w)


def _never_computed(block):
    raise AssertionError("building the graph computed a block")


def test_graph_of_a_64_gib_input_builds_in_under_a_second():
    shape, chunks = (4, 4, 32768, 32768), (1, 4, 4096, 4096)  # float32: 64 GiB, 256 blocks
    meta = np.empty((0, 0, 0, 0), np.float32)
    x = da.zeros(shape, dtype=np.float32, chunks=chunks).map_blocks(_never_computed, meta=meta)
    assert x.nbytes == 64 * 2**30
    w = np.ones((8, 4, 5, 5), np.float32)
    # One small build first: dask imports its rechunk and pad machinery on first use.
    small, small_gy = da.zeros((1, 4, 8, 8), dtype=np.float32), da.zeros((1, 8, 8, 8), dtype=np.float32)
    ndask.conv2d_backward(small_gy, small, w, padding=2, padding_mode="reflect")
    start = time.perf_counter()
    y = ndask.conv2d(x, w, padding=2, padding_mode="reflect")
    forward = time.perf_counter() - start
    gy = da.zeros(y.shape, dtype=np.float32, chunks=y.chunks).map_blocks(_never_computed, meta=meta)
    start = time.perf_counter()
    grads = ndask.conv2d_backward(gy, x, w, padding=2, padding_mode="reflect")
    backward = time.perf_counter() - start
    assert y.shape == (4, 8, 32768, 32768) and grads[0].chunks == x.chunks
    assert forward < 1.0, f"forward graph took {forward:.2f} s"
    assert backward < 1.0, f"backward graph took {backward:.2f} s"


def test_on_a_process_cluster_over_loopback():
    # Worker processes are spawned, so they re-import only what the tasks need; the
    # __main__ guard matters for scripts (see examples/dask_large_image.py), not here.
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal((2, 3, 40, 36)), rng.standard_normal((4, 3, 3, 3)), np.ones(4)
    kwargs = {"stride": 2, "padding": 1, "padding_mode": "circular"}
    y = npconv.conv2d(x, w, b, **kwargs)
    gy = rng.standard_normal(y.shape)
    dx, dgy = da.from_array(x, chunks=(1, 3, 16, 16)), da.from_array(gy, chunks=(1, 4, 8, 8))
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        assert all(addr.startswith("tcp://127.0.0.1") for addr in client.scheduler_info()["workers"])
        futures = client.compute([ndask.conv2d(dx, w, b, **kwargs),
                                  *ndask.conv2d_backward(dgy, dx, w, **kwargs)])
        got = client.gather(futures)
    for mine, theirs in zip(got, (y, *npconv.conv2d_backward(gy, x, w, **kwargs))):
        assert_matches(mine, theirs, "process cluster")


@pytest.mark.gpu
def test_cupy_chunks_stay_on_the_gpu(cupy):
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((2, 3, 20, 20)), rng.standard_normal((4, 3, 3, 3))
    gy = rng.standard_normal((2, 4, 20, 20))
    cx, cw, cgy = cupy.asarray(x), cupy.asarray(w), cupy.asarray(gy)
    dx = da.from_array(cx, chunks=(1, 3, 8, 8), asarray=False)
    dgy = da.from_array(cgy, chunks=(1, 4, 8, 8), asarray=False)
    lazy = [ndask.conv2d(dx, cw, padding=1, padding_mode="reflect"),
            *ndask.conv2d_backward(dgy, dx, cw, padding=1, padding_mode="reflect")]
    assert all(type(a._meta).__module__.startswith("cupy") for a in lazy)
    got = da.compute(*lazy, scheduler="sync")
    assert all(type(a).__module__.startswith("cupy") for a in got)
    expected = (npconv.conv2d(x, w, padding=1, padding_mode="reflect"),
                *npconv.conv2d_backward(gy, x, w, padding=1, padding_mode="reflect"))
    for mine, theirs in zip(got, expected):
        assert_matches(cupy.asnumpy(mine), theirs, "cupy")


def test_large_image_example_runs_small():
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "dask_large_image.py"), "--size", "512",
         "--chunk", "256", "--workers", "2", "--memory-limit", "400MiB", "--check"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mean of the output" in result.stdout
    assert "check against in-memory npconv.conv2d" in result.stdout  # --check exits 1 on a mismatch
    mean = float(result.stdout.split("mean of the output:")[1].split()[0])
    assert math.isfinite(mean)


def test_without_dask_the_error_names_the_extra():
    code = ("import sys; sys.modules['dask'] = sys.modules['dask.array'] = None\n"
            "import numpy as np, npconv, npconv.dask\n"
            "try:\n    npconv.dask.conv(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)))\n"
            "except ImportError as exc:\n    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pip install 'npconv[dask]'" in result.stdout
