"""GPU path of usidgpu.bayes equals the CPU path (CuPy vs NumPy, same seeds)."""

from __future__ import annotations

import numpy as np
import pytest

from usidgpu.bayes import giv_bayesian, posterior, simulate_giv


def _gpu_usable() -> bool:
    try:
        import cupy

        return bool(cupy.is_available())
    except Exception:
        return False


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _gpu_usable(), reason="no usable CUDA GPU (cupy.is_available() is false)"),
]


def test_linear_posterior_gpu_equals_cpu():
    import cupy

    rng = np.random.default_rng(0)
    a = rng.standard_normal((60, 9))
    ab = rng.standard_normal((16, 60, 9))
    y = rng.standard_normal((16, 60))
    l = rng.standard_normal((9, 9))
    p0 = l @ l.T / 9 + 0.1 * np.eye(9)
    m0 = rng.standard_normal(9)
    for aa in (a, ab):
        c = posterior(aa, y, m0, p0, 2.0)
        g = posterior(cupy.asarray(aa), cupy.asarray(y), cupy.asarray(m0), cupy.asarray(p0), 2.0)
        np.testing.assert_allclose(g.mean.get(), c.mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(g.cov.get(), c.cov, rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(g.chol.get(), c.chol, rtol=1e-8, atol=1e-12)


def test_giv_gpu_equals_cpu():
    import cupy

    sim = simulate_giv(64, 512, noise=0.03, seed=1)
    c = giv_bayesian(sim["current"], sim["bias"], sim["frequency"], num_samples=500)
    g = giv_bayesian(cupy.asarray(sim["current"]), sim["bias"], sim["frequency"], num_samples=500)
    for name in ("resistance", "resistance_std", "conductance", "capacitance", "current_fit", "current_corrected"):
        np.testing.assert_allclose(getattr(g, name).get(), getattr(c, name), rtol=2e-5, atol=1e-8, err_msg=name)
