"""Decompositions of files: results groups pyUSID reads, bounded memory, real data, the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import warnings

import h5py
import numpy as np
import pytest
from conftest import DATA_DIR
from helpers import low_rank, make_file, read_3ds_current

import usidgpu
from usidgpu import Dimension
from usidgpu.cli import main as cli

SOURCE = "/Measurement_000/Channel_000/Raw_Data"
POS = [Dimension("Y", "µm", np.linspace(0, 1, 12)), Dimension("X", "µm", np.linspace(0, 2, 15))]
SPEC = [Dimension("Bias", "V", np.linspace(-1, 1, 40))]


@pytest.fixture
def spectra(tmp_path):
    rng = np.random.default_rng(0)
    x = np.abs(low_rank(180, 40, seed=1)) + rng.random((180, 40))
    path = tmp_path / "spectra.h5"
    make_file(path, data=x.astype(np.float32).reshape(12, 15, 40), pos=POS, spec=SPEC)
    return path, x.astype(np.float32)


def _pyusid_main(pyusid, h5, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert pyusid.hdf_utils.check_if_main(h5[path]), path
        return pyusid.USIDataset(h5[path])


def test_svd_and_pca_groups_pyusid_reads(spectra, pyusid):
    path, x = spectra
    with usidgpu.open(path) as f:
        r = usidgpu.svd(f[SOURCE], 4, device="cpu")
        group = r.write()
    assert group == "/Measurement_000/Channel_000/Raw_Data-SVD_000"
    with usidgpu.open(path) as f:
        p = usidgpu.pca(f[SOURCE], 3, device="cpu")
        pca_group = p.write()
    with h5py.File(path, "r") as h:
        u = _pyusid_main(pyusid, h, f"{group}/U")
        v = _pyusid_main(pyusid, h, f"{group}/V")
        assert u.pos_dim_labels == ["Y", "X"] and u.spec_dim_labels == ["Principal Component"]
        assert v.pos_dim_labels == ["Principal Component"] and v.spec_dim_labels == ["Bias"]
        assert u.get_n_dim_form().shape == (12, 15, 4) and v.get_n_dim_form().shape == (4, 40)
        np.testing.assert_array_equal(h[group]["U"][()], r.U)
        np.testing.assert_array_equal(h[group]["S"][()], r.S)
        np.testing.assert_array_equal(h[group]["V"][()], r.V)
        g = h[group]
        assert g.attrs["tool"] == "SVD" and g.attrs["num_components"] == 4 and g.attrs["svd_method"] == "gram"
        assert pyusid.hdf_utils.get_attr(h[group]["V"], "units") == "nA"
        assert [x.name for x in pyusid.hdf_utils.find_results_groups(h[SOURCE], "SVD")] == [group]
        np.testing.assert_allclose(h[pca_group]["Explained_Variance_Ratio"][()], p.explained_variance_ratio)
        np.testing.assert_allclose(h[pca_group]["Mean"][()], x.mean(axis=0), rtol=1e-5)
    assert usidgpu.validate(path) == []


def test_nmf_and_kmeans_groups_pyusid_reads(spectra, pyusid):
    path, x = spectra
    with usidgpu.open(path) as f:
        n = usidgpu.nmf(f[SOURCE], 3, device="cpu", max_iter=30)
        nmf_group = n.write()
    with usidgpu.open(path) as f:
        k = usidgpu.kmeans(f[SOURCE], 3, device="cpu")
        km_group = k.write()
    with h5py.File(path, "r") as h:
        proj = _pyusid_main(pyusid, h, f"{nmf_group}/Projection")
        comp = _pyusid_main(pyusid, h, f"{nmf_group}/Components")
        assert proj.spec_dim_labels == ["Component"] and comp.spec_dim_labels == ["Bias"]
        np.testing.assert_array_equal(h[nmf_group]["Components"][()], n.H)
        labels = _pyusid_main(pyusid, h, f"{km_group}/Labels")
        mean = _pyusid_main(pyusid, h, f"{km_group}/Mean_Response")
        assert labels.dtype == np.uint32 and labels.shape == (180, 1)
        assert pyusid.hdf_utils.get_attr(labels, "quantity") == "Cluster ID"
        assert mean.pos_dim_labels == ["Cluster"] and mean.spec_dim_labels == ["Bias"]
        np.testing.assert_array_equal(h[km_group]["Labels"][()][:, 0], k.labels)
        for c in range(3):
            np.testing.assert_allclose(h[km_group]["Mean_Response"][c], x[k.labels == c].mean(axis=0), rtol=1e-5)
    assert usidgpu.validate(path) == []


def test_results_of_arrays_need_a_target():
    r = usidgpu.svd(low_rank(20, 8), 2, device="cpu")
    with pytest.raises(TypeError, match="computed from an array"):
        r.write()


OUT_OF_CORE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import scipy.linalg
    import usidgpu

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    path, method, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
    a = np.ones((512, 512), np.float32)
    a @ a; scipy.linalg.eigh(np.eye(64), subset_by_index=[60, 63])  # BLAS/LAPACK buffers exist now
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        base = status("VmRSS:")
        open("/proc/self/clear_refs", "w").write("5")
        if method == "kmeans":
            r = usidgpu.kmeans(m, 4, device="cpu", budget=budget, max_iter=5)
            out = {"inertia": r.inertia}
        else:
            r = usidgpu.svd(m, 8, method=method, device="cpu", budget=budget)
            out = {"S": r.S.tolist(), "V": r.V.tolist(), "method": r.method}
        out["growth"] = status("VmHWM:") - base
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    """128 MiB of float32 (32768 × 1024), rank 8 plus noise, written block by block."""
    path = tmp_path_factory.mktemp("ooc") / "big.h5"
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((1024, 8)))[0].T.astype(np.float32) * (100 * 0.7 ** np.arange(8))[:, None]
    with h5py.File(path, "w") as f:
        m = usidgpu.write_main(
            f.create_group("Measurement_000/Channel_000"),
            "Raw_Data",
            None,
            "Counts",
            "",
            [Dimension("Y", "nm", 128), Dimension("X", "nm", 256)],
            [Dimension("E", "eV", 1024)],
        )
        for start in range(0, 32768, 4096):
            coeff = rng.standard_normal((4096, 8)).astype(np.float32)
            m.write_rows(start, coeff @ basis + 0.01 * rng.standard_normal((4096, 1024)).astype(np.float32))
    return path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("method", ["gram", "randomized", "kmeans"])
def test_out_of_core_within_budget_and_equal_to_in_memory(big_file, method):
    budget = 32 * 2**20  # the data are 4× larger
    out = subprocess.run(
        [sys.executable, "-c", OUT_OF_CORE, str(big_file), method, str(budget)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["growth"] <= budget + 16 * 2**20, f"grew {res['growth'] / 2**20:.1f} MiB for a 32 MiB budget"
    if method == "kmeans":
        return
    with h5py.File(big_file, "r") as h:
        x = h[SOURCE][()].astype(np.float64)
    vals, vecs = np.linalg.eigh(x.T @ x)
    s_ref = np.sqrt(vals[::-1][:8])
    np.testing.assert_allclose(res["S"], s_ref, rtol=1e-5)
    v = np.asarray(res["V"])
    np.testing.assert_allclose(np.abs(v @ vecs[:, ::-1][:, :8]), np.eye(8), atol=1e-3)


@pytest.mark.skipif(not (DATA_DIR / "sparse_sampling.h5").is_file(), reason="shared data absent")
def test_svd_of_a_real_spectroscopic_usid_file(tmp_path, pyusid):
    path = tmp_path / "sparse_sampling.h5"
    shutil.copy(DATA_DIR / "sparse_sampling.h5", path)
    source = "/Measurement_000/Channel_001/Raw_Data"
    with usidgpu.open(path) as f:
        x = f[source][()]
        r = usidgpu.svd(f[source], 2, device="cpu")
        group = r.write()
    np.testing.assert_allclose(r.S, np.linalg.svd(x.astype(np.float64), compute_uv=False)[:2], rtol=1e-5)
    with h5py.File(path, "r") as h:
        u = _pyusid_main(pyusid, h, f"{group}/U")
        assert u.pos_dim_labels == ["X", "Y"]  # the sparse positions are reused, not rebuilt
        assert _pyusid_main(pyusid, h, f"{group}/V").spec_dim_labels == ["Frequency"]


@pytest.mark.skipif(not (DATA_DIR / "NanonisReader_STS_grid_lockin.3ds").is_file(), reason="shared data absent")
def test_real_sts_grid_decomposes_end_to_end(tmp_path, pyusid, capsys):
    current, bias, meta = read_3ds_current(DATA_DIR / "NanonisReader_STS_grid_lockin.3ds")
    assert current.shape == (900, 200)
    path = tmp_path / "sts.h5"
    make_file(
        path,
        data=current,
        quantity="Current",
        units="A",
        pos=[
            Dimension("Y", "m", np.linspace(0, meta["size"][1], 30)),
            Dimension("X", "m", np.linspace(0, meta["size"][0], 30)),
        ],
        spec=[Dimension("Bias", "V", bias)],
    )
    ref = np.linalg.svd(current.astype(np.float64), compute_uv=False)
    with usidgpu.open(path) as f:
        for method in ("gram", "randomized", "exact"):
            r = usidgpu.svd(f[SOURCE], 6, method=method, device="cpu")
            np.testing.assert_allclose(r.S, ref[:6], rtol=2e-4)
    assert cli(["svd", str(path), "-k", "6", "--device", "cpu", "--no-progress"]) == 0
    assert cli(["cluster", str(path), "-k", "4", "--features", "svd", "--components", "6", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Raw_Data-SVD_000" in out and "Raw_Data-KMeans_000" in out
    with h5py.File(path, "r") as h:
        assert _pyusid_main(pyusid, h, SOURCE + "-SVD_000/U").get_n_dim_form().shape == (30, 30, 6)
        assert _pyusid_main(pyusid, h, SOURCE + "-KMeans_000/Labels").shape == (900, 1)


def test_cli_commands(spectra, tmp_path, capsys):
    path, _x = spectra
    assert cli(["svd", str(path), "-k", "3", "--method", "randomized", "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "method        randomized: requested" in out and "device        cpu" in out
    assert "results       /Measurement_000/Channel_000/Raw_Data-SVD_000" in out
    figure = tmp_path / "figures" / "nmf.png"
    assert cli(["nmf", str(path), "-k", "2", "--iterations", "20", "--no-progress", "--plot", str(figure)]) == 0
    assert "Raw_Data-NMF_000" in capsys.readouterr().out
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000
    assert cli(["cluster", str(path), "-k", "3", "--no-progress", "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "cluster sizes" in out and "results" not in out
    separate = tmp_path / "results.h5"
    assert cli(["pca", str(path), "-k", "2", "--output", str(separate), "--no-progress"]) == 0
    capsys.readouterr()
    assert usidgpu.validate(separate) == []
    with usidgpu.open(path) as f:
        assert [r.tool for r in f.results_groups(SOURCE)] == ["NMF", "SVD"]


def test_cli_errors(spectra, tmp_path, capsys, no_gpu):
    path, _x = spectra
    assert cli(["svd", str(path), "-k", "100", "--no-progress"]) == 2
    assert "k must be an integer in [1, 40]" in capsys.readouterr().err
    assert cli(["svd", str(path), "-k", "2", "--device", "gpu"]) == 2
    assert "no GPU is usable" in capsys.readouterr().err
    negative = tmp_path / "neg.h5"
    make_file(negative, data=-np.ones((12, 15, 40), np.float32), pos=POS, spec=SPEC)
    assert cli(["nmf", str(negative), "-k", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "non-negative" in err and err.count("\n") == 1
    assert cli(["svd", "sample:stem-image", "-k", "1"]) == 2
    assert "sample shipped with usidgpu" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["svd", str(path)])  # -k is required
    capsys.readouterr()
    assert cli(["svd", str(path), "-k", "2", "--plot", str(tmp_path / "fig.jpeg")]) == 2
    assert "use a .png, .pdf or .svg" in capsys.readouterr().err
    with usidgpu.open(path) as f:
        assert f.results_groups(SOURCE) == []  # refused before any work or writing
    assert cli(["svd", str(path), "-k", "2", "--method", "randomized", "--iterations", "0"]) == 2
    assert "n_iter" in capsys.readouterr().err
    assert cli(["nmf", str(path), "-k", "2", "--iterations", "0"]) == 2
    assert "max_iter" in capsys.readouterr().err
    assert cli(["cluster", str(path), "-k", "2", "--features", "svd", "--components", "500"]) == 2
    assert "n_components must be in" in capsys.readouterr().err


def test_writing_twice_and_to_the_wrong_dataset(spectra, tmp_path):
    from usidgpu.usid.results import sidecar_dir

    path, _x = spectra
    other = tmp_path / "other.h5"
    make_file(other, data=np.ones((12, 15, 7), np.float32), pos=POS, spec=[Dimension("E", "eV", 7)])
    with usidgpu.open(path) as f, usidgpu.open(other) as g:
        ds = f[SOURCE]
        first = usidgpu.svd(ds, 2, device="cpu")
        assert first.write() == "/Measurement_000/Channel_000/Raw_Data-SVD_000"
        # the source reopens itself after the attach closed it: compute and write again
        second = usidgpu.pca(ds, 2, device="cpu")
        assert second.write() == "/Measurement_000/Channel_000/Raw_Data-PCA_000"
        assert len(f.results_groups(SOURCE)) == 2
        with pytest.raises(ValueError, match="7 spectroscopic points"):
            first.write(g[SOURCE])
    assert not sidecar_dir(other).exists()  # nothing half-written left behind
    assert usidgpu.validate(other) == [] and usidgpu.validate(path) == []
