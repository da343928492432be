"""The serial path: im2col in one piece, on one thread.

The columns of the whole batch, one matmul per map (as im2col computes calls
under :data:`npconv.plan.SMALL_CALL_BYTES`), on the calling thread with the
BLAS held at one thread:

    forward      y  = W (g, O/g, C/g*K) @ cols (N, g, C/g*K, L)
    grad weight  gW = sum_n gy (g, O/g, L) @ cols^T (L, C/g*K)
    grad input   gx = fold(W^T (g, C/g*K, O/g) @ gy (N, g, O/g, L))

For layers whose work is too small for threads to pay: row blocks, per-thread
buffers and a multi-threaded BLAS on skinny matrices cost more than they save
there (a 2 x 3 x 64² -> 16 3x3 layer: 0.32 ms this way, 0.70 ms chunked on 2
threads; MobileNetV2's 1x1 projections 2-3x faster, measured). The cost model
chooses it; its columns must fit :data:`MAX_COLUMN_BYTES` and the workspace.
"""

from __future__ import annotations

from typing import Any

from .. import backend, executor, workspace
from ..plan import Problem
from . import im2col
from ._common import empty_grads

# Calls with more columns than this are never computed in one piece: beyond a few
# MiB the chunked paths' threads win anyway (measured on the zoo: ResNet-18's 3x3
# layers, 1-5 MiB of columns, ran 1.5-2x slower serially).
MAX_COLUMN_BYTES = 16 * 2**20


def requires(problem: Problem, op: str) -> str | None:
    """None if the whole batch's columns fit MAX_COLUMN_BYTES."""
    if problem.column_bytes <= MAX_COLUMN_BYTES:
        return None
    return (f"the columns of the whole batch within {MAX_COLUMN_BYTES // 2**20} MiB; this "
            f"call's are {problem.column_bytes / 2**20:.1f} MiB")


def _fits(problem: Problem) -> None:
    limit = workspace.get_workspace_limit()
    if problem.column_bytes > limit:
        raise MemoryError(
            f"the serial path needs {problem.column_bytes / 2**20:.1f} MiB of columns, more "
            f"than the workspace limit of {limit / 2**20:.1f} MiB; raise it with "
            "npconv.set_workspace_limit() or NPCONV_WORKSPACE_MB, or use another algorithm")


def forward(problem: Problem, x: Any, weight: Any, bias: Any) -> Any:
    """y (N, O, *out) = conv(x, weight) + bias in one matmul."""
    _fits(problem)
    with executor.serial():
        return im2col.whole_forward(problem, x, weight, bias)


def backward(problem: Problem, gy: Any, x: Any, weight: Any, need_input: bool,
             need_weight: bool) -> tuple[Any, Any]:
    """(grad input, grad weight), either None when not needed, one matmul each."""
    if problem.batch == 0 or problem.geometry.out_volume == 0:
        xp = backend.get_array_module(gy, weight)
        return empty_grads(problem, xp, need_input, need_weight, tuple(weight.shape))
    _fits(problem)
    with executor.serial():
        return im2col.whole_backward(problem, gy, x, weight, need_input, need_weight)
