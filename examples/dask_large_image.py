"""Convolve an image far larger than any worker's memory with npconv.dask.

A lazily generated C x S x S float32 image (3 x 8192 x 8192 = 768 MiB by
default; its 8-channel output is 2 GiB) goes through a 5x5 reflect-padded
3 -> 8 convolution layer on a ``LocalCluster`` of process workers whose
memory limit (600 MiB each by default) is far below the image size. Nothing
is ever held whole: blocks are generated, convolved and reduced (the mean of
the output), or written to a zarr store with ``--zarr PATH``.

It prints the throughput and the peak memory of each worker process (its
resident set size, sampled every 0.1 s). ``--size 512 --check`` runs in a few
seconds and compares the result with in-memory ``npconv.conv2d``.

    python examples/dask_large_image.py                       # the 8192^2 run
    python examples/dask_large_image.py --size 512 --check    # quick
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np


def worker_rss() -> int:
    """Resident set size of the calling worker process, in bytes."""
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss


class PeakMemory:
    """Samples every worker's RSS from a background thread while the block runs."""

    def __init__(self, client, interval: float = 0.1):
        self.client, self.interval = client, interval
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for worker, rss in self.client.run(worker_rss).items():
            self.peak[worker] = max(self.peak.get(worker, 0), rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sample()
            except Exception:  # a worker restarting mid-sample: try again next tick
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def lazy_image(channels: int, size: int, chunk: int, seed: int):
    """A (1, C, S, S) float32 image of uniform noise, generated block by block."""
    import dask.array as da

    rng = da.random.default_rng(seed)
    return rng.random((1, channels, size, size), dtype=np.float32,
                      chunks=(1, channels, chunk, chunk))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=8192, help="image side S (default 8192)")
    p.add_argument("--channels", type=int, default=3, help="input channels (default 3)")
    p.add_argument("--out-channels", type=int, default=8, help="output channels (default 8)")
    p.add_argument("--kernel", type=int, default=5, help="kernel side, odd (default 5)")
    p.add_argument("--chunk", type=int, default=1024, help="chunk side (default 1024)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--threads", type=int, default=1, help="threads per worker (default 1)")
    p.add_argument("--memory-limit", default="600MiB", help="per worker (default 600MiB)")
    p.add_argument("--zarr", default=None, help="write the output to this zarr store")
    p.add_argument("--check", action="store_true", help="compare with in-memory npconv")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> float:
    """Run the convolution on a fresh cluster; return the mean of the output."""
    import dask.array as da
    import distributed

    import npconv
    import npconv.dask

    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    k, c, o = args.kernel, args.channels, args.out_channels
    weight = (rng.standard_normal((o, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    x = lazy_image(c, args.size, args.chunk, args.seed)
    y = npconv.dask.conv2d(x, weight, bias, padding=k // 2, padding_mode="reflect")
    mib = 2.0**20
    print(f"input {x.shape} {x.dtype}: {x.nbytes / mib:.0f} MiB in {x.npartitions} chunks; "
          f"output {y.shape}: {y.nbytes / mib:.0f} MiB; {len(y.dask)} tasks before optimisation")

    with distributed.LocalCluster(
        n_workers=args.workers, threads_per_worker=args.threads, processes=True,
        memory_limit=args.memory_limit, host="127.0.0.1", dashboard_address=None,
        env={"NPCONV_WORKSPACE_MB": "32"},  # npconv's im2col scratch, per call
    ) as cluster, distributed.Client(cluster) as client:
        limit = next(iter(client.scheduler_info()["workers"].values()))["memory_limit"]
        print(f"{args.workers} worker processes x {args.threads} thread(s), memory limit "
              f"{limit / mib:.0f} MiB each (the input is {x.nbytes / limit:.1f}x that, the output "
              f"{y.nbytes / limit:.1f}x)")
        with PeakMemory(client) as peak:
            start = time.perf_counter()
            if args.zarr:
                y.to_zarr(args.zarr, overwrite=True)
                mean = float(da.from_zarr(args.zarr).mean(dtype=np.float64).compute())
            else:
                mean = float(y.mean(dtype=np.float64).compute())
            seconds = time.perf_counter() - start

    pixels = args.size**2
    print(f"time {seconds:.1f} s: {pixels / seconds / 1e6:.2f} Mpixel/s, "
          f"{y.nbytes / seconds / mib:.0f} MiB/s of output")
    for worker, rss in sorted(peak.peak.items()):
        print(f"peak RSS {worker}: {rss / mib:.0f} MiB")
    print(f"mean of the output: {mean:.6f}")
    if args.check:
        x_mem = x.compute()
        expected = npconv.conv2d(x_mem, weight, bias, padding=k // 2, padding_mode="reflect")
        got = y.compute(scheduler="sync")
        error = float(np.abs(got - expected).max() / np.abs(expected).max())
        print(f"check against in-memory npconv.conv2d: max relative error {error:.2e}")
        if error > 1e-5:
            raise SystemExit("the dask result differs from in-memory npconv")
    if not np.isfinite(mean):
        raise SystemExit("the mean is not finite")
    return mean


if __name__ == "__main__":  # process workers re-import this module: keep work behind the guard
    main()
