"""The benchmark's report: statistics, formatting, the markdown page, the machine section.

``benchmarks/run.py`` measures; this module turns its result into
``docs/benchmarks.md`` (the sections after ``MARKER`` in an existing report are kept)
and holds the limits of the 'Must' lines both use.
"""

from __future__ import annotations

import os
import pathlib
import platform
import statistics
import subprocess

import phases
from zoo import NETWORK_INPUTS, TINY, TINY_BUDGET_US, Layer

SIDES = ("npconv", "torch")
MARKER = "<!-- sections below are kept by benchmarks/run.py -->"
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


# --------------------------------------------------------------------------- formatting


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


def _preamble(result: dict) -> list[str]:
    """The title, what was compared and how, and the warnings (load, mismatches, errors)."""
    s = result["summary"]
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
    return lines


def _row(*cells: str) -> str:
    """One markdown table row."""
    return "| " + " | ".join(cells) + " |"


def _table_head(title: str, text: str, columns: tuple[str, ...], align: str) -> list[str]:
    """A section's heading, its paragraph and a table's header; ``align`` holds one
    letter per column, l (left) or r (right)."""
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    return [f"## {title}", "", text, "", _row(*columns), rule]


def _jobs(s: dict, section: str, op: str | None = None) -> list[dict]:
    """The summary's jobs of one section (and of one operation), in run order."""
    return [x for x in s.values()
            if x["job"]["section"] == section and (op is None or x["job"]["op"] == op)]


def _network_table(totals: dict) -> list[str]:
    """The per-network totals."""
    if not totals:
        return []
    lines = [
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
    return lines


def matmul_rates(hello: dict) -> dict[str, float | None]:
    """Each side's float32 matmul GFLOP/s, measured in its worker (None if not recorded)."""
    return {lib: hello.get(lib, {}).get("matmul_gflops") for lib in SIDES}


def _gflops(flops: float, seconds: dict | None) -> float | None:
    return None if not seconds else flops / seconds["median"] / 1e9


def _rates_table(totals: dict, hello: dict) -> list[str]:
    """Arithmetic rates of each network's convolutions beside each library's matmul rate."""
    rows = [(net, row) for net, row in totals.items() if "flops" in row]
    if not rows:
        return []
    mm = matmul_rates(hello)
    shown = {lib: "not recorded" if v is None else f"{v:.0f} GFLOP/s" for lib, v in mm.items()}
    lines = [
        "## Arithmetic rates",
        "",
        "Multiply-adds x 2 of every layer (count-weighted; the backward counts grad input and "
        "grad weight, each the forward's), over the medians of the totals above, in GFLOP/s. "
        "For scale, one float32 2048x2048 matmul in each worker ran at: NumPy "
        f"{shown['npconv']}, torch {shown['torch']}. Where torch's convolutions run faster "
        "than NumPy's own matmul, no path that does the same multiply-adds through NumPy's "
        "matmul can match them; only fewer multiply-adds (Winograd, FFT) can.",
        "",
        "| network | GFLOP fwd+bwd | npconv GFLOP/s | torch GFLOP/s | torch / NumPy matmul |",
        "|---|---:|---:|---:|---:|",
    ]
    for net, row in rows:
        flops = row["flops"]["total"]
        rate = {lib: _gflops(flops, row["total"][lib]) for lib in SIDES}
        shown_rate = {lib: "?" if v is None else f"{v:.3g}" for lib, v in rate.items()}
        versus = (f"{rate['torch'] / mm['npconv']:.2f}" if rate["torch"] and mm["npconv"]
                  else "?")
        lines.append(f"| {net} | {flops / 1e9:.2f} | {shown_rate['npconv']} | "
                     f"{shown_rate['torch']} | {versus} |")
    lines.append("")
    return lines


def _musts_table(musts: list[dict], cuda: bool) -> list[str]:
    """The 'Must' lines and whether each holds."""
    if not musts:
        return []
    title = "issue 15's" if cuda else "issue 13's"
    lines = [f"## Must lines ({title})", "", "| must | result | value | note |",
             "|---|---|---|---|"]
    for m in musts:
        lines.append(f"| {m['name']} | **{m['status']}** | {m['value']} | {m['note']} |")
    lines.append("")
    return lines


def _per_layer_table(result: dict, s: dict, cuda: bool) -> list[str]:
    """Every zoo layer: forward and backward against torch, and the paths."""
    forwards = _jobs(s, "zoo", "forward")
    if not _jobs(s, "zoo"):
        return []
    lines = _table_head(
        "Per layer",
        "Times of one call, median over rounds. *paths*: what `npconv.explain` chose for "
        "forward / grad input / grad weight (a transposed layer's forward is the grad "
        "input map of its adjoint convolution, so its column reads: forward / backward's "
        "grad input / grad weight). "
        + ("" if cuda else f"⚠ marks a ratio above the must line ({LAYER_LIMIT}x, "
           f"{DEPTHWISE_LIMIT}x for depthwise layers)."),
        ("network", "layer", "shape", "count", "fwd npconv ms", "fwd torch ms", "fwd ratio",
         "bwd npconv ms", "bwd torch ms", "bwd ratio", "paths"), "lllrrrrrrrl")
    for x in forwards:
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
    return lines


def _unfold_table(s: dict) -> list[str]:
    """im2col and col2im against unfold and fold."""
    if not _jobs(s, "unfold"):
        return []
    lines = _table_head(
        "im2col and col2im",
        "`npconv.im2col` vs `F.unfold` and `npconv.col2im` vs `F.fold` on every 2-D "
        "groups=1 layer of the zoo (for a transposed layer: its adjoint convolution's "
        "input). One call, median over rounds. *Fresh MiB*: the memory one im2col "
        "(unfold) call faulted in, median over rounds (4 KiB a minor page fault, 2 MiB a "
        "transparent huge page); near the output's size where the allocator handed out "
        "new pages, which the kernel zeroes, near 0 where it reused its own.",
        ("network", "layer", "shape", "im2col ms", "unfold ms", "ratio", "fresh MiB",
         "col2im ms", "fold ms", "ratio"), "lllrrrrrrr")
    for x in _jobs(s, "unfold", "im2col"):
        item = Layer.from_json(x["job"]["layer"])
        c = s.get(x["job"]["id"].rsplit(":", 1)[0] + ":col2im")
        lines.append(_row(item.net, item.name, item.describe(), fmt_ms(x["npconv"]),
                          fmt_ms(x["torch"]), fmt_ratio(x["ratio"]), _fresh(x),
                          fmt_ms(c and c["npconv"]),
                          fmt_ms(c and c["torch"]), fmt_ratio(c and c["ratio"])))
    lines.append("")
    return lines


def _fresh(x: dict) -> str:
    """'npconv / torch' fresh MiB a call, or '' where a side did not measure it."""
    got = [(x.get("fresh_mib") or {}).get(lib) for lib in ("npconv", "torch")]
    return "" if None in got else f"{got[0]:.1f} / {got[1]:.1f}"


def _tiny_table(s: dict) -> list[str]:
    """Per-call overhead of the tiny call against its budgets."""
    tiny = _jobs(s, "tiny")
    if not tiny:
        return []
    lines = _table_head(
        "Tiny calls",
        f"Per-call time of a {TINY.describe()} float32 call (x 1x1x8x8, 3x3 kernel), "
        "median of thousands of calls per round, then median over rounds (µs).",
        ("op", "npconv µs", "torch µs", "ratio", "budget (issue 13)"), "lrrrr")
    for x in tiny:
        op = x["job"]["op"]
        budget = TINY_BUDGET_US.get(op)
        lines.append(f"| {op} | {fmt_range_ms(x['npconv'], 1e6, 1)} | "
                     f"{fmt_range_ms(x['torch'], 1e6, 1)} | {fmt_ratio(x['ratio'])} | "
                     f"{'' if budget is None else f'{budget:g}'} |")
    lines.append("")
    return lines


def _suite_table(s: dict, cuda: bool) -> list[str]:
    """The old 7-shape suite, with peak memory."""
    suite = _jobs(s, "suite")
    if not suite:
        return []
    lines: list[str] = []
    mem_note = ("CuPy memory pool growth over one call; torch: "
                "`torch.cuda.max_memory_allocated` growth" if cuda else
                "tracemalloc peak of one npconv call, output included; torch: not measured")
    lines += _table_head(
        "The 7-shape suite",
        f"The suite used before the zoo, measured the same way. Peak MiB: {mem_note}.",
        ("case", "shape", "op", "npconv ms", "torch ms", "ratio", "npconv peak MiB",
         "torch peak MiB", "paths"), "lllrrrrrl")
    for x in suite:
        item = Layer.from_json(x["job"]["layer"])
        lines.append(_row(item.name, item.describe(), x["job"]["op"], fmt_range_ms(x["npconv"]),
                          fmt_range_ms(x["torch"]), fmt_ratio(x["ratio"]),
                          fmt_mib(x["peak_mib"]["npconv"]), fmt_mib(x["peak_mib"]["torch"]),
                          fmt_plan(x["plan"])))
    lines.append("")
    return lines


def _earlier_runs(result: dict) -> list[str]:
    """Links to the earlier reports kept beside this one."""
    if not result.get("earlier"):
        return []
    lines = ["## Other runs", "",
             "Kept as they were recorded (one-process method; the hardware behind this "
             "machine's name changes between sessions, and the ratios with it):", ""]
    lines += [f"- [{title}]({link})" for link, title in result["earlier"]]
    lines.append("")
    return lines


def markdown(result: dict) -> str:
    """The whole report (without the kept sections): every section this run measured."""
    s, cuda = result["summary"], result["info"]["device"] == "cuda"
    lines = _preamble(result)
    lines += _network_table(result["totals"])
    lines += _musts_table(result["musts"], cuda)
    lines += phases.table(result)
    lines += _rates_table(result["totals"], result["info"]["hello"])
    lines += _per_layer_table(result, s, cuda)
    lines += _unfold_table(s)
    lines += _tiny_table(s)
    lines += _suite_table(s, cuda)
    lines += machine_section(result)
    lines += _earlier_runs(result)
    return "\n".join(lines)


def machine_section(result: dict) -> list[str]:
    """The command, the machine (CPU, BLAS and its kernel, threads, load) and the method."""
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
        f", npconv {nph.get('npconv', '?')}, numba "
        + (nph.get("numba") or "not installed (no depthwise_jit path)"),
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
    lines += _method(result)
    lines.append("")
    return lines


def _method(result: dict) -> list[str]:
    """How the figures were taken (the same text each run, with this run's settings)."""
    info, args = result["info"], result["args"]
    lines = [
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
    return lines



# --------------------------------------------------------------------------- files


GENERATED_HEADINGS = ("# Benchmarks", "## Network totals", "## Must lines", "## Arithmetic rates",
                      "## Per layer", "## im2col and col2im", "## Tiny calls",
                      "## The 7-shape suite", "## Command", "## Machine", "## Method",
                      "## Other runs", "## Results", "## Targets")


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


# ---------------------------------------------------------------------- the console, the record


def compact(result: dict) -> dict:
    """The JSON record: every job's per-round figures, the totals and the must lines."""
    return {
        "date": result["date"], "command": result["command"], "args": result["args"],
        "rounds": result["rounds"], "elapsed_s": result["elapsed_s"],
        "machine": {k: v for k, v in result["info"].items()},
        "totals": {net: row["total"]["ratio"]["median"] for net, row in result["totals"].items()
                   if row["total"]["ratio"]},
        "network_rows": result["totals"],
        "musts": result["musts"], "probes": result.get("probes"),
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
