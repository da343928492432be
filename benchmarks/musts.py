"""Issue 13's 'Must' lines (issue 15's on CUDA), evaluated on a benchmark's summary.

``benchmarks/run.py`` measures and summarizes; this module decides, line by line,
whether each limit in ``report.py`` holds, and says why where it cannot tell.
"""

from __future__ import annotations

from report import (
    COL2IM_LIMIT,
    DEPTHWISE_LIMIT,
    GPU_LIMIT,
    GUARD_TOLERANCE,
    IM2COL_LIMIT,
    LAYER_LIMIT,
    NETWORK_LIMIT,
    S1_MEMORY_MIB,
    SIDES,
    fmt_mib,
    fmt_ratio,
    kernel_name,
    ratio_or_none,
    spread,
)
from zoo import GUARDED, TINY, TINY_BUDGET_US, Layer


class _Musts:
    """The rows of the 'Must' lines being built: name, PASS/FAIL (or n/a), value, note."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, name, ok, value, note=""):
        status = "n/a" if ok is None else ("PASS" if ok else "FAIL")
        self.rows.append({"name": name, "status": status, "value": value, "note": note})


def _median(v):
    return None if v is None else v["median"]


def _network_musts(musts: _Musts, totals: dict, device: str) -> None:
    """Each network's forward+backward total within its limit."""
    add = musts.add
    network_limit = GPU_LIMIT if device == "cuda" else NETWORK_LIMIT
    for net, row in totals.items():
        ratio = row["total"]["ratio"]
        partial = (f"only {ratio['n']} of {row['rounds']} rounds complete"
                   if ratio is not None and ratio["n"] < row["rounds"] else "")
        add(f"{net}: forward+backward total <= {network_limit}x torch",
            None if ratio is None else ratio["median"] <= network_limit, fmt_ratio(ratio),
            partial)


def _gpu_suite_musts(musts: _Musts, summary: dict) -> None:
    """Issue 15: forward+backward within GPU_LIMIT of torch on every suite case."""
    add = musts.add
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


def _layer_musts(musts: _Musts, summary: dict) -> None:
    """No zoo layer (depthwise or not) over its limit, forward or backward."""
    add, r = musts.add, _median
    zoo_rows = [s for s in summary.values() if s["job"]["section"] == "zoo"]
    if not zoo_rows:
        return
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


def _call_musts(musts: _Musts, summary: dict, device: str) -> None:
    """im2col and col2im against unfold and fold, the tiny-call budgets, S1's memory."""
    add, r = musts.add, _median
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


def baseline_machine_differs(baseline: dict, info: dict) -> str | None:
    """What differs between the earlier run's machine and this one (CPU, SIMD width,
    BLAS kernel), or None if nothing recorded does."""
    then = baseline.get("machine", {})
    ours = {"CPU": info.get("cpu"), "SIMD": info.get("simd"),
            "BLAS kernel": kernel_name(info.get("hello", {}))}
    theirs = {"CPU": then.get("cpu"), "SIMD": then.get("simd"),
              "BLAS kernel": kernel_name(then.get("hello", {})) if then.get("hello") else None}
    diffs = [f"{k} {theirs[k]} then, {ours[k]} now" for k in ours
             if theirs[k] is not None and theirs[k] != ours[k]]
    return "; ".join(diffs) or None


def _guard_musts(musts: _Musts, totals: dict, device: str, baseline: dict | None,
                 info: dict) -> None:
    """'Not slower than before' on the layers where npconv led."""
    add = musts.add
    if device == "cpu":
        other = None if baseline is None else baseline_machine_differs(baseline, info)
        for net, reference in GUARDED.items():
            if net not in totals:
                continue
            now = totals[net]["total"]["ratio"]
            name = (f"{net}: not slower than before (fwd+bwd ratio <= {GUARD_TOLERANCE:.2f} x "
                    "earlier)")
            before = (baseline or {}).get("totals", {}).get(net)
            # ratios move with the machine: a guard across machines means nothing
            if other and before is not None:
                add(name, None, f"{fmt_ratio(now)} vs {before:.2f}",
                    f"not compared: the earlier run was on another machine ({other})")
                continue
            if before is not None:
                ref = before
                source = f"the previous run ({baseline.get('source', 'docs/benchmarks.json')})"
            else:
                ref, source = reference, "issue 13's measurement (no earlier zoo run recorded)"
            add(name, None if now is None else now["median"] <= ref * GUARD_TOLERANCE,
                f"{fmt_ratio(now)} vs {ref:.2f}", f"earlier figure from {source}")


def must_lines(summary: dict, totals: dict, device: str, baseline: dict | None,
               info: dict) -> list[dict]:
    """Issue 13's 'Must' lines (issue 15's on CUDA): name, limit, value, PASS/FAIL."""
    musts = _Musts()
    _network_musts(musts, totals, device)
    if device == "cuda":
        _gpu_suite_musts(musts, summary)
    else:
        _layer_musts(musts, summary)
    _call_musts(musts, summary, device)
    _guard_musts(musts, totals, device, baseline, info)
    return musts.rows
