"""``usidgpu serve`` over loopback, side by side with local h5py reads and with Tiled serving the
same HDF5 file: small-slice rate and latency with 1 and 32 clients, large-slice throughput, and
the server's resident memory while 32 clients pull large slices.

Small slice: one spectrum (one position, all spectroscopic points) — usidgpu ``?Y=i&X=j``
(raw bytes), Tiled ``?slice=r`` of the same row of the Main dataset, h5py ``dset[r]``.
Large slice: a band of whole rows of the image, ``--large-mb`` each.

Tiled runs from its own environment (``--tiled-python``, e.g. a venv with ``tiled[server]``), as
a user would install it; without it the Tiled columns say why they are missing.

Every HTTP contender is read with the same client (urllib3, one keep-alive connection per client
thread); large slices are also read with usidgpu's own client (``usidgpu.connect(...).sel``, which
reads into the array as the bytes arrive). ``bare_socket`` is the ceiling of any HTTP server on
this machine: a blocking socket server in its own process answering each request with the h5py
read of the slice and ``sendall`` — no framework, no event loop, one copy less than an ASGI server.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import urllib3
from harness import run_header
from machine import threadpools, versions

import usidgpu

RESULTS = Path(__file__).parent / "results"
MB = 1e6
DSET = "Measurement_000/Channel_000/Raw_Data"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ny", type=int, default=256)
    p.add_argument("--nx", type=int, default=256)
    p.add_argument("--n-spec", type=int, default=1024)
    p.add_argument("--large-mb", type=float, default=16.0, help="size of one large slice (MB)")
    p.add_argument("--seconds", type=float, default=5.0, help="duration of each rate measurement")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 32])
    p.add_argument("--tiled-python", default=None, help="python of an environment with tiled[server]")
    p.add_argument("--budget-mb", type=int, default=256, help="the server's --memory (slices in flight)")
    p.add_argument("--output", type=Path, default=None)
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 120, ok=lambda status: status < 500) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server ended (exit {proc.returncode})")
        try:
            if ok(urllib3.request("GET", url, timeout=2, retries=False).status):
                return
        except urllib3.exceptions.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url}: not up after {timeout} s")


def write_file(path: Path, ny: int, nx: int, n_spec: int) -> None:
    from usidgpu import Dimension, write_main

    rng = np.random.default_rng(0)
    data = rng.standard_normal((ny * nx, n_spec), dtype=np.float32)
    with h5py.File(path, "w") as f:
        g = f.require_group("Measurement_000/Channel_000")
        write_main(g, "Raw_Data", data, "Current", "nA",
                   [Dimension("Y", "nm", ny), Dimension("X", "nm", nx)], [Dimension("Bias", "V", n_spec)])  # fmt: skip


def rss_of(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
    except psutil.NoSuchProcess:
        return 0


def measure(fetch, n_clients: int, seconds: float, n_items: int, nbytes: int) -> dict[str, Any]:
    """``n_clients`` threads call ``fetch(client_state, i)`` on random items for ``seconds``."""
    latencies: list[list[float]] = [[] for _ in range(n_clients)]
    stop = time.monotonic() + seconds
    errors: list[str] = []

    def worker(k: int) -> None:
        rnd = random.Random(k)
        state: dict[str, Any] = {}
        try:
            while time.monotonic() < stop:
                i = rnd.randrange(n_items)
                t0 = time.perf_counter()
                fetch(state, i)
                latencies[k].append(time.perf_counter() - t0)
        except Exception as exc:  # recorded in the results
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
        finally:
            if "client" in state:
                state["client"].close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(x for ls in latencies for x in ls)
    n = len(lat)
    return {
        "requests": n,
        "per_s": round(n / wall, 1),
        "MB_per_s": round(n * nbytes / wall / MB, 1),
        "p50_ms": round(1000 * lat[n // 2], 2) if n else None,
        "p99_ms": round(1000 * lat[min(n - 1, int(n * 0.99))], 2) if n else None,
        "errors": errors[:3],
    }


class Http:
    """One keep-alive HTTP connection (urllib3), as one client thread holds it."""

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self.pool = urllib3.PoolManager(maxsize=1, retries=False, headers=headers or {})

    def get(self, url: str, params: dict[str, Any]) -> tuple[int, bytes]:
        r = self.pool.request("GET", url, fields=params)
        return r.status, r.data

    def close(self) -> None:
        self.pool.clear()


def http_client(state: dict[str, Any], headers: dict[str, str] | None = None) -> Http:
    if "client" not in state:
        state["client"] = Http(headers)
    return state["client"]


def bare_socket_server(sock: socket.socket, path: str, rows_per_band: int) -> None:
    """The ceiling: ``GET /?i=K`` answered with band K of the Main dataset, read with h5py and sent
    with ``sendall`` by a thread per connection (run in its own process)."""
    h5 = h5py.File(path, "r")
    dset = h5[DSET]
    lock = threading.Lock()

    def answer(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = conn.makefile("rb")
        while True:
            request = stream.readline()
            if not request:
                return
            while stream.readline() not in (b"\r\n", b""):
                pass
            i = int(request.split(b"i=")[1].split()[0])
            with lock:
                values = dset[i * rows_per_band : (i + 1) * rows_per_band]
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % values.nbytes)
            conn.sendall(values.data)

    while True:
        conn, _ = sock.accept()
        threading.Thread(target=answer, args=(conn,), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out_path = args.output or RESULTS / "service_cpu.json"
    tmp = Path(tempfile.mkdtemp(prefix="bench_service_"))
    data_dir = tmp / "data"
    data_dir.mkdir()
    path = data_dir / "si.h5"
    print(f"writing {args.ny}×{args.nx}×{args.n_spec} float32 ...", flush=True)
    write_file(path, args.ny, args.nx, args.n_spec)
    rows = args.ny * args.nx
    row_bytes = args.n_spec * 4
    band = max(1, int(args.large_mb * MB / (args.nx * row_bytes)))  # Y rows per large slice
    large_bytes = band * args.nx * row_bytes

    procs: list[Any] = []
    result: dict[str, Any] = {
        "benchmark": "bench_service (usidgpu serve over loopback vs local h5py vs Tiled)",
        **run_header("cpu"),
        "versions": versions(False, extra=("fastapi", "uvicorn", "uvloop", "httptools", "urllib3")),
        "threadpools": threadpools(),
        "parameters": {
            "shape": [args.ny, args.nx, args.n_spec],
            "dtype": "float32",
            "file_MB": round(rows * row_bytes / MB, 1),
            "small_slice": f"one spectrum ({row_bytes} bytes)",
            "large_slice": f"{band} Y rows × {args.nx} X × {args.n_spec} ({large_bytes / MB:.1f} MB)",
            "seconds_per_measurement": args.seconds,
            "clients": args.clients,
            "client": "urllib3, one keep-alive connection per client thread, all in one process "
            "(usidgpu_client: usidgpu.connect(...).sel, reading into the array)",
            "page_cache": "warm (the file was just written)",
            "server_memory_budget_MB": args.budget_mb,
        },
        "cases": {},
    }
    try:
        port = free_port()
        env = dict(os.environ, USIDGPU_DEVICE="cpu")
        server = subprocess.Popen(
            [sys.executable, "-m", "usidgpu", "serve", str(data_dir), "--port", str(port), "--read-only",
             "--rate", "0", "--max-slice", "4GB", "--memory", f"{args.budget_mb}MB", "--state", str(tmp / "state")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        procs.append(server)
        base = f"http://127.0.0.1:{port}"
        wait_up(f"{base}/api/v1/health", server)
        (entry,) = json.loads(urllib3.request("GET", f"{base}/api/v1/datasets").data)["datasets"]
        data_url = f"{base}/api/v1/datasets/{entry['id']}/data"

        bare = socket.socket()
        bare.bind(("127.0.0.1", 0))
        bare.listen(64)
        bare_url = f"http://127.0.0.1:{bare.getsockname()[1]}"
        ceiling = multiprocessing.get_context("spawn").Process(
            target=bare_socket_server, args=(bare, str(path), band * args.nx), daemon=True
        )
        ceiling.start()
        bare.close()
        procs.append(ceiling)

        tiled_url = None
        if args.tiled_python:
            tport = free_port()
            tiled = subprocess.Popen(
                [args.tiled_python, "-m", "tiled", "serve", "directory", str(data_dir), "--public",
                 "--port", str(tport), "--host", "127.0.0.1"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp,
            )  # fmt: skip
            procs.append(tiled)
            tiled_url = f"http://127.0.0.1:{tport}/api/v1/array/full/si/{DSET}"
            # up once Tiled has indexed the folder
            wait_up(f"{tiled_url}?slice=0", tiled, ok=lambda status: status == 200)
            version = subprocess.run(
                [args.tiled_python, "-c", "import tiled; print(tiled.__version__)"], capture_output=True, text=True
            )
            result["versions"]["tiled"] = version.stdout.strip()
            result["tiled_note"] = (
                "Tiled serves the Main dataset as the 2-D table it is in the file (no USID dimensions); browsing "
                "the file's metadata (GET /api/v1/search/si) fails with a 500 because USID attributes hold "
                "HDF5 object references, so the array is addressed directly"
            )
        else:
            result["tiled"] = "not measured: no --tiled-python given"

        h5 = h5py.File(path, "r")
        dset = h5[DSET]
        h5_lock = threading.Lock()  # h5py serializes anyway; explicit for clarity

        def small_usidgpu(state: dict, i: int) -> None:
            status, body = http_client(state).get(data_url, {"Y": i // args.nx, "X": i % args.nx, "format": "raw"})
            assert len(body) == row_bytes, status

        def small_tiled(state: dict, i: int) -> None:
            status, body = http_client(state, {"Accept": "application/octet-stream"}).get(tiled_url, {"slice": str(i)})
            assert len(body) == row_bytes, (status, body[:200])

        def small_h5py(_state: dict, i: int) -> None:
            with h5_lock:
                dset[i]

        n_bands = args.ny // band

        def large_usidgpu(state: dict, i: int) -> None:
            status, body = http_client(state).get(data_url, {"Y": f"{i * band}:{(i + 1) * band}", "format": "raw"})
            assert len(body) == large_bytes, status

        def large_usidgpu_client(state: dict, i: int) -> None:
            if "client" not in state:
                state["client"] = usidgpu.connect(base, connections=1)
                state["dataset"] = state["client"].dataset(entry["id"])
            assert state["dataset"].sel(Y=slice(i * band, (i + 1) * band)).nbytes == large_bytes

        def large_tiled(state: dict, i: int) -> None:
            a, b = i * band * args.nx, (i + 1) * band * args.nx
            tiled = http_client(state, {"Accept": "application/octet-stream"})
            status, body = tiled.get(tiled_url, {"slice": f"{a}:{b}"})
            assert len(body) == large_bytes, (status, body[:200])

        def large_bare_socket(state: dict, i: int) -> None:
            status, body = http_client(state).get(f"{bare_url}/", {"i": i})
            assert len(body) == large_bytes, status

        def large_h5py(_state: dict, i: int) -> None:
            with h5_lock:
                dset[i * band * args.nx : (i + 1) * band * args.nx]

        contenders = {"usidgpu": (small_usidgpu, large_usidgpu), "h5py_local": (small_h5py, large_h5py)}
        if tiled_url:
            contenders["tiled"] = (small_tiled, large_tiled)
        large_only = {"usidgpu_client": large_usidgpu_client, "bare_socket": large_bare_socket}
        for n in args.clients:
            case: dict[str, Any] = {}
            for name, (small, _large) in contenders.items():
                measure(small, min(n, 4), 1.0, rows, row_bytes)  # warm-up
                case[name] = measure(small, n, args.seconds, rows, row_bytes)
                print(f"small slices, {n} client(s), {name}: {case[name]}", flush=True)
            if "tiled" in case:
                case["usidgpu_over_tiled_per_s"] = round(case["usidgpu"]["per_s"] / case["tiled"]["per_s"], 3)
            case["usidgpu_over_h5py_per_s"] = round(case["usidgpu"]["per_s"] / case["h5py_local"]["per_s"], 3)
            result["cases"][f"small_{n}_clients"] = case
        for n in (1, 4):
            case = {}
            for name, large in {**{k: v[1] for k, v in contenders.items()}, **large_only}.items():
                measure(large, 1, 1.0, n_bands, large_bytes)
                case[name] = measure(large, n, args.seconds, n_bands, large_bytes)
                print(f"large slices, {n} client(s), {name}: {case[name]}", flush=True)
            local_rate = case["h5py_local"]["MB_per_s"]
            for name in ("usidgpu", "usidgpu_client", "bare_socket"):
                case[f"{name}_over_h5py_MB_per_s"] = round(case[name]["MB_per_s"] / local_rate, 3)
            case["usidgpu_over_bare_socket_MB_per_s"] = round(
                case["usidgpu"]["MB_per_s"] / case["bare_socket"]["MB_per_s"], 3
            )
            if "tiled" in case:
                case["usidgpu_over_tiled_MB_per_s"] = round(case["usidgpu"]["MB_per_s"] / case["tiled"]["MB_per_s"], 3)
            result["cases"][f"large_{n}_clients"] = case
        # resident memory of the server while 32 clients pull large slices
        base_rss = rss_of(server.pid)
        peak = [base_rss]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak[0] = max(peak[0], rss_of(server.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        pulled = measure(large_usidgpu, 32, args.seconds, n_bands, large_bytes)
        sampling.set()
        sampler.join()
        result["memory_32_large_clients"] = {
            "rss_before_MB": round(base_rss / MB, 1),
            "rss_peak_MB": round(peak[0] / MB, 1),
            "grew_MB": round((peak[0] - base_rss) / MB, 1),
            "throughput": pulled,
            "budget_MB": args.budget_mb,
            "within_budget_plus_200MB": (peak[0] - base_rss) / MB <= args.budget_mb + 200,
            "note": "slices read and not yet sent are held under the server's --memory budget (others wait)",
        }
        print(f"memory: {result['memory_32_large_clients']}", flush=True)
        h5.close()
    finally:
        for p in procs:
            p.terminate()
            if isinstance(p, subprocess.Popen):
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
            else:
                p.join(timeout=20)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    result["targets"] = {
        "large_slice_vs_h5py": "≥ 0.70 × local h5py MB/s (bare_socket: what any HTTP server reaches here)",
        "small_slice_vs_tiled": "≥ 1.0 × Tiled's slices per second",
        "memory": "server RSS ≤ its budget + 200 MB while 32 clients pull large slices",
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results written to {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
