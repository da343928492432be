"""npconv.dask benchmarks: overhead, scaling with workers, and dask-image.

1. Overhead against in-memory ``npconv.conv2d`` on an array that fits, for
   chunks of 512^2 and up, on dask's synchronous scheduler and on its threaded
   scheduler with the BLAS held to one thread (a multi-threaded BLAS beside
   dask's busy threads ran ~10x slower here); the dask side includes assembling
   the result into one array.
2. Throughput against the number of process workers (``LocalCluster``, one
   thread each; ``distributed`` starts them with OPENBLAS_NUM_THREADS=1) on a
   lazily generated image whose output is reduced to a mean.
3. ``dask_image.ndfilters.convolve`` against ``npconv.dask.conv2d`` on the same
   single-channel 2-D filter: the largest difference and the times.

Every time is the median of ``--repeat`` runs after one warm-up run. The
machine's load average is printed first: other processes skew the figures.

    pip install -e ".[dask]" dask-image
    python benchmarks/dask_bench.py            # all three, a few minutes on 2 cores
    python benchmarks/dask_bench.py --quick    # small sizes, a smoke test
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

import numpy as np


def median_time(fn, repeat: int) -> float:
    return interleaved({"fn": fn}, repeat)["fn"]


def interleaved(fns: dict, repeat: int) -> dict:
    """Median time of each function, the functions taking turns round by round (so a
    change in the machine's load hits all of them alike), after one warm-up run each."""
    times: dict = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up: imports, thread pools, first-touch pages
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def layer(rng, c: int, o: int, k: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    w = rng.standard_normal((o, c, k, k)) / np.sqrt(c * k * k)
    return w.astype(dtype), rng.standard_normal(o).astype(dtype)


def overhead(size: int, chunks: list[int], repeat: int) -> None:
    import dask.array as da
    import threadpoolctl

    import npconv
    import npconv.dask

    print(f"\n## Overhead against in-memory npconv (1 x 3 x {size}^2 float32 -> 8 channels, "
          f"5x5 reflect padding)\n")
    print("In-memory npconv with its defaults; npconv.dask on the synchronous scheduler "
          "(blocks one after another, each spread over the cores by npconv) and on the "
          f"threaded scheduler ({os.cpu_count()} threads) with the BLAS held to one thread.\n")
    print("| chunks | in-memory npconv | npconv.dask, sync | ratio | npconv.dask, threads "
          "| ratio |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, size, size), dtype=np.float32)
    w, b = layer(rng, 3, 8, 5, np.float32)
    kw = {"padding": 2, "padding_mode": "reflect"}
    expected = npconv.conv2d(x, w, b, **kw)
    for chunk in chunks:
        y = npconv.dask.conv2d(da.from_array(x, chunks=(1, 3, chunk, chunk)), w, b, **kw)
        assert np.allclose(y.compute(scheduler="sync"), expected, rtol=1e-5, atol=1e-5)

        def threads(y=y):
            with threadpoolctl.threadpool_limits(1, user_api="blas"):
                return y.compute(scheduler="threads")

        t = interleaved({"mem": lambda: npconv.conv2d(x, w, b, **kw),
                         "sync": functools.partial(y.compute, scheduler="sync"),
                         "threads": threads}, repeat)
        print(f"| {chunk}^2 ({y.npartitions} blocks) | {t['mem'] * 1e3:.0f} ms | "
              f"{t['sync'] * 1e3:.0f} ms | {t['sync'] / t['mem']:.2f} | "
              f"{t['threads'] * 1e3:.0f} ms | {t['threads'] / t['mem']:.2f} |")


def process_cpu_seconds() -> float:
    """User + system CPU time of the calling (worker) process."""
    times = os.times()
    return times.user + times.system


def scaling(size: int, chunk: int, workers: list[int], repeat: int) -> None:
    import dask.array as da
    import distributed

    import npconv.dask

    print(f"\n## Throughput against process workers (lazy 1 x 3 x {size}^2 float32 image, "
          f"{chunk}^2 chunks, 3 -> 8 5x5 reflect, mean of the output; NPCONV_NUM_THREADS=1 "
          f"and OPENBLAS_NUM_THREADS=1 in each worker)\n")
    print("| workers x threads | time | workers' CPU time per run | Mpixel/s | speed-up |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(1)
    w, b = layer(rng, 3, 8, 5, np.float32)
    x = da.random.default_rng(0).random((1, 3, size, size), dtype=np.float32,
                                        chunks=(1, 3, chunk, chunk))
    y = npconv.dask.conv2d(x, w, b, padding=2, padding_mode="reflect").mean(dtype=np.float64)
    base = None
    for n in workers:
        # One npconv thread per worker, so that n workers use n cores.
        with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address=None,
                                      env={"NPCONV_NUM_THREADS": "1"}) as cluster, \
                distributed.Client(cluster) as client:
            y.compute()
            before = sum(client.run(process_cpu_seconds).values())
            seconds = median_time(y.compute, repeat)
            cpu = (sum(client.run(process_cpu_seconds).values()) - before) / (repeat + 1)
        base = base or seconds
        print(f"| {n} x 1 | {seconds:.2f} s | {cpu:.2f} s | {size * size / seconds / 1e6:.1f} | "
              f"{base / seconds:.2f} |")


def versus_dask_image(size: int, chunk: int, repeat: int) -> None:
    import dask
    import dask.array as da
    import threadpoolctl
    from dask_image import ndfilters

    import npconv.dask

    print(f"\n## dask_image.ndfilters.convolve on the same filter ({size}^2 float64, one "
          f"channel, 5x5, {chunk}^2 chunks, reflect border; threaded scheduler, BLAS on one "
          f"thread)\n")
    rng = np.random.default_rng(2)
    image = da.from_array(rng.random((size, size)), chunks=chunk)
    kernel = rng.standard_normal((5, 5))
    # ndimage's convolve flips the kernel (npconv correlates); its 'mirror' border is
    # numpy's and torch's 'reflect' (its own 'reflect' repeats the edge element).
    theirs = ndfilters.convolve(image, kernel, mode="mirror")
    ours = npconv.dask.conv2d(image[None, None], kernel[None, None, ::-1, ::-1].copy(),
                              padding=2, padding_mode="reflect")[0, 0]
    with dask.config.set(scheduler="threads"), threadpoolctl.threadpool_limits(1, "blas"):
        a, b = da.compute(theirs, ours)
        t = interleaved({"theirs": theirs.compute, "ours": ours.compute}, repeat)
        t_theirs, t_ours = t["theirs"], t["ours"]
    diff = float(np.abs(a - b).max() / np.abs(a).max())
    print("| | time | max relative difference |")
    print("|---|---|---|")
    print(f"| dask_image.ndfilters.convolve | {t_theirs * 1e3:.0f} ms | |")
    print(f"| npconv.dask.conv2d | {t_ours * 1e3:.0f} ms | {diff:.1e} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per figure (median)")
    p.add_argument("--parts", nargs="+", default=["overhead", "scaling", "dask-image"],
                   choices=["overhead", "scaling", "dask-image"], help="which benchmarks")
    args = p.parse_args(argv)
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"on {os.cpu_count()} cores")
    size, chunks = (1024, [512, 1024]) if args.quick else (4096, [512, 1024, 2048])
    if "overhead" in args.parts:
        overhead(size, chunks, args.repeat)
    if "scaling" in args.parts:
        scaling(size, chunks[1], [1, 2], args.repeat)
    if "dask-image" in args.parts:
        versus_dask_image(size, chunks[1], args.repeat)
    load = os.getloadavg()
    print(f"\nload average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":  # process workers re-import this module
    main()
