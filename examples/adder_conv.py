"""Adder (L1-distance) convolution, as in AdderNet, from ``npconv.patches``.

    y[n, o, p] = -sum_{c, k} | v[n, c, k, p] - w[o, c, k] |,   v = patches(x)

A window that equals the kernel gives the largest response, 0. The backward
pass is derived by hand: with s = sign(v - w),

    dL/dw[o, c, k] =  sum_{n, p} s * gy[n, o, p]
    dL/dv[n, c, k, p] = -sum_o s * gy[n, o, p],    dL/dx = fold_patches(dL/dv)

``fold_patches`` is the adjoint of the ``patches`` call, so stride, dilation,
padding and padding modes need no further thought. AdderNet's paper trains
with "full-precision" gradients instead (``gradient='addernet'``):
dL/dw uses (v - w) in place of s, and dL/dv uses HardTanh(w - v) in place of -s.
Those are not the derivative of the forward, so only the exact ones are
gradient-checked.

Any number of spatial dimensions works (the rank comes from ``weight``).
Memory: one (N, C*prod(k), L) array per output channel at a time.

Run ``python examples/adder_conv.py`` for a gradient check and a timing.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from _gradcheck import checker_name, gradient_check

import npconv


def _columns(x, weight, stride, padding, dilation, padding_mode):
    """The patch view of x, and the same windows as an (N, C*K, L) array."""
    v = npconv.patches(x, weight.shape[2:], stride=stride, padding=padding,
                       dilation=dilation, padding_mode=padding_mode)
    n, c, nd = v.shape[0], v.shape[1], weight.ndim - 2
    return v, v.reshape(n, c * math.prod(weight.shape[2:]), -1), v.shape[2 + nd:]


def adder_conv(x, weight, stride=1, padding=0, dilation=1, padding_mode="zeros"):
    """Negative L1 distance between every window of ``x`` and every kernel.

    x (N, C, *spatial), weight (O, C, *kernel) -> y (N, O, *out).
    """
    _, cols, out = _columns(x, weight, stride, padding, dilation, padding_mode)
    w = weight.reshape(weight.shape[0], -1, 1)  # (O, C*K, 1)
    y = np.stack([-np.abs(cols - w_o).sum(axis=1) for w_o in w], axis=1)  # (N, O, L)
    return y.reshape(y.shape[:2] + tuple(out))


def adder_conv_backward(grad_output, x, weight, stride=1, padding=0, dilation=1,
                        padding_mode="zeros", gradient="exact"):
    """(grad_x, grad_weight) of :func:`adder_conv`.

    ``gradient='exact'`` is the true (sub)gradient; ``'addernet'`` is the
    full-precision / HardTanh variant of Chen et al. (CVPR 2020).
    """
    if gradient not in ("exact", "addernet"):
        raise ValueError(f"gradient must be 'exact' or 'addernet', got {gradient!r}")
    v, cols, _ = _columns(x, weight, stride, padding, dilation, padding_mode)
    o = weight.shape[0]
    w = weight.reshape(o, -1, 1)
    gy = grad_output.reshape(grad_output.shape[0], o, 1, -1)  # (N, O, 1, L)
    grad_w = np.empty(w.shape[:2], dtype=x.dtype)
    grad_cols = np.zeros(cols.shape, dtype=x.dtype)
    for i in range(o):
        diff = cols - w[i]  # (N, C*K, L)
        if gradient == "exact":
            s = np.sign(diff)
            grad_w[i] = (s * gy[:, i]).sum(axis=(0, 2))
            grad_cols -= s * gy[:, i]
        else:
            grad_w[i] = (diff * gy[:, i]).sum(axis=(0, 2))
            grad_cols += np.clip(-diff, -1.0, 1.0) * gy[:, i]
    grad_x = npconv.fold_patches(grad_cols.reshape(v.shape), x.shape[2:], weight.shape[2:],
                                 stride=stride, padding=padding, dilation=dilation,
                                 padding_mode=padding_mode)
    return grad_x, grad_w.reshape(weight.shape)


CONFIGS = [
    dict(),
    dict(stride=2, padding=1),
    dict(padding=(2, 1), dilation=(1, 2), padding_mode="reflect"),
    dict(padding="same", dilation=(2, 1), padding_mode="circular"),
]


def main(batch=2, channels=2, out_channels=3, size=6, kernel=3, seed=0, bench=None):
    """Gradient-check the exact backward on small float64 inputs; return the max abs error.

    A failed check raises ``AssertionError``.

    ``bench=(N, C, O, H)`` also times forward + backward on a float32 batch.
    """
    rng = np.random.default_rng(seed)
    worst = 0.0
    for config in CONFIGS:
        x = rng.standard_normal((batch, channels, size, size + 1))
        w = rng.standard_normal((out_channels, channels, kernel, kernel - 1))
        error = gradient_check(
            lambda x_, w_, c=config: adder_conv(x_, w_, **c),
            lambda g, x_, w_, c=config: adder_conv_backward(g, x_, w_, **c),
            [x, w],
        )
        print(f"adder_conv {config or 'defaults'}: max |numeric - analytic| {error:.1e}")
        worst = max(worst, error)
    # 1-d and 3-d: the same code, the rank comes from the weight
    for shape_x, shape_w in [((batch, channels, 9), (out_channels, channels, 3)),
                             ((1, channels, 4, 4, 3), (out_channels, channels, 2, 2, 2))]:
        x, w = rng.standard_normal(shape_x), rng.standard_normal(shape_w)
        error = gradient_check(lambda x_, w_: adder_conv(x_, w_, padding=1),
                               lambda g, x_, w_: adder_conv_backward(g, x_, w_, padding=1),
                               [x, w])
        print(f"adder_conv {len(shape_w) - 2}-d: max |numeric - analytic| {error:.1e}")
        worst = max(worst, error)
    if bench:
        n, c, o, h = bench
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        w = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
        start = time.perf_counter()
        y = adder_conv(x, w, padding=1)
        middle = time.perf_counter()
        adder_conv_backward(np.ones_like(y), x, w, padding=1, gradient="addernet")
        end = time.perf_counter()
        print(f"adder_conv x{x.shape} w{w.shape}: forward {middle - start:.3f} s, "
              f"backward {end - middle:.3f} s")
    print(f"max gradient-check error: {worst:.1e} ({checker_name()}, every entry)")
    return worst


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bench", type=int, nargs=4, default=(16, 16, 32, 32),
                        metavar=("N", "C", "O", "H"), help="timing sizes (0 0 0 0 to skip)")
    args = parser.parse_args()
    # a wrong gradient raises AssertionError (exit status 1)
    main(batch=2, channels=3, out_channels=4, size=7, seed=args.seed,
         bench=tuple(args.bench) if all(args.bench) else None)
