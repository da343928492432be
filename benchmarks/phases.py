"""Which minutes of a run were slow: a probe of what a two-thread matmul pays for
reading data that the calling thread has just written.

On the 2-core virtual machines where ``docs/benchmarks.md`` is measured, npconv's
matmul-heavy layers run 2-3x slower in some minutes than in others, while torch's
convolutions keep their speed (``docs/performance.md``, eighteenth and nineteenth
sessions). In those minutes a cache line took about 330 ns to go from one virtual
CPU to the other and back, against 50-110 ns in the others. The probe times a
two-thread (64, 1152) @ (1152, 512) float32 matmul alone, and straight after this
thread rewrote its right operand: the rewrite adds about a quarter in normal
minutes and more than doubles the time in slow ones.

:func:`run.run_rounds` probes every :data:`EVERY` jobs and at the end of each
round, in the parent process while both workers wait, and the report gives each
round's share of slow probes beside its network totals.
"""

from __future__ import annotations

import statistics
import time

EVERY = 25  # jobs between probes
SLOW_RATIO = 1.7  # after-write time over the matmul's alone: above it, a slow probe
SHAPE = (64, 1152, 512)  # (m, k, n) of the probe's matmul


def _median_batch(f, repeats: int, batches: int) -> float:
    """Seconds of one call: the median over batches of each batch's mean."""
    f()
    means = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(repeats):
            f()
        means.append((time.perf_counter() - t0) / repeats)
    return statistics.median(means)


def probe(threads: int, repeats: int = 20, batches: int = 3) -> dict:
    """One probe on ``threads`` BLAS threads: the matmul's time alone and after a
    rewrite of its operand (ms), their ratio, and the wall-clock time it ran."""
    import numpy as np
    import threadpoolctl

    rng = np.random.default_rng(0)
    m, k, n = SHAPE
    a = rng.standard_normal((m, k), dtype=np.float32)
    source = rng.standard_normal((k, n), dtype=np.float32)
    b, out = source.copy(), np.empty((m, n), dtype=np.float32)

    def alone() -> None:
        np.matmul(a, b, out=out)

    def after_write() -> None:
        np.copyto(b, source)
        np.matmul(a, b, out=out)

    with threadpoolctl.threadpool_limits(threads, user_api="blas"):
        t_alone = _median_batch(alone, repeats, batches)
        t_after = _median_batch(after_write, repeats, batches)
    return {"at": time.time(), "matmul_ms": 1e3 * t_alone, "after_write_ms": 1e3 * t_after,
            "ratio": t_after / t_alone, "round_trip_ns": _round_trip()}


def _round_trip() -> float | None:
    """:func:`pingpong.round_trip_ns` between CPUs 0 and 1, or None without numba."""
    try:
        import pingpong
    except ImportError:
        return None
    return pingpong.round_trip_ns()


def slow(p: dict) -> bool:
    return p["ratio"] > SLOW_RATIO


def _range(values: list, spec: str) -> str:
    """'median (min-max)' of the values that are not None, or '-'."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return (f"{statistics.median(values):{spec}} ({min(values):{spec}}-"
            f"{max(values):{spec}})")


def table(result: dict) -> list[str]:
    """The report's section: per round, the probes and each network's fwd+bwd ratio."""
    rounds = result.get("probes") or []
    if not any(rounds):
        return []
    nets = [net for net, row in result["totals"].items()
            if len(row["total"].get("per_round", [])) == len(rounds)]
    lines = [
        "## Slow minutes",
        "",
        f"Probes of the machine between jobs (`benchmarks/phases.py`, every {EVERY} jobs and "
        "at each round's end): a two-thread (64, 1152) @ (1152, 512) float32 matmul, timed "
        "alone and straight after the parent process rewrote its right operand. A probe is "
        f"slow when the rewrite makes it more than {SLOW_RATIO}x slower (about 1.25x in "
        "normal minutes). Each probe also times a cache line's round trip between CPUs 0 "
        "and 1 (`benchmarks/pingpong.py`). Beside each round: its fwd+bwd ratio npconv / "
        "torch per network.",
        "",
        "| round | slow probes | after-write / alone, median (min-max) | "
        "CPU 0 <-> 1 round trip, ns | " + " | ".join(nets) + " |",
        "|---" * (4 + len(nets)) + "|",
    ]
    for r, probes in enumerate(rounds):
        share = f"{sum(map(slow, probes))} of {len(probes)}"
        cells = [f"{result['totals'][net]['total']['per_round'][r]:.2f}"
                 if result["totals"][net]["total"]["per_round"][r] is not None else "-"
                 for net in nets]
        lines.append(f"| {r + 1} | {share} | {_range([p['ratio'] for p in probes], '.2f')} | "
                     f"{_range([p.get('round_trip_ns') for p in probes], '.0f')} | "
                     + " | ".join(cells) + " |")
    lines.append("")
    return lines
