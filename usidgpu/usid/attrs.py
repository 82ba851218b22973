"""Reading and writing attributes the way pyUSID does (reading: of any store; writing: HDF5).

pyUSID stores the ``labels``/``units`` of ancillary datasets as fixed-width byte arrays (``|S5``)
holding UTF-8, and the ``quantity``/``units`` of Main datasets as plain (variable-length UTF-8)
strings. Files from older translators add quirks: trailing whitespace and newlines (``' m\\n'``),
NUL-terminated labels, scalars where a list is expected. Everything here accepts all of those and
writes exactly what pyUSID writes, so Unicode (µm, Å, °) round-trips both ways.
"""

from __future__ import annotations

import platform
import socket
import time
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

import h5py
import numpy as np

from .._version import __version__
from ..core.errors import InvalidType
from ..storage import Node


def decode_str(value: Any) -> str:
    """One attribute value as ``str``: bytes are UTF-8 decoded, a 1-element array is unpacked."""
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise InvalidType(f"expected a single string, got an array of shape {value.shape}")
        value = value.reshape(-1)[0]
    if isinstance(value, (bytes, np.bytes_)):
        value = bytes(value).decode("utf-8", errors="replace")
    if not isinstance(value, str):
        raise InvalidType(f"expected a string, got {type(value).__name__}")
    return value.split("\x00", 1)[0]


def is_str_value(value: Any) -> bool:
    """True when an attribute value is a single string (str, bytes or a 1-element string array)."""
    try:
        decode_str(value)
        return True
    except TypeError:
        return False


def decode_str_list(value: Any) -> list[str]:
    """An attribute holding labels or units as a list of stripped ``str``."""
    if isinstance(value, (str, bytes, np.bytes_)):
        return [decode_str(value).strip()]
    arr = np.asarray(value)
    if arr.dtype.kind not in "SUO":
        raise InvalidType(f"expected a list of strings, got dtype {arr.dtype}")
    return [decode_str(v).strip() for v in arr.reshape(-1)]


def encode_str_list(strings: Iterable[str]) -> np.ndarray:
    """Encode strings as pyUSID does: a fixed-width byte array of UTF-8 (``|S<n>``)."""
    return np.array([s.encode("utf-8") for s in strings])


def _to_attr(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return np.bool_(value)
    if isinstance(value, (list, tuple)):
        if len(value) > 0 and all(isinstance(v, str) for v in value):
            return encode_str_list(value)
        return np.asarray(value)
    return value


def write_attrs(obj: h5py.HLObject, attrs: Mapping[str, Any]) -> None:
    """Write a flat mapping of attributes; None values are skipped, string lists pyUSID-style.

    Raises
    ------
    TypeError
        For nested mappings (HDF5 attributes are flat).
    """
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            raise InvalidType(f"attribute {key!r} is a nested mapping; flatten it first")
        obj.attrs[str(key).strip()] = _to_attr(value)


def read_attr(obj: Node, name: str) -> Any:
    """One attribute, with byte strings decoded to ``str`` and string arrays to lists of ``str``."""
    value = obj.attrs[name]
    if isinstance(value, (bytes, np.bytes_)):
        return decode_str(value)
    if isinstance(value, np.ndarray) and value.dtype.kind in "SU":
        return decode_str_list(value)
    if (
        isinstance(value, np.ndarray)
        and value.dtype.kind == "O"
        and all(isinstance(v, (str, bytes)) for v in value.reshape(-1))
    ):
        return decode_str_list(value)
    return value


def read_attrs(obj: Node) -> dict[str, Any]:
    """All attributes of ``obj`` decoded with :func:`read_attr` (unreadable ones are skipped)."""
    out: dict[str, Any] = {}
    for name in obj.attrs:
        try:
            out[name] = read_attr(obj, name)
        except (OSError, TypeError, ValueError):
            continue  # e.g. an attribute of a datatype h5py cannot read
    return out


def time_stamp() -> str:
    """Current local time as USID's ``YYYY_MM_DD-HH_MM_SS``."""
    return time.strftime("%Y_%m_%d-%H_%M_%S")


def book_keeping() -> dict[str, str]:
    """The book-keeping attributes USID asks for on groups and Main datasets."""
    return {
        "machine_id": socket.gethostname(),
        "platform": platform.platform(),
        "timestamp": time_stamp(),
        "usidgpu_version": __version__,
    }
