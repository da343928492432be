"""``python -m npconv``: convolution as im2col + a tensor product, checked against loops.

A batch of 128 RGB 32x32 float64 images goes through a 3 -> 16, 3x3
convolution (padding 1) three ways:

1. by hand: ``npconv.im2col`` gives every receptive field as a column, one
   ``tensordot`` with the weights gives the output, a reshape folds it to NCHW;
2. with ``npconv.conv2d``;
3. with an independent direct convolution: a Python loop over kernel taps and
   channels of shifted multiply-adds.

The gradients of ``npconv.conv2d_backward`` are checked against the same
direct loops (grad input as shifted adds of weight x grad_output, grad weight
as sums of grad_output x shifted input, grad bias as a sum).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import npconv
from npconv import backend


def direct_conv(x: Any, w: Any, b: Any, padding: int) -> Any:
    """Loop-based reference: y[n, o] = b[o] + sum_{c, i, j} w[o, c, i, j] x[n, c, h + i, w + j]."""
    xp = npconv.get_array_module(x)
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xpad = xp.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho, wo = h + 2 * padding - kh + 1, wd + 2 * padding - kw + 1
    y = xp.zeros((n, o, ho, wo), dtype=x.dtype) + b[None, :, None, None]
    for i in range(kh):
        for j in range(kw):
            for ci in range(c):
                shifted = xpad[:, ci, i : i + ho, j : j + wo]  # (N, Ho, Wo)
                for oi in range(o):
                    y[:, oi] += w[oi, ci, i, j] * shifted
    return y


def direct_backward(gy: Any, x: Any, w: Any, padding: int) -> tuple[Any, Any, Any]:
    """Loop-based gradients of :func:`direct_conv`, each tap and channel pair on its own."""
    xp = npconv.get_array_module(x)
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    ho, wo = gy.shape[2:]
    xpad = xp.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    gxpad = xp.zeros_like(xpad)
    gw = xp.zeros_like(w)
    for i in range(kh):
        for j in range(kw):
            for ci in range(c):
                shifted = xpad[:, ci, i : i + ho, j : j + wo]
                for oi in range(o):
                    gw[oi, ci, i, j] = (gy[:, oi] * shifted).sum()
                    gxpad[:, ci, i : i + ho, j : j + wo] += w[oi, ci, i, j] * gy[:, oi]
    gx = gxpad[:, :, padding : padding + h, padding : padding + wd]
    return gx, gw, gy.sum(axis=(0, 2, 3))


def by_hand(x: Any, w: Any, b: Any, padding: int) -> Any:
    """The motivating example: im2col, a tensor product with the weights, reshape to NCHW."""
    xp = npconv.get_array_module(x)
    n, _, h, wd = x.shape
    o, _, kh, kw = w.shape
    cols = npconv.im2col(x, (kh, kw), padding=padding)  # (N, C*kh*kw, L)
    # (O, C*kh*kw) . (N, C*kh*kw, L) over C*kh*kw -> (O, N, L)
    y = xp.tensordot(w.reshape(o, -1), cols, axes=([1], [1]))
    y = xp.moveaxis(y, 0, 1) + b[None, :, None]  # (N, O, L)
    ho, wo = h + 2 * padding - kh + 1, wd + 2 * padding - kw + 1
    return y.reshape(n, o, ho, wo)


def _timed(func: Callable[[], Any], repeat: int) -> tuple[Any, float]:
    """The result and the best wall time of ``repeat`` calls. On a GPU the device is
    synchronized before each timer read: a call returns once its kernels are queued."""
    best = float("inf")
    result = None
    for _ in range(repeat):
        backend.synchronize()
        start = time.perf_counter()
        result = func()
        backend.synchronize()
        best = min(best, time.perf_counter() - start)
    return result, best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m npconv", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--out-channels", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="timing repeats (best is shown)")
    args = parser.parse_args(argv)

    xp = npconv.xp
    rng = xp.random.default_rng(args.seed)
    n, c, o, s, k, p = args.batch, args.in_channels, args.out_channels, args.size, 3, 1
    x = rng.standard_normal((n, c, s, s))
    w = rng.standard_normal((o, c, k, k)) / (c * k * k) ** 0.5
    b = rng.standard_normal(o)
    gy = rng.standard_normal((n, o, s, s))

    print(f"npconv {npconv.__version__}, backend {npconv.get_backend()}")
    print(f"x {tuple(x.shape)} {x.dtype}, weight {tuple(w.shape)}, bias {tuple(b.shape)}, "
          f"padding {p}")
    cols = npconv.im2col(x, k, padding=p)
    print(f"im2col columns {tuple(cols.shape)}  (N, C*kh*kw, L)")

    ref, t_ref = _timed(lambda: direct_conv(x, w, b, p), 1)
    hand, t_hand = _timed(lambda: by_hand(x, w, b, p), args.repeat)
    fast, t_fast = _timed(lambda: npconv.conv2d(x, w, b, padding=p), args.repeat)
    print(f"output {tuple(ref.shape)}")
    print("forward                          max |error| vs direct   time")
    print(f"  direct loops (reference)       {'-':>22}   {t_ref * 1e3:8.2f} ms")
    print(f"  im2col + tensordot + reshape   {float(abs(hand - ref).max()):22.3e}   "
          f"{t_hand * 1e3:8.2f} ms")
    print(f"  npconv.conv2d                  {float(abs(fast - ref).max()):22.3e}   "
          f"{t_fast * 1e3:8.2f} ms")

    refs, t_refb = _timed(lambda: direct_backward(gy, x, w, p), 1)
    grads, t_back = _timed(lambda: npconv.conv2d_backward(gy, x, w, padding=p), args.repeat)
    print("backward (npconv.conv2d_backward) max |error| vs direct   relative")

    def relative(got: Any, want: Any) -> float:
        return float(abs(got - want).max()) / max(float(abs(want).max()), 1.0)

    worst = max(relative(hand, ref), relative(fast, ref))
    for name, got, want in zip(("grad_input", "grad_weight", "grad_bias"), grads, refs):
        worst = max(worst, relative(got, want))
        print(f"  {name:<12} {tuple(got.shape)!s:<18} {float(abs(got - want).max()):.3e}"
              f"           {relative(got, want):.1e}")
    print(f"  time: direct loops {t_refb * 1e3:.2f} ms, npconv {t_back * 1e3:.2f} ms")
    tolerance = 1e-12
    status = "OK" if worst < tolerance else "MISMATCH"
    print(f"{status}: largest relative error {worst:.1e} (tolerance {tolerance:g})")
    return 0 if worst < tolerance else 1


if __name__ == "__main__":
    raise SystemExit(main())
