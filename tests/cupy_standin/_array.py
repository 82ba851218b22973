"""``cupy.ndarray``: a device array whose data happen to be a private NumPy array.

The class is not a NumPy subclass and has exactly the attributes of CuPy's (``cupy/_core/
core.pyx``); its ``__module__`` is ``"cupy"``, so ``type(x).__module__.split(".")[0] ==
"cupy"`` (usidgpu's ``is_cupy_array``) holds. What it imitates, and why:

* ``__array__`` raises CuPy's TypeError: ``np.asarray(x)``, ``np.array(x)``, ``float(np.sum(x))``
  paths that would silently copy from the GPU, h5py writes ... fail as on a GPU;
* NumPy ufuncs and functions called on device arrays dispatch to the stand-in (NEP 13/18:
  ``__array_ufunc__``, ``__array_function__``), which refuses NumPy operands, so mixing a host
  array into device arithmetic fails from either side;
* scalar conversions (``float``, ``int``, ``complex``, ``bool``, ``item``, ``tolist``,
  ``repr``/``str``/``format``) are allowed but are counted device → host transfers and host waits;
* reductions and element indexing give 0-d device arrays, never NumPy scalars;
* views share memory (and ``base`` names the owner), in-place operators write through views;
* no ``__index__`` (``range(n_dev)`` fails), no ``__contains__`` (``v in x`` iterates and
  converts element by element, as CuPy does), unhashable.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from . import _config, _convert, _counters, _indexing, _streams, _ufuncs
from ._poison import poison

_IMPLICIT = (
    "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array explicitly."
)


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return _convert.call(fn, args, kwargs)


def _standin(name: str) -> Any:
    """A function of the stand-in ``cupy`` namespace (its ufuncs and wrappers)."""
    from . import _functions

    return _functions.lookup("cupy", name)


class Flags:
    """``ndarray.flags``: ``c_contiguous``, ``f_contiguous``, ``owndata`` (read-only)."""

    def __init__(self, c_contiguous: bool, f_contiguous: bool, owndata: bool):
        self.c_contiguous, self.f_contiguous, self.owndata = c_contiguous, f_contiguous, owndata

    def __getitem__(self, name: str) -> bool:
        key = {"C_CONTIGUOUS": "c_contiguous", "F_CONTIGUOUS": "f_contiguous", "OWNDATA": "owndata"}.get(name)
        if key is None:
            raise KeyError(f"{name} is not defined for cupy.ndarray.flags")
        return getattr(self, key)

    def __repr__(self) -> str:
        return "\n".join(f"  {k.upper()} : {getattr(self, k)}" for k in ("c_contiguous", "f_contiguous", "owndata"))


class MemoryPointer:
    """``x.data``: where a device array's data start (``ptr``), on which device."""

    def __init__(self, owner: np.ndarray, offset: int, device_id: int):
        self._owner, self._offset, self.device_id = owner, offset, device_id

    @property
    def ptr(self) -> int:
        return self._owner.ctypes.data + self._offset if self._owner.size else 0

    @property
    def device(self) -> Any:
        from .cuda import Device

        return Device(self.device_id)

    def __int__(self) -> int:
        return self.ptr

    def __add__(self, offset: int) -> MemoryPointer:
        return MemoryPointer(self._owner, self._offset + int(offset), self.device_id)

    def __repr__(self) -> str:
        return f"<MemoryPointer {self.ptr:#x} (device {self.device_id})>"


MemoryPointer.__module__ = "cupy.cuda.memory"


def _binop(ufunc_name: str):
    np_ufunc = getattr(np, ufunc_name)

    def op(self: ndarray, other: Any) -> Any:
        # CuPy: a device operand goes to the ufunc; otherwise NumPy's ufunc is called, which
        # hands back to ``__array_ufunc__`` (core.pyx __add__ etc.)
        if type(other) is ndarray:
            return _standin(ufunc_name)(self, other)
        if _should_use_rop(self, other):
            return NotImplemented
        return np_ufunc(self, other)

    def rop(self: ndarray, other: Any) -> Any:
        if _should_use_rop(self, other):
            return NotImplemented
        return np_ufunc(other, self)

    def iop(self: ndarray, other: Any) -> Any:
        return _standin(ufunc_name)(self, other, out=self)

    return op, rop, iop


_NOT_FOUND = object()


def _should_use_rop(x: Any, y: Any) -> bool:
    y_ufunc = getattr(y, "__array_ufunc__", _NOT_FOUND)
    if y_ufunc is not _NOT_FOUND:
        return y_ufunc is None
    return getattr(x, "__array_priority__", 0) < getattr(y, "__array_priority__", 0)


class ndarray:
    """``cupy.ndarray(shape, dtype=float, memptr=None, strides=None, order='C')``.

    Without ``memptr`` the new array's memory is uninitialized (filled with garbage, see
    ``_poison``); with ``memptr=other.data`` (and ``strides``) it is a view of another array.
    """

    __slots__ = ("_a", "_base", "_device", "__weakref__")
    __array_priority__ = 100
    __hash__ = None  # type: ignore[assignment]

    def __init__(
        self, shape: Any, dtype: Any = float, memptr: MemoryPointer | None = None, strides: Any = None, order: str = "C"
    ):
        dt = _convert.check_dtype(dtype)
        shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
        if memptr is None:
            a = np.empty(shape, dtype=dt, order=order)
            if _config.CONFIG.poison_empty:
                poison(a)
        else:
            a = np.ndarray(shape, dtype=dt, buffer=memptr._owner, offset=memptr._offset, strides=strides, order=order)
        _convert.adopt(self, a)

    # -- attributes ---------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return self._a.shape

    @shape.setter
    def shape(self, newshape: Any) -> None:
        self._a = self._a.reshape(newshape, copy=False)

    @property
    def ndim(self) -> int:
        return self._a.ndim

    @property
    def size(self) -> int:
        return self._a.size

    @property
    def dtype(self) -> np.dtype:
        return self._a.dtype

    @property
    def itemsize(self) -> int:
        return self._a.itemsize

    @property
    def nbytes(self) -> int:
        return self._a.nbytes

    @property
    def strides(self) -> tuple[int, ...]:
        return self._a.strides

    @property
    def flags(self) -> Flags:
        f = self._a.flags
        return Flags(bool(f.c_contiguous), bool(f.f_contiguous), self._base is None)

    @property
    def base(self) -> ndarray | None:
        return self._base

    @property
    def data(self) -> MemoryPointer:
        root = _convert.root_of(self._a)
        offset = self._a.ctypes.data - root.ctypes.data if self._a.size and root.size else 0
        return MemoryPointer(root, offset, self._device)

    @property
    def device(self) -> Any:
        from .cuda import Device

        return Device(self._device)

    @property
    def T(self) -> ndarray:
        return self if self.ndim < 2 else _convert.wrap(self._a.T)

    @property
    def mT(self) -> ndarray:
        if self.ndim < 2:
            raise ValueError("matrix transpose with ndim < 2 is undefined")
        return self.swapaxes(-1, -2)

    @property
    def real(self) -> ndarray:
        return _convert.wrap(self._a.real) if self.dtype.kind == "c" else self

    @real.setter
    def real(self, value: Any) -> None:
        _indexing.setitem(self.real, Ellipsis, value)

    @property
    def imag(self) -> ndarray:
        if self.dtype.kind == "c":
            return _convert.wrap(self._a.imag)
        return _convert.wrap(np.zeros_like(self._a))

    @imag.setter
    def imag(self, value: Any) -> None:
        if self.dtype.kind != "c":
            raise TypeError("cupy.ndarray does not have imaginary part to set")
        _indexing.setitem(self.imag, Ellipsis, value)

    @property
    def __cuda_array_interface__(self) -> dict:
        ptr = _streams.get_current_stream_ptr()
        return {
            "shape": self.shape,
            "typestr": self.dtype.str,
            "descr": self.dtype.descr,
            "stream": ptr if ptr != 0 else 1,  # CAI v3: 1 is the legacy default stream
            "version": 3,
            "strides": None if self._a.flags.c_contiguous else self.strides,
            "data": (self.data.ptr if self.size else 0, False),
        }

    @property
    def flat(self) -> Any:
        raise NotImplementedError("cupy_standin does not imitate cupy.ndarray.flat (cupy.flatiter)")

    @property
    def cstruct(self) -> Any:
        raise NotImplementedError("cupy_standin does not imitate cupy.ndarray.cstruct")

    def mdspan(self, *, index_type: Any, allow_unsafe: bool = False) -> Any:
        raise NotImplementedError("cupy_standin does not imitate cupy.ndarray.mdspan")

    # -- device <-> host ----------------------------------------------------------------------

    def get(
        self, stream: Any = None, order: str = "C", out: np.ndarray | None = None, blocking: bool = True
    ) -> np.ndarray:
        """Copy to host memory: a device → host transfer and (``blocking``) a host wait."""
        _streams.compute(stream)
        if out is not None:
            if not isinstance(out, np.ndarray):
                raise TypeError("Only numpy.ndarray can be obtained fromcupy.ndarray")
            if self.dtype != out.dtype:
                raise TypeError(f"{out.dtype} array cannot be obtained from {self.dtype} array")
            if self.shape != out.shape:
                raise ValueError(f"Shape mismatch. Expected shape: {self.shape}, actual shape: {out.shape}")
            if not (out.flags.c_contiguous or out.flags.f_contiguous):
                raise RuntimeError("`out` cannot be specified when copying to non-contiguous ndarray")
            self._transfer_out("get(out=...)", blocking)
            np.copyto(out, self._a)
            return out
        if self.size == 0:
            return np.ndarray(self.shape, dtype=self.dtype)
        o = order.upper()
        if o == "A":
            o = "F" if self._a.flags.f_contiguous else "C"
        if o not in ("C", "F"):
            raise ValueError(f"unsupported order: {order}")
        self._transfer_out("get()", blocking)
        return np.array(self._a, order=o, copy=True)

    def _transfer_out(self, what: str, blocking: bool = True) -> None:
        if blocking:
            _counters.declare_synchronize(what)
        _counters.record("d2h", f"{what} {self.shape} {self.dtype}")

    def set(self, arr: np.ndarray, stream: Any = None) -> None:
        """Copy host data in, asynchronously on ``stream`` (default: the current stream).

        From pinned memory the copy reads ``arr`` when it runs; from pageable memory the data
        are staged now (see ``_streams``).
        """
        from ._memory import is_pinned

        if not isinstance(arr, np.ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        if self.dtype != arr.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        if self.shape != arr.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        if self._a.flags.c_contiguous:
            late = arr.flags.c_contiguous and is_pinned(arr)
        elif self._a.flags.f_contiguous:
            late = arr.flags.f_contiguous and is_pinned(arr)
        else:
            raise RuntimeError("Cannot set to non-contiguous array")
        source = arr if late else arr.copy()
        dest = self._a
        _counters.record("h2d", f"set() {self.shape} {self.dtype}{' (pinned)' if late else ''}")
        _streams.enqueue(stream, lambda: np.copyto(dest, source), f"set {self.shape} {self.dtype}")

    def item(self) -> Any:
        if self.size != 1:
            raise ValueError("can only convert an array of size 1 to a Python scalar")
        return self.get().item()

    def tolist(self) -> Any:
        return self.get().tolist()

    def tobytes(self, order: str = "C") -> bytes:
        return self.get().tobytes(order)

    def tofile(self, fid: Any, sep: str = "", format: str = "%s") -> None:
        self.get().tofile(fid, sep, format)

    def dump(self, file: Any) -> None:
        self.get().dump(file)

    def dumps(self) -> bytes:
        return self.get().dumps()

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError(_IMPLICIT)

    def __int__(self) -> int:
        return int(self.get())

    def __float__(self) -> float:
        return float(self.get())

    def __complex__(self) -> complex:
        return complex(self.get())

    def __bytes__(self) -> bytes:
        return bytes(self.get())

    def __bool__(self) -> bool:
        if self.size == 0:
            warnings.warn(
                "The truth value of an empty array is ambiguous. Returning False, but in future this will "
                "result in an error. Use `array.size > 0` to check that an array is not empty.",
                DeprecationWarning,
                stacklevel=2,
            )
            return False
        if self.size == 1:
            return bool(self.get())
        raise ValueError("The truth value of an array with more than one element is ambiguous. Use a.any() or a.all()")

    def __repr__(self) -> str:
        return repr(self.get())

    def __str__(self) -> str:
        return str(self.get())

    def __format__(self, format_spec: str) -> str:
        return format(self.get(), format_spec)

    def __reduce__(self) -> tuple:
        return (_standin("array"), (self.get(order="A"),))

    def __copy__(self) -> ndarray:
        return self.copy()

    def __deepcopy__(self, memo: Any) -> ndarray:
        return self.copy()

    # -- container ----------------------------------------------------------------------------

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __iter__(self) -> Any:
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    def __getitem__(self, key: Any) -> ndarray:
        return _indexing.getitem(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        _indexing.setitem(self, key, value)

    # -- NumPy protocols (core.pyx __array_ufunc__ / __array_function__) ------------------------

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        from . import _functions

        inout = inputs
        if "out" in kwargs:
            out = kwargs["out"]
            if len(out) != 1:
                raise ValueError("The 'out' parameter must have exactly one array value")
            inout += out
            kwargs["out"] = out[0]
        if method not in ("__call__", "outer", "at", "reduce", "accumulate", "reduceat"):
            return NotImplemented
        name = ufunc.__name__
        func = _functions.lookup("cupy", name, None) or _functions.lookup("cupyx.scipy.special", name, None)
        if func is None:
            return NotImplemented
        if method != "__call__":
            func = getattr(func, method, None)
            if func is None:
                return NotImplemented
        for x in inout:
            if not (
                _convert.is_scalar(x) or isinstance(x, (ndarray, np.ndarray)) or hasattr(x, "__cuda_array_interface__")
            ):
                return NotImplemented
        if name in ("greater", "greater_equal", "less", "less_equal", "equal", "not_equal"):
            inputs = tuple(x.item() if isinstance(x, np.ndarray) and x.ndim == 0 else x for x in inputs)
        return func(*inputs, **kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        from . import _functions

        module = func.__module__ or ""
        sub = ".".join(["cupy", *module.split(".")[1:]]) if module.split(".")[0] == "numpy" else None
        mine = _functions.lookup(sub, func.__name__, None) if sub else None
        if mine is None or mine is func:
            return NotImplemented
        for t in types:
            if not issubclass(t, (ndarray, np.ndarray)):
                return NotImplemented
        return mine(*args, **kwargs)

    # -- comparisons and operators (core.pyx __richcmp__, __add__, ...) -----------------------

    def _compare(self, other: Any, name: str) -> Any:
        if type(other) is ndarray:
            return _standin(name)(self, other)
        if _should_use_rop(self, other):
            return NotImplemented
        if isinstance(other, np.ndarray) and other.ndim == 0:
            other = other.item()
        if name in ("equal", "not_equal") and (other is None or type(other).__eq__ is object.__eq__):
            fill = np.ones if name == "not_equal" else np.zeros
            return _convert.wrap(fill(self.shape, dtype=bool))
        return getattr(np, name)(self, other)

    def __lt__(self, other: Any) -> Any:
        return self._compare(other, "less")

    def __le__(self, other: Any) -> Any:
        return self._compare(other, "less_equal")

    def __eq__(self, other: Any) -> Any:  # type: ignore[override]
        return self._compare(other, "equal")

    def __ne__(self, other: Any) -> Any:  # type: ignore[override]
        return self._compare(other, "not_equal")

    def __gt__(self, other: Any) -> Any:
        return self._compare(other, "greater")

    def __ge__(self, other: Any) -> Any:
        return self._compare(other, "greater_equal")

    __add__, __radd__, __iadd__ = _binop("add")
    __sub__, __rsub__, __isub__ = _binop("subtract")
    __mul__, __rmul__, __imul__ = _binop("multiply")
    __truediv__, __rtruediv__, __itruediv__ = _binop("true_divide")
    __floordiv__, __rfloordiv__, __ifloordiv__ = _binop("floor_divide")
    __mod__, __rmod__, __imod__ = _binop("remainder")
    __pow__, __rpow__, __ipow__ = _binop("power")
    __lshift__, __rlshift__, __ilshift__ = _binop("left_shift")
    __rshift__, __rrshift__, __irshift__ = _binop("right_shift")
    __and__, __rand__, __iand__ = _binop("bitwise_and")
    __or__, __ror__, __ior__ = _binop("bitwise_or")
    __xor__, __rxor__, __ixor__ = _binop("bitwise_xor")
    __divmod__, __rdivmod__, _ = _binop("divmod")
    del _

    def __matmul__(self, other: Any) -> Any:
        if type(other) is ndarray:
            return _standin("matmul")(self, other)
        if _should_use_rop(self, other):
            return NotImplemented
        return np.matmul(self, other)

    def __rmatmul__(self, other: Any) -> Any:
        if _should_use_rop(self, other):
            return NotImplemented
        return np.matmul(other, self)

    def __neg__(self) -> ndarray:
        return _standin("negative")(self)

    def __pos__(self) -> ndarray:
        if self.dtype == np.bool_:
            warnings.warn(
                "Applying '+' to a non-numerical array is ill-defined. Returning a copy, but in the future "
                "this will error.",
                DeprecationWarning,
                stacklevel=2,
            )
            return self.copy()
        return _standin("positive")(self)

    def __abs__(self) -> ndarray:
        return _standin("absolute")(self)

    def __invert__(self) -> ndarray:
        return _standin("invert")(self)

    # -- methods (signatures as CuPy's) -------------------------------------------------------

    def astype(
        self, dtype: Any, order: str = "K", casting: Any = None, subok: Any = None, copy: bool = True
    ) -> ndarray:
        _convert.check_dtype(dtype)
        return _call(np.ndarray.astype, self, dtype, order=order, casting=casting or "unsafe", copy=copy)

    def copy(self, order: str = "C") -> ndarray:
        return _call(np.array, self, order=order, copy=True)

    def view(self, dtype: Any = None, type: Any = None) -> ndarray:
        if type is not None and type is not ndarray:
            raise NotImplementedError("cupy_standin: ndarray.view(type=...) is not imitated")
        if dtype is None:
            return _call(np.ndarray.view, self)
        _convert.check_dtype(dtype)
        return _call(np.ndarray.view, self, dtype)

    def fill(self, value: Any) -> None:
        _streams.compute()
        if type(value) is ndarray:
            if value.shape != ():
                raise ValueError("non-scalar cupy.ndarray cannot be used for fill")
            value = value._a[()]
        else:
            v = np.asarray(value, dtype=self.dtype)
            if v.shape != ():
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = v[()]
        self._a.fill(value)

    def reshape(self, *shape: Any, order: str = "C", copy: Any = None) -> ndarray:
        if len(shape) == 1 and not isinstance(shape[0], int) and np.ndim(shape[0]) == 1:
            shape = tuple(shape[0])
        return _call(np.reshape, self, shape, order=order, copy=copy)

    def transpose(self, *axes: Any) -> ndarray:
        if len(axes) == 1 and (axes[0] is None or np.ndim(axes[0]) == 1):
            axes = axes[0]
        return _call(np.transpose, self, axes or None)

    def swapaxes(self, axis1: int, axis2: int) -> ndarray:
        return _call(np.swapaxes, self, axis1, axis2)

    def flatten(self, order: str = "C") -> ndarray:
        return _call(np.ndarray.flatten, self, order)

    def ravel(self, order: str = "C") -> ndarray:
        return _call(np.ravel, self, order)

    def squeeze(self, axis: Any = None) -> ndarray:
        return _call(np.squeeze, self, axis)

    def take(self, indices: Any, axis: Any = None, out: Any = None) -> ndarray:
        return _standin("take")(self, indices, axis, out)

    def put(self, indices: Any, values: Any, mode: str = "wrap") -> None:
        _standin("put")(self, indices, values, mode)

    def repeat(self, repeats: Any, axis: Any = None) -> ndarray:
        return _call(np.repeat, self, repeats, axis)

    def choose(self, choices: Any, out: Any = None, mode: str = "raise") -> ndarray:
        return _call(np.choose, self, choices, out=out, mode=mode)

    def sort(self, axis: int = -1, kind: Any = None) -> None:
        if kind is not None and kind != "stable":
            raise NotImplementedError(f"kind={kind!r} is not supported")
        _streams.compute()
        self._a.sort(axis=axis, kind="stable")

    def argsort(self, axis: int = -1, kind: Any = None) -> ndarray:
        if kind is not None and kind != "stable":
            raise NotImplementedError(f"kind={kind!r} is not supported")
        return _call(np.argsort, self, axis, kind="stable")

    def partition(self, kth: Any, axis: int = -1) -> None:
        _streams.compute()
        self._a.partition(_convert.unwrap(kth), axis=axis)

    def argpartition(self, kth: Any, axis: int = -1) -> ndarray:
        return _call(np.argpartition, self, kth, axis)

    def searchsorted(self, v: Any, side: str = "left", sorter: Any = None) -> ndarray:
        return _call(np.searchsorted, self, v, side, sorter)

    def nonzero(self) -> tuple:
        if self.ndim == 0:
            raise ValueError(
                "Calling nonzero on 0d arrays is not allowed. Use cp.atleast_1d(scalar).nonzero() instead."
            )
        return _standin("nonzero")(self)

    def compress(self, condition: Any, axis: Any = None, out: Any = None) -> ndarray:
        return _standin("compress")(condition, self, axis, out)

    def diagonal(self, offset: int = 0, axis1: int = 0, axis2: int = 1) -> ndarray:
        return _standin("diagonal")(self, offset, axis1, axis2)

    def max(self, axis: Any = None, out: Any = None, keepdims: bool = False) -> ndarray:
        return _call(np.max, self, axis, out, keepdims)

    def min(self, axis: Any = None, out: Any = None, keepdims: bool = False) -> ndarray:
        return _call(np.min, self, axis, out, keepdims)

    def argmax(self, axis: Any = None, out: Any = None, dtype: Any = None, keepdims: bool = False) -> ndarray:
        return _standin("argmax")(self, axis, dtype, out, keepdims)

    def argmin(self, axis: Any = None, out: Any = None, dtype: Any = None, keepdims: bool = False) -> ndarray:
        return _standin("argmin")(self, axis, dtype, out, keepdims)

    def ptp(self, axis: Any = None, out: Any = None, keepdims: bool = False) -> ndarray:
        return _call(np.ptp, self, axis, out, keepdims)

    def clip(self, min: Any = None, max: Any = None, out: Any = None) -> ndarray:
        if min is None and max is None:
            raise ValueError("array_clip: must set either max or min")
        return _call(np.clip, self, min, max, out=out)

    def round(self, decimals: int = 0, out: Any = None) -> ndarray:
        return _call(np.round, self, decimals, out)

    def trace(self, offset: int = 0, axis1: int = 0, axis2: int = 1, dtype: Any = None, out: Any = None) -> ndarray:
        return _call(np.trace, self, offset, axis1, axis2, dtype, out)

    def sum(self, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False) -> ndarray:
        return _call(np.sum, self, axis, dtype, out, keepdims)

    def cumsum(self, axis: Any = None, dtype: Any = None, out: Any = None) -> ndarray:
        return _call(np.cumsum, self, axis, dtype, out)

    def mean(self, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False) -> ndarray:
        return _call(np.mean, self, axis, dtype, out, keepdims)

    def var(
        self, axis: Any = None, dtype: Any = None, out: Any = None, ddof: int = 0, keepdims: bool = False
    ) -> ndarray:
        return _call(np.var, self, axis, dtype, out, ddof, keepdims)

    def std(
        self, axis: Any = None, dtype: Any = None, out: Any = None, ddof: int = 0, keepdims: bool = False
    ) -> ndarray:
        return _call(np.std, self, axis, dtype, out, ddof, keepdims)

    def prod(self, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False) -> ndarray:
        return _call(np.prod, self, axis, dtype, out, keepdims)

    def cumprod(self, axis: Any = None, dtype: Any = None, out: Any = None) -> ndarray:
        return _call(np.cumprod, self, axis, dtype, out)

    def all(self, axis: Any = None, out: Any = None, keepdims: bool = False) -> ndarray:
        return _call(np.all, self, axis, out, keepdims)

    def any(self, axis: Any = None, out: Any = None, keepdims: bool = False) -> ndarray:
        return _call(np.any, self, axis, out, keepdims)

    def conj(self) -> ndarray:
        return _standin("conjugate")(self) if self.dtype.kind == "c" else self

    def conjugate(self) -> ndarray:
        return self.conj()

    def dot(self, b: Any, out: Any = None) -> ndarray:
        if type(b) is not ndarray:
            raise TypeError(
                f"Argument 'b' has incorrect type (expected cupy._core.core._ndarray_base, got {type(b).__name__})"
            )
        return _call(np.dot, self, b, out)

    def byteswap(self, inplace: bool = False) -> ndarray:
        if inplace:
            _streams.compute()
            self._a.byteswap(inplace=True)
            return self
        return _call(np.ndarray.byteswap, self)

    def reduced_view(self, dtype: Any = None) -> ndarray:
        return self.ravel() if self._a.flags.c_contiguous and self.ndim > 1 else self.view()

    def scatter_add(self, slices: Any, value: Any) -> None:
        warnings.warn(
            "`ndarray.scatter_add` is deprecated. Please use `cupy.add.at` instead.", DeprecationWarning, stacklevel=2
        )
        _ufuncs.scatter(self, slices, value, "add")

    def scatter_max(self, slices: Any, value: Any) -> None:
        warnings.warn(
            "`ndarray.scatter_max` is deprecated Please use `cupy.maximum.at` instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        _ufuncs.scatter(self, slices, value, "max")

    def scatter_min(self, slices: Any, value: Any) -> None:
        warnings.warn(
            "`ndarray.scatter_min` is deprecated Please use `cupy.minimum.at` instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        _ufuncs.scatter(self, slices, value, "min")

    def _scatter_op(self, slices: Any, value: Any, op: str) -> None:
        _ufuncs.scatter(self, slices, value, op)

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("cupy_standin does not imitate DLPack")

    def __dlpack_device__(self) -> tuple[int, int]:
        return (2, self._device)  # kDLCUDA

    def toDlpack(self) -> Any:
        raise NotImplementedError("cupy_standin does not imitate DLPack")

    @classmethod
    def __class_getitem__(cls, item: Any) -> Any:
        from types import GenericAlias

        return GenericAlias(cls, item)


ndarray.__module__ = "cupy"
_convert.ndarray = ndarray
