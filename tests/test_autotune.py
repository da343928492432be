"""Opt-in autotuning: the fastest path is chosen once per problem, results stay equal
to the reference, the cache is bounded and can live on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest

import npconv
from npconv import autotune
from npconv.testing import assert_close


@pytest.fixture
def tuning(tmp_path):
    npconv.set_autotune(True, persist=tmp_path / "tune.json")
    npconv.clear_autotune()
    yield tmp_path / "tune.json"
    npconv.set_autotune(False)
    npconv.clear_autotune()


def _layer(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 16, 20, 20))
    w = rng.standard_normal((16, 16, 3, 3))
    b = rng.standard_normal(16)
    return x, w, b


def test_autotuned_calls_equal_the_reference_and_are_tuned_once(tuning, monkeypatch):
    x, w, b = _layer()
    calls = []
    real = autotune.tune

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(autotune, "tune", counting)
    expected = npconv.conv2d(x, w, b, padding=1, algorithm="reference")
    for _ in range(3):
        assert_close(npconv.conv2d(x, w, b, padding=1), expected, reduction=144)
    gy = np.ones_like(expected)
    want = npconv.conv2d_backward(gy, x, w, padding=1, algorithm="reference")
    for _ in range(2):
        for got, ref in zip(npconv.conv2d_backward(gy, x, w, padding=1), want):
            assert_close(got, ref, reduction=4 * 400)
    assert calls == [("forward",), ("grad_input", "grad_weight")]


def test_explain_shows_what_was_tuned(tuning):
    x, w, b = _layer(1)
    before = npconv.explain(x, w, padding=1)
    assert "autotuned" not in str(before)
    npconv.conv2d(x, w, b, padding=1)
    after = npconv.explain(x, w, padding=1)
    assert after.reasons["forward"].startswith("autotuned")
    assert after.forward in npconv.ALGORITHMS and after.forward != "reference"
    assert "ms" in after.reasons["forward"]


def test_the_cache_file_is_written_and_read_back(tuning):
    x, w, b = _layer(2)
    npconv.conv2d(x, w, b, padding=1)
    data = json.loads(tuning.read_text())
    (table,) = data.values()
    assert len(table) == 1
    npconv.clear_autotune()
    npconv.set_autotune(True, persist=tuning)  # a new session reads the file
    assert "from the cache file" in npconv.explain(x, w, padding=1).reasons["forward"]


def test_the_in_memory_cache_is_bounded(tuning):
    npconv.set_autotune(True, cache_size=2)
    rng = np.random.default_rng(3)
    w = rng.standard_normal((2, 2, 3, 3))
    for size in (9, 10, 11, 12):
        npconv.conv2d(rng.standard_normal((40, 2, size, size)), w)
    assert len(autotune._TUNER.cache) == 2


def test_set_autotune_checks_its_arguments():
    with pytest.raises(TypeError, match="enabled"):
        npconv.set_autotune("yes")
    with pytest.raises(ValueError, match="cache_size"):
        npconv.set_autotune(True, cache_size=0)
    assert npconv.get_autotune() is False
