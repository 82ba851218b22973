"""Synthetic scan distortion with known truth: a lattice imaged by a scan whose lines start with
a flyback and whose frame drifts.

A scanned image samples the specimen at ``(Y(r), X(c) + S(r))`` for pixel (row r, column c):

- **fast scan** ``X(c)``: after each flyback the beam lags and then catches up, so the first part
  of every line covers more specimen per pixel — the columns there look *compressed* (closer
  together); here the extra speed falls from ``flyback`` at the line start to nothing at
  ``flyback_fraction`` of the line, quadratically (``X′(c) = 1 + flyback·(1 − c/c_w)²`` for
  ``c < c_w``, 1 after);
- **slow scan** ``Y(r)``: the specimen drifts along the slow axis while the frame is scanned, so
  the row spacing changes down the frame (``Y′(r) = 1 + drift·(r/(H − 1) − ½)``, a linear ramp);
- **slow-scan shear** ``S(r)``: drift along the fast axis shifts each line sideways
  (``S(r) = shear·(r/(H − 1))²``, an accelerating drift).

The specimen carries a lattice (rendered from :func:`usidgpu.atoms.synthetic.lattice_image`'s
truth, with an optional uniform stretch of a layer), so both the distortion and any real strain
are known exactly. Used by the tests of :mod:`usidgpu.atoms.scan_distortion`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.errors import InvalidInput
from .synthetic import lattice_image


@dataclass
class DistortedLattice:
    """A scan-distorted lattice image and its truth; positions (y, x) in pixels."""

    image: np.ndarray  #: the noisy image
    clean: np.ndarray  #: without noise
    positions: np.ndarray  #: (N, 2) where the columns appear in the image (pixels)
    specimen: np.ndarray  #: (N, 2) where they are on the specimen (undistorted pixel units)
    sublattice: np.ndarray  #: (N,) motif index
    amplitudes: np.ndarray  #: (N,)
    vacancies: np.ndarray  #: (V, 2) where the empty sites appear in the image
    fast: np.ndarray  #: (W,) X(c), specimen x of image column c
    slow: np.ndarray  #: (H,) Y(r), specimen y of image row r
    shift: np.ndarray  #: (H,) S(r), sideways shift of line r
    strain: np.ndarray  #: (N,) true ε_xx of each column (the layer's stretch, 0 elsewhere)
    sigma: float
    parameters: dict = field(default_factory=dict)

    @property
    def fast_spacing(self) -> np.ndarray:
        """(W,) apparent spacing along the fast scan relative to the undistorted scan, 1/X′(c)."""
        return 1.0 / np.gradient(self.fast)

    @property
    def slow_spacing(self) -> np.ndarray:
        """(H,) apparent row spacing relative to the undistorted scan, 1/Y′(r)."""
        return 1.0 / np.gradient(self.slow)


def scan_maps(
    shape: tuple[int, int], flyback: float, flyback_fraction: float, drift: float, shear: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X(c), Y(r) and S(r) on the pixel grid (see the module docstring)."""
    h, w = shape
    c = np.arange(w, dtype=np.float64)
    cw = flyback_fraction * (w - 1)
    # X(c) = c − ∫_c^{c_w} flyback·(1 − t/c_w)² dt before c_w: X(c_w) = c_w, X′ = 1 after
    u = np.clip(1.0 - c / cw, 0.0, None) if cw > 0 else np.zeros(w)
    fast = c - flyback * cw * u**3 / 3.0
    r = np.arange(h, dtype=np.float64)
    t = r / max(h - 1, 1)
    slow = r + drift * (h - 1) * 0.5 * (t * t - t)  # Y′(r) = 1 + drift·(t − ½)
    shift = shear * t * t
    return fast, slow, shift


def _inverse(values: np.ndarray, grid: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The pixel coordinate where the monotone map ``grid → values`` reaches ``target`` (linear
    interpolation, linear extrapolation beyond the ends)."""
    out = np.interp(target, values, grid)
    lo, hi = target < values[0], target > values[-1]
    out[lo] = grid[0] + (target[lo] - values[0]) / (values[1] - values[0])
    out[hi] = grid[-1] + (target[hi] - values[-1]) / (values[-1] - values[-2])
    return out


def distorted_lattice(
    shape: tuple[int, int] = (256, 256),
    spacing: float = 14.0,
    angle_deg: float = 0.0,
    motif: str = "square",
    sigma: float = 2.2,
    background: float = 0.1,
    flyback: float = 0.4,
    flyback_fraction: float = 0.15,
    drift: float = 0.07,
    shear: float = 3.0,
    layer_strain: float = 0.0,
    layer_start: float = 0.6,
    vacancies: int = 0,
    dose: float | None = 200.0,
    seed: int = 0,
) -> DistortedLattice:
    """Render a lattice as a distorted scan sees it.

    Parameters
    ----------
    shape : (int, int)
        Image size (H, W) in pixels.
    spacing, angle_deg, motif, sigma, background
        The lattice, as :func:`usidgpu.atoms.synthetic.lattice_image` takes them.
    flyback : float
        Extra fast-scan speed at the start of each line (0.4: the first columns look 1/1.4 ≈ 71 %
        as far apart as the rest).
    flyback_fraction : float
        Fraction of the line over which the flyback dies out.
    drift : float
        Change of the row spacing from the top to the bottom of the frame (0.07: ±3.5 %).
    shear : float
        Sideways shift of the last line relative to the first, in pixels.
    layer_strain : float
        Real strain: the specimen right of ``layer_start`` × W is stretched along x by this
        fraction (ε_xx), the rest is not.
    layer_start : float
        Where the stretched layer starts, as a fraction of the width.
    vacancies : int
        Sites left empty (away from the edges).
    dose : float, optional
        Poisson noise at this many counts per unit intensity (None: no noise).
    seed : int

    Returns
    -------
    DistortedLattice
    """
    h, w = (int(s) for s in shape)
    if not 0 < flyback_fraction < 1 or flyback < 0:
        raise InvalidInput(f"flyback_fraction must be in (0, 1) and flyback ≥ 0, got {flyback_fraction}, {flyback}")
    fast, slow, shift = scan_maps((h, w), flyback, flyback_fraction, drift, shear)
    # the specimen region the scan covers, with a margin of two cells, holds the lattice
    pad = int(np.ceil(2 * spacing + abs(shear) + flyback * flyback_fraction * w))
    truth = lattice_image(
        (h + 2 * pad, w + 2 * pad),
        spacing=spacing,
        angle_deg=angle_deg,
        motif=motif,
        sigma=sigma,
        background=0.0,
        vacancies=0,
        dose=None,
        seed=seed,
    )
    spec = truth.ideal - pad
    x0 = layer_start * (w - 1)
    strain = np.where(spec[:, 1] > x0, layer_strain, 0.0)
    spec[:, 1] = np.where(spec[:, 1] > x0, x0 + (spec[:, 1] - x0) * (1 + layer_strain), spec[:, 1])
    rows = _inverse(slow, np.arange(h, dtype=float), spec[:, 0])
    cols = _inverse(fast, np.arange(w, dtype=float), spec[:, 1] - np.interp(rows, np.arange(h), shift))
    pix = np.column_stack([rows, cols])
    inside = (rows > -3 * sigma) & (rows < h - 1 + 3 * sigma) & (cols > -3 * sigma) & (cols < w - 1 + 3 * sigma)
    pix, spec, strain = pix[inside], spec[inside], strain[inside]
    label, amp = truth.sublattice[inside], truth.amplitudes[inside]
    rng = np.random.default_rng(seed + 1)
    cell = 1.5 * spacing
    interior = np.flatnonzero(
        (pix[:, 0] > cell) & (pix[:, 0] < h - 1 - cell) & (pix[:, 1] > cell) & (pix[:, 1] < w - 1 - cell)
    )
    if vacancies > len(interior):
        raise InvalidInput(f"{vacancies} vacancies asked for, only {len(interior)} interior sites")
    empty = rng.choice(interior, size=vacancies, replace=False) if vacancies else np.zeros(0, dtype=int)
    present = np.ones(len(pix), dtype=bool)
    present[empty] = False
    # render on the distorted sampling grid: pixel (r, c) sees the specimen at (Y(r), X(c) + S(r))
    clean = np.full((h, w), float(background))
    reach = int(np.ceil(5 * sigma * max(1.0, 1.0 + flyback))) + 2
    for (pr, pc), (sy, sx), a in zip(pix[present], spec[present], amp[present]):
        r0, r1 = max(int(pr) - reach, 0), min(int(pr) + reach + 1, h)
        c0, c1 = max(int(pc) - reach, 0), min(int(pc) + reach + 1, w)
        if r0 >= r1 or c0 >= c1:
            continue
        dy = slow[r0:r1, None] - sy
        dx = fast[None, c0:c1] + shift[r0:r1, None] - sx
        clean[r0:r1, c0:c1] += a * np.exp(-(dy * dy + dx * dx) / (2 * sigma**2))
    image = clean.copy()
    if dose is not None:
        image = rng.poisson(np.clip(clean, 0, None) * dose).astype(np.float64) / dose
    return DistortedLattice(
        image=image,
        clean=clean,
        positions=pix[present],
        specimen=spec[present],
        sublattice=label[present],
        amplitudes=amp[present],
        vacancies=pix[empty],
        fast=fast,
        slow=slow,
        shift=shift,
        strain=strain[present],
        sigma=float(sigma),
        parameters=dict(
            shape=[h, w],
            spacing=spacing,
            angle_deg=angle_deg,
            motif=motif,
            flyback=flyback,
            flyback_fraction=flyback_fraction,
            drift=drift,
            shear=shear,
            layer_strain=layer_strain,
            layer_start=layer_start,
            vacancies=vacancies,
            dose=dose,
            seed=seed,
        ),
    )
