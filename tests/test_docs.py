"""The Python examples of the docs pages run, in order, page by page.

Blocks that need a GPU (CuPy) are skipped here; they run in tests/test_gpu.py's
spirit only on a machine with one.
"""

import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(p for p in DOCS.glob("*.md") if "```python" in p.read_text())


def python_blocks(page: pathlib.Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_examples_run(page):
    scope: dict = {"__name__": f"docs_{page.stem}"}
    ran = 0
    for block in python_blocks(page):
        if "import cupy" in block:
            continue
        exec(compile(block, str(page), "exec"), scope)
        ran += 1
    assert ran > 0


def fragments(page: pathlib.Path) -> list[str]:
    """Blocks fenced as ``py``: formulas that need the names a page defines in prose."""
    return re.findall(r"^```py\n(.*?)^```", page.read_text(), flags=re.S | re.M)


def test_derivations_formulas_equal_npconv():
    import numpy as np

    import npconv

    rng = np.random.default_rng(0)
    N, C, H, W, O, kh, kw, s, p, d = 2, 3, 7, 6, 4, 3, 2, 2, 1, 1  # noqa: E741 (the docs use O)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((O, C, kh, kw))
    b = rng.standard_normal(O)
    y_ref = npconv.conv2d(x, w, b, stride=s, padding=p, dilation=d)
    gy = rng.standard_normal(y_ref.shape)
    scope = dict(np=np, npconv=npconv, x=x, w=w, b=b, gy=gy, N=N, C=C, H=H, W=W, O=O,
                 kh=kh, kw=kw, s=s, p=p, d=d)
    blocks = fragments(DOCS / "derivations.md")
    for block in blocks[:4]:  # forward, grad weight, grad bias, grad input
        exec(compile(block, "derivations.md", "exec"), scope)
    gx, gw, gb = npconv.conv2d_backward(gy, x, w, stride=s, padding=p, dilation=d)
    np.testing.assert_allclose(scope["y"], y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(scope["grad_w"], gw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(scope["grad_b"], gb, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(scope["grad_x"], gx, rtol=1e-12, atol=1e-12)
