"""The pointwise path: a 1x1, stride-1, unpadded convolution is a matmul on the input.

The input already is its im2col matrix: per image, x[n] reshaped to
(g, C/g, L) with L = prod(out) = prod(in), so no columns are built at all.

    forward      y[n]  = W (g, O/g, C/g) @ x[n] (g, C/g, L)
    grad weight  gW    = sum_n gy[n] (g, O/g, L) @ x[n]^T (g, L, C/g)
    grad input   gx[n] = W^T (g, C/g, O/g) @ gy[n] (g, O/g, L)

Each map is one matmul over the whole batch (grad weight: over blocks of
images, their products summed in image order), on the calling thread with the
BLAS's own threads, writing straight into the NCHW result. npconv's threads
are not used: these matmuls are long and the BLAS threads them well, while
cutting them into chunks for npconv's threads ran 1.2-1.7x slower (MobileNetV2's
and WaveNet's 1x1 layers, measured). Where the output has at least twice the
input's channels, the bias rides in the forward's matmul: a row of ones under
the input and the bias as an extra weight column cost a copy of the input, and
save a pass over the (larger) output.
"""

from __future__ import annotations

from typing import Any

from .. import backend, scratch, workspace
from ..plan import Problem
from ._common import device_weight_grad, empty_grads, matmul, matmul_tall_temp

# Weight-gradient products of a block of images are summed after their matmul: a block
# holds at most this many bytes of them (one image a block at least).
PARTIAL_BYTES = 2**20


def requires(problem: Problem, op: str) -> str | None:
    """None for a 1x1 kernel with stride 1 and no padding (any op, rank, dtype)."""
    if problem.pointwise:
        return None
    g = problem.geometry
    return (f"a 1x1 kernel (every spatial axis of size 1) with stride 1 and no padding; got "
            f"kernel {g.kernel}, stride {g.stride}, padding {g.pads}, input size {g.in_size} "
            f"and output size {g.out_size}")


# The bias is folded into the matmul when the output has at least this many times the
# input's channels. Folding costs a copy of the input into a fresh buffer (whose pages
# the allocator may have to map again: 1.5 ms for 2 MiB on a 2-core VM, measured); adding
# afterwards costs a pass over the output. (4, 32, 4096) -> (4, O, 4096), forward with
# bias, ms, folded / added: O=32 1.94 / 0.42, O=64 0.68 / 0.87, O=96 0.92 / 1.33,
# O=256 1.84 / 3.08 (OpenBLAS SkylakeX, 2 threads).
BIAS_FOLD_RATIO = 2


def _bias_in_matmul(problem: Problem, itemsize: int) -> bool:
    """Whether to fold the bias into the matmul (see BIAS_FOLD_RATIO), if the input's
    copy fits the workspace limit."""
    copy_bytes = (problem.batch * (problem.in_channels + problem.groups)
                  * problem.geometry.in_volume * itemsize)
    # on a device the fold costs four launches (the weight's concatenation, the
    # input's copy, the row of ones) where the bias addition costs one
    return (problem.host_threads and problem.out_channels >= BIAS_FOLD_RATIO * problem.in_channels
            and copy_bytes <= workspace.get_workspace_limit())


def forward(problem: Problem, x: Any, weight: Any, bias: Any) -> Any:
    """y (N, O, *out) = conv(x, weight) + bias for a 1x1 stride-1 unpadded kernel."""
    xp = backend.get_array_module(x, weight)
    n, c = x.shape[:2]
    o, g = weight.shape[0], problem.groups
    length = problem.geometry.out_volume
    y = xp.empty((n, o) + problem.geometry.out_size, dtype=x.dtype)
    if n == 0 or length == 0:
        return y
    w = weight.reshape(g, o // g, c // g)  # (g, O/g, C/g)
    x_cols = x.reshape(n, g, c // g, length)  # (N, g, C/g, L)
    out = y.reshape(n, g, o // g, length)  # (N, g, O/g, L), a view of y
    if bias is not None and _bias_in_matmul(problem, x.dtype.itemsize):
        w = xp.concatenate([w, bias.reshape(g, o // g, 1)], axis=2)  # (g, O/g, C/g + 1)
        with_ones = scratch.empty(xp, (n, g, c // g + 1, length), x.dtype)
        with_ones[:, :, :-1] = x_cols
        with_ones[:, :, -1] = 1
        x_cols, bias = with_ones, None
    # (g, O/g, C/g) @ (N, g, C/g, L) -> (N, g, O/g, L)
    matmul(xp, w, x_cols, out=out)
    if bias is not None:
        out += bias.reshape(1, g, o // g, 1)
    return y


def _grad_weight(xp: Any, gy4: Any, x4: Any) -> Any:
    """sum_n gy4[n] (g, O/g, L) @ x4[n]^T (g, L, C/g), in blocks of images whose
    products fit PARTIAL_BYTES, summed in image order."""
    n, g, og = gy4.shape[:3]
    cg = x4.shape[2]
    if not backend.on_host(xp):
        return device_weight_grad(xp, gy4, x4.reshape(n, g * cg, x4.shape[3]), 0)
    per_image = g * og * cg * gy4.dtype.itemsize
    block = max(1, min(PARTIAL_BYTES, workspace.get_workspace_limit() // 4) // per_image)
    total = xp.zeros((g, og, cg), dtype=gy4.dtype)
    for start in range(0, n, block):
        stop = min(n, start + block)
        # (b, g, O/g, L) @ (b, g, L, C/g) -> (b, g, O/g, C/g), summed over the block
        parts = matmul_tall_temp(xp, gy4[start:stop], x4[start:stop].swapaxes(-1, -2))
        total += parts.sum(axis=0, out=scratch.empty(xp, total.shape, total.dtype))
    return total


def backward(problem: Problem, gy: Any, x: Any, weight: Any, need_input: bool,
             need_weight: bool) -> tuple[Any, Any]:
    """(grad input (N, C, *in), grad weight (O, C/g, 1, ...)), either None when not
    needed. ``x`` may be None without ``need_weight``."""
    xp = backend.get_array_module(gy, x, weight)
    geometry, g = problem.geometry, problem.groups
    n, o = gy.shape[:2]
    c, length = problem.in_channels, geometry.out_volume
    if n == 0 or length == 0 or not (need_input or need_weight):
        return empty_grads(problem, xp, need_input, need_weight, tuple(weight.shape))
    gy4 = gy.reshape(n, g, o // g, length)  # (N, g, O/g, L)
    gx = gw = None
    if need_input:
        gx = xp.empty((n, c) + geometry.in_size, dtype=gy.dtype)
        w_t = weight.reshape(g, o // g, c // g).swapaxes(1, 2)  # (g, C/g, O/g)
        # (g, C/g, O/g) @ (N, g, O/g, L) -> (N, g, C/g, L), into gx
        matmul(xp, w_t, gy4, out=gx.reshape(n, g, c // g, length))
    if need_weight:
        x4 = x.reshape(n, g, c // g, length)  # (N, g, C/g, L)
        gw = _grad_weight(xp, gy4, x4).reshape(weight.shape)
    return gx, gw
