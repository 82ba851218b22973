"""Start the service: check where it may listen, open the catalog, scan, serve with uvicorn."""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from ..core.errors import InvalidInput
from ..core.memory import memory_budget
from .app import Settings, create_app
from .commands import Commands
from .instance import Options, Service
from .keys import KeyStore, is_loopback
from .limits import RateLimiter
from .pipeline import Rule
from .readers import ByteBudget

log = logging.getLogger("usidgpu.service")

#: Bytes of socket send buffer per connection asked for (the kernel caps it at net.core.wmem_max).
SEND_BUFFER = 4 << 20


def open_keys(state_dir: Path, host: str, new_key: str | None) -> tuple[KeyStore | None, str | None]:
    """The key store the service checks, and a newly made key to print once (or None).

    On loopback no key is needed (the machine's users only) unless some are stored. Anywhere
    else keys are required: with none stored, one is generated (or ``new_key`` is stored).
    """
    keys = KeyStore(state_dir / "keys.json")
    made = None
    if new_key is not None:
        keys.add("submit", key=new_key, label="given to usidgpu serve")
    elif not is_loopback(host) and len(keys) == 0:
        made = keys.add("submit", label="made by usidgpu serve")
    if len(keys) == 0:  # loopback, no keys stored: open to this machine's users
        return None, None
    return keys, made


def serve(
    folders: Sequence[str | os.PathLike],
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    commands: Commands | None = None,
    rules: list[Rule] | None = None,
    options: Options | None = None,
    state_dir: str | os.PathLike | None = None,
    api_key: str | None = None,
    read_only: bool = False,
    max_slice_bytes: int = 1 << 30,
    rate: float = 500.0,
    jobs_per_client: int = 16,
) -> None:
    """Serve ``folders`` on ``host:port`` until stopped (Ctrl-C or SIGTERM).

    Parameters
    ----------
    host : str
        Loopback (the default) serves this machine only; any other address requires API keys
        (one is generated and printed once when none is stored, or give ``api_key``).
    commands : Commands
        The analyses jobs may run (from the command line; none: no jobs).
    rules : list of Rule
        The pipeline (none: nothing runs by itself).
    options : Options
        How jobs run (device, scheduler, jobs at once, settle time, watching).
    api_key : str, optional
        Store this key (≥ 16 characters) with the ``submit`` scope.
    read_only : bool
        Serve data only: no jobs, no pipeline, no translations.
    rate : float
        Requests per second per client (bursts of twice as many; 0: no limit).
    jobs_per_client : int
        Jobs one client may have queued or running (0: no limit).
    """
    import uvicorn

    if rate < 0 or jobs_per_client < 0:
        raise InvalidInput("--rate and --jobs-per-client must be 0 (no limit) or more")
    if not 0 <= port <= 65535:
        raise InvalidInput(f"--port must be in 0..65535, got {port}")
    sock = listen(host, port)  # before anything else: a busy port fails before the catalog is taken
    return_large_blocks_to_the_system()
    options = options or Options()
    options.read_only = options.read_only or read_only
    with Service(folders, commands or Commands(), rules or [], state_dir, options) as service:
        keys, shown = open_keys(service.catalog.state_dir, host, api_key)
        if shown:
            print(f"API key (shown once; stored hashed in {service.catalog.state_dir / 'keys.json'}):\n  {shown}")
        counts = service.start()
        print(
            f"catalog       {_count(len(service.catalog.datasets()), 'dataset')} in "
            f"{_count(len(service.watched), 'folder')}"
            + (f", {counts['failed']} file(s) unreadable" if counts["failed"] else ""),
            flush=True,
        )
        limiter = RateLimiter(rate, burst=max(1, int(2 * rate)))
        in_flight = ByteBudget(memory_budget(options.memory))
        settings = Settings(max_slice_bytes, keys, options.read_only, limiter, jobs_per_client, in_flight)
        server = uvicorn.Server(uvicorn.Config(create_app(service, settings), log_level="warning", access_log=False))
        print(f"serving       http://{_url_host(host)}:{sock.getsockname()[1]}/  (Ctrl-C stops)", flush=True)
        logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
        server.run(sockets=[sock])


def return_large_blocks_to_the_system() -> None:
    """Make glibc give every freed block of 1 MB or more back to the system at once.

    Slices are large, short-lived arrays read in many threads. glibc raises its mmap threshold
    after such frees (up to 32 MB), so later slices come from per-thread heaps that keep their
    memory: the resident size climbs far above the bytes actually in flight. A fixed threshold
    keeps large blocks in their own mappings, returned on free (Linux with glibc; elsewhere
    nothing is changed).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD: fixed, so glibc stops raising it
    except (OSError, AttributeError):
        pass


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one), made here so the address in use is
    known before serving starts and a busy port is one clear error."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # answers go out as headers then body: without TCP_NODELAY (inherited by the accepted
    # connections) Nagle's algorithm holds the body until the client's delayed ACK, 40 ms each
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # a send buffer that takes a whole piece of a large slice at once (see app.SEND_PIECE): with
    # the default the loop waits for the client to drain every few hundred kB
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    return sock


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
