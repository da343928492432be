"""Checks on the arrays handed to public functions (dtype, rank, backend)."""

from __future__ import annotations

from typing import Any

from . import backend
from .geometry import as_int

SUPPORTED_KINDS = ("f", "c")
# Data movement (patches, im2col and their adjoints) also takes bool and integer arrays.
DATA_KINDS = ("b", "i", "u", "f", "c")


def as_array(value: Any, name: str) -> Any:
    """``value`` as an ndarray of its own backend (foreign arrays go through ``asarray``)."""
    owner = backend.backend_of(value)
    if owner.owns(value):
        return value
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    try:
        array = backend.asarray(value)
    except TypeError as exc:
        raise TypeError(f"{name}: {exc}") from exc
    if not hasattr(array, "shape") or not hasattr(array, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(value).__name__}")
    return array


def check_float(array: Any, name: str) -> None:
    kind = backend.scalar_kind(array.dtype)
    if kind not in SUPPORTED_KINDS:
        raise TypeError(
            f"{name} must have a floating or complex dtype (float16, float32, float64, "
            f"complex64, complex128), got {array.dtype}"
        )


def check_same_dtype(**arrays: Any) -> None:
    """All non-None arrays share one dtype; otherwise a TypeError naming each."""
    named = [(name, a) for name, a in arrays.items() if a is not None]
    dtypes = {a.dtype for _, a in named}
    if len(dtypes) > 1:
        listing = ", ".join(f"{name} is {a.dtype}" for name, a in named)
        raise TypeError(
            f"arrays must share one dtype ({listing}); cast them explicitly, "
            f"e.g. weight.astype(x.dtype)"
        )


def check_ndim(array: Any, name: str, allowed: tuple[int, ...], meaning: str) -> None:
    if array.ndim not in allowed:
        expected = " or ".join(str(n) for n in allowed)
        raise ValueError(
            f"{name} must be {expected}-dimensional ({meaning}), got shape {tuple(array.shape)}"
        )


def prepare(name: str, value: Any) -> Any:
    """Common entry check: an array of a floating or complex dtype."""
    array = as_array(value, name)
    check_float(array, name)
    return array


def prepare_data(name: str, value: Any) -> Any:
    """Entry check of the data-movement functions: an array of a bool, integer,
    floating or complex dtype (the dtype is kept)."""
    array = as_array(value, name)
    kind = backend.scalar_kind(array.dtype)
    if kind not in DATA_KINDS:
        raise TypeError(
            f"{name} must have a bool, integer, floating or complex dtype, got {array.dtype}"
        )
    return array


def check_groups(groups: object, in_channels: int, out_channels: int) -> int:
    """``groups`` as an int that divides both channel counts, or an error naming it."""
    g = as_int(groups, "groups")
    if g < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    if in_channels % g:
        raise ValueError(f"groups={g} must divide the {in_channels} input channels")
    if out_channels % g:
        raise ValueError(f"groups={g} must divide the {out_channels} output channels")
    return g


def check_layer_dtype(layer: Any, name: str, value: Any, dtype: Any) -> Any:
    """``value`` as an array of the layer's ``dtype``, or a TypeError saying how to fix it."""
    array = as_array(value, name)
    if array.dtype != dtype:
        what = "the input" if name == "x" else name
        rebuild = (f", or build the layer with dtype={str(array.dtype)!r}"
                   if backend.scalar_kind(array.dtype) in ("f", "c") else "")
        raise TypeError(
            f"{name} is {array.dtype}, but {type(layer).__name__} computes in {dtype} (its "
            f"weight's dtype): cast {what}, {name}.astype({str(dtype)!r}){rebuild}"
        )
    return array


class CheckedCache:
    """Results of argument checks, keyed by everything the checks look at (array types,
    shapes, dtypes, the other arguments): a repeated call skips the checks and the shape
    arithmetic, which cost far more than a small call's arithmetic. Bounded: it starts
    over when full."""

    def __init__(self, limit: int = 4096) -> None:
        self.items: dict[Any, Any] = {}
        self.limit = limit

    def get(self, key: Any) -> tuple[Any, Any]:
        """(the cached value or None, the key, or None when it is unhashable)."""
        try:
            return self.items.get(key), key
        except TypeError:  # an unhashable argument (a list): no caching
            return None, None

    def put(self, key: Any, value: Any) -> None:
        if key is None:
            return
        if len(self.items) >= self.limit:
            self.items.clear()
        self.items[key] = value


def array_key(a: Any) -> tuple[Any, ...] | None:
    """What the checks look at of an array argument: its type, shape and dtype."""
    if a is None:
        return None
    return (type(a), getattr(a, "shape", None), getattr(a, "dtype", None))


def check_out(out: Any, like: Any, shape: tuple[int, ...]) -> None:
    """``out`` can take a result of ``shape`` computed from ``like``: an array of the
    same backend and dtype, of that shape, C-contiguous, writeable, sharing no memory
    with ``like``; otherwise an error naming ``out``."""
    owner = backend.backend_of(like)
    if not owner.owns(out):
        raise TypeError(f"out must be a {owner.name} array like x, got {type(out).__name__}")
    if out.dtype != like.dtype:
        raise TypeError(f"out must have x's dtype {like.dtype}, got {out.dtype}")
    if tuple(out.shape) != shape:
        raise ValueError(f"out must have shape {shape}, got {tuple(out.shape)}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if not getattr(out.flags, "writeable", True):  # CuPy arrays are always writeable
        raise ValueError("out is read-only")
    if backend.get_array_module(out).may_share_memory(out, like):
        raise ValueError("out must not share memory with x")
