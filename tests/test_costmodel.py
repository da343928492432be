"""The cost model behind algorithm='auto': features, prediction, the planner's use of it,
and the fit that produces its coefficients (benchmarks/costfit.py)."""

from __future__ import annotations

import importlib
import importlib.util
import math
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings

import npconv
from npconv import costmodel
from npconv.geometry import ConvGeometry
from npconv.paths import get_path
from npconv.plan import MAPS, Problem, model_plan, plan, rule_plan
from npconv.testing import conv_configs

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _problem(n=4, c=16, o=32, size=(24, 24), k=(3, 3), stride=1, padding=1, groups=1,
             dtype="float32") -> Problem:
    g = ConvGeometry.build(size, k, stride, padding, 1, "zeros")
    return Problem(g, groups, n, c, o, np.dtype(dtype))


def _costfit():
    spec = importlib.util.spec_from_file_location("costfit", ROOT / "benchmarks" / "costfit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_features_count_flops_and_elements():
    p = _problem()
    call, image, flops, columns, output, inp, weight, out_taps, calls, strided = (
        costmodel.features(p))
    assert strided == 0 and costmodel.features(_problem(stride=2))[-1] > 0
    assert (call, image, calls) == (1.0, 4.0, 4.0 * 9)
    assert out_taps == 4 * 32 * 9 * 24 * 24
    assert flops == 2 * 4 * 32 * 16 * 9 * 24 * 24
    assert columns == 4 * 16 * 9 * 24 * 24 and output == 4 * 32 * 24 * 24
    assert inp == 4 * 16 * 24 * 24 and weight == 32 * 16 * 9
    double = costmodel.features(_problem(dtype="float64"))
    assert double[2:] == tuple(2 * v for v in (flops, columns, output, inp, weight,
                                                out_taps)) + (calls, 0.0)
    assert costmodel.features(_problem(n=8))[2] == 2 * flops


def test_predict_is_the_fitted_sum_and_none_when_not_fitted():
    p = _problem()
    table = {"im2col": {"forward": (1e-4, 0, 1e-11, 0, 0, 0, 0, 0, 0, 0)}}
    assert costmodel.predict(p, "forward", "im2col", table) == pytest.approx(
        1e-4 + 1e-11 * costmodel.features(p)[2])
    assert costmodel.predict(p, "backward", "im2col", table) is None
    assert costmodel.predict(p, "forward", "direct", table) is None
    for op in costmodel.MAPS:  # the shipped table covers the general path on every map
        assert costmodel.predict(p, op, "im2col") > 0


def test_each_blas_kernel_family_has_its_own_fitted_table():
    assert costmodel.table_name("SkylakeX") == costmodel.table_name("SAPPHIRERAPIDS") == "skylakex"
    for kernel in ("Haswell", "Zen", "Sandybridge", "", None):  # AVX2, older, or unsaid
        assert costmodel.table_name(kernel) == "haswell"
    with pytest.raises(TypeError, match="kernel"):
        costmodel.table_name(512)
    with pytest.raises(ValueError, match="'avx'"):
        costmodel.fitted_table("avx")
    p = _problem(n=8, c=64, o=64)
    for name in costmodel.TABLES:  # each covers the general path on every map
        table = costmodel.fitted_table(name)
        module = importlib.import_module(f"npconv._cost_table_{name}")
        assert costmodel.table_name(module.KERNEL) == name  # measured on its own family
        for op in costmodel.MAPS:
            assert costmodel.predict(p, op, "im2col", table) > 0
    assert costmodel.active_table() in costmodel.TABLES
    assert costmodel.predict(p, "forward", "im2col") == costmodel.predict(
        p, "forward", "im2col", costmodel.fitted_table(costmodel.active_table()))


def _flat(**per_path: float) -> dict:
    return {name: {op: (t,) + (0,) * 9 for op in costmodel.MAPS}
            for name, t in per_path.items()}


def test_model_plan_takes_the_cheapest_path_that_can_compute_each_map():
    p = _problem()
    chosen = model_plan(p, _flat(im2col=2e-3, direct=1e-3, winograd=5e-4))
    assert (chosen.forward, chosen.grad_input, chosen.grad_weight) == ("winograd",) * 3
    assert "winograd 0.5 ms" in chosen.reasons["forward"]
    strided = _problem(stride=2)  # winograd needs stride 1: the next cheapest
    assert model_plan(strided, _flat(im2col=2e-3, direct=1e-3, winograd=5e-4)).forward == "direct"
    assert model_plan(p, {"direct": {"forward": (1e-3,) + (0,) * 9}}) is None


def test_model_plan_fuses_the_gradients_only_when_predicted_cheaper():
    p = _problem()
    table = _flat(im2col=2e-3, direct=3e-3)
    table["direct"]["grad_input"] = (1e-3,) + (0,) * 9
    table["im2col"]["grad_weight"] = (1e-3,) + (0,) * 9
    table["im2col"]["backward"] = (2.5e-3,) + (0,) * 9
    split = model_plan(p, table)  # best pair 2 ms < fused 3 ms (direct) or 2.5 ms (im2col)
    assert (split.grad_input, split.grad_weight) == ("direct", "im2col")
    table["im2col"]["backward"] = (2.1e-3,) + (0,) * 9  # 5% dearer than the pair: fused
    assert model_plan(p, table).grad_weight == model_plan(p, table).grad_input == "im2col"
    table["im2col"]["backward"] = (2.3e-3,) + (0,) * 9  # 15% dearer: the pair
    assert model_plan(p, table).grad_input == "direct"
    table["im2col"]["backward"] = (1.5e-3,) + (0,) * 9
    fused = model_plan(p, table)
    assert (fused.grad_input, fused.grad_weight) == ("im2col", "im2col")
    assert "both gradients in one pass" in fused.reasons["grad_input"]
    alone = model_plan(p, table, maps=("grad_input",))  # a transposed forward
    assert alone.grad_input == "direct"


@settings(max_examples=60, deadline=None)
@given(conv_configs(ndim=(1, 2, 3), max_channels=6, max_batch=4, max_output=9,
                    padding_modes=("zeros", "reflect", "circular")))
def test_auto_plans_only_paths_that_compute_their_map(config):
    g = ConvGeometry.build(config.input_size, config.kernel_size, config.stride,
                           config.padding, config.dilation, config.padding_mode)
    for dtype in ("float32", "complex64"):
        p = Problem(g, config.groups, max(1, config.batch), config.in_channels,
                    config.out_channels, np.dtype(dtype))
        chosen = plan(p, "auto")
        for op in MAPS:
            name = getattr(chosen, op)
            assert get_path(name).requires(p, op) is None, (name, op)
            if name == "depthwise_jit":  # compiled kernels: a rule ahead of the model
                assert p.depthwise and "numba installed" in chosen.reasons[op]
            elif not p.small:  # small calls take im2col without asking the model
                best = min(t for t, n in _ranked(p, op))
                assert "cost model" in chosen.reasons[op]
                assert costmodel.predict(p, op, name) >= best


def _ranked(p, op):
    for name in npconv.ALGORITHMS[2:]:
        t = costmodel.predict(p, op, name)
        if t is not None and get_path(name).requires(p, op) is None:
            yield t, name


def test_the_fit_recovers_known_coefficients():
    """Timings made from known coefficients give those coefficients back (NNLS on
    relative error), and the report's held-out figures come out exact."""
    pytest.importorskip("scipy")
    costfit = _costfit()
    truth = (2e-5, 1e-6, 1e-11, 3e-10, 0.0, 2e-10, 1e-9, 5e-11, 1e-7, 2e-10)
    specs = costfit.random_specs(60, seed=5)
    rows = []
    for spec in specs:
        p = costfit._problem(spec)
        seconds = sum(a * b for a, b in zip(truth, costmodel.features(p)))
        rows.append(dict(spec=spec, map="forward", path="im2col", seconds=seconds,
                         rules=["im2col"] * 3))
    table = costfit.fit_table(rows)
    assert table["im2col"]["forward"] == pytest.approx(truth, rel=1e-3, abs=1e-15)
    result = costfit.evaluate(rows, table)
    assert max(result["errors"]["forward"]) < 1e-3
    assert math.isclose(sum(costfit.held_out(s) for s in specs) / len(specs), 0.25, abs_tol=0.15)


def test_rules_remain_as_the_baseline():
    p = _problem(n=4, c=256, o=256, size=(3, 3))
    assert (rule_plan(p).grad_input, rule_plan(p).grad_weight) == ("im2col", "im2col")
    assert "cost model" not in rule_plan(p).reasons["forward"]
