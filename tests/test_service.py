"""``usidgpu serve``: a real server on a free loopback port, talked to with a real HTTP client
(httpx); every slice is compared with :meth:`usidgpu.MainDataset.sel` on the same file."""

from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import file_digest, make_file
from service_tools import Server, served, start_server

import usidgpu
from usidgpu import Dimension

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@contextmanager
def quiet_service(folder: Path, tmp_path: Path):
    """A service in this process with no jobs, no pipeline and no watcher, started."""
    from usidgpu.service.commands import Commands
    from usidgpu.service.instance import Options, Service

    with Service([folder], Commands(), [], tmp_path / "state", Options(watch=False, read_only=True)) as service:
        service.start()
        yield service


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A watched folder: a spectrum image, an image with metadata, a damaged file, a non-USID file."""
    root = tmp_path_factory.mktemp("instrument")
    rng = np.random.default_rng(3)
    make_file(
        root / "si.h5",
        rng.standard_normal((6, 5, 7)).astype(np.float32),
        pos=[Dimension("Y", "nm", np.arange(6) * 0.5), Dimension("X", "nm", np.arange(5) * 0.5)],
        spec=[Dimension("Bias", "V", np.linspace(-1, 1, 7))],
    )
    sub = root / "day2"
    sub.mkdir()
    make_file(
        sub / "haadf.h5",
        rng.integers(0, 4000, (64, 48, 1)).astype(np.uint16),
        pos=[Dimension("Y", "Å", 64), Dimension("X", "Å", 48)],
        spec=[Dimension("arb", "a.u.", 1)],
        quantity="Intensity",
        units="counts",
    )
    with h5py.File(sub / "haadf.h5", "a") as f:
        f["Measurement_000"].attrs["instrument"] = "Nion UltraSTEM 100"
    make_file(
        root / "big.h5",
        np.zeros((40, 40, 20), np.float32),
        pos=[Dimension("Y", "nm", 40), Dimension("X", "nm", 40)],
        spec=[Dimension("Bias", "V", 20)],
    )
    (root / "damaged.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with h5py.File(root / "plain.h5", "w") as f:
        f["x"] = np.arange(3)
    return root


@pytest.fixture(scope="module")
def server(folder, tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    with served(folder, "--state", state, "--max-slice", "64kB", "--read-only") as srv:
        yield srv.url, srv.lines


def datasets(url: str, **params) -> list[dict]:
    r = httpx.get(f"{url}/api/v1/datasets", params=params)
    r.raise_for_status()
    return r.json()["datasets"]


def local(folder: Path, name: str):
    return usidgpu.open(folder / name)


def test_the_catalog_lists_every_usid_dataset_and_each_unreadable_file(server, folder):
    url, lines = server
    assert any("3 datasets" in ln and "unreadable" in ln for ln in lines), lines
    body = httpx.get(f"{url}/api/v1/datasets").json()
    kinds = {d["file"]: d["kind"] for d in body["datasets"]}
    assert kinds == {"si.h5": "spectrum image", "haadf.h5": "image", "big.h5": "spectrum image"}
    failed = {f["file"]: f["error"] for f in body["failed"]}
    assert set(failed) == {"damaged.h5", "plain.h5"}
    assert all("\n" not in e and str(folder) not in e for e in failed.values())  # one line, no server paths


def test_search_by_words_kind_and_dimension(server):
    url, _ = server
    assert [d["file"] for d in datasets(url, q="nion")] == ["haadf.h5"]
    assert [d["file"] for d in datasets(url, q="si.h5 bias v")] == ["si.h5"]
    assert [d["file"] for d in datasets(url, kind="image")] == ["haadf.h5"]
    assert sorted(d["file"] for d in datasets(url, dim="bias")) == ["big.h5", "si.h5"]
    assert datasets(url, q="nion bias") == []


def test_a_description_has_the_dims_units_and_values_of_the_file(server, folder):
    url, _ = server
    (entry,) = datasets(url, q="si.h5")
    desc = httpx.get(f"{url}/api/v1/datasets/{entry['id']}").json()
    with local(folder, "si.h5") as f:
        m = f.main_datasets()[0]
        assert [d["name"] for d in desc["dims"]] == m.dim_names
        assert [d["units"] for d in desc["dims"]] == [d.units for d in m.dims]
        for got, want in zip(desc["dims"], m.dims):
            np.testing.assert_allclose(got["values"], want.values)
        assert desc["nd_shape"] == list(m.nd_shape) and desc["units"] == m.units and desc["path"] == m.name


@pytest.mark.parametrize(
    "query, selection",
    [
        ({}, {}),
        ({"Bias": "3"}, {"Bias": 3}),
        ({"X": "1:4", "Bias": "-1"}, {"X": slice(1, 4), "Bias": -1}),
        ({"Y": "0,2,5", "X": "::2"}, {"Y": [0, 2, 5], "X": slice(None, None, 2)}),
    ],
)
def test_slices_equal_sel_in_every_format(server, folder, query, selection):
    url, _ = server
    (entry,) = datasets(url, q="si.h5")
    with local(folder, "si.h5") as f:
        want = f.main_datasets()[0].sel(**selection)
    base = f"{url}/api/v1/datasets/{entry['id']}/data"
    npy = httpx.get(base, params=query)
    assert npy.headers["content-type"] == "application/x-npy"
    np.testing.assert_array_equal(np.load(io.BytesIO(npy.content)), want)
    raw = httpx.get(base, params=dict(query, format="raw"))
    shape = tuple(int(s) for s in raw.headers["x-array-shape"].split(",") if s)
    got = np.frombuffer(raw.content, dtype=np.dtype(raw.headers["x-array-dtype"])).reshape(shape)
    np.testing.assert_array_equal(got, want)
    js = httpx.get(base, params=dict(query, format="json")).json()
    np.testing.assert_allclose(np.array(js["data"], dtype=np.float64), want)
    assert js["shape"] == list(want.shape)


def test_csv_of_a_table_with_its_coordinates(server, folder):
    url, _ = server
    (entry,) = datasets(url, q="si.h5")
    base = f"{url}/api/v1/datasets/{entry['id']}/data"
    with local(folder, "si.h5") as f:
        m = f.main_datasets()[0]
        two = httpx.get(base, params={"format": "csv", "X": "2", "Y": "1:5"})
        assert two.headers["content-type"].startswith("text/csv")
        header, *_ = two.text.splitlines()
        table = np.loadtxt(io.StringIO(two.text), delimiter=",", skiprows=1)
        np.testing.assert_allclose(table[:, 0], m.dim("Y").values[1:5], rtol=1e-6)  # the rows' coordinates
        np.testing.assert_allclose(table[:, 1:], m.sel(X=2, Y=slice(1, 5)), rtol=1e-6)
        assert header.startswith("Y \\ Bias,")
        np.testing.assert_allclose([float(v) for v in header.split(",")[1:]], m.dim("Bias").values, rtol=1e-6)
        one = np.loadtxt(
            io.StringIO(httpx.get(base, params={"format": "csv", "X": "2", "Y": "3"}).text), delimiter=",", skiprows=1
        )
        np.testing.assert_allclose(one[:, 1], m.sel(X=2, Y=3), rtol=1e-6)
    refused = httpx.get(base, params={"format": "csv"})
    assert refused.status_code == 400 and "1-D or 2-D" in refused.json()["detail"]


def test_png_of_a_2d_view_has_its_shape_and_contrast(server, folder):
    from PIL import Image

    url, _ = server
    (entry,) = datasets(url, kind="image")
    base = f"{url}/api/v1/datasets/{entry['id']}/data"
    r = httpx.get(base, params={"format": "png", "arb": "0", "cmap": "gray", "vmin": "0", "vmax": "4000"})
    assert r.headers["content-type"] == "image/png"
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    with local(folder, "day2/haadf.h5") as f:
        want = f.main_datasets()[0].sel(arb=0).astype(float)
    assert img.shape[:2] == want.shape and img.shape[2] in (3, 4)
    # gray: the red channel is the value scaled to 0..255 (matplotlib quantizes to 256 levels: ±2)
    np.testing.assert_allclose(img[..., 0], np.clip(want / 4000, 0, 1) * 255, atol=2.01)
    bad = httpx.get(base, params={"format": "png", "arb": "0", "cmap": "nope"})
    assert bad.status_code == 422 and "viridis" in str(bad.json()["detail"])


@pytest.mark.parametrize(
    "path, params, status, words",
    [
        ("datasets/0000000000000000", {}, 404, "no dataset"),
        ("jobs/9223372036854775808", {}, 422, "less than or equal"),  # beyond SQLite's integers (found by fuzzing)
        ("jobs/0", {}, 422, "greater than or equal"),
        ("datasets/..%2F..%2Fetc%2Fpasswd/data", {}, 404, ""),
        ("datasets/ID/data", {"Energy": "1"}, 400, "no dimension 'Energy'"),
        ("datasets/ID/data", {"X": "1:2:0"}, 400, "step cannot be 0"),
        ("datasets/ID/data", {"X": "x"}, 400, "give an index"),
        ("datasets/ID/data", {"X": "99"}, 400, "out of range"),
        ("datasets/ID/data", {"format": "tiff"}, 422, "npy"),
        ("datasets/ID/data", {"format": "png"}, 400, "2-D"),
        ("datasets/ID/data", {"format": "png", "Bias": "0", "vmin": "nan"}, 400, "finite"),
    ],
)
def test_bad_requests_get_a_4xx_with_one_line(server, path, params, status, words):
    url, _ = server
    (entry,) = datasets(url, q="si.h5")
    r = httpx.get(f"{url}/api/v1/{path.replace('ID', entry['id'])}", params=params)
    assert r.status_code == status, r.text
    detail = str(r.json()["detail"])
    assert words in detail and "Traceback" not in r.text


def test_a_selection_over_the_limit_is_refused_with_413(server):
    url, _ = server
    (entry,) = datasets(url, q="big.h5")  # 40·40·20 float32 = 128 kB, over the 64 kB limit
    base = f"{url}/api/v1/datasets/{entry['id']}/data"
    r = httpx.get(base)
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert httpx.get(base, params={"Bias": "0"}).status_code == 200  # one image: 6.4 kB


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_large_slices_are_streamed_in_parts_and_equal_sel(folder, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from usidgpu.service import app as service_app

    monkeypatch.setattr(service_app, "STREAM_ABOVE", 200)  # bytes: every slice here is streamed
    monkeypatch.setattr(service_app, "SEND_PIECE", 96)  # and sent in many pieces
    with quiet_service(folder, tmp_path) as service:
        client = TestClient(service_app.create_app(service))
        (entry,) = service.catalog.datasets(query="si.h5")
        with local(folder, "si.h5") as f:
            m = f.main_datasets()[0]
            for query, sel in [
                ({}, {}),
                ({"Y": "1:5", "Bias": "2"}, {"Y": slice(1, 5), "Bias": 2}),
                ({"Y": "::-2", "X": "4,0,2"}, {"Y": slice(None, None, -2), "X": [4, 0, 2]}),
            ]:
                expected = m.sel(**sel)
                r = client.get(f"/api/v1/datasets/{entry.id}/data", params=query)
                assert int(r.headers["content-length"]) == len(r.content)
                np.testing.assert_array_equal(np.load(io.BytesIO(r.content)), expected)
                r = client.get(f"/api/v1/datasets/{entry.id}/data", params=dict(query, format="raw"))
                assert r.headers["x-array-shape"] == ",".join(map(str, expected.shape))
                raw = np.frombuffer(r.content, dtype=r.headers["x-array-dtype"]).reshape(expected.shape)
                np.testing.assert_array_equal(raw, expected)


@pytest.mark.parametrize(
    "key", [slice(None), slice(1, 6, 2), slice(None, None, -1), slice(4, 0, -3), slice(-2, None), [5, 0, 3, 3, 1]]
)
@pytest.mark.parametrize("part_bytes", [1, 150, 10**6])
def test_the_parts_of_a_streamed_slice_put_together_equal_the_slice(folder, key, part_bytes):
    from usidgpu.service.app import part_selections

    with local(folder, "si.h5") as f:
        m = f.main_datasets()[0]
        whole = m.sel(Y=key, Bias=slice(1, 6))
        parts = part_selections({"Y": key, "Bias": slice(1, 6)}, "Y", 6, whole.nbytes, part_bytes)
        assert len(parts) == (whole.shape[0] if part_bytes == 1 else 1 if part_bytes == 10**6 else len(parts))
        np.testing.assert_array_equal(np.concatenate([m.sel(**p) for p in parts]), whole)


def _run_stream(parts: int, disconnect_after: int | None = None, fail_at: int | None = None):
    """Drive a SliceStream by hand: what was read, what was sent, whether its memory was released."""
    import asyncio

    from starlette.background import BackgroundTask

    from usidgpu.service.app import SliceStream

    reads, sent, released = [], [], []

    def read(part):
        reads.append(part["i"])
        if part["i"] == fail_at:
            raise OSError("the disk went away")
        return np.full(4, part["i"], np.float32)

    async def main():
        left = asyncio.Event()

        async def receive():
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)
            if disconnect_after is not None and len(sent) > disconnect_after:
                left.set()
                await asyncio.sleep(0.05)

        stream = SliceStream(b"", read, [{"i": i} for i in range(parts)], 16 * parts,
                             background=BackgroundTask(released.append, True))  # fmt: skip
        await stream(None, receive, send)

    return reads, sent, released, main


def test_a_streamed_slice_is_sent_whole_with_its_length():
    import asyncio

    reads, sent, released, main = _run_stream(5)
    asyncio.run(main())
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert reads == [0, 1, 2, 3, 4] and released == [True]
    assert b"".join(bytes(m["body"]) for m in bodies) == np.repeat(np.arange(5, dtype=np.float32), 4).tobytes()
    assert [m["more_body"] for m in bodies] == [True] * 4 + [False]
    assert dict(sent[0]["headers"])[b"content-length"] == b"80"


def test_a_client_that_leaves_stops_the_reading_and_frees_the_memory():
    import asyncio

    reads, sent, released, main = _run_stream(50, disconnect_after=2)
    asyncio.run(main())
    assert len(reads) < 10 and released == [True]


def test_a_read_that_fails_mid_stream_ends_the_answer_short_and_frees_the_memory():
    import asyncio

    reads, sent, released, main = _run_stream(6, fail_at=3)
    with pytest.raises(OSError, match="disk went away"):  # the server closes the connection short
        asyncio.run(main())
    assert released == [True] and not any(m.get("more_body") is False for m in sent)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_an_internal_error_is_a_500_without_a_traceback(folder, tmp_path):
    from fastapi.testclient import TestClient

    from usidgpu.service.app import create_app

    with quiet_service(folder, tmp_path) as service:

        def broken(*a, **k):
            raise RuntimeError("secret internal detail")

        service.catalog.datasets = broken
        r = TestClient(create_app(service), raise_server_exceptions=False).get("/api/v1/datasets")
    assert r.status_code == 500 and "internal error" in r.json()["detail"]
    assert "secret" not in r.text and "Traceback" not in r.text


def test_two_services_refuse_to_share_one_catalog(folder, tmp_path):
    state = tmp_path / "state"
    with served(folder, "--state", state, "--read-only"):
        proc = start_server(folder, "--state", state, "--read-only")
        assert not isinstance(proc, Server), "a second service started on the same catalog"
        err = open(proc.stderr_path).read()
        assert proc.returncode == 2 and "in use by another usidgpu serve" in err
        assert len(err.strip().splitlines()) == 1


def test_serving_never_changes_the_files(folder, tmp_path):
    before = {p: file_digest(p) for p in folder.rglob("*.h5")}
    with served(folder, "--state", tmp_path / "state", "--read-only") as srv:
        url = srv.url
        for d in datasets(url):
            assert httpx.get(f"{url}/api/v1/datasets/{d['id']}/data", params={"Bias": "0"}).status_code in (200, 400)
    assert {p: file_digest(p) for p in folder.rglob("*.h5")} == before


def test_off_loopback_a_key_is_required_and_scopes_are_kept(folder, tmp_path):
    from usidgpu.service.keys import KeyStore

    state = tmp_path / "state"
    state.mkdir()
    reader = KeyStore(state / "keys.json").add("read")
    with served(folder, "--state", state, "--host", "0.0.0.0", "--no-pipeline") as srv:
        url, lines = srv.url, srv.lines
        assert not any("API key" in ln for ln in lines)  # keys are stored already: none is made
        url = url.replace("0.0.0.0", "127.0.0.1")
        assert httpx.get(f"{url}/api/v1/datasets").status_code == 401
        assert (
            httpx.get(f"{url}/api/v1/datasets", headers={"Authorization": "Bearer wrong-key-123456"}).status_code == 401
        )
        assert httpx.get(f"{url}/api/v1/datasets", headers={"Authorization": f"Bearer {reader}"}).status_code == 200
        assert httpx.get(f"{url}/api/v1/datasets", headers={"X-API-Key": reader}).status_code == 200
        assert httpx.post(f"{url}/api/v1/rescan", headers={"X-API-Key": reader}).status_code == 403
        submit = {"dataset": "x", "analysis": "svd", "parameters": {"k": 2}}
        assert httpx.post(f"{url}/api/v1/jobs", json=submit, headers={"X-API-Key": reader}).status_code == 403


def test_off_loopback_without_keys_one_is_made_printed_once_and_stored_hashed(tmp_path):
    from usidgpu.service.server import open_keys

    keys, shown = open_keys(tmp_path, "0.0.0.0", None)
    assert shown and keys.scope_of(shown) == "submit" and keys.scope_of(shown + "x") is None
    assert shown not in (tmp_path / "keys.json").read_text()
    again, shown_again = open_keys(tmp_path, "192.168.1.5", None)
    assert shown_again is None and again.scope_of(shown) == "submit"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert open_keys(fresh, "127.0.0.1", None) == (None, None)  # loopback, no keys stored: open


def test_loopback_detection():
    from usidgpu.service.keys import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.3.2.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.0.0.1")
    assert not is_loopback("myhost.example")


def test_the_schema_describes_the_api(server):
    url, _ = server
    schema = httpx.get(f"{url}/openapi.json").json()
    assert {"/api/v1/datasets", "/api/v1/datasets/{dataset_id}", "/api/v1/datasets/{dataset_id}/data"} <= set(
        schema["paths"]
    )


def test_a_zarr_v3_client_reads_the_same_values_by_url(tmp_path):
    """zarr-python, which knows nothing of usidgpu, opens each dataset by URL (fsspec's HTTP
    store) as an n-d array with named dimensions; several chunks, padded edge chunks."""
    zarr = pytest.importorskip("zarr", minversion="3")
    pytest.importorskip("aiohttp")  # fsspec's HTTP file system
    folder = tmp_path / "data"
    folder.mkdir()
    values = np.random.default_rng(4).standard_normal((37, 64, 256)).astype(">f4")  # big-endian on disk
    make_file(
        folder / "si.h5",
        values,
        pos=[Dimension("Y", "nm", np.arange(37) * 0.2), Dimension("X", "nm", 64)],
        spec=[Dimension("Energy", "eV", np.linspace(100, 400, 256))],
        quantity="Intensity",
        units="counts",
    )
    compound = np.zeros((4, 5, 3), dtype=[("amp", "f4"), ("phase", "f4")])
    make_file(folder / "compound.h5", compound, pos=[Dimension("Y", "nm", 4), Dimension("X", "nm", 5)],
              spec=[Dimension("Bias", "V", 3)])  # fmt: skip
    with served(folder, "--read-only", "--state", tmp_path / "state") as srv:
        ids = {d["file"]: d["id"] for d in httpx.get(f"{srv.url}/api/v1/datasets").json()["datasets"]}
        z = zarr.open_array(f"{srv.url}/zarr/{ids['si.h5']}", mode="r")
        assert z.shape == (37, 64, 256) and z.metadata.dimension_names == ("Y", "X", "Energy")
        assert z.nchunks > 1 and z.shape[0] % z.chunks[0] != 0  # an edge chunk is read too
        assert z.attrs["units"] == "counts" and [d["units"] for d in z.attrs["usid_dims"]] == ["nm", "nm", "eV"]
        with usidgpu.open(folder / "si.h5") as f:
            m = f.main_datasets()[0]
            np.testing.assert_array_equal(z[:], m.sel())
            np.testing.assert_array_equal(z[30:, 7, ::3], m.sel(Y=slice(30, None), X=7, Energy=slice(None, None, 3)))
        r = httpx.get(f"{srv.url}/zarr/{ids['compound.h5']}/zarr.json")
        assert r.status_code == 415 and "zarr v3" in r.json()["detail"]
        assert httpx.get(f"{srv.url}/zarr/{ids['si.h5']}/c/99/0/0").status_code == 404
        assert httpx.get(f"{srv.url}/zarr/{ids['si.h5']}/.zarray").status_code == 404


def test_every_answer_carries_the_pages_security_policy(server):
    url, _lines = server
    for path in ("/", "/static/app.js", "/static/results.js", "/api/v1/datasets", "/api/v1/datasets/nope"):
        r = httpx.get(url + path)
        assert r.headers["content-security-policy"].startswith("default-src 'self'"), path
        assert r.headers["x-content-type-options"] == "nosniff", path
    assert httpx.get(url + "/api/v1/datasets/nope").status_code == 404
