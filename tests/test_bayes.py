"""Batched Bayesian linear regression and the G-mode I–V model (pycroscopy's GIVBayesian),
against per-pixel NumPy oracles written from the formulas, and on synthetic data with a known
R(V) and C."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from scipy.linalg import sqrtm

import usidgpu
from usidgpu import Dimension
from usidgpu.bayes import giv_bayesian, posterior, sample_posterior, simulate_giv
from usidgpu.bayes.giv import diode_conductance, half_grid_points
from usidgpu.bayes.process import GIVBayesian
from usidgpu.cli import main


# ------------------------------------------------------------------------------ oracles
def oracle_posterior(a, y, m0, p0, o):
    """One pixel, straight from the formulas: Σ = (AᵀOA + P0)⁻¹ by inversion, μ = Σ(AᵀOy + P0m0),
    and the symmetric square root of Σ by eigendecomposition."""
    cov = np.linalg.inv(a.T @ o @ a + p0)
    mean = cov @ (a.T @ o @ y + p0 @ m0)
    w, v = np.linalg.eigh(cov)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    return mean, cov, root


def random_problem(rng, n=40, p=7):
    a = rng.standard_normal((n, p))
    l = rng.standard_normal((p, p))
    p0 = l @ l.T / p + 0.1 * np.eye(p)
    m0 = rng.standard_normal(p)
    return a, p0, m0


def test_shared_design_matrix_equals_per_pixel_oracle():
    rng = np.random.default_rng(0)
    a, p0, m0 = random_problem(rng)
    y = rng.standard_normal((25, a.shape[0]))
    noise = rng.uniform(0.5, 2.0, a.shape[0])  # a diagonal noise precision
    post = posterior(a, y, m0, p0, noise)
    assert post.shared and post.mean.shape == (25, 7) and post.cov.shape == (7, 7)
    for b in range(y.shape[0]):
        mean, cov, root = oracle_posterior(a, y[b], m0, p0, np.diag(noise))
        np.testing.assert_allclose(post.mean[b], mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(post.cov, cov, rtol=1e-10, atol=1e-13)
    # the Cholesky factor and the eigen square root factor the same covariance
    np.testing.assert_allclose(post.chol @ post.chol.T, root @ root.T, rtol=1e-10, atol=1e-13)
    assert np.allclose(np.triu(post.chol, 1), 0)
    # a scalar and a full noise precision agree with the diagonal one
    s = posterior(a, y, m0, p0, 2.0)
    f = posterior(a, y, m0, p0, 2.0 * np.eye(a.shape[0]))
    np.testing.assert_allclose(s.mean, f.mean, rtol=1e-10)
    np.testing.assert_allclose(s.cov, f.cov, rtol=1e-10)


def test_per_pixel_design_matrices_equal_oracle():
    rng = np.random.default_rng(1)
    _, p0, m0 = random_problem(rng)
    a = rng.standard_normal((12, 40, 7))
    y = rng.standard_normal((12, 40))
    m0b = m0 + rng.standard_normal((12, 7))  # one prior mean per pixel too
    post = posterior(a, y, m0b, p0, 1.7)
    assert not post.shared and post.cov.shape == (12, 7, 7)
    for b in range(12):
        mean, cov, _root = oracle_posterior(a[b], y[b], m0b[b], p0, 1.7 * np.eye(40))
        np.testing.assert_allclose(post.mean[b], mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(post.cov[b], cov, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(post.chol[b] @ post.chol[b].T, cov, rtol=1e-10, atol=1e-13)
    means_only = posterior(a, y, m0b, p0, 1.7, with_cov=False)
    np.testing.assert_allclose(means_only.mean, post.mean, rtol=1e-10)


@pytest.mark.parametrize("shared", [True, False])
def test_samples_have_the_posterior_moments(shared):
    rng = np.random.default_rng(2)
    a, p0, m0 = random_problem(rng, n=30, p=4)
    aa = a if shared else rng.standard_normal((3, 30, 4))
    y = rng.standard_normal((3, 30))
    post = posterior(aa, y, m0, p0, 0.5)
    s = sample_posterior(post, 40000, rng=3)
    assert s.shape == (3, 40000, 4)
    for b in range(3):
        cov = post.cov if shared else post.cov[b]
        sd = np.sqrt(np.diag(cov))
        assert np.all(np.abs(s[b].mean(0) - post.mean[b]) < 5 * sd / np.sqrt(40000))
        np.testing.assert_allclose(np.cov(s[b].T), cov, rtol=0.05, atol=0.03 * sd.max() ** 2)
    common = sample_posterior(post, 10, rng=3, common=True)
    d = common - post.mean[:, None, :]
    if shared:  # common random numbers with a shared factor: the same deviations for every pixel
        np.testing.assert_allclose(d[0], d[2])


# ------------------------------------------------------------------------------ G-mode model
def pycroscopy_sweep(i_meas, bias, freq, k, r_extra=110.0, gam=0.03, sigma=10.0, sigma_c=1.0):
    """One sweep, the way pycroscopy's do_bayesian_inference computes it (loop-built A, dense
    Laplacian and noise matrix, inversion) — posterior mean and covariance, from the formulas."""
    n = bias.size
    t = np.linspace(0, 1.0 / freq, n)
    dt = t[2] - t[1]
    dv = np.append(np.diff(bias) / dt, np.diff(bias)[-1] / dt)
    vmax = bias.max()
    x = np.linspace(-vmax, vmax, k)
    dx = x[1] - x[0]
    a = np.zeros((n, k + 1))
    for j in range(n):
        ix = min(max(int(round(np.floor((bias[j] + vmax) / dx) + 1)), 1), k - 1)
        a[j, ix] = bias[j] * (bias[j] - x[ix - 1]) / (x[ix] - x[ix - 1])
        a[j, ix - 1] = bias[j] * (1.0 - (bias[j] - x[ix - 1]) / (x[ix] - x[ix - 1]))
    a[:, k] = dv + r_extra * bias
    lap = (-np.diag(np.ones(k - 1), -1) - np.diag(np.ones(k - 1), 1) + 2 * np.eye(k)) / dx / dx
    lap[0, 0] = lap[-1, -1] = 1 / dx / dx
    m0 = np.append(3.0 * np.ones(k), 0)
    p0 = np.zeros((k + 1, k + 1))
    p0[:k, :k] = (np.eye(k) + np.linalg.matrix_power(lap, 3)) / sigma**2
    p0[k, k] = 1 / sigma_c**2
    mean, cov, root = oracle_posterior(a, i_meas, m0, p0, np.eye(n) / gam**2)
    return x, mean, cov


def test_half_grid_points_follow_pycroscopy():
    assert half_grid_points(250) == 125  # the default
    assert half_grid_points(500) == 251  # 500 → 502 → 251
    assert half_grid_points(252) == 127
    assert half_grid_points(100) == 51


def test_giv_equals_pycroscopy_per_pixel_formulas():
    sim = simulate_giv(3, 200, noise=0.03, seed=4)
    k = half_grid_points(60)
    r = giv_bayesian(sim["current"], sim["bias"], sim["frequency"], num_x_steps=60, num_samples=20000)
    n = sim["bias"].size
    roll = int(n * -0.25)
    rb, ri = np.roll(sim["bias"], roll), np.roll(sim["current"], roll, axis=1)
    for p in range(3):
        xf, mf, cf = pycroscopy_sweep(ri[p, n // 2 :], rb[n // 2 :], sim["frequency"], k)
        xr, mr, cr = pycroscopy_sweep(-ri[p, : n // 2], -rb[: n // 2], sim["frequency"], k)
        np.testing.assert_allclose(r.bias, np.concatenate([xf, -xr]), rtol=1e-12)
        g = np.concatenate([mf[:k], mr[:k]])
        sd = np.sqrt(np.concatenate([np.diag(cf)[:k], np.diag(cr)[:k]]))
        np.testing.assert_allclose(r.conductance[p], g, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(r.conductance_std[p], sd, rtol=1e-8)
        np.testing.assert_allclose(r.capacitance[p], 0.5e3 * np.array([mf[k], mr[k]]), rtol=1e-8)
        # R mean/std from samples of 1/g: within Monte Carlo error of the exact Gaussian moments
        # (pycroscopy samples with sqrtm(Σ_gg); the Cholesky factor gives the same distribution)
        xi = np.random.default_rng(9).standard_normal((k, 20000))
        ref = np.concatenate(
            [1 / (mf[:k, None] + np.real(sqrtm(cf[:k, :k])) @ xi), 1 / (mr[:k, None] + np.real(sqrtm(cr[:k, :k])) @ xi)]
        )
        np.testing.assert_allclose(r.resistance[p], ref.mean(1), rtol=3e-3)
        np.testing.assert_allclose(r.resistance_std[p], ref.std(1), rtol=0.05)


@pytest.mark.parametrize("noise", [0.01, 0.03, 0.1])
def test_recovers_known_resistance_and_capacitance(noise):
    """Diode-like R(V) (shunt 2 GΩ, I_s = 0.1 nA, V_T = 1 V, ±3 V) and C = 1 pF, γ = the noise."""
    sim = simulate_giv(48, 1024, noise=noise, capacitance_pf=1.0, v_t=1.0, i_sat=0.1, seed=5)
    r = giv_bayesian(sim["current"], sim["bias"], sim["frequency"], gam=noise)
    x = r.bias
    g_true = diode_conductance(x, 0.5, 0.1, 1.0)
    r_true = 1 / g_true
    measurable = np.abs(x) > 0.5  # |I| ≳ 0.25 nA
    rel = np.abs(r.resistance - r_true)[:, measurable] / r_true[measurable]
    # stated error: median relative error ≤ 0.5 %, 1 %, 2.5 % (measured 0.2 %, 0.5 %, 1.3 %)
    assert np.median(rel) < {0.01: 0.005, 0.03: 0.01, 0.1: 0.025}[noise]
    z = np.abs(r.resistance - r_true)[:, measurable] / r.resistance_std[:, measurable]
    coverage = float((z < 1.96).mean())  # measured 0.91, 0.92, 0.93
    assert 0.87 < coverage < 0.99, coverage
    zg = np.abs(r.conductance - g_true) / r.conductance_std
    assert 0.87 < float((zg < 1.96).mean()) < 0.99
    # C: pycroscopy's dt = period/(N_s - 1) convention biases it by N_s/(N_s - 1) = +0.2 % here
    np.testing.assert_allclose(r.capacitance.mean(0), 1.0, rtol=0.005)
    assert np.all(np.abs(r.capacitance - 1.0) < 0.01)
    # the reconstruction fits the data to the noise level; the corrected current is V·g
    resid = r.current_fit - sim["current"]
    assert np.sqrt(np.mean(resid**2)) < 1.3 * noise
    vg = sim["bias"] * diode_conductance(sim["bias"], 0.5, 0.1, 1.0)
    assert np.sqrt(np.mean((r.current_corrected - vg) ** 2)) < 1.3 * noise + 0.02
    # the capacitive part A_C·C_fit is the simulated C·dV/dt + 2·r_extra·C·V within 1 %
    v = sim["bias"]
    dvdt = np.append(np.diff(v), np.diff(v)[-1]) * sim["frequency"] * v.size
    cap = 1e-3 * (dvdt + 2 * sim["r_extra"] * v)
    err = (r.current_fit - r.current_resistive) - cap
    assert np.sqrt(np.mean(err**2)) < 0.01 * np.sqrt(np.mean(cap**2))


# ------------------------------------------------------------------------------ Process, CLI
@pytest.fixture(scope="module")
def giv_file(tmp_path_factory):
    sim = simulate_giv(20, 256, noise=0.03, seed=6, g_shunt=np.linspace(0.4, 0.8, 20))
    path = tmp_path_factory.mktemp("giv") / "giv.h5"
    with h5py.File(path, "a") as f:
        g = f.require_group("Measurement_000/Channel_000")
        g.attrs["excitation_frequency_[Hz]"] = sim["frequency"]
        usidgpu.write_main(
            g,
            "Raw_Data",
            sim["current"].astype(np.float32).reshape(4, 5, -1),
            "Current",
            "nA",
            [Dimension("Y", "µm", np.arange(4) * 0.1), Dimension("X", "µm", np.arange(5) * 0.1)],
            [Dimension("Bias", "V", sim["bias"])],
        )
    return path, sim


def _take(path, group):
    with h5py.File(path, "a") as h:
        out = {k: h[group][k][()] for k in h[group] if isinstance(h[group][k], h5py.Dataset)}
        del h[group]
    return out


@pytest.mark.parametrize("scheduler", [None, "threads"])
def test_process_equals_in_memory_function(giv_file, scheduler, pyusid):
    path, sim = giv_file
    with usidgpu.open(path) as f:
        ds = f["/Measurement_000/Channel_000/Raw_Data"]
        bias = np.asarray(ds.spec_dims[0].values, dtype=np.float64)
        proc = GIVBayesian(ds, num_samples=500, rows_per_block=7, scheduler=scheduler, workers=2, progress=False)
        group = proc.run()
    assert group.endswith("Raw_Data-Bayesian_Inference_000")
    with h5py.File(path, "r") as h:  # readable by pyUSID, with units
        res = pyusid.USIDataset(h[group]["Resistance"])
        assert res.data_descriptor == "Resistance (GΩ)"
        assert res.spec_dim_labels == ["Bias"] and res.pos_dim_labels == ["Y", "X"]
        assert pyusid.USIDataset(h[group]["Capacitance"]).data_descriptor == "Capacitance (pF)"
        assert pyusid.USIDataset(h[group]["Corrected_Current"]).shape == (20, 256)
    out = _take(path, group)
    data = sim["current"].astype(np.float32).astype(np.float64)
    ref = giv_bayesian(data, bias, sim["frequency"], num_samples=500)
    np.testing.assert_allclose(out["Resistance"], ref.resistance, rtol=1e-5)
    np.testing.assert_allclose(out["R_Std"], ref.resistance_std, rtol=1e-5)
    np.testing.assert_allclose(out["Capacitance"], ref.capacitance, rtol=1e-5)
    np.testing.assert_allclose(out["Reconstructed_Current"], ref.current_fit, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["Reconstructed_Current_No_C"], ref.current_resistive, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["Corrected_Current"], ref.current_corrected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["Resistance_Spectroscopic_Values"].ravel(), ref.bias, rtol=1e-6)


def test_cli_bayes_writes_results_and_plot(giv_file, tmp_path, capsys):
    path, _sim = giv_file
    out = tmp_path / "res.h5"
    png = tmp_path / "maps.png"
    rc = main(
        ["bayes", str(path), "--samples", "200", "--grid-points", "100", "--output", str(out), "--plot", str(png)]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "Bayesian_Inference_000" in text and "capacitance" in text
    assert png.stat().st_size > 0
    with h5py.File(out, "r") as h:
        g = h["/Measurement_000/Channel_000/Raw_Data-Bayesian_Inference_000"]
        assert g["Resistance"].shape == (20, 102)


def test_cli_bayes_bad_input(giv_file, tmp_path, capsys):
    path, _sim = giv_file
    assert main(["bayes", str(tmp_path / "missing.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.h5" in err
    assert main(["bayes", str(path), "--samples", "1"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    # a dataset whose spectroscopic dimension is not a bias in V, and no --bias
    other = tmp_path / "time.h5"
    with h5py.File(other, "a") as f:
        usidgpu.write_main(
            f.require_group("M"),
            "Raw_Data",
            np.ones((2, 16), np.float32),
            "Current",
            "nA",
            [Dimension("X", "µm", 2)],
            [Dimension("Time", "s", np.arange(16) * 1e-4)],
        )
    assert main(["bayes", str(other), "--frequency", "100"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bias" in err and "Traceback" not in err


def test_bias_of_any_phase_gives_the_same_sweeps_and_a_mixed_waveform_is_refused():
    from usidgpu.bayes.giv import GIVModel

    n = 256
    t = np.arange(n) / n
    sine = 3 * np.sin(2 * np.pi * t)
    for shift in (0, n // 4, n // 2, 3 * n // 4):
        model = GIVModel(np.roll(sine, -shift), 1e3, num_samples=10)
        sweeps = {name: np.roll(sine, -shift)[sw.cols] for name, sw in model.sweeps.items()}
        assert np.all(np.diff(sweeps["forward"]) >= 0) and np.all(np.diff(sweeps["reverse"]) <= 0)
    with pytest.raises(ValueError, match="one period"):
        GIVModel(3 * np.sin(4 * np.pi * t), 1e3, num_samples=10)  # two periods
    with pytest.raises(ValueError, match="complex"):
        GIVModel(sine, 1e3, num_samples=10).infer(np.ones((2, n), complex))


def test_the_g_mode_parameters_are_one_settings_object():
    from usidgpu.bayes import DEFAULTS, GIVSettings

    defaults = GIVSettings()
    assert (
        defaults.as_dict()
        == DEFAULTS
        == dict(num_x_steps=250, r_extra=110.0, gam=0.03, sigma=10.0, sigma_c=1.0, num_samples=2000)
    )
    mine = GIVSettings.of(defaults, num_samples=300, gam=0.05)
    assert (mine.num_samples, mine.gam, mine.sigma) == (300, 0.05, 10.0)
    with pytest.raises(TypeError, match="unknown G-mode parameter"):
        GIVSettings.of(samples=3)
    for bad in (dict(gam=0), dict(sigma=-1), dict(num_samples=1), dict(num_x_steps=3)):
        with pytest.raises(ValueError):
            GIVSettings(**bad)
    sim = simulate_giv(3, 128, noise=0.03, seed=2)
    a = giv_bayesian(sim["current"], sim["bias"], sim["frequency"], mine)
    b = giv_bayesian(sim["current"], sim["bias"], sim["frequency"], num_samples=300, gam=0.05)
    np.testing.assert_array_equal(a.resistance, b.resistance)
    assert a.parameters["num_samples"] == 300
