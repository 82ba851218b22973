"""The ``cupy`` namespace: CuPy's names, computed by NumPy on the device arrays' data.

Every name CuPy 14 exports (``_cupy_api.NAMES["cupy"]``) gets an object here; nothing else
does. Kinds of objects:

* NumPy's own object where CuPy re-exports it (dtypes, constants, ``finfo``, ...);
* :class:`~cupy_standin._ufuncs.ufunc` where CuPy's object is a ufunc;
* a generic wrapper of NumPy's function of the same name for CuPy's other functions: keyword
  arguments checked against CuPy's signature, NumPy arrays among the arguments refused (also
  inside lists and tuples: ``cupy.concatenate([numpy_array])``), results wrapped;
  CuPy's rules for host data applied first (``_argrules``);
* the host ↔ device constructors and converters (``_creation``) and the functions that behave
  differently from NumPy's (``_overrides``);
* a :class:`Gap` for CuPy features the stand-in does not imitate: using one raises
  ``NotImplementedError`` (loudly, not ``AttributeError``, since CuPy has the name).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _allowlist, _argrules, _convert
from ._array import ndarray
from ._creation import (
    _from_host_reader,
    _to_host_writer,
    array,
    asanyarray,
    asarray,
    ascontiguousarray,
    asfortranarray,
    asnumpy,
    empty,
    empty_like,
    get_array_module,
    get_default_memory_pool,
    get_default_pinned_memory_pool,
    is_available,
    load,
    show_config,
)
from ._overrides import (
    _IndexTrick,
    _removed_in_numpy2,
    argmax,
    argmin,
    argsort,
    asfarray,
    clear_memo,
    diagonal,
    fuse,
    in1d,
    issctype,
    issubclass_,
    issubsctype,
    memoize,
    msort,
    obj2sctype,
    put,
    sctype2char,
    sort,
    take,
    take_along_axis,
)
from ._ufuncs import FunctionUfunc, ufunc


class Gap:
    """A CuPy name the stand-in does not imitate: any use raises NotImplementedError."""

    def __init__(self, qualname: str, why: str = ""):
        self._qualname, self._why = qualname, why

    def _fail(self) -> NotImplementedError:
        why = f": {self._why}" if self._why else ""
        return NotImplementedError(f"cupy_standin does not imitate {self._qualname}{why}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise self._fail()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise self._fail()

    def __repr__(self) -> str:
        return f"<not imitated: {self._qualname}>"


def _named(fn: Any, module: str, name: str, doc: str | None = None) -> Any:
    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = module
    if doc is not None:
        fn.__doc__ = doc
    return fn


# -- generic wrappers -----------------------------------------------------------------------------

#: Names NumPy 2 removed that CuPy keeps: the NumPy function that does the same.
NUMPY_ALIASES = {
    "product": "prod",
    "cumproduct": "cumprod",
    "round_": "round",
    "trapz": "trapezoid",
    "alltrue": "all",
    "sometrue": "any",
    "row_stack": "vstack",
}


def generic(module: str, name: str, np_func: Any) -> Any:
    """A CuPy function computed by ``np_func``."""
    qualname = f"{module}.{name}"
    np_params = _allowlist.numpy_params(np_func)
    host_ok = name in _argrules.HOST_OK

    def f(*args: Any, **kwargs: Any) -> Any:
        _allowlist.check_call(qualname, args, kwargs)
        if module == "cupy":
            args, kwargs = _argrules.prepare(name, qualname, args, kwargs)
        nargs, nkwargs = _allowlist.translate(qualname, np_params, args, kwargs)
        if name in _argrules.SHAPE_SYNC or (name == "where" and len(args) + len(kwargs) == 1):
            _argrules.shape_sync(qualname)
        if host_ok:  # only dtypes, shapes, Python values matter: NumPy arrays are fine
            return np_func(*map(_data, nargs), **{k: _data(v) for k, v in nkwargs.items()})
        res = _convert.call(np_func, nargs, nkwargs)
        if name in _argrules.ZERO_D and type(res) in (bool, int):
            res = _convert.wrap(np.asarray(res))
        return res

    return _named(
        f, module, name, f"Stand-in for ``{qualname}`` (computed by NumPy's ``{getattr(np_func, '__name__', name)}``)."
    )


def _data(value: Any) -> Any:
    return value._a if type(value) is ndarray else value


_SPECIAL: dict[str, Any] = {
    "array": array,
    "asarray": asarray,
    "asanyarray": asanyarray,
    "ascontiguousarray": ascontiguousarray,
    "asfortranarray": asfortranarray,
    "empty": empty,
    "empty_like": empty_like,
    "asnumpy": asnumpy,
    "get_array_module": get_array_module,
    "is_available": is_available,
    "get_default_memory_pool": get_default_memory_pool,
    "get_default_pinned_memory_pool": get_default_pinned_memory_pool,
    "show_config": show_config,
    "take": take,
    "take_along_axis": take_along_axis,
    "put": put,
    "diagonal": diagonal,
    "argmax": argmax,
    "argmin": argmin,
    "msort": msort,
    "sort": sort,
    "argsort": argsort,
    "asfarray": asfarray,
    "in1d": in1d,
    "fuse": fuse,
    "memoize": memoize,
    "clear_memo": clear_memo,
    "load": load,
    "ndarray": ndarray,
    "ufunc": ufunc,
    "obj2sctype": obj2sctype,
    "issubclass_": issubclass_,
    "issubsctype": issubsctype,
    "sctype2char": sctype2char,
    "issctype": issctype,
    "find_common_type": _removed_in_numpy2("`promote_types` or `result_type`"),
    "set_string_function": _removed_in_numpy2("`np.set_printoptions`"),
    "get_array_wrap": _removed_in_numpy2("<no replacement>"),
    "disp": _removed_in_numpy2("your own print function"),
    "safe_eval": _removed_in_numpy2("`ast.literal_eval`"),
    "disable_experimental_feature_warning": False,
    "r_": _IndexTrick(np.r_),
    "c_": _IndexTrick(np.c_),
    "mgrid": _IndexTrick(np.mgrid),
    "ogrid": _IndexTrick(np.ogrid),
    # constants and dtypes CuPy still exports that NumPy 2 dropped
    "PINF": np.inf,
    "Inf": np.inf,
    "Infinity": np.inf,
    "infty": np.inf,
    "NINF": -np.inf,
    "NAN": np.nan,
    "NaN": np.nan,
    "PZERO": 0.0,
    "NZERO": -0.0,
    "float_": np.float64,
    "complex_": np.complex128,
    "cfloat": np.complex128,
    "singlecomplex": np.complex64,
    "format_parser": np.rec.format_parser,
    "DataSource": np.lib.npyio.DataSource,
    "byte_bounds": None,  # set below (NumPy 2 moved it)
}
_SPECIAL["byte_bounds"] = generic("cupy", "byte_bounds", np.lib.array_utils.byte_bounds)
for _n in ("fromfile", "fromfunction", "fromiter", "frombuffer", "fromstring", "loadtxt", "genfromtxt"):
    _SPECIAL[_n] = _from_host_reader(getattr(np, _n), _n)
for _n in ("save", "savez", "savez_compressed", "savetxt", "array_repr", "array_str", "array2string"):
    _SPECIAL[_n] = _to_host_writer(getattr(np, _n), _n)

_GAPS = {
    "ElementwiseKernel": "write the kernel as a RawKernel (routed to tests/cudasim) or use array functions",
    "ReductionKernel": "",
    "vectorize": "it compiles Python functions to CUDA",
    "piecewise": "",
    "apply_along_axis": "",
    "apply_over_axes": "",
    "broadcast": "",
    "flatiter": "",
    "poly1d": "",
    "from_dlpack": "DLPack",
    "fromDlpack": "DLPack",
    "make_aligned_dtype": "",
    "testing": "use numpy.testing on .get() results",
    "polynomial": "",
    "who": "",
}


def _exceptions_module() -> Any:
    import types

    m = types.ModuleType("cupy.exceptions")
    for n in (
        "AxisError",
        "ComplexWarning",
        "ModuleDeprecationWarning",
        "RankWarning",
        "TooHardError",
        "VisibleDeprecationWarning",
    ):
        setattr(m, n, getattr(np.exceptions, n))
    return m


def build_cupy_namespace() -> dict[str, Any]:
    """Objects for every name CuPy 14 exports at top level (modules excluded: ``_modules``)."""
    ns: dict[str, Any] = {}
    for name, kind in _allowlist.NAMES["cupy"].items():
        if kind == "module":
            continue
        ns[name] = _object_for("cupy", name, kind, np)
    exc = _exceptions_module()
    ns["exceptions"] = exc
    for n in (
        "AxisError",
        "ComplexWarning",
        "ModuleDeprecationWarning",
        "RankWarning",
        "TooHardError",
        "VisibleDeprecationWarning",
    ):
        ns[n] = getattr(exc, n)
    from ._kernels import RawKernel, RawModule

    ns["RawKernel"], ns["RawModule"] = RawKernel, RawModule
    return ns


def _object_for(module: str, name: str, kind: str, source: Any) -> Any:
    """The stand-in object for CuPy's ``module.name`` of ``kind``, computed from ``source``."""
    if module == "cupy" and name in _SPECIAL:
        return _SPECIAL[name]
    if module == "cupy" and name in _GAPS:
        return Gap(f"{module}.{name}", _GAPS[name])
    counterpart = getattr(source, NUMPY_ALIASES.get(name, name), _MISSING)
    if kind == "numpy":
        if counterpart is _MISSING:
            counterpart = getattr(np.exceptions, name, _MISSING)
        return counterpart if counterpart is not _MISSING else Gap(f"{module}.{name}")
    if counterpart is _MISSING or counterpart is None:
        return Gap(f"{module}.{name}")
    if kind == "ufunc":
        if isinstance(counterpart, np.ufunc):
            return ufunc(name, counterpart, module)
        return FunctionUfunc(name, counterpart)
    if kind == "class":
        return Gap(f"{module}.{name}")
    if callable(counterpart) and not isinstance(counterpart, type):
        return generic(module, name, counterpart)
    return Gap(f"{module}.{name}")


_NAMESPACES: dict[str, dict[str, Any]] = {}


def namespace(module: str) -> dict[str, Any]:
    """Name → object for one stand-in module (built on first use)."""
    ns = _NAMESPACES.get(module)
    if ns is None:
        from . import _modules

        ns = _NAMESPACES[module] = _modules.build_namespace(module)
    return ns


_MISSING = object()


def lookup(module: str, name: str, default: Any = _MISSING) -> Any:
    """The stand-in's ``module.name`` (``default``, else AttributeError, when CuPy lacks it)."""
    try:
        ns = namespace(module)
    except KeyError:
        ns = {}
    obj = ns.get(name, _MISSING)
    if obj is _MISSING:
        if default is _MISSING:
            raise AttributeError(f"module '{module}' has no attribute '{name}'")
        return default
    return obj
