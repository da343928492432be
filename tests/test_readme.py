"""The Python example in README.md runs and its gradient is right."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_variant_example_runs_and_its_gradient_is_correct():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    x, w, y, gx = scope["x"], scope["w"], scope["y"], scope["gx"]
    # The forward against a direct evaluation of -||patch - w||^2 at one output pixel.
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    patch = padded[1, :, 2:5, 3:6]
    assert np.isclose(y[1, 2, 2, 3], -((patch - w[2]) ** 2).sum())
    # The gradient of sum(y) against central differences at a few pixels.
    f = scope["npconv"].im2col
    def total(xv):
        cols = f(xv, 3, padding=1)
        wf = w.reshape(len(w), -1)
        return -((cols**2).sum(1)[:, None] - 2 * wf @ cols + (wf**2).sum(1)[None, :, None]).sum()
    for idx in [(0, 0, 0, 0), (1, 2, 4, 5), (0, 1, 7, 7)]:
        e = np.zeros_like(x)
        e[idx] = 1e-6
        numeric = (total(x + e) - total(x - e)) / 2e-6
        assert np.isclose(gx[idx], numeric, rtol=1e-5, atol=1e-6)
