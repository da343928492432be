"""Benchmark npconv against torch (CPU) and mygrad in one process (the old method).

``python benchmarks/run.py --in-process ...`` runs this script; the default method
of ``benchmarks/run.py`` runs each library in its own process with its own
defaults instead (see there). This mode changes both libraries' environment
(wait policy, OpenBLAS thread timeout, glibc allocator thresholds), which slows
torch's small calls: keep it for comparison with the runs recorded before.

Usage::

    python benchmarks/inprocess.py                      # full suite, table + target checks
    python benchmarks/inprocess.py --quick              # fewer repeats
    python benchmarks/inprocess.py --output docs/benchmarks-inprocess.md

Method: both libraries run in this process with the same thread count
(threadpoolctl for NumPy's BLAS, ``torch.set_num_threads``). Calls are
interleaved A B A B ...; the table reports the median time of each side and
the median of the per-pair ratios npconv/torch, which is robust to the
bimodal noise of small multi-threaded BLAS calls. Peak extra memory of one
npconv call is measured with tracemalloc (it sees every NumPy allocation,
the output included); torch's is not measured (n/a).

torch's backward is ``torch.ops.aten.convolution_backward`` with all three
outputs requested: the same work as npconv's ``conv2d_backward`` (grad input,
weight and bias from a given grad_output), with no autograd graph and no
forward recomputation on either side.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Idle threads must not spin. With both libraries in one process on few cores,
# OpenBLAS workers busy-wait after each of npconv's matmuls (about 2**28 cycles
# by default) and OpenMP workers after each torch call, stealing the other
# library's cores: measured here, that slowed torch about 2x and made npconv's
# ratios look far better than they are. Both variables must be set before
# NumPy and torch load their thread pools; values given by the caller win.
SPIN_LIMITS = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE"}
for _name, _value in SPIN_LIMITS.items():
    os.environ.setdefault(_name, _value)

# Freed memory is reused, not handed back to the kernel. With glibc's defaults each
# call's output of more than 32 MiB, and often smaller ones, lands in pages the
# kernel maps afresh, and first-touch page faults cost about 3 us per 4 KiB page on
# this virtual machine: that made torch's S7 forward 5x slower (7 ms instead of
# 1.4 ms) and npconv's 3-4x, and which side paid how much changed from run to run.
# glibc reads these settings only at process start, so the script restarts itself
# once with them; a GLIBC_TUNABLES given by the caller is kept as it is.
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=268435456"
if sys.platform.startswith("linux") and "GLIBC_TUNABLES" not in os.environ:
    os.environ["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    os.execv(sys.executable, [sys.executable, *sys.argv])

import numpy as np
import threadpoolctl
import torch
import torch.nn.functional as F
from run import earlier_runs  # the same list of saved runs as the default report

import npconv

try:
    import mygrad
    import mygrad.nnet
except ImportError:  # pragma: no cover - optional peer
    mygrad = None

THREADS = 2  # default; --threads overrides


@dataclass(frozen=True)
class Device:
    """Where both libraries compute: NumPy + torch CPU, or CuPy + torch CUDA."""

    name: str
    xp: Any  # the array module npconv's inputs are made with
    torch_device: str
    sync: Callable[[], None]
    to_host: Callable[[Any], Any]

    def timed_call(self, f):
        """``f`` followed by a device synchronisation, so wall time covers the work."""
        def call():
            result = f()
            self.sync()
            return result
        return call


CPU = Device("cpu", np, "cpu", lambda: None, lambda a: a)


def cuda_device() -> Device:
    try:
        import cupy  # only for --device cuda
    except ImportError:
        raise SystemExit("--device cuda needs CuPy (pip install npconv[cuda12x])") from None
    if not (cupy.is_available() and torch.cuda.is_available()):
        raise SystemExit("--device cuda needs CuPy and torch with a CUDA device")
    # CuPy's float32 matmuls are exact float32 (CUPY_TF32 unset); keep cuDNN alike.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

    def sync() -> None:
        cupy.cuda.Device().synchronize()
        torch.cuda.synchronize()

    return Device("cuda", cupy, "cuda", sync, cupy.asnumpy)


@dataclass(frozen=True)
class Case:
    name: str
    n: int
    c: int
    h: int
    o: int
    k: int
    s: int = 1
    p: int = 0
    groups: int = 1
    dtype: str = "float32"

    @property
    def label(self) -> str:
        return self.name if self.dtype == "float32" else f"{self.name}-f64"

    def describe(self) -> str:
        g = f" g{self.groups}" if self.groups > 1 else ""
        return (f"N{self.n} C{self.c} {self.h}x{self.h} -> {self.o} k{self.k} s{self.s} "
                f"p{self.p}{g} {self.dtype}")


SUITE = [
    Case("S1", 16, 64, 56, 64, 3, 1, 1),
    Case("S2", 16, 128, 28, 256, 3, 2, 1),
    Case("S3", 8, 3, 224, 64, 7, 2, 3),
    Case("S4", 16, 256, 28, 64, 1),
    Case("S5", 1, 32, 64, 32, 3, 1, 1),
    Case("S6", 16, 128, 28, 128, 3, 1, 1, groups=128),
    Case("S7", 128, 3, 32, 16, 3),
    Case("S7", 128, 3, 32, 16, 3, dtype="float64"),
]
DEPTHWISE = {"S6"}


def set_threads(n: int) -> None:
    global THREADS
    THREADS = n


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def timed(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def interleaved(fa, fb, reps: int, budget: float):
    """Median times of fa, fb and the median of per-pair ratios ta/tb."""
    for _ in range(2):  # warm up caches, allocator, thread pools
        fa()
        fb()
    ta, tb = [], []
    start = time.perf_counter()
    for i in range(reps):
        if i % 2:  # alternate which side goes first in a pair
            b = timed(fb)
            a = timed(fa)
        else:
            a = timed(fa)
            b = timed(fb)
        ta.append(a)
        tb.append(b)
        if i >= 4 and time.perf_counter() - start > budget:
            break
    ratios = [a / b for a, b in zip(ta, tb)]
    return statistics.median(ta), statistics.median(tb), statistics.median(ratios), len(ta)


def peak_bytes(f) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    result = f()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del result
    return peak - base


def make_ops(case: Case, rng, device: Device = CPU):
    dt = np.dtype(case.dtype)
    host = {}
    host["x"] = rng.standard_normal((case.n, case.c, case.h, case.h)).astype(dt)
    host["w"] = rng.standard_normal((case.o, case.c // case.groups, case.k, case.k)).astype(dt)
    host["w"] *= 1 / math.sqrt(case.c // case.groups * case.k * case.k)
    host["b"] = rng.standard_normal(case.o).astype(dt)
    s, p, g, k = case.s, case.p, case.groups, case.k
    y = npconv.conv2d(host["x"], host["w"], host["b"], s, p, 1, g)
    host["gy"] = rng.standard_normal(y.shape).astype(dt)
    host["cols"] = npconv.im2col(host["x"], k, padding=p, stride=s)
    x, w, b, gy, cols = (device.xp.asarray(host[key]) for key in ("x", "w", "b", "gy", "cols"))
    xt, wt, bt, gyt, colst = (torch.from_numpy(host[key]).to(device.torch_device)
                              for key in ("x", "w", "b", "gy", "cols"))
    ops = {
        "forward": (lambda: npconv.conv2d(x, w, b, s, p, 1, g),
                    lambda: F.conv2d(xt, wt, bt, s, p, 1, g)),
        "backward": (lambda: npconv.conv2d_backward(gy, x, w, s, p, 1, g),
                     lambda: torch.ops.aten.convolution_backward(
                         gyt, xt, wt, [case.o], [s, s], [p, p], [1, 1], False, [0, 0], g,
                         [True, True, True])),
        "im2col": (lambda: npconv.im2col(x, k, padding=p, stride=s),
                   lambda: F.unfold(xt, k, 1, p, s)),
        "col2im": (lambda: npconv.col2im(cols, (case.h, case.h), k, padding=p, stride=s),
                   lambda: F.fold(colst, (case.h, case.h), k, 1, p, s)),
    }
    ops = {name: (device.timed_call(fa), device.timed_call(fb)) for name, (fa, fb) in ops.items()}
    if mygrad is not None and g == 1 and device is CPU:
        def mg():
            xm, wm = mygrad.Tensor(x), mygrad.Tensor(w)
            out = mygrad.nnet.conv_nd(xm, wm, stride=s, padding=p)
            out.backward(gy)
            return xm.grad, wm.grad

        def ours():
            npconv.conv2d(x, w, None, s, p)
            return npconv.conv2d_backward(gy, x, w, s, p)

        try:  # mygrad rejects shapes whose windows do not tile the padded input exactly
            mygrad.nnet.conv_nd(x[:1], w, stride=s, padding=p)
        except ValueError:
            pass
        else:
            ops["fwd+bwd vs mygrad"] = (ours, mg)
    return ops


def check_same(case: Case, ops, device: Device = CPU) -> None:
    """Each pair computes the same thing (a cheap guard against benchmarking a bug)."""
    tol = 1e-3 if case.dtype == "float32" else 1e-9

    def close(a, b, what):
        a, b = device.to_host(a), b.cpu().numpy()
        assert np.allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.abs(b).max()))), what

    for name in ("forward", "im2col", "col2im"):
        close(ops[name][0](), ops[name][1](), name)
    for a, b in zip(ops["backward"][0](), ops["backward"][1]()):
        close(a, b, "backward")


def machine_info() -> dict:
    model = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        model = fields.get("Model name", model).strip()
        caches = ", ".join(
            f"{key.strip()} {fields[key].strip()}"
            for key in fields
            if key.strip().endswith("cache")
        )
        flags = set(fields.get("Flags", "").split())
        simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "?"
    except (OSError, subprocess.CalledProcessError):
        caches, simd = "?", "?"
    blas = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
    blas_desc = ", ".join(
        f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture', '?')} kernel, "
        f"{i.get('threading_layer', '?')})" for i in blas
    ) or "?"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "caches": caches,
        "simd": simd,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "mygrad": getattr(mygrad, "__version__", "not installed"),
        "npconv": npconv.__version__,
        "blas": blas_desc,
        "openblas_env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
                         if k in os.environ},
    }


def geomean(values):
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def run(args) -> tuple[list[dict], list[tuple[str, bool, str]]]:
    rng = np.random.default_rng(0)
    rows = []
    cases = [c for c in SUITE if not args.only or c.label in args.only]
    for case in cases:
        ops = make_ops(case, rng, args.device)
        check_same(case, ops, args.device)
        for op, (fa, fb) in ops.items():
            if args.ops and op.split()[0] not in args.ops:
                continue
            reps = args.reps
            budget = args.budget * (3 if op.startswith("fwd+bwd") else 1)
            ta, tb, ratio, count = interleaved(fa, fb, reps, budget)
            tracked = op in ("forward", "backward", "im2col", "col2im") and args.device is CPU
            mem = peak_bytes(fa) if tracked else None  # tracemalloc sees host memory only
            peer = "mygrad" if "mygrad" in op else "torch"
            row = dict(case=case.label, shape=case.describe(), op=op, peer=peer,
                       npconv_ms=ta * 1e3, peer_ms=tb * 1e3, ratio=ratio, pairs=count,
                       mem_mib=None if mem is None else mem / 2**20)
            rows.append(row)
            mem_s = "" if mem is None else f"  peak {mem / 2**20:7.1f} MiB"
            print(f"{case.label:7s} {op:18s} npconv {ta * 1e3:9.2f} ms  {peer} {tb * 1e3:9.2f} ms"
                  f"  ratio {ratio:6.2f} ({count} pairs){mem_s}", flush=True)
    return rows, targets(rows)


def combine(runs: list[list[dict]]) -> list[dict]:
    """One row per (case, op): the median over whole-suite runs of each figure.

    The machine drifts between states (BLAS threads, neighbours) on a scale of
    seconds to minutes; repeating the suite and taking medians across runs is
    steadier than more pairs within one run.
    """
    if len(runs) == 1:
        return runs[0]
    combined = []
    for rows in zip(*runs):
        row = dict(rows[0])
        for key in ("npconv_ms", "peer_ms", "ratio"):
            row[key] = statistics.median(r[key] for r in rows)
        row["pairs"] = sum(r["pairs"] for r in rows)
        mems = [r["mem_mib"] for r in rows if r["mem_mib"] is not None]
        row["mem_mib"] = max(mems) if mems else None
        row["runs"] = [r["ratio"] for r in rows]
        combined.append(row)
    return combined


def targets(rows) -> list[tuple[str, bool, str]]:
    def pick(op, depthwise=False):
        return {r["case"]: r["ratio"] for r in rows if r["op"] == op
                and (r["case"].split("-")[0] in DEPTHWISE) == depthwise}

    out = []
    for op in ("forward", "backward"):
        got = pick(op)
        if got:
            gm, worst = geomean(got.values()), max(got.items(), key=lambda kv: kv[1])
            name = f"{op} geomean npconv/torch <= 1.4 (S1-S5, S7 f32+f64)"
            out.append((name, gm <= 1.4,
                        f"{gm:.2f}"))
            out.append((f"{op} every shape <= 2.0", worst[1] <= 2.0,
                        f"worst {worst[0]} {worst[1]:.2f}"))
            out.append((f"AIM: {op} geomean <= 1.0", gm <= 1.0, f"{gm:.2f}"))
        dw = pick(op, depthwise=True)
        for case, r in dw.items():
            out.append((f"depthwise {case} {op} <= 4.0", r <= 4.0, f"{r:.2f}"))
    for op, limit in (("im2col", 0.5), ("col2im", 1.0)):
        got = {r["case"]: r["ratio"] for r in rows if r["op"] == op}
        if got:
            worst = max(got.items(), key=lambda kv: kv[1])
            out.append((f"{op} <= {limit} x torch on every shape", worst[1] <= limit,
                        f"worst {worst[0]} {worst[1]:.2f}"))
    got = {r["case"]: r["ratio"] for r in rows if r["peer"] == "mygrad"}
    if got:
        worst = max(got.items(), key=lambda kv: kv[1])
        out.append(("fwd+bwd >= 3x faster than mygrad (ratio <= 0.333)", worst[1] <= 1 / 3,
                    f"worst {worst[0]} {worst[1]:.3f}"))
    for r in rows:
        if r["case"] == "S1" and r["op"] == "forward" and r["mem_mib"] is not None:
            out.append(("S1 forward peak memory <= 48 MiB", r["mem_mib"] <= 48,
                        f"{r['mem_mib']:.1f} MiB"))
    for r in rows:
        if r["case"] == "S7-f64" and r["op"] in ("forward", "backward"):
            out.append((f"AIM: S7 float64 {r['op']} faster than torch", r["ratio"] < 1.0,
                        f"{r['ratio']:.2f}"))
    return out


def _method_lines() -> list[str]:
    """The report's Method section (with the spin limits this process set)."""
    return [
        "## Method",
        "",
        "- Calls alternate A B A B (the side that goes first alternates too); each row gives",
        "  the median time of each side and the **median of the per-pair ratios**",
        "  npconv / peer (below 1 means npconv is faster).",
        "- *forward*: `npconv.conv2d` vs `torch.nn.functional.conv2d`, with bias.",
        "- *backward*: `npconv.conv2d_backward` vs `torch.ops.aten.convolution_backward` with",
        "  grad input, weight and bias requested: the same work, no autograd graph and no",
        "  forward pass on either side.",
        "- *im2col* vs `F.unfold`; *col2im* vs `F.fold` (the columns of the same shape).",
        "- *fwd+bwd vs mygrad*: `conv2d` + `conv2d_backward` vs `mygrad.nnet.conv_nd` forward +",
        "  `backward` (no bias, no groups: mygrad has neither, so S6 is skipped).",
        "- Peak memory: tracemalloc peak of one npconv call, output included; torch: n/a.",
        "- The machine must be otherwise idle. NumPy's OpenBLAS threads wait for each other",
        "  at every matmul; when another process holds a core, npconv's many mid-sized",
        "  matmuls slow down by up to 10x while torch's OpenMP pool degrades far less. A",
        "  load average above about 0.5 before the run makes 2-thread ratios meaningless.",
        "- Idle worker threads do not spin: the script sets "
        + ", ".join(f"`{k}={os.environ[k]}`" for k in SPIN_LIMITS)
        + " before NumPy and torch load.",
        "  With the defaults, OpenBLAS workers busy-wait after every npconv matmul and",
        "  steal torch's cores in the interleaved loop; that made torch about 2x slower",
        "  here and npconv's ratios look far better than they are.",
        "- Freed memory stays mapped (glibc's mmap and trim thresholds raised to 256 MiB,",
        "  the script restarts itself with them unless `GLIBC_TUNABLES` is set): with",
        "  glibc's defaults each call's fresh output pages fault in at about 3 us per",
        "  4 KiB page here, which slowed torch's S7 forward 5x and npconv's 3-4x, by",
        "  amounts that changed from run to run.",
        "- Ratios move by up to about 2x between runs on this shared virtual machine",
        "  (single cases, not the geometric means, swing most). With `--runs N` the whole",
        "  suite runs N times and every figure is the median across runs; the last",
        "  column lists each run's ratio.",
        "",
    ]


def markdown(rows, checks, info, command, plot_link=None, earlier=(), title="Benchmarks",
             note="") -> str:
    lines = [
        f"# {title}",
        "",
        *([note, ""] if note else []),
        (f"npconv against PyTorch (CPU) and mygrad, measured in one process with the same "
         f"thread count ({THREADS}) on both sides. Produced by:"
         if info["device"] == "cpu" else
         f"npconv on CuPy against PyTorch on CUDA ({info['gpu']}), in one process, each "
         f"call followed by a device synchronisation; TF32 off on both sides. Produced by:"),
        "",
        "```sh",
        command,
        "```",
        "",
        "## Machine",
        "",
        f"- CPU: {info['cpu']}, {info['cores']} cores, widest SIMD {info['simd']} "
        f"({info['caches']})",
        f"- Python {info['python']}, NumPy {info['numpy']}, torch {info['torch']}, "
        f"mygrad {info['mygrad']}, npconv {info['npconv']}",
        f"- NumPy BLAS (threadpoolctl): {info['blas']}",
        "- OpenBLAS environment: "
        + (", ".join(f"{k}={v}" for k, v in info["openblas_env"].items()) if info["openblas_env"]
           else "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE not set"),
        f"- Threads: {THREADS} for NumPy's BLAS, for npconv's own threads and for torch; "
        f"load average {info['load']}",
        f"- Allocator: `GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')}`",
        "",
        *_method_lines(),
        "## Results",
        "",
        "| case | shape | op | npconv ms | peer ms | npconv/peer | npconv peak MiB | per run |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        mem = "" if r["mem_mib"] is None else f"{r['mem_mib']:.1f}"
        per_run = " ".join(f"{v:.2f}" for v in r.get("runs", [r["ratio"]]))
        lines.append(f"| {r['case']} | {r['shape']} | {r['op']} | {r['npconv_ms']:.2f} | "
                     f"{r['peer_ms']:.2f} | **{r['ratio']:.2f}** | {mem} | {per_run} |")
    lines += ["", "## Targets", "", "| target | result | value |", "|---|---|---|"]
    for name, ok, value in checks:
        lines.append(f"| {name} | {'PASS' if ok else 'FAIL'} | {value} |")
    if plot_link:
        lines += ["", f"![ratios]({plot_link})"]
    if earlier:
        lines += ["", "## Other runs", "",
                  "Kept as they were recorded (the hardware behind this machine's name changes",
                  "between sessions, and the ratios with it):", ""]
        lines += [f"- [{title}]({link})" for link, title in earlier]
    lines.append("")
    return "\n".join(lines)


def plot(rows, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = ["forward", "backward", "im2col", "col2im", "fwd+bwd vs mygrad"]
    cases = list(dict.fromkeys(r["case"] for r in rows))
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / len(ops)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    for i, (op, color) in enumerate(zip(ops, colors)):
        xs, ys = [], []
        for j, case in enumerate(cases):
            for r in rows:
                if r["case"] == case and r["op"] == op:
                    xs.append(j + (i - (len(ops) - 1) / 2) * width)
                    ys.append(r["ratio"])
        if xs:
            label = op if "mygrad" in op else f"{op} (vs torch)"
            ax.bar(xs, ys, width, label=label, color=color)
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_xticks(range(len(cases)), cases)
    ax.set_ylabel("time ratio npconv / peer (log; < 1 = npconv faster)")
    ax.set_title(
        f"npconv vs torch and mygrad, {THREADS} thread(s), median of interleaved pairs"
    )
    ax.legend(fontsize=8, loc="best")
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--output", help="write a markdown report here")
    parser.add_argument("--plot", help="write a PNG bar plot of the ratios here")
    parser.add_argument("--only", nargs="*", help="case labels, e.g. S1 S7-f64")
    parser.add_argument("--ops", nargs="*", help="forward backward im2col col2im fwd+bwd")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="threads for both libraries (default %(default)s)")
    parser.add_argument("--runs", type=int, default=1,
                        help="repeat the whole suite and report medians across runs")
    parser.add_argument("--title", default="Benchmarks", help="the report's heading")
    parser.add_argument("--blas-env-note", action="store_true",
                        help="write the command as run with OPENBLAS_CORETYPE and "
                             "OPENBLAS_L2_SIZE removed from the environment (env -u), "
                             "for runs made so on a machine that sets them")
    parser.add_argument("--note", default="", help="a paragraph for the top of the report")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu: NumPy vs torch CPU; cuda: CuPy vs torch CUDA")
    args = parser.parse_args(argv)
    args.device = CPU if args.device == "cpu" else cuda_device()
    set_threads(args.threads)
    args.reps, args.budget = (7, 0.5) if args.quick else (21, 3.0)
    torch.set_num_threads(THREADS)
    npconv.set_num_threads(THREADS)
    with threadpoolctl.threadpool_limits(THREADS, user_api="blas"):
        info = machine_info()
        info["device"] = args.device.name
        info["gpu"] = torch.cuda.get_device_name() if args.device.name == "cuda" else ""
        env = " ".join(f"{k}={v}" for k, v in info["openblas_env"].items())
        print(f"{info['cpu']} | {info['cores']} cores | numpy {info['numpy']} | torch "
              f"{info['torch']} | BLAS {info['blas']} | {env or 'no OPENBLAS_* overrides'}")
        load_before = load_average()
        runs = []
        for index in range(args.runs):
            if args.runs > 1:
                print(f"--- run {index + 1} of {args.runs}", flush=True)
            runs.append(run(args)[0])
        rows = combine(runs)
        checks = targets(rows)
        info["load"] = f"{load_before} before, {load_average()} after (1, 5, 15 min)"
    print()
    print(f"load average: {info['load']}")
    for name, ok, value in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value}")
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + sys.argv[1:])
    unset = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k not in os.environ]
    if args.blas_env_note and unset:
        command = "env " + " ".join(f"-u {k}" for k in unset) + " " + command
    if args.output:
        with open(args.output, "w") as fh:
            link = (os.path.relpath(args.plot, os.path.dirname(os.path.abspath(args.output)))
                    if args.plot else None)
            fh.write(markdown(rows, checks, info, command, link, earlier_runs(args.output),
                              args.title, args.note))
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
