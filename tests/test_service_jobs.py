"""Jobs of ``usidgpu serve`` with a real server: the pipeline on files dropped into the folder,
jobs submitted over HTTP, cancelled, followed through the event stream, and resumed after the
server is killed. Results are compared with the command line's on a copy of the same file."""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from fault_tools import data_digests, results_groups, usidgpu
from helpers import make_file
from service_tools import Server, served, start_server, stop_server, wait_for

from usidgpu import Dimension
from usidgpu import open as usidgpu_open

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("watchfiles")

PIPELINE = """
[[rule]]
name = "svd"
kind = ["spectrum image"]
analysis = "svd"
parameters = { k = 3 }

[[rule]]
name = "too many components"
kind = ["spectrum image"]
file = "bad-k*"
analysis = "svd"
parameters = { k = 50 }
"""


def spectrum_image(path: Path, seed: int = 0, shape=(8, 9, 16)) -> str:
    rng = np.random.default_rng(seed)
    data = rng.standard_normal(shape).astype(np.float32)
    pos = [Dimension("Y", "nm", shape[0]), Dimension("X", "nm", shape[1])]
    return make_file(path, data, pos=pos, spec=[Dimension("Bias", "V", np.linspace(-1, 1, shape[2]))])


def jobs(server: Server, **params) -> list[dict]:
    return server.get("jobs", params=params).json()["jobs"]


def finished(server: Server, n: int | None = None, **params):
    """All jobs (or at least n) finished: the list, else None."""
    js = jobs(server, **params)
    if js and all(j["status"] in ("done", "failed", "cancelled") for j in js) and (n is None or len(js) >= n):
        return js
    return None


def group_values(path: Path, group: str) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[group][k][()] for k in f[group] if isinstance(f[group][k], h5py.Dataset)}


@pytest.fixture
def pipeline_file(tmp_path) -> Path:
    p = tmp_path / "pipeline.toml"
    p.write_text(PIPELINE)
    return p


def test_a_dropped_file_is_analyzed_once_like_the_command_line(tmp_path, pipeline_file):
    folder = tmp_path / "instrument"
    folder.mkdir()
    staging = tmp_path / "staging"
    staging.mkdir()
    spectrum_image(staging / "si.h5", seed=1)
    spectrum_image(staging / "bad-k.h5", seed=2)
    reference = tmp_path / "reference.h5"
    shutil.copy(staging / "si.h5", reference)
    with served(folder, "--pipeline", pipeline_file, "--settle", "0.5", "--state", tmp_path / "state") as server:
        # the file arrives slowly, in pieces, as an instrument writes it: taken once, when complete
        data = (staging / "si.h5").read_bytes()
        with open(folder / "si.h5", "wb") as fh:
            for start in range(0, len(data), len(data) // 4 + 1):
                fh.write(data[start : start + len(data) // 4 + 1])
                fh.flush()
                time.sleep(0.3)
        shutil.copy(staging / "bad-k.h5", folder / "bad-k.h5")
        done = wait_for(lambda: finished(server, 3), what="the pipeline's three jobs")
        by_file = {}
        for j in done:
            by_file.setdefault(j["file"], []).append(j)
        assert [j["status"] for j in by_file["si.h5"]] == ["done"]  # once, though it changed 4 times
        bad = sorted(by_file["bad-k.h5"], key=lambda j: j["origin"])
        assert [j["status"] for j in bad] == ["done", "failed"]
        assert "\n" not in bad[1]["message"] and "50" in bad[1]["message"]  # the CLI's own one line
        # the dataset's description lists the new results group
        (entry,) = server.get("datasets", params={"q": "si.h5"}).json()["datasets"]
        desc = server.get(f"datasets/{entry['id']}").json()
        assert [r["tool"] for r in desc["results"]] == ["SVD"]
    # the same analysis by the command line on a copy gives the same numbers
    ran = usidgpu("svd", reference, "-k", "3", "--device", "cpu")
    assert ran.returncode == 0, ran.stderr
    (served_group,) = results_groups(folder / "si.h5", "SVD")
    (cli_group,) = results_groups(reference, "SVD")
    got, want = group_values(folder / "si.h5", served_group), group_values(reference, cli_group)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(np.abs(got[name]), np.abs(want[name]), rtol=1e-5, atol=1e-6, err_msg=name)


def test_submit_follow_events_and_cancel(tmp_path):
    folder = tmp_path / "instrument"
    folder.mkdir()
    spectrum_image(folder / "si.h5", shape=(16, 16, 32))
    big = folder / "big.h5"
    make_file(
        big,
        np.random.default_rng(0).standard_normal((96, 96, 1)).astype(np.float32),
        pos=[Dimension("Y", "nm", 96), Dimension("X", "nm", 96)],
        spec=[Dimension("arb", "a.u.", 1)],
    )
    before = data_digests(folder / "si.h5")
    with served(folder, "--no-pipeline", "--state", tmp_path / "state") as server:
        ids = {d["file"]: d["id"] for d in server.get("datasets").json()["datasets"]}
        # bad submissions: one line each, 4xx
        for body, status, words in [
            ({"dataset": ids["si.h5"], "analysis": "svd", "parameters": {"k": "x"}}, 400, "invalid int"),
            ({"dataset": ids["si.h5"], "analysis": "svd", "parameters": {"output": "/tmp/x.h5"}}, 400, "no parameter"),
            ({"dataset": ids["si.h5"], "analysis": "rm", "parameters": {}}, 422, "svd"),
            ({"dataset": "nope", "analysis": "svd", "parameters": {"k": 2}}, 404, "no dataset"),
            ({"analysis": "svd"}, 422, ""),
        ]:
            r = server.post("jobs", json=body)
            assert r.status_code == status, r.text
            assert words in json.dumps(r.json()["detail"])
        with httpx.stream("GET", f"{server.url}/api/v1/events", timeout=60) as events:
            lines = events.iter_lines()
            assert next(lines).startswith(": connected")
            job = server.post("jobs", json={"dataset": ids["si.h5"], "analysis": "svd", "parameters": {"k": 4}})
            assert job.status_code == 201
            job_id = job.json()["id"]
            seen = []
            for line in lines:
                if line.startswith("data: "):
                    data = json.loads(line[6:])
                    if data.get("id") == job_id:
                        seen.append(data["status"])
                        if data["status"] in ("done", "failed"):
                            break
        assert seen[0] == "queued" and "running" in seen and seen[-1] == "done", seen
        result = server.get(f"jobs/{job_id}").json()
        assert result["result"].endswith("Raw_Data-SVD_000") and result["progress"] == 1.0
        # a running job cancelled: its child ends, no results group, the source unchanged
        slow = server.post("jobs", json={"dataset": ids["big.h5"], "analysis": "denoise", "parameters": {"window": 24}})
        queued = server.post("jobs", json={"dataset": ids["big.h5"], "analysis": "svd", "parameters": {"k": 1}})
        wait_for(lambda: server.get(f"jobs/{slow.json()['id']}").json()["status"] == "running", what="running")
        assert server.post(f"jobs/{queued.json()['id']}/cancel").json()["status"] == "cancelled"
        server.post(f"jobs/{slow.json()['id']}/cancel")
        end = wait_for(
            lambda: (j := server.get(f"jobs/{slow.json()['id']}").json())["status"] in ("cancelled", "done") and j,
            what="the cancelled job to end",
        )
        assert end["status"] == "cancelled", end
        assert server.post("jobs/999/cancel").status_code == 404
    assert results_groups(big) == []
    assert {k: v for k, v in data_digests(folder / "si.h5").items() if k in before} == before


@pytest.mark.parametrize(
    ("side", "window", "after_s"),
    [(128, 32, 0.3), (512, 64, 2.5)],  # killed as the job's command starts, and in the middle of its work
)
def test_a_killed_server_resumes_its_job_with_one_results_group(tmp_path, side, window, after_s):
    folder = tmp_path / "instrument"
    folder.mkdir()
    make_file(
        folder / "img.h5",
        np.random.default_rng(0).standard_normal((side, side, 1)).astype(np.float32),
        pos=[Dimension("Y", "nm", side), Dimension("X", "nm", side)],
        spec=[Dimension("arb", "a.u.", 1)],
    )
    state = tmp_path / "state"
    server = start_server(folder, "--no-pipeline", "--state", state)
    assert isinstance(server, Server)
    try:
        (entry,) = server.get("datasets").json()["datasets"]
        job = server.post(
            "jobs", json={"dataset": entry["id"], "analysis": "denoise", "parameters": {"window": window}}
        )
        job_id = job.json()["id"]
        wait_for(lambda: server.get(f"jobs/{job_id}").json()["status"] == "running", what="the job to run")
        time.sleep(after_s)
        assert server.get(f"jobs/{job_id}").json()["status"] == "running"  # still working when killed
    finally:
        stop_server(server, kill=True)
    # the job's child died with the server (no orphan finishing behind the restarted service)
    time.sleep(0.5)
    assert results_groups(folder / "img.h5") == []
    with served(folder, "--no-pipeline", "--state", state) as again:
        end = wait_for(
            lambda: (j := again.get(f"jobs/{job_id}").json())["status"] in ("done", "failed") and j, what="the rerun"
        )
        assert end["status"] == "done" and end["attempts"] == 2, end
    assert len(results_groups(folder / "img.h5")) == 1
    assert usidgpu("validate", folder / "img.h5").returncode == 0


def test_a_dropped_vendor_file_is_translated_and_catalogued(tmp_path):
    from usidgpu.samples import sample_path

    dm3 = sample_path("survey-dm3")
    folder = tmp_path / "instrument"
    folder.mkdir()
    with served(folder, "--no-pipeline", "--settle", "0.3", "--state", tmp_path / "state") as server:
        shutil.copy(dm3, folder / "survey.dm3")
        (j,) = wait_for(lambda: finished(server, 1), what="the translation")
        assert j["analysis"] == "translate" and j["status"] == "done", j
        (entry,) = wait_for(lambda: server.get("datasets").json()["datasets"], what="the translated dataset")
        (damaged := folder / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
        failed = wait_for(lambda: server.get("datasets").json()["failed"], timeout=60, what="the damaged file")
        assert failed[0]["file"] == damaged.name and "\n" not in failed[0]["error"]
        got = np.load(io.BytesIO(server.get(f"datasets/{entry['id']}/data").content))
    out = tmp_path / "cli.h5"
    assert usidgpu("translate", dm3, out).returncode == 0
    with usidgpu_open(out) as f:
        np.testing.assert_array_equal(got, f.main_datasets()[0].sel())


def test_the_python_client_reads_and_submits_like_local_calls(tmp_path):
    import usidgpu
    from usidgpu.core.errors import SelectionError, UnknownName

    folder = tmp_path / "instrument"
    folder.mkdir()
    spectrum_image(folder / "si.h5", seed=5, shape=(20, 12, 40))
    with served(folder, "--no-pipeline", "--state", tmp_path / "state") as server:
        with usidgpu.connect(server.url) as client:
            (ds,) = client.datasets(kind="spectrum image")
            with usidgpu_open(folder / "si.h5") as f:
                local = f.main_datasets()[0]
                assert ds.dim_names == local.dim_names and ds.nd_shape == local.nd_shape
                assert [d.units for d in ds.dims] == [d.units for d in local.dims]
                np.testing.assert_array_equal(ds.sel(Bias=3, X=slice(2, 9)), local.sel(Bias=3, X=slice(2, 9)))
                lazy = ds.to_dask(chunks=(7, 5, 40))
                assert lazy.numblocks == (3, 3, 1)
                np.testing.assert_array_equal(lazy.compute(scheduler="threads"), local.to_ndim())
                xa = ds.to_xarray()
                np.testing.assert_allclose(xa["Bias"].values, local.dim("Bias").values)
                assert xa.attrs["units"] == local.units and xa["Bias"].attrs["units"] == "V"
            with pytest.raises(UnknownName):
                client.dataset("0" * 16)
            with pytest.raises(SelectionError, match="no dimension"):
                ds.sel(Energy=1)
            job = client.submit(ds, "svd", k=3).wait(timeout=90)
            assert job.status == "done" and job.result.endswith("-SVD_000")
            with pytest.raises(SelectionError, match="invalid int"):
                client.submit(ds, "svd", k="many")
    assert results_groups(folder / "si.h5", "SVD") == [job.result]


def test_each_client_is_held_to_its_request_rate_and_job_count(tmp_path):
    folder = tmp_path / "instrument"
    folder.mkdir()
    spectrum_image(folder / "si.h5")
    with served(folder, "--no-pipeline", "--rate", "5", "--jobs-per-client", "1", "--workers", "1",
                "--state", tmp_path / "state") as server:  # fmt: skip
        answers = [server.get("datasets") for _ in range(30)]  # a burst of 10 is allowed, then 5/s
        codes = [a.status_code for a in answers]
        assert codes[:10] == [200] * 10 and 429 in codes, codes
        refused = answers[codes.index(429)]
        assert int(refused.headers["retry-after"]) >= 1 and "requests per second" in refused.json()["detail"]
        time.sleep(2.5)
        (entry,) = server.get("datasets").json()["datasets"]
        first = server.post("jobs", json={"dataset": entry["id"], "analysis": "svd", "parameters": {"k": 2}})
        second = server.post("jobs", json={"dataset": entry["id"], "analysis": "svd", "parameters": {"k": 3}})
        assert first.status_code == 201
        if second.status_code != 429:  # the first had already finished: then the next must pass
            assert second.status_code == 201
        else:
            assert "limit is 1" in second.json()["detail"]


def test_an_nsid_file_is_translated_and_a_plain_hdf5_file_says_why_not(tmp_path, data_dir):
    """A real NSID file (sidpy/pyNSID, no USID Main dataset) dropped in the folder is read through
    a translation; an HDF5 file of neither kind stays listed with the translator's reason."""
    nsid = data_dir / "bfo_iv_final.hf5"
    if not nsid.exists():
        pytest.skip("the NSID sample is not here")
    folder = tmp_path / "instrument"
    folder.mkdir()
    with h5py.File(folder / "plain.h5", "w") as f:
        f["x"] = np.arange(3)
    with served(folder, "--no-pipeline", "--settle", "0.3", "--state", tmp_path / "state") as server:
        shutil.copy(nsid, folder / "bfo.hf5")
        (entry,) = wait_for(lambda: server.get("datasets").json()["datasets"], what="the translated dataset")
        assert entry["kind"] == "spectrum image" and entry["file"].startswith("bfo-")
        failed = wait_for(
            lambda: [f for f in server.get("datasets").json()["failed"] if "translatable" in f["error"]],
            what="the plain file's reason",
        )
        assert [f["file"] for f in failed] == ["plain.h5"] and "\n" not in failed[0]["error"]
        assert not [f for f in server.get("datasets").json()["failed"] if f["file"] == "bfo.hf5"]
