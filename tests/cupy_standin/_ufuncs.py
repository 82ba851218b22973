"""``cupy.ufunc``: elementwise functions with CuPy's argument rules (``cupy/_core/_kernel.pyx``).

* Inputs must be device arrays or scalars (exact Python ``bool/int/float/complex``, NumPy
  numeric scalars). Anything else, a NumPy array of any shape or a list included, raises
  ``TypeError("Unsupported type ...")`` (``_preprocess_arg`` → ``_scalar.CScalar``).
* Keywords: only ``out``, ``dtype``, ``casting`` (and the private ``_where``); ``where=``,
  ``order=``, ``subok=`` ... raise ``TypeError('Wrong arguments ...')``.
* Methods: ``outer`` for all (its operands go through ``cupy.array``, so host arrays are
  copied up); ``reduce``/``accumulate`` only for add and multiply, ``reduceat`` only for add;
  ``at`` only for the ufuncs with a scatter kernel (add, subtract, maximum, minimum, bitwise
  and/or/xor), each for the dtypes CuPy's atomics support; the rest raise NotImplementedError.
* Results are device arrays, 0-d for scalar inputs. Floating-point errors never warn (a GPU
  kernel has no ``seterr``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _convert, _streams

_I32 = (np.int32, np.uint32)
_ATOMIC = (np.int32, np.int64, np.float32, np.float64, np.uint32, np.uint64)
#: ufunc name → (scatter op, dtypes its ``at`` accepts) (``_routines_indexing.pyx _scatter_op_single``)
SCATTER = {
    "add": ("add", _ATOMIC + (np.float16,)),
    "subtract": ("sub", _I32),
    "maximum": ("max", _ATOMIC),
    "minimum": ("min", _ATOMIC),
    "bitwise_and": ("and", (np.int32, np.int64, np.uint32, np.uint64)),
    "bitwise_or": ("or", (np.int32, np.int64, np.uint32, np.uint64)),
    "bitwise_xor": ("xor", (np.int32, np.int64, np.uint32, np.uint64)),
}
_SCATTER_UFUNC = {op: name for name, (op, _types) in SCATTER.items()}


def check_input(value: Any) -> Any:
    """The NumPy-level operand of a kernel argument (device array or scalar), else TypeError."""
    if type(value) is _convert.ndarray:
        return value._a
    if _convert.is_scalar(value):
        return value
    raise _convert.host_error(value)


class ufunc:
    """A CuPy universal function computed by a NumPy (or SciPy) ufunc on the host data."""

    def __init__(self, name: str, np_ufunc: np.ufunc, module: str = "cupy"):
        self.name = self.__name__ = f"cupy_{name}" if module == "cupy" else name
        self._public = name
        self._np = np_ufunc
        self.nin, self.nout = np_ufunc.nin, np_ufunc.nout
        self.nargs = self.nin + self.nout
        self.__doc__ = f"Stand-in for ``{module}.{name}`` (computed by ``{np_ufunc.__name__}``)."

    def __repr__(self) -> str:
        return f"<ufunc '{self.name}'>"

    @property
    def types(self) -> list[str]:
        return list(self._np.types)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = kwargs.pop("out", None)
        where = kwargs.pop("_where", None)
        dtype = kwargs.pop("dtype", None)
        casting = kwargs.pop("casting", "same_kind")
        if kwargs:
            raise TypeError(f"Wrong arguments {kwargs}")
        if not self.nin <= len(args) <= self.nargs:
            raise TypeError(
                f"Wrong number of arguments for {self.name!r}. It must be either {self.nin} or "
                f"{self.nargs} (with outputs), but given {len(args)}."
            )
        ins, outs = args[: self.nin], args[self.nin :]
        if out is not None:
            if outs:
                raise ValueError("Cannot specify 'out' as both a positional and keyword argument")
            outs = tuple(out) if isinstance(out, tuple) else (out,)
            if len(outs) != self.nout:
                raise ValueError("The 'out' tuple must have exactly one entry per ufunc output")
        np_in = [check_input(a) for a in ins]
        np_out = []
        for o in outs:
            if o is None:
                np_out.append(None)
            elif type(o) is _convert.ndarray:
                np_out.append(o._a)
            else:
                raise _convert.host_error(o)
        kw: dict[str, Any] = {"casting": casting}
        if dtype is not None:
            kw["dtype"] = dtype
        if where is not None:
            kw["where"] = check_input(where)
        if any(o is not None for o in np_out):
            kw["out"] = tuple(np_out)
        _streams.compute()
        with np.errstate(all="ignore"):
            res = self._np(*np_in, **kw)
        seen = {id(o._a): o for o in outs if o is not None}
        return _convert.wrap(res, seen)

    # -- methods ----------------------------------------------------------------------------

    def outer(self, A: Any, B: Any, **kwargs: Any) -> Any:
        from ._creation import array

        A, B = array(A), array(B)
        ndim_a = A.ndim
        A = A.reshape(A.shape + (1,) * B.ndim)
        B = B.reshape((1,) * ndim_a + B.shape)
        return self(A, B, **kwargs)

    def at(self, a: Any, indices: Any, b: Any = None) -> None:
        if self._public not in SCATTER:
            raise NotImplementedError(f"`{self.name}.at` is not supported yet")
        scatter(a, indices, b, SCATTER[self._public][0])

    def reduce(self, array: Any, axis: Any = 0, dtype: Any = None, out: Any = None, keepdims: bool = False) -> Any:
        if self._public == "add":
            return array.sum(axis, dtype, out, keepdims)
        if self._public == "multiply":
            return array.prod(axis, dtype, out, keepdims)
        raise NotImplementedError(f"`{self.name}.reduce` is not supported yet")

    def accumulate(self, array: Any, axis: Any = 0, dtype: Any = None, out: Any = None) -> Any:
        if self._public == "add":
            return array.cumsum(axis, dtype, out)
        if self._public == "multiply":
            return array.cumprod(axis, dtype, out)
        raise NotImplementedError(f"`{self.name}.accumulate` is not supported yet")

    def reduceat(self, array: Any, indices: Any, axis: Any = 0, dtype: Any = None, out: Any = None) -> Any:
        if self._public != "add":
            raise NotImplementedError(f"`{self.name}.reduceat` is not supported yet")
        if type(array) is not _convert.ndarray:
            raise AttributeError(f"'{type(array).__name__}' object has no attribute '_add_reduceat'")
        idx = indices._a if type(indices) is _convert.ndarray else np.asarray(indices)
        return _convert.call(np.add.reduceat, (array, idx), {"axis": axis, "dtype": dtype, "out": out})


ufunc.__module__ = "cupy"
ufunc.__qualname__ = "ufunc"

_UNBUFFERED = {"add": np.add, "sub": np.subtract, "max": np.maximum, "min": np.minimum}


def scatter(a: Any, slices: Any, value: Any, op: str) -> None:
    """``a[slices] op= value`` with repeated indices accumulated (``ndarray._scatter_op``)."""
    from ._indexing import host_to_device, prepare

    if type(a) is not _convert.ndarray:
        raise AttributeError(f"'{type(a).__name__}' object has no attribute '_scatter_op'")
    _streams.compute()
    key, advanced = prepare(a._a, slices)
    name = _SCATTER_UFUNC[op]
    if type(value) is _convert.ndarray:
        v = value._a
    elif _convert.is_scalar(value) or value is None:
        v = value
    elif advanced:
        v = host_to_device(value, f"scatter value {type(value).__name__}", dtype=a.dtype)
    else:
        raise _convert.host_error(value)
    if advanced:
        allowed = SCATTER[name][1]
        if not issubclass(a.dtype.type, allowed):  # CuPy casts the value to a.dtype first
            names = ", ".join(np.dtype(t).name for t in allowed)
            raise TypeError(f"cupy.{name}.at only supports {names} as data type")
        np_ufunc = getattr(np, name)
        with np.errstate(all="ignore"):
            np_ufunc.at(a._a, key, np.asarray(v, dtype=a.dtype) if v is not None else 0)
    else:
        # basic slices: an ordinary in-place ufunc on the view
        np_ufunc = getattr(np, name)
        with np.errstate(all="ignore"):
            np_ufunc(a._a[key], v, out=a._a[key])


class FunctionUfunc(ufunc):
    """A CuPy ufunc whose NumPy counterpart is a plain function (``fix``, ``i0``, ``sinc``)."""

    def __init__(self, name: str, fn: Any, nin: int = 1, nout: int = 1):
        self.name = self.__name__ = f"cupy_{name}"
        self._public, self._np, self.nin, self.nout, self.nargs = name, fn, nin, nout, nin + nout

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = kwargs.pop("out", None)
        dtype = kwargs.pop("dtype", None)
        kwargs.pop("casting", None)
        if kwargs:
            raise TypeError(f"Wrong arguments {kwargs}")
        ins = [check_input(a) for a in args[: self.nin]]
        _streams.compute()
        with np.errstate(all="ignore"):
            res = np.asarray(self._np(*ins))
        if dtype is not None:
            res = res.astype(dtype)
        if out is not None:
            out = out[0] if isinstance(out, tuple) else out
            if type(out) is not _convert.ndarray:
                raise _convert.host_error(out)
            np.copyto(out._a, res, casting="unsafe")
            return out
        return _convert.wrap(res)
