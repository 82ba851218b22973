"""The whole column analysis of one image: find → refine → lattice → sublattices → vacancies →
displacements, as one result that tabulates, exports to CSV and writes as a USID group."""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.device import Device, select_device
from ..core.errors import InvalidInput
from .evidence import EVIDENCE
from .find import FoundColumns, NoColumnsError, find_columns
from .fit import ColumnFit, refine
from .gaussian import PARAMETERS
from .lattice import Lattice, StrainMap, Vacancies, lattice_fit, strain_map
from .scan_distortion import ScanDistortion
from .sites import analyze_sites
from .track import Tracks, link

#: Ashman's D above which the fitted amplitudes count as two populations (``n_sublattices="auto"``).
#: Two halves of one normal distribution give D ≈ 2.7; well separated A/B columns give D ≫ 4.
BIMODAL_D = 4.0
#: ... and the two populations' means must differ by this fraction of the brighter one: D is
#: scale-free, so identical noise-free columns that differ by rounding alone would pass it.
MIN_CONTRAST = 0.1
#: ... and the groups must interpenetrate (see :func:`choose_sublattices`): a perovskite's A/B
#: columns have ~50–100 % neighbours of the other kind, two regions of a gradient a few percent.
MIN_MIXING = 0.25


@dataclass
class ColumnAnalysis:
    """Columns of one image: positions, fits, lattice, sublattices, vacancies, displacements.

    Positions are (y, x) = (row, col) in pixels; ``pixel_size`` and ``units`` (from a USID
    source's position dimensions, else 1 px) convert them.
    """

    found: FoundColumns
    fit: ColumnFit
    sublattice: np.ndarray  #: (N,) label per column, 0 = brightest
    sublattice_rule: str
    lattice: Lattice | None  #: fitted on the columns with the cell of sublattice 0
    vacancies: Vacancies | None
    displacement: np.ndarray  #: (N, 2) (dy, dx) from the ideal lattice site, px (NaN without a lattice)
    image_shape: tuple[int, int]
    device: str = "cpu"
    pixel_size: tuple[float, float] = (1.0, 1.0)
    units: str = "px"
    source: Any = None
    frame: int = 0
    timings: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    tool: str = "Atomic_Columns"
    #: the scan's fitted distortion (None: not fitted); the lattice, displacements and strain are
    #: then measured on the specimen, at :attr:`specimen_positions`
    distortion: ScanDistortion | None = None

    @property
    def positions(self) -> np.ndarray:
        """(N, 2) refined (y, x) in pixels."""
        return self.fit.positions

    @property
    def specimen_positions(self) -> np.ndarray:
        """(N, 2) the columns mapped to the specimen by :attr:`distortion` (the positions without one)."""
        return self.positions if self.distortion is None else self.distortion.correct(self.positions)

    @property
    def n_columns(self) -> int:
        return len(self.fit)

    def __len__(self) -> int:
        return self.n_columns

    def table(self) -> dict[str, np.ndarray]:
        """One row per column: id, refined fit and its errors, start position, sublattice, cell
        indices (i, j, motif site; −1 without a lattice) and displacement."""
        n = self.n_columns
        out: dict[str, np.ndarray] = {"column": np.arange(n)}
        out.update(self.fit.table())
        out["y_start"], out["x_start"] = self.found.positions[:, 0], self.found.positions[:, 1]
        out["sublattice"] = self.sublattice
        if self.lattice is not None and len(self.lattice.indices) == n:
            idx = self.lattice.indices
        else:
            idx = np.full((n, 3), -1, dtype=np.int64)
        out["cell_i"], out["cell_j"], out["site"] = idx[:, 0], idx[:, 1], idx[:, 2]
        out["dy"], out["dx"] = self.displacement[:, 0], self.displacement[:, 1]
        specimen = self.specimen_positions if n else np.zeros((0, 2))
        out["y_specimen"], out["x_specimen"] = specimen[:, 0], specimen[:, 1]
        return out

    def to_csv(self, path: str | os.PathLike) -> str:
        """Write :meth:`table` as CSV: a header row of names, then one row per column; positions
        and widths in pixels of the image (multiply by :attr:`pixel_size` for physical units)."""
        return _write_csv(self.table(), path)

    def strain(self, reference: Any = None, neighbours: int = 8) -> StrainMap:
        """Local strain and rotation of the columns, per column and as maps on the image grid
        (:func:`~usidgpu.atoms.lattice.strain_map`).

        Parameters
        ----------
        reference : Lattice, or a boolean mask or integer indices of columns, optional
            The unstrained lattice. Default: the lattice fitted on all columns, so the strain is
            relative to their mean cell (a uniform strain reads as zero). Columns (a mask of
            dtype bool, one entry per column, or indices as NumPy reads them): a lattice fitted
            on those columns alone — a reference region such as the substrate — with the cell
            of the fitted lattice.
        neighbours : int
            Neighbours per column in the local fit (default 8).

        Returns
        -------
        StrainMap
            Strains dimensionless, rotation in radians; maps of the image's shape.

        Raises
        ------
        ValueError
            No lattice was fitted (too few columns), a reference of the wrong kind, or reference
            columns that do not hold a lattice.
        """
        if self.lattice is None:
            raise InvalidInput("no lattice was fitted to these columns: no strain without a reference lattice")
        if reference is None:
            lattice, words = self.lattice, "the lattice fitted on all columns"
        elif isinstance(reference, Lattice):
            lattice, words = reference, "a given reference lattice"
        else:
            chosen = np.asarray(reference)
            if chosen.dtype == bool:
                if chosen.shape != (len(self),):
                    raise InvalidInput(
                        f"a reference mask needs one entry per column ({len(self)}), got shape {chosen.shape}"
                    )
            elif chosen.size == 0 or chosen.ndim != 1 or not np.issubdtype(chosen.dtype, np.integer):
                raise InvalidInput(
                    "reference must be a Lattice, a boolean mask of the columns or their integer indices, "
                    f"got {chosen.dtype} of shape {chosen.shape}"
                )
            elif chosen.min() < -len(self) or chosen.max() >= len(self):
                raise InvalidInput(
                    f"reference indices must lie in [0, {len(self)}), got {chosen.min()} … {chosen.max()}"
                )
            try:
                lattice = lattice_fit(self.specimen_positions[chosen], vectors=self.lattice.vectors)
            except ValueError as exc:
                raise InvalidInput(f"the reference columns hold no lattice: {exc}") from None
            words = f"the lattice of {len(self.positions[chosen])} reference columns"
        # measured on the specimen (scan distortion corrected), drawn where the columns are in the image
        strain = strain_map(self.specimen_positions, lattice, self.image_shape, neighbours, at=self.positions)
        strain.reference = words
        return strain

    def write(self, main: Any = None, output: str | os.PathLike | None = None) -> str:
        """Write as ``<Source>-Atomic_Columns_NNN`` next to ``main`` (default: the source dataset)."""
        from .write import write_columns

        return write_columns(self, main, output)

    def visualize(self, image: Any = None, **kw: Any) -> Any:
        """Interactive viewer (ipywidgets): the column overlay, a column picker with its fit.

        ``image`` is the analyzed image (default: the source dataset). See
        :class:`usidgpu.viz.results_viewer.ColumnsViewer` for the keyword arguments.
        """
        from ..viz.results_viewer import ColumnsViewer

        return ColumnsViewer(self, image, **kw)


def _write_csv(table: dict[str, np.ndarray], path: str | os.PathLike) -> str:
    names = list(table)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        for row in zip(*(table[k] for k in names)):
            writer.writerow([_csv_value(v) for v in row])
    return str(path)


def _csv_value(v: Any) -> Any:
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6g}"
    return v


def _empty_analysis(image: np.ndarray, dev: Any, spacing: float | None) -> ColumnAnalysis:
    """The analysis of a frame with no columns: empty tables, no lattice."""
    found = FoundColumns(np.zeros((0, 2)), np.zeros((0, 2), int), np.zeros(0), float(spacing or 0.0))
    fit = refine(image, np.zeros((0, 2)), device=dev)
    return ColumnAnalysis(
        found=found,
        fit=fit,
        sublattice=np.zeros(0, dtype=np.int64),
        sublattice_rule="no columns in this frame",
        lattice=None,
        vacancies=None,
        displacement=np.zeros((0, 2)),
        image_shape=tuple(image.shape),
        device=dev.kind,
        parameters=dict(n_sublattices=0, no_columns=True),
    )


def choose_sublattices(amplitudes: np.ndarray, positions: np.ndarray | None = None) -> tuple[int, str]:
    """Two sublattices when the fitted amplitudes are bimodal — Ashman's D of a 1-D 2-means split
    above :data:`BIMODAL_D` and a contrast between the two means of at least :data:`MIN_CONTRAST`
    of the brighter — and, given the positions, the two groups interpenetrate: on average at
    least :data:`MIN_MIXING` of a column's 4 nearest neighbours are of the other group. Else one.
    Returns the number and the reason.

    The mixing test tells sublattices (A/B sites alternate) from a brightness gradient across
    the field of view (thickness, a scan artefact), which splits the columns into a bright
    region and a dim one."""
    a = np.asarray(amplitudes, dtype=np.float64)
    if len(a) < 8:
        return 1, "1: fewer than 8 columns"
    threshold = np.median(a)
    for _ in range(50):  # 1-D 2-means (Lloyd) from the median split
        low, high = a[a < threshold], a[a >= threshold]
        if len(low) == 0 or len(high) == 0:
            return 1, "1: all amplitudes equal"
        new = 0.5 * (low.mean() + high.mean())
        if new == threshold:
            break
        threshold = new
    spread = np.sqrt(low.var() + high.var())
    d = np.sqrt(2) * abs(high.mean() - low.mean()) / spread if spread > 0 else np.inf
    contrast = abs(high.mean() - low.mean()) / max(abs(high.mean()), 1e-300)
    if d > BIMODAL_D and contrast >= MIN_CONTRAST:
        mixing = _mixing(a >= threshold, positions) if positions is not None and len(a) > 4 else None
        if mixing is not None and mixing < MIN_MIXING:
            return 1, (
                f"1: amplitudes are bimodal (Ashman's D = {d:.1f}) but the groups lie apart (neighbours of the other "
                f"group {mixing:.0%} < {MIN_MIXING:.0%}): a brightness gradient, not sublattices"
            )
        mixed = f", neighbours of the other group {mixing:.0%}" if mixing is not None else ""
        return 2, (
            f"2: fitted amplitudes are bimodal (Ashman's D = {d:.1f} > {BIMODAL_D:g}, contrast {contrast:.0%}{mixed})"
        )
    if d > BIMODAL_D:
        return 1, f"1: amplitude groups differ by {contrast:.1%} only (< {MIN_CONTRAST:.0%}, Ashman's D = {d:.1f})"
    return 1, f"1: fitted amplitudes are unimodal (Ashman's D = {d:.1f} ≤ {BIMODAL_D:g})"


def _mixing(group: np.ndarray, positions: np.ndarray) -> float:
    """Mean fraction of each column's 4 nearest neighbours that belong to the other group."""
    from scipy.spatial import cKDTree

    _, idx = cKDTree(positions).query(positions, k=5)
    return float(np.mean(group[idx[:, 1:]] != group[:, None]))


def _image_of(data: Any, frame: int | None) -> tuple[np.ndarray, dict[str, Any]]:
    """One image from an array, a stack or a Main dataset, and its pixel size and units."""
    from ..usid.frames import frames_of

    frames, info = frames_of(data)
    n = frames.shape[0]
    if frame is None:
        if n > 1:
            raise InvalidInput(f"{n} frames: choose one with frame=…, or link all of them with usidgpu.atoms.track")
        frame = 0
    if not -n <= frame < n:
        raise InvalidInput(f"frame {frame} does not exist ({n} frame(s))")
    meta = dict(_pixel_meta(info), frame=frame % n)
    return np.asarray(frames[frame], dtype=np.float64), meta


def _pixel_meta(info: dict[str, Any]) -> dict[str, Any]:
    """Pixel size, units and source of images described by ``frames_of``'s info (1 px without dims)."""
    meta: dict[str, Any] = {"source": info.get("source"), "pixel_size": (1.0, 1.0), "units": "px"}
    meta["row_dim"], meta["col_dim"] = "y", "x"
    dims = info.get("pos_dims")
    if dims:
        # positions are (row, column) of the image as stored: rows = the slower position dimension,
        # which a file may call X; say which is which rather than guess from the names
        meta["row_dim"], meta["col_dim"] = dims[0].name, dims[1].name
        steps = []
        for d in dims:
            values = np.asarray(d.values, dtype=np.float64)[:2]
            finite = len(values) > 1 and bool(np.isfinite(values).all())
            steps.append(float(values[1] - values[0]) if finite else float("nan"))
        units = {d.units for d in dims}
        if all(np.isfinite(steps)):
            meta["pixel_size"] = (abs(steps[0]) or 1.0, abs(steps[1]) or 1.0)
            meta["units"] = (units.pop() or "px") if len(units) == 1 else "px"
        # else: position values that give no step (one value, NaN, inf): lengths stay in pixels
    return meta


def analyze(
    image: Any,
    spacing: float | None = None,
    threshold: float = 0.25,
    radius: float | None = None,
    n_sublattices: int | str = "auto",
    frame: int | None = None,
    device: str | Device | None = None,
    engine: str = "auto",
    vacancy_tolerance: float = 0.3,
    precision: str = "auto",
    scan_distortion: bool = True,
    vacancy_evidence: float = EVIDENCE,
    neighbours: str = "subtract",
    dim_columns: bool = False,
) -> ColumnAnalysis:
    """Find, refine and describe the atomic columns of an image.

    Parameters
    ----------
    image : 2-D array, (frames, H, W) stack, or MainDataset
        Bright columns on a dark background (HAADF-like).
    spacing : float, optional
        Nearest-neighbour column distance in px (default: from the image's autocorrelation).
    threshold : float
        Column prominence threshold of :func:`~usidgpu.atoms.find.find_columns`.
    radius : float, optional
        Fit-disk radius of :func:`~usidgpu.atoms.fit.refine` (default: half the spacing).
    dim_columns : bool
        Search the image minus the fitted columns for a dim sublattice the first pass missed
        (:func:`~usidgpu.atoms.find.find_columns` ``second_pass``). Off by default: on synthetic
        two-sublattice images it finds every dim column, but on the real Gatan survey image the
        scan's noise (which the shot-noise model does not know) gives false columns.
    n_sublattices : int or "auto"
        Sublattices to separate by intensity and site; ``"auto"`` decides between 1 and 2 by
        :func:`choose_sublattices`.
    frame : int, optional
        Which frame of a stack or multi-frame dataset (required when there are several).
    device : {"auto", "cpu", "gpu"}, optional
    engine : str
        Fit engine (see :func:`~usidgpu.atoms.fit.refine`).
    vacancy_tolerance : float
        A lattice site is empty when no column lies within this fraction of the smallest site
        separation (measured on the specimen).
    precision : {"auto", "float64", "float32"}
        Arithmetic of the GPU fit kernel (see :func:`~usidgpu.atoms.fit.refine`).
    scan_distortion : bool
        Fit the scan's fast- and slow-scan distortion (flyback, drift) and measure the lattice,
        vacancies, displacements and strain on the specimen
        (:mod:`usidgpu.atoms.scan_distortion`, which says what the model cannot tell from strain);
        False: against one affine lattice on the image.
    vacancy_evidence : float
        An empty site is a vacancy only when the image shows no column there: a matched filter's
        amplitude below this fraction of the local column amplitude (:mod:`usidgpu.atoms.evidence`;
        0: the positions alone decide).
    neighbours : {"subtract", "auto", "joint", "none"}
        Fit each column on the image minus its neighbours' models (default); that, then all columns
        jointly where they overlap strongly (``"auto"``); always jointly; or each column alone (see
        :func:`~usidgpu.atoms.fit.refine`). The joint fit gives every column of a kind one shape:
        not the default, because on real scans the shapes vary — on the shipped DM3 survey, whose
        flyback compresses the first columns of every line, it moved the 99th percentile of |strain|
        from under 3 % to 9.7 %, and on the simulated STEM image it changed the sublattice split.

    Returns
    -------
    ColumnAnalysis
    """
    dev = select_device(device)
    img, meta = _image_of(image, frame)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    found = find_columns(img, spacing=spacing, threshold=threshold, second_pass=dim_columns)
    timings["find_s"] = time.perf_counter() - t0
    if len(found) < 2:
        raise NoColumnsError(f"found {len(found)} column(s): not an atomic-resolution image, or give spacing/threshold")
    t0 = time.perf_counter()
    fit = refine(img, found, radius=radius, device=dev, engine=engine, precision=precision, neighbours=neighbours)
    timings["refine_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    amplitudes = fit.params[:, PARAMETERS.index("amplitude")]
    if n_sublattices == "auto":
        n_sub, rule = choose_sublattices(amplitudes, fit.positions)
    else:
        n_sub, rule = int(n_sublattices), f"{int(n_sublattices)}: given"
    labels = np.zeros(len(fit), dtype=np.int64)
    lattice: Lattice | None = None
    vacancies: Vacancies | None = None
    distortion: ScanDistortion | None = None
    distortion_note = "" if scan_distortion else "not asked for"
    shift = np.full((len(fit), 2), np.nan)
    if len(fit) >= 8:
        try:
            sites = analyze_sites(img, fit.params, n_sub, vacancy_tolerance, scan_distortion, vacancy_evidence)
        except ValueError as exc:  # too few or disordered columns for a lattice: keep the fits
            rule += f"; no lattice ({exc})"
        else:
            labels, lattice, vacancies, shift = sites.labels, sites.lattice, sites.vacancies, sites.displacement
            distortion, distortion_note = sites.distortion, sites.note
    timings["lattice_s"] = time.perf_counter() - t0
    return ColumnAnalysis(
        found=found,
        fit=fit,
        sublattice=labels,
        sublattice_rule=rule,
        lattice=lattice,
        vacancies=vacancies,
        displacement=shift,
        image_shape=tuple(img.shape),
        device=dev.kind,
        pixel_size=meta["pixel_size"],
        units=meta["units"],
        source=meta["source"],
        frame=meta["frame"],
        timings=timings,
        distortion=distortion,
        parameters=dict(
            spacing=found.spacing,
            threshold=threshold,
            radius=fit.radius,
            n_sublattices=n_sub,
            sublattice_rule=rule,
            vacancy_tolerance=vacancy_tolerance,
            scan_distortion=bool(scan_distortion),
            scan_distortion_note=distortion_note,
            vacancy_evidence=vacancy_evidence,
            engine=fit.engine,
            frame=meta["frame"],
            row_dim=meta["row_dim"],
            col_dim=meta["col_dim"],
        ),
    )


@dataclass
class StackAnalysis:
    """Columns of every frame of an image stack, linked into trajectories."""

    frames: list[ColumnAnalysis]  #: per frame, as :func:`analyze` gives it
    tracks: Tracks  #: links of the refined positions (``tracks.ids[f]`` aligns with frame f's columns)
    source: Any = None
    device: str = "cpu"
    parameters: dict = field(default_factory=dict)
    tool: str = "Atomic_Columns"

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.frames[0].image_shape

    def table(self) -> dict[str, np.ndarray]:
        """One row per column per frame: ``frame`` and ``track_id``, then :meth:`ColumnAnalysis.table`."""
        parts = [f.table() for f in self.frames]
        out: dict[str, np.ndarray] = {
            "frame": np.concatenate([np.full(len(f), i, dtype=np.int64) for i, f in enumerate(self.frames)]),
            "track_id": np.concatenate([np.asarray(ids, dtype=np.int64) for ids in self.tracks.ids]),
        }
        for name in parts[0]:
            out[name] = np.concatenate([p[name] for p in parts])
        return out

    def to_csv(self, path: str | os.PathLike) -> str:
        """Write :meth:`table` as CSV (a header row of names, one row per column per frame)."""
        return _write_csv(self.table(), path)

    def write(self, main: Any = None, output: str | os.PathLike | None = None) -> str:
        """Write as ``<Source>-Atomic_Columns_NNN`` with a ``frame`` and a ``track_id`` field."""
        from .write import write_columns

        return write_columns(self, main, output)


def analyze_stack(
    frames: Any,
    max_displacement: float | None = None,
    device: str | Device | None = None,
    memory: int = 0,
    **analyze_kw: Any,
) -> StackAnalysis:
    """Analyze every frame of a stack with :func:`analyze` and link the refined columns.

    Parameters
    ----------
    frames : (n_frames, H, W) array or a MainDataset whose spectroscopic points are frames
    max_displacement : float, optional
        Gate of :func:`~usidgpu.atoms.track.link` after drift correction (default 0.4 × the
        first frame's column spacing).
    device : {"auto", "cpu", "gpu"}, optional
    memory : int
        Gap closing of :func:`~usidgpu.atoms.track.link`: frames a column may be missing (a
        blanked frame, a column not found once) and keep its trajectory.
    **analyze_kw
        Passed to :func:`analyze` for every frame (spacing, threshold, radius, n_sublattices, engine,
        precision).

    Returns
    -------
    StackAnalysis
    """
    from ..usid.frames import frames_of

    dev = select_device(device)
    stack, info = frames_of(frames)
    meta = _pixel_meta(info)
    results, first_empty = [], None
    for i in range(stack.shape[0]):
        try:
            one = analyze(stack[i], device=dev, **analyze_kw)
        except NoColumnsError as exc:  # a blanked, flat or empty frame: the tracks go on around it
            first_empty = first_empty or f"frame {i}: {exc}"
            one = _empty_analysis(stack[i], dev, analyze_kw.get("spacing"))
        # the frame came in as a bare array: give it back its place, pixel size and units
        one.frame, one.pixel_size, one.units, one.source = i, meta["pixel_size"], meta["units"], meta["source"]
        one.parameters["frame"] = i
        results.append(one)
    spacings = [r.found.spacing for r in results if len(r)]
    if not spacings:
        raise NoColumnsError(f"no frame of the stack holds atomic columns ({first_empty})")
    gate = 0.4 * spacings[0] if max_displacement is None else float(max_displacement)
    tracks = link([r.positions for r in results], gate, memory=memory)
    return StackAnalysis(
        frames=results,
        tracks=tracks,
        source=info.get("source"),
        device=dev.kind,
        parameters=dict(results[0].parameters, max_displacement=gate, memory=int(memory), n_frames=len(results)),
    )
