"""A zarr store seen through the node protocol: a read-only view shaped like h5py's objects.

:func:`open_zarr` opens a store written by :func:`usidgpu.storage.convert.h5_to_zarr` (or any
zarr group) as a :class:`ZarrFile`; its groups, datasets and attributes provide the members of
:mod:`usidgpu.storage.protocol`, so :func:`usidgpu.open`, :func:`usidgpu.validate` and
``MainDataset.blocks()`` read it unchanged. Attribute values come back as h5py hands them out
(:func:`usidgpu.storage.codec.decode_attr`), object references as :class:`ZarrReference`,
which groups dereference like h5py references. Records, fixed-length strings and subarrays
stored as raw bytes (see :mod:`usidgpu.storage.convert`) are viewed back as their recorded dtype.

The view is read-only: anything that would write raises ``OSError`` (:data:`READ_ONLY`). zarr is
imported only when a store is opened.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..core.errors import FileProblem
from .codec import META, REF_PREFIX, decode_attr, dtype_from_json
from .nodes import register_node_types

ZARR_SUFFIX = ".zarr"
READ_ONLY = "zarr stores are opened read-only; convert to HDF5 to modify"


def is_zarr_path(path: str | os.PathLike) -> bool:
    """True for a path ending in ``.zarr`` or a directory holding ``zarr.json`` / ``.zgroup``."""
    text = os.fspath(path).rstrip("/\\")
    if text.lower().endswith(ZARR_SUFFIX):
        return True
    p = Path(text)
    return p.is_dir() and ((p / "zarr.json").is_file() or (p / ".zgroup").is_file())


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
        # h5py's rule: false once the file is closed. Groups and datasets of a closed store stay
        # readable (zarr holds no handles), as they always were here; only the file says closed.
        return True

    @property
    def meta(self) -> dict[str, Any]:
        """What :mod:`usidgpu.storage.convert` recorded about this node (empty for foreign stores)."""
        return self._meta

    def stored_attrs(self) -> dict[str, Any]:
        """The attributes as stored: plain JSON, the :data:`~usidgpu.storage.codec.META` record included."""
        return dict(self._z.attrs)


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
        if self._shape and tuple(z.shape[: len(self._shape)]) != self._shape:
            # the recorded HDF5 shape and the array's own disagree (a damaged or edited zarr.json):
            # reads take the array's shape, which may be anything
            raise FileProblem(
                f"{root.filename}: damaged zarr store: {name} is recorded with shape {self._shape} but its "
                f"array has shape {tuple(z.shape)}"
            )
        self._filters = tuple(getattr(z, "filters", ()) or ())

    @property
    def encoding(self) -> str:
        """How the values are stored: ``native``, ``bytes`` (raw records), ``vlen_str`` or ``ref``."""
        return self._encoding

    @property
    def filters(self) -> tuple[Any, ...]:
        """The zarr filters the data pass through (compressors excluded)."""
        return self._filters

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
        self.read_only_reason = READ_ONLY
        super().__init__(None, group, "/")
        self._nodes: dict[str, Any] = {"/": group}
        h5_path = {"": "/"}  # zarr path → HDF5 path (names zarr cannot hold are escaped: see convert.zarr_name)
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

    def walk(self) -> Iterator[tuple[str, _ZarrNode]]:
        """Every group and dataset below the root as ``(absolute path, node)``, parents first."""
        for path in self._paths:
            yield path, self._lookup(path)

    @property
    def links(self) -> dict[str, dict]:
        """Soft, external and extra hard links recorded by the converter: absolute path → link."""
        return dict(self._links)

    def __bool__(self) -> bool:
        return not self._closed

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
        raise FileProblem(f"{p}: cannot be read as a zarr group ({_short(exc)})") from None
    try:
        return ZarrFile(group, p)  # reads the metadata of every group and array of the store
    except Exception as exc:  # a damaged zarr.json below the root: JSON, key, type or value errors
        raise FileProblem(f"{p}: damaged zarr store: a group or array cannot be read ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    """``Type: first line`` of an error, cut to a length fit for a one-line message."""
    text = str(exc).strip()
    line = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
    return line if len(line) <= 200 else line[:199] + "…"


register_node_types(group=ZarrGroup, dataset=ZarrDataset, reference=ZarrReference)
