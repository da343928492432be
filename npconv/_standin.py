"""The stand-in device backend: NumPy arrays that behave like CuPy's, for tests on a CPU.

``npconv.use_backend("standin")`` (or ``NPCONV_BACKEND=standin``) computes on
this module's :class:`ndarray`, a thin wrapper around a host array. npconv then
takes every branch it takes on a GPU (no host threads, device-sized chunks,
writable strided views, ``with x.device`` around a call), and the wrapper
refuses what CuPy refuses, so CI catches code that would break on a GPU:

* implicit conversion to the host: ``numpy.asarray(a)`` and ``a.__array__()``
  raise ``TypeError`` with CuPy's message; ``a.get()`` is the explicit copy;
* NumPy arrays mixed into a call (``a + numpy_array``, ``standin.matmul(a,
  numpy_array)``) raise ``TypeError``; only ``asarray``/``array`` copy host data;
* ``from_dlpack`` of host memory raises ``RuntimeError`` (as ``cupy.from_dlpack``),
  and the arrays report a CUDA DLPack device but export nothing (``BufferError``);
* views made by ``lib.stride_tricks.as_strided`` are writable and that function
  has no ``writeable`` argument (CuPy arrays have no read-only flag).

It also records what would cost on a GPU, for tests to assert on:
:data:`SYNCS` counts device-to-host synchronisations (``bool(a)``, ``float(a)``,
``a.get()``, ``a.item()``, boolean-mask indexing, ``nonzero``/``unique`` and other
functions whose result size depends on the data), and :func:`allow_synchronize` (like
``cupyx.allow_synchronize``) turns them into errors; :data:`MATMUL_COPIES` lists
the ``matmul`` calls in which CuPy would copy an operand or compute into a
temporary (see :func:`matmul_copies`).

This module never imports NumPy itself (only :mod:`npconv.backend` does): the
backend hands it the host module with :func:`bind`. It is a test double, not a
backend for users; results equal NumPy's, only slower.
"""

from __future__ import annotations

import contextlib
import operator
import types
from collections.abc import Callable, Iterator
from typing import Any

_host: Any = None  # the host array module (numpy), set by bind()
#: Device-to-host synchronisations so far (bool/int/float of an array, get, item, tolist).
SYNCS = [0]
#: matmul calls so far (``a @ b`` included).
MATMULS = [0]
#: Array operations so far (functions, ufuncs, operators, copies into slices): about
#: one kernel launch each on a GPU, where a launch costs 5-20 us.
LAUNCHES = [0]
#: One entry per matmul call in which CuPy would copy: (reason, shapes, caller file:line).
MATMUL_COPIES: list[tuple[str, tuple[tuple[int, ...], ...], str]] = []
_sync_allowed = [True]
# CuPy's message for np.asarray(cupy_array) (cupy/_core/core.pyx, __array__).
_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
             "Please use `.get()` to construct a NumPy array explicitly.")
# Functions that accept host data (CuPy copies it to the device).
_FROM_HOST = frozenset({"asarray", "array", "asanyarray"})


def bind(host: Any) -> types.ModuleType:
    """Use ``host`` (numpy) as the storage of every stand-in array; returns this module."""
    global _host
    _host = host
    import sys

    return sys.modules[__name__]


@contextlib.contextmanager
def allow_synchronize(allow: bool) -> Iterator[None]:
    """Like ``cupyx.allow_synchronize``: with ``False``, a device-to-host sync raises."""
    old = _sync_allowed[0]
    _sync_allowed[0] = allow
    try:
        yield
    finally:
        _sync_allowed[0] = old


def _sync() -> None:
    if not _sync_allowed[0]:
        raise RuntimeError("Synchronization disallowed by allow_synchronize(False)")
    SYNCS[0] += 1


class _Device:
    """``a.device``: a context manager, like ``cupy.cuda.Device`` (one device, id 0)."""

    id = 0
    entered = [0]  # how many times a ``with a.device:`` block was entered

    def __enter__(self) -> _Device:
        _Device.entered[0] += 1
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def synchronize(self) -> None:
        return None


DEVICE = _Device()


class _Flags:
    """``a.flags``: CuPy's three flags (no ``writeable``: CuPy arrays have no read-only bit)."""

    def __init__(self, host_flags: Any):
        self.c_contiguous = bool(host_flags.c_contiguous)
        self.f_contiguous = bool(host_flags.f_contiguous)
        self.owndata = bool(host_flags.owndata)


def _unwrap(value: Any) -> Any:
    """Stand-in arrays to their host arrays, in tuples/lists/dicts too; a host array
    mixed in is a TypeError (as in CuPy, which refuses numpy.ndarray arguments)."""
    if type(value) is ndarray:
        return value._a
    if isinstance(value, _host.ndarray):
        raise TypeError(f"Unsupported type {type(value)} (a host array given to the "
                        "stand-in device backend; move it with standin.asarray first)")
    if isinstance(value, (tuple, list)):
        return type(value)(_unwrap(v) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, _Ufunc):
        return value._ufunc
    return value


def _wrap(value: Any) -> Any:
    """Host arrays (and NumPy scalars, as CuPy returns 0-d arrays) to stand-in arrays."""
    if isinstance(value, _host.ndarray):
        return ndarray(value)
    if isinstance(value, _host.generic):
        return ndarray(_host.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _boolean_index(key: Any) -> bool:
    keys = key if isinstance(key, tuple) else (key,)
    return any(type(k) is ndarray and k.dtype.kind == "b" for k in keys)


# Functions whose result size depends on the data: CuPy synchronises to learn it.
_SIZED_BY_DATA = frozenset({"nonzero", "argwhere", "flatnonzero", "unique", "extract",
                            "compress"})


def _call(func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    LAUNCHES[0] += 1
    return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))


class ndarray:  # noqa: N801 - named as cupy.ndarray
    """A device array of the stand-in backend: a host array that CuPy's rules guard."""

    __slots__ = ("_a",)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, data: Any):
        self._a = data

    # what CuPy refuses or does not have
    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(_IMPLICIT)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__array") or name in ("ctypes", "data", "tobytes", "tofile",
                                                   "setflags", "__buffer__"):
            raise AttributeError(f"stand-in device arrays have no host attribute {name!r}")
        attr = getattr(self._a, name)
        if name in _SIZED_BY_DATA:
            _sync()
        if callable(attr):
            return lambda *args, **kwargs: _call(attr, args, kwargs)
        return _wrap(attr)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (2, 0)  # kDLCUDA, device 0: what a CuPy array reports

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        # a CUDA capsule would point at host memory: no consumer may import it
        raise BufferError("the stand-in device exports no DLPack capsule (its memory is "
                          "not on a real device); use .get() for a host copy")

    # metadata
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    T = property(lambda self: ndarray(self._a.T))
    real = property(lambda self: ndarray(self._a.real))
    imag = property(lambda self: ndarray(self._a.imag))
    flags = property(lambda self: _Flags(self._a.flags))
    device = property(lambda self: DEVICE)

    # explicit transfers (device-to-host synchronisations)
    def get(self, stream: Any = None, order: str = "C", out: Any = None) -> Any:
        _sync()
        return _host.array(self._a, order=order)

    def item(self) -> Any:
        _sync()
        return self._a.item()

    def tolist(self) -> Any:
        _sync()
        return self._a.tolist()

    def __bool__(self) -> bool:
        _sync()
        return bool(self._a)

    def __float__(self) -> float:
        _sync()
        return float(self._a)

    def __int__(self) -> int:
        _sync()
        return int(self._a)

    def __complex__(self) -> complex:
        _sync()
        return complex(self._a)

    def __index__(self) -> int:
        _sync()
        return operator.index(self._a)

    # containers
    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Iterator[Any]:
        return (_wrap(row) for row in self._a)

    def __getitem__(self, key: Any) -> Any:
        if _boolean_index(key):
            _sync()  # CuPy reads the mask's count back to size the result
        return _wrap(self._a[_unwrap(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        LAUNCHES[0] += 1
        self._a[_unwrap(key)] = _unwrap(value)

    def __repr__(self) -> str:
        return f"standin.{self._a!r}"

    # NumPy's protocols: dispatch as CuPy does (host arrays among the inputs are refused)
    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        return _call(getattr(ufunc, method), inputs, kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        return _call(func, args, kwargs)


def _binary(name: str) -> Callable[[ndarray, Any], Any]:
    def method(self: ndarray, other: Any) -> Any:
        LAUNCHES[0] += 1
        result = getattr(self._a, name)(_unwrap(other))
        return NotImplemented if result is NotImplemented else _wrap(result)
    method.__name__ = name
    return method


def _inplace(name: str) -> Callable[[ndarray, Any], Any]:
    def method(self: ndarray, other: Any) -> Any:
        LAUNCHES[0] += 1
        getattr(self._a, name)(_unwrap(other))  # in place on the host array
        return self
    method.__name__ = name
    return method


def _unary(name: str) -> Callable[[ndarray], Any]:
    def method(self: ndarray) -> Any:
        return _wrap(getattr(self._a, name)())
    method.__name__ = name
    return method


for _op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or",
            "xor", "lshift", "rshift", "divmod"):
    setattr(ndarray, f"__{_op}__", _binary(f"__{_op}__"))
    setattr(ndarray, f"__r{_op}__", _binary(f"__r{_op}__"))
    if _op != "divmod":
        setattr(ndarray, f"__i{_op}__", _inplace(f"__i{_op}__"))
for _op in ("eq", "ne", "lt", "le", "gt", "ge"):
    setattr(ndarray, f"__{_op}__", _binary(f"__{_op}__"))
for _op in ("neg", "pos", "abs", "invert"):
    setattr(ndarray, f"__{_op}__", _unary(f"__{_op}__"))
setattr(ndarray, "__matmul__", lambda self, other: matmul(self, other))  # noqa: B010


# --------------------------------------------------------------------------- the module


class _Ufunc:
    """A host ufunc on stand-in arrays (``standin.add(a, b)``, ``standin.add.at``)."""

    def __init__(self, ufunc: Any):
        self._ufunc = ufunc

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _call(self._ufunc, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._ufunc, name)
        return (lambda *a, **k: _call(attr, a, k)) if callable(attr) else attr


class _Namespace:
    """A host submodule (``random``, ``fft``, ``linalg``) on stand-in arrays."""

    def __init__(self, module: Any):
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return _lookup(getattr(self._module, name))


class _Proxy:
    """A host object with array-returning methods (``random.default_rng()``)."""

    def __init__(self, obj: Any):
        self._obj = obj

    def __getattr__(self, name: str) -> Any:
        return _lookup(getattr(self._obj, name))


def _lookup(attr: Any) -> Any:
    if getattr(attr, "__name__", "") in _SIZED_BY_DATA:
        return _synced(attr)
    if isinstance(attr, _host.ufunc):
        return _Ufunc(attr)
    if isinstance(attr, types.ModuleType):
        return _Namespace(attr)
    if isinstance(attr, type) or not callable(attr):
        return attr  # dtypes, scalar types, constants: shared with NumPy (as CuPy does)
    return lambda *args, **kwargs: _proxied(_call(attr, args, kwargs))


def _synced(func: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        _sync()
        return _call(func, args, kwargs)
    return call


def _proxied(value: Any) -> Any:
    rng = getattr(_host.random, "Generator", None)
    return _Proxy(value) if rng is not None and isinstance(value, rng) else value


def _from_host(name: str) -> Callable[..., Any]:
    def convert(obj: Any, *args: Any, **kwargs: Any) -> Any:
        if type(obj) is ndarray:
            return ndarray(_host.asarray(getattr(_host, name)(obj._a, *args, **kwargs)))
        # host data is copied to the "device", as by cupy.asarray: no shared memory
        return ndarray(_host.array(_host.asarray(obj, *args, **kwargs), copy=True))
    convert.__name__ = name
    return convert


asarray = _from_host("asarray")
array = _from_host("array")
asanyarray = _from_host("asanyarray")


def from_dlpack(obj: Any, **kwargs: Any) -> ndarray:
    """Stand-in arrays pass through; host memory is refused, as by ``cupy.from_dlpack``."""
    if type(obj) is ndarray:
        return obj
    raise RuntimeError("CuPy is built against CUDA, different from the backend that backs "
                       "the incoming DLPack tensor (the stand-in backend, like CuPy, does "
                       "not import host memory through DLPack: use asarray to copy it)")


class _StrideTricks:
    @staticmethod
    def as_strided(x: ndarray, shape: Any = None, strides: Any = None) -> ndarray:
        """A writable view (CuPy's ``as_strided`` has no ``writeable`` argument)."""
        view = _host.lib.stride_tricks.as_strided(_unwrap(x), shape, strides, writeable=True)
        return ndarray(view)

    @staticmethod
    def sliding_window_view(x: ndarray, *args: Any, **kwargs: Any) -> ndarray:
        return _call(_host.lib.stride_tricks.sliding_window_view, (x,) + args, kwargs)


class _Lib:
    stride_tricks = _StrideTricks()


lib = _Lib()


def matmul_copies(a: Any, b: Any, out: Any = None) -> list[str]:
    """Why ``cupy.matmul(a, b, out=out)`` would copy (cupy/_core/_routines_linalg.pyx):
    an ``out`` that is not C-contiguous (computed into a temporary, then copied);
    with 3 or more dims, an operand that is not C-contiguous (copied) or one
    broadcast over the batch (CuPy 13's gufunc materialises it)."""
    reasons = []
    if out is not None and not out.flags.c_contiguous:
        reasons.append("out is not C-contiguous")
    if max(a.ndim, b.ndim) > 2:
        for name, m in (("a", a), ("b", b)):
            if not m.flags.c_contiguous:
                reasons.append(f"{name} is not C-contiguous")
        if a.shape[:-2] != b.shape[:-2]:
            reasons.append("a batch operand is broadcast")
    return reasons


def matmul(a: ndarray, b: ndarray, out: ndarray | None = None, **kwargs: Any) -> ndarray:
    """``a @ b`` on the host; records in :data:`MATMUL_COPIES` what CuPy would copy."""
    ha, hb, ho = _unwrap(a), _unwrap(b), _unwrap(out)
    MATMULS[0] += 1
    LAUNCHES[0] += 1
    reasons = matmul_copies(ha, hb, ho)
    if reasons:
        import sys

        frame = sys._getframe(1)
        if frame.f_code.co_name == "<lambda>":  # a @ b
            frame = frame.f_back or frame
        where = f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno}"
        MATMUL_COPIES.extend((r, (ha.shape, hb.shape), where) for r in reasons)
    if ho is None:
        return ndarray(_host.asarray(_host.matmul(ha, hb, **kwargs)))
    _host.matmul(ha, hb, out=ho, **kwargs)
    return out  # type: ignore[return-value]


def __getattr__(name: str) -> Any:
    if _host is None:
        raise AttributeError(f"module {__name__!r} is not bound to a host module yet")
    return _lookup(getattr(_host, name))
