"""Batched Bayesian linear regression: the Gaussian posterior of every pixel at once.

For each pixel ``b`` the model is ``y_b = A_b m_b + ε``, ``ε ~ N(0, O⁻¹)``, with the Gaussian
prior ``m_b ~ N(m0_b, P0⁻¹)``. Its posterior is Gaussian with

    Σ_b = (A_bᵀ O A_b + P0)⁻¹,        μ_b = Σ_b (A_bᵀ O y_b + P0 m0_b).

Two cases:

* **shared design matrix** ``A`` (N × P, the same for every pixel — the G-mode I–V case, where all
  pixels share one bias waveform): Σ does not depend on the data, so it is factorized **once**;
  with ``G = Σ Aᵀ O`` (P × N) and ``c = Σ P0 m0`` every pixel's mean is one matrix product,
  ``μ = Y Gᵀ + c``;
* **per-pixel design matrices** ``A`` (B × N × P): the B posterior precisions are inverted and
  factorized in one batched call (``xp.linalg.inv`` / ``xp.linalg.cholesky``, i.e. LAPACK on the
  CPU and cuSOLVER's batched kernels under CuPy).

Posterior samples are ``μ + L ξ`` with ``L`` the lower Cholesky factor of Σ and ``ξ ~ N(0, I)``.
Every function takes its array module from its inputs (NumPy or CuPy) and computes in float64:
the posterior precisions of smoothness priors are badly conditioned (10⁸ and more).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.arrays import get_array_module
from ..core.errors import InvalidInput

__all__ = ["Posterior", "SharedOperator", "posterior", "sample_posterior", "shared_operator"]


@dataclass
class Posterior:
    """Gaussian posteriors of B pixels.

    Attributes
    ----------
    mean : array (B, P)
    cov : array (P, P) when the design matrix is shared, else (B, P, P)
    chol : array, like ``cov``
        Lower Cholesky factor ``L`` of ``cov`` (``L Lᵀ = cov``).
    shared : bool
        True when ``cov`` (and ``chol``) are one matrix for all pixels.
    """

    mean: Any
    cov: Any
    chol: Any
    shared: bool

    @property
    def std(self) -> Any:
        """Marginal posterior standard deviations, (P,) when shared, else (B, P)."""
        xp = get_array_module(self.cov)
        return xp.sqrt(xp.diagonal(self.cov, axis1=-2, axis2=-1))


@dataclass
class SharedOperator:
    """The data-independent part of the posterior for a design matrix shared by all pixels.

    ``mean(y) = y Gᵀ + c`` with ``G = Σ Aᵀ O`` (P × N) and ``c = Σ P0 m0``; ``cov`` = Σ and
    ``chol`` its lower Cholesky factor, computed once.
    """

    gain: Any
    offset: Any
    cov: Any
    chol: Any

    def mean(self, y: Any) -> Any:
        """Posterior means of the rows of ``y`` (B, N): one matrix product."""
        xp = get_array_module(y, self.gain)
        y = xp.asarray(y, dtype=xp.float64)
        return (y[None, :] if y.ndim == 1 else y) @ xp.asarray(self.gain).T + xp.asarray(self.offset)


def shared_operator(A: Any, prior_mean: Any, prior_precision: Any, noise_precision: Any = 1.0) -> SharedOperator:
    """Factorize the posterior of a shared design matrix ``A`` (N × P) once.

    Parameters are those of :func:`posterior`. Σ = (Aᵀ O A + P0)⁻¹ is formed by one inversion of
    the P × P posterior precision (float64), symmetrized, and factorized by Cholesky.
    """
    xp = get_array_module(A)
    A = xp.asarray(A, dtype=xp.float64)
    p0 = xp.asarray(prior_precision, dtype=xp.float64)
    m0 = xp.asarray(prior_mean, dtype=xp.float64)
    oa = _noise_weighted(xp, A, noise_precision)  # O A  (N, P)
    cov = _sym(xp, xp.linalg.inv(A.T @ oa + p0))
    chol = xp.linalg.cholesky(cov)
    return SharedOperator(cov @ oa.T, (m0 @ p0) @ cov, cov, chol)


def _sym(xp: Any, m: Any) -> Any:
    return 0.5 * (m + xp.swapaxes(m, -1, -2))


def _noise_weighted(xp: Any, a: Any, noise_precision: Any) -> Any:
    """``O A`` for a scalar, a diagonal (N,) or a full (N, N) noise precision ``O``."""
    o = xp.asarray(noise_precision, dtype=xp.float64)
    if o.ndim == 0:
        return o * a
    if o.ndim == 1:
        return o[:, None] * a
    if o.ndim == 2:
        return o @ a
    raise InvalidInput(f"noise precision must be a scalar, (N,) or (N, N); got shape {o.shape}")


def posterior(
    A: Any,
    y: Any,
    prior_mean: Any,
    prior_precision: Any,
    noise_precision: Any = 1.0,
    *,
    with_cov: bool = True,
) -> Posterior:
    """Posterior mean, covariance and its Cholesky factor of every pixel.

    Parameters
    ----------
    A : array (N, P) or (B, N, P)
        Design matrix shared by all pixels, or one per pixel.
    y : array (B, N) or (N,)
        Observations, one row per pixel.
    prior_mean : array (P,) or (B, P)
    prior_precision : array (P, P)
        ``P0``, symmetric positive (semi-)definite; with ``A`` it must make ``Aᵀ O A + P0``
        positive definite.
    noise_precision : float, array (N,) or (N, N)
        ``O``: a scalar ``1/γ²``, a diagonal, or a full matrix.
    with_cov : bool
        Per-pixel case only: False skips the (B, P, P) covariances and factors (means only,
        from batched solves).

    Returns
    -------
    Posterior
        ``mean`` (B, P) in float64 (NumPy or CuPy, like ``y``).
    """
    xp = get_array_module(A, y)
    A = xp.asarray(A, dtype=xp.float64)
    y = xp.asarray(y, dtype=xp.float64)
    y = y[None, :] if y.ndim == 1 else y
    p0 = xp.asarray(prior_precision, dtype=xp.float64)
    m0 = xp.asarray(prior_mean, dtype=xp.float64)
    n_pix = y.shape[0]
    if A.ndim == 2:
        if y.shape[1] != A.shape[0]:
            raise InvalidInput(f"y has {y.shape[1]} points per pixel, the design matrix {A.shape[0]} rows")
        op = shared_operator(A, m0, p0, noise_precision)
        return Posterior(op.mean(y), op.cov, op.chol, True)
    if A.ndim != 3 or A.shape[0] != n_pix or A.shape[1] != y.shape[1]:
        raise InvalidInput(f"per-pixel design matrices must be (B, N, P) = ({n_pix}, {y.shape[1]}, P); got {A.shape}")
    oa = _noise_weighted(xp, A.transpose(1, 0, 2).reshape(A.shape[1], -1), noise_precision)
    oa = oa.reshape(A.shape[1], n_pix, A.shape[2]).transpose(1, 0, 2)  # O A_b  (B, N, P)
    q = xp.matmul(xp.swapaxes(A, 1, 2), oa) + p0  # posterior precisions (B, P, P)
    rhs = xp.matmul(xp.swapaxes(oa, 1, 2), y[:, :, None])[..., 0] + (m0 @ p0)  # AᵀO y + P0 m0
    if not with_cov:
        return Posterior(xp.linalg.solve(q, rhs[..., None])[..., 0], None, None, False)
    cov = _sym(xp, xp.linalg.inv(q))  # batched
    chol = xp.linalg.cholesky(cov)  # batched (cuSOLVER potrfBatched under CuPy)
    mean = xp.matmul(cov, rhs[..., None])[..., 0]
    return Posterior(mean, cov, chol, False)


def sample_posterior(post: Posterior, n_samples: int, rng: Any = None, *, common: bool = False) -> Any:
    """Draws ``μ_b + L_b ξ`` from every pixel's posterior.

    Parameters
    ----------
    post : Posterior
    n_samples : int
    rng : numpy.random.Generator or int, optional
        The normal draws ξ come from NumPy (then move to the device): the same seed gives the same
        samples on the CPU and the GPU.
    common : bool
        One set of ξ for all pixels (common random numbers): each pixel's samples are still exact
        draws from its own posterior, and with a shared factor ``L ξ`` is computed once.

    Returns
    -------
    array (B, n_samples, P)
    """
    xp = get_array_module(post.mean)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    b, p = post.mean.shape
    if common or post.shared:
        xi = xp.asarray(rng.standard_normal((n_samples if common else b * n_samples, p)))
        if post.shared:
            z = xi @ post.chol.T  # (S or B·S, P)
            z = z[None] if common else z.reshape(b, n_samples, p)
        else:
            z = xp.matmul(xi[None], xp.swapaxes(post.chol, 1, 2))  # (B, S, P)
        return post.mean[:, None, :] + z
    xi = xp.asarray(rng.standard_normal((b, n_samples, p)))
    return post.mean[:, None, :] + xp.matmul(xi, xp.swapaxes(post.chol, 1, 2))
