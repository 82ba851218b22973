"""The HTTP client of ``usidgpu serve`` (see :mod:`usidgpu.remote`)."""

from __future__ import annotations

import json as jsonlib
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import numpy as np

from ..core.errors import (
    FileProblem,
    InvalidInput,
    MissingDependency,
    NotAGridError,
    SelectionError,
    UnknownName,
    UsidgpuError,
)
from ..usid.dimension import Dimension
from .wire import dtype_of, selection_text


class RemoteError(UsidgpuError):
    """The server refused a request (its one-line reason is the message)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, detail: Any) -> UsidgpuError:
    """The usidgpu error a refused request means (a 404 is an unknown name, a 400 a bad selection…)."""
    text = detail if isinstance(detail, str) else str(detail)
    if status == 404:
        return UnknownName(text)
    if status == 400:
        return SelectionError(text)
    if status in (409, 415):
        return FileProblem(text)
    if status == 413:
        return InvalidInput(text)
    return RemoteError(f"the server answered {status}: {text}", status)


class Client:
    """A connection to one ``usidgpu serve``.

    Parameters
    ----------
    url : str
        The server, e.g. ``http://127.0.0.1:8000``.
    token : str, optional
        An API key (needed off loopback).
    timeout : float
        Seconds to connect, and seconds a request may wait for the next bytes.
    connections : int
        Connections kept open to the server (chunks of ``to_dask`` are fetched in parallel, one
        connection each).
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0, connections: int = 8) -> None:
        try:
            import urllib3
        except ImportError:
            raise MissingDependency("usidgpu.connect needs urllib3: pip install usidgpu[client]") from None
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        # urllib3 rather than httpx: it reads a large answer straight into the array's memory
        # (``readinto``) at about twice httpx's rate, and its pool is safe to share between the
        # threads dask fetches chunks in
        self._http = urllib3.PoolManager(
            num_pools=4, maxsize=connections, retries=False, timeout=urllib3.Timeout(connect=timeout, read=timeout)
        )

    def close(self) -> None:
        self._http.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"usidgpu.connect({self.url!r})"

    # ------------------------------------------------------------------ requests
    def request(
        self, method: str, path: str, params: dict[str, Any] | None = None, json: Any = None, stream: bool = False
    ) -> Any:
        """One request to the API (a ``urllib3`` response, its body read unless ``stream``); a
        refusal raises the matching usidgpu error."""
        import urllib3

        url = self.url + path + ("?" + urlencode(params) if params else "")
        try:
            r = self._http.request(method, url, json=json, headers=self.headers, preload_content=not stream)
        except urllib3.exceptions.HTTPError as exc:
            raise FileProblem(f"{self.url}: {exc}") from None
        if r.status >= 400:
            body = r.data
            r.release_conn()
            try:
                detail = jsonlib.loads(body).get("detail", body.decode(errors="replace"))
            except (ValueError, AttributeError):
                detail = body.decode(errors="replace")
            raise _error(r.status, detail)
        return r

    def get_json(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()

    def get_array(self, path: str, params: dict[str, Any]) -> np.ndarray:
        """An array sent as ``.npy``, read straight into its own memory as it arrives."""
        r = self.request("GET", path, params=dict(params, format="npy"), stream=True)
        try:
            return read_npy(r)
        except urllib3_errors() as exc:
            raise FileProblem(f"{self.url}: the answer broke off: {exc}") from None
        finally:
            r.release_conn()

    # ------------------------------------------------------------------ datasets
    def datasets(
        self, query: str | None = None, kind: str | None = None, dim: str | None = None
    ) -> list[RemoteDataset]:
        """The server's datasets (filtered as ``GET /api/v1/datasets``)."""
        params = {k: v for k, v in {"q": query, "kind": kind, "dim": dim}.items() if v}
        return [RemoteDataset(self, d["id"]) for d in self.get_json("/api/v1/datasets", **params)["datasets"]]

    def dataset(self, dataset_id: str) -> RemoteDataset:
        """One dataset by its catalog id."""
        return RemoteDataset(self, dataset_id)

    __getitem__ = dataset

    # ------------------------------------------------------------------ jobs
    def submit(self, dataset: RemoteDataset | str, analysis: str, **parameters: Any) -> RemoteJob:
        """Queue an analysis (``"svd"``, ``"cluster"``, ``"denoise"``, …) of a dataset; the
        parameters are the command's options (``k=8``, ``method="gram"``)."""
        dataset_id = dataset.id if isinstance(dataset, RemoteDataset) else str(dataset)
        body = {"dataset": dataset_id, "analysis": analysis, "parameters": parameters}
        return RemoteJob(self, self.request("POST", "/api/v1/jobs", json=body).json())

    def jobs(self, status: str | None = None) -> list[RemoteJob]:
        """Jobs, newest first."""
        params = {"status": status} if status else {}
        return [RemoteJob(self, j) for j in self.get_json("/api/v1/jobs", **params)["jobs"]]


class RemoteDataset:
    """A Main dataset of a server, with :class:`usidgpu.MainDataset`'s reading methods."""

    def __init__(self, client: Client, dataset_id: str) -> None:
        self.client, self.id = client, dataset_id
        self.description: dict[str, Any] = client.get_json(f"/api/v1/datasets/{dataset_id}")

    def __repr__(self) -> str:
        dims = ", ".join(f"{d['name']}: {d['size']}" for d in self.description["dims"])
        return f"<RemoteDataset {self.name} ({dims}) {self.quantity} ({self.units}) at {self.client.url}>"

    @property
    def name(self) -> str:
        return str(self.description["path"])

    @property
    def quantity(self) -> str:
        return str(self.description["quantity"])

    @property
    def units(self) -> str:
        return str(self.description["units"])

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self.description["shape"]
        return int(rows), int(cols)

    @property
    def dtype(self) -> np.dtype:
        return dtype_of(self.description)

    @property
    def dims(self) -> list[Dimension]:
        """Position then spectroscopic dimensions, in file order (values as the server lists them)."""
        out = []
        for d in self.description["dims"]:
            values = d["values"] if d["values"] is not None else d["size"]
            out.append(Dimension(d["name"], d["units"], np.asarray(values, dtype=float) if d["values"] else values))
        return out

    @property
    def dim_names(self) -> list[str]:
        return [d["name"] for d in self.description["dims"]]

    @property
    def nd_shape(self) -> tuple[int, ...]:
        if not self.description.get("nd_shape"):
            raise NotAGridError(f"{self.name}: not a full grid (sparse or irregular sampling); no n-d view")
        return tuple(int(s) for s in self.description["nd_shape"])

    def sel(self, **selection: int | slice | Sequence[int]) -> np.ndarray:
        """Select by dimension name, as :meth:`usidgpu.MainDataset.sel` (read over HTTP)."""
        params = {name: selection_text(value) for name, value in selection.items()}
        return self.client.get_array(f"/api/v1/datasets/{self.id}/data", params)

    def to_ndim(self) -> np.ndarray:
        """The whole dataset as an n-d array (positions, then spectroscopic dimensions)."""
        self.nd_shape  # noqa: B018 - raises for data that are no grid
        return self.sel()

    def to_dask(self, chunks: Any = None) -> Any:
        """A lazy n-d dask array; its chunks (default: the server's zarr chunks) are fetched in
        parallel when computed."""
        import dask.array as da

        meta = self.client.get_json(f"/zarr/{self.id}/zarr.json")
        shape = self.nd_shape
        chunks = chunks or tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        name = f"usidgpu-remote-{self.id}"
        return da.from_array(_Sliced(self, shape), chunks=chunks, asarray=False, fancy=False, name=name)

    def to_xarray(self, lazy: bool = True) -> Any:
        """An ``xarray.DataArray`` with the dimensions' values as coordinates and units as attributes."""
        import xarray as xr

        data = self.to_dask() if lazy else self.to_ndim()
        coords = {d["name"]: (d["name"], np.asarray(d["values"]), {"units": d["units"]})
                  for d in self.description["dims"] if d["values"] is not None}  # fmt: skip
        return xr.DataArray(
            data,
            dims=self.dim_names,
            coords=coords,
            name=self.quantity,
            attrs={"units": self.units, "quantity": self.quantity, "source": self.name, "server": self.client.url},
        )


class _Sliced:
    """What dask needs to read a remote dataset block by block: a shape, a dtype and ``[]`` with
    one slice per dimension (each block is one ``sel`` request)."""

    def __init__(self, dataset: RemoteDataset, shape: tuple[int, ...]) -> None:
        self.dataset, self.shape, self.ndim = dataset, shape, len(shape)
        self.dtype = dataset.dtype

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        selection = {name: k for name, k in zip(self.dataset.dim_names, key)}
        return self.dataset.sel(**selection)


class RemoteJob:
    """A job on the server: its state when last asked (:meth:`refresh`), :meth:`wait`, :meth:`cancel`."""

    def __init__(self, client: Client, state: dict[str, Any]) -> None:
        self.client, self.state = client, state

    def __repr__(self) -> str:
        return f"<RemoteJob {self.id} {self.analysis} {self.status} {self.progress:.0%}>"

    @property
    def id(self) -> int:
        return int(self.state["id"])

    @property
    def analysis(self) -> str:
        return str(self.state["analysis"])

    @property
    def status(self) -> str:
        return str(self.state["status"])

    @property
    def progress(self) -> float:
        return float(self.state["progress"])

    @property
    def result(self) -> str | None:
        """The results group (when done)."""
        return self.state.get("result")

    @property
    def message(self) -> str:
        return str(self.state.get("message", ""))

    def refresh(self) -> RemoteJob:
        self.state = self.client.get_json(f"/api/v1/jobs/{self.id}")
        return self

    def cancel(self) -> RemoteJob:
        self.state = self.client.request("POST", f"/api/v1/jobs/{self.id}/cancel").json()
        return self

    def wait(self, timeout: float | None = None, poll: float = 0.5) -> RemoteJob:
        """Wait until the job is done, failed or cancelled (a failed one raises with its reason).

        Raises
        ------
        RemoteError
            The job failed (the message says why) or was cancelled.
        TimeoutError
            Still running after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.refresh().status not in ("done", "failed", "cancelled"):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} is still {self.status} after {timeout} s")
            time.sleep(poll)
        if self.status != "done":
            raise RemoteError(f"job {self.id} ({self.analysis}) {self.status}: {self.message}", 200)
        return self


def urllib3_errors() -> tuple[type[BaseException], ...]:
    """What a connection that broke off mid-answer raises."""
    import urllib3

    return (urllib3.exceptions.HTTPError, OSError)


def read_npy(stream: Any) -> np.ndarray:
    """A ``.npy`` array from a readable stream, its data read into the array's own memory (no
    copy of the whole body on the way).

    Raises
    ------
    FileProblem
        The stream ends before the array does.
    """
    version = np.lib.format.read_magic(stream)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read_header(stream)
    if dtype.hasobject:
        raise FileProblem("the server sent an array of Python objects; refused")
    out = np.empty(shape, dtype=dtype, order="F" if fortran_order else "C")
    view = memoryview(out.reshape(-1, order="A").view(np.uint8))  # the array's own bytes
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            raise FileProblem(f"the answer ended after {got} of {len(view)} bytes of the array")
        got += n
    return out


def connect(url: str, token: str | None = None, timeout: float = 60.0, connections: int = 8) -> Client:
    """Connect to a ``usidgpu serve`` (see :class:`Client`).

    Examples
    --------
    >>> server = usidgpu.connect("http://127.0.0.1:8000")
    >>> ds = server.datasets(kind="spectrum image")[0]
    >>> ds.sel(Bias=10)                   # one image, over HTTP
    >>> server.submit(ds, "svd", k=8).wait().result
    """
    return Client(url, token=token, timeout=timeout, connections=connections)
