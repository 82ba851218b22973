"""Images and per-pixel analyses, one test body for NumPy and the device: windowed-SVD denoising
(images, stacks, Main datasets, tiles), spectral denoising, finding and fitting atomic columns
(every engine and precision, across batches), lattice analysis and tracking, Bayesian inference.

Oracles: the CPU run of the same call (itself tested against pycroscopy's method, curve_fit and
known truth elsewhere). This module imports neither dask nor zarr.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from helpers import make_file

import usidgpu
from usidgpu import Dimension
from usidgpu.atoms.analysis import analyze, analyze_stack
from usidgpu.atoms.find import find_columns
from usidgpu.atoms.fit import refine
from usidgpu.atoms.synthetic import lattice_image
from usidgpu.bayes import giv_bayesian, posterior, simulate_giv
from usidgpu.denoise.patches import patch_chunks


def lattice(n=96, m=80, seed=4):
    from test_denoise import lattice as make

    return make(n=n, m=m, seed=seed)[1]


# ------------------------------------------------------------------------------ denoising
def test_gathered_windows_equal_the_numpy_patches(device):
    image = np.random.default_rng(3).random((37, 41)).astype(np.float32) * 50
    for window, step in (((7, 5), (1, 1)), ((6, 6), (3, 4))):
        ref = np.concatenate([c for *_, c in patch_chunks(np, image, window, step, 5, shift=12.5)])
        chunks = [c for *_, c in patch_chunks(device.xp, device.asarray(image), window, step, 5, shift=12.5)]
        np.testing.assert_array_equal(device.asnumpy(device.xp.concatenate(chunks)), ref)


@pytest.mark.parametrize("step", [1, 3])
@pytest.mark.parametrize("where", ["host", "device"])
def test_windowed_svd_equals_the_cpu(device, step, where):
    image = lattice().astype(np.float64)
    cpu = usidgpu.windowed_svd(image, window=12, step=step, k=8, device="cpu")
    data = device.asarray(image) if where == "device" else image
    got = usidgpu.windowed_svd(data, window=12, step=step, k=8, device=device.name)
    np.testing.assert_allclose(got.singular_values, cpu.singular_values, rtol=1e-8, atol=1e-6)
    np.testing.assert_allclose(got.cleaned, cpu.cleaned, rtol=1e-8, atol=1e-6)
    tiled = usidgpu.windowed_svd(data, window=12, step=step, k=8, device=device.name, tile=40)
    np.testing.assert_allclose(tiled.cleaned, cpu.cleaned, rtol=1e-8, atol=1e-6)


def test_windowed_svd_of_a_stack_and_a_main_dataset(device, tmp_path):
    frames = np.stack([lattice(64, 64, seed=s) for s in range(3)]).astype(np.float32)
    cpu = usidgpu.windowed_svd(frames, window=10, k=6, device="cpu")
    got = usidgpu.windowed_svd(device.asarray(frames), window=10, k=6, device=device.name)
    np.testing.assert_allclose(got.cleaned, cpu.cleaned, rtol=1e-4, atol=1e-3)
    # the same frames as a Main dataset: positions are the image grid, each spectral point a frame
    path = tmp_path / "stack.h5"
    make_file(
        path,
        data=np.moveaxis(frames, 0, -1),
        pos=[Dimension("Y", "nm", 64), Dimension("X", "nm", 64)],
        spec=[Dimension("Frame", "", 3)],
    )
    with usidgpu.open(path) as f:
        from_file = usidgpu.windowed_svd(f.main_datasets()[0], window=10, k=6, device=device.name)
    np.testing.assert_allclose(from_file.cleaned, cpu.cleaned, rtol=1e-4, atol=1e-3)


def test_spectral_denoise_equals_the_rank_k_reconstruction(device, tmp_path):
    rng = np.random.default_rng(1)
    clean = rng.standard_normal((300, 3)) @ rng.standard_normal((3, 40))
    data = (clean + 0.01 * rng.standard_normal(clean.shape)).astype(np.float32)
    path = tmp_path / "s.h5"
    make_file(path, data=data.reshape(15, 20, 40), pos=[Dimension("Y", "nm", 15), Dimension("X", "nm", 20)],
              spec=[Dimension("E", "eV", 40)])  # fmt: skip
    u, s, vt = np.linalg.svd(data.astype(np.float64), full_matrices=False)
    expected = data @ vt[:3].T @ vt[:3]
    with usidgpu.open(path) as f:
        group = usidgpu.spectral_denoise(f.main_datasets()[0], 3, device=device.name, budget="64kB",
                                         output=tmp_path / "out.h5")  # fmt: skip
    with h5py.File(tmp_path / "out.h5", "r") as f:
        np.testing.assert_allclose(f[group + "/Denoised_Data"][()], expected, rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------------ atomic columns
@pytest.fixture(scope="module")
def columns():
    s = lattice_image(
        (160, 192), spacing=16, angle_deg=9, vacancies=3, displacement=0.3, dose=100, read_noise=0.02, seed=2
    )
    return s.image, find_columns(s.image), s


def test_find_columns_takes_a_device_image(device, columns):
    image, found, _ = columns
    got = find_columns(device.asarray(image))
    np.testing.assert_array_equal(got.positions, found.positions)


@pytest.mark.parametrize("batch", [None, 7])
def test_array_engine_equals_the_cpu_across_batches(device, columns, batch):
    image, found, _ = columns
    cpu = refine(image, found, device="cpu", engine="array")
    got = refine(device.asarray(image), found, device=device.name, engine="array", batch=batch)
    assert got.device == device.name and got.engine == "array" and got.parameters["precision"] == "float64"
    np.testing.assert_array_equal(got.converged, cpu.converged)
    np.testing.assert_array_equal(got.n_iter, cpu.n_iter)
    np.testing.assert_allclose(got.positions, cpu.positions, atol=1e-7)


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [None, 7])
def test_kernel_engine_float64_is_the_array_engines_fit(gpu, columns, batch):
    image, found, _ = columns
    cpu = refine(image, found, device="cpu", engine="array")
    got = refine(image, found, device="gpu", engine="kernel", precision="float64", batch=batch)
    assert got.device == "gpu" and got.engine == "kernel" and got.parameters["precision"] == "float64"
    np.testing.assert_array_equal(got.converged, cpu.converged)
    assert np.mean(got.n_iter == cpu.n_iter) > 0.98  # the same iteration, to rounding
    np.testing.assert_allclose(got.positions, cpu.positions, atol=1e-7)
    keep = [0, 1, 2, 3, 4, 6]  # θ of a round column is undefined: rounding may turn it anywhere
    np.testing.assert_allclose(got.params[:, keep], cpu.params[:, keep], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got.errors[:, 1:3], cpu.errors[:, 1:3], rtol=1e-5)


@pytest.mark.gpu
def test_kernel_engine_float32_stays_within_the_statistical_error(gpu, columns):
    image, found, truth = columns
    ref = refine(image, found, device="cpu", engine="array")
    got = refine(gpu.asarray(image), gpu.asarray(found.positions), radius=0.5 * found.spacing, device="gpu",
                 engine="kernel", precision="float32", batch=11)  # fmt: skip
    assert got.parameters["precision"] == "float32" and got.converged.all()
    # far below the positions' own statistical errors (~0.05 px here)
    assert np.abs(got.positions - ref.positions).max() < 0.1 * np.median(ref.position_errors)


@pytest.mark.gpu
def test_auto_precision_follows_the_cards_double_precision_rate(gpu, columns):
    image, found, _ = columns
    if gpu.kind != "standin":
        from usidgpu.atoms.fit_kernel import choose_precision

        assert choose_precision("auto") in ("float32", "float64")
        pytest.skip("the FP64 rate is set on the stand-in")
    import cupy_standin

    for ratio, expected in ((2, "float64"), (32, "float32"), (64, "float32")):
        with cupy_standin.configure(single_to_double_ratio=ratio):
            assert refine(image, found, device="gpu").parameters["precision"] == expected
    with pytest.raises(ValueError, match="CUDA kernel's"):
        refine(image, found, device="gpu", engine="array", precision="float32")
    with pytest.raises(ValueError, match="precision must be"):
        refine(image, found, device="gpu", precision="half")


def test_float32_is_refused_on_the_cpu(columns):
    image, found, _ = columns
    with pytest.raises(ValueError, match="CUDA kernel's"):
        refine(image, found, device="cpu", precision="float32")


@pytest.mark.gpu
def test_kernel_engine_launches_one_kernel_per_batch_and_no_host_waits_inside(gpu, columns):
    image, found, _ = columns
    with gpu.counting() as counts:
        refine(image, found, device="gpu", engine="kernel", precision="float64", batch=20)
    if counts is None:
        pytest.skip("launches are counted on the CuPy stand-in only")
    batches = -(-len(found) // 20)
    assert counts.launches == batches
    # per batch: the results come back once (a stacked transfer per array), nothing per iteration
    assert counts.syncs <= 12 * batches, counts.summary()


def test_analysis_and_tracking_equal_the_cpu(device, columns):
    image, _, _ = columns
    cpu = analyze(image, device="cpu")
    got = analyze(device.asarray(image), device=device.name)
    np.testing.assert_allclose(got.fit.positions, cpu.fit.positions, atol=1e-6)
    np.testing.assert_array_equal(got.sublattice, cpu.sublattice)
    np.testing.assert_allclose(got.displacement, cpu.displacement, atol=1e-6)
    s = [lattice_image((96, 96), spacing=16, displacement=0.2, dose=200, seed=k).image for k in range(3)]
    stack_cpu = analyze_stack(np.stack(s), device="cpu")
    stack_got = analyze_stack(np.stack(s), device=device.name)
    assert stack_got.tracks.n_tracks == stack_cpu.tracks.n_tracks
    np.testing.assert_allclose(stack_got.tracks.table, stack_cpu.tracks.table, atol=1e-6)


# ------------------------------------------------------------------------------ Bayes
def test_linear_posterior_equals_the_cpu(device):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((60, 9))
    ab = rng.standard_normal((16, 60, 9))
    y = rng.standard_normal((16, 60))
    l = rng.standard_normal((9, 9))
    p0 = l @ l.T / 9 + 0.1 * np.eye(9)
    m0 = rng.standard_normal(9)
    for aa in (a, ab):
        c = posterior(aa, y, m0, p0, 2.0)
        g = posterior(device.asarray(aa), device.asarray(y), device.asarray(m0), device.asarray(p0), 2.0)
        assert device.is_device_array(g.mean)
        np.testing.assert_allclose(device.asnumpy(g.mean), c.mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(device.asnumpy(g.cov), c.cov, rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(device.asnumpy(g.chol), c.chol, rtol=1e-8, atol=1e-12)


def test_giv_bayesian_equals_the_cpu(device):
    sim = simulate_giv(64, 512, noise=0.03, seed=1)
    c = giv_bayesian(sim["current"], sim["bias"], sim["frequency"], num_samples=500)
    g = giv_bayesian(device.asarray(sim["current"]), sim["bias"], sim["frequency"], num_samples=500)
    for name in ("resistance", "resistance_std", "conductance", "capacitance", "current_fit", "current_corrected"):
        np.testing.assert_allclose(device.asnumpy(getattr(g, name)), getattr(c, name), rtol=2e-5, atol=1e-8,
                                   err_msg=name)  # fmt: skip


def test_giv_bayesian_process_on_the_device_equals_the_function(device, tmp_path):
    pytest.importorskip("zarr", reason="block-wise runs keep their blocks in a zarr store")
    from usidgpu.bayes.process import GIVBayesian

    sim = simulate_giv(12, 128, noise=0.03, seed=6)
    path = tmp_path / "giv.h5"
    with h5py.File(path, "a") as f:
        g = f.require_group("Measurement_000/Channel_000")
        g.attrs["excitation_frequency_[Hz]"] = sim["frequency"]
        pos = [Dimension("Y", "µm", 3), Dimension("X", "µm", 4)]
        current = sim["current"].astype(np.float32).reshape(3, 4, -1)
        usidgpu.write_main(g, "Raw_Data", current, "Current", "nA", pos, [Dimension("Bias", "V", sim["bias"])])
    with usidgpu.open(path) as f:
        group = GIVBayesian(f.main_datasets()[0], num_samples=200, rows_per_block=5, device=device.name,
                            progress=False).run()  # fmt: skip
    ref = giv_bayesian(sim["current"].astype(np.float32).astype(np.float64), sim["bias"], sim["frequency"],
                       num_samples=200)  # fmt: skip
    with h5py.File(path, "r") as f:
        np.testing.assert_allclose(f[group + "/Resistance"][()], ref.resistance, rtol=1e-4)  # stored as float32
        np.testing.assert_allclose(f[group + "/Capacitance"][()], ref.capacitance, rtol=1e-4)
