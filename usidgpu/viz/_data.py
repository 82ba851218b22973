"""What to plot from a result: arrays on the host, labels with units, panel counts.

The decomposition results are recognised by what they hold (``U``/``S``/``V``, ``W``/``H``,
``labels``/``mean_response``) so that this package depends on nothing but their attributes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import InvalidInput, InvalidType

ARBITRARY = "a. u."
DEFAULT_PANELS = 9


def to_numpy(a) -> np.ndarray | None:
    """``a`` as a NumPy array (CuPy arrays are copied to the host); ``None`` stays ``None``."""
    if a is None:
        return None
    if type(a).__module__.split(".")[0] == "cupy" and hasattr(a, "get"):
        a = a.get()
    return np.asarray(a)


def as_float(a) -> np.ndarray:
    """``a`` on the host as float64, or complex128 when complex (integers and bools included)."""
    a = to_numpy(a)
    if np.iscomplexobj(a):
        return a.astype(np.complex128)
    return a.astype(np.float64)


def axis_label(name: str, units: str) -> str:
    """``"Bias (V)"``; just the name when there are no units."""
    units = (units or "").strip()
    return f"{name} ({units})" if units else name


def wrap_label(text: str, width: int = 24) -> str:
    """Break a long axis label onto two lines at the space nearest its middle (never inside ``$…$``)."""
    if len(text) <= width or "\n" in text:
        return text
    spaces = [i for i, ch in enumerate(text) if ch == " " and text[:i].count("$") % 2 == 0]
    if not spaces:
        return text
    cut = min(spaces, key=lambda i: abs(i - len(text) / 2))
    return text[:cut] + "\n" + text[cut + 1 :]


#: units shown with an SI prefix when their values are far from 1 (X in m, 0 … 5e-9 → nm)
SI_UNITS = frozenset({"m", "s", "V", "A", "Hz", "N", "F", "T", "W", "Pa", "C", "Ω", "S", "J", "eV"})
SI_PREFIXES = {-15: "f", -12: "p", -9: "n", -6: "µ", -3: "m", 3: "k", 6: "M", 9: "G", 12: "T"}


def si_scaled(values: np.ndarray, units: str) -> tuple[np.ndarray, str]:
    """``values`` and ``units`` rescaled to an SI prefix (e.g. m → nm) when the units are a bare SI unit.

    Values whose largest magnitude lies in [0.01, 10 000) and units that are not a bare SI unit
    are returned unchanged.
    """
    units = (units or "").strip()
    finite = np.abs(values[np.isfinite(values)])
    if units not in SI_UNITS or finite.size == 0 or finite.max() == 0:
        return values, units
    top = float(finite.max())
    if 1e-2 <= top < 1e4:
        return values, units
    exp = int(np.clip(np.floor(np.log10(top) / 3) * 3, -15, 12))
    return values / 10.0**exp, SI_PREFIXES[exp] + units


def kind_of(result) -> str:
    """``"svd"``, ``"pca"``, ``"nmf"`` or ``"kmeans"``.

    Raises
    ------
    TypeError
        When ``result`` is none of the decomposition results.
    """
    if getattr(result, "mean_response", None) is not None or getattr(result, "labels", None) is not None:
        return "kmeans"
    if getattr(result, "W", None) is not None and getattr(result, "H", None) is not None:
        return "nmf"
    if getattr(result, "V", None) is not None and getattr(result, "S", None) is not None:
        return "pca" if getattr(result, "explained_variance_ratio", None) is not None else "svd"
    raise InvalidType(
        f"cannot plot a {type(result).__name__}: expected an SVDResult, PCAResult, NMFResult or KMeansResult"
    )


def tool_name(result) -> str:
    return {"svd": "SVD", "pca": "PCA", "nmf": "NMF", "kmeans": "k-means"}[kind_of(result)]


def data_label(result) -> str:
    """The source's quantity with its units, e.g. ``"Current (nA)"``."""
    return axis_label(getattr(result, "quantity", "Data") or "Data", getattr(result, "units", ARBITRARY))


def n_panels(n: int | None, k: int) -> int:
    """How many components to draw: ``n`` capped at ``k``, by default ``min(k, 9)``."""
    if n is None:
        return max(1, min(k, DEFAULT_PANELS))
    n = int(n)
    if n < 1:
        raise InvalidInput(f"n must be at least 1, got {n}")
    return max(1, min(n, k))


def energy_fractions(result) -> np.ndarray:
    """Fraction of the energy (SVD) or variance (PCA) per component, NaN where unknown."""
    if kind_of(result) == "pca":
        return as_float(result.explained_variance_ratio).real.ravel()
    s = as_float(result.S).real.ravel()
    total = float(getattr(result, "total_energy", float("nan")))
    if not np.isfinite(total) or total <= 0:
        return np.full(s.shape, np.nan)
    return s**2 / total


@dataclass
class Series:
    """Rows (or columns) of a result to draw, one per component, with their labels.

    Attributes
    ----------
    values : ndarray, (k, n_points)
        One row per component, float64 or complex128.
    titles : list of str
        Panel title of each component.
    name, units : str
        What the values are, for the axis or colour-bar label.
    """

    values: np.ndarray
    titles: list
    name: str
    units: str

    @property
    def k(self) -> int:
        return int(self.values.shape[0])

    @property
    def label(self) -> str:
        return axis_label(self.name, self.units)


def spectral_series(result) -> Series:
    """The spectral components: rows of ``V`` (SVD/PCA), ``H`` (NMF) or ``mean_response`` (k-means)."""
    kind = kind_of(result)
    quantity = getattr(result, "quantity", "Data") or "Data"
    if kind in ("svd", "pca"):
        values = as_float(result.V)
        frac = energy_fractions(result)
        titles = []
        for j in range(values.shape[0]):
            share = f" ({100 * frac[j]:.3g} %)" if j < frac.size and np.isfinite(frac[j]) else ""
            titles.append(f"Component {j + 1}{share}")
        return Series(np.atleast_2d(values), titles, f"{quantity} loading", ARBITRARY)
    if kind == "nmf":
        values = np.atleast_2d(as_float(result.H))
        return Series(values, [f"Component {j + 1}" for j in range(values.shape[0])], quantity, ARBITRARY)
    values = np.atleast_2d(as_float(result.mean_response))
    return Series(values, cluster_titles(result, values.shape[0]), quantity, getattr(result, "units", ARBITRARY))


def cluster_titles(result, k: int) -> list:
    counts = to_numpy(getattr(result, "counts", None))
    titles = []
    for j in range(k):
        n = f" (n = {int(counts[j])})" if counts is not None and j < counts.size else ""
        titles.append(f"Cluster {j}{n}")
    return titles


def position_series(result, scores: bool = False) -> Series:
    """The maps, one row per component: columns of ``U`` (or ``U·S``) or of ``W``.

    Raises
    ------
    TypeError
        For a k-means result (its map is the label map, see :func:`plot_clusters`).
    """
    kind = kind_of(result)
    if kind in ("svd", "pca"):
        u = np.atleast_2d(as_float(result.U).reshape(np.shape(result.U)[0], -1))
        if scores:
            s = as_float(result.S).ravel()
            u = u * s[None, : u.shape[1]]
            quantity = getattr(result, "quantity", "Data") or "Data"
            name, units = f"{quantity} score", getattr(result, "units", ARBITRARY)
        else:
            name, units = "Abundance", ARBITRARY
        titles = [f"Component {j + 1}" for j in range(u.shape[1])]
        return Series(u.T, titles, name, units)
    if kind == "nmf":
        w = as_float(result.W)
        w = w.reshape(w.shape[0], -1)
        return Series(w.T, [f"Component {j + 1}" for j in range(w.shape[1])], "Abundance", ARBITRARY)
    raise InvalidType("a k-means result has a label map, not component maps: use plot_clusters")


def cluster_labels(result) -> np.ndarray:
    """The label of every position as float64 (NaN stays NaN)."""
    return as_float(result.labels).real.ravel()


def n_clusters(result) -> int:
    for name in ("mean_response", "centroids", "counts"):
        a = getattr(result, name, None)
        if a is not None:
            return int(np.shape(a)[0])
    labels = cluster_labels(result)
    finite = labels[np.isfinite(labels)]
    return int(finite.max()) + 1 if finite.size else 1
