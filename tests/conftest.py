"""Shared test configuration: Hypothesis profiles, fixed seeds and the GPU skip helper.

Profiles (choose with ``HYPOTHESIS_PROFILE``; default ``ci`` when ``CI`` is set,
else ``dev``):

* ``ci``: Hypothesis' built-in ``ci`` profile (derandomized, no database,
  ``print_blob``) with 50 examples per test and no deadline.
* ``dev``: 100 examples, no deadline, derandomized.
* ``thorough``: 2000 examples, no deadline, derandomized; minutes per test.

Every profile is derandomized, so a run is reproducible; pass
``--hypothesis-seed=N`` together with ``HYPOTHESIS_PROFILE=explore`` to look at
fresh examples.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,  # torch's first calls (and the 2-core CI machine) are slow
    "suppress_health_check": (HealthCheck.too_slow, HealthCheck.data_too_large),
}

settings.register_profile(
    "ci", parent=settings.get_profile("ci"), max_examples=50, derandomize=True, **_COMMON
)
settings.register_profile("dev", max_examples=100, derandomize=True, **_COMMON)
settings.register_profile(
    "thorough", max_examples=2000, derandomize=True, database=None, **_COMMON
)
settings.register_profile("explore", max_examples=200, derandomize=False, **_COMMON)

try:
    import torch
except ImportError:  # the torch comparisons then fail at import (torch is required)
    torch = None
else:
    # One thread: torch's two-thread path of the slow (transposed, complex, float64)
    # convolution kernels idles ~0.1 s per call on a 2-core machine, and the tiny
    # arrays of these tests gain nothing from threads.
    torch.set_num_threads(1)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
settings.load_profile(PROFILE)


def pytest_report_header(config: pytest.Config) -> str:
    current = settings.default
    return f"hypothesis profile: {PROFILE!r} (max_examples={current.max_examples})"


@pytest.fixture(autouse=True)
def _fixed_seeds():
    """Seed the global RNGs that a test might touch, and restore the numpy backend."""
    import npconv

    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 (legacy global state, for code that still uses it)
    if torch is not None:
        torch.manual_seed(0)
    backend = npconv.get_backend()
    yield
    npconv.set_backend(backend)


@pytest.fixture
def restore_limit():
    """Restore the workspace limit a test sets (npconv.set_workspace_limit)."""
    import npconv

    old = npconv.get_workspace_limit()
    yield
    npconv.set_workspace_limit(old)


def cupy_or_skip():
    """Return the ``cupy`` module, or skip the test without CuPy or a usable GPU."""
    cupy = pytest.importorskip("cupy")
    try:
        available = bool(cupy.is_available())
    except Exception:  # a broken CUDA install must skip, not error
        available = False
    if not available:
        pytest.skip("CuPy is installed but no CUDA device is available")
    return cupy


@pytest.fixture(scope="session")
def cupy():
    """The ``cupy`` module (tests using it are skipped without CuPy and a GPU)."""
    return cupy_or_skip()


@pytest.fixture(scope="session")
def torch_cuda():
    """torch if it can run on CUDA, else skip."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    return torch
