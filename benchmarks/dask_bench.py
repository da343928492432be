"""npconv.dask benchmarks: overhead, scaling with workers, and dask-image.

1. Overhead against in-memory ``npconv.conv2d`` on an array that fits, for
   chunks of 512^2 and up (dask's threaded scheduler, as many threads as cores;
   the dask side includes assembling the result into one array).
2. Throughput against the number of process workers (``LocalCluster``, one
   thread each) on a lazily generated image whose output is reduced to a mean.
3. ``dask_image.ndfilters.convolve`` against ``npconv.dask.conv2d`` on the same
   single-channel 2-D filter: the largest difference and the times.

Every time is the median of ``--repeat`` runs after one warm-up run. The
machine's load average is printed first: other processes skew the figures.

    python benchmarks/dask_bench.py            # all three, about two minutes on 2 cores
    python benchmarks/dask_bench.py --quick    # small sizes, a smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up: imports, thread pools, first-touch pages
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def layer(rng, c: int, o: int, k: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    w = rng.standard_normal((o, c, k, k)) / np.sqrt(c * k * k)
    return w.astype(dtype), rng.standard_normal(o).astype(dtype)


def overhead(size: int, chunks: list[int], repeat: int) -> None:
    import dask
    import dask.array as da

    import npconv
    import npconv.dask

    print(f"\n## Overhead against in-memory npconv (1 x 3 x {size}^2 float32 -> 8 channels, "
          f"5x5 reflect padding; threaded scheduler, {os.cpu_count()} threads)\n")
    print("| chunks | in-memory npconv | npconv.dask | ratio |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, size, size), dtype=np.float32)
    w, b = layer(rng, 3, 8, 5, np.float32)
    kw = {"padding": 2, "padding_mode": "reflect"}
    expected = npconv.conv2d(x, w, b, **kw)
    t_mem = median_time(lambda: npconv.conv2d(x, w, b, **kw), repeat)
    for chunk in chunks:
        y = npconv.dask.conv2d(da.from_array(x, chunks=(1, 3, chunk, chunk)), w, b, **kw)
        with dask.config.set(scheduler="threads"):
            got = y.compute()
            t_dask = median_time(y.compute, repeat)
        assert np.allclose(got, expected, rtol=1e-5, atol=1e-5)
        print(f"| {chunk}^2 ({y.npartitions} blocks) | {t_mem * 1e3:.0f} ms | "
              f"{t_dask * 1e3:.0f} ms | {t_dask / t_mem:.2f} |")


def scaling(size: int, chunk: int, workers: list[int], repeat: int) -> None:
    import dask.array as da
    import distributed

    import npconv.dask

    print(f"\n## Throughput against process workers (lazy 1 x 3 x {size}^2 float32 image, "
          f"{chunk}^2 chunks, 3 -> 8 5x5 reflect, mean of the output)\n")
    print("| workers x threads | time | Mpixel/s | speed-up |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(1)
    w, b = layer(rng, 3, 8, 5, np.float32)
    x = da.random.default_rng(0).random((1, 3, size, size), dtype=np.float32,
                                        chunks=(1, 3, chunk, chunk))
    y = npconv.dask.conv2d(x, w, b, padding=2, padding_mode="reflect").mean(dtype=np.float64)
    base = None
    for n in workers:
        with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address=None) as cluster, \
                distributed.Client(cluster):
            seconds = median_time(y.compute, repeat)
        base = base or seconds
        print(f"| {n} x 1 | {seconds:.2f} s | {size * size / seconds / 1e6:.1f} | "
              f"{base / seconds:.2f} |")


def versus_dask_image(size: int, chunk: int, repeat: int) -> None:
    import dask
    import dask.array as da
    from dask_image import ndfilters

    import npconv.dask

    print(f"\n## dask_image.ndfilters.convolve on the same filter ({size}^2 float64, one "
          f"channel, 5x5, {chunk}^2 chunks, reflect border; threaded scheduler)\n")
    rng = np.random.default_rng(2)
    image = da.from_array(rng.random((size, size)), chunks=chunk)
    kernel = rng.standard_normal((5, 5))
    # ndimage's convolve flips the kernel (npconv correlates); its 'mirror' border is
    # numpy's and torch's 'reflect' (its own 'reflect' repeats the edge element).
    theirs = ndfilters.convolve(image, kernel, mode="mirror")
    ours = npconv.dask.conv2d(image[None, None], kernel[None, None, ::-1, ::-1].copy(),
                              padding=2, padding_mode="reflect")[0, 0]
    with dask.config.set(scheduler="threads"):
        a, b = da.compute(theirs, ours)
        t_theirs = median_time(theirs.compute, repeat)
        t_ours = median_time(ours.compute, repeat)
    diff = float(np.abs(a - b).max() / np.abs(a).max())
    print("| | time | max relative difference |")
    print("|---|---|---|")
    print(f"| dask_image.ndfilters.convolve | {t_theirs * 1e3:.0f} ms | |")
    print(f"| npconv.dask.conv2d | {t_ours * 1e3:.0f} ms | {diff:.1e} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per figure (median)")
    args = p.parse_args(argv)
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"on {os.cpu_count()} cores")
    if args.quick:
        overhead(1024, [512, 1024], args.repeat)
        scaling(1024, 512, [1, 2], args.repeat)
        versus_dask_image(1024, 512, args.repeat)
    else:
        overhead(4096, [512, 1024, 2048], args.repeat)
        scaling(4096, 1024, [1, 2], args.repeat)
        versus_dask_image(4096, 1024, args.repeat)
    load = os.getloadavg()
    print(f"\nload average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":  # process workers re-import this module
    main()
