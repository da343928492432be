"""Array backends: the only module of npconv that imports NumPy or CuPy.

Every other module asks this one for an array module (``xp``) and calls
``xp.zeros``, ``xp.matmul`` and so on, so one code path serves NumPy and CuPy.
The backend of a call is decided by the arrays it is given (a CuPy array is
computed on CuPy); the *active* backend, chosen with ``NPCONV_BACKEND`` or
:func:`set_backend`, is used only to allocate new arrays (``npconv.xp``) and to
convert foreign inputs (:func:`asarray`).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy

BACKENDS = ("numpy", "cupy")


class Backend:
    """One array library: how to import it and what its arrays can do."""

    name = ""
    # Whether npconv's own elementwise loops gain from host threads (not on a GPU).
    host_threads = False
    # Whether arrays live on a device (a GPU): calls then run under ``with x.device``,
    # in device-sized chunks, with contiguous matmul targets.
    device = False

    def module(self) -> ModuleType:
        raise NotImplementedError

    def owns(self, array: Any) -> bool:
        """True if ``array`` is an ndarray of this backend (checked without importing it)."""
        raise NotImplementedError

    def as_strided(self, x: Any, shape: tuple[int, ...], strides: tuple[int, ...]) -> Any:
        raise NotImplementedError

    def from_dlpack(self, obj: Any) -> Any:
        raise NotImplementedError

    def device_context(self, array: Any) -> contextlib.AbstractContextManager[Any]:
        """A context manager that makes ``array``'s device current (a no-op on the host)."""
        return contextlib.nullcontext()

    def synchronize(self) -> None:
        """Wait for the work queued on the current device (a no-op on the host)."""


class NumpyBackend(Backend):
    name = "numpy"
    host_threads = True

    def module(self) -> ModuleType:
        return numpy

    def owns(self, array: Any) -> bool:
        return isinstance(array, numpy.ndarray)

    def as_strided(self, x: Any, shape: tuple[int, ...], strides: tuple[int, ...]) -> Any:
        # The ndarray constructor over x's buffer makes the same view in ~1.5 us;
        # as_strided's array-interface round trip took ~10 us (measured), which
        # dominated small calls. NumPy refuses (ValueError) a buffer that is not
        # contiguous and a view that leaves the buffer from its first element on, as
        # views stepping backwards (negative strides) do; those take as_strided.
        try:
            view = numpy.ndarray(shape, x.dtype, x, 0, strides)
        except ValueError:
            return numpy.lib.stride_tricks.as_strided(x, shape, strides, writeable=False)
        view.setflags(write=False)  # half the time of flags.writeable = False
        return view

    def from_dlpack(self, obj: Any) -> Any:
        return numpy.from_dlpack(obj)


class DeviceBackend(Backend):
    """What CuPy and the test stand-in share: no host threads, writable strided views
    (CuPy arrays have no read-only flag), host arrays copied in by ``asarray``, and
    calls run under ``with x.device`` (``cupy.cuda.Device`` is a context manager)."""

    device = True

    def as_strided(self, x: Any, shape: tuple[int, ...], strides: tuple[int, ...]) -> Any:
        # CuPy arrays carry no read-only flag, so the view is writable there.
        return self.module().lib.stride_tricks.as_strided(x, shape, strides)

    def from_dlpack(self, obj: Any) -> Any:
        module = self.module()
        device = getattr(obj, "__dlpack_device__", None)
        # DLPack device type 1 is the CPU: cupy.from_dlpack refuses host memory, so
        # host arrays (NumPy, CPU torch tensors) are copied to the GPU instead.
        if device is not None and device()[0] == 1:
            return module.asarray(numpy.from_dlpack(obj))
        return module.from_dlpack(obj)

    def device_context(self, array: Any) -> contextlib.AbstractContextManager[Any]:
        found: Any = getattr(array, "device", None)
        return found if hasattr(found, "__enter__") else contextlib.nullcontext()


class CupyBackend(DeviceBackend):
    name = "cupy"
    _cupy: ModuleType | None = None

    def module(self) -> ModuleType:
        if self._cupy is None:
            try:
                cupy = importlib.import_module("cupy")
            except ImportError as exc:
                raise ImportError(
                    "the 'cupy' backend (NPCONV_BACKEND=cupy) needs CuPy: install it with "
                    "`pip install npconv[cuda12x]` (or [cuda13x] for CUDA 13), or use NumPy "
                    "by unsetting it (`unset NPCONV_BACKEND`, or NPCONV_BACKEND=numpy)"
                ) from exc
            if not cupy.is_available():
                raise RuntimeError(
                    "the 'cupy' backend (NPCONV_BACKEND=cupy) needs a usable CUDA GPU, but "
                    "cupy.is_available() is False on this machine; unset NPCONV_BACKEND "
                    "(or set NPCONV_BACKEND=numpy) to compute on the CPU"
                )
            CupyBackend._cupy = cupy
        return self._cupy  # type: ignore[return-value]

    def owns(self, array: Any) -> bool:
        # Look at the type's module instead of importing CuPy: a NumPy-only
        # session must never pay for (or fail on) a CuPy import.
        return type(array).__module__.split(".")[0] == "cupy" and hasattr(array, "strides")

    def synchronize(self) -> None:
        self.module().cuda.get_current_stream().synchronize()


class StandinBackend(DeviceBackend):
    """For tests only: NumPy-backed arrays that take every device branch of npconv and
    refuse what CuPy refuses (see :mod:`npconv._standin`). Selected only by name."""

    name = "standin"

    def module(self) -> ModuleType:
        from . import _standin

        return _standin.bind(numpy)

    def owns(self, array: Any) -> bool:
        return type(array).__module__ == "npconv._standin" and hasattr(array, "strides")


# 'standin' is a test double (npconv._standin); BACKENDS lists the backends for users.
_REGISTRY: dict[str, Backend] = {"numpy": NumpyBackend(), "cupy": CupyBackend(),
                                 "standin": StandinBackend()}


def _lookup(name: Any, source: str) -> Backend:
    if not isinstance(name, str) or name.strip().lower() not in _REGISTRY:
        raise ValueError(
            f"{source} must be one of {', '.join(repr(b) for b in BACKENDS)}, got {name!r}"
        )
    backend = _REGISTRY[name.strip().lower()]
    backend.module()  # fail now, with an install hint, rather than at the first call
    return backend


def _from_environment() -> Backend:
    value = os.environ.get("NPCONV_BACKEND", "")
    return _lookup(value or "numpy", "NPCONV_BACKEND")


_default: Backend = _from_environment()
# use_backend() is per context (thread or asyncio task); set_backend() changes the default.
_context: contextvars.ContextVar[Backend | None] = contextvars.ContextVar(
    "npconv_backend", default=None)


def _active() -> Backend:
    return _context.get() or _default


def get_backend() -> str:
    """Name of the active backend, ``'numpy'`` or ``'cupy'``.

    Examples
    --------
    >>> import npconv
    >>> npconv.get_backend()
    'numpy'
    """
    return _active().name


def set_backend(name: str) -> None:
    """Make ``name`` (``'numpy'`` or ``'cupy'``) the active backend.

    The active backend decides where new arrays are allocated (``npconv.xp``)
    and where :func:`asarray` puts foreign arrays. Functions given NumPy or
    CuPy arrays always compute with the library that owns them.

    Raises
    ------
    ValueError
        If ``name`` is not a known backend.
    ImportError, RuntimeError
        If ``name`` is ``'cupy'`` and CuPy or a GPU is missing.

    Examples
    --------
    >>> import npconv
    >>> npconv.set_backend("numpy")
    >>> npconv.xp.__name__
    'numpy'
    """
    global _default
    _default = _lookup(name, "backend name")
    _context.set(None)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[ModuleType]:
    """Context manager that activates a backend and restores the previous one.

    Yields the backend's array module. The choice is local to the current
    context (thread or asyncio task): other threads keep their backend.

    Examples
    --------
    >>> import npconv
    >>> with npconv.use_backend("numpy") as xp:
    ...     x = xp.ones((1, 1, 3, 3))
    >>> type(x).__module__
    'numpy'
    """
    token = _context.set(_lookup(name, "backend name"))
    try:
        yield _active().module()
    finally:
        _context.reset(token)


def active_module() -> ModuleType:
    """The active backend's array module (``numpy`` or ``cupy``)."""
    return _active().module()


def backend_of(*arrays: Any) -> Backend:
    """The backend owning ``arrays`` (``None`` entries are skipped).

    Raises ``TypeError`` if NumPy and CuPy arrays are mixed. Non-array inputs
    leave the choice to the active backend.
    """
    found: Backend | None = None
    for array in arrays:
        if array is None:
            continue
        owner = _OWNERS.get(type(array), _UNSEEN)  # inlined: small calls ask this often
        if owner is _UNSEEN:
            owner = _owner_of(type(array), array)
        if owner is not None:
            if found is not None and found is not owner:
                raise TypeError(
                    "cannot mix NumPy and CuPy arrays in one call; move them to one "
                    "backend first (npconv.asarray converts through DLPack)"
                )
            found = owner
    return found if found is not None else _active()


# The backend of each array type seen so far: a dict lookup instead of asking every
# backend on every call (small calls ask this a few times each).
_OWNERS: dict[type, Backend | None] = {}
_UNSEEN: Any = object()


def _owner_of(kind: type, array: Any) -> Backend | None:
    try:
        return _OWNERS[kind]
    except KeyError:
        pass
    owner = next((b for b in _REGISTRY.values() if b.owns(array)), None)
    if owner is not None or kind in (list, tuple, int, float, complex):
        _OWNERS[kind] = owner
    return owner


def get_array_module(*arrays: Any) -> ModuleType:
    """Array module (``numpy`` or ``cupy``) that computes on ``arrays``.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> npconv.get_array_module(np.zeros(3)).__name__
    'numpy'
    """
    return backend_of(*arrays).module()


def device_of(*arrays: Any) -> contextlib.AbstractContextManager[Any]:
    """A context manager making the device of ``arrays`` current, so that scratch
    buffers are allocated there (``with x.device`` on CuPy); a no-op on NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> from npconv import backend
    >>> with backend.device_of(np.zeros(3)):
    ...     pass
    """
    first = next((a for a in arrays if a is not None), None)
    return backend_of(*arrays).device_context(first)


def as_strided_view(x: Any, shape: tuple[int, ...], strides: tuple[int, ...]) -> Any:
    """Zero-copy view of ``x`` with the given shape and byte strides (read-only on NumPy)."""
    return backend_of(x).as_strided(x, tuple(shape), tuple(strides))


def as_strided_target(x: Any, shape: tuple[int, ...], strides: tuple[int, ...]) -> Any:
    """A writable strided view of ``x``, for npconv's own scratch buffers only: the
    caller guarantees that no two elements of the view share memory (an in-place
    ufunc through overlapping elements would lose updates)."""
    module = backend_of(x).module()
    return module.lib.stride_tricks.as_strided(x, tuple(shape), tuple(strides))


def asarray(obj: Any) -> Any:
    """Bring an array into the active backend, without a copy where possible.

    NumPy and CuPy arrays of the active backend are returned as they are.
    Anything that speaks DLPack (a torch tensor, a CuPy array, a JAX array)
    is imported through DLPack, which shares memory; other array-likes
    (lists, objects with ``__array__``) are converted with ``xp.asarray``.

    Raises
    ------
    TypeError
        If the object cannot be shared, e.g. a torch tensor that requires grad
        or a GPU array while the active backend is NumPy.

    Examples
    --------
    >>> import npconv
    >>> npconv.asarray([[1.0, 2.0]]).shape
    (1, 2)
    """
    active = _active()
    if active.owns(obj):
        return obj
    if hasattr(obj, "__dlpack__"):
        try:
            return active.from_dlpack(obj)
        except (BufferError, RuntimeError, TypeError, ValueError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TypeError(
                f"asarray: cannot share a {type(obj).__module__}.{type(obj).__name__} with the "
                f"{active.name} backend through DLPack ({detail}); detach it from autograd "
                f"and move it to the backend's device first (e.g. tensor.detach().cpu() "
                f"for NumPy)"
            ) from exc
    return active.module().asarray(obj)


def synchronize(*arrays: Any) -> None:
    """Wait until the device of ``arrays`` (or of the active backend) has finished the
    work queued on its current stream: GPU calls return before they compute, so a
    timer read without this measures launches. A no-op on NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> from npconv import backend
    >>> backend.synchronize(np.zeros(3))
    """
    backend_of(*arrays).synchronize()


def on_host(xp: Any) -> bool:
    """Whether ``xp`` is NumPy (a host module): device branches of the paths test this."""
    return xp is numpy


def scalar_kind(dtype: Any) -> str:
    """NumPy's kind code of a dtype ('f' float, 'c' complex, 'i'/'u' int, 'b' bool)."""
    return dtype.kind if isinstance(dtype, numpy.dtype) else numpy.dtype(dtype).kind


def numpy_dtype(dtype: Any) -> Any:
    """A dtype specifier turned into a ``numpy.dtype`` (CuPy uses NumPy's dtypes)."""
    return numpy.dtype(dtype)
