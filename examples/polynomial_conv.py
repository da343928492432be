"""Polynomial-kernel convolution ("kervolution", Wang et al., CVPR 2019).

    y[n, o, p] = (<w_o, v[n, :, :, p]> + c_o) ** d,    v = patches(x)

with an integer degree d >= 1 and an offset c (a scalar or one per output
channel; d = 1, c = 0 is the plain convolution). The response is an
elementwise function of an ordinary convolution z = conv(x, w) + c, so the
backward pass is one line of chain rule followed by the built-in
convolution gradients:

    gz = gy * d * z ** (d - 1),    (gx, gw, gc) = conv_backward(gz, x, w)

(the gradient of the per-channel offset c is conv's bias gradient). Reusing
``npconv.conv`` keeps the batch chunking, groups, padding modes, any rank and
the CuPy backend for free.

Run ``python examples/polynomial_conv.py`` for gradient checks and a timing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _gradcheck import checker_name, gradient_check

import npconv


def _offset(c, weight):
    """c as a per-channel bias vector (O,) of the weight's dtype."""
    return np.broadcast_to(np.asarray(c, dtype=weight.dtype), weight.shape[:1])


def polynomial_conv(x, weight, c=1.0, degree=2, **conv_args):
    """(conv(x, weight) + c) ** degree; ``conv_args`` go to ``npconv.conv``."""
    return npconv.conv(x, weight, _offset(c, weight), **conv_args) ** degree


def polynomial_conv_backward(grad_output, x, weight, c=1.0, degree=2, **conv_args):
    """(grad_x, grad_weight, grad_c) of :func:`polynomial_conv`; grad_c has c's shape."""
    z = npconv.conv(x, weight, _offset(c, weight), **conv_args)  # or cache it in the forward
    grad_z = grad_output * degree * z ** (degree - 1)
    grad_x, grad_w, grad_bias = npconv.conv_backward(grad_z, x, weight, **conv_args)
    grad_c = grad_bias.reshape(np.shape(c)) if np.ndim(c) else grad_bias.sum()
    return grad_x, grad_w, grad_c


CONFIGS = [
    dict(degree=2),
    dict(degree=3, stride=2, padding=1),
    dict(degree=2, padding="same", dilation=2, padding_mode="reflect"),
    dict(degree=3, groups=2, padding=(1, 0), padding_mode="replicate"),
]


def main(batch=2, channels=4, out_channels=4, size=6, kernel=3, seed=0, bench=None):
    """Gradient-check (x, w, c) on small float64 inputs; return the max abs error.

    A failed check raises ``AssertionError``.

    ``bench=(N, C, O, H)`` also times forward + backward on a float32 batch.
    """
    rng = np.random.default_rng(seed)
    worst = 0.0
    for config in CONFIGS:
        groups = config.get("groups", 1)
        x = rng.standard_normal((batch, channels, size, size + 1))
        # a small weight keeps z = <w, v> + c of order one, so z ** d stays tame
        w = 0.3 * rng.standard_normal((out_channels, channels // groups, kernel, kernel - 1))
        c = rng.uniform(0.5, 1.5, out_channels)
        error = gradient_check(
            lambda x_, w_, c_, k=config: polynomial_conv(x_, w_, c_, **k),
            lambda g, x_, w_, c_, k=config: polynomial_conv_backward(g, x_, w_, c_, **k),
            [x, w, c],
        )
        print(f"polynomial_conv {config}: max |numeric - analytic| {error:.1e}")
        worst = max(worst, error)
    # a scalar offset and 1-d / 3-d inputs
    for shape_x, shape_w in [((batch, channels, 9), (out_channels, channels, 3)),
                             ((1, channels, 4, 4, 3), (out_channels, channels, 2, 2, 2))]:
        x, w = rng.standard_normal(shape_x), 0.3 * rng.standard_normal(shape_w)
        error = gradient_check(
            lambda x_, w_, c_: polynomial_conv(x_, w_, c_, degree=3, padding=1),
            lambda g, x_, w_, c_: polynomial_conv_backward(g, x_, w_, c_, degree=3, padding=1),
            [x, w, np.array(0.7)],
        )
        print(f"polynomial_conv {len(shape_w) - 2}-d, scalar c: "
              f"max |numeric - analytic| {error:.1e}")
        worst = max(worst, error)
    if bench:
        n, c_in, o, h = bench
        x = rng.standard_normal((n, c_in, h, h)).astype(np.float32)
        w = (0.1 * rng.standard_normal((o, c_in, 3, 3))).astype(np.float32)
        start = time.perf_counter()
        y = polynomial_conv(x, w, 1.0, 3, padding=1)
        middle = time.perf_counter()
        polynomial_conv_backward(np.ones_like(y), x, w, 1.0, 3, padding=1)
        end = time.perf_counter()
        print(f"polynomial_conv x{x.shape} w{w.shape}: forward {middle - start:.3f} s, "
              f"backward {end - middle:.3f} s")
    print(f"max gradient-check error: {worst:.1e} ({checker_name()}, every entry)")
    return worst


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bench", type=int, nargs=4, default=(32, 32, 64, 32),
                        metavar=("N", "C", "O", "H"), help="timing sizes (0 0 0 0 to skip)")
    args = parser.parse_args()
    # a wrong gradient raises AssertionError (exit status 1)
    main(seed=args.seed, bench=tuple(args.bench) if all(args.bench) else None)
