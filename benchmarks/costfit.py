"""Fit the cost model behind ``algorithm='auto'`` (``npconv/costmodel.py``) from timings.

Two steps, each its own command::

    python benchmarks/costfit.py measure --output benchmarks/costdata.json
    python benchmarks/costfit.py fit benchmarks/costdata.json \
        --table npconv/_cost_table_skylakex.py --report docs/costmodel.md

``measure`` times every path that can compute each map (forward, grad input,
grad weight, and both gradients in one call) of every distinct conv layer of
the benchmark's network zoo and of randomly drawn layers (seeded, drawn so
that every one is valid and runs in milliseconds), in this process with the
default thread count: one warm-up call, then the median of a few.

``fit`` fits, per path and map, non-negative coefficients of the model's
features (per-call overhead, per-image overhead, flops, and the elements of
input, output, columns and weight; see :mod:`npconv.costmodel`) by least
squares with residuals weighted by t^-WEIGHT (between relative and absolute
error); several measuring runs are fitted together. One layer in four (chosen
by a hash of its shape) is held out of the fit; the report says how well the model predicts the
held-out times, and how much slower its choice of path is than the fastest
measured path there, next to the rule-based choice it replaces.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from zoo import zoo  # noqa: E402

import npconv  # noqa: E402
from npconv import costmodel  # noqa: E402
from npconv.conv import _backward, _conv_call, _forward  # noqa: E402
from npconv.paths import get_path  # noqa: E402
from npconv.plan import (  # noqa: E402
    ALGORITHMS,  # noqa: E402
    Problem,
    model_plan,
    rule_plan,
)

PATHS = tuple(a for a in ALGORITHMS if a not in ("auto", "reference"))
# maps a path computes with another path's code: measuring them again adds only noise
ALIASES = {("flipped", "forward"): "im2col", ("flipped", "grad_weight"): "im2col"}
MAPS = costmodel.MAPS  # forward, grad_input, grad_weight, backward (both at once)
# Paths 'auto' takes by measured rules ahead of the model (npconv.plan): timed (their
# rows stay in the data) but not fitted, so the model chooses among the others only.
RULED = ("blocked", "depthwise_jit", "winograd_jit")
# Paths timed but left out of 'auto' altogether: winograd was the fastest path on none of
# the 244 layers of the first SkylakeX run (within 10% of it on one), yet the model, whose
# features do not describe its transforms, predicted it fastest on VGG-11's 256 -> 256
# 16x16 forward, where it took 1.9x im2col's time. By name it stays available.
UNCHOSEN = ("winograd",)
HOLD_OUT = 4  # one layer in HOLD_OUT is kept out of the fit
# Residuals weighted by t^-WEIGHT: 1 fits relative error (every layer alike), 0 absolute
# error (large layers only). Between them: held-out total over the fastest path 1.095 /
# 1.049 / 1.052 for 1 / 0.75 / 0.5, forward and backward geomeans 1.08-1.10 / 1.09-1.10 /
# 1.15 (the two runs of 2026-12-02; chosen on the held-out split, so slightly optimistic).
WEIGHT = 0.75


# --------------------------------------------------------------------------- layers


def zoo_specs() -> list[dict]:
    """Every distinct layer of the zoo as a convolution (transposed: its adjoint)."""
    specs = []
    for layers in zoo().values():
        for lay in layers:
            specs.append(dict(source=lay.ident, x=list(lay.conv_input_shape),
                              w=list(lay.conv_weight_shape), stride=list(lay.stride),
                              padding=list(lay.padding), dilation=list(lay.dilation),
                              groups=lay.groups, dtype=lay.dtype))
    return specs


def _draw(rng: random.Random, strided: bool = False) -> dict:
    nd = rng.choice([1, 2, 2, 2, 2, 3])
    k = rng.choice([1, 1, 2, 3, 3, 3, 3, 5, 7, 9, 11] if nd < 3 else [1, 2, 3, 3, 5])
    s = 2 if strided else rng.choice([1, 1, 1, 2])
    d = rng.choice([1, 1, 1, 1, 2]) if k > 1 else 1
    p = rng.randint(0, d * (k - 1) // 2 + (1 if k > 1 else 0)) if k > 1 else 0
    depthwise = nd == 2 and k > 1 and rng.random() < 0.15
    c = rng.choice([1, 3, 8, 16, 24, 32, 64, 96, 128, 256, 512])
    o = c if depthwise else rng.choice([1, 4, 8, 16, 32, 64, 128, 256, 512])
    size = {1: [256, 1024, 4096], 2: [3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128],
            3: [6, 8, 12, 16, 24, 32]}[nd]
    h = rng.choice([v for v in size if v + 2 * p >= d * (k - 1) + 1])
    n = rng.choice([1, 2, 4, 8])
    dtype = "float64" if rng.random() < 0.15 else "float32"
    return dict(source="random", x=[n, c] + [h] * nd, w=[o, 1 if depthwise else c] + [k] * nd,
                stride=[s] * nd, padding=[p] * nd, dilation=[d] * nd,
                groups=c if depthwise else 1, dtype=dtype)


def _flops(spec: dict) -> float:
    n, c = spec["x"][:2]
    o = spec["w"][0]
    taps = math.prod(spec["w"][2:])
    out = math.prod((h + 2 * p - d * (k - 1) - 1) // s + 1 for h, k, s, p, d in zip(
        spec["x"][2:], spec["w"][2:], spec["stride"], spec["padding"], spec["dilation"]))
    return 2.0 * n * o * (c // spec["groups"]) * taps * out


def random_specs(count: int, seed: int, strided: bool = False) -> list[dict]:
    """``count`` valid layers of 1e5 to 2e9 flops, drawn constructively (``strided``:
    all of stride 2)."""
    rng, specs = random.Random(seed), []
    while len(specs) < count:
        spec = _draw(rng, strided)
        if 1e5 <= _flops(spec) <= 2e9:
            specs.append(spec)
    return specs


def held_out(spec: dict) -> bool:
    text = json.dumps({k: v for k, v in spec.items() if k != "source"}, sort_keys=True)
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % HOLD_OUT == 0


# --------------------------------------------------------------------------- timing


def _median_time(f, budget: float = 0.25, most: int = 7) -> float:
    f()  # warm-up (buffers, plan caches)
    times: list[float] = []
    spent = 0.0
    while len(times) < 3 or (len(times) < most and spent < budget):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return sorted(times)[len(times) // 2]


def _calls(problem, x, w, gy):
    return {
        "forward": lambda name: lambda: _forward(problem, x, w, None, name),
        "grad_input": lambda name: lambda: _backward(problem, gy, x, w, name, True, False),
        "grad_weight": lambda name: lambda: _backward(problem, gy, x, w, name, False, True),
        "backward": lambda name: lambda: _backward(problem, gy, x, w, name, True, True),
    }


def _accepts(problem: Problem, path: str, op: str) -> bool:
    """Whether ``path`` computes ``op`` of ``problem`` ('backward': both gradients)."""
    needs = ("grad_input", "grad_weight") if op == "backward" else (op,)
    return all(get_path(path).requires(problem, m) is None for m in needs)


def measure_spec(spec: dict, rng: np.random.Generator, paths: tuple[str, ...] = PATHS
                 ) -> list[dict]:
    """Seconds per call of every path (of ``paths``) that computes each map of ``spec``."""
    x = rng.standard_normal(spec["x"]).astype(spec["dtype"])
    w = rng.standard_normal(spec["w"]).astype(spec["dtype"])
    x, w, _, _, _, _, problem = _conv_call(None, x, w, None, tuple(spec["stride"]),
                                           tuple(spec["padding"]), tuple(spec["dilation"]),
                                           spec["groups"], "zeros")
    gy = rng.standard_normal((x.shape[0], w.shape[0]) + problem.geometry.out_size)
    gy = gy.astype(spec["dtype"])
    auto = rule_plan(problem)
    calls, rows = _calls(problem, x, w, gy), []
    for op in MAPS:
        for name in paths:
            if (name, op) in ALIASES or not _accepts(problem, name, op):
                continue
            try:
                seconds = _median_time(calls[op](name))
            except MemoryError:
                continue
            rows.append(dict(spec=spec, map=op, path=name, seconds=seconds,
                             rules=[auto.forward, auto.grad_input, auto.grad_weight]))
    return rows


def measure(args: argparse.Namespace) -> None:
    if args.like:  # the layers of an earlier run, in its order
        seen: dict[str, dict] = {}
        for row in json.loads(Path(args.like).read_text())["rows"]:
            seen.setdefault(_key(row["spec"]), row["spec"])
        specs = list(seen.values())
    elif args.strided:
        specs = random_specs(args.strided, args.seed, strided=True)
    else:
        specs = zoo_specs() + random_specs(args.random, args.seed)
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    start = time.perf_counter()
    for i, spec in enumerate(specs):
        rows += measure_spec(spec, rng, tuple(args.paths))
        if i % 20 == 0:
            print(f"{i}/{len(specs)} layers, {time.perf_counter() - start:.0f} s",
                  file=sys.stderr)
    import threadpoolctl

    blas = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
    meta = dict(machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                threads=npconv.get_num_threads(), blas=blas, date=time.strftime(
                    "%Y-%m-%d %H:%M UTC", time.gmtime()), load=os.getloadavg()[0])
    Path(args.output).write_text(json.dumps(dict(meta=meta, rows=rows)))
    print(f"{len(rows)} timings of {len(specs)} layers -> {args.output}", file=sys.stderr)


# --------------------------------------------------------------------------- fitting


def _problem(spec: dict) -> Problem:
    x = np.empty(spec["x"], spec["dtype"])
    w = np.empty(spec["w"], spec["dtype"])
    return _conv_call(None, x, w, None, tuple(spec["stride"]), tuple(spec["padding"]),
                      tuple(spec["dilation"]), spec["groups"], "zeros")[-1]


def _key(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True)


def fit_table(rows: list[dict]) -> dict[str, dict[str, tuple[float, ...]]]:
    """Per path and map, c >= 0 minimising sum(((X c - t) / t^WEIGHT)^2) (scipy's NNLS)."""
    from scipy.optimize import nnls

    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["path"], row["map"]), []).append(row)
    table: dict[str, dict[str, tuple[float, ...]]] = {}
    for (path, op), items in sorted(groups.items()):
        if len(items) < 2 * len(costmodel.feature_names(path)):
            continue  # too few layers to fit this path on this map
        feats = np.array([costmodel.features(_problem(r["spec"]), path) for r in items])
        t = np.array([r["seconds"] for r in items])
        scale = t ** -WEIGHT
        a = feats * scale[:, None]
        norm = np.maximum(a.max(axis=0), 1e-300)
        coef, _ = nnls(a / norm, t * scale, maxiter=50 * a.shape[1])
        table.setdefault(path, {})[op] = tuple(float(f"{v:.4g}") for v in coef / norm)
    return table


def _timings(rows: list[dict]) -> dict[str, dict]:
    """Per layer: its spec, the rules' plan, and the mean seconds per (map, path) over
    the runs that measured it."""
    by: dict[str, dict] = {}
    for row in rows:
        entry = by.setdefault(_key(row["spec"]), dict(spec=row["spec"], rules=row["rules"]))
        entry.setdefault((row["map"], row["path"]), []).append(row["seconds"])
    for entry in by.values():
        for key, times in entry.items():
            if isinstance(key, tuple):
                entry[key] = sum(times) / len(times)
    return by


def _realised(entry: dict, forward: str, grad_input: str, grad_weight: str) -> tuple[float, float]:
    """Measured seconds of a plan's forward and backward (one path for both gradients
    runs them in one call)."""
    def get(op, name):
        name = ALIASES.get((name, op), name)
        return entry.get((op, name), math.inf)
    back = (get("backward", grad_input) if grad_input == grad_weight
            else get("grad_input", grad_input) + get("grad_weight", grad_weight))
    return get("forward", forward), back


def _best(entry: dict) -> tuple[float, float]:
    def best(op):
        return min((t for k, t in entry.items() if isinstance(k, tuple) and k[0] == op),
                   default=math.inf)
    return best("forward"), min(best("backward"), best("grad_input") + best("grad_weight"))


def evaluate(rows: list[dict], table: dict) -> dict:
    """On the given rows' layers: prediction errors, and model/rules/fastest times."""
    errors: dict[str, list[float]] = {op: [] for op in MAPS}
    for row in rows:
        pred = costmodel.predict(_problem(row["spec"]), row["map"], row["path"], table)
        if pred is not None:
            errors[row["map"]].append(abs(math.log(max(pred, 1e-9) / row["seconds"])))
    layers = []
    for entry in _timings(rows).values():
        problem = _problem(entry["spec"])
        chosen = model_plan(problem, table)
        if chosen is None:
            continue  # a map with no fitted path: nothing to choose
        model = _realised(entry, chosen.forward, chosen.grad_input, chosen.grad_weight)
        rules = _realised(entry, *entry["rules"])
        if math.isinf(sum(model) + sum(rules)):
            continue  # a choice that did not fit the workspace (MemoryError, not timed)
        layers.append(dict(source=entry["spec"]["source"], model=model, rules=rules,
                           best=_best(entry)))
    return dict(errors=errors, layers=layers)


# --------------------------------------------------------------------------- the report


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def _quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else math.nan


def _choice_lines(layers: list[dict], title: str) -> list[str]:
    lines = [f"**{title}** ({len(layers)} layers): time of each choice over the fastest "
             "measured path, forward and backward (both gradients).", "",
             "| choice | fwd geomean | fwd worst | bwd geomean | bwd worst | total s | "
             "total / fastest |", "|---|---:|---:|---:|---:|---:|---:|"]
    best_total = sum(sum(lay["best"]) for lay in layers)
    for who in ("model", "rules", "best"):
        ratios = [[lay[who][i] / lay["best"][i] for lay in layers] for i in (0, 1)]
        total = sum(sum(lay[who]) for lay in layers)
        name = {"model": "cost model", "rules": "rules (before)", "best": "fastest"}[who]
        lines.append(f"| {name} | {_geomean(ratios[0]):.3f} | {max(ratios[0]):.2f} | "
                     f"{_geomean(ratios[1]):.3f} | {max(ratios[1]):.2f} | {total:.3f} | "
                     f"{total / best_total:.3f} |")
    return lines + [""]


def _blas(meta: dict) -> str:
    # NumPy's and SciPy's OpenBLAS libraries: each kernel once
    return ", ".join(dict.fromkeys(str(b.get("architecture")) for b in meta["blas"]))


def report(meta: dict, table: dict, train: dict, test: dict, counts: tuple[int, int],
           runs: int, command: str) -> str:
    lines = ["# How 'auto' chooses: the cost model", "",
             "`algorithm='auto'` takes, for each map, the path of least predicted time "
             "among those that can compute it (`npconv.explain` shows the predictions). "
             "The model and its features are described in `npconv/costmodel.py`; its "
             "coefficients are fitted, per path and map and per BLAS kernel family "
             "(`npconv/_cost_table_skylakex.py` for OpenBLAS's AVX-512 kernels, "
             "`npconv/_cost_table_haswell.py` for the others), on timings of every "
             "distinct layer of the benchmark's network zoo and of randomly drawn layers. "
             "This page is written by the fit of one of them:", "", "```",
             "# each data file: every path timed on the same layers (those of costdata-haswell-1)",
             "# (zoo + 160 random), the BLAS on the kernel named below",
             "python benchmarks/costfit.py measure --like benchmarks/costdata-haswell-1.json "
             "--output <data file>", command, "```", "",
             f"Residuals are weighted by t^-{WEIGHT} (1 would fit relative error, 0 "
             "absolute error); the exponent and the features were chosen looking at the "
             "held-out figures, so those are slightly optimistic.", "",
             "The figures below judge the model on the layers held out of its fit; the "
             "shipped table is then refitted on all layers. *rules (before)* are the "
             "hand-set thresholds that chose before (`npconv.plan.rule_plan`).", "",
             f"Measured {meta['date']} on {meta['machine']} ({meta['cpus']} CPUs, "
             f"{meta['threads']} threads; BLAS kernel {_blas(meta)}; 1-minute load "
             f"{meta['load']:.2f} at the end of the last; {runs} data file(s), each layer's "
             f"time per path and map averaged over those that timed it). {counts[0]} layers "
             f"fitted, {counts[1]} held out "
             f"(one in {HOLD_OUT}, by a hash of the shape); calls under 64 KiB of columns, which "
             "auto gives to im2col without asking the model, are left out. Layers whose "
             "choice did not fit the default workspace (not timed) are left out of the "
             "choice tables.", "",
             "**Prediction error** |log(predicted / measured)| over every (layer, path) timing:",
             "", "| map | fit median | fit 90% | held-out median | held-out 90% | "
             "held-out within 1.5x |", "|---|---:|---:|---:|---:|---:|"]
    for op in MAPS:
        a, b = train["errors"][op], test["errors"][op]
        within = sum(e <= math.log(1.5) for e in b) / max(1, len(b))
        lines.append(f"| {op} | {_quantile(a, .5):.2f} | {_quantile(a, .9):.2f} | "
                     f"{_quantile(b, .5):.2f} | {_quantile(b, .9):.2f} | {within:.0%} |")
    lines.append("")
    lines += _choice_lines(test["layers"], "Held-out layers")
    lines += _choice_lines(train["layers"], "Fitted layers")
    lines += ["Coefficients (seconds per unit of each feature: "
              f"{', '.join(costmodel.FEATURES)}; for fft: "
              f"{', '.join(costmodel.FFT_FEATURES)}):", "", "```"]
    for path, ops in sorted(table.items()):
        for op, coef in ops.items():
            lines.append(f"{path:10s} {op:12s} " + " ".join(f"{c:9.3g}" for c in coef))
    return "\n".join(lines + ["```", ""])


def write_table(path: str, table: dict, meta: dict) -> None:
    def values(coef):
        return (", ".join(repr(c) for c in coef[:4]) + ",\n" + " " * 12
                + ", ".join(repr(c) for c in coef[4:]))
    body = "{\n" + "".join(
        f'    "{name}": {{\n' + "".join(
            f'        "{op}": ({values(coef)}),\n' for op, coef in sorted(ops.items()))
        + "    },\n" for name, ops in sorted(table.items())) + "}"
    Path(path).write_text(
        '"""Fitted coefficients of :mod:`npconv.costmodel`: generated, do not edit.\n\n'
        f"Written by ``python benchmarks/costfit.py fit`` from timings taken\n{meta['date']} "
        f"on {meta['machine']} ({meta['cpus']} CPUs, {meta['threads']} threads, BLAS kernel "
        f"{_blas(meta)}).\nPer path and map: seconds per unit of each feature of\n"
        f"npconv.costmodel.FEATURES (fft: FFT_FEATURES).\n"
        f'"""\n\nKERNEL = {_blas(meta)!r}\n\n'
        f"COEFFICIENTS: dict[str, dict[str, tuple[float, ...]]] = {body}\n")


def fit(args: argparse.Namespace) -> None:
    runs = [json.loads(Path(name).read_text()) for name in args.data]
    dates = sorted(run["meta"]["date"] for run in runs)
    meta = dict(runs[-1]["meta"], date=dates[0] if dates[0] == dates[-1]
                else f"{dates[0]} to {dates[-1]}")
    data = dict(meta=meta, rows=[row for run in runs for row in run["rows"]])
    families = {costmodel.table_name(_blas(run["meta"]).split(", ")[0]) for run in runs}
    if len(families) > 1:
        raise SystemExit(f"the data files were measured on different BLAS kernel families "
                         f"({sorted(families)}): fit each family's files on their own")
    family = families.pop()
    if args.table and Path(args.table).stem != f"_cost_table_{family}":
        raise SystemExit(f"{args.table}: this data was measured on BLAS kernel "
                         f"{_blas(meta)}, whose table is _cost_table_{family}.py")
    # Calls under SMALL_CALL_BYTES never ask the model (auto takes im2col's whole-batch
    # matmul); fitted, they made im2col's chunked path look as cheap as that one.
    # Timings of a path on layers it no longer accepts (its domain narrowed after it was
    # measured) neither fit it nor count as the fastest choice.
    # Paths auto takes by rules (RULED) are neither fitted nor the fastest choice here.
    rows = [row for row in data["rows"] if row["path"] not in RULED + UNCHOSEN
            and not _problem(row["spec"]).small
            and _accepts(_problem(row["spec"]), row["path"], row["map"])]
    train = [r for r in rows if not held_out(r["spec"])]
    test = [r for r in rows if held_out(r["spec"])]
    table = fit_table(train)
    counts = (len(_timings(train)), len(_timings(test)))
    command = " ".join(["python benchmarks/costfit.py fit", *args.data]
                       + [f"--{k} {v}" for k, v in (("table", args.table),
                                                    ("report", args.report)) if v])
    text = report(data["meta"], table, evaluate(train, table), evaluate(test, table), counts,
                  len(runs), command)
    print(text)
    if args.report:
        Path(args.report).write_text(text)
    if args.table:
        write_table(args.table, fit_table(rows), data["meta"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="time every path on zoo and random layers")
    m.add_argument("--output", default="benchmarks/costdata-new.json")
    m.add_argument("--random", type=int, default=160, help="random layers (default 160)")
    m.add_argument("--seed", type=int, default=13)
    m.add_argument("--zoo-only", action="store_true")
    m.add_argument("--like", help="measure the layers of this earlier run's data instead")
    m.add_argument("--strided", type=int, default=0,
                   help="measure this many random stride-2 layers instead (no zoo): to "
                        "add strided layers to earlier runs' data")
    m.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS,
                   help="time only these paths (to add a path to earlier runs' data)")
    f = sub.add_parser("fit", help="fit the coefficients and report on held-out layers")
    f.add_argument("data", nargs="+", help="measure's output (several runs: all are fitted, "
                   "and each layer's times are averaged over them)")
    f.add_argument("--table", help="write the coefficients here (npconv/_cost_table_<kernel>.py, "
                   "the kernel family the data was measured with)")
    f.add_argument("--report", help="write the report here (markdown)")
    args = parser.parse_args(argv)
    if args.command == "measure":
        if args.zoo_only:
            args.random = 0
        measure(args)
    else:
        fit(args)


if __name__ == "__main__":
    main()
