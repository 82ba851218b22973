"""``cupyx``, ``cupyx.scipy`` and ``cupyx.scipy.special`` (``cupyx/__init__.py``).

* ``scatter_add``/``scatter_max``/``scatter_min`` call the deprecated ``ndarray.scatter_*``
  methods, which warn ``DeprecationWarning`` in CuPy 14 (so does the stand-in); repeated
  indices accumulate.
* ``empty_pinned`` & co. return NumPy arrays on pinned memory (garbage-filled for ``empty``).
* ``errstate``/``seterr``/``geterr``: only ``linalg`` ('ignore' | 'raise') changes anything.
* ``allow_synchronize(False)`` makes ``get()`` and ``Device.synchronize()`` raise
  ``DeviceSynchronized`` in this thread (CuPy's syncdetect), after a warning.
* ``cupyx.scipy.special``: CuPy's names, computed by ``scipy.special``; built on first use.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from . import _config, _convert, _counters, _linalg, _memory, _ufuncs
from ._array import ndarray


def scatter_add(a: Any, slices: Any, value: Any) -> None:
    a.scatter_add(slices, value)


def scatter_max(a: Any, slices: Any, value: Any) -> None:
    a.scatter_max(slices, value)


def scatter_min(a: Any, slices: Any, value: Any) -> None:
    a.scatter_min(slices, value)


def empty_pinned(shape: Any, dtype: Any = float, order: str = "C") -> np.ndarray:
    return _memory.pinned_array(shape, dtype, order, poison=_config.CONFIG.poison_empty)


def zeros_pinned(shape: Any, dtype: Any = float, order: str = "C") -> np.ndarray:
    out = _memory.pinned_array(shape, dtype, order, poison=False)
    out.fill(0)
    return out


def _like(a: Any, dtype: Any, order: str, subok: Any, shape: Any) -> tuple:
    if subok is not None:
        raise TypeError("subok is not supported yet")
    shape = a.shape if shape is None else shape
    dtype = a.dtype if dtype is None else dtype
    if order in ("K", "A"):
        order = (
            "F"
            if (getattr(a, "flags", None) is not None and a.flags.f_contiguous and not a.flags.c_contiguous)
            else "C"
        )
    return shape, dtype, order


def empty_like_pinned(a: Any, dtype: Any = None, order: str = "K", subok: Any = None, shape: Any = None) -> np.ndarray:
    shape, dtype, order = _like(a, dtype, order, subok, shape)
    return empty_pinned(shape, dtype, order)


def zeros_like_pinned(a: Any, dtype: Any = None, order: str = "K", subok: Any = None, shape: Any = None) -> np.ndarray:
    shape, dtype, order = _like(a, dtype, order, subok, shape)
    return zeros_pinned(shape, dtype, order)


_ERR = {"divide": None, "over": None, "under": None, "invalid": None}


def geterr() -> dict:
    return {**_ERR, "linalg": _linalg._LINALG_MODE["linalg"]}


def seterr(*, divide: Any = None, over: Any = None, under: Any = None, invalid: Any = None, linalg: Any = None) -> dict:
    old = geterr()
    for k, v in (("divide", divide), ("over", over), ("under", under), ("invalid", invalid)):
        if v is not None:
            if v != "ignore":
                raise NotImplementedError(f"{k} is not supported yet")
            _ERR[k] = v
    if linalg is not None:
        if linalg not in ("ignore", "raise"):
            raise NotImplementedError(f"linalg={linalg!r} is not supported yet")
        _linalg._LINALG_MODE["linalg"] = linalg
    return old


@contextlib.contextmanager
def errstate(
    *, divide: Any = None, over: Any = None, under: Any = None, invalid: Any = None, linalg: Any = None
) -> Iterator[None]:
    old = seterr(divide=divide, over=over, under=under, invalid=invalid, linalg=linalg)
    try:
        yield
    finally:
        seterr(**{k: v for k, v in old.items() if k == "linalg" or v is not None})


@contextlib.contextmanager
def allow_synchronize(allow: bool) -> Iterator[None]:
    warnings.warn(
        "cupyx.allow_synchronize will be removed in future releases as it is not possible to reliably detect "
        "synchronizations.",
        stacklevel=3,
    )
    old = _counters.sync_allowed()
    _counters.set_sync_allowed(bool(allow))
    try:
        yield
    finally:
        _counters.set_sync_allowed(old)


def get_runtime_info(full: bool = True) -> str:
    return f"CuPy stand-in (cupy_standin): {_config.CONFIG.device_name}\n"


def namespace() -> dict[str, Any]:
    from ._allowlist import NAMES
    from ._functions import Gap

    mine: dict[str, Any] = {
        "scatter_add": scatter_add,
        "scatter_max": scatter_max,
        "scatter_min": scatter_min,
        "empty_pinned": empty_pinned,
        "zeros_pinned": zeros_pinned,
        "empty_like_pinned": empty_like_pinned,
        "zeros_like_pinned": zeros_like_pinned,
        "errstate": errstate,
        "seterr": seterr,
        "geterr": geterr,
        "allow_synchronize": allow_synchronize,
        "DeviceSynchronized": _counters.DeviceSynchronized,
        "get_runtime_info": get_runtime_info,
        "rsqrt": _Rsqrt(),
    }
    ns: dict[str, Any] = {}
    for name, kind in NAMES["cupyx"].items():
        if kind == "module":
            continue
        ns[name] = mine.get(name) or Gap(f"cupyx.{name}")
        if callable(ns[name]) and hasattr(ns[name], "__module__") and not isinstance(ns[name], (type, Gap)):
            try:
                ns[name].__module__ = "cupyx"
            except (AttributeError, TypeError):
                pass
    for name in ("linalg", "time", "optimizing", "lapack", "cusparse"):
        ns[name] = Gap(f"cupyx.{name}")
    return ns


class _Rsqrt(_ufuncs.ufunc):
    """``cupyx.rsqrt``: 1 / sqrt(x)."""

    def __init__(self) -> None:
        super().__init__("rsqrt", np.sqrt, "cupyx")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        root = super().__call__(*args, **kwargs)
        return _convert.call(np.reciprocal, (root,), {"out": root})


def scipy_namespace() -> dict[str, Any]:
    def get_array_module(*args: Any) -> Any:
        from ._modules import MODULES

        for a in args:
            if type(a) is ndarray:
                return MODULES["cupyx.scipy"]
        import scipy

        return scipy

    get_array_module.__module__ = "cupyx.scipy"
    return {"get_array_module": get_array_module}


def special_namespace() -> dict[str, Any]:
    """``cupyx.scipy.special`` from ``scipy.special`` (imported only when this is built)."""
    import scipy.special as sps

    from ._allowlist import NAMES
    from ._functions import _object_for

    return {
        name: _object_for("cupyx.scipy.special", name, kind, sps) for name, kind in NAMES["cupyx.scipy.special"].items()
    }
