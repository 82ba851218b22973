"""A per-position spectral fit written as a :class:`~usidgpu.parallel.Process` — the pattern a
scientist follows for their own model: copy what the fit needs from the source in ``__init__``,
say what comes out per position, compute one block."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.errors import InvalidInput
from ..usid.dimension import Dimension
from .process import Output, Process


class PolynomialFit(Process):
    """Least-squares polynomial of degree ``degree`` through every spectrum, against the values
    of the (single) spectroscopic dimension; per position the coefficients (highest power
    first, as :func:`numpy.polyfit`) and the RMS residual.

    Parameters
    ----------
    source : MainDataset
        One spectroscopic dimension (e.g. a bias sweep).
    degree : int
    **run_options
        ``scheduler``, ``workers``, ``device``, ``budget``, ``output``, ``rows_per_block``,
        ``progress`` (see :class:`~usidgpu.parallel.Process`).
    """

    tool = "Polynomial_Fit"

    def __init__(self, source: Any, degree: int = 1, **run_options: Any) -> None:
        super().__init__(source, **run_options)
        if np.dtype(source.dtype).kind not in "biuf":
            raise InvalidInput(f"{source.name}: a polynomial fit needs real data, got {source.dtype}")
        if len(source.spec_dims) != 1:
            raise InvalidInput(f"{source.name}: a polynomial fit needs one spectroscopic dimension")
        self.degree = int(degree)
        if not 0 <= self.degree < source.n_spectral:
            raise InvalidInput(f"degree must be in [0, {source.n_spectral - 1}], got {degree}")
        self.x = np.asarray(source.spec_dims[0].values, dtype=np.float64)
        self.x_name, self.x_units = source.spec_dims[0].name, source.spec_dims[0].units
        self.y_units = source.units

    def parameters(self) -> dict[str, Any]:
        return {"degree": self.degree}

    def outputs(self) -> dict[str, Output]:
        return {
            "Coefficients": Output(
                self.degree + 1,
                "Coefficient",
                "a. u.",
                np.float64,
                [Dimension("Power", "", self.degree - np.arange(self.degree + 1))],
            ),
            "Residual": Output(1, "RMS residual", self.y_units, np.float64, [Dimension("Residual", "", 1)]),
        }

    def compute(self, block: Any, xp: Any) -> dict[str, Any]:
        # one Vandermonde solve for all spectra of the block: a per-position polyfit loop, batched
        x = xp.asarray(self.x)
        vander = xp.stack([x**p for p in range(self.degree, -1, -1)], axis=1)
        coef, *_ = xp.linalg.lstsq(vander, block.astype(np.float64).T, rcond=None)
        resid = block.astype(np.float64) - (vander @ coef).T
        return {"Coefficients": coef.T, "Residual": xp.sqrt((resid**2).mean(axis=1, keepdims=True))}
