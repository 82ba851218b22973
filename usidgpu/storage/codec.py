"""HDF5 attribute values as plain JSON, and back (format ``usidgpu-h5-zarr``, version 1).

What a zarr store holds as attributes stays readable by any zarr tool:

* strings (variable or fixed length) → JSON strings (UTF-8 decoded; bytes that are not UTF-8
  become ``{"base64": "..."}``); string arrays (pyUSID's ``labels``/``units``) → lists of strings;
* numbers → JSON numbers (NaN and ±infinity as the strings ``"NaN"``, ``"Infinity"``,
  ``"-Infinity"``, as zarr v3 writes fill values); booleans → JSON booleans; complex →
  ``[re, im]``; compound (structured) values → one list per record, fields in order; arrays →
  nested lists;
* **HDF5 object references** → the string ``"h5ref:<absolute path of the target>"``
  (``"h5ref:"`` for a null or dangling reference). Region references have no encoding
  (:func:`has_region` finds them; the converters drop them).

JSON cannot say which HDF5 type a value had, so each node carries one reserved attribute,
:data:`META` (``_usidgpu_h5``), whose ``attrs`` entry records per attribute the HDF5 dtype as
:func:`dtype_to_json` describes it (``"<u4"``, ``{"fixed_str": "ascii", "length": 5}``,
``{"vlen_str": "utf-8"}``, ``{"ref": "object"}``, compound/enum/vlen descriptions) and the shape
(``null`` for an HDF5 null dataspace). :func:`decode_attr` gives back the value h5py would hand
out for that type; without the record (stores written by other tools) :func:`guess_attr` reads
JSON's own types.

Nothing here touches a file: references are turned into paths and back by callables the caller
passes (``ref_path(ref) -> str``, ``make_ref(path) -> reference``).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping
from typing import Any

import h5py
import numpy as np

from ..core.errors import InvalidInput

#: prefix of an object reference written as a string
REF_PREFIX = "h5ref:"
#: the reserved attribute that records HDF5 types, storage and links on every node
META = "_usidgpu_h5"
FORMAT = "usidgpu-h5-zarr"
VERSION = 1


class Unsupported(Exception):
    """A dtype this encoding cannot carry (the object is dropped and reported)."""


# ------------------------------------------------------------------------------ dtypes as JSON
def dtype_to_json(dt: np.dtype) -> Any:
    """A JSON description of an HDF5 (h5py) dtype, h5py's string/reference/enum/vlen flavours included."""
    ref = h5py.check_ref_dtype(dt)
    if ref is not None:
        return {"ref": "region" if ref is h5py.RegionReference else "object"}
    info = h5py.check_string_dtype(dt)
    if info is not None:
        if info.length is None:
            return {"vlen_str": info.encoding}
        return {"fixed_str": info.encoding, "length": int(info.length)}
    base = h5py.check_vlen_dtype(dt)
    if base is not None:
        return {"vlen": dtype_to_json(np.dtype(base))}
    enum = h5py.check_enum_dtype(dt)
    if enum is not None:
        return {"enum": np.dtype(dt.str).str, "mapping": {str(k): int(v) for k, v in enum.items()}}
    if dt.names is not None and dt.fields is not None:
        fields = dt.fields
        return {
            "compound": [[name, dtype_to_json(fields[name][0]), int(fields[name][1])] for name in dt.names],
            "itemsize": int(dt.itemsize),
        }
    if dt.subdtype is not None:
        sub, shape = dt.subdtype
        return {"subarray": dtype_to_json(sub), "shape": list(shape)}
    if dt.kind == "O":
        raise Unsupported(f"opaque object dtype {dt}")
    return dt.str


def dtype_from_json(spec: Any) -> np.dtype:
    """The h5py dtype described by :func:`dtype_to_json`."""
    if isinstance(spec, str):
        return np.dtype(spec)
    if "ref" in spec:
        return h5py.regionref_dtype if spec["ref"] == "region" else h5py.ref_dtype
    if "vlen_str" in spec:
        return h5py.string_dtype(spec["vlen_str"])
    if "fixed_str" in spec:
        return h5py.string_dtype(spec["fixed_str"], int(spec["length"]))
    if "vlen" in spec:
        return h5py.vlen_dtype(dtype_from_json(spec["vlen"]))
    if "enum" in spec:
        return h5py.enum_dtype(dict(spec["mapping"]), basetype=np.dtype(spec["enum"]))
    if "compound" in spec:
        fields = spec["compound"]
        return np.dtype(
            {
                "names": [f[0] for f in fields],
                "formats": [dtype_from_json(f[1]) for f in fields],
                "offsets": [f[2] for f in fields],
                "itemsize": spec["itemsize"],
            }
        )
    if "subarray" in spec:
        return np.dtype((dtype_from_json(spec["subarray"]), tuple(spec["shape"])))
    raise InvalidInput(f"unknown dtype description {spec!r}")


def has_special(spec: Any) -> bool:
    """True when values of the dtype ``spec`` hold references, variable-length data or region refs."""
    if isinstance(spec, str):
        return False
    if "ref" in spec or "vlen_str" in spec or "vlen" in spec:
        return True
    if "compound" in spec:
        return any(has_special(f[1]) for f in spec["compound"])
    if "subarray" in spec:
        return has_special(spec["subarray"])
    return False


def has_region(spec: Any) -> bool:
    """True when values of the dtype ``spec`` hold region references (which have no encoding)."""
    if isinstance(spec, str):
        return False
    if spec.get("ref") == "region":
        return True
    for key in ("vlen", "subarray"):
        if key in spec:
            return has_region(spec[key])
    if "compound" in spec:
        return any(has_region(f[1]) for f in spec["compound"])
    return False


# ------------------------------------------------------------------------------ values as JSON
def _text(value: Any) -> Any:
    if isinstance(value, str):
        return value
    raw = bytes(value)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode("ascii")}


def _number(x: float) -> Any:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def encode_value(value: Any, spec: Any, ref_path: Callable[[Any], str]) -> Any:
    """One element of dtype ``spec`` as JSON."""
    if isinstance(spec, str):
        dt = np.dtype(spec)
        if dt.kind == "c":
            c = complex(value)
            return [_number(c.real), _number(c.imag)]
        if dt.kind == "f":
            return _number(float(value))
        if dt.kind == "b":
            return bool(value)
        if dt.kind in "iu":
            return int(value)
        if dt.kind in "SV":  # raw bytes (opaque) without h5py string metadata
            return _text(value)
        if dt.kind == "U":
            return str(value)
        raise Unsupported(f"dtype {dt}")
    if "ref" in spec:
        return REF_PREFIX + ref_path(value)
    if "vlen_str" in spec or "fixed_str" in spec:
        return _text(value)
    if "vlen" in spec:
        return encode_array(np.asarray(value), spec["vlen"], ref_path)
    if "enum" in spec:
        return int(value)
    if "compound" in spec:
        return [encode_value(value[name], sub, ref_path) for name, sub, _off in spec["compound"]]
    if "subarray" in spec:
        return encode_array(np.asarray(value), spec["subarray"], ref_path)
    raise Unsupported(f"dtype {spec!r}")


def encode_array(arr: np.ndarray, spec: Any, ref_path: Callable[[Any], str]) -> Any:
    """An array of dtype ``spec`` as nested JSON lists (a 0-d array as its element)."""
    if arr.ndim == 0:
        return encode_value(arr[()], spec, ref_path)
    if arr.ndim == 1:
        return [encode_value(arr[i], spec, ref_path) for i in range(arr.shape[0])]
    return [encode_array(arr[i], spec, ref_path) for i in range(arr.shape[0])]


def _untext(x: Any) -> str | bytes:
    if isinstance(x, dict) and "base64" in x:
        return base64.b64decode(x["base64"])
    return x


def _float(x: Any) -> float:
    return float(x) if isinstance(x, str) else x  # "NaN", "Infinity", "-Infinity" parse as floats


def decode_value(x: Any, spec: Any, make_ref: Callable[[str], Any]) -> Any:
    """One JSON element back to the Python value h5py would hand out for dtype ``spec``."""
    if isinstance(spec, str):
        dt = np.dtype(spec)
        if dt.kind == "c":
            return complex(_float(x[0]), _float(x[1]))
        if dt.kind == "f":
            return _float(x)
        if dt.kind in "SV":
            t = _untext(x)
            return t.encode("utf-8") if isinstance(t, str) else t
        return x
    if "ref" in spec:
        text = str(x)
        return make_ref(text[len(REF_PREFIX) :] if text.startswith(REF_PREFIX) else text)
    if "vlen_str" in spec:
        t = _untext(x)
        return t if isinstance(t, str) else t.decode("utf-8", errors="replace")
    if "fixed_str" in spec:
        t = _untext(x)
        return t.encode("utf-8") if isinstance(t, str) else t
    if "vlen" in spec:
        return decode_array(x, spec["vlen"], None, make_ref)
    if "compound" in spec:
        return tuple(decode_value(v, sub, make_ref) for v, (_n, sub, _o) in zip(x, spec["compound"]))
    if "subarray" in spec:
        return decode_array(x, spec["subarray"], tuple(spec["shape"]), make_ref)
    return x  # enum: the integer


def _flatten(x: Any, depth: int) -> list:
    if depth == 0:
        return [x]
    return [e for sub in x for e in _flatten(sub, depth - 1)]


def decode_array(x: Any, spec: Any, shape: tuple[int, ...] | None, make_ref: Callable[[str], Any]) -> np.ndarray:
    """Nested JSON lists back to an array of dtype ``spec`` and ``shape`` (None: a 1-D vlen element)."""
    if shape is None:  # vlen: a 1-D array of any length
        shape = (len(x),)
    dt = dtype_from_json(spec)
    elems = [decode_value(e, spec, make_ref) for e in _flatten(x, len(shape))]
    if dt.kind == "O":
        out = np.empty(len(elems), dtype=dt)
        for i, e in enumerate(elems):
            out[i] = e
        return out.reshape(shape)
    return np.array(elems, dtype=dt).reshape(shape)


def decode_attr(x: Any, spec: Mapping[str, Any] | None, make_ref: Callable[[str], Any]) -> Any:
    """A zarr attribute back to the value h5py returns for it (str, np.bytes_, numpy scalar or array)."""
    if spec is None:
        return guess_attr(x, make_ref)
    dt_spec = spec["dtype"]
    dt = dtype_from_json(dt_spec)
    shape = spec["shape"]
    if shape is None:
        return h5py.Empty(dt)
    if len(shape) == 0:
        v = decode_value(x, dt_spec, make_ref)
        if isinstance(dt_spec, dict) and ("ref" in dt_spec or "vlen_str" in dt_spec or "vlen" in dt_spec):
            return v
        return np.array(v, dtype=dt)[()]
    return decode_array(x, dt_spec, tuple(shape), make_ref)


def guess_attr(x: Any, make_ref: Callable[[str], Any]) -> Any:
    """A JSON attribute of a store without usidgpu metadata, as the nearest HDF5 value."""
    if isinstance(x, str):
        return make_ref(x[len(REF_PREFIX) :]) if x.startswith(REF_PREFIX) else x
    if isinstance(x, bool):
        return np.bool_(x)
    if isinstance(x, int):
        return np.int64(x)
    if isinstance(x, float):
        return np.float64(x)
    if isinstance(x, list):
        flat = _flatten_any(x)
        if flat and all(isinstance(v, str) for v in flat):
            if all(v.startswith(REF_PREFIX) for v in flat):
                out = np.empty(len(flat), dtype=object)
                for i, v in enumerate(flat):
                    out[i] = make_ref(v[len(REF_PREFIX) :])
                return out
            return np.array([v.encode("utf-8") for v in flat])  # pyUSID's labels/units style
        try:
            return np.asarray(x)
        except ValueError:
            return str(x)
    if x is None:
        return h5py.Empty("f8")
    import json

    return json.dumps(x)


def _flatten_any(x: Any) -> list:
    return [e for sub in x for e in (_flatten_any(sub) if isinstance(sub, list) else [sub])]


def encode_attr(
    value: Any, dtype: np.dtype, shape: tuple[int, ...] | None, ref_path: Callable[[Any], str]
) -> tuple[Any, dict[str, Any]]:
    """An attribute value as JSON, and the record of its HDF5 type for :data:`META`.

    Parameters
    ----------
    value : any
        The value as h5py reads it.
    dtype : numpy.dtype
        The attribute's stored HDF5 dtype (h5py's string/reference flavours included).
    shape : tuple of int or None
        The stored shape (None: a null dataspace).
    ref_path : callable
        Absolute path of an object reference's target (``""`` for a null one).

    Returns
    -------
    (json value, {"dtype": ..., "shape": ...})

    Raises
    ------
    Unsupported
        The dtype has no JSON encoding (opaque objects).
    """
    spec = dtype_to_json(dtype)
    if shape is None or isinstance(value, h5py.Empty):
        return None, {"dtype": spec, "shape": None}
    if len(shape) == 0:
        return encode_value(value, spec, ref_path), {"dtype": spec, "shape": []}
    return encode_array(np.asarray(value, dtype=dtype), spec, ref_path), {"dtype": spec, "shape": list(shape)}
