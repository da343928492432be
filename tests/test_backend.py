"""Backend selection at run time, dispatch on the arrays given, and DLPack interop."""

import numpy as np
import pytest

import npconv
from npconv import backend


def test_default_backend_is_numpy():
    assert npconv.get_backend() == "numpy"
    assert npconv.xp is np


def test_use_backend_restores_previous_backend():
    with npconv.use_backend("numpy") as xp:
        assert xp is np
        assert npconv.get_backend() == "numpy"
    assert npconv.get_backend() == "numpy"


def test_use_backend_restores_after_error():
    with pytest.raises(RuntimeError), npconv.use_backend("numpy"):
        raise RuntimeError("boom")
    assert npconv.get_backend() == "numpy"


@pytest.mark.parametrize("name", ["tensorflow", "", None, 3])
def test_set_backend_rejects_unknown_names(name):
    with pytest.raises(ValueError, match="backend name must be one of 'numpy', 'cupy'"):
        npconv.set_backend(name)
    assert npconv.get_backend() == "numpy"


def test_set_backend_cupy_without_gpu_fails_cleanly(monkeypatch):
    monkeypatch.setattr(backend.CupyBackend, "_cupy", None)
    monkeypatch.setitem(__import__("sys").modules, "cupy", None)
    with pytest.raises(ImportError, match=r"npconv\[cuda12x\]"):
        npconv.set_backend("cupy")
    assert npconv.get_backend() == "numpy"


def test_get_array_module_follows_the_arrays():
    assert npconv.get_array_module(np.zeros(2), None) is np


class FakeCupyArray:
    """Stands in for a CuPy array: the backend recognises CuPy by the type's module."""

    __module__ = "cupy._core.core"
    strides = (8,)


def test_mixing_numpy_and_cupy_arrays_is_a_type_error():
    fake = FakeCupyArray()
    with pytest.raises(TypeError, match="cannot mix NumPy and CuPy arrays"):
        backend.backend_of(np.zeros(2), fake)
    with pytest.raises(TypeError, match="cannot mix NumPy and CuPy arrays"):
        npconv.conv2d(np.zeros((1, 1, 3, 3)), fake)


def test_asarray_passes_numpy_through_and_converts_lists():
    a = np.ones((2, 3))
    assert npconv.asarray(a) is a
    assert npconv.asarray([[1.0, 2.0]]).shape == (1, 2)


def test_asarray_shares_memory_with_torch_cpu_tensors():
    import torch
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    a = npconv.asarray(t)
    assert isinstance(a, np.ndarray) and a.shape == (2, 3)
    t[0, 0] = 42.0
    assert a[0, 0] == 42.0  # no copy was made


def test_asarray_refuses_tensors_that_require_grad():
    import torch
    t = torch.ones(3, requires_grad=True)
    with pytest.raises(TypeError, match="detach"):
        npconv.asarray(t)


def test_functions_accept_torch_tensors_through_asarray():
    import torch
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    y = npconv.conv2d(x, w)
    np.testing.assert_allclose(y, torch.nn.functional.conv2d(x, w).numpy(), rtol=1e-12)
