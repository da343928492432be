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
import platform
import shlex
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import zoo  # noqa: E402
from worker import PREFIX, gpu_environment  # noqa: E402
from zoo import GUARDED, NETWORK_INPUTS, SUITE, TINY, TINY_BUDGET_US, Layer  # noqa: E402

SIDES = ("npconv", "torch")
SECTIONS = ("zoo", "unfold", "tiny", "suite")
MARKER = "<!-- sections below are kept by benchmarks/run.py -->"
BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# variables that change a library's threads or allocator: recorded, and warned about
TUNING_PREFIXES = ("OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "GLIBC_TUNABLES", "MALLOC_",
                   "NPCONV_", "CUPY_TF32")

# limits of issue 13's 'Must' lines (CPU) and issue 15's (CUDA)
NETWORK_LIMIT = 1.25
LAYER_LIMIT, DEPTHWISE_LIMIT = 2.5, 3.0
IM2COL_LIMIT, COL2IM_LIMIT = 0.5, 1.0
S1_MEMORY_MIB = 48.0
GUARD_TOLERANCE = 1.10  # 'not slower than before': within 10% of the earlier ratio
GPU_LIMIT = 2.0
LOAD_WARNING = 1.0  # 1-minute load average before a round above this: figures unreliable


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
    for r in range(settings.rounds):
        loads.append(load_average())
        workers = {lib: Worker(lib, args.threads, args.device, env) for lib in SIDES}
        hello = {lib: w.hello for lib, w in workers.items()}
        answers: dict[str, dict] = {lib: {} for lib in SIDES}
        t0 = time.perf_counter()
        try:
            for i, job in enumerate(jobs):
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
        raw.append(answers)
        log(f"round {r + 1}/{settings.rounds}: {len(jobs)} jobs in "
            f"{time.perf_counter() - t0:.1f} s, load average {load_average()}")
    loads.append(load_average())
    return {"raw": raw, "hello": hello, "loads": loads}


def progress_line(job: dict, answers: dict) -> str:
    parts = [f"{job['id']:60s}"]
    for lib in SIDES:
        a = answers[lib][job["id"]]
        parts.append(f"{lib} {'ERR' if 'error' in a else fmt_time(median(a['times']))}")
    return "  ".join(parts)


# --------------------------------------------------------------------------- statistics


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def ratio_or_none(a, b):
    return a / b if a is not None and b not in (None, 0) else None


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
        out[jid] = {
            "job": job, "errors": sorted(set(errors)), "per_round": per_round,
            "npconv": spread(per_round["npconv"]), "torch": spread(per_round["torch"]),
            "ratio": spread(ratios), "ratios": ratios, "check": check,
            "plan": first["npconv"].get("plan"),
            "peak_mib": {lib: None if v is None else v / 2**20 for lib, v in peaks.items()},
        }
    return out


def network_totals(summary: dict, networks: dict[str, list[Layer]], rounds: int) -> dict:
    """Per network and per round: count-weighted sums of each side's layer medians."""
    totals = {}
    for net, layers in networks.items():
        ids = [(item, f"zoo:{item.ident}") for item in layers]
        if not all(f"{jid}:{op}" in summary for _, jid in ids for op in ("forward", "backward")):
            continue  # a partial network (--only, --sections) has no total
        row = {"layers": len(layers), "calls": sum(item.count for item in layers),
               "rounds": rounds}
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
            row[what] = {lib: spread(sums[lib]) for lib in SIDES}
            row[what]["ratio"] = spread(
                [ratio_or_none(a, b) for a, b in zip(sums["npconv"], sums["torch"])])
        totals[net] = row
    return totals


# --------------------------------------------------------------------------- must lines


def must_lines(summary: dict, totals: dict, device: str, baseline: dict | None) -> list[dict]:
    """Issue 13's 'Must' lines (issue 15's on CUDA): name, limit, value, PASS/FAIL."""
    rows = []

    def add(name, ok, value, note=""):
        rows.append({"name": name, "status": "n/a" if ok is None else ("PASS" if ok else "FAIL"),
                     "value": value, "note": note})

    def r(v):
        return None if v is None else v["median"]

    network_limit = GPU_LIMIT if device == "cuda" else NETWORK_LIMIT
    for net, row in totals.items():
        ratio = row["total"]["ratio"]
        partial = (f"only {ratio['n']} of {row['rounds']} rounds complete"
                   if ratio is not None and ratio["n"] < row["rounds"] else "")
        add(f"{net}: forward+backward total <= {network_limit}x torch",
            None if ratio is None else ratio["median"] <= network_limit, fmt_ratio(ratio),
            partial)
    zoo_rows = [s for s in summary.values() if s["job"]["section"] == "zoo"]
    if device == "cuda":  # issue 15: forward+backward within 2x on every suite case
        for s in summary.values():
            job = s["job"]
            if job["section"] != "suite" or job["op"] != "forward":
                continue
            b = summary.get(job["id"].rsplit(":", 1)[0] + ":backward")
            v = None
            if b is not None:
                sums = {lib: [None if f is None or g is None else f + g for f, g in
                              zip(s["per_round"][lib], b["per_round"][lib])] for lib in SIDES}
                v = spread([ratio_or_none(a, c) for a, c in zip(sums["npconv"], sums["torch"])])
            add(f"suite {job['layer']['name']}: forward+backward <= {GPU_LIMIT}x torch",
                None if v is None else v["median"] <= GPU_LIMIT, fmt_ratio(v))
    elif zoo_rows:
        for op in ("forward", "backward"):
            for dw, limit in ((False, LAYER_LIMIT), (True, DEPTHWISE_LIMIT)):
                got = [(s["job"]["layer"], r(s["ratio"])) for s in zoo_rows
                       if s["job"]["op"] == op
                       and Layer.from_json(s["job"]["layer"]).depthwise == dw
                       and r(s["ratio"]) is not None]
                if not got:
                    continue
                worst = max(got, key=lambda kv: kv[1])
                kind = "depthwise layer" if dw else "layer (not depthwise)"
                add(f"no {kind} worse than {limit}x torch, {op}", worst[1] <= limit,
                    f"worst {worst[0]['net']}/{worst[0]['name']} {worst[1]:.2f}",
                    f"{sum(v > limit for _, v in got)} of {len(got)} over")
    for op, limit, peer in (("im2col", IM2COL_LIMIT, "F.unfold"), ("col2im", COL2IM_LIMIT,
                                                                   "F.fold")):
        got = [(s["job"]["layer"], r(s["ratio"])) for s in summary.values()
               if s["job"]["section"] == "unfold" and s["job"]["op"] == op
               and r(s["ratio"]) is not None]
        if got and device == "cpu":
            worst = max(got, key=lambda kv: kv[1])
            add(f"{op} <= {limit}x {peer} on every 2-D groups=1 zoo layer", worst[1] <= limit,
                f"worst {worst[0]['net']}/{worst[0]['name']} {worst[1]:.2f}",
                f"{sum(v > limit for _, v in got)} of {len(got)} over")
    for op, budget in TINY_BUDGET_US.items():
        s = summary.get(f"tiny:{TINY.ident}:{op}")
        if s and s["npconv"] and device == "cpu":
            us = s["npconv"]["median"] * 1e6
            add(f"tiny call {op} <= {budget:g} us (npconv median)", us <= budget,
                f"{us:.1f} us (torch {s['torch']['median'] * 1e6:.1f} us)")
    s1 = summary.get("suite:suite/S1:forward")
    if s1 is not None:
        mem = s1["peak_mib"]["npconv"]
        if device == "cpu":
            add(f"S1 forward peak extra memory <= {S1_MEMORY_MIB:g} MiB (tracemalloc)",
                None if mem is None else mem <= S1_MEMORY_MIB,
                "not measured" if mem is None else f"{mem:.1f} MiB")
        else:
            add("S1 forward GPU pool growth (recorded)", None,
                "not measured" if mem is None else f"{mem:.1f} MiB (torch "
                + fmt_mib(s1["peak_mib"]["torch"]) + ")")
    if device == "cpu":
        for net, reference in GUARDED.items():
            if net not in totals:
                continue
            now = totals[net]["total"]["ratio"]
            before = (baseline or {}).get("totals", {}).get(net)
            if before is not None:
                ref, source = before, "the previous run (docs/benchmarks.json)"
            else:
                ref, source = reference, "issue 13's measurement (no earlier zoo run recorded)"
            add(f"{net}: not slower than before (fwd+bwd ratio <= {GUARD_TOLERANCE:.2f} x "
                f"earlier)", None if now is None else now["median"] <= ref * GUARD_TOLERANCE,
                f"{fmt_ratio(now)} vs {ref:.2f}", f"earlier figure from {source}")
    return rows


# --------------------------------------------------------------------------- formatting


def fmt_time(seconds) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1e3:.2f} ms"


def fmt_ms(s: dict | None, scale: float = 1e3, digits: int = 2) -> str:
    if s is None:
        return "n/a"
    return f"{s['median'] * scale:.{digits}f}"


def fmt_ratio(s: dict | None) -> str:
    if s is None:
        return "n/a"
    if s["n"] == 1:
        return f"**{s['median']:.2f}**"
    return f"**{s['median']:.2f}** ({s['min']:.2f}–{s['max']:.2f})"


def fmt_range_ms(s: dict | None, scale=1e3, digits=2) -> str:
    if s is None:
        return "n/a"
    return (f"{s['median'] * scale:.{digits}f} ({s['min'] * scale:.{digits}f}–"
            f"{s['max'] * scale:.{digits}f})")


def over(s: dict | None, limit: float | None) -> str:
    return " ⚠" if s is not None and limit is not None and s["median"] > limit else ""


def fmt_mib(v) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def fmt_plan(plan: dict | None) -> str:
    if not plan:
        return ""
    if "error" in plan:
        return f"explain failed: {plan['error']}"
    return " / ".join(plan.get(k, "?") for k in ("forward", "grad_input", "grad_weight"))


def machine_info(hello: dict, device: str) -> dict:
    info = {"python": platform.python_version(), "cpu": platform.processor() or "?",
            "simd": "?", "caches": "?", "cores": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = {k.strip(): v.strip() for k, v in
                  (line.split(":", 1) for line in out.splitlines() if ":" in line)}
        info["cpu"] = fields.get("Model name", info["cpu"])
        flags = set(fields.get("Flags", "").split())
        info["simd"] = ("AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags
                        else "AVX" if "avx" in flags else "SSE" if "sse2" in flags else "?")
        info["caches"] = ", ".join(f"{k} {v}" for k, v in fields.items() if k.endswith("cache"))
    except (OSError, subprocess.CalledProcessError):
        pass
    info["tuning_env"] = {k: v for k, v in os.environ.items() if k.startswith(TUNING_PREFIXES)}
    info["device"] = device
    info["hello"] = hello
    return info


def blas_line(hello: dict) -> str:
    blas = hello.get("npconv", {}).get("blas", [])
    return ", ".join(f"{b.get('internal_api')} {b.get('version')}, {b.get('architecture')} "
                     f"kernel, {b.get('threading_layer')}, {b.get('num_threads')} threads"
                     for b in blas) or "none found by threadpoolctl"


def kernel_name(hello: dict) -> str:
    blas = hello.get("npconv", {}).get("blas", [])
    return ", ".join(str(b.get("architecture")) for b in blas) or "?"


# --------------------------------------------------------------------------- the report


def markdown(result: dict) -> str:
    s, totals, musts = result["summary"], result["totals"], result["musts"]
    info, args = result["info"], result["args"]
    hello = info["hello"]
    cuda = info["device"] == "cuda"
    peer = "torch CUDA (cuDNN)" if cuda else "PyTorch (CPU)"
    me = "npconv on CuPy" if cuda else "npconv"
    lines = [
        "# Benchmarks" + (" on CUDA" if cuda else ""),
        "",
        f"{me} against {peer}, each library in its own process with its own defaults and "
        f"{args['threads']} threads, sides alternating over {result['rounds']} rounds "
        f"({result['date']}). Figures are medians over rounds, with the min–max over rounds in "
        "parentheses; ratios are npconv / torch (below 1: npconv is faster). "
        f"NumPy's BLAS ran the **{kernel_name(hello)}** kernel (threadpoolctl, in the npconv "
        "worker). The command, machine and method are at the end.",
        "",
    ]
    if result.get("note"):
        lines += [result["note"], ""]
    bad = [x for x in s.values() if x["check"] is False]
    errors = [(jid, x["errors"]) for jid, x in s.items() if x["errors"]]
    busy = [load[0] for load in result["loads"][:-1] if load and load[0] > LOAD_WARNING]
    if busy:
        lines += [f"**Warning:** the 1-minute load average was {max(busy):.2f} before a round "
                  f"(above {LOAD_WARNING:g}): the machine was not idle, and these figures "
                  "are not reliable.", ""]
    if bad:
        lines += ["**Warning:** results differ between npconv and torch (fingerprints): "
                  + ", ".join(f"`{x['job']['id']}`" for x in bad), ""]
    if errors:
        by_message: dict[str, list[str]] = {}
        for jid, messages in errors:
            for message in messages:
                by_message.setdefault(message, []).append(jid)
        for message, jids in by_message.items():
            shown = ", ".join(f"`{j}`" for j in jids[:6]) + (" ..." if len(jids) > 6 else "")
            lines += [f"**Error** in {len(jids)} job(s) ({shown}): {message}", ""]
    if totals:
        lines += [
            "## Network totals",
            "",
            "Every distinct conv layer of each network, weighted by how often it occurs. "
            "*forward*: `npconv.conv` (transposed layers: `conv_transpose`) vs "
            "`torch.ops.aten.convolution`; *backward*: grad input, weight and bias, "
            "`npconv.conv_backward` (`conv_transpose_backward`) vs "
            "`torch.ops.aten.convolution_backward` with all three outputs.",
            "",
            "| network | input | layers (calls) | forward npconv ms | forward torch ms | "
            "forward ratio | backward npconv ms | backward torch ms | backward ratio | "
            "**fwd+bwd ratio** |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for net, row in totals.items():
            f, b, t = row["forward"], row["backward"], row["total"]
            lines.append(
                f"| {net} | {NETWORK_INPUTS.get(net, '')} | {row['layers']} ({row['calls']}) | "
                f"{fmt_ms(f['npconv'])} | {fmt_ms(f['torch'])} | {fmt_ratio(f['ratio'])} | "
                f"{fmt_ms(b['npconv'])} | {fmt_ms(b['torch'])} | {fmt_ratio(b['ratio'])} | "
                f"{fmt_ratio(t['ratio'])} |")
        lines.append("")
    if musts:
        title = "issue 15's" if cuda else "issue 13's"
        lines += [f"## Must lines ({title})", "", "| must | result | value | note |",
                  "|---|---|---|---|"]
        for m in musts:
            lines.append(f"| {m['name']} | **{m['status']}** | {m['value']} | {m['note']} |")
        lines.append("")
    zoo_jobs = [x for x in s.values() if x["job"]["section"] == "zoo"]
    if zoo_jobs:
        lines += [
            "## Per layer",
            "",
            "Times of one call, median over rounds. *paths*: what `npconv.explain` chose for "
            "forward / grad input / grad weight (a transposed layer's forward is the grad "
            "input map of its adjoint convolution, so its column reads: forward / backward's "
            "grad input / grad weight). "
            + ("" if cuda else f"⚠ marks a ratio above the must line ({LAYER_LIMIT}x, "
               f"{DEPTHWISE_LIMIT}x for depthwise layers)."),
            "",
            "| network | layer | shape | count | fwd npconv ms | fwd torch ms | fwd ratio | "
            "bwd npconv ms | bwd torch ms | bwd ratio | paths |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for x in zoo_jobs:
            if x["job"]["op"] != "forward":
                continue
            item = Layer.from_json(x["job"]["layer"])
            b = s.get(x["job"]["id"].rsplit(":", 1)[0] + ":backward")
            limit = None if cuda else DEPTHWISE_LIMIT if item.depthwise else LAYER_LIMIT
            lines.append(
                f"| {item.net} | {item.name} | {item.describe()} | {item.count} | "
                f"{fmt_ms(x['npconv'])} | {fmt_ms(x['torch'])} | "
                f"{fmt_ratio(x['ratio'])}{over(x['ratio'], limit)} | "
                f"{fmt_ms(b and b['npconv'])} | {fmt_ms(b and b['torch'])} | "
                f"{fmt_ratio(b and b['ratio'])}{over(b and b['ratio'], limit)} | "
                f"{fmt_plan(x['plan'])} |")
        lines.append("")
        if result.get("plot_link"):
            lines += [f"![npconv / torch per network and per layer]({result['plot_link']})", ""]
    unfold = [x for x in s.values() if x["job"]["section"] == "unfold"]
    if unfold:
        lines += [
            "## im2col and col2im",
            "",
            "`npconv.im2col` vs `F.unfold` and `npconv.col2im` vs `F.fold` on every 2-D "
            "groups=1 layer of the zoo (for a transposed layer: its adjoint convolution's "
            "input). One call, median over rounds.",
            "",
            "| network | layer | shape | im2col ms | unfold ms | ratio | col2im ms | fold ms | "
            "ratio |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for x in unfold:
            if x["job"]["op"] != "im2col":
                continue
            item = Layer.from_json(x["job"]["layer"])
            c = s.get(x["job"]["id"].rsplit(":", 1)[0] + ":col2im")
            lines.append(
                f"| {item.net} | {item.name} | {item.describe()} | {fmt_ms(x['npconv'])} | "
                f"{fmt_ms(x['torch'])} | {fmt_ratio(x['ratio'])} | {fmt_ms(c and c['npconv'])} | "
                f"{fmt_ms(c and c['torch'])} | {fmt_ratio(c and c['ratio'])} |")
        lines.append("")
    tiny = [x for x in s.values() if x["job"]["section"] == "tiny"]
    if tiny:
        lines += [
            "## Tiny calls",
            "",
            f"Per-call time of a {TINY.describe()} float32 call (x 1x1x8x8, 3x3 kernel), "
            "median of thousands of calls per round, then median over rounds (µs).",
            "",
            "| op | npconv µs | torch µs | ratio | budget (issue 13) |",
            "|---|---:|---:|---:|---:|",
        ]
        for x in tiny:
            op = x["job"]["op"]
            budget = TINY_BUDGET_US.get(op)
            lines.append(f"| {op} | {fmt_range_ms(x['npconv'], 1e6, 1)} | "
                         f"{fmt_range_ms(x['torch'], 1e6, 1)} | {fmt_ratio(x['ratio'])} | "
                         f"{'' if budget is None else f'{budget:g}'} |")
        lines.append("")
    suite = [x for x in s.values() if x["job"]["section"] == "suite"]
    if suite:
        mem_note = ("CuPy memory pool growth over one call; torch: "
                    "`torch.cuda.max_memory_allocated` growth" if cuda else
                    "tracemalloc peak of one npconv call, output included; torch: not measured")
        lines += [
            "## The 7-shape suite",
            "",
            f"The suite used before the zoo, measured the same way. Peak MiB: {mem_note}.",
            "",
            "| case | shape | op | npconv ms | torch ms | ratio | npconv peak MiB | "
            "torch peak MiB | paths |",
            "|---|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for x in suite:
            item = Layer.from_json(x["job"]["layer"])
            lines.append(
                f"| {item.name} | {item.describe()} | {x['job']['op']} | "
                f"{fmt_range_ms(x['npconv'])} | {fmt_range_ms(x['torch'])} | "
                f"{fmt_ratio(x['ratio'])} | {fmt_mib(x['peak_mib']['npconv'])} | "
                f"{fmt_mib(x['peak_mib']['torch'])} | {fmt_plan(x['plan'])} |")
        lines.append("")
    lines += machine_section(result)
    if result.get("earlier"):
        lines += ["## Other runs", "",
                  "Kept as they were recorded (one-process method; the hardware behind this "
                  "machine's name changes between sessions, and the ratios with it):", ""]
        lines += [f"- [{title}]({link})" for link, title in result["earlier"]]
        lines.append("")
    return "\n".join(lines)


def machine_section(result: dict) -> list[str]:
    info, args = result["info"], result["args"]
    hello = info["hello"]
    nph, th = hello.get("npconv", {}), hello.get("torch", {})
    env = info["tuning_env"]
    worker_env_seen = nph.get("env", {})
    blas_env = {k: v for k, v in worker_env_seen.items() if k.startswith("OPENBLAS_")}
    lines = [
        "## Command",
        "",
        "```sh",
        result["command"],
        "```",
        "",
        f"It ran for {result['elapsed_s'] / 60:.1f} minutes.",
        "",
        "## Machine",
        "",
        f"- CPU: {info['cpu']}, {info['cores']} cores, widest SIMD {info['simd']} "
        f"({info['caches']})",
        f"- Python {info['python']}, NumPy {nph.get('numpy', '?')}, torch {th.get('torch', '?')}"
        f", npconv {nph.get('npconv', '?')}",
        f"- NumPy's BLAS in the npconv worker (threadpoolctl): {blas_line(hello)}",
        "- OpenBLAS variables the workers saw: "
        + (", ".join(f"`{k}={v}`" for k, v in blas_env.items()) if blas_env else
           "none (`OPENBLAS_CORETYPE`, `OPENBLAS_L2_SIZE` unset: OpenBLAS chose its kernel)"),
        f"- torch: {th.get('torch_threads', '?')} intra-op threads "
        f"({th.get('torch_interop_threads', '?')} inter-op), CPU capability "
        f"{th.get('torch_cpu_capability', '?')}; "
        + "; ".join(line for line in th.get("torch_parallel", []) if "OpenMP" in line
                    or "MKL-DNN" in line or "oneDNN" in line),
        f"- npconv: {nph.get('npconv_threads', '?')} threads, BLAS limit "
        f"{args['threads']}; backend {nph.get('backend', '?')}",
        "- Thread, allocator and BLAS variables in the environment: "
        + (", ".join(f"`{k}={v}`" for k, v in env.items()) if env else "none"),
        "- Load average (1, 5, 15 min) before each round and at the end: "
        + "; ".join(" ".join(f"{v:.2f}" for v in load) if load else "?"
                    for load in result["loads"]),
    ]
    if info["device"] == "cuda":
        lines += [
            f"- GPU: {nph.get('gpu', th.get('gpu', '?'))}; CuPy {nph.get('cupy', '?')} (CUDA "
            f"runtime {nph.get('cuda_runtime', '?')}, `CUPY_TF32` {nph.get('cupy_tf32', '?')}); "
            f"torch CUDA {th.get('torch_cuda', '?')}, cuDNN {th.get('cudnn', '?')}, TF32 flags "
            f"{th.get('tf32', '?')}",
        ]
    lines += [
        "",
        "## Method",
        "",
        "- Each round starts one worker process per library (`benchmarks/worker.py`) in the "
        "caller's environment, unchanged: no wait policy, no OpenBLAS thread timeout, no "
        "allocator tunables for either side.",
        f"- Both sides use {args['threads']} threads, set inside the worker: "
        "`npconv.set_num_threads` plus a threadpoolctl BLAS limit for npconv, "
        "`torch.set_num_threads` for torch.",
        "- Jobs (one layer, one operation) go to the two workers in turn; which side goes "
        "first alternates from job to job and from round to round, and only one side "
        f"computes at a time (a {result['gap']:g} s pause between them lets the idle side's "
        "threads stop spinning).",
        "- Inside a worker a job is warmed up, then timed call by call "
        f"({result['timing']['min_reps']}–{result['timing']['max_reps']} calls, at least "
        f"{result['timing']['budget']:g} s); the job's time is the median call. The report "
        "gives the median over rounds and the min–max over rounds; a ratio is the median of "
        "the per-round ratios npconv / torch. Network totals are summed per round first.",
        "- In the first round each side also returns a fingerprint of its result (a fixed "
        "projection and the norm, in float64); the two must agree, so no figure times a "
        "wrong result. Both sides get the same inputs (generated by NumPy from the layer).",
        "- The machine must be otherwise idle. With 2 threads on 2 cores, a third busy "
        "process makes both sides' figures meaningless: OpenBLAS's and OpenMP's threads wait "
        "for each other at every call, and a descheduled thread costs a scheduler time slice "
        "(measured here under load: torch's `F.unfold` on S7 went from 10 ms to 1.1 s). The "
        "load average is recorded above; the report warns when it exceeded "
        f"{LOAD_WARNING:g} before a round.",
        "- `python benchmarks/run.py --in-process` runs the old method (both libraries in one "
        "process, wait policy and allocator changed), kept for comparison with earlier runs.",
    ]
    if info["device"] == "cuda":
        lines += [
            "- CUDA: calls are timed with CUDA events on each side; TF32 is off "
            "(`torch.backends.cuda.matmul.allow_tf32 = False`, "
            "`torch.backends.cudnn.allow_tf32 = False`, `CUPY_TF32` removed from the CuPy "
            "worker's environment). Memory: CuPy pool growth over one call, torch's "
            "`max_memory_allocated` growth.",
        ]
    lines.append("")
    return lines


# --------------------------------------------------------------------------- the plot


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    totals, s = result["totals"], result["summary"]
    zoo_fwd = [x for x in s.values() if x["job"]["section"] == "zoo" and x["job"]["op"] ==
               "forward"]
    if totals:
        fig, axes = plt.subplots(2, 1, figsize=(14, 9), height_ratios=[1, 2])
    else:  # a partial run: layers only
        fig, ax = plt.subplots(figsize=(14, 6))
        axes = [None, ax]
    nets = list(totals)
    ax = axes[0] if totals else None
    width = 0.27
    for i, (what, color) in enumerate((("forward", "tab:blue"), ("backward", "tab:orange"),
                                       ("total", "tab:green"))):
        ys, lo, hi = [], [], []
        for net in nets:
            v = totals[net][what]["ratio"]
            ys.append(v["median"] if v else float("nan"))
            lo.append(v["median"] - v["min"] if v else 0)
            hi.append(v["max"] - v["median"] if v else 0)
        xs = [j + (i - 1) * width for j in range(len(nets))]
        if ax is None:
            break
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, color=color,
               label="forward+backward" if what == "total" else what)
    if ax is not None:
        ax.axhline(1.0, color="black", linewidth=1)
        ax.axhline(NETWORK_LIMIT, color="red", linewidth=1, linestyle="--",
                   label=f"must: {NETWORK_LIMIT}x")
        ax.set_xticks(range(len(nets)), nets)
        ax.set_yscale("log")
        ax.set_ylabel("npconv / torch (log)")
        ax.set_title("Network totals (count-weighted), median over rounds, bars: min–max")
        ax.legend(fontsize=8)
        ax.grid(axis="y", which="both", alpha=0.3)

    ax = axes[1]
    labels, fw, bw, colors = [], [], [], []
    palette = plt.get_cmap("tab10")
    nets_seen = list(dict.fromkeys(x["job"]["layer"]["net"] for x in zoo_fwd))
    for x in zoo_fwd:
        item = Layer.from_json(x["job"]["layer"])
        b = s.get(x["job"]["id"].rsplit(":", 1)[0] + ":backward")
        labels.append(f"{item.net[:6]}/{item.name}")
        fw.append(x["ratio"]["median"] if x["ratio"] else float("nan"))
        bw.append(b["ratio"]["median"] if b and b["ratio"] else float("nan"))
        colors.append(palette(nets_seen.index(item.net) % 10))
    xs = range(len(labels))
    ax.scatter(xs, fw, marker="o", c=colors, label="forward", s=18)
    ax.scatter(xs, bw, marker="x", c=colors, label="backward", s=22)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.axhline(LAYER_LIMIT, color="red", linewidth=1, linestyle="--",
               label=f"must: {LAYER_LIMIT}x ({DEPTHWISE_LIMIT}x depthwise)")
    ax.set_yscale("log")
    ax.set_xticks(list(xs), labels, rotation=90, fontsize=6)
    ax.set_ylabel("npconv / torch (log)")
    ax.set_title("Per layer (o forward, x backward; colour: network)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- files


GENERATED_HEADINGS = ("# Benchmarks", "## Network totals", "## Must lines", "## Per layer",
                      "## im2col and col2im", "## Tiny calls", "## The 7-shape suite",
                      "## Command", "## Machine", "## Method", "## Other runs", "## Results",
                      "## Targets")


def kept_sections(old: str) -> str:
    """What of an existing report survives regeneration: everything from the marker on.

    Without the marker, sections (``## ``) whose heading this script does not write
    are kept, so a section someone appended is not lost.
    """
    if MARKER in old:
        return old[old.index(MARKER):].rstrip() + "\n"
    kept, keep = [], False
    for line in old.splitlines():
        if line.startswith("#"):
            keep = line.startswith("## ") and not line.startswith(GENERATED_HEADINGS)
        if keep:
            kept.append(line)
    body = "\n".join(kept).strip()
    return MARKER + "\n" + (f"\n{body}\n" if body else "")


def write_report(path: str, text: str) -> None:
    p = pathlib.Path(path)
    old = p.read_text() if p.exists() else ""
    p.write_text(text.rstrip() + "\n\n" + kept_sections(old))


def earlier_runs(output: str) -> list[tuple[str, str]]:
    """(file name, first heading) of the saved ``benchmarks-*.md`` beside ``output``."""
    here = pathlib.Path(output).resolve()
    found = []
    for path in sorted(here.parent.glob("benchmarks-*.md")):
        if path != here:
            first = path.read_text().splitlines()[0] if path.stat().st_size else ""
            found.append((path.name, first.lstrip("# ").strip() or path.stem))
    return found


def sidecar(output: str) -> pathlib.Path:
    return pathlib.Path(output).with_suffix(".json")


def load_baseline(path) -> dict | None:
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return None


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
    musts = must_lines(summary, totals, args.device, baseline)
    info = machine_info(run["hello"], args.device)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "summary": summary, "totals": totals, "musts": musts, "info": info,
        "args": {"threads": args.threads, "device": args.device, "quick": args.quick},
        "rounds": settings.rounds, "gap": settings.gap, "timing": settings.normal,
        "loads": run["loads"], "elapsed_s": elapsed, "command": command_line(argv),
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


def compact(result: dict) -> dict:
    """The JSON record: every job's per-round figures, the totals and the must lines."""
    return {
        "date": result["date"], "command": result["command"], "args": result["args"],
        "rounds": result["rounds"], "elapsed_s": result["elapsed_s"],
        "machine": {k: v for k, v in result["info"].items()},
        "totals": {net: row["total"]["ratio"]["median"] for net, row in result["totals"].items()
                   if row["total"]["ratio"]},
        "network_rows": result["totals"],
        "musts": result["musts"],
        "jobs": {jid: {"per_round": x["per_round"], "ratios": x["ratios"], "check": x["check"],
                       "plan": x["plan"], "peak_mib": x["peak_mib"], "errors": x["errors"]}
                 for jid, x in result["summary"].items()},
    }


def print_summary(result: dict) -> None:
    s = result["summary"]
    print()
    for net, row in result["totals"].items():
        print(f"{net:12s} forward {fmt_ratio(row['forward']['ratio'])}  backward "
              f"{fmt_ratio(row['backward']['ratio'])}  fwd+bwd {fmt_ratio(row['total']['ratio'])}"
              .replace("**", ""))
    for x in s.values():
        if x["job"]["section"] in ("tiny", "suite", "unfold") or x["errors"] or x["check"] is False:
            flag = " MISMATCH" if x["check"] is False else ""
            err = f" ERROR {x['errors']}" if x["errors"] else ""
            print(f"{x['job']['id']:52s} npconv {fmt_time(x['npconv'] and x['npconv']['median'])}"
                  f"  torch {fmt_time(x['torch'] and x['torch']['median'])}  ratio "
                  f"{fmt_ratio(x['ratio']).replace('**', '')}{flag}{err}")
    print()
    for m in result["musts"]:
        print(f"{m['status']:4s}  {m['name']}: {m['value']}  {m['note']}")


if __name__ == "__main__":
    sys.exit(main())
