"""The HTTP API of ``usidgpu serve`` (FastAPI on uvicorn), described by its OpenAPI schema at
``/openapi.json``.

Why FastAPI rather than Tiled: Tiled serves arrays and tables well, but a USID Main dataset is a
2-D table whose n-d meaning lives in its ancillary datasets; serving it by dimension name means
writing a USID adapter either way, and the service's other half — a job queue that runs the
analyses on the GPU as files land, and resumes them after a crash — is outside Tiled's model.
FastAPI gives the schema, validation and async streaming for a few hundred lines of our own;
Tiled stays the yardstick the benchmarks compare against.

Annotations are evaluated as the routes are defined (no ``from __future__ import annotations``):
FastAPI reads them, and the dependencies ``Reader``/``Submitter`` are made inside
:func:`create_app`.

Errors: a problem with the request or the file is a 4xx with a one-line ``detail``; anything
else is a 500 that says "internal error" — the traceback goes to the service's log, never to
the client.
"""

import asyncio
import dataclasses
import functools
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import matplotlib
import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParameter
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from .._version import __version__
from ..core.errors import FileProblem, SelectionError, UsidgpuError
from ..remote.wire import dtype_of
from .catalog import Entry, NotInCatalog
from .describe import MAX_RESULT_ARRAY_BYTES
from .encode import (
    MEDIA_TYPES,
    contrast_limits,
    csv_bytes,
    json_bytes,
    npy_header,
    npy_parts,
    png_bytes,
    raw_headers,
    raw_view,
)
from .events import sse
from .instance import Service
from .jobs import NoSuchJob
from .keys import KeyStore
from .limits import RateLimiter, TooManyRequests, check_job_quota, retry_after_header
from .readers import ByteBudget, OpenDatasets, ServerBusy
from .slices import TooLarge, check_size, selected_shape, selection_from_query
from .zarr_http import NoZarrType, array_metadata, chunk_bytes, chunk_selection

log = logging.getLogger("usidgpu.service")

#: A slice larger than this is read and sent in parts of about this size, the next part read
#: while the one before is sent (reading and sending overlap; memory stays at a few parts).
STREAM_ABOVE = 8 << 20

#: Bodies go to the HTTP layer in pieces of this size: the layer copies what it is given (h11
#: joins it, asyncio buffers what the socket does not take at once), and copies of pieces that
#: fit in the CPU's cache are several times faster than one copy of a whole large slice.
SEND_PIECE = 1 << 20


#: The colormaps a PNG may use: matplotlib's (an enumeration, so the schema lists them).
Colormap = Enum("Colormap", {name: name for name in sorted(matplotlib.colormaps)}, type=str)  # type: ignore[misc]
DEFAULT_COLORMAP = Colormap("viridis")


#: Everything the page loads comes from this service.
CONTENT_SECURITY_POLICY = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; frame-ancestors 'none'"

#: A job id in a path: SQLite's integers are 64-bit (a larger one is a 422, not a crash).
JobId = Annotated[int, PathParameter(ge=1, le=2**63 - 1, description="the job's id")]


class ErrorAnswer(BaseModel):
    """Every refusal: one line saying why."""

    detail: str


#: The refusals any route may answer with (documented in the schema for every route).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorAnswer, "description": what}
    for code, what in {
        400: "a bad selection, option or parameter",
        401: "no key, or not a key of this service",
        403: "this key may not do this, or the service is read-only",
        404: "no such dataset, job or chunk",
        409: "the dataset's file cannot be read now",
        413: "the selection is larger than this service's limit",
        415: "the data have no representation in the asked format",
        429: "over this client's request rate or job limit (see Retry-After)",
        503: "too many large slices in flight for the server's memory budget; retry shortly",
    }.items()
}


#: The cookie the page keeps its API key in (see ``POST /api/v1/session``).
KEY_COOKIE = "usidgpu_key"


class SignIn(BaseModel):
    """An API key for the page."""

    key: str = Field(..., min_length=1, max_length=200)


class JobRequest(BaseModel):
    """A job to queue."""

    dataset: str = Field(..., max_length=64, description="catalog id of the dataset")
    analysis: Literal["svd", "pca", "nmf", "cluster", "denoise", "atoms", "bayes"] = Field(
        ..., description="the analysis (its parameters: GET /api/v1/analyses)"
    )
    parameters: dict[str, Any] = Field(default_factory=dict, description='the analysis\' options, e.g. {"k": 8}')


@dataclass(frozen=True)
class Caller:
    """Who makes a request: the scope they have and an id for limits (a key's, or an address)."""

    scope: str
    client: str


@dataclass
class Settings:
    """How the service answers.

    Attributes
    ----------
    max_slice_bytes : int
        The largest selection one request may ask for.
    keys : KeyStore or None
        When given, every request needs one of its keys (``Authorization: Bearer KEY`` or
        ``X-API-Key: KEY``).
    read_only : bool
        No jobs, no rescans.
    limiter : RateLimiter
        Requests per second per client.
    jobs_per_client : int
        Jobs a client may have queued or running at once (0: no limit).
    in_flight : ByteBudget
        Bytes of slices read and not yet sent, across all requests (the memory budget).
    """

    max_slice_bytes: int = 1 << 30
    keys: KeyStore | None = None
    read_only: bool = False
    limiter: RateLimiter = field(default_factory=RateLimiter)
    jobs_per_client: int = 16
    in_flight: ByteBudget = field(default_factory=lambda: ByteBudget(1 << 30))
    extra: dict[str, Any] = field(default_factory=dict)


def create_app(service: Service, settings: Settings | None = None) -> Any:
    """The ASGI application serving ``service``."""
    settings = settings or Settings()
    catalog = service.catalog
    app = FastAPI(
        title="usidgpu",
        version=__version__,
        description="USID datasets of the watched folders: search, describe, slice by dimension name; jobs.",
        responses=ERROR_RESPONSES,
    )

    # ------------------------------------------------------------------ errors
    @app.exception_handler(UsidgpuError)
    async def usid_error(_request: Request, exc: UsidgpuError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc)}, status_code=status_of(exc))

    @app.exception_handler(TooManyRequests)
    async def too_many(_request: Request, exc: TooManyRequests) -> JSONResponse:
        return JSONResponse(
            {"detail": _one_line(exc)}, status_code=429, headers={"Retry-After": retry_after_header(exc.retry_after)}
        )

    @app.exception_handler(OSError)
    async def os_error(_request: Request, exc: OSError) -> JSONResponse:
        # the file vanished, is being rewritten, or is damaged: the request was fine
        return JSONResponse({"detail": f"the dataset's file cannot be read now: {_one_line(exc)}"}, status_code=409)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the methods of the first route of this path; list them all
            methods = set()
            for route in app.router.routes:
                if isinstance(route, APIRoute) and route.matches(request.scope)[0] != Match.NONE:
                    methods |= route.methods or set()
            headers["Allow"] = ", ".join(sorted(methods))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error answering %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error (a bug in usidgpu; the service log has the details)"}, 500)

    # ------------------------------------------------------------------ access
    def scope(request: Request) -> Caller:
        """Who calls and what they may do: ``submit`` on an open (loopback) service, else their
        key's scope; each call spends one of the caller's requests (429 when over the rate)."""
        if settings.keys is None:
            caller = Caller("submit", "addr:" + (request.client.host if request.client else "?"))
        else:
            auth = request.headers.get("authorization", "")
            key = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key")
            # the page's sign-in cookie (a browser cannot add headers to images and event streams)
            key = key or request.cookies.get(KEY_COOKIE)
            found = settings.keys.lookup(key)
            if found is None:
                raise HTTPException(
                    401, "this service needs an API key: Authorization: Bearer KEY", {"WWW-Authenticate": "Bearer"}
                )
            caller = Caller(*found)
        settings.limiter.take(caller.client)
        return caller

    def may_read(caller: Annotated[Caller, Depends(scope)]) -> Caller:
        return caller

    def may_submit(caller: Annotated[Caller, Depends(scope)]) -> Caller:
        if settings.read_only:
            raise HTTPException(403, "this service is read-only (--read-only)")
        if caller.scope != "submit":
            raise HTTPException(403, "this key may read, not submit")
        return caller

    Reader = Annotated[Caller, Depends(may_read)]
    Submitter = Annotated[Caller, Depends(may_submit)]

    # ------------------------------------------------------------------ the page
    static = Path(__file__).parent / "static"
    app.mount("/static", StaticFiles(directory=static), name="static")

    app.add_middleware(PagePolicy)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        """The browser page: datasets, viewer, analyses (static files of this package)."""
        return FileResponse(static / "index.html", media_type="text/html")

    # ------------------------------------------------------------------ routes
    @app.post("/api/v1/session")
    def sign_in(body: SignIn) -> JSONResponse:
        """Sign the page in with an API key: it is checked, then kept in a cookie only this site
        receives (HttpOnly, SameSite=Strict: no script reads it, no other site's page sends it)."""
        if settings.keys is None:
            return JSONResponse({"scope": "submit", "detail": "this service needs no key"})
        found = settings.keys.lookup(body.key)
        if found is None:
            raise HTTPException(401, "not a key of this service")
        answer = JSONResponse({"scope": found[0]})
        answer.set_cookie(KEY_COOKIE, body.key, httponly=True, samesite="strict", path="/")
        return answer

    @app.delete("/api/v1/session")
    def sign_out() -> JSONResponse:
        """Forget the page's key."""
        answer = JSONResponse({"detail": "signed out"})
        answer.delete_cookie(KEY_COOKIE, path="/")
        return answer

    @app.get("/api/v1/health")
    def health() -> dict[str, Any]:
        """Liveness: the version and how many datasets are catalogued."""
        return {"status": "ok", "version": __version__, "datasets": len(catalog.datasets())}

    @app.get("/api/v1/datasets")
    def datasets(
        _s: Reader,
        q: str | None = Query(None, max_length=500, description="words to search for"),
        kind: str | None = Query(None, max_length=50, description="image, image stack, spectrum image, ..."),
        dim: str | None = Query(None, max_length=200, description="a dimension name the dataset must have"),
        results: bool = Query(False, description="also the Main datasets inside results groups"),
    ) -> dict[str, Any]:
        """The catalogued datasets (filtered), and the files that could not be read."""
        return {
            "datasets": [e.summary() for e in catalog.datasets(q, kind, dim, results)],
            "failed": catalog.failures(),
        }

    @app.get("/api/v1/datasets/{dataset_id}")
    def dataset(dataset_id: str, _s: Reader) -> dict[str, Any]:
        """One dataset: dims in pyUSID order (positions, then spectroscopic), units, values,
        results groups."""
        e = catalog.get(dataset_id)
        return dict(e.description, id=e.id, file=e.file.rsplit("/", 1)[-1])

    @app.get(
        "/api/v1/datasets/{dataset_id}/data",
        responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}}},
    )
    def data(
        _s: Reader,
        dataset_id: str,
        request: Request,
        format: Literal["npy", "raw", "json", "png", "csv"] = Query("npy", description="npy | raw | json | png | csv"),  # noqa: A002
        vmin: float | None = Query(None, description="PNG: lower contrast limit"),
        vmax: float | None = Query(None, description="PNG: upper contrast limit"),
        cmap: Annotated[Colormap, Query(description="PNG: a matplotlib colormap")] = DEFAULT_COLORMAP,
    ) -> Response:
        """A slice by dimension name: ``?Bias=10&X=0:64&Y=1,5,9``; dimensions not named are kept whole."""
        entry = catalog.get(dataset_id)
        dims = entry.description["dims"]
        sizes = {d["name"]: d["size"] for d in dims}
        selection = selection_from_query(dict(request.query_params), list(sizes))
        dtype = dtype_of(entry.description)
        grid = bool(entry.description.get("nd_shape"))
        if grid:
            shape = selected_shape(sizes, selection)
            kept = [n for n in sizes if not isinstance(selection.get(n, slice(None)), int)]
        else:  # positions (or spectroscopic points) that fill no grid stay one flat axis
            shape, kept = flat_shape_bound(entry.description, selection)
        nbytes = math.prod(shape) * dtype.itemsize
        check_size(nbytes, settings.max_slice_bytes)
        name = f"{entry.name}.{format}"
        disposition = {"Content-Disposition": f'inline; filename="{name}"', "X-Array-Dims": ",".join(kept)}
        # (a non-grid selection's size is known only once read: it is read whole, never streamed)
        streamed = format in ("npy", "raw") and nbytes > STREAM_ABOVE and shape and grid
        # the bytes this answer holds in memory until it is sent: the selection, or a streamed
        # one's two parts (one sent, one read), and the HTTP layer's copy of a piece (h11 joins it)
        held = settings.in_flight.acquire(3 * STREAM_ABOVE if streamed else 2 * nbytes)
        done = BackgroundTask(settings.in_flight.release, held)
        try:
            if streamed:
                return SliceStream(
                    npy_header(shape, dtype) if format == "npy" else b"",
                    functools.partial(read_selection, service.readers, entry),
                    part_selections(selection, kept[0], sizes[kept[0]], nbytes),
                    nbytes,
                    media_type=MEDIA_TYPES[format],
                    headers=disposition | (raw_headers(shape, dtype) if format == "raw" else {}),
                    background=done,
                )
            values = read_selection(service.readers, entry, selection)
        except BaseException:
            settings.in_flight.release(held)
            raise
        if format in ("npy", "raw"):
            if format == "raw":
                disposition |= raw_headers(values.shape, values.dtype)
            body_parts: list[bytes | memoryview] = npy_parts(values) if format == "npy" else [raw_view(values)]
            return PartsResponse(body_parts, media_type=MEDIA_TYPES[format], headers=disposition, background=done)
        settings.in_flight.release(held)  # JSON and PNG answers are small copies
        if format == "csv":
            body = csv_bytes(values, kept, [coordinates(entry, n, selection.get(n, slice(None))) for n in kept])
        elif format == "json":
            body = json_bytes(values, kept)
        else:
            if values.ndim == 2 and not values.dtype.names and not np.iscomplexobj(values):
                lo, hi = contrast_limits(values, vmin, vmax)
                disposition["X-Contrast-Limits"] = f"{lo!r},{hi!r}"
            body = png_bytes(values, vmin, vmax, cmap.value)
        return Response(body, media_type=MEDIA_TYPES[format], headers=disposition)

    @app.get(
        "/api/v1/datasets/{dataset_id}/results/{number}/arrays/{name}",
        responses={200: {"content": {MEDIA_TYPES[f]: {} for f in ("npy", "json", "csv")}}},
    )
    def result_array(
        _s: Reader,
        dataset_id: str,
        number: Annotated[int, PathParameter(ge=0, le=10_000, description="position in the description's results")],
        name: Annotated[str, PathParameter(max_length=200, description="an array the results group lists")],
        format: Literal["npy", "json", "csv"] = Query("npy", description="npy | json | csv"),  # noqa: A002
    ) -> Response:
        """An array of a results group that is no Main dataset (its ``arrays``): singular values, an
        error curve, vacancies, a lattice. Main datasets of the group have their own ids."""
        entry = catalog.get(dataset_id)
        groups = entry.description["results"]
        if number >= len(groups):
            raise NotInCatalog(f"{entry.name} has {len(groups)} results group(s); there is no number {number}")
        group = groups[number]
        listed = {a["name"]: a for a in group.get("arrays", [])}
        if name not in listed:
            raise NotInCatalog(f"{group['path'].rsplit('/', 1)[-1]} has no array {name!r}; it has: {', '.join(listed)}")
        check_size(listed[name]["nbytes"], min(settings.max_slice_bytes, MAX_RESULT_ARRAY_BYTES))
        with service.readers.dataset(entry.file, entry.path) as main:
            try:
                values = np.asarray(main.h5.file[group["path"]][name][()])
            except KeyError:
                raise FileProblem(f"{group['path']} changed in its file; the folder is being rescanned") from None
        dims = [f"axis{i}" for i in range(values.ndim)]
        filename = {"Content-Disposition": f'inline; filename="{name}.{format}"'}
        if format == "npy":
            return PartsResponse(npy_parts(values), media_type=MEDIA_TYPES["npy"], headers=filename)
        body = json_bytes(values, dims) if format == "json" else csv_bytes(values, dims, [None] * values.ndim)
        return Response(body, media_type=MEDIA_TYPES[format], headers=filename)

    @app.post("/api/v1/rescan")
    def rescan(_s: Submitter) -> dict[str, int]:
        """Look at the folders again now (new, changed and removed files)."""
        counts = catalog.scan()
        for entry in catalog.datasets():
            service.apply_pipeline(entry)
        return counts

    # ------------------------------------------------------------------ zarr v3
    @app.get("/zarr/{dataset_id}/zarr.json")
    def zarr_metadata(dataset_id: str, _s: Reader) -> Response:
        """The zarr v3 metadata of a dataset's read-only n-d view (open ``/zarr/{id}`` with any
        zarr v3 client)."""
        body = json.dumps(array_metadata(catalog.get(dataset_id).description)).encode()
        return Response(body, media_type="application/json")

    @app.get("/zarr/{dataset_id}/{key:path}")
    def zarr_chunk(dataset_id: str, key: str, _s: Reader) -> Response:
        """One chunk of the view (``c/i/j/...``), uncompressed little-endian bytes."""
        entry = catalog.get(dataset_id)
        try:
            selection, chunk, _inner = chunk_selection(entry.description, key)
        except SelectionError:
            raise HTTPException(404, f"no key {key!r} in this array") from None
        values = read_chunk(service.readers, entry, selection)
        return Response(chunk_bytes(values, chunk, dtype_of(entry.description)), media_type="application/octet-stream")

    # ------------------------------------------------------------------ jobs
    @app.get("/api/v1/analyses")
    def analyses(_s: Reader) -> dict[str, Any]:
        """The analyses a job may run, with their parameters, defaults and choices."""
        return {name: [dataclasses.asdict(o) for o in options] for name, options in service.commands.options.items()}

    @app.post("/api/v1/jobs", status_code=201)
    def submit(request_body: JobRequest, caller: Submitter) -> dict[str, Any]:
        """Queue an analysis of a dataset: ``{"dataset": ID, "analysis": "svd", "parameters": {"k": 8}}``
        (429 when the caller has too many jobs queued or running)."""
        entry = catalog.get(request_body.dataset)
        origin = f"api:{caller.client}"
        check_job_quota(service.jobs.active(origin), settings.jobs_per_client)
        return service.submit(entry, request_body.analysis, request_body.parameters, origin=origin).public()

    @app.get("/api/v1/jobs")
    def jobs(
        _s: Reader,
        status: str | None = Query(None, max_length=20),
        dataset: str | None = Query(None, max_length=64),
    ) -> dict[str, Any]:
        """Jobs, newest first (filtered by status or dataset)."""
        return {"jobs": [j.public() for j in service.jobs.query(status, dataset)]}

    @app.get("/api/v1/jobs/{job_id}")
    def job(job_id: JobId, _s: Reader) -> dict[str, Any]:
        """One job: status, progress (0–1), message, result."""
        return service.jobs.get(job_id).public()

    @app.post("/api/v1/jobs/{job_id}/cancel")
    def cancel(job_id: JobId, _s: Submitter) -> dict[str, Any]:
        """Cancel a queued or running job (a finished one is returned as it is)."""
        return service.runner.cancel(job_id).public()

    @app.get("/api/v1/events", response_class=StreamingResponse)
    async def events(request: Request, _s: Reader) -> StreamingResponse:
        """Server-Sent Events: ``dataset`` (new or updated), ``failed`` (a file that cannot be
        read), ``job`` (any change). Reconnect with ``Last-Event-ID`` to miss nothing."""
        try:
            after = int(request.headers.get("last-event-id", service.events.last_id))
        except ValueError:
            after = service.events.last_id

        async def stream() -> Any:
            last = after
            yield b": connected\n\n"
            while not await request.is_disconnected():
                batch = await asyncio.to_thread(service.events.wait, last, 1.0)
                for event_id, kind, data in batch:
                    last = event_id
                    yield sse(event_id, kind, data)
                if not batch:
                    yield b": keep-alive\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


class PagePolicy:
    """ASGI middleware adding the page's security headers to every answer: the page loads nothing
    from elsewhere (instruments are often offline; no CDN, ever), and types are not sniffed.

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware passes
    every body part through an extra task and queue, which halved large-slice throughput.
    """

    HEADERS = ((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()), (b"x-content-type-options", b"nosniff"))

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_policy(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in self.HEADERS if n not in present]
                message = dict(message, headers=[*message.get("headers", []), *extra])
            await send(message)

        await self.app(scope, receive, send_with_policy)


class SliceStream(Response):
    """A large slice sent as it is read, with its full length known up front: the selection is read
    part by part in worker threads, the next part while the current one is sent, so reading from
    the file and writing to the socket overlap. Memory: two parts at a time.

    A read that fails after the headers went out cannot change the status any more: the
    connection is closed short of the announced length, which every HTTP client reports as an
    incomplete answer (and the error goes to the service's log).
    """

    def __init__(
        self, head: bytes, read: Callable[[dict[str, Any]], np.ndarray], parts: list[dict[str, Any]], nbytes: int,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        self.head, self.read, self.parts = head, read, parts
        super().__init__(b"", **kwargs)
        self.headers["content-length"] = str(len(head) + nbytes)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        sending = asyncio.ensure_future(self._send_parts(send))
        client_left = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({sending, client_left}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sending, client_left):
                task.cancel()
            await asyncio.gather(sending, client_left, return_exceptions=True)
            if self.background is not None:
                await self.background()
        failed = None if sending.cancelled() else sending.exception()
        if failed is not None:
            raise failed  # the server then closes the connection short

    async def _send_parts(self, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if self.head:
            await send({"type": "http.response.body", "body": self.head, "more_body": True})
        loop = asyncio.get_running_loop()
        reading = loop.run_in_executor(None, self.read, self.parts[0])
        try:
            for i in range(len(self.parts)):
                values = await reading
                last = i == len(self.parts) - 1
                if not last:
                    reading = loop.run_in_executor(None, self.read, self.parts[i + 1])
                await send_in_pieces(send, raw_view(values), last)
                del values
        finally:
            if not reading.done():  # a part read ahead for a client that left (or a failed send)
                reading.cancel()


async def send_in_pieces(send: Any, body: bytes | memoryview, last: bool) -> None:
    """Send ``body`` as body messages of at most :data:`SEND_PIECE` bytes; the final one ends the
    answer when ``last`` (an empty last body still sends one message, to end it)."""
    view = memoryview(body)
    if not len(view):
        if last:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    for start in range(0, len(view), SEND_PIECE):
        more = not last or start + SEND_PIECE < len(view)
        await send({"type": "http.response.body", "body": view[start : start + SEND_PIECE], "more_body": more})


async def _disconnected(receive: Any) -> None:
    """Return once the client has gone (what else it sends while an answer streams is ignored)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class PartsResponse(Response):
    """A response whose body is sent as the given parts, in order, with its full length known
    up front: a ``.npy`` header then the array's own memory, never joined into one copy (for
    a slice of hundreds of MB the copy would cost as much as the read)."""

    def __init__(self, parts: list[bytes | memoryview], **kwargs: Any) -> None:
        self.parts = parts
        super().__init__(b"", **kwargs)
        self.headers["content-length"] = str(sum(len(p) for p in parts))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        for i, part in enumerate(self.parts or [b""]):
            await send_in_pieces(send, part, last=i == max(len(self.parts), 1) - 1)
        if self.background is not None:
            await self.background()


def status_of(exc: UsidgpuError) -> int:
    """The HTTP status of one of usidgpu's errors."""
    if isinstance(exc, (NotInCatalog, NoSuchJob)):
        return 404
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, FileProblem):
        return 409
    if isinstance(exc, ServerBusy):
        return 503
    if isinstance(exc, NoZarrType):
        return 415
    return 400


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_selection(readers: OpenDatasets, entry: Entry, selection: dict[str, Any]) -> np.ndarray:
    """Read a selection of a catalogued dataset (through the kept-open files: see
    :mod:`usidgpu.service.readers`)."""
    try:
        with readers.dataset(entry.file, entry.path) as main:
            return np.asarray(main.sel(**selection))
    except KeyError:
        raise FileProblem(f"{entry.name} is no longer in its file; the folder is being rescanned") from None


def coordinates(entry: Entry, name: str, key: Any) -> np.ndarray | None:
    """The values of dimension ``name`` that a selection ``key`` (slice or list) keeps, or None
    when the description does not list them."""
    dim = next(d for d in entry.description["dims"] if d["name"] == name)
    if dim["values"] is None:
        return None
    values = np.asarray(dim["values"], dtype=float)
    return values[key] if isinstance(key, slice) else values[np.asarray(key, dtype=np.int64) % values.size]


def read_chunk(readers: OpenDatasets, entry: Entry, selection: dict[str, slice]) -> np.ndarray:
    """Values of one chunk of the zarr view: a ``sel`` of the n-d grid, or rows × columns of the
    2-D table of a dataset that is no grid."""
    if entry.description.get("nd_shape"):
        return read_selection(readers, entry, selection)
    with readers.dataset(entry.file, entry.path) as main:
        return np.asarray(main.h5[selection["Positions"], selection["Spectroscopic"]])


def flat_shape_bound(description: dict[str, Any], selection: dict[str, Any]) -> tuple[tuple[int, ...], list[str]]:
    """For a dataset that is no full grid: an upper bound of a selection's shape and the names of
    its axes. A side (positions, spectroscopic points) that fills no grid is one flat axis named
    ``Positions`` / ``Spectroscopic``, bounded by all its entries (a selection by name keeps only
    the matching ones); a side that does is shaped by its dimensions."""
    shape: list[int] = []
    names: list[str] = []
    sides = zip(("position", "spectroscopic"), description["shape"], ("Positions", "Spectroscopic"))
    for role, entries, flat_name in sides:
        dims = {d["name"]: d["size"] for d in description["dims"] if d["role"] == role}
        on_grid = description.get("grid_sides", {}).get(role, math.prod(dims.values()) == entries)
        if not on_grid:
            shape.append(int(entries))
            names.append(flat_name)
            continue
        side = {n: k for n, k in selection.items() if n in dims}
        shape += selected_shape(dims, side)
        names += [n for n in dims if not isinstance(side.get(n, slice(None)), int)]
    return tuple(shape), names


def part_selections(
    selection: dict[str, Any], dim: str, size: int, nbytes: int, part_bytes: int | None = None
) -> list[dict[str, Any]]:
    """The selection (``nbytes`` in all) cut along its first kept dimension ``dim`` (of ``size``)
    into parts of about ``part_bytes`` (default :data:`STREAM_ABOVE`) whose results, concatenated
    in order, are the selection's in C order. A slice stays a slice (read as one run)."""
    part_bytes = part_bytes or STREAM_ABOVE
    key = selection.get(dim, slice(None))
    indices: range | np.ndarray
    indices = range(*key.indices(size)) if isinstance(key, slice) else np.asarray(key, dtype=np.int64) % size
    per_part = max(1, len(indices) * part_bytes // max(1, nbytes))
    parts = []
    for start in range(0, len(indices), per_part):
        chosen = indices[start : start + per_part]
        if isinstance(chosen, range):
            part_key: Any = slice(chosen.start, chosen.stop if chosen.stop >= 0 else None, chosen.step)
        else:
            part_key = [int(i) for i in chosen]
        parts.append(dict(selection, **{dim: part_key}))
    return parts


__all__ = ["STREAM_ABOVE", "Settings", "create_app", "read_selection", "status_of"]
