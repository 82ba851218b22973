"""The USID model in zarr: HDF5 ↔ zarr conversion and a read-only h5py-like view of a zarr store.

A zarr store written by :func:`h5_to_zarr` holds the same hierarchy as the HDF5 file — every
group, dataset and attribute at the same path — so :func:`usidgpu.open`, :func:`usidgpu.validate`
and ``MainDataset.blocks()`` work on it unchanged through :func:`open_zarr`, and
:func:`zarr_to_h5` gives back an HDF5 file with the same datasets (byte for byte), attributes
(same values and HDF5 type classes) and dimensions, which pyUSID reads as before.

Encoding (format ``usidgpu-h5-zarr``, version 1; zarr format 3)
------------------------------------------------------------------
Attributes stay readable by any zarr tool, as plain JSON:

* strings (variable or fixed length) → JSON strings (UTF-8 decoded; bytes that are not UTF-8
  become ``{"base64": "..."}``); string arrays (pyUSID's ``labels``/``units``) → lists of strings;
* numbers → JSON numbers (NaN and ±infinity as the strings ``"NaN"``, ``"Infinity"``,
  ``"-Infinity"``, as zarr v3 writes fill values); complex → ``[re, im]``; compound (structured)
  values → one list per record, fields in order; arrays → nested lists;
* **HDF5 object references** (``Position_Indices``, …, ``source_000``, ``DIMENSION_LIST``, any
  reference-valued attribute or dataset element) → the string ``"h5ref:<absolute path of the
  target>"`` (``"h5ref:"`` for a null or dangling reference);
* **region references are dropped** (attributes and datasets holding them): they are optional in
  USID, pyUSID no longer writes them, and zarr has no selection type. Each dropped item is listed
  in :attr:`ConvertReport.dropped`.

Each node also carries one reserved attribute, ``_usidgpu_h5``, that records what JSON cannot:
the HDF5 type and shape of every attribute (``"<u4"``, ``{"fixed_str": "ascii", "length": 5}``,
``{"vlen_str": "utf-8"}``, ``{"ref": "object"}``, compound/enum/vlen descriptions; shape
``null`` for an HDF5 null dataspace), a dataset's HDF5 dtype, shape and storage (chunks,
maxshape, compression, shuffle, fletcher32, scaleoffset, fill value), and a group's soft,
external and extra hard links. The adapter hides it from ``.attrs``; stores without it (written
by other tools) are read with JSON's own types.

Datasets: numbers, booleans and complex numbers are stored natively (HDF5 chunk shapes are kept
as zarr chunks; contiguous datasets get chunks of whole trailing axes of about 4 MB). Types zarr
v3 has no stable specification for — compound (structured) records, fixed-length strings,
subarrays — are stored as ``uint8`` arrays with one extra trailing axis of ``itemsize`` bytes (the
records' raw bytes, padding included) and viewed back as the recorded dtype, so they survive
byte for byte. Variable-length strings become zarr ``string`` arrays; object references
``"h5ref:/path"`` strings. Null-dataspace (``h5py.Empty``) datasets become shape-``(0,)`` arrays.
Data are copied in blocks of at most 64 MB (whole chunks), never a whole large dataset at once.

Not round-tripped: region references (dropped, see above); compound datasets with
variable-length or reference fields and variable-length (ragged) numeric datasets (skipped,
listed in ``dropped``); HDF5 filters other than gzip/lzf/szip/shuffle/fletcher32/scaleoffset
(the data come back uncompressed); attribute creation order and the file's userblock/libver
settings. Dimension scales (``DIMENSION_LIST``/``REFERENCE_LIST``) are re-attached with
``dims[i].attach_scale`` rather than written as raw attributes.
"""

from __future__ import annotations

import base64
import itertools
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..core.errors import FileProblem

REF_PREFIX = "h5ref:"
META = "_usidgpu_h5"
FORMAT = "usidgpu-h5-zarr"
VERSION = 1
BLOCK_BYTES = 64 * 2**20
AUTO_CHUNK_BYTES = 4 * 2**20
H5_SUFFIXES = (".h5", ".hdf5", ".hf5")
ZARR_SUFFIX = ".zarr"
READ_ONLY = "zarr stores are opened read-only; convert to HDF5 to modify"
_DIMSCALE_ATTRS = ("DIMENSION_LIST", "REFERENCE_LIST")


class _Unsupported(Exception):
    """A dtype this encoding cannot carry (the object is dropped and reported)."""


# ------------------------------------------------------------------------------ type checks
def is_dataset(obj: Any) -> bool:
    """True for an ``h5py.Dataset`` or a zarr-backed :class:`ZarrDataset`."""
    return isinstance(obj, (h5py.Dataset, ZarrDataset))


def is_group(obj: Any) -> bool:
    """True for an ``h5py.Group`` (files included) or a zarr-backed :class:`ZarrGroup`."""
    return isinstance(obj, (h5py.Group, ZarrGroup))


def is_reference(obj: Any) -> bool:
    """True for an HDF5 object reference or a :class:`ZarrReference`."""
    return isinstance(obj, (h5py.Reference, ZarrReference))


def is_zarr_path(path: str | os.PathLike) -> bool:
    """True for a path ending in ``.zarr`` or a directory holding ``zarr.json`` / ``.zgroup``."""
    text = os.fspath(path).rstrip("/\\")
    if text.lower().endswith(ZARR_SUFFIX):
        return True
    p = Path(text)
    return p.is_dir() and ((p / "zarr.json").is_file() or (p / ".zgroup").is_file())


def is_h5_path(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(H5_SUFFIXES)


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
    if dt.names is not None:
        return {
            "compound": [[name, dtype_to_json(dt.fields[name][0]), int(dt.fields[name][1])] for name in dt.names],
            "itemsize": int(dt.itemsize),
        }
    if dt.subdtype is not None:
        sub, shape = dt.subdtype
        return {"subarray": dtype_to_json(sub), "shape": list(shape)}
    if dt.kind == "O":
        raise _Unsupported(f"opaque object dtype {dt}")
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
    raise ValueError(f"unknown dtype description {spec!r}")


def _special(spec: Any) -> bool:
    """True when values of this dtype hold references, variable-length data or region refs."""
    if isinstance(spec, str):
        return False
    if "ref" in spec or "vlen_str" in spec or "vlen" in spec:
        return True
    if "compound" in spec:
        return any(_special(f[1]) for f in spec["compound"])
    if "subarray" in spec:
        return _special(spec["subarray"])
    return False


def _has_region(spec: Any) -> bool:
    if isinstance(spec, str):
        return False
    if spec.get("ref") == "region":
        return True
    for key in ("vlen", "subarray"):
        if key in spec:
            return _has_region(spec[key])
    if "compound" in spec:
        return any(_has_region(f[1]) for f in spec["compound"])
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


def _encode(value: Any, spec: Any, ref_path: Callable[[Any], str]) -> Any:
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
        raise _Unsupported(f"dtype {dt}")
    if "ref" in spec:
        return REF_PREFIX + ref_path(value)
    if "vlen_str" in spec or "fixed_str" in spec:
        return _text(value)
    if "vlen" in spec:
        return _encode_array(np.asarray(value), spec["vlen"], ref_path)
    if "enum" in spec:
        return int(value)
    if "compound" in spec:
        return [_encode(value[name], sub, ref_path) for name, sub, _off in spec["compound"]]
    if "subarray" in spec:
        return _encode_array(np.asarray(value), spec["subarray"], ref_path)
    raise _Unsupported(f"dtype {spec!r}")


def _encode_array(arr: np.ndarray, spec: Any, ref_path: Callable[[Any], str]) -> Any:
    if arr.ndim == 0:
        return _encode(arr[()], spec, ref_path)
    if arr.ndim == 1:
        return [_encode(arr[i], spec, ref_path) for i in range(arr.shape[0])]
    return [_encode_array(arr[i], spec, ref_path) for i in range(arr.shape[0])]


def _untext(x: Any) -> str | bytes:
    if isinstance(x, dict) and "base64" in x:
        return base64.b64decode(x["base64"])
    return x


def _float(x: Any) -> float:
    return float(x) if isinstance(x, str) else x  # "NaN", "Infinity", "-Infinity" parse as floats


def _decode(x: Any, spec: Any, make_ref: Callable[[str], Any]) -> Any:
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
        return _decode_array(x, spec["vlen"], None, make_ref)
    if "compound" in spec:
        return tuple(_decode(v, sub, make_ref) for v, (_n, sub, _o) in zip(x, spec["compound"]))
    if "subarray" in spec:
        return _decode_array(x, spec["subarray"], tuple(spec["shape"]), make_ref)
    return x  # enum: the integer


def _flatten(x: Any, depth: int) -> list:
    if depth == 0:
        return [x]
    return [e for sub in x for e in _flatten(sub, depth - 1)]


def _decode_array(x: Any, spec: Any, shape: tuple[int, ...] | None, make_ref: Callable[[str], Any]) -> np.ndarray:
    if shape is None:  # vlen: a 1-D array of any length
        shape = (len(x),)
    dt = dtype_from_json(spec)
    elems = [_decode(e, spec, make_ref) for e in _flatten(x, len(shape))]
    if dt.kind == "O":
        out = np.empty(len(elems), dtype=dt)
        for i, e in enumerate(elems):
            out[i] = e
        return out.reshape(shape)
    return np.array(elems, dtype=dt).reshape(shape)


def decode_attr(x: Any, spec: Mapping[str, Any] | None, make_ref: Callable[[str], Any]) -> Any:
    """A zarr attribute back to the value h5py returns for it (str, np.bytes_, numpy scalar or array)."""
    if spec is None:
        return _guess(x, make_ref)
    dt_spec = spec["dtype"]
    dt = dtype_from_json(dt_spec)
    shape = spec["shape"]
    if shape is None:
        return h5py.Empty(dt)
    if len(shape) == 0:
        v = _decode(x, dt_spec, make_ref)
        if isinstance(dt_spec, dict) and ("ref" in dt_spec or "vlen_str" in dt_spec or "vlen" in dt_spec):
            return v
        if dt.names is not None:
            return np.array(v, dtype=dt)[()]
        return np.array(v, dtype=dt)[()]
    return _decode_array(x, dt_spec, tuple(shape), make_ref)


def _guess(x: Any, make_ref: Callable[[str], Any]) -> Any:
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


# ------------------------------------------------------------------------------ read-only adapter
class ZarrReference:
    """An object reference inside a zarr store: the absolute path of its target (``""`` = null)."""

    __slots__ = ("path",)

    def __init__(self, path: str):
        self.path = path

    def __bool__(self) -> bool:
        return bool(self.path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ZarrReference) and other.path == self.path

    def __hash__(self) -> int:
        return hash(("ZarrReference", self.path))

    def __repr__(self) -> str:
        return f"<zarr object reference {self.path!r}>" if self.path else "<zarr object reference (null)>"


class _Plist:
    def __init__(self, nfilters: int):
        self._n = nfilters

    def get_nfilters(self) -> int:
        return self._n


class _Id:
    """Stands in for h5py's ObjectID where usidgpu asks ``obj.id.valid``."""

    def __init__(self, node: _ZarrNode):
        self._node = node

    @property
    def valid(self) -> bool:
        return not self._node._root._closed if isinstance(self._node, ZarrFile) else True

    def get_create_plist(self) -> _Plist:
        return _Plist(len(getattr(self._node, "_filters", ())))


class ZarrAttrs(Mapping):
    """Read-only, h5py-like attribute mapping of a zarr node (references as :class:`ZarrReference`)."""

    def __init__(self, node: _ZarrNode):
        raw = dict(node._z.attrs)
        meta = raw.pop(META, None)
        self._raw = raw
        self._types = meta.get("attrs", {}) if isinstance(meta, dict) else {}
        self._has_meta = isinstance(meta, dict)
        self._name = node.name

    def __getitem__(self, name: str) -> Any:
        if name not in self._raw:
            raise KeyError(f"no attribute {name!r} on {self._name}")
        spec = self._types.get(name) if self._has_meta else None
        return decode_attr(self._raw[name], spec, ZarrReference)

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, name: object) -> bool:
        return name in self._raw

    def __setitem__(self, name: str, value: Any) -> None:
        raise OSError(f"{self._name}: {READ_ONLY}")

    __delitem__ = __setitem__

    def create(self, *args: Any, **kwargs: Any) -> None:
        raise OSError(f"{self._name}: {READ_ONLY}")


class _ZarrNode:
    def __init__(self, root: ZarrFile | None, z: Any, name: str):
        self._root = root if root is not None else self  # type: ignore[assignment]
        self._z = z
        self._name = name
        meta = z.attrs.get(META)
        self._meta: dict[str, Any] = meta if isinstance(meta, dict) else {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def file(self) -> ZarrFile:
        return self._root

    @property
    def parent(self) -> ZarrGroup:
        return self._root[self._name.rsplit("/", 1)[0] or "/"]

    @property
    def attrs(self) -> ZarrAttrs:
        return ZarrAttrs(self)

    @property
    def id(self) -> _Id:
        return _Id(self)

    @property
    def ref(self) -> ZarrReference:
        return ZarrReference(self._name)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _ZarrNode)
            and type(other) is type(self)
            and other._root.filename == self._root.filename
            and other._name == self._name
        )

    def __hash__(self) -> int:
        return hash((self._root.filename, self._name))

    def __bool__(self) -> bool:
        return True


class ZarrGroup(_ZarrNode):
    """A read-only, h5py-like group of a zarr store."""

    def _abs(self, key: str) -> str:
        if key.startswith("/"):
            path = key
        else:
            path = (self._name.rstrip("/") + "/" + key) if key not in ("", ".") else self._name
        parts = [p for p in path.split("/") if p and p != "."]
        return "/" + "/".join(parts)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, ZarrReference):
            if not key.path:
                raise ValueError("cannot dereference a null reference")
            key = key.path
        if not isinstance(key, str):
            raise TypeError(f"cannot index a zarr group with {type(key).__name__}")
        return self._root._lookup(self._abs(key))

    def get(self, key: str, default: Any = None, getlink: bool = False) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        try:
            self[key]
            return True
        except KeyError:
            return False

    def keys(self) -> list[str]:
        return list(self._root._children(self._name))

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def values(self) -> list[Any]:
        return [self[k] for k in self.keys()]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, self[k]) for k in self.keys()]

    def visititems(self, func: Callable[[str, Any], Any]) -> Any:
        """Call ``func(relative_name, obj)`` for every object below, once each, in name order (as h5py)."""
        prefix = self._name.rstrip("/") + "/"
        kids = self._root._kids

        def walk(path: str) -> Any:  # depth first, children in name order, links not followed (as H5Ovisit)
            for child in kids.get(path, ()):
                out = func(child[len(prefix) :], self._root._lookup(child))
                if out is None:
                    out = walk(child)
                if out is not None:
                    return out
            return None

        return walk(self._name)

    def visit(self, func: Callable[[str], Any]) -> Any:
        return self.visititems(lambda name, _obj: func(name))

    def __repr__(self) -> str:
        return f'<zarr-backed USID group "{self._name}" ({len(self)} members)>'

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise OSError(f"{self._name}: {READ_ONLY}")

    create_group = create_dataset = require_group = require_dataset = __setitem__ = __delitem__ = _read_only


def _full_key(key: Any, ndim: int) -> tuple:
    """An h5py-style index as a tuple of one entry per axis (Ellipsis expanded)."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        rest = [k for k in key[i + 1 :] if k is not Ellipsis]
        fill = ndim - i - len(rest)
        key = key[:i] + (slice(None),) * max(fill, 0) + tuple(rest)
    if len(key) > ndim:
        raise IndexError(f"too many indices ({len(key)}) for a dataset of rank {ndim}")
    return key + (slice(None),) * (ndim - len(key))


class ZarrDataset(_ZarrNode):
    """A read-only, h5py-like dataset of a zarr store: ``ds[...]``, ``read_direct``, ``shape``, ``dtype``."""

    def __init__(self, root: ZarrFile, z: Any, name: str):
        super().__init__(root, z, name)
        self._encoding = self._meta.get("encoding", "native")
        if "dtype" in self._meta:
            self._dtype = dtype_from_json(self._meta["dtype"])
        elif z.dtype.kind in "OTU":  # zarr's own string arrays
            self._dtype = h5py.string_dtype()
            self._encoding = "vlen_str"
        else:
            self._dtype = np.dtype(z.dtype)
        if "shape" in self._meta:
            self._shape = None if self._meta["shape"] is None else tuple(self._meta["shape"])
        else:
            self._shape = tuple(z.shape)
        self._filters = tuple(getattr(z, "filters", ()) or ())

    @property
    def shape(self) -> tuple[int, ...] | None:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def ndim(self) -> int:
        return 0 if self._shape is None else len(self._shape)

    @property
    def size(self) -> int:
        return 0 if self._shape is None else int(np.prod(self._shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self._dtype.itemsize

    @property
    def chunks(self) -> tuple[int, ...] | None:
        if self._shape is None or not self._shape:
            return None
        return tuple(self._z.chunks[: len(self._shape)])

    @property
    def maxshape(self) -> tuple[int | None, ...] | None:
        storage = self._meta.get("storage", {})
        if "maxshape" in storage and storage["maxshape"] is not None:
            return tuple(storage["maxshape"])
        return self._shape

    @property
    def compression(self) -> str | None:
        comps = tuple(getattr(self._z, "compressors", ()) or ())
        if not comps:
            return None
        name = type(comps[0]).__name__.lower()
        return name.replace("codec", "") or None

    @property
    def compression_opts(self) -> Any:
        comps = tuple(getattr(self._z, "compressors", ()) or ())
        return getattr(comps[0], "level", None) if comps else None

    @property
    def fillvalue(self) -> Any:
        return self._z.fill_value

    @property
    def shuffle(self) -> bool:
        return False

    @property
    def fletcher32(self) -> bool:
        return False

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of an unsized (scalar) dataset")
        return self._shape[0]

    def __repr__(self) -> str:
        return f'<zarr-backed USID dataset "{self._name}": shape {self._shape}, type "{self._dtype.str}">'

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.asarray(self[()])
        return out.astype(dtype) if dtype is not None else out

    def __getitem__(self, key: Any) -> Any:
        if self._shape is None:
            return h5py.Empty(self._dtype)
        if isinstance(key, str) or (isinstance(key, tuple) and any(isinstance(k, str) for k in key)):
            raise TypeError("field selection by name is not supported; read the records and index the result")
        full = _full_key(key, len(self._shape))
        fancy = any(isinstance(k, (list, np.ndarray)) for k in full)
        if self._encoding == "bytes":
            zkey = full + (slice(None),)
            raw = self._z.oindex[zkey] if fancy else self._z[zkey]
            raw = np.ascontiguousarray(raw, dtype=np.uint8)
            out = raw.view(self._dtype).reshape(raw.shape[:-1])
        else:
            out = self._z.oindex[full] if fancy else self._z[full]
            out = np.asarray(out)
            if self._encoding == "vlen_str":
                flat = np.empty(out.size, dtype=object)
                for i, s in enumerate(out.reshape(-1)):
                    flat[i] = str(s).encode("utf-8")
                out = flat.reshape(out.shape)
            elif self._encoding == "ref":
                flat = np.empty(out.size, dtype=object)
                for i, s in enumerate(out.reshape(-1)):
                    s = str(s)
                    flat[i] = ZarrReference(s[len(REF_PREFIX) :] if s.startswith(REF_PREFIX) else s)
                out = flat.reshape(out.shape)
            elif out.dtype != self._dtype:
                out = out.astype(self._dtype)
        return out[()] if out.ndim == 0 else out

    def read_direct(self, dest: np.ndarray, source_sel: Any = None, dest_sel: Any = None) -> None:
        """Read ``self[source_sel]`` into ``dest[dest_sel]`` (h5py semantics)."""
        data = self[() if source_sel is None else source_sel]
        dest[() if dest_sel is None else dest_sel] = data

    def asstr(self, encoding: str = "utf-8", errors: str = "strict") -> Any:
        ds = self

        class _AsStr:
            def __getitem__(self, key: Any) -> Any:
                out = np.asarray(ds[key], dtype=object)
                flat = np.array([b.decode(encoding, errors) for b in out.reshape(-1)], dtype=object)
                return flat.reshape(out.shape)[()]

        return _AsStr()

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise OSError(f"{self._name}: {READ_ONLY}")

    write_direct = resize = __setitem__ = _read_only


class ZarrFile(ZarrGroup):
    """A zarr store seen like a read-only ``h5py.File`` (see :func:`open_zarr`)."""

    def __init__(self, group: Any, path: Path):
        self._closed = False
        self.filename = str(path)
        self.mode = "r"
        super().__init__(None, group, "/")
        self._nodes: dict[str, Any] = {"/": group}
        h5_path = {"": "/"}  # zarr path → HDF5 path (names zarr cannot hold are escaped, see _zarr_name)
        renamed = {"": _renamed(group)}
        for rel, node in sorted(group.members(max_depth=None), key=lambda item: item[0]):
            head, _, last = rel.rpartition("/")
            path = h5_path[head].rstrip("/") + "/" + renamed[head].get(last, last)
            h5_path[rel] = path
            if _is_zgroup(node):
                renamed[rel] = _renamed(node)
            self._nodes[path] = node
        self._paths = sorted(p for p in self._nodes if p != "/")
        self._kids: dict[str, list[str]] = {}
        for p in self._paths:
            self._kids.setdefault(p.rsplit("/", 1)[0] or "/", []).append(p)
        self._cache: dict[str, _ZarrNode] = {"/": self}
        self._links: dict[str, dict] = {}  # absolute link path → link description
        for path, node in self._nodes.items():
            meta = node.attrs.get(META) if _is_zgroup(node) else None
            if isinstance(meta, dict):
                for name, link in meta.get("links", {}).items():
                    self._links[(path.rstrip("/") + "/" + name)] = link

    def _lookup(self, path: str, depth: int = 0) -> _ZarrNode:
        if path in self._cache:
            return self._cache[path]
        if path in self._nodes:
            z = self._nodes[path]
            node: _ZarrNode = ZarrGroup(self, z, path) if _is_zgroup(z) else ZarrDataset(self, z, path)
            self._cache[path] = node
            return node
        # a soft or hard link recorded by h5_to_zarr, possibly on the way to the target
        parts = path.strip("/").split("/")
        for i in range(len(parts), 0, -1):
            head = "/" + "/".join(parts[:i])
            link = self._links.get(head)
            if link is None:
                continue
            target = link.get("soft") or link.get("hard")
            if target is None or depth > 32:
                break
            if not target.startswith("/"):
                target = head.rsplit("/", 1)[0] + "/" + target
            rest = "/".join(parts[i:])
            return self._lookup(self._abs(target + ("/" + rest if rest else "")), depth + 1)
        raise KeyError(f"{self.filename}: no object {path!r}")

    def _children(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        names = {p[len(prefix) :] for p in self._kids.get(path, ())}
        names.update(k[len(prefix) :] for k in self._links if k.startswith(prefix) and "/" not in k[len(prefix) :])
        return sorted(names)

    @property
    def parent(self) -> ZarrGroup:
        return self

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> ZarrFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f'<zarr-backed USID file "{self.filename}" (mode r)>'


def _renamed(zgroup: Any) -> dict[str, str]:
    meta = zgroup.attrs.get(META)
    return dict(meta.get("names", {})) if isinstance(meta, dict) else {}


def _zarr_name(name: str, taken: set[str]) -> str:
    """``name`` as a zarr node name: zarr reserves names starting with ``__`` and names of only
    periods, and its local store turns a backslash into a path separator; such names are
    percent-escaped (and recorded under ``names`` in the parent's ``_usidgpu_h5``)."""
    if "\\" not in name and not name.startswith("__") and name.strip(".") and "%" not in name:
        return name
    from urllib.parse import quote

    escaped = quote(name, safe="")
    if escaped.startswith("__"):
        escaped = "%5F" + escaped[1:]
    if not escaped.strip("."):
        escaped = escaped.replace(".", "%2E")
    while escaped in taken:
        escaped += "_"
    return escaped


def _is_zgroup(z: Any) -> bool:
    import zarr

    return isinstance(z, zarr.Group)


def open_zarr(path: str | os.PathLike, mode: str = "r") -> ZarrFile:
    """Open a zarr store as a read-only, h5py-like file (what :func:`usidgpu.open` uses for ``.zarr``).

    Raises
    ------
    FileProblem
        ``mode`` is not ``"r"``, or the path is missing or not a zarr group.
    """
    p = Path(path)
    if mode != "r":
        raise FileProblem(f"{p}: {READ_ONLY}")
    if not p.exists():
        raise FileProblem(f"{p}: no such file")
    if not p.is_dir() or not ((p / "zarr.json").is_file() or (p / ".zgroup").is_file()):
        raise FileProblem(f"{p}: not a zarr store (no zarr.json or .zgroup)")
    import zarr

    try:
        group = zarr.open_group(store=str(p), mode="r")
    except Exception as exc:  # zarr raises many types for a damaged store
        raise FileProblem(f"{p}: cannot be read as a zarr group ({type(exc).__name__}: {exc})") from None
    return ZarrFile(group, p)


# ------------------------------------------------------------------------------ conversion
@dataclass
class ConvertReport:
    """What a conversion copied.

    Attributes
    ----------
    source, destination : str
    groups, datasets, attributes : int
        Objects written (the root group included in ``groups``).
    links : int
        Soft, external and extra hard links recreated.
    bytes : int
        Dataset bytes copied (in their HDF5 dtype).
    seconds : float
    dropped : list of str
        What could not be carried (``"<path>: <why>"``), e.g. region references.
    """

    source: str
    destination: str
    groups: int = 0
    datasets: int = 0
    attributes: int = 0
    links: int = 0
    bytes: int = 0
    seconds: float = 0.0
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        from ..core.memory import format_bytes

        text = (
            f"{self.source} -> {self.destination}: {self.groups} groups, {self.datasets} datasets, "
            f"{self.attributes} attributes, {format_bytes(self.bytes)} in {self.seconds:.2f} s"
        )
        if self.links:
            text += f", {self.links} links"
        return text


def _auto_chunks(shape: tuple[int, ...], itemsize: int, target: int = AUTO_CHUNK_BYTES) -> tuple[int, ...]:
    """Chunks of whole trailing axes, about ``target`` bytes (slow axes are cut first)."""
    chunks = [max(1, n) for n in shape]
    for ax in range(len(shape)):
        rest = int(np.prod(chunks[ax + 1 :], dtype=np.int64)) * max(itemsize, 1)
        if rest <= target:
            chunks[ax] = max(1, min(chunks[ax], target // rest))
            break
        chunks[ax] = 1
    return tuple(chunks)


def _blocks(
    shape: tuple[int, ...], chunks: tuple[int, ...], itemsize: int, budget: int | None = None
) -> Iterator[tuple]:
    """Selections of whole chunks, at most ``budget`` bytes each (one chunk if a chunk is larger)."""
    budget = BLOCK_BYTES if budget is None else budget
    if not shape:
        yield ()
        return
    if 0 in shape:
        return
    band = chunks[0] * int(np.prod(shape[1:], dtype=np.int64)) * max(itemsize, 1)
    if band <= budget:
        step = max(1, budget // band) * chunks[0]
        rest = tuple(slice(None) for _ in shape[1:])
        for a in range(0, shape[0], step):
            yield (slice(a, min(a + step, shape[0])),) + rest
        return
    ranges = [range(0, n, c) for n, c in zip(shape, chunks)]
    for starts in itertools.product(*ranges):
        yield tuple(slice(s, min(s + c, n)) for s, c, n in zip(starts, chunks, shape))


def _ref_path(h5: h5py.File) -> Callable[[Any], str]:
    def path(ref: Any) -> str:
        if not isinstance(ref, h5py.Reference) or not ref:
            return ""
        try:
            name = h5[ref].name
        except Exception:
            return ""  # dangling: becomes a null reference
        return name or ""

    return path


def _attrs_to_json(obj: Any, h5: h5py.File, report: ConvertReport) -> dict[str, Any]:
    values: dict[str, Any] = {}
    types: dict[str, Any] = {}
    ref_path = _ref_path(h5)
    for name in obj.attrs:
        where = f"{obj.name}@{name}"
        try:
            aid = obj.attrs.get_id(name)
            spec = dtype_to_json(aid.dtype)
            if _has_region(spec):
                report.dropped.append(f"{where}: region reference (not carried to zarr)")
                continue
            shape = aid.shape
            value = obj.attrs[name]
            if shape is None or isinstance(value, h5py.Empty):
                values[name] = None
                types[name] = {"dtype": spec, "shape": None}
            elif len(shape) == 0:
                values[name] = _encode(value, spec, ref_path)
                types[name] = {"dtype": spec, "shape": []}
            else:
                values[name] = _encode_array(np.asarray(value, dtype=aid.dtype), spec, ref_path)
                types[name] = {"dtype": spec, "shape": list(shape)}
        except (_Unsupported, OSError, TypeError, ValueError) as exc:
            report.dropped.append(f"{where}: attribute cannot be carried ({exc})")
            continue
        report.attributes += 1
    values[META] = {"format": FORMAT, "version": VERSION, "attrs": types}
    return values


def _storage(dset: h5py.Dataset) -> dict[str, Any]:
    opts = dset.compression_opts
    return {
        "chunks": list(dset.chunks) if dset.chunks else None,
        "maxshape": list(dset.maxshape) if dset.maxshape is not None else None,
        "compression": dset.compression,
        "compression_opts": list(opts) if isinstance(opts, tuple) else opts,
        "shuffle": bool(dset.shuffle),
        "fletcher32": bool(dset.fletcher32),
        "scaleoffset": dset.scaleoffset,
    }


def _encoding_of(spec: Any, dt: np.dtype) -> str:
    if isinstance(spec, str) and dt.kind in "biufc":
        return "native"
    if isinstance(spec, dict) and "enum" in spec:
        return "native"
    if isinstance(spec, dict) and spec.get("ref") == "object":
        return "ref"
    if isinstance(spec, dict) and "vlen_str" in spec:
        return "vlen_str"
    if _special(spec):
        raise _Unsupported(f"dtype {dt} (variable-length, reference or region-reference elements)")
    return "bytes"  # compound, fixed-length strings, subarrays, opaque: raw bytes


def _copy_dataset_to_zarr(
    dset: h5py.Dataset, parent: Any, name: str, h5: h5py.File, chunks: Any, report: ConvertReport
) -> None:
    dt = dset.dtype
    spec = dtype_to_json(dt)
    encoding = _encoding_of(spec, dt)
    shape = dset.shape
    attrs = _attrs_to_json(dset, h5, report)
    meta = attrs[META]
    meta.update(
        kind="dataset",
        dtype=spec,
        shape=None if shape is None else list(shape),
        encoding=encoding,
        storage=_storage(dset),
    )
    try:
        fill = dset.fillvalue
        meta["storage"]["fillvalue"] = None if fill is None else _encode(fill, spec, _ref_path(h5))
    except (_Unsupported, TypeError, ValueError, OSError):
        meta["storage"]["fillvalue"] = None
    zshape = (0,) if shape is None else tuple(shape)
    if isinstance(chunks, Mapping) and dset.name in chunks:
        zchunks = tuple(chunks[dset.name])
    elif isinstance(chunks, (tuple, list)) and len(chunks) == len(zshape):
        zchunks = tuple(chunks)
    elif dset.chunks:
        zchunks = tuple(dset.chunks)
    else:
        zchunks = _auto_chunks(zshape, dt.itemsize if encoding in ("native", "bytes") else 64)
    zchunks = tuple(max(1, min(int(c), max(n, 1))) for c, n in zip(zchunks, zshape))
    if encoding == "native":
        zdtype: Any = np.dtype(dt.str).newbyteorder("<") if dt.itemsize > 1 else np.dtype(dt.str)
        fill_value: Any = 0
        if isinstance(meta["storage"]["fillvalue"], (int, float)) and zdtype.kind in "iuf":
            fill_value = meta["storage"]["fillvalue"]
        elif zdtype.kind == "b":
            fill_value = False
    elif encoding == "bytes":
        zdtype, fill_value = np.dtype(np.uint8), 0
    else:
        zdtype, fill_value = str, ""
    arr_shape = zshape + ((dt.itemsize,) if encoding == "bytes" else ())
    arr_chunks = zchunks + ((dt.itemsize,) if encoding == "bytes" else ())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z = parent.create_array(
            name, shape=arr_shape, dtype=zdtype, chunks=arr_chunks, fill_value=fill_value, attributes=attrs
        )
    if shape is not None:
        ref_path = _ref_path(h5)
        for sel in _blocks(zshape, zchunks, dt.itemsize if encoding != "vlen_str" else 64):
            data = dset[sel] if sel else dset[()]
            data = np.asarray(data, dtype=dt) if encoding in ("native", "bytes") else np.asarray(data)
            if encoding == "native":
                block = data.astype(zdtype, copy=False)
            elif encoding == "bytes":
                block = np.ascontiguousarray(data).view(np.uint8).reshape(data.shape + (dt.itemsize,))
            elif encoding == "vlen_str":
                flat = [v if isinstance(v, str) else bytes(v).decode("utf-8") for v in data.reshape(-1)]
                block = np.array(flat, dtype=object).reshape(data.shape).astype(str) if flat else data.astype(str)
            else:  # ref
                flat = [REF_PREFIX + ref_path(v) for v in data.reshape(-1)]
                block = np.array(flat, dtype=str).reshape(data.shape)
            z[sel + ((slice(None),) if encoding == "bytes" else ())] = block
            report.bytes += int(data.size) * dt.itemsize
    report.datasets += 1


def _copy_group_to_zarr(
    group: h5py.Group, zgroup: Any, h5: h5py.File, chunks: Any, seen: dict, report: ConvertReport
) -> None:
    links: dict[str, Any] = {}
    names: dict[str, str] = {}
    taken = set(group)
    for name in group:
        path = group.name.rstrip("/") + "/" + name
        zname = _zarr_name(name, taken)
        if zname != name:
            names[zname] = name
            taken.add(zname)
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.SoftLink):
            links[name] = {"soft": link.path}
            report.links += 1
            continue
        if isinstance(link, h5py.ExternalLink):
            links[name] = {"external": [link.filename, link.path]}
            report.links += 1
            continue
        try:
            obj = group[name]
        except (KeyError, OSError) as exc:
            report.dropped.append(f"{path}: cannot be opened ({exc})")
            continue
        if obj.id in seen:  # a second hard link to an object already copied
            links[name] = {"hard": seen[obj.id]}
            report.links += 1
            continue
        seen[obj.id] = path
        if isinstance(obj, h5py.Group):
            attrs = _attrs_to_json(obj, h5, report)
            attrs[META]["kind"] = "group"
            child = zgroup.create_group(zname, attributes=attrs)
            report.groups += 1
            _copy_group_to_zarr(obj, child, h5, chunks, seen, report)
        elif isinstance(obj, h5py.Dataset):
            try:
                _copy_dataset_to_zarr(obj, zgroup, zname, h5, chunks, report)
            except _Unsupported as exc:
                report.dropped.append(f"{path}: dataset not carried ({exc})")
        else:
            report.dropped.append(f"{path}: committed datatype or other object (not carried)")
    if links or names:
        meta = dict(zgroup.attrs[META])
        if links:
            meta["links"] = links
        if names:
            meta["names"] = names
        zgroup.attrs[META] = meta


def _refuse_existing(dst: Path) -> None:
    if dst.exists() or dst.is_symlink():
        raise FileProblem(f"{dst}: already exists; refusing to overwrite it")


def h5_to_zarr(src: str | os.PathLike, dst: str | os.PathLike, chunks: Any = None) -> ConvertReport:
    """Copy a (USID) HDF5 file to a zarr (format 3) store: every group, dataset and attribute.

    Parameters
    ----------
    src : path
        HDF5 file (opened read-only).
    dst : path
        New zarr store (a directory); it must not exist.
    chunks : None, tuple or mapping, optional
        ``None`` keeps each dataset's HDF5 chunks (about 4 MB of whole trailing axes for
        contiguous datasets); a tuple applies to every dataset of that rank; a mapping gives
        chunks per dataset path.

    Returns
    -------
    ConvertReport

    Raises
    ------
    FileProblem
        ``src`` is missing or not HDF5, or ``dst`` exists. On any failure the partial ``dst`` is removed.
    """
    from .file import open_h5

    src, dst = Path(src), Path(dst)
    _refuse_existing(dst)
    report = ConvertReport(str(src), str(dst))
    t0 = time.perf_counter()
    import zarr

    from .._version import __version__

    with open_h5(src, "r") as h5:
        try:
            attrs = _attrs_to_json(h5, h5, report)
            attrs[META].update(kind="group", source=src.name, usidgpu_version=__version__)
            root = zarr.open_group(store=str(dst), mode="w-", zarr_format=3, attributes=attrs)
            report.groups += 1
            _copy_group_to_zarr(h5, root, h5, chunks, {h5.id: "/"}, report)
        except BaseException:
            shutil.rmtree(dst, ignore_errors=True)
            raise
    report.seconds = time.perf_counter() - t0
    return report


def _h5_options(meta: Mapping[str, Any], shape: tuple[int, ...], zchunks: tuple[int, ...] | None) -> dict[str, Any]:
    storage = meta.get("storage") if meta else None
    if storage is None:  # a store from another tool: keep its chunking, no compression
        return {"chunks": zchunks if zchunks and shape and 0 not in shape else None}
    opts: dict[str, Any] = {}
    if storage.get("chunks"):
        opts["chunks"] = tuple(storage["chunks"])
    if storage.get("maxshape") is not None and shape is not None:
        maxshape = tuple(storage["maxshape"])
        if maxshape != tuple(shape):
            opts["maxshape"] = maxshape
    comp = storage.get("compression")
    filt = {"gzip": h5py.h5z.FILTER_DEFLATE, "lzf": h5py.h5z.FILTER_LZF, "szip": h5py.h5z.FILTER_SZIP}
    if comp in filt and h5py.h5z.filter_avail(filt[comp]):
        opts["compression"] = comp
        copts = storage.get("compression_opts")
        if copts is not None:
            opts["compression_opts"] = tuple(copts) if isinstance(copts, list) else copts
    if storage.get("shuffle"):
        opts["shuffle"] = True
    if storage.get("fletcher32"):
        opts["fletcher32"] = True
    if storage.get("scaleoffset") is not None:
        opts["scaleoffset"] = storage["scaleoffset"]
    if opts and "chunks" not in opts and shape and 0 not in shape:
        opts["chunks"] = True
    return opts


def _write_attrs(obj: Any, znode: _ZarrNode, h5: h5py.File, report: ConvertReport, scales: list) -> None:
    def make_ref(path: str) -> Any:
        if not path:
            return h5py.Reference()
        try:
            return h5[path].ref
        except (KeyError, ValueError):
            return h5py.Reference()

    raw = dict(znode._z.attrs)
    meta = raw.pop(META, None)
    types = meta.get("attrs", {}) if isinstance(meta, dict) else None
    for name, x in raw.items():
        spec = types.get(name) if types is not None else None
        if spec is not None and name in _DIMSCALE_ATTRS and isinstance(spec["dtype"], dict):
            if name == "DIMENSION_LIST":
                scales.append((obj, x))
            continue  # REFERENCE_LIST is rebuilt by attach_scale
        try:
            value = decode_attr(x, spec, make_ref)
            if spec is None:
                obj.attrs[name] = value
            elif isinstance(value, h5py.Empty):
                obj.attrs[name] = value
            else:
                dt = dtype_from_json(spec["dtype"])
                obj.attrs.create(name, data=value, shape=tuple(spec["shape"]), dtype=dt)
        except (TypeError, ValueError, OSError, KeyError) as exc:
            report.dropped.append(f"{znode.name}@{name}: attribute cannot be written to HDF5 ({exc})")
            continue
        report.attributes += 1


def zarr_to_h5(src: str | os.PathLike, dst: str | os.PathLike) -> ConvertReport:
    """Copy a zarr store (one :func:`h5_to_zarr` wrote, or any zarr group) to a new HDF5 file.

    Object references written as ``"h5ref:/path"`` become HDF5 object references again; the
    HDF5 dtypes, shapes, chunking and compression recorded by :func:`h5_to_zarr` are restored.

    Raises
    ------
    FileProblem
        ``src`` is missing or not zarr, or ``dst`` exists. On any failure the partial ``dst`` is removed.
    """
    src, dst = Path(src), Path(dst)
    _refuse_existing(dst)
    zf = open_zarr(src, "r")
    report = ConvertReport(str(src), str(dst))
    t0 = time.perf_counter()
    try:
        with h5py.File(dst, "w-") as h5:
            nodes: list[tuple[Any, _ZarrNode]] = [(h5, zf)]
            deferred: list[tuple[h5py.Dataset, ZarrDataset]] = []
            links: list[tuple[str, dict]] = []
            report.groups += 1
            for path in zf._paths:
                znode = zf._lookup(path)
                if isinstance(znode, ZarrGroup):
                    nodes.append((h5.create_group(path), znode))
                    report.groups += 1
                    continue
                nodes.append((_create_h5_dataset(h5, path, znode, deferred, report), znode))
            for path, link in zf._links.items():
                links.append((path, link))
            for dset, znode in deferred:  # reference datasets, now that every target exists
                for sel in _blocks(dset.shape, dset.chunks or dset.shape, 8):
                    refs = np.asarray(znode[sel] if sel else znode[()], dtype=object)
                    out = np.empty(refs.shape, dtype=h5py.ref_dtype)
                    for idx, r in np.ndenumerate(refs):
                        out[idx] = h5[r.path].ref if r and r.path in h5 else h5py.Reference()
                    dset[sel if sel else ()] = out
            for path, link in links:
                if "soft" in link:
                    h5[path] = h5py.SoftLink(link["soft"])
                elif "external" in link:
                    h5[path] = h5py.ExternalLink(*link["external"])
                elif "hard" in link and link["hard"] in h5:
                    h5[path] = h5[link["hard"]]
                else:
                    report.dropped.append(f"{path}: link {link} cannot be recreated")
                    continue
                report.links += 1
            scales: list = []
            for obj, znode in nodes:
                _write_attrs(obj, znode, h5, report, scales)
            for obj, dim_list in scales:
                for axis, targets in enumerate(dim_list):
                    for t in targets:
                        path = str(t)[len(REF_PREFIX) :]
                        try:
                            obj.dims[axis].attach_scale(h5[path])
                        except (KeyError, ValueError, RuntimeError, OSError) as exc:
                            report.dropped.append(f"{obj.name}: dimension scale {path} not attached ({exc})")
    except BaseException:
        if dst.exists():
            dst.unlink()
        raise
    finally:
        zf.close()
    report.seconds = time.perf_counter() - t0
    return report


def _create_h5_dataset(
    h5: h5py.File, path: str, znode: ZarrDataset, deferred: list, report: ConvertReport
) -> h5py.Dataset:
    dt = znode.dtype
    meta = znode._meta
    if znode.shape is None:
        dset = h5.create_dataset(path, data=h5py.Empty(dt))
        report.datasets += 1
        return dset
    shape = znode.shape
    opts = _h5_options(meta, shape, znode.chunks)
    storage = meta.get("storage") or {}
    fill = storage.get("fillvalue")
    if fill is not None and znode._encoding in ("native", "bytes"):
        try:
            spec = meta["dtype"]
            fv = _decode(fill, spec, lambda p: None)
            opts["fillvalue"] = np.array(fv, dtype=dt)[()]
        except (TypeError, ValueError, KeyError):
            pass
    dset = h5.create_dataset(path, shape=shape, dtype=dt, **opts)
    if znode._encoding == "ref":
        deferred.append((dset, znode))
    else:
        zchunks = znode.chunks or shape
        for sel in _blocks(shape, zchunks, dt.itemsize if dt.kind != "O" else 64):
            data = znode[sel] if sel else znode[()]
            dset[sel if sel else ()] = data
            report.bytes += int(np.size(data)) * dt.itemsize
    report.datasets += 1
    return dset
