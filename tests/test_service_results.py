"""A results group through the service: its parameters, and the arrays that are no Main dataset
(singular values, error curves, vacancies) — equal to what the file holds, read with h5py."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import h5py
import numpy as np
import pytest
from fault_tools import usidgpu as run_cli
from helpers import make_file
from service_tools import served

from usidgpu import Dimension

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def analysed(tmp_path_factory) -> Path:
    """A spectrum image with an SVD and an NMF, and a lattice image denoised and with its columns."""
    from usidgpu.atoms.synthetic import lattice_image

    folder = tmp_path_factory.mktemp("results")
    rng = np.random.default_rng(4)
    bias = Dimension("Bias", "V", np.linspace(-1, 1, 20))
    make_file(folder / "si.h5", np.abs(rng.standard_normal((8, 6, 20))).astype(np.float32),
              pos=[Dimension("Y", "nm", 8), Dimension("X", "nm", 6)], spec=[bias])  # fmt: skip
    lattice = lattice_image((96, 96), spacing=12, vacancies=1, dose=300, seed=2)
    make_file(folder / "img.h5", lattice.image[:, :, None].astype(np.float32),
              pos=[Dimension("Y", "Å", 96), Dimension("X", "Å", 96)], spec=[Dimension("arb", "a.u.", 1)],
              quantity="Intensity", units="counts")  # fmt: skip
    for args in (("svd", "si.h5", "-k", "3"), ("nmf", "si.h5", "-k", "2"), ("denoise", "img.h5", "--window", "8"),
                 ("atoms", "img.h5")):  # fmt: skip
        ran = run_cli(args[0], folder / args[1], *args[2:])
        assert ran.returncode == 0, ran.stderr
    return folder


def source(url: str, name: str) -> dict:
    (entry,) = [d for d in httpx.get(f"{url}/api/v1/datasets").json()["datasets"] if d["file"] == name]
    return httpx.get(f"{url}/api/v1/datasets/{entry['id']}").json()


def test_results_list_their_parameters_and_plain_arrays_equal_to_the_file(analysed, tmp_path):
    with served(analysed, "--read-only", "--state", tmp_path / "state") as srv:
        desc = source(srv.url, "si.h5")
        tools = {r["tool"]: (n, r) for n, r in enumerate(desc["results"])}
        n, svd = tools["SVD"]
        assert {a["name"] for a in svd["arrays"]} == {"S"}  # U and V are Main: they have ids
        assert {d["name"] for d in svd["datasets"]} == {"U", "V"}
        assert svd["attributes"]["num_components"] == 3
        assert not any(k.startswith("source") or k in ("machine_id", "platform") for k in svd["attributes"])
        base = f"{srv.url}/api/v1/datasets/{desc['id']}/results"
        with h5py.File(analysed / "si.h5", "r") as f:
            s = f[svd["path"]]["S"][()]
            errors = f[tools["NMF"][1]["path"]]["Reconstruction_Error"][()]
        got = np.load(io.BytesIO(httpx.get(f"{base}/{n}/arrays/S").content))
        np.testing.assert_array_equal(got, s)
        assert httpx.get(f"{base}/{n}/arrays/S", params={"format": "json"}).json()["data"] == pytest.approx(s.tolist())
        n_nmf = tools["NMF"][0]
        text = httpx.get(f"{base}/{n_nmf}/arrays/Reconstruction_Error", params={"format": "csv"}).text
        got = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1)
        np.testing.assert_allclose(got[:, 1], errors, rtol=1e-8)

        refused = [(f"{n}/arrays/U", 404, "no array"), (f"{n}/arrays/..%2F..%2Fetc", 404, ""),
                   (f"{len(desc['results'])}/arrays/S", 404, "no number"), ("-1/arrays/S", 422, "")]  # fmt: skip
        for path, status, words in refused:
            r = httpx.get(f"{base}/{path}")
            assert r.status_code == status and words in r.text, (path, r.status_code, r.text)


def test_an_atomic_column_table_and_its_vacancies_as_csv(analysed, tmp_path):
    with served(analysed, "--read-only", "--state", tmp_path / "state") as srv:
        desc = source(srv.url, "img.h5")
        tools = {r["tool"]: (n, r) for n, r in enumerate(desc["results"])}
        n, atoms = tools["Atomic_Columns"]
        denoise = tools["Windowed_SVD"][1]
        assert "Singular_Values" in {a["name"] for a in denoise["arrays"]}
        assert {"Vacancies", "Lattice_Vectors"} <= {a["name"] for a in atoms["arrays"]}
        (columns,) = [d for d in atoms["datasets"] if d["name"] == "Columns"]
        table = httpx.get(f"{srv.url}/api/v1/datasets/{columns['id']}/data", params={"format": "csv"})
        assert table.status_code == 200, table.text
        rows = list(csv.DictReader(io.StringIO(table.text)))
        vacancies = np.load(
            io.BytesIO(httpx.get(f"{srv.url}/api/v1/datasets/{desc['id']}/results/{n}/arrays/Vacancies").content)
        )
        with h5py.File(analysed / "img.h5", "r") as f:
            stored = f[atoms["path"]]["Columns"][()].reshape(-1)
            np.testing.assert_array_equal(vacancies, f[atoms["path"]]["Vacancies"][()])
        assert len(rows) == len(stored) and set(rows[0]) == set(stored.dtype.names)
        np.testing.assert_allclose([float(r["x"]) for r in rows], stored["x"], rtol=1e-9)
        np.testing.assert_array_equal([int(float(r["sublattice"])) for r in rows], stored["sublattice"])
