"""npconv: framework-free convolution primitives for NumPy and CuPy.

Convolution written as a tensor product between the weights and a view of
every receptive field (im2col), with hand-derived gradients, for any number
of spatial dimensions. One code path serves NumPy and CuPy; the backend is
chosen with ``NPCONV_BACKEND`` (``numpy`` by default, or ``cupy``).
"""

from typing import Any

from . import backend as _backend
from . import nn
from ._version import __version__
from .backend import asarray, get_array_module, get_backend, set_backend, use_backend
from .conv import (
    conv,
    conv1d,
    conv1d_backward,
    conv2d,
    conv2d_backward,
    conv3d,
    conv3d_backward,
    conv_backward,
    conv_transpose,
    conv_transpose1d,
    conv_transpose1d_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
    conv_transpose3d,
    conv_transpose3d_backward,
    conv_transpose_backward,
)
from .patches import col2im, fold_patches, im2col, patches
from .threads import get_num_threads, set_num_threads
from .workspace import get_workspace_limit, set_workspace_limit

__all__ = [
    "__version__",
    "asarray",
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
    "fold_patches",
    "get_array_module",
    "get_backend",
    "get_num_threads",
    "get_workspace_limit",
    "im2col",
    "nn",
    "patches",
    "set_backend",
    "set_num_threads",
    "set_workspace_limit",
    "use_backend",
    "xp",
]


def __getattr__(name: str) -> Any:
    # ``npconv.xp`` follows the active backend, so it is looked up on each access.
    if name == "xp":
        return _backend.active_module()
    raise AttributeError(f"module 'npconv' has no attribute {name!r}")
