"""npconv against npconv: two source trees or two settings, on the network zoo.

For changes whose effect is smaller than the drift of this machine (a threshold,
a chunk size), the per-network ratios to torch of two separate ``run.py`` runs
cannot tell: torch's own times moved 1.3x between two such runs here. This
script times the two npconv sides the way ``run.py`` times npconv and torch:
each in its own worker process (``worker.py``), alternating per job with the
same pause between sides, and prints each network's forward+backward total of B
over A (median over rounds, with their spread) and the layers that moved most::

    python benchmarks/ab.py --a-path /tmp/old --b-path . --rounds 3
    python benchmarks/ab.py --b-env NPCONV_MIN_WORK_BYTES=262144

A side is a source tree put first on ``PYTHONPATH`` (default: the installed
npconv) plus environment variables (``NPCONV_MIN_WORK_BYTES=...``).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import zoo  # noqa: E402
from run import Settings, Worker, worker_env  # noqa: E402

SIDES = ("A", "B")


def side_env(path: str | None, pairs: list[str]) -> dict[str, str]:
    env = worker_env("cpu")
    if path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.abspath(path),
                                                          env.get("PYTHONPATH")]))
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--a-env/--b-env takes KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def run(args) -> tuple[dict, dict]:
    """times[side][(network, layer, op)] = per-round medians; and the workers' hellos."""
    settings = Settings(quick=False)
    envs = {"A": side_env(args.a_path, args.a_env), "B": side_env(args.b_path, args.b_env)}
    jobs = [(net, layer, op) for net, layers in zoo.zoo(args.networks).items()
            for layer in layers for op in ("forward", "backward")]
    times: dict = {s: {} for s in SIDES}
    hello: dict = {}
    for r in range(args.rounds):
        workers = {s: Worker("npconv", args.threads, "cpu", envs[s]) for s in SIDES}
        hello = {s: w.hello for s, w in workers.items()}
        try:
            for i, (net, layer, op) in enumerate(jobs):
                for s in SIDES if (i + r) % 2 == 0 else SIDES[::-1]:
                    time.sleep(settings.gap)  # the other side's spinning threads stop
                    job = dict(settings.normal, id=f"{net}/{layer.name}:{op}",
                               layer=layer.to_json(), op=op)
                    answer = workers[s].run(job)
                    if "error" in answer:
                        raise SystemExit(f"side {s}, {job['id']}: {answer['error']}")
                    key = (net, layer.name, op)
                    times[s].setdefault(key, []).append(statistics.median(answer["times"]))
        finally:
            for w in workers.values():
                w.close()
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    return times, hello


def report(times: dict, hello: dict, counts: dict, rounds: int, top: int) -> None:
    for s in SIDES:
        h = hello[s]
        print(f"{s}: {h.get('npconv_file')} threads {h.get('npconv_threads')} "
              f"min_work_bytes {h.get('npconv_min_work_bytes')} "
              f"blas {[b.get('architecture') for b in h.get('blas', [])]}")
    print("\n| network | A ms | B ms | B/A (rounds' spread) |\n|---|---:|---:|---:|")
    for net in dict.fromkeys(k[0] for k in times["A"]):
        keys = [k for k in times["A"] if k[0] == net]
        per_round = {s: [sum(times[s][k][r] * counts[k] for k in keys) for r in range(rounds)]
                     for s in SIDES}
        ratios = [b / a for a, b in zip(per_round["A"], per_round["B"])]
        a, b = (statistics.median(per_round[s]) * 1e3 for s in SIDES)
        print(f"| {net} | {a:.1f} | {b:.1f} | **{statistics.median(ratios):.2f}** "
              f"({min(ratios):.2f}-{max(ratios):.2f}) |")
    moved = sorted(times["A"], key=lambda k: abs(_log_ratio(times, k)), reverse=True)[:top]
    print("\n| layer | op | A ms | B ms | B/A |\n|---|---|---:|---:|---:|")
    for k in moved:
        a, b = (statistics.median(times[s][k]) * 1e3 for s in SIDES)
        print(f"| {k[0]}/{k[1]} | {k[2]} | {a:.2f} | {b:.2f} | {b / a:.2f} |")


def _log_ratio(times: dict, key: tuple) -> float:
    return math.log(statistics.median(times["B"][key]) / statistics.median(times["A"][key]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a-path", help="source tree of side A (default: installed npconv)")
    parser.add_argument("--b-path", help="source tree of side B (default: installed npconv)")
    parser.add_argument("--a-env", nargs="*", default=[], help="KEY=VALUE for side A")
    parser.add_argument("--b-env", nargs="*", default=[], help="KEY=VALUE for side B")
    parser.add_argument("--networks", nargs="*", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=12, help="layers to list (most moved)")
    args = parser.parse_args(argv)
    times, hello = run(args)
    counts = {(net, layer.name, op): layer.count
              for net, layers in zoo.zoo(args.networks).items()
              for layer in layers for op in ("forward", "backward")}
    report(times, hello, counts, args.rounds, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
