"""The benchmark's plumbing: zoo, worker processes, statistics, report (a tiny run, < 10 s)."""

import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import zoo  # noqa: E402


def test_zoo_counts_and_shapes():
    nets = zoo.zoo()
    assert set(nets) == set(zoo.NETWORKS) == set(zoo.NETWORK_INPUTS)
    calls = {net: sum(item.count for item in layers) for net, layers in nets.items()}
    assert calls["resnet18"] == 20  # 17 3x3/7x7 convolutions + 3 downsamples
    assert calls["mobilenetv2"] == 52  # stem, 17 dw, 17 project, 16 expand, head
    assert calls["vgg11"] == 8
    for layers in nets.values():
        assert len({item.geometry for item in layers}) == len(layers)
        for item in layers:
            assert min(item.out_size) > 0 and item.flops > 0
            assert zoo.Layer.from_json(item.to_json()) == item
    assert any(item.transposed for item in nets["unet2d"])
    assert any(item.depthwise for item in nets["mobilenetv2"])
    assert {item.nd for item in nets["wavenet1d"]} == {1}
    assert {item.dtype for item in nets["science-f64"]} == {"float64"}
    up = next(item for item in nets["unet2d"] if item.transposed)
    assert up.out_size == tuple(2 * h for h in up.size)


def test_kept_sections():
    report = pytest.importorskip("report")
    old = "# Benchmarks\n\nold\n\n" + report.MARKER + "\n\n## Dask\n\nkept\n"
    assert report.kept_sections(old).startswith(report.MARKER)
    assert "## Dask\n\nkept" in report.kept_sections(old)
    # without the marker, sections the script does not write survive
    unmarked = "# Benchmarks\n\n## Results\n\nx\n\n## Dask\n\nkept\n\n## Targets\n\ny\n"
    kept = report.kept_sections(unmarked)
    assert "## Dask" in kept and "## Results" not in kept and "## Targets" not in kept


def test_gpu_settings_logic():
    worker = pytest.importorskip("worker")
    assert "CUPY_TF32" not in worker.gpu_environment({"CUPY_TF32": "1", "A": "b"})
    fake = types.SimpleNamespace(backends=types.SimpleNamespace(
        cuda=types.SimpleNamespace(matmul=types.SimpleNamespace(allow_tf32=True)),
        cudnn=types.SimpleNamespace(allow_tf32=True)))
    assert worker.torch_tf32_off(fake) == {"matmul.allow_tf32": False, "cudnn.allow_tf32": False}

    class Pool:  # CuPy's pool: blocks are kept after the call
        total = used = 0

        def free_all_blocks(self):
            self.total = self.used

        def used_bytes(self):
            return self.used

        def total_bytes(self):
            return self.total

    pool = Pool()

    def call():
        pool.total += 3 << 20  # the call allocates 3 MiB, frees it back to the pool
        return None

    cupy = types.SimpleNamespace(get_default_memory_pool=lambda: pool)
    assert worker.cupy_pool_peak(cupy, call, lambda: None) == 3 << 20


def test_cuda_event_timing_logic():
    worker = pytest.importorskip("worker")
    log = []

    class Event:
        def record(self):
            log.append("record")

        def synchronize(self):
            log.append("sync")

    cuda = types.SimpleNamespace(Event=Event, get_elapsed_time=lambda a, b: 2.5,
                                 Device=lambda: types.SimpleNamespace(
                                     synchronize=lambda: log.append("device sync")))
    side = object.__new__(worker.NpconvCudaSide)  # no CuPy here: only the timing logic
    side.xp = types.SimpleNamespace(cuda=cuda)
    times = side.time_calls(lambda: log.append("call"), warmup=1, min_reps=3, max_reps=3,
                            budget=0.0)
    assert times == [2.5e-3] * 3  # milliseconds from the events, reported in seconds
    assert log[:2] == ["call", "device sync"]
    assert log[2:6] == ["record", "call", "record", "sync"]


def test_tiny_run_end_to_end(tmp_path):
    pytest.importorskip("torch")
    run = pytest.importorskip("run")
    report = pytest.importorskip("report")
    musts_module = pytest.importorskip("musts")
    figure = pytest.importorskip("figure")
    args = run.parse([]).parse_args(["--quick", "--networks", "unet2d", "--only", "up2.upconv",
                                     "--sections", "zoo", "unfold", "--rounds", "1"])
    settings = run.Settings(True)
    settings.rounds, settings.gap = 1, 0.0
    settings.normal = dict(warmup=0, min_reps=1, max_reps=1, budget=0.0)
    jobs = run.make_jobs(args, settings)
    tiny = zoo.layer("t", "t1d", 1, 2, 3, 9, 3, p=1, d=2)  # 1-D, dilated
    for op in ("forward", "backward"):
        jobs.append({"id": f"zoo:t/t1d:{op}", "section": "zoo", "op": op,
                     "layer": tiny.to_json(), **settings.normal, "plan": op == "forward"})
    assert [j["op"] for j in jobs] == ["forward", "backward", "im2col", "col2im", "forward",
                                       "backward"]
    out = run.run_rounds(jobs, args, settings, log=lambda m: None)
    assert out["hello"]["npconv"]["blas"] and out["hello"]["torch"]["torch_threads"] == 2
    # one round: a probe before the first job and one at the end
    assert [len(p) for p in out["probes"]] == [2]
    assert all(p["matmul_ms"] > 0 and p["ratio"] > 0 for p in out["probes"][0])
    assert all("round_trip_ns" in p for p in out["probes"][0])
    summary = run.summarize(jobs, out["raw"])
    for jid, x in summary.items():
        assert not x["errors"], (jid, x["errors"])
        assert x["check"] is True, jid  # both sides computed the same result
        assert x["ratio"]["n"] == 1
    assert summary["zoo:unet2d/up2.upconv:forward"]["plan"]["forward"]
    fresh = summary["unfold:unet2d/up2.upconv:im2col"]["fresh_mib"]
    assert all(v is None or v >= 0 for v in fresh.values())
    totals = run.network_totals(summary, {"t": [tiny]}, 1)
    assert totals["t"]["forward"]["ratio"]["median"] > 0
    # the report survives missing figures (None) on either device
    summary["zoo:t/t1d:forward"]["ratio"] = None
    summary["zoo:t/t1d:forward"]["peak_mib"] = {"npconv": None, "torch": None}
    for side in ("npconv", "torch"):  # each worker measured its own matmul rate
        assert out["hello"][side]["matmul_gflops"] > 0
    assert totals["t"]["flops"] == {"forward": tiny.flops, "backward": 2 * tiny.flops,
                                    "total": 3 * tiny.flops}
    for device in ("cpu", "cuda"):
        info = report.machine_info(out["hello"], device)
        musts = musts_module.must_lines(summary, totals, device, None, info)
        result = {"summary": summary, "totals": totals, "musts": musts,
                  "info": info, "args": {"threads": 2},
                  "rounds": 1, "gap": 0.0, "timing": settings.normal, "loads": out["loads"],
                  "probes": out["probes"],
                  "elapsed_s": 1.0, "command": "python benchmarks/run.py", "date": "today"}
        text = report.markdown(result)
        assert "## Network totals" in text and "## Must lines" in text
        if device == "cpu" and fresh["npconv"] is not None:  # Linux: faults were counted
            assert " / " in text.split("## im2col and col2im")[1].split("\n## ")[0]
        slow_rows = text.split("## Slow minutes")[1].split("\n## ")[0].splitlines()
        assert next(r for r in slow_rows if r.startswith("| 1 |")).endswith(
            f" | {totals['t']['total']['per_round'][0]:.2f} |")
        rates = text.split("## Arithmetic rates")[1].split("\n## ")[0]
        row = next(line for line in rates.splitlines() if line.startswith("| t |"))
        npconv_rate, torch_rate = (float(cell) for cell in row.split("|")[3:5])
        assert npconv_rate > 0 and torch_rate > 0
        page = tmp_path / f"{device}.md"
        page.write_text("# Benchmarks\n\n" + report.MARKER + "\n\n## Dask\n\nkept\n")
        report.write_report(str(page), text)
        assert page.read_text().rstrip().endswith("## Dask\n\nkept")
    figure.plot(result, str(tmp_path / "plot.png"))
    assert (tmp_path / "plot.png").stat().st_size > 0


def test_fresh_memory_a_call_tells_new_pages_from_reused_ones():
    """worker.fresh_bytes: about the array's size where every call maps new memory (40
    MiB, past glibc's largest dynamic mmap threshold), little where calls write into
    one array."""
    worker = pytest.importorskip("worker")
    big = 5 * 2**20  # float64 elements: 40 MiB
    kept = np.ones(big)  # its pages are in: filling it again faults none

    def per_call(f, calls=8):
        before = worker.faults()
        for _ in range(calls):
            f()
        return worker.fresh_bytes(before, worker.faults(), calls)

    fresh = per_call(lambda: np.ones(big))
    if fresh is None:
        pytest.skip("no /proc/vmstat: fresh memory is not measured here")
    assert fresh >= 0.9 * kept.nbytes
    assert per_call(lambda: kept.fill(1.0)) < 4 * 2**20


def test_ab_runs_two_settings_against_each_other(capsys):
    """benchmarks/ab.py: two worker processes, one per side, each with its environment."""
    ab = pytest.importorskip("ab")
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        ab.side_env(None, ["NPCONV_MIN_WORK_BYTES"])
    assert ab.main(["--networks", "science-f64", "--rounds", "1", "--top", "2",
                    "--a-env", "NPCONV_MIN_WORK_BYTES=1048576",
                    "--b-env", "NPCONV_MIN_WORK_BYTES=0"]) == 0
    out = capsys.readouterr().out
    assert "A: " in out and "min_work_bytes 1048576" in out
    assert "B: " in out and "min_work_bytes 0 " in out
    row = next(line for line in out.splitlines() if line.startswith("| science-f64 |"))
    a_ms, b_ms, ratio = row.split("|")[2:5]
    assert float(a_ms) > 0 and float(b_ms) > 0
    assert float(ratio.split("**")[1]) == pytest.approx(float(b_ms) / float(a_ms), rel=0.05)
    assert sum(line.startswith("| science-f64/") for line in out.splitlines()) == 2


def test_guard_is_not_compared_across_machines():
    """'Not slower than before' compares ratios only with an earlier run on the same CPU,
    SIMD width and BLAS kernel: ratios move with the machine."""
    musts = pytest.importorskip("musts")
    hello = {"npconv": {"blas": [{"architecture": "SkylakeX"}]}}
    info = {"cpu": "Xeon A", "simd": "AVX-512", "hello": hello}
    same = {"machine": dict(info), "totals": {"unet3d": 1.0}}
    other = {"machine": {"cpu": "Xeon B", "simd": "AVX2",
                         "hello": {"npconv": {"blas": [{"architecture": "Haswell"}]}}},
             "totals": {"unet3d": 1.0}}
    assert musts.baseline_machine_differs(same, info) is None
    assert musts.baseline_machine_differs(other, info) == (
        "CPU Xeon B then, Xeon A now; SIMD AVX2 then, AVX-512 now; "
        "BLAS kernel Haswell then, SkylakeX now")

    def guard_rows(ratio, baseline):
        totals = {"unet3d": {"rounds": 3, "total": {"ratio": {"median": ratio, "min": ratio,
                                                              "max": ratio, "n": 3}}}}
        rows = musts.must_lines({}, totals, "cpu", baseline, info)
        return [row for row in rows if "not slower than before" in row["name"]]

    (kept,) = guard_rows(1.05, same)
    assert kept["status"] == "PASS" and "previous run (docs/benchmarks.json)" in kept["note"]
    (named,) = guard_rows(1.05, {**same, "source": "docs/earlier.json"})
    assert "previous run (docs/earlier.json)" in named["note"]
    (skipped,) = guard_rows(1.05, other)
    assert skipped["status"] == "n/a" and "another machine" in skipped["note"]
    (slower,) = guard_rows(1.2, same)
    assert slower["status"] == "FAIL"


def test_slow_minutes_table_counts_the_slow_probes_of_each_round():
    phases = pytest.importorskip("phases")
    fast = {"ratio": 1.2, "round_trip_ns": 60.0}
    slow = {"ratio": phases.SLOW_RATIO + 0.5, "round_trip_ns": 330.0}
    row = {"total": {"per_round": [1.1, None]}}
    result = {"probes": [[fast, slow, slow], [dict(fast, round_trip_ns=None)]],
              "totals": {"net": row, "partial": {"total": {"per_round": [1.0]}}}}
    lines = phases.table(result)
    assert lines[0] == "## Slow minutes"
    assert "| net |" in lines[4] and "partial" not in lines[4]  # one figure per round
    assert lines[6] == (f"| 1 | 2 of 3 | {slow['ratio']:.2f} (1.20-{slow['ratio']:.2f}) | "
                        "330 (60-330) | 1.10 |")
    assert lines[7] == "| 2 | 0 of 1 | 1.20 (1.20-1.20) | - | - |"
    assert phases.table({"probes": [[], []], "totals": {}}) == []


def test_round_trip_is_timed_between_two_cpus_of_this_process():
    pingpong = pytest.importorskip("pingpong")  # needs numba
    if not (hasattr(os, "sched_getaffinity") and {0, 1} <= os.sched_getaffinity(0)):
        pytest.skip("needs CPUs 0 and 1 and thread affinity")
    before = os.sched_getaffinity(0)
    assert 0 < pingpong.round_trip_ns(rounds=2000) < 1e6
    assert os.sched_getaffinity(0) == before  # the caller's affinity is given back
    assert pingpong.round_trip_ns(cpus=(0, 10**6)) is None  # not this process's CPU
