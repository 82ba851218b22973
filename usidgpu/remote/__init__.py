"""``usidgpu.connect(url)``: datasets of a ``usidgpu serve`` used like local ones.

A :class:`RemoteDataset` has the ``dims``, ``sel()``, ``to_ndim()``, ``to_dask()`` and
``to_xarray()`` of :class:`usidgpu.MainDataset`; its values come over HTTP (``.npy`` slices; the
chunks of ``to_dask()`` are fetched in parallel by dask's threads). ``submit()`` queues an
analysis on the server and returns a :class:`RemoteJob` to follow.

Only ``urllib3`` is needed (``pip install usidgpu[client]``): the client runs where the server's
libraries are not installed.
"""

from __future__ import annotations

from .client import Client, RemoteDataset, RemoteJob, connect

__all__ = ["Client", "RemoteDataset", "RemoteJob", "connect"]
