"""``usidgpu serve``: the array service at the instrument.

A folder the microscope writes to is catalogued (:mod:`~usidgpu.service.catalog`, an SQLite
database beside the data), and its USID datasets are served over HTTP
(:mod:`~usidgpu.service.app`): a searchable list, each dataset's description, and any slice by
dimension name as ``.npy``, raw little-endian bytes, JSON or PNG. Access control lives in
:mod:`~usidgpu.service.keys`; :mod:`~usidgpu.service.server` starts it all.

Layering: the service sits above the analyses and the figures (it will run them as jobs) and
below the command line.
"""

from __future__ import annotations

from .catalog import Catalog
from .keys import KeyStore

__all__ = ["Catalog", "KeyStore"]
