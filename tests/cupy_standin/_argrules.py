"""Where CuPy's functions take host data, and where they fail on it (read from CuPy's source).

NumPy accepts array-likes everywhere; CuPy does not. Per function, CuPy either uploads an
argument (``cupy.asarray(m)`` at the top of ``tril``: a counted transfer here), checks it
(``_util.check_array``, ``concatenate``'s "Only cupy arrays can be concatenated"), or uses it
as a device array at once (``a.sum(...)``, typed Cython arguments), so a Python list fails.
:func:`prepare` applies these rules before a generic wrapper calls NumPy. NumPy arrays that get
past them are refused by ``_convert.unwrap`` (stricter than CuPy for the functions that call a
method of their argument: ``cupy.sum(numpy_array)`` silently returns NumPy's sum on CuPy).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _allowlist, _convert, _counters
from ._array import ndarray

#: Functions whose output size depends on the data: CuPy counts (or scans) on the device and
#: reads the count back before it can allocate the result, a hidden transfer and host wait.
SHAPE_SYNC = frozenset(
    "nonzero argwhere flatnonzero unique unique_all unique_counts unique_inverse unique_values compress "
    "extract intersect1d setdiff1d setxor1d union1d trim_zeros".split()
)
#: CuPy returns a 0-d device array where NumPy returns a Python bool or int.
ZERO_D = frozenset({"allclose", "array_equal", "array_equiv", "count_nonzero"})
#: CuPy functions that only look at dtypes, shapes or Python values: NumPy arrays are fine there.
HOST_OK = frozenset(
    "result_type can_cast common_type min_scalar_type isscalar ndim shape size iscomplexobj isrealobj "
    "isfortran binary_repr base_repr iterable isdtype issubdtype promote_types".split()
)
#: Parameters CuPy converts with ``cupy.asarray``/``cupy.array`` (read from CuPy's source): host
#: arrays and lists given there are uploaded (a counted transfer), not refused.
UPLOADS = {
    "append": ("arr", "values"),
    "around": ("a",),
    "round": ("a",),
    "round_": ("a",),
    "average": ("a", "weights"),
    "cov": ("a", "y"),
    "cross": ("a", "b"),
    "diag": ("v",),
    "diagflat": ("v",),
    "diff": ("a",),
    "extract": ("condition",),
    "isclose": ("a", "b"),
    "require": ("a",),
    "tile": ("A",),
    "tril": ("m",),
    "triu": ("m",),
    "vander": ("x",),
    "asarray_chkfinite": ("a",),
}
#: Functions whose arguments are each passed through ``cupy.asarray`` (``_atleast_nd_helper``).
UPLOAD_ELEMENTS = {
    "atleast_1d": None,
    "atleast_2d": None,
    "atleast_3d": None,
    "vstack": "tup",
    "hstack": "tup",
    "dstack": "tup",
    "row_stack": "tup",
}
#: Functions that check their sequence argument: (parameter, CuPy's error message).
DEVICE_ELEMENTS = {
    "concatenate": ("tup", "Only cupy arrays can be concatenated"),
    "concat": ("tup", "Only cupy arrays can be concatenated"),
    "column_stack": ("tup", "Only cupy arrays can be column stacked"),
    "stack": ("tup", None),
}
#: ``_util.check_array(a, arg_name='a')`` at the top of these.
CHECK_ARRAY = frozenset({"all", "any", "argwhere", "flatnonzero", "nonzero"})
#: CuPy functions whose first argument is used as a ``cupy.ndarray`` right away (``a.sum(...)``,
#: typed Cython arguments, ufuncs): a Python list there fails on CuPy (read from CuPy's source).
DEVICE_FIRST = frozenset(
    "alltrue amax amin argmax argmin argpartition argsort array_split astype bincount broadcast_to choose clip "
    "compress convolve copy corrcoef correlate count_nonzero cumprod cumproduct cumsum cumulative_prod "
    "cumulative_sum delete diag_indices_from diagonal digitize dot dsplit ediff1d expand_dims flip fliplr flipud "
    "full_like histogram histogram2d hsplit in1d inner isneginf isposinf kron matrix_transpose max mean median "
    "min moveaxis nan_to_num nanargmax nanargmin nancumprod nancumsum nanmax nanmean nanmedian nanmin nanprod "
    "nanstd nansum nanvar ones_like outer packbits pad partition percentile permute_dims place prod product ptp "
    "put put_along_axis putmask quantile ravel repeat reshape roll rollaxis rot90 searchsorted setdiff1d "
    "setxor1d sometrue sort sort_complex split squeeze std sum swapaxes take take_along_axis tensordot trace "
    "transpose tril_indices_from triu_indices_from unique unique_all unique_counts unique_inverse "
    "unique_values var vdot vsplit where zeros_like".split()
)


def _is_host_data(value: Any) -> bool:
    return isinstance(value, np.ndarray) or (type(value) in (list, tuple) and not _convert.contains_device(value))


def _upload_if_host(value: Any) -> Any:
    from ._creation import array

    return array(value) if _is_host_data(value) else value


def _map_param(qualname: str, args: tuple, kwargs: dict, pname: str | None, fn: Any) -> tuple[tuple, dict]:
    """Apply ``fn`` to CuPy parameter ``pname`` (None: to every positional argument)."""
    if pname is None:
        return tuple(fn(a) for a in args), kwargs
    if pname in kwargs:
        return args, {**kwargs, pname: fn(kwargs[pname])}
    pos = _allowlist.SIGNATURES.get(qualname, {}).get("positional", ())
    if pname in pos and pos.index(pname) < len(args):
        i = pos.index(pname)
        return args[:i] + (fn(args[i]),) + args[i + 1 :], kwargs
    return args, kwargs


def prepare(name: str, qualname: str, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """CuPy's argument handling before the computation: uploads, type checks."""
    if name in UPLOADS:
        for pname in UPLOADS[name]:
            args, kwargs = _map_param(qualname, args, kwargs, pname, _upload_if_host)
    if name in UPLOAD_ELEMENTS:
        pname = UPLOAD_ELEMENTS[name]
        if pname is None:
            args = tuple(_upload_if_host(a) for a in args)
        else:
            args, kwargs = _map_param(qualname, args, kwargs, pname, lambda seq: [_upload_if_host(e) for e in seq])
    if name in DEVICE_ELEMENTS:
        pname, message = DEVICE_ELEMENTS[name]

        def check(seq: Any) -> Any:
            for e in seq:
                if type(e) is not ndarray:
                    raise TypeError(
                        message
                        or "Argument 'a' has incorrect type (expected cupy._core.core._ndarray_base, "
                        f"got {type(e).__name__})"
                    )
            return seq

        args, kwargs = _map_param(qualname, args, kwargs, pname, check)
    first = _allowlist.SIGNATURES.get(qualname, {}).get("positional", (None,))[:1]
    if name in CHECK_ARRAY and first:

        def check_array(value: Any) -> Any:
            if type(value) is not ndarray:
                raise TypeError(f"'{first[0]}' must be a cupy.ndarray object, not {type(value)}.")
            return value

        args, kwargs = _map_param(qualname, args, kwargs, first[0], check_array)
    elif name in DEVICE_FIRST and first:

        def no_host_sequence(value: Any) -> Any:
            if type(value) in (list, tuple):
                raise TypeError(
                    f"cupy_standin: cupy.{name} takes a cupy.ndarray for '{first[0]}', not a {type(value).__name__} "
                    "(CuPy uses it as a device array at once and fails); convert it with cupy.asarray"
                )
            return value

        args, kwargs = _map_param(qualname, args, kwargs, first[0], no_host_sequence)
    return args, kwargs


def shape_sync(what: str) -> None:
    _counters.record("d2h", f"{what}: output size read back")
    _counters.record("syncs", f"{what}: output size depends on the data")
