"""Result objects of the decompositions, and how they are written as USID results groups.

Every result keeps the dimensions of its source (``pos_dims``, ``spec_dims``, ``quantity``,
``units``) so it can be plotted with units and written next to the source without re-reading
it. Writing goes through :class:`usidgpu.ResultsWriter`: into a sidecar file first, attached to
the source file (or ``output``) in one short step.

Group layouts follow pycroscopy, so its users find what they expect:

``<Source>-SVD_NNN``
    ``U`` (Main: positions × "Principal Component"), ``S`` (plain vector), ``V`` (Main:
    "Principal Component" × spectroscopic points).
``<Source>-PCA_NNN``
    as SVD, plus ``Mean`` (plain vector) and ``Explained_Variance_Ratio`` (plain vector).
``<Source>-NMF_NNN``
    ``Projection`` (Main: positions × "Component"), ``Components`` (Main: "Component" ×
    spectroscopic points).
``<Source>-KMeans_NNN``
    ``Labels`` (Main: positions × 1, uint32, "Cluster ID"), ``Mean_Response`` (Main: "Cluster"
    × spectroscopic points), ``Centroids`` (plain: clusters × features clustered on).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..usid.described import Described


@dataclass
class SVDResult(Described):
    """Truncated SVD ``X ≈ U · diag(S) · V``.

    Attributes
    ----------
    U : ndarray, (n_positions, k)
        Left singular vectors (abundance maps), orthonormal columns.
    S : ndarray, (k,)
        Singular values, descending.
    V : ndarray, (k, n_spectral)
        Right singular vectors as rows (spectral components), like pycroscopy's ``V`` and
        scikit-learn's ``components_``.
    method : str
        ``gram``, ``randomized`` or ``exact``: what ran (``auto`` resolves to one of them).
    total_energy : float
        ‖X‖²_F, so ``S**2 / total_energy`` is the fraction of the signal each component holds.
    """

    U: np.ndarray = None
    S: np.ndarray = None
    V: np.ndarray = None
    method: str = ""
    total_energy: float = float("nan")

    tool = "SVD"

    @property
    def k(self) -> int:
        return int(self.S.size)

    @property
    def energy_ratio(self) -> np.ndarray:
        """Fraction of ‖X‖²_F in each component."""
        return self.S.astype(np.float64) ** 2 / self.total_energy

    def write(self, main: Any = None, output: str | os.PathLike | None = None) -> str:
        """Write as ``<Source>-SVD_NNN`` next to ``main`` (default: the source); returns the group path."""
        from .write import write_svd

        return write_svd(self, main, output)

    def visualize(self, **kw: Any) -> Any:
        """Interactive viewer (ipywidgets): component slider, map, loading, scree.

        See :class:`usidgpu.viz.results_viewer.SVDViewer` for the keyword arguments.
        """
        from ..viz.results_viewer import SVDViewer

        return SVDViewer(self, **kw)


@dataclass
class PCAResult(SVDResult):
    """PCA: the SVD of the centred data (``U · diag(S) · V`` approximates ``X − mean``).

    Attributes
    ----------
    mean : ndarray, (n_spectral,)
    explained_variance : ndarray, (k,)
        ``S² / (n_positions − 1)``, as scikit-learn's ``explained_variance_``.
    explained_variance_ratio : ndarray, (k,)
        Fraction of the total variance, as scikit-learn's ``explained_variance_ratio_``.
    """

    mean: np.ndarray = None
    explained_variance: np.ndarray = None
    explained_variance_ratio: np.ndarray = None

    tool = "PCA"

    @property
    def scores(self) -> np.ndarray:
        """Projections of the centred data on the components, ``U · diag(S)``."""
        return self.U * self.S


@dataclass
class NMFResult(Described):
    """Non-negative matrix factorization ``X ≈ W · H``.

    Attributes
    ----------
    W : ndarray, (n_positions, k)
        Abundances (pycroscopy's ``Projection``).
    H : ndarray, (k, n_spectral)
        Components (pycroscopy's ``Components``).
    reconstruction_err : float
        ‖X − WH‖_F after the last iteration, as scikit-learn's ``reconstruction_err_``.
    n_iter : int
    errors : ndarray
        ‖X − WH‖_F after each iteration.
    """

    W: np.ndarray = None
    H: np.ndarray = None
    reconstruction_err: float = float("nan")
    n_iter: int = 0
    errors: np.ndarray = None

    tool = "NMF"

    @property
    def k(self) -> int:
        return int(self.H.shape[0])

    def write(self, main: Any = None, output: str | os.PathLike | None = None) -> str:
        """Write as ``<Source>-NMF_NNN``; returns the group path."""
        from .write import write_nmf

        return write_nmf(self, main, output)

    def visualize(self, **kw: Any) -> Any:
        """Interactive viewer (ipywidgets): component slider, abundance map and component.

        See :class:`usidgpu.viz.results_viewer.SVDViewer` for the keyword arguments.
        """
        from ..viz.results_viewer import SVDViewer

        return SVDViewer(self, **kw)


@dataclass
class KMeansResult(Described):
    """k-means clustering of the positions.

    Attributes
    ----------
    labels : ndarray of uint32, (n_positions,)
    centroids : ndarray, (k, n_features)
        Cluster centres in the space clustered on (raw spectra or SVD scores).
    mean_response : ndarray, (k, n_spectral)
        Mean spectrum of each cluster (equals ``centroids`` when clustering raw spectra).
    counts : ndarray, (k,)
        Positions per cluster.
    inertia : float
        Sum of squared distances to the nearest centroid, as scikit-learn's ``inertia_``.
    n_iter : int
    features : str
        ``raw`` or ``svd``.
    """

    labels: np.ndarray = None
    centroids: np.ndarray = None
    mean_response: np.ndarray = None
    counts: np.ndarray = None
    inertia: float = float("nan")
    n_iter: int = 0
    features: str = "raw"

    tool = "KMeans"

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def write(self, main: Any = None, output: str | os.PathLike | None = None) -> str:
        """Write as ``<Source>-KMeans_NNN``; returns the group path."""
        from .write import write_kmeans

        return write_kmeans(self, main, output)

    def visualize(self, **kw: Any) -> Any:
        """Interactive viewer (ipywidgets): label map, a cluster picker, mean responses.

        See :class:`usidgpu.viz.results_viewer.ClusterViewer` for the keyword arguments.
        """
        from ..viz.results_viewer import ClusterViewer

        return ClusterViewer(self, **kw)
