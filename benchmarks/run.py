"""Benchmark npconv against torch: each library in its own process, sides alternating.

Usage::

    # the full run (the report's command; OpenBLAS chooses its own kernel)
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run.py \\
        --output docs/benchmarks.md --plot docs/figures/benchmarks.png
    python benchmarks/run.py --quick --networks resnet18 --sections zoo tiny   # a check
    python benchmarks/run.py --device cuda ...          # CuPy against torch CUDA
    python benchmarks/run.py --in-process ...           # the old one-process method

Method. Each round starts one worker process per library (``benchmarks/worker.py``)
with the caller's environment unchanged: no wait policy, no OpenBLAS thread
timeout, no allocator tunables for either side. Both use the same thread count,
set inside the worker (npconv: ``npconv.set_num_threads`` plus a threadpoolctl
BLAS limit; torch: ``torch.set_num_threads``). Jobs (one layer, one operation)
go to the two workers in turn, the side that goes first alternating from job
to job and from round to round, with a short pause between them so the idle
side's spinning threads have stopped. Only one side computes at a time. Each
job is timed inside its worker (the median of its repetitions); each figure in
the report is the median over rounds, with the spread (min-max) over rounds,
and each ratio is the median of the per-round ratios npconv / torch.

Sections: ``zoo`` (forward and backward of every distinct conv layer of the
networks in ``benchmarks/zoo.py``, weighted by count into network totals),
``unfold`` (im2col vs ``F.unfold`` and col2im vs ``F.fold`` on the zoo's 2-D
groups=1 layers), ``tiny`` (per-call overhead of a 1x1x8x8 3x3 call), ``suite``
(the old 7-shape suite). The report evaluates issue 13's 'Must' lines.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import shlex
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import phases  # noqa: E402
import zoo  # noqa: E402
from figure import plot  # noqa: E402
from musts import must_lines  # noqa: E402
from report import (  # noqa: E402
    SIDES,
    TUNING_PREFIXES,
    compact,
    earlier_runs,
    fmt_time,
    machine_info,
    markdown,
    median,
    print_summary,
    ratio_or_none,
    spread,
    write_report,
)
from worker import PREFIX, gpu_environment  # noqa: E402
from zoo import NETWORK_INPUTS, SUITE, TINY, Layer  # noqa: E402

SECTIONS = ("zoo", "unfold", "tiny", "suite")
BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

# --------------------------------------------------------------------------- settings


class Settings:
    def __init__(self, quick: bool) -> None:
        if quick:
            self.rounds, self.gap = 2, 0.02
            self.normal = dict(warmup=1, min_reps=3, max_reps=20, budget=0.02)
            self.tiny = dict(warmup=50, min_reps=300, max_reps=2000, budget=0.05)
        else:
            # 0.15 s: OpenBLAS's idle workers spin about 2**28 cycles after a call
            self.rounds, self.gap = 3, 0.15
            self.normal = dict(warmup=2, min_reps=5, max_reps=100, budget=0.2)
            self.tiny = dict(warmup=200, min_reps=2000, max_reps=20000, budget=0.5)


# --------------------------------------------------------------------------- jobs


def make_jobs(args, settings: Settings) -> list[dict]:
    """Every (layer, op) to time, in a fixed order."""
    jobs = []

    def want(item: Layer) -> bool:
        return not args.only or any(s in item.ident for s in args.only)

    def add(item: Layer, op: str, section: str, timing: dict, **extra) -> None:
        jobs.append({"id": f"{section}:{item.ident}:{op}", "section": section, "op": op,
                     "layer": item.to_json(), **timing, **extra})

    networks = zoo.zoo(args.networks) if args.networks != ["none"] else {}
    if "zoo" in args.sections:
        for layers in networks.values():
            for item in layers:
                if want(item):
                    for op in ("forward", "backward"):
                        add(item, op, "zoo", settings.normal, plan=op == "forward")
    if "unfold" in args.sections:
        seen = set()
        for layers in networks.values():
            for item in layers:
                if item.unfoldable and want(item) and item.geometry not in seen:
                    seen.add(item.geometry)
                    for op in ("im2col", "col2im"):
                        add(item, op, "unfold", settings.normal)
    if "tiny" in args.sections:
        for op in ("forward", "backward", "im2col"):
            add(TINY, op, "tiny", settings.tiny)
    if "suite" in args.sections:
        for item in SUITE:
            if want(item):
                for op in ("forward", "backward", "im2col", "col2im"):
                    add(item, op, "suite", settings.normal, plan=op == "forward", memory=True)
    return jobs


# --------------------------------------------------------------------------- workers


class Worker:
    """One library's worker process: jobs in as JSON lines, results out."""

    def __init__(self, lib: str, threads: int, device: str, env: dict[str, str]) -> None:
        self.lib = lib
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "worker.py"), "--lib", lib, "--threads", str(threads),
             "--device", device],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, bufsize=1)
        self.hello = self._read()["hello"]

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                return json.loads(line[len(PREFIX):])
        raise RuntimeError(f"the {self.lib} worker exited with status {self.proc.wait()}")

    def run(self, job: dict) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:  # a dead worker's pipe
                pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def worker_env(device: str) -> dict[str, str]:
    env = dict(os.environ)
    return gpu_environment(env) if device == "cuda" else env


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def run_rounds(jobs: list[dict], args, settings: Settings, log=print) -> dict:
    """raw[round][side][job id] = the worker's answer; plus workers' self-descriptions."""
    raw: list[dict] = []
    hello: dict = {}
    loads = []
    env = worker_env(args.device)
    probes: list[list[dict]] = []
    for r in range(settings.rounds):
        loads.append(load_average())
        workers = {lib: Worker(lib, args.threads, args.device, env) for lib in SIDES}
        hello = {lib: w.hello for lib, w in workers.items()}
        answers: dict[str, dict] = {lib: {} for lib in SIDES}
        probes.append([])
        t0 = time.perf_counter()
        try:
            for i, job in enumerate(jobs):
                if args.device == "cpu" and i % phases.EVERY == 0:
                    time.sleep(settings.gap)
                    probes[r].append(phases.probe(args.threads))
                order = SIDES if (i + r) % 2 == 0 else SIDES[::-1]
                for lib in order:
                    time.sleep(settings.gap)
                    job_r = dict(job, check=r == 0, memory=job.get("memory", False) and r == 0,
                                 plan=job.get("plan", False) and r == 0)
                    try:
                        answers[lib][job["id"]] = workers[lib].run(job_r)
                    except (RuntimeError, OSError, ValueError) as exc:  # the worker died
                        answers[lib][job["id"]] = {"id": job["id"],
                                                   "error": f"worker died: {exc}"}
                        log(f"{lib} worker died on {job['id']}: {exc}; restarting it")
                        workers[lib].close()
                        workers[lib] = Worker(lib, args.threads, args.device, env)
                if args.verbose:
                    log(progress_line(job, answers))
        finally:
            for w in workers.values():
                w.close()
        if args.device == "cpu":
            probes[r].append(phases.probe(args.threads))
        raw.append(answers)
        log(f"round {r + 1}/{settings.rounds}: {len(jobs)} jobs in "
            f"{time.perf_counter() - t0:.1f} s, load average {load_average()}")
    loads.append(load_average())
    return {"raw": raw, "hello": hello, "loads": loads, "probes": probes}


def progress_line(job: dict, answers: dict) -> str:
    parts = [f"{job['id']:60s}"]
    for lib in SIDES:
        a = answers[lib][job["id"]]
        parts.append(f"{lib} {'ERR' if 'error' in a else fmt_time(median(a['times']))}")
    return "  ".join(parts)


# --------------------------------------------------------------------------- statistics


def fingerprints_match(fa, fb, dtype: str) -> bool:
    tol = 1e-3 if dtype in ("float32", "float16") else 1e-8
    if fa is None or fb is None or len(fa) != len(fb):
        return False
    for (pa, na, sa), (pb, nb, sb) in zip(fa, fb):
        if sa != sb:
            return False
        scale = max(nb, 1e-30)
        if abs(na - nb) > tol * scale or abs(pa - pb) > tol * scale * math.sqrt(max(sa, 1)):
            return False
    return True


def summarize(jobs: list[dict], raw: list[dict]) -> dict[str, dict]:
    """Per job: each side's per-round medians, their spread, the ratio's spread."""
    out = {}
    for job in jobs:
        jid = job["id"]
        per_round = {lib: [] for lib in SIDES}
        errors = []
        for answers in raw:
            for lib in SIDES:
                a = answers[lib].get(jid, {})
                if "error" in a:
                    errors.append(f"{lib}: {a['error']}")
                per_round[lib].append(median(a["times"]) if a.get("times") else None)
        ratios = [ratio_or_none(a, b) for a, b in zip(per_round["npconv"], per_round["torch"])]
        first = {lib: raw[0][lib].get(jid, {}) for lib in SIDES}
        check = None
        if "fingerprint" in first["npconv"] and "fingerprint" in first["torch"]:
            check = fingerprints_match(first["npconv"]["fingerprint"],
                                       first["torch"]["fingerprint"], job["layer"]["dtype"])
        peaks = {lib: first[lib].get("peak_bytes") for lib in SIDES}
        fresh = {lib: spread([(a.get(jid) or {}).get("fresh_bytes") for a in
                              (answers[lib] for answers in raw)]) for lib in SIDES}
        out[jid] = {
            "job": job, "errors": sorted(set(errors)), "per_round": per_round,
            "npconv": spread(per_round["npconv"]), "torch": spread(per_round["torch"]),
            "ratio": spread(ratios), "ratios": ratios, "check": check,
            "plan": first["npconv"].get("plan"),
            "peak_mib": {lib: None if v is None else v / 2**20 for lib, v in peaks.items()},
            "fresh_mib": {lib: None if v is None else v["median"] / 2**20
                          for lib, v in fresh.items()},
        }
    return out


def network_totals(summary: dict, networks: dict[str, list[Layer]], rounds: int) -> dict:
    """Per network and per round: count-weighted sums of each side's layer medians."""
    totals = {}
    for net, layers in networks.items():
        ids = [(item, f"zoo:{item.ident}") for item in layers]
        if not all(f"{jid}:{op}" in summary for _, jid in ids for op in ("forward", "backward")):
            continue  # a partial network (--only, --sections) has no total
        forward_flops = sum(item.count * item.flops for item in layers)
        row = {"layers": len(layers), "calls": sum(item.count for item in layers),
               "rounds": rounds,
               # grad input and grad weight each cost the forward's multiply-adds
               "flops": {"forward": forward_flops, "backward": 2 * forward_flops,
                         "total": 3 * forward_flops}}
        for what, ops in (("forward", ("forward",)), ("backward", ("backward",)),
                          ("total", ("forward", "backward"))):
            sums = {lib: [] for lib in SIDES}
            for r in range(rounds):
                for lib in SIDES:
                    values = [summary[f"{jid}:{op}"]["per_round"][lib][r] for _, jid in ids
                              for op in ops]
                    counts = [item.count for item, _ in ids for op in ops]
                    sums[lib].append(None if any(v is None for v in values) else
                                     sum(c * v for c, v in zip(counts, values)))
            ratios = [ratio_or_none(a, b) for a, b in zip(sums["npconv"], sums["torch"])]
            row[what] = {lib: spread(sums[lib]) for lib in SIDES}
            row[what]["ratio"], row[what]["per_round"] = spread(ratios), ratios
        totals[net] = row
    return totals


# --------------------------------------------------------------------------- files


def sidecar(output: str) -> pathlib.Path:
    return pathlib.Path(output).with_suffix(".json")


def load_baseline(path) -> dict | None:
    """An earlier run's results, with the file they came from under 'source'."""
    try:
        earlier = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return None
    return {**earlier, "source": str(path)} if isinstance(earlier, dict) else None


def command_line(argv: list[str]) -> str:
    cmd = "python benchmarks/run.py " + " ".join(shlex.quote(a) for a in argv)
    unset = [k for k in BLAS_VARS if k not in os.environ]
    if unset:
        cmd = "env " + " ".join(f"-u {k}" for k in unset) + " " + cmd
    return cmd.strip()


# --------------------------------------------------------------------------- main


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 rounds, few repetitions: a check that everything runs")
    parser.add_argument("--networks", nargs="*", default=None,
                        help=f"zoo networks (default all: {' '.join(zoo.NETWORKS)}; 'none')")
    parser.add_argument("--only", nargs="*", default=None,
                        help="keep layers whose 'network/name' contains one of these "
                             "(e.g. layer3 S1 dw)")
    parser.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for both libraries (default %(default)s)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; --quick 2)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu: NumPy vs torch CPU; cuda: CuPy vs torch CUDA")
    parser.add_argument("--output", help="write the markdown report here (and a .json beside)")
    parser.add_argument("--plot", help="write a PNG of the ratios here")
    parser.add_argument("--json", help="write the raw results here (default: beside --output)")
    parser.add_argument("--baseline",
                        help="an earlier run's .json for the 'not slower than before' lines "
                             "(default: the .json beside --output, if present)")
    parser.add_argument("--note", default="", help="a paragraph for the top of the report")
    parser.add_argument("--verbose", "-v", action="store_true", help="print every job")
    parser.add_argument("--list", action="store_true",
                        help="print the zoo's layers (with counts) and exit")
    parser.add_argument("--in-process", action="store_true",
                        help="the old method: both libraries in one process "
                             "(benchmarks/inprocess.py; the other options go to it)")
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--in-process" in argv:
        rest = [a for a in argv if a != "--in-process"]
        script = str(HERE / "inprocess.py")
        os.execv(sys.executable, [sys.executable, script, *rest])
    args = parse(argv).parse_args(argv)
    if args.list:
        for net, layers in zoo.zoo(args.networks if args.networks != ["none"] else []).items():
            print(f"{net} ({NETWORK_INPUTS[net]}): {len(layers)} layers, "
                  f"{sum(item.count for item in layers)} calls")
            for item in layers:
                print(f"  {item.count:3d} x {item.name:28s} {item.describe()}")
        return 0
    settings = Settings(args.quick)
    if args.rounds:
        settings.rounds = args.rounds
    if args.device == "cuda":
        settings.gap = 0.0  # GPU work: no host threads left spinning between sides
    if args.device == "cpu":
        missing = [k for k in BLAS_VARS if k in os.environ]
        if missing:
            print(f"note: {', '.join(missing)} set; the documented run unsets them "
                  f"(env -u ...) so OpenBLAS picks its own kernel", file=sys.stderr)
    odd = [k for k in os.environ if k.startswith(TUNING_PREFIXES) and k not in BLAS_VARS]
    if odd:
        print(f"note: {', '.join(odd)} set in the environment; both workers inherit them "
              "(recorded in the report)", file=sys.stderr)
    if args.device == "cuda":
        import importlib.util

        if importlib.util.find_spec("cupy") is None:
            raise SystemExit("--device cuda needs CuPy (pip install npconv[cuda12x]) and torch "
                             "with CUDA, on a machine with a GPU")
    jobs = make_jobs(args, settings)
    if not jobs:
        raise SystemExit("nothing to run: check --networks/--only/--sections")
    baseline_path = args.baseline or (sidecar(args.output) if args.output else None)
    baseline = load_baseline(baseline_path) if baseline_path else None
    print(f"{len(jobs)} jobs x 2 sides x {settings.rounds} rounds, {args.threads} threads, "
          f"{args.device}", flush=True)
    t0 = time.perf_counter()
    run = run_rounds(jobs, args, settings, log=lambda m: print(m, flush=True))
    elapsed = time.perf_counter() - t0
    summary = summarize(jobs, run["raw"])
    networks = zoo.zoo(args.networks) if args.networks != ["none"] else {}
    totals = network_totals(summary, networks, settings.rounds)
    info = machine_info(run["hello"], args.device)
    musts = must_lines(summary, totals, args.device, baseline, info)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "summary": summary, "totals": totals, "musts": musts, "info": info,
        "args": {"threads": args.threads, "device": args.device, "quick": args.quick},
        "rounds": settings.rounds, "gap": settings.gap, "timing": settings.normal,
        "loads": run["loads"], "probes": run["probes"], "elapsed_s": elapsed,
        "command": command_line(argv),
        "note": args.note,
        "earlier": earlier_runs(args.output) if args.output else [],
        "plot_link": (os.path.relpath(args.plot, os.path.dirname(os.path.abspath(args.output)))
                      if args.plot and args.output else None),
    }
    print_summary(result)
    if args.plot:
        plot(result, args.plot)
    if args.output:
        write_report(args.output, markdown(result))
    json_path = args.json or (sidecar(args.output) if args.output else None)
    if json_path:
        pathlib.Path(json_path).write_text(json.dumps(compact(result), indent=1) + "\n")
    print(f"elapsed {elapsed / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
