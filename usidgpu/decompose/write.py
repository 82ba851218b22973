"""Writing decomposition results as USID results groups (layouts: see :mod:`.results`)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..core.errors import InvalidInput
from ..usid.dimension import Dimension
from ..usid.results import ResultsWriter, result_source, write_result


def _check_shape(main: Any, rows: int | None, cols: int | None, what: str) -> None:
    """The result must belong to ``main``: one row per position, one column per point."""
    if rows is not None and rows != main.n_positions:
        raise InvalidInput(f"{what} has {rows} rows but {main.name} has {main.n_positions} positions")
    if cols is not None and cols != main.n_spectral:
        raise InvalidInput(f"{what} has {cols} columns but {main.name} has {main.n_spectral} spectroscopic points")


def write_svd(result: Any, main: Any = None, output: str | os.PathLike | None = None) -> str:
    """``<Source>-SVD_NNN`` (or ``-PCA_NNN``): ``U``, ``S``, ``V`` (+ ``Mean``, explained variance)."""
    main = result_source(result, main)
    _check_shape(main, result.U.shape[0], result.V.shape[1], "this decomposition")
    comp = Dimension("Principal Component", "a. u.", result.k)

    def fill(w: ResultsWriter) -> None:
        w.write_main("U", result.U, "Abundance", "a.u.", main, [comp])
        w.group.create_dataset("S", data=result.S)
        w.write_main("V", result.V, main.quantity, main.units, [comp], main)
        if hasattr(result, "explained_variance_ratio"):
            w.group.create_dataset("Mean", data=result.mean)
            w.group.create_dataset("Explained_Variance", data=result.explained_variance)
            w.group.create_dataset("Explained_Variance_Ratio", data=result.explained_variance_ratio)
        w.group.attrs["total_energy"] = result.total_energy

    return write_result(result, main, output, fill, conditions=svd_conditions(result.parameters))


def svd_conditions(parameters: dict[str, Any]) -> tuple[str, ...]:
    """The SVD parameters the machine decided when ``auto`` picked the method from the memory
    budget: the method and why (the reason quotes the budget). Recorded, but not part of the run's
    identity: a rerun with other free memory is the same run. A requested method is identity."""
    reason = str(parameters.get("method_reason", ""))
    return () if reason.endswith(": requested") else ("method_reason", "svd_method")


def write_nmf(result: Any, main: Any = None, output: str | os.PathLike | None = None) -> str:
    """``<Source>-NMF_NNN``: ``Projection`` (W) and ``Components`` (H)."""
    main = result_source(result, main)
    _check_shape(main, result.W.shape[0], result.H.shape[1], "this factorization")
    comp = Dimension("Component", "a. u.", result.k)

    def fill(w: ResultsWriter) -> None:
        w.write_main("Projection", result.W, "Abundance", "a.u.", main, [comp])
        w.write_main("Components", result.H, main.quantity, main.units, [comp], main)
        w.group.create_dataset("Reconstruction_Error", data=np.asarray(result.errors, dtype=np.float64))
        w.group.attrs["reconstruction_err"] = result.reconstruction_err
        w.group.attrs["n_iter"] = result.n_iter

    return write_result(result, main, output, fill)


def write_kmeans(result: Any, main: Any = None, output: str | os.PathLike | None = None) -> str:
    """``<Source>-KMeans_NNN``: ``Labels``, ``Mean_Response``, ``Centroids``, ``Counts``."""
    main = result_source(result, main)
    _check_shape(main, result.labels.shape[0], result.mean_response.shape[1], "this clustering")

    def fill(w: ResultsWriter) -> None:
        w.write_main(
            "Labels",
            result.labels.reshape(-1, 1).astype(np.uint32),
            "Cluster ID",
            "a. u.",
            main,
            [Dimension("Label", "a. u.", 1)],
            aux_spec_prefix="Label_Spectroscopic_",
        )
        w.write_main(
            "Mean_Response",
            result.mean_response,
            main.quantity,
            main.units,
            [Dimension("Cluster", "a. u.", result.k)],
            main,
            aux_pos_prefix="Cluster_",
        )
        w.group.create_dataset("Centroids", data=result.centroids)
        w.group.create_dataset("Counts", data=np.asarray(result.counts, dtype=np.int64))
        w.group.attrs["inertia"] = result.inertia
        w.group.attrs["n_iter"] = result.n_iter

    return write_result(result, main, output, fill)
