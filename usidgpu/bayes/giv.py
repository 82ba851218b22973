"""Bayesian inference of G-mode I–V data: resistance decoupled from the capacitive response.

The model of pycroscopy 0.60's ``GIVBayesian`` (``analysis/giv_bayesian.py`` and
``analysis/utils/giv_utils.py::do_bayesian_inference``, K. J. Law and R. K. Vasudevan), for all
pixels at once.

Model (one period of the bias waveform V(t), N points, excitation frequency f)
    The period is rolled by ``int(-N/4)`` points so that it starts at the top of the sine (a
    waveform of another phase: so that it starts at its maximum); its
    first N//2 points are the **reverse** sweep (fitted with V and I negated, so that the bias
    rises), the rest the **forward** sweep. Each sweep is fitted on its own:

        I(t) = V(t)·g(V(t)) + C_fit·(dV/dt + r_extra·V(t)) + noise,

    with the conductance ``g = 1/R`` on the odd grid ``x = linspace(-Vmax, Vmax, K)``
    (``Vmax = max V`` of the sweep) and ``g(V)`` by linear interpolation between the two grid
    nodes around V: row j of the design matrix A (N_s × (K+1)) holds ``V_j·(1-w)`` and ``V_j·w``
    at those nodes and ``dV/dt_j + r_extra·V_j`` in its last column. As in pycroscopy the time
    step of a sweep is ``dt = 1/(f·(N_s-1))`` (its time axis spans one whole period), about twice
    the sampling interval, so ``C_fit ≈ 2·C`` — pycroscopy halves it; so does this module.
Prior
    ``m = [g(x_1..x_K), C_fit] ~ N(m0, P0⁻¹)``, ``m0 = [3, …, 3, 0]``,
    ``P0 = diag((I + Lap³)/σ², 1/σ_C²)`` with Lap the second-difference operator on x
    (``(2, -1)/dx²`` stencil, ``1/dx²`` in its two corners).
Noise
    ``O = I/γ²``.
Posterior
    ``Σ = (AᵀOA + P0)⁻¹``, ``μ = Σ(AᵀO·I + P0·m0)``: every pixel shares A (one bias waveform), so
    Σ is factorized once per sweep and all pixels' means are one matrix product
    (:mod:`usidgpu.bayes.linear`).
Outputs per pixel
    ``R(V)`` mean and standard deviation from ``num_samples`` draws ``g = μ_g + L ξ`` of the
    conductance (L the Cholesky factor of the conductance block of Σ; pycroscopy uses its
    symmetric square root, which gives the same distribution): ``mean(1/g)``,
    ``sqrt(mean(1/g²) - mean(1/g)²)``; C per sweep (``C_fit/2``) and its posterior std; the
    reconstructed current ``A·μ`` (with the capacitive part) and ``A_g·μ_g`` (without it), both
    at the measured time samples; and pycroscopy's ``Corrected_Current``
    ``I - C̄·dV/dt - 2·r_extra·C̄·V`` with ``C̄`` the mean of the two sweeps' C and the true
    sampling interval ``1/(f·N)``.

Random draws are common to all pixels (one set of ξ per sweep, from a seeded NumPy generator):
every pixel's estimates are ordinary Monte Carlo estimates from its own posterior, the draws are
made once, and the results do not depend on how the pixels are split into blocks or on the
device. Defaults are pycroscopy 0.60's: 250 grid points in all (125 per sweep), r_extra = 110,
γ = 0.03, σ = 10, σ_C = 1, 2000 samples. Units follow the current: nA gives R in GΩ and C
(reported) in pF, as pycroscopy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from ..core.arrays import get_array_module
from ..core.errors import InvalidInput, InvalidType
from .linear import shared_operator

__all__ = [
    "DEFAULTS",
    "GIVModel",
    "GIVResult",
    "GIVSettings",
    "giv_bayesian",
    "half_grid_points",
    "simulate_giv",
    "smoothness_prior",
    "sweep_design",
    "units_for",
]


# current units → (resistance units, capacitance units of C_fit, factor to pF)
_UNITS = {
    "A": ("Ω", 1e12),
    "mA": ("kΩ", 1e9),
    "µA": ("MΩ", 1e6),
    "uA": ("MΩ", 1e6),
    "nA": ("GΩ", 1e3),
    "pA": ("TΩ", 1.0),
}


def units_for(current_units: str) -> tuple[str, str, float]:
    """Resistance units, capacitance units and the factor from C_fit/2 to them, for a current unit.

    Bias is taken in V. Known units (A, mA, µA, nA, pA) give C in pF (as pycroscopy, whose nA data
    give C in nF ×1000); others give ``V/<units>`` and ``<units>·s/V`` with factor 1.
    """
    u = (current_units or "").strip()
    if u in _UNITS:
        r, scale = _UNITS[u]
        return r, "pF", scale
    return (f"V/{u}" if u else "a. u."), (f"{u}·s/V" if u else "a. u."), 1.0


def half_grid_points(num_x_steps: int) -> int:
    """Grid points per sweep (odd), as pycroscopy turns ``num_x_steps`` into them.

    ``GIVBayesian`` bumps a multiple of 4 to ``2·(n//2 + 1)``, each sweep gets half of it, and
    ``do_bayesian_inference`` makes that odd: 250 → 125, 500 → 251.
    """
    n = int(num_x_steps)
    if n < 4:
        raise InvalidInput(f"num_x_steps must be at least 4, got {num_x_steps}")
    if n % 4 == 0:
        n = (n // 2 + 1) * 2
    k = n // 2
    return k + 1 if k % 2 == 0 else k


@dataclass(frozen=True)
class GIVSettings:
    """The parameters of the G-mode I–V model, in one place, with pycroscopy 0.60's defaults
    (its ``GIVBayesian``: ``num_x_steps=250, r_extra=110`` and ``bayesian_parms``: ``gam=0.03,
    sigma=10, sigmaC=1, num_samples=2E3``; its ``e=10`` is unused).

    Attributes
    ----------
    num_x_steps : int
        Bias grid points of R(V), both sweeps together (odd per sweep, see
        :func:`half_grid_points`); at least 4.
    r_extra : float
        Series resistance (Ω) of the capacitive term.
    gam : float
        Noise standard deviation of the current.
    sigma : float
        Prior width of the conductance.
    sigma_c : float
        Prior width of the capacitance.
    num_samples : int
        Posterior draws of 1/g; at least 2.
    """

    num_x_steps: int = 250
    r_extra: float = 110.0
    gam: float = 0.03
    sigma: float = 10.0
    sigma_c: float = 1.0
    num_samples: int = 2000

    def __post_init__(self) -> None:
        half_grid_points(self.num_x_steps)  # checks num_x_steps
        for name in ("gam", "sigma", "sigma_c"):
            if not getattr(self, name) > 0:
                raise InvalidInput(f"{name} must be positive, got {getattr(self, name)}")
        if int(self.num_samples) < 2:
            raise InvalidInput(f"num_samples must be at least 2, got {self.num_samples}")
        for name, kind in (("num_x_steps", int), ("r_extra", float), ("gam", float), ("sigma", float),
                           ("sigma_c", float), ("num_samples", int)):  # fmt: skip
            object.__setattr__(self, name, kind(getattr(self, name)))

    @classmethod
    def of(cls, settings: GIVSettings | None = None, **overrides: Any) -> GIVSettings:
        """``settings`` (default: the defaults) with any of its fields given as keywords replaced."""
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise InvalidType(f"unknown G-mode parameter(s) {sorted(unknown)}; known: {[f.name for f in fields(cls)]}")
        return replace(settings if settings is not None else cls(), **overrides)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The defaults of :class:`GIVSettings` as a dict (kept for code that reads them by name).
DEFAULTS: dict[str, Any] = asdict(GIVSettings())


def sweep_design(bias: Any, frequency: float, n_grid: int, r_extra: float) -> tuple[np.ndarray, np.ndarray]:
    """Design matrix A (N_s × (K+1)) and grid x (K,) of one rising sweep, as pycroscopy builds them.

    Parameters
    ----------
    bias : array (N_s,)
        The sweep's bias (rising; the reverse sweep is passed negated).
    frequency : float
        Excitation frequency; the sweep's time step is ``1/(f·(N_s-1))`` as in pycroscopy.
    n_grid : int
        K, odd.
    r_extra : float
    """
    v = np.asarray(bias, dtype=np.float64)
    n = v.size
    if n < 3:
        raise InvalidInput(f"a sweep needs at least 3 bias points, got {n}")
    vmax = float(v.max())
    if not vmax > 0:
        raise InvalidInput("the bias sweep never goes above 0 V: no grid to put the conductance on")
    x = np.linspace(-vmax, vmax, n_grid)
    dx = x[1] - x[0]
    dt = 1.0 / (frequency * (n - 1))  # t = linspace(0, 1/f, N_s): pycroscopy's convention
    dv = np.diff(v) / dt
    dv = np.append(dv, dv[-1])
    ix = np.clip(np.floor((v + vmax) / dx).astype(np.int64) + 1, 1, n_grid - 1)  # upper node
    w = (v - x[ix - 1]) / (x[ix] - x[ix - 1])
    rows = np.arange(n)
    a = np.zeros((n, n_grid + 1))
    a[rows, ix] = v * w
    a[rows, ix - 1] = v * (1.0 - w)
    a[:, n_grid] = dv + r_extra * v
    return a, x


def smoothness_prior(x: np.ndarray, sigma: float, sigma_c: float) -> tuple[np.ndarray, np.ndarray]:
    """Prior mean ``[3…3, 0]`` and precision ``diag((I + Lap³)/σ², 1/σ_C²)`` on ``[g(x), C_fit]``."""
    k = x.size
    dx = x[1] - x[0]
    lap = (2.0 * np.eye(k) - np.eye(k, k=1) - np.eye(k, k=-1)) / dx**2
    lap[0, 0] = lap[-1, -1] = 1.0 / dx**2
    p0 = np.zeros((k + 1, k + 1))
    p0[:k, :k] = (np.eye(k) + np.linalg.matrix_power(lap, 3)) / sigma**2
    p0[k, k] = 1.0 / sigma_c**2
    m0 = np.append(3.0 * np.ones(k), 0.0)
    return m0, p0


@dataclass
class _Sweep:
    """One sweep's data-independent operators (NumPy, float64)."""

    cols: np.ndarray  # the source columns (after the roll) of this sweep
    sign: float  # -1 for the reverse sweep (fitted negated)
    design: np.ndarray  # A (N_s, K+1)
    x: np.ndarray  # grid (K,), as fitted (rising)
    gain: np.ndarray  # Σ AᵀO (K+1, N_s)
    offset: np.ndarray  # Σ P0 m0 (K+1,)
    var: np.ndarray  # diag Σ (K+1,)
    draws: np.ndarray  # L_g ξ (K, S): common conductance deviations


@dataclass
class GIVResult:
    """Per-pixel results of :func:`giv_bayesian` (arrays NumPy or CuPy, like the input).

    ``bias`` is the output grid (2K): the forward sweep's x, then the reverse sweep's (descending),
    as pycroscopy stores it; ``resistance``, ``resistance_std``, ``conductance`` and
    ``conductance_std`` are (B, 2K) on it. ``capacitance`` and ``capacitance_std`` are (B, 2):
    forward, reverse. ``current_fit`` (A·μ, with the capacitive part), ``current_resistive``
    (without it) and ``current_corrected`` are (B, N) in the source's time order.
    """

    bias: np.ndarray
    resistance: Any
    resistance_std: Any
    conductance: Any
    conductance_std: Any
    capacitance: Any
    capacitance_std: Any
    current_fit: Any
    current_resistive: Any
    current_corrected: Any
    units: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)


class GIVModel:
    """The G-mode I–V model of one bias waveform: everything that does not depend on the data.

    Built once on the host (small matrices); :meth:`infer` then runs any block of pixels on
    NumPy or CuPy. It pickles (for the workers of a :class:`~usidgpu.parallel.Process`).

    Parameters
    ----------
    bias : array (N,)
        One period of the bias waveform, in V.
    frequency : float
        Excitation frequency in Hz.
    settings : GIVSettings, optional
        The model's parameters (default: pycroscopy 0.60's).
    seed : int
        Seed of the normal draws.
    current_units : str
        Units of the measured current (sets the units and scale of R and C).
    **parameters
        Any field of :class:`GIVSettings` (``num_x_steps``, ``r_extra``, ``gam``, ``sigma``,
        ``sigma_c``, ``num_samples``), replacing that of ``settings``.
    """

    def __init__(
        self,
        bias: Any,
        frequency: float,
        settings: GIVSettings | None = None,
        *,
        seed: int = 0,
        current_units: str = "nA",
        **parameters: Any,
    ) -> None:
        self.settings = settings = GIVSettings.of(settings, **parameters)
        bias = np.asarray(bias, dtype=np.float64).ravel()
        if bias.size < 6:
            raise InvalidInput(f"the bias waveform needs at least 6 points (two sweeps of 3), got {bias.size}")
        if not np.all(np.isfinite(bias)):
            raise InvalidInput("the bias waveform has non-finite values")
        if not (frequency and np.isfinite(frequency) and frequency > 0):
            raise InvalidInput(f"the excitation frequency must be positive, got {frequency}")
        self.bias, self.frequency, self.seed = bias, float(frequency), seed
        self.num_x_steps, self.r_extra, self.gam = settings.num_x_steps, settings.r_extra, settings.gam
        self.sigma, self.sigma_c, self.num_samples = settings.sigma, settings.sigma_c, settings.num_samples
        self.r_units, self.c_units, self.c_scale = units_for(current_units)
        self.current_units = current_units
        self.k = half_grid_points(settings.num_x_steps)
        n = bias.size
        # pycroscopy rolls by int(-N/4): for its sine, starting at 0 V and rising, the period then
        # starts at the maximum. Any other phase is rolled to start at the maximum too; the halves
        # must then fall (reverse sweep) and rise (forward sweep), or the sweeps would be mixed.
        top = int(np.argmax(bias))
        self.roll = int(n * -0.25) if abs(top - n / 4) <= 1 else -top
        order = np.roll(np.arange(n), self.roll)  # order[j] = source column of rolled point j
        half = n // 2
        falling, rising = np.diff(bias[order[:half]]), np.diff(bias[order[half:]])
        if not (np.mean(falling <= 0) > 0.9 and np.mean(rising >= 0) > 0.9):
            raise InvalidInput(
                "the bias waveform must be one period of a triangle- or sine-like sweep: from its maximum down "
                "to its minimum in one half and back up in the other"
            )
        rng = np.random.default_rng(seed)
        self.sweeps = {}
        for name, cols, sign in (("forward", order[half:], 1.0), ("reverse", order[:half], -1.0)):
            a, x = sweep_design(sign * bias[cols], self.frequency, self.k, self.r_extra)
            m0, p0 = smoothness_prior(x, self.sigma, self.sigma_c)
            op = shared_operator(a, m0, p0, 1.0 / self.gam**2)
            k = self.k
            chol_g = np.linalg.cholesky(op.cov[:k, :k])  # marginal of the conductance block
            xi = rng.standard_normal((k, self.num_samples))
            self.sweeps[name] = _Sweep(cols, sign, a, x, op.gain, op.offset, np.diag(op.cov).copy(), chol_g @ xi)
        dt = 1.0 / (self.frequency * n)  # the true sampling interval (pycroscopy's Corrected_Current)
        dvdt = np.diff(bias) / dt
        self.dvdt = np.append(dvdt, dvdt[-1])
        self.grid = np.concatenate([self.sweeps["forward"].x, -self.sweeps["reverse"].x])

    @property
    def n_points(self) -> int:
        return self.bias.size

    def parameters(self) -> dict[str, Any]:
        return dict(frequency=self.frequency, **self.settings.as_dict(), seed=self.seed)

    def infer(self, current: Any, xp: Any = None, chunk_bytes: int | None = None) -> GIVResult:
        """Posterior of every pixel of ``current`` (B, N) — NumPy or CuPy, computed on its device."""
        xp = xp or get_array_module(current)
        if xp.iscomplexobj(current):
            raise InvalidInput("G-mode currents are real; got complex data (take the real part explicitly if meant)")
        y = xp.asarray(current, dtype=xp.float64)
        y = y[None] if y.ndim == 1 else y
        if y.shape[1] != self.n_points:
            raise InvalidInput(f"the current has {y.shape[1]} points per pixel, the bias waveform {self.n_points}")
        if chunk_bytes is None:
            chunk_bytes = (256 if xp is not np else 4) * 2**20
        k = self.k
        out: dict[str, list] = {n: [] for n in ("r", "rs", "g", "gs", "c", "cs")}
        fit = xp.zeros_like(y)
        resistive = xp.zeros_like(y)
        for name in ("forward", "reverse"):
            sw = self.sweeps[name]
            cols = xp.asarray(sw.cols)
            ys = sw.sign * y[:, cols]
            gain, offset = xp.asarray(sw.gain), xp.asarray(sw.offset)
            mu = ys @ gain.T + offset  # every pixel's posterior mean: one GEMM
            mr, sr = reciprocal_moments(mu[:, :k], xp.asarray(sw.draws), chunk_bytes)
            a = xp.asarray(sw.design)
            fit[:, cols] = sw.sign * (mu @ a.T)
            resistive[:, cols] = sw.sign * (mu[:, :k] @ a[:, :k].T)
            std = np.sqrt(sw.var)
            out["r"].append(mr)
            out["rs"].append(sr)
            out["g"].append(mu[:, :k])
            out["gs"].append(xp.broadcast_to(xp.asarray(std[:k]), (y.shape[0], k)))
            out["c"].append(0.5 * self.c_scale * mu[:, k])  # C_fit ≈ 2·C (pycroscopy's halving)
            out["cs"].append(xp.full(y.shape[0], 0.5 * self.c_scale * std[k]))
        cap = xp.stack(out["c"], axis=1)
        c_mean = cap.mean(axis=1, keepdims=True) / self.c_scale  # back to the current's units·s/V
        bias = xp.asarray(self.bias)
        corrected = y - c_mean * xp.asarray(self.dvdt) - 2.0 * self.r_extra * c_mean * bias
        return GIVResult(
            bias=self.grid.copy(),
            resistance=xp.concatenate(out["r"], axis=1),
            resistance_std=xp.concatenate(out["rs"], axis=1),
            conductance=xp.concatenate(out["g"], axis=1),
            conductance_std=xp.concatenate(out["gs"], axis=1),
            capacitance=cap,
            capacitance_std=xp.stack(out["cs"], axis=1),
            current_fit=fit,
            current_resistive=resistive,
            current_corrected=corrected,
            units=dict(
                bias="V",
                resistance=self.r_units,
                conductance=f"1/{self.r_units}",
                capacitance=self.c_units,
                current=self.current_units,
            ),
            parameters=self.parameters(),
        )


def reciprocal_moments(mean: Any, draws: Any, chunk_bytes: int = 4 * 2**20) -> tuple[Any, Any]:
    """Mean and standard deviation of ``1/g`` over the samples ``g = mean[b, k] + draws[k, s]``.

    ``mean`` (B, K), ``draws`` (K, S) (shared by the pixels). The samples are formed and inverted
    in float32 (the pass over B·K·S values is the costliest step; float32 halves its memory
    traffic) around the centre ``1/mean`` (so the variance does not cancel); the sums are
    NumPy's/CuPy's pairwise float32 sums, finished in float64. Pixels go in chunks of about
    ``chunk_bytes`` of samples. Returns two (B, K) float64 arrays.
    """
    xp = get_array_module(mean, draws)
    b, k = mean.shape
    s = draws.shape[1]
    step = max(1, int(chunk_bytes // (k * s * 4)))
    d32 = draws.astype(xp.float32)
    m1 = xp.empty((b, k))
    m2 = xp.empty((b, k))
    for a in range(0, b, step):
        mu = mean[a : a + step]
        centre = 1.0 / mu
        t = mu.astype(xp.float32)[:, :, None] + d32[None]  # (b, K, S) samples of g
        xp.reciprocal(t, out=t)
        t -= centre.astype(xp.float32)[:, :, None]
        d1 = t.sum(axis=2).astype(xp.float64) / s
        xp.multiply(t, t, out=t)
        d2 = t.sum(axis=2).astype(xp.float64) / s
        m1[a : a + step] = centre + d1
        m2[a : a + step] = d2 - d1 * d1  # variance around the sample mean
    return m1, xp.sqrt(xp.maximum(m2, 0.0))


def giv_bayesian(
    current: Any,
    bias: Any,
    frequency: float,
    settings: GIVSettings | None = None,
    *,
    seed: int = 0,
    current_units: str = "nA",
    **parameters: Any,
) -> GIVResult:
    """Bayesian inference of R(V) and C for every pixel of G-mode I–V data, in memory.

    Parameters
    ----------
    current : array (B, N) or (N,)
        Measured current, one period of the bias per row (NumPy, or CuPy to run on the GPU).
    bias : array (N,)
        The bias waveform (V), shared by all pixels.
    frequency : float
        Excitation frequency (Hz).
    settings, seed, current_units, **parameters
        See :class:`GIVModel` and :class:`GIVSettings`; defaults are pycroscopy 0.60's.

    Returns
    -------
    GIVResult

    Examples
    --------
    >>> sim = simulate_giv(4, 256, noise=0.03)
    >>> r = giv_bayesian(sim["current"], sim["bias"], sim["frequency"], num_samples=200)
    >>> r.resistance.shape, r.capacitance.shape
    ((4, 250), (4, 2))
    """
    model = GIVModel(bias, frequency, settings, seed=seed, current_units=current_units, **parameters)
    return model.infer(current)


def diode_conductance(v: Any, g_shunt: float = 0.5, i_sat: float = 0.05, v_t: float = 0.5) -> Any:
    """Conductance ``I(V)/V`` of a diode with a shunt: ``g_shunt + i_sat·(exp(V/v_t) - 1)/V``."""
    v = np.asarray(v, dtype=np.float64)
    small = np.abs(v) < 1e-9
    safe = np.where(small, 1.0, v)
    return g_shunt + i_sat * np.where(small, 1.0 / v_t, np.expm1(v / v_t) / safe)


def simulate_giv(
    n_pixels: int,
    n_points: int,
    *,
    v_max: float = 3.0,
    frequency: float = 1000.0,
    capacitance_pf: Any = 1.0,
    r_extra: float = DEFAULTS["r_extra"],
    noise: float = 0.03,
    g_shunt: Any = 0.5,
    i_sat: float = 0.05,
    v_t: float = 0.5,
    seed: int = 0,
) -> dict[str, Any]:
    """Synthetic G-mode I–V data (nA, V, GΩ, pF) from the model pycroscopy fits.

    One period of ``V = v_max·sin(2π f t)`` with N points; for every pixel
    ``I = V·g(V) + C·dV/dt + 2·r_extra·C·V + noise`` with a diode-like conductance
    (:func:`diode_conductance`, a per-pixel shunt allowed) and C in pF (``dV/dt`` the forward
    difference over the sampling interval ``1/(f·N)``, as the model discretizes it).

    Returns
    -------
    dict
        ``bias`` (N,), ``current`` (B, N) float64, ``frequency``, ``capacitance_pf`` (B,),
        ``g_shunt`` (B,), ``i_sat``, ``v_t``, ``noise``, ``r_extra``, ``clean`` (B, N).
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n_points) / (frequency * n_points)
    v = v_max * np.sin(2 * np.pi * frequency * t)
    dvdt = np.diff(v) * frequency * n_points
    dvdt = np.append(dvdt, dvdt[-1])
    c = np.broadcast_to(np.asarray(capacitance_pf, dtype=np.float64), (n_pixels,)) * 1e-3  # nF
    gs = np.broadcast_to(np.asarray(g_shunt, dtype=np.float64), (n_pixels,))
    g = np.stack([diode_conductance(v, gi, i_sat, v_t) for gi in gs])
    clean = v * g + c[:, None] * (dvdt + 2 * r_extra * v)
    current = clean + noise * rng.standard_normal(clean.shape)
    return dict(
        bias=v,
        current=current,
        clean=clean,
        frequency=frequency,
        capacitance_pf=c * 1e3,
        g_shunt=np.array(gs),
        i_sat=i_sat,
        v_t=v_t,
        noise=noise,
        r_extra=r_extra,
    )
