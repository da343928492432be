"""npconv: framework-free convolution primitives for NumPy and CuPy.

Convolution written as a tensor product between the weights and a view of
every receptive field (im2col), with hand-derived gradients, for any number
of spatial dimensions. One code path serves NumPy and CuPy; the backend is
chosen with ``NPCONV_BACKEND`` (``numpy`` by default, or ``cupy``).

The formulas are stated once in :mod:`npconv.reference`
(``algorithm='reference'``); the fast paths in :mod:`npconv.paths` are chosen
per call by :mod:`npconv.plan` (see :func:`explain`).
"""

import typing as _typing

from . import backend as _backend
from . import nn, reference
from ._version import __version__
from .autotune import clear_autotune, get_autotune, set_autotune
from .backend import asarray, get_array_module, get_backend, set_backend, use_backend
from .conv import conv, conv_backward, conv_transpose, conv_transpose_backward, explain
from .executor import get_min_work_bytes, get_num_threads, num_threads, set_num_threads
from .fixed_rank import (
    conv1d,
    conv1d_backward,
    conv2d,
    conv2d_backward,
    conv3d,
    conv3d_backward,
    conv_transpose1d,
    conv_transpose1d_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
    conv_transpose3d,
    conv_transpose3d_backward,
)
from .patches import col2im, fold_patches, im2col, patches
from .plan import ALGORITHMS
from .pooling import (
    avg_pool,
    avg_pool1d,
    avg_pool1d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    avg_pool3d,
    avg_pool3d_backward,
    avg_pool_backward,
    max_pool,
    max_pool1d,
    max_pool1d_backward,
    max_pool2d,
    max_pool2d_backward,
    max_pool3d,
    max_pool3d_backward,
    max_pool_backward,
)
from .scratch import get_scratch_cache, set_scratch_cache
from .workspace import get_workspace_limit, set_workspace_limit

__all__ = [
    "ALGORITHMS",
    "__version__",
    "asarray",
    "clear_autotune",
    "avg_pool",
    "avg_pool1d",
    "avg_pool1d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "avg_pool3d",
    "avg_pool3d_backward",
    "avg_pool_backward",
    "col2im",
    "conv",
    "conv1d",
    "conv1d_backward",
    "conv2d",
    "conv2d_backward",
    "conv3d",
    "conv3d_backward",
    "conv_backward",
    "conv_transpose",
    "conv_transpose1d",
    "conv_transpose1d_backward",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "conv_transpose3d",
    "conv_transpose3d_backward",
    "conv_transpose_backward",
    "explain",
    "fold_patches",
    "get_array_module",
    "get_autotune",
    "get_backend",
    "get_min_work_bytes",
    "get_num_threads",
    "get_scratch_cache",
    "get_workspace_limit",
    "im2col",
    "max_pool",
    "max_pool1d",
    "max_pool1d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "max_pool3d",
    "max_pool3d_backward",
    "max_pool_backward",
    "nn",
    "num_threads",
    "patches",
    "reference",
    "set_autotune",
    "set_backend",
    "set_num_threads",
    "set_scratch_cache",
    "set_workspace_limit",
    "use_backend",
    "xp",
]


def __getattr__(name: str) -> _typing.Any:
    # ``npconv.xp`` follows the active backend, so it is looked up on each access.
    if name == "xp":
        return _backend.active_module()
    raise AttributeError(f"module 'npconv' has no attribute {name!r}")


def __dir__() -> list[str]:
    # the public API only, not the submodules that importing it loads
    return sorted(__all__)
