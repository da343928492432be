"""Opt-in autotuning: time every applicable path once per call signature, keep the fastest.

Like ``torch.backends.cudnn.benchmark``: with ``npconv.set_autotune(True)`` (or
``NPCONV_AUTOTUNE=1``) the first call with ``algorithm='auto'`` for a given
problem (shapes, dtype, geometry, backend, thread count) runs each path that
can compute it, and later calls with the same problem use the fastest one,
for the price of one dictionary lookup. The answer of the first call is the
winner's own result, so no call is computed twice.

Every path equals the reference up to rounding, so tuning never changes a
result beyond that; but the choice now depends on timings, so two processes
may round differently. The cache is thread-safe and bounded, and can be kept
on disk (``persist=True``, or ``NPCONV_AUTOTUNE_CACHE=path``), keyed by the
machine, the versions and the BLAS, so a new machine or library tunes anew.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import pathlib
import platform
import threading
import time
from collections.abc import Callable
from typing import Any

from . import executor
from ._version import __version__
from .geometry import as_int
from .plan import ALGORITHMS, MAPS, Plan, Problem, candidates
from .plan import plan as make_plan

# Problems remembered at most by default (least recently used ones are forgotten).
CACHE_SIZE = 1024
# Timed runs per candidate after one warm-up run; the median decides.
REPEATS = 2


class _Tuner:
    """The switch, the cache of winners, and where the cache is kept on disk."""

    def __init__(self) -> None:
        flag = os.environ.get("NPCONV_AUTOTUNE", "").strip().lower()
        self.enabled = flag in ("1", "true", "yes", "on")
        self.path: pathlib.Path | None = None
        file = os.environ.get("NPCONV_AUTOTUNE_CACHE", "").strip()
        if file:
            self.path = pathlib.Path(file)
        self.lock = threading.Lock()
        self.size = CACHE_SIZE
        self.cache: collections.OrderedDict[tuple[Any, ...], Plan] = collections.OrderedDict()
        self.loaded: dict[str, list[str]] = {}


_TUNER = _Tuner()


def set_autotune(enabled: bool, *, persist: bool | str | os.PathLike[str] = False,
                 cache_size: int = CACHE_SIZE) -> None:
    """Turn autotuning on or off for ``algorithm='auto'`` calls.

    Parameters
    ----------
    enabled : bool
    persist : bool or path, keyword-only
        ``True`` keeps the winners in ``$XDG_CACHE_HOME/npconv/autotune.json``
        (``~/.cache/npconv/...``), a path keeps them there; ``False`` (default)
        keeps them in memory only.
    cache_size : int, keyword-only
        How many problems to remember (the least recently used are forgotten).

    Examples
    --------
    >>> import npconv
    >>> npconv.set_autotune(True)
    >>> npconv.get_autotune()
    True
    >>> npconv.set_autotune(False)
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {enabled!r}")
    size = as_int(cache_size, "cache_size")
    if size < 1:
        raise ValueError(f"cache_size must be a positive integer, got {cache_size!r}")
    with _TUNER.lock:
        _TUNER.enabled, _TUNER.size = enabled, size
        if persist is True:
            base = os.environ.get("XDG_CACHE_HOME") or os.path.join(pathlib.Path.home(), ".cache")
            _TUNER.path = pathlib.Path(base) / "npconv" / "autotune.json"
        elif persist:
            _TUNER.path = pathlib.Path(persist)
        else:
            _TUNER.path = None
        _TUNER.loaded = _read(_TUNER.path)


def get_autotune() -> bool:
    """Whether ``algorithm='auto'`` calls are autotuned."""
    return _TUNER.enabled


def clear_autotune() -> None:
    """Forget every tuned choice (in memory; a file on disk is left as it is)."""
    with _TUNER.lock:
        _TUNER.cache.clear()
        _TUNER.loaded = {}


def enabled() -> bool:
    return _TUNER.enabled


def _machine_key() -> str:
    """What makes timings comparable: machine, versions and the BLAS."""
    import threadpoolctl

    blas = [(i.get("internal_api"), i.get("version"), i.get("architecture"))
            for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
    text = repr((platform.machine(), platform.processor(), os.cpu_count(), __version__,
                 platform.python_version(), blas))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read(path: pathlib.Path | None) -> dict[str, list[str]]:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a damaged cache file is a cache miss, not an error
    table = data.get(_machine_key(), {}) if isinstance(data, dict) else {}
    return {k: v for k, v in table.items()
            if isinstance(v, list) and len(v) == 3 and all(n in ALGORITHMS for n in v)}


def _write(path: pathlib.Path, text_key: str, plan: Plan) -> None:
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    data.setdefault(_machine_key(), {})[text_key] = [plan.forward, plan.grad_input,
                                                    plan.grad_weight]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _key(problem: Problem, maps: tuple[str, ...]) -> tuple[Any, ...]:
    # The threshold too: it decides whether the timed call ran threaded.
    return (problem, maps, executor.get_num_threads(), executor.get_min_work_bytes())


def cached(problem: Problem, maps: tuple[str, ...]) -> Plan | None:
    """The tuned plan for this problem, if one is known (one dict lookup)."""
    key = _key(problem, maps)
    with _TUNER.lock:
        found = _TUNER.cache.get(key)
        if found is not None:
            _TUNER.cache.move_to_end(key)
            return found
        names = _TUNER.loaded.get(repr(key))
    if names is None:
        return None
    forward, grad_input, grad_weight = names
    plan = Plan(forward, grad_input, grad_weight,
                dict.fromkeys(MAPS, "autotuned (from the cache file)"))
    _remember(key, plan)
    return plan


def _remember(key: tuple[Any, ...], plan: Plan) -> None:
    with _TUNER.lock:
        _TUNER.cache[key] = plan
        _TUNER.cache.move_to_end(key)
        while len(_TUNER.cache) > _TUNER.size:
            _TUNER.cache.popitem(last=False)
        path = _TUNER.path
    if path is not None:
        try:
            _write(path, repr(key), plan)
        except OSError:
            pass  # a read-only cache directory only costs re-tuning


def tune(problem: Problem, maps: tuple[str, ...],
         run: Callable[[Plan], Any]) -> tuple[Plan, Any]:
    """Time ``run(plan)`` for auto's plan and for each single-path plan; remember the
    fastest and return it with its result. Paths whose buffers do not fit
    (``MemoryError``) are skipped."""
    default = make_plan(problem, "auto", maps)
    plans = [default] + [Plan(n, n, n) for n in candidates(problem, maps)]
    timings: list[tuple[float, int, Plan, Any]] = []
    for order, plan in enumerate(plans):
        try:
            result = run(plan)  # warm-up, and the answer if this plan wins
            times = []
            for _ in range(REPEATS):
                start = time.perf_counter()
                run(plan)
                times.append(time.perf_counter() - start)
        except MemoryError:
            continue
        timings.append((sorted(times)[len(times) // 2], order, plan, result))
    best_time, _, best, result = min(timings, key=lambda t: (t[0], t[1]))
    report = ", ".join(f"{p.forward if 'forward' in maps else p.grad_input} "
                       f"{t * 1e3:.3g} ms" for t, _, p, _ in sorted(timings, key=lambda t: t[0]))
    why = f"autotuned: {best_time * 1e3:.3g} ms ({report})"
    tuned = Plan(best.forward, best.grad_input, best.grad_weight, dict.fromkeys(MAPS, why))
    _remember(_key(problem, maps), tuned)
    return tuned, result
