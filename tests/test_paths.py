"""Every path named in ``npconv.ALGORITHMS`` equals ``algorithm='reference'``.

The reference itself is checked against torch in test_reference.py. Here each
fast path is reached by its public name and compared with the reference,
computed in double precision from the same inputs, over hypothesis-drawn
geometries (1-3-d, groups, dilation, strides, every padding mode, batch 0,
real and complex dtypes, non-contiguous and negative-stride layouts). A path
that cannot compute a geometry must refuse it with a ``ValueError`` that says
what it needs, never compute a wrong answer.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npconv
from npconv.geometry import ConvGeometry
from npconv.paths import depthwise_jit, get_path
from npconv.plan import Problem, rule_plan
from npconv.testing import PADDING_MODES, ConvConfig, assert_close, conv_configs, random_conv_arrays

FAST = [name for name in npconv.ALGORITHMS if name != "reference"]
LAYOUTS = ("contiguous", "fortran", "negative", "strided")
WIDE = {np.dtype("float32"): "float64", np.dtype("complex64"): "complex128"}

general = conv_configs(ndim=(1, 2, 3), min_batch=0, max_batch=3, max_channels=4,
                       padding_modes=PADDING_MODES, max_output=5)


not_depthwise = general.filter(lambda c: c.groups == 1 or c.in_channels > c.groups)


@st.composite
def depthwise_configs(draw: st.DrawFn, ndim=(1, 2, 3), modes=PADDING_MODES) -> ConvConfig:
    base = draw(conv_configs(ndim=ndim, groups=False, max_channels=1, max_batch=3,
                             padding_modes=modes, max_output=6))
    channels, mult = draw(st.integers(2, 5)), draw(st.integers(1, 2))
    return dataclasses.replace(base, in_channels=channels, out_channels=channels * mult,
                               groups=channels)


# Geometries each path accepts, so that every path is exercised, not only refused.
ACCEPTED = {
    "im2col": general,
    "serial": general,
    "stacked": not_depthwise,
    "shifted": not_depthwise,
    "flipped": conv_configs(ndim=(1, 2, 3), max_stride=1, max_channels=4, max_batch=3,
                            allow_same=True, max_output=6),
    "pointwise": conv_configs(ndim=(1, 2, 3), min_kernel=1, max_kernel=1, max_stride=1,
                              max_padding=0, allow_same=False, max_channels=5, max_output=6),
    "direct": general,
    "depthwise": depthwise_configs(),
    "depthwise_jit": depthwise_configs(ndim=(1, 2), modes=("zeros",)),
    # channels across the kernels' blocks; strides (phases) and padding past the kernel's
    # span refuse grad input, which the check accepts (tests/test_blocked.py reaches a
    # strided grad weight through conv_transpose_backward)
    "blocked": conv_configs(ndim=(1, 2, 3), groups=False, max_stride=3, max_channels=12,
                            max_batch=3, max_padding=3, max_output=9),
    "winograd": conv_configs(ndim=2, min_kernel=3, max_kernel=3, max_stride=1,
                             max_dilation=1, max_channels=6, max_batch=3, max_output=13),
    "winograd_jit": conv_configs(ndim=2, groups=False, min_kernel=3, max_kernel=3,
                                 max_stride=1, max_dilation=1, max_channels=6, max_batch=3,
                                 max_output=13),
    "phases": conv_configs(ndim=(1, 2, 3), max_stride=3, max_kernel=5, max_channels=4,
                           max_batch=3, max_output=7).filter(lambda c: max(c.stride) > 1),
    # kernels up to 9 (dilated up to 17 taps), strides up to 3 (polyphase), every mode
    "fft": conv_configs(ndim=(1, 2, 3), max_kernel=9, max_stride=3, max_padding=4,
                        max_channels=4, max_batch=3, padding_modes=PADDING_MODES,
                        max_output=6),
}


def test_auto_takes_fft_for_large_kernels_and_says_why():
    # 13x13: with numba, blocked takes kernels up to 11x11 first (faster there)
    x, w = np.zeros((4, 16, 64, 64), np.float32), np.zeros((16, 16, 13, 13), np.float32)
    plan = npconv.explain(x, w, padding=6)  # the cost model: FFT's work ignores the kernel
    assert (plan.forward, plan.grad_input, plan.grad_weight) == ("fft",) * 3
    assert plan.reasons["forward"].startswith("cost model (")
    assert "table), predicted: fft" in plan.reasons["forward"]
    # the hand-set rules before the model took it from 7x7 on (kept as its baseline)
    problem = Problem(ConvGeometry.build((64, 64), (7, 7), 1, 3), 1, 4, 16, 16,
                      np.dtype("float32"))
    rules = rule_plan(problem)
    assert (rules.forward, rules.grad_input, rules.grad_weight) == ("fft",) * 3
    assert "FFT" in rules.reasons["forward"] and "FFT" in rules.reasons["grad_input"]
    few = rule_plan(dataclasses.replace(problem, in_channels=3))  # 7x7 from 3 channels
    assert (few.forward, few.grad_input) == ("im2col", "fft")


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "complex64"])
@pytest.mark.parametrize("shape, kernel, kw", [
    ((2, 3, 4096), (2, 3, 31), dict(padding=15)),
    ((2, 4, 96, 80), (3, 4, 9, 9), dict(padding=4, stride=(1, 2))),
    ((1, 2, 20, 24, 22), (2, 2, 5, 5, 5), dict(padding=2, padding_mode="reflect")),
])
def test_fft_error_grows_with_the_transform_size_only(shape, kernel, kw, dtype):
    """FFT convolution against the float64 reference with a size-aware tolerance.

    Each of the three transforms (input, kernel, inverse) adds a normwise error
    of O(u log2 L) for L transformed points (Higham, Accuracy and Stability,
    sec. 24.1), and the contraction over the C/g*k products of one output adds
    random rounding errors growing like sqrt(reduction). Hence max|err| <=
    2 u log2(L) sqrt(reduction) (1 + max|y|), normwise; measured ratios stay
    below 0.1 of it for float32 and float64 (docs/fft.md). float16 is
    transformed in float32, so its error is the final rounding (u = 2**-11).
    """
    from npconv.geometry import ConvGeometry
    from npconv.paths.fft import _layout
    from npconv.plan import Problem

    rng = np.random.default_rng(5)
    x, w = rng.standard_normal(shape), rng.standard_normal(kernel)
    y64 = npconv.conv(x, w, **kw, algorithm="reference")
    gy = rng.standard_normal(y64.shape)
    gx64, gw64, _ = npconv.conv_backward(gy, x, w, **kw, algorithm="reference")
    xc, wc, gyc = (a.astype(dtype) for a in (x, w, gy))
    y = npconv.conv(xc, wc, **kw, algorithm="fft")
    gx, gw, _ = npconv.conv_backward(gyc, xc, wc, **kw, algorithm="fft")
    geometry = ConvGeometry.build(shape[2:], kernel[2:], kw.get("stride", 1), kw["padding"],
                                  padding_mode=kw.get("padding_mode", "zeros"))
    problem = Problem.of(geometry, 1, shape, kernel, np.dtype(dtype))
    log_l = np.log2(np.prod(_layout(problem, np).sizes))
    u = {"float64": 2.0**-53, "float16": 2.0**-11}.get(dtype, 2.0**-24)
    positions = gy.size // gy.shape[1]
    for got, want, reduction in ((y, y64, np.prod(kernel[1:])),
                                 (gx, gx64, kernel[0] * np.prod(kernel[2:])),
                                 (gw, gw64, positions)):
        assert got.dtype == np.dtype(dtype)
        tol = 2 * (u if dtype == "float16" else u * log_l) * np.sqrt(reduction)
        assert_close(got, want, rtol=tol, atol=tol, err_msg=f"fft {dtype} {shape} {kernel}")


def _relayout(a, layout):
    """The same values as ``a`` in another memory layout (a view where possible)."""
    if a is None or layout == "contiguous":
        return a
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "negative":
        return np.flip(np.flip(a, -1).copy(), -1)
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


def _arrays(config, dtype, layout, seed=0):
    arrays = random_conv_arrays(config, dtype, seed=seed, grad_output=True)
    return tuple(_relayout(a, layout) for a in arrays)


def _wide(arrays):
    return tuple(None if a is None else a.astype(WIDE.get(a.dtype, a.dtype)) for a in arrays)


def _refuses(name, call):
    """Run ``call``; if path ``name`` refuses the geometry, check it says so clearly."""
    try:
        return call()
    except ValueError as exc:
        assert f"algorithm={name!r} cannot compute" in str(exc), exc
        return None


def _check_conv(name, config, dtype, layout):
    x, w, b, gy = _arrays(config, dtype, layout)
    kw = config.kwargs()
    red = config.reduction_size
    xr, wr, br, gyr = _wide((x, w, b, gy))
    y = _refuses(name, lambda: npconv.conv(x, w, b, **kw, algorithm=name))
    if y is not None:
        assert y.dtype == x.dtype
        assert_close(y, npconv.conv(xr, wr, br, **kw, algorithm="reference"), reduction=red,
                     err_msg=f"{name} forward, {config}")
    grads = _refuses(name, lambda: npconv.conv_backward(gy, x, w, **kw, algorithm=name))
    if grads is not None:
        expected = npconv.conv_backward(gyr, xr, wr, **kw, algorithm="reference")
        out = np.prod(config.output_size) * config.batch
        for what, got, want, n in zip(("grad input", "grad weight", "grad bias"), grads,
                                      expected, (red, out, out)):
            assert got.dtype == x.dtype
            assert_close(got, want, reduction=n, err_msg=f"{name} {what}, {config}")


DTYPES = st.sampled_from(["float64", "float32", "complex128"])


@pytest.mark.parametrize("name", FAST)
@given(config=general, dtype=DTYPES, layout=st.sampled_from(LAYOUTS))
def test_every_path_equals_the_reference_or_refuses(name, config, dtype, layout):
    _check_conv(name, config, dtype, layout)


@pytest.mark.parametrize("name", sorted(ACCEPTED))
@given(data=st.data(), layout=st.sampled_from(LAYOUTS))
def test_each_path_on_the_geometries_it_accepts(name, data, layout):
    config = data.draw(ACCEPTED[name], label="config")
    real_only = name in ("winograd", "winograd_jit", "depthwise_jit", "blocked")
    dtypes = ["float64", "float32"] if real_only else ["float64", "float32", "complex64"]
    _check_conv(name, config, data.draw(st.sampled_from(dtypes), label="dtype"), layout)


@pytest.mark.parametrize("name", FAST)
@given(config=conv_configs(ndim=(1, 2, 3), transposed=True, max_channels=4, max_batch=2),
       dtype=st.sampled_from(["float64", "complex128"]), mode=st.sampled_from(PADDING_MODES))
def test_transposed_convolution_on_every_path(name, config, dtype, mode):
    x, w, b, gy = random_conv_arrays(config, dtype, seed=1, grad_output=True)
    kw = dict(config.kwargs(padding_mode=False), padding_mode=mode)
    try:
        expected = npconv.conv_transpose(x, w, b, **kw, algorithm="reference")
    except ValueError:
        return  # the mode's padding limit (reflect < size) does not hold for this output
    red = max(1, config.reduction_size)
    y = _refuses(name, lambda: npconv.conv_transpose(x, w, b, **kw, algorithm=name))
    if y is not None:
        assert_close(y, expected, reduction=red, err_msg=f"{name} transposed, {config}")
    grads = _refuses(name, lambda: npconv.conv_transpose_backward(gy, x, w, **kw,
                                                                  algorithm=name))
    if grads is not None:
        want = npconv.conv_transpose_backward(gy, x, w, **kw, algorithm="reference")
        for got, ref in zip(grads, want):
            assert_close(got, ref, reduction=red * 8, err_msg=f"{name} transposed grads")


@pytest.mark.parametrize("name", FAST)
def test_refusals_name_what_the_path_needs(name):
    """A forced path either computes a 2-d 5x5 stride-2 reflect-padded depthwise layer
    or refuses it with a message that says what it needs."""
    x = np.ones((1, 2, 9, 9))
    w = np.ones((2, 1, 5, 5))
    try:
        npconv.conv(x, w, stride=2, padding=2, groups=2, padding_mode="reflect", algorithm=name)
    except ValueError as exc:
        assert name in ("pointwise", "winograd", "phases", "stacked", "shifted",
                        "depthwise_jit", "blocked", "winograd_jit")
        assert "it needs" in str(exc) and len(str(exc)) > 60
    else:
        assert name in ("auto", "im2col", "direct", "depthwise", "flipped", "fft", "serial")


def test_algorithms_lists_auto_reference_and_every_path():
    assert npconv.ALGORITHMS[:2] == ("auto", "reference")
    for name in npconv.ALGORITHMS[1:]:
        path = get_path(name)
        assert callable(path.forward) and callable(path.backward) and callable(path.requires)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        npconv.conv(np.ones((1, 1, 3)), np.ones((1, 1, 1)), algorithm="fastest")


def test_explain_names_a_path_and_a_reason_for_each_map():
    # wide channels on small images: no compiled direct path, too few 4x4 tiles for the
    # compiled Winograd path (16), the cost model decides
    x = np.zeros((16, 128, 4, 4), np.float32)
    plan = npconv.explain(x, np.zeros((128, 128, 3, 3), np.float32), padding=1)
    text = str(plan)
    assert all(m in text for m in ("forward", "grad_input", "grad_weight", "cost model"))
    for op in ("forward", "grad_input", "grad_weight"):
        assert getattr(plan, op) in npconv.ALGORITHMS[2:]
        assert f"predicted: {getattr(plan, op)} " in plan.reasons[op]
    small = npconv.explain(np.zeros((1, 3, 8, 8)), np.zeros((4, 3, 3, 3)), stride=2)
    assert small.forward == "im2col" and small.reasons["forward"]
    thin = npconv.explain(np.zeros((2, 16, 64, 64), np.float32),
                          np.zeros((16, 16, 3, 3), np.float32), padding=1)
    if depthwise_jit.available():  # compiled direct convolution: ahead of the model
        assert (thin.forward, thin.grad_input, thin.grad_weight) == ("blocked",) * 3
        assert "compiled direct" in thin.reasons["forward"]
    else:
        assert thin.reasons["forward"].startswith("cost model (")
    depthwise = npconv.explain(np.zeros((2, 8, 16, 16)), np.zeros((8, 1, 3, 3)), groups=8)
    if depthwise_jit.available():  # compiled kernels: ahead of the model
        assert depthwise.forward == depthwise.grad_weight == "depthwise_jit"
        assert "numba installed" in depthwise.reasons["forward"]
    else:
        assert depthwise.reasons["forward"].startswith("cost model (")
    volume = npconv.explain(np.zeros((2, 8, 8, 8, 8)), np.zeros((8, 1, 3, 3, 3)), groups=8)
    assert volume.forward != "depthwise_jit"  # 3-d: the model chooses


@pytest.mark.parametrize("name, stride", [
    ("im2col", 1), ("winograd", 1), ("winograd_jit", 1), ("direct", 1), ("phases", 2), ("flipped", 1), ("fft", 1),
    ("shifted", 1), ("shifted", 2)])  # shifted: grad input by its forward, and run by run
def test_a_tiny_workspace_chunks_every_path_without_changing_the_result(name, stride):
    """The workspace limit cuts the work into many chunks (public setter, no monkeypatch)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((12, 4, 33, 35))
    w = rng.standard_normal((5, 4, 3, 3))
    y_ref = npconv.conv(x, w, padding=1, stride=stride, algorithm="reference")
    gy = rng.standard_normal(y_ref.shape)
    g_ref = npconv.conv_backward(gy, x, w, padding=1, stride=stride, algorithm="reference")
    old = npconv.get_workspace_limit()
    try:
        npconv.set_workspace_limit(2 * 2**20)  # a few images' buffers: several chunks
        y = npconv.conv(x, w, padding=1, stride=stride, algorithm=name)
        grads = npconv.conv_backward(gy, x, w, padding=1, stride=stride, algorithm=name)
    finally:
        npconv.set_workspace_limit(old)
    assert_close(y, y_ref, reduction=36)
    for got, want in zip(grads, g_ref):
        assert_close(got, want, reduction=12 * 33 * 35)


@pytest.mark.parametrize("stride", [1, 2])  # grad input by its forward, and by a fold
def test_stacked_cuts_a_batch_whose_columns_outgrow_the_workspace(stride):
    """The stacked path puts a batch in one matmul unless the workspace limit cuts it
    into chunks of images (public setter); chunks never change the result."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((12, 4, 12, 14))
    w = rng.standard_normal((5, 4, 3, 3))
    b = rng.standard_normal(5)
    kw = dict(padding=1, stride=stride)
    y_ref = npconv.conv(x, w, b, **kw, algorithm="reference")
    gy = rng.standard_normal(y_ref.shape)
    g_ref = npconv.conv_backward(gy, x, w, **kw, algorithm="reference")
    old = npconv.get_workspace_limit()
    try:
        npconv.set_workspace_limit(100_000)  # two images' columns (48 KiB each at stride 1)
        y = npconv.conv(x, w, b, **kw, algorithm="stacked")
        grads = npconv.conv_backward(gy, x, w, **kw, algorithm="stacked")
        with pytest.raises(MemoryError, match="workspace limit"):
            npconv.set_workspace_limit(1000)  # less than one image's columns
            npconv.conv(x, w, **kw, algorithm="stacked")
    finally:
        npconv.set_workspace_limit(old)
    assert_close(y, y_ref, reduction=36)
    for got, want in zip(grads, g_ref):
        assert_close(got, want, reduction=12 * 12 * 14)


@given(batch=st.integers(2, 6), groups=st.sampled_from([1, 2]), cg=st.integers(2, 4),
       og=st.integers(1, 4), height=st.integers(8, 12), width=st.integers(8, 13),
       kernel=st.sampled_from([1, 3]), stride=st.sampled_from([1, 2]),
       bias=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]))
def test_stacked_forward_on_threads_equals_the_reference(batch, groups, cg, og, height, width,
                                                         kernel, stride, bias, dtype):
    """The stacked forward's threaded chunks (outputs of at least 64 positions, two or
    more images, threads forced on with ``min_work_bytes=0``; two or more input channels
    a group, as the path needs): one image a chunk from 128 positions, two below, each
    against the reference."""
    rng = np.random.default_rng(batch * 1000 + height * 31 + width)
    # input sized so that the output is height x width whatever the stride
    x = rng.standard_normal((batch, groups * cg, stride * height, stride * width)).astype(dtype)
    w = rng.standard_normal((groups * og, cg, kernel, kernel)).astype(dtype)
    b = rng.standard_normal(groups * og).astype(dtype) if bias else None
    kw = dict(stride=stride, padding=kernel // 2, groups=groups)
    with npconv.num_threads(2, min_work_bytes=0):
        y = npconv.conv(x, w, b, **kw, algorithm="stacked")
    y_ref = npconv.conv(x, w, b, **kw, algorithm="reference")
    assert y.shape[2:] == (height, width)
    assert_close(y, y_ref, reduction=cg * kernel * kernel)
