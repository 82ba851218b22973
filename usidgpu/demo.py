"""``usidgpu demo``: the whole path on shipped and generated data, in under a minute on a laptop.

1. A shipped vendor file — an atomic-resolution STEM survey image in Gatan's DM3 format
   (pycroscopy's SciFiDatasets, MIT) — is translated into a USID file in the output folder.
2. It is denoised by windowed SVD: the raw | cleaned | removed-noise figure of the USID paper.
3. The atomic columns of the cleaned image are found, fitted, checked for sublattices and vacancies;
   the scan's distortion (flyback at the line starts, drift down the frame) is fitted and corrected,
   and shown as its own figure — it is the scan, not the crystal.
4. A spectrum image is generated (three phases with known spectra, Poisson noise: no licence
   allows shipping a real one this small), written as USID with an energy axis, decomposed by SVD
   and clustered by k-means; the clusters are scored against the known phases.

Every step writes its results group into the HDF5 file and a figure into the folder; the source
samples are never modified.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .core.device import Device, select_device
from .core.errors import MissingDependency


@dataclass
class DemoStep:
    name: str
    seconds: float
    summary: str
    figure: str | None = None


@dataclass
class DemoReport:
    folder: Path
    device: str
    steps: list[DemoStep] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)


def spectrum_image(shape: tuple[int, int] = (48, 48), n_energy: int = 256, seed: int = 0) -> tuple[np.ndarray, ...]:
    """A synthetic EELS-like spectrum image: three phases in blobs, each with its own edges and
    peaks on a power-law background, Poisson noise.

    Returns
    -------
    data : (H, W, n_energy) float32
    energy : (n_energy,) eV
    phase : (H, W) int, the true phase of every pixel
    """
    rng = np.random.default_rng(seed)
    energy = np.linspace(300.0, 700.0, n_energy)
    background = 2e4 * (energy / 300.0) ** -3.0

    def edge(onset: float, height: float) -> np.ndarray:
        return height * (energy > onset) * np.exp(-np.clip(energy - onset, 0, None) / 120.0)

    def peak(centre: float, width: float, height: float) -> np.ndarray:
        return height * np.exp(-0.5 * ((energy - centre) / width) ** 2)

    spectra = np.stack(
        [
            background + edge(456, 900) + peak(532, 6, 600),  # e.g. Ti L + O K
            background + edge(399, 700) + peak(640, 8, 500),  # N K + Mn L
            background + edge(532, 1200) + peak(460, 5, 300),
        ]
    )
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    centres = rng.uniform(0, 1, size=(6, 2)) * [h, w]
    owner = np.argmin([np.hypot(yy - cy, xx - cx) for cy, cx in centres], axis=0)
    phase = owner % 3
    clean = spectra[phase]  # (H, W, E)
    data = rng.poisson(clean * 0.05).astype(np.float32) / 0.05
    return data, energy, phase


def _adjusted_rand(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labelings (1: identical up to renaming, ~0: unrelated)."""
    a, b = np.unique(a.ravel(), return_inverse=True)[1], np.unique(b.ravel(), return_inverse=True)[1]
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)

    def pairs(x: np.ndarray) -> float:
        return float((x * (x - 1) / 2).sum())

    total = pairs(np.array([a.size]))
    index, rows, cols = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / total
    return (index - expected) / (0.5 * (rows + cols) - expected)


def _fresh_folder(folder: str | None) -> Path:
    base = Path(folder or "usidgpu-demo")
    if not base.exists() or not any(base.iterdir()):
        base.mkdir(parents=True, exist_ok=True)
        return base
    for i in range(2, 1000):
        candidate = base.with_name(f"{base.name}-{i}")
        if not candidate.exists():
            candidate.mkdir(parents=True)
            return candidate
    raise FileExistsError(f"{base}: too many earlier demo folders; remove some")


def run_demo(
    folder: str | None = None, device: str | Device | None = None, quick: bool = False, log: Any = print
) -> DemoReport:
    """Run the demo into a new folder and return what it did.

    Parameters
    ----------
    folder : str, optional
        Output folder (default ``usidgpu-demo``; a numbered sibling when it holds files already).
    device : {"auto", "cpu", "gpu"}, optional
    quick : bool
        Smaller spectrum image and fewer components (for tests).
    log : callable
        Receives one line per step.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)

    from .atoms.analysis import analyze
    from .decompose import kmeans, svd
    from .denoise import windowed_svd
    from .samples import sample_path
    from .usid import Dimension, validate, write_main
    from .usid import open as open_usid
    from .viz import plot_clusters, plot_columns, plot_decomposition, plot_denoise, save_figure

    dev = select_device(device)
    out = _fresh_folder(folder)
    report = DemoReport(out, str(dev))

    def step(name: str, start: float, summary: str, figure: str | None = None) -> None:
        report.steps.append(DemoStep(name, time.perf_counter() - start, summary, figure))
        log(f"{name:<13} {summary} ({report.steps[-1].seconds:.1f} s)" + (f" → {figure}" if figure else ""))

    # 1. a vendor file into USID (the shipped sample is only read)
    import importlib.util

    from .translate import translate

    if importlib.util.find_spec("rsciio") is None:
        raise MissingDependency(
            "the demo translates a Gatan DM3 file, which needs rosettasciio: pip install 'usidgpu[vendor]'"
        )
    t0 = time.perf_counter()
    survey = out / "stem_survey.h5"
    source = sample_path("survey-dm3")
    translate(source, survey)
    report.files.append(survey)
    with open_usid(survey) as f:
        ds = f.main_datasets()[0]
        described = f"{source.name} (Gatan DM3) → {survey.name}: {ds.shape[0]} positions ({ds.pos_sizes}), {ds.dtype}"
    step("translate", t0, described)

    # 2. denoising (quick: a small fixed window and k, for the tests)
    t0 = time.perf_counter()
    with open_usid(survey) as f:
        ds = f.main_datasets()[0]
        den = windowed_svd(ds, window=16 if quick else None, k=8 if quick else None, device=dev)
        den.write(ds)
    figure = out / "01_denoise.png"
    save_figure(plot_denoise(den), figure)
    step(
        "denoise",
        t0,
        f"windowed SVD, window {den.window[0]} px, k = {den.k} ({den.k_rule.split(':')[0]}); noise std "
        f"{float(np.std(den.noise)):.3g}",
        figure.name,
    )

    # 3. atomic columns of the cleaned image
    t0 = time.perf_counter()
    cols = analyze(den.cleaned, device=dev)
    with open_usid(survey) as f:
        cols.write(f.main_datasets()[0])
    figure = out / "02_atoms.png"
    save_figure(plot_columns(cols, den.cleaned), figure)
    n_vac = len(cols.vacancies) if cols.vacancies is not None else 0
    step(
        "atoms",
        t0,
        f"{len(cols)} columns ({cols.fit.converged.mean():.0%} converged, {cols.fit.engine} engine), "
        f"{cols.parameters['n_sublattices']} sublattice(s), {n_vac} vacancies (sites the image shows empty)",
        figure.name,
    )
    if cols.distortion is not None:
        from .viz.scan_distortion import plot_scan_distortion

        t0 = time.perf_counter()
        figure = out / "02_scan_distortion.png"
        save_figure(plot_scan_distortion(cols), figure)
        step("scan", t0, cols.distortion.summary(), figure.name)

    # 3. a spectrum image: write as USID, SVD and k-means
    t0 = time.perf_counter()
    shape = (24, 24) if quick else (48, 48)
    data, energy, phase = spectrum_image(shape, 128 if quick else 256)
    si = out / "spectrum_image.h5"
    import h5py

    with h5py.File(si, "w-") as f:
        write_main(
            f.create_group("Measurement_000/Channel_000"),
            "Raw_Data",
            data,
            "Counts",
            "e⁻",
            [Dimension("Y", "nm", np.arange(shape[0]) * 0.5), Dimension("X", "nm", np.arange(shape[1]) * 0.5)],
            [Dimension("Energy loss", "eV", energy)],
        )
    report.files.append(si)
    with open_usid(si) as f:
        ds = f.main_datasets()[0]
        decomposition = svd(ds, 4 if quick else 8, device=dev, progress=False)
        decomposition.write(ds)
    figure = out / "03_svd.png"
    save_figure(plot_decomposition(decomposition), figure)
    step(
        "svd",
        t0,
        f"{data.shape[0]}×{data.shape[1]} px × {data.shape[2]} energies, S[:4] = "
        + ", ".join(f"{v:.3g}" for v in decomposition.S[:4]),
        figure.name,
    )

    t0 = time.perf_counter()
    with open_usid(si) as f:
        ds = f.main_datasets()[0]
        km = kmeans(ds, 3, device=dev, progress=False)
        km.write(ds)
    figure = out / "04_clusters.png"
    save_figure(plot_clusters(km), figure)
    ari = _adjusted_rand(km.labels.reshape(shape), phase)
    step("cluster", t0, f"k-means, 3 clusters; adjusted Rand index vs the true phases {ari:.3f}", figure.name)

    problems = [p for path in report.files for p in validate(path)]
    log(
        f"{'files':<13} {', '.join(p.name for p in report.files)} in {out}: "
        + ("valid USID" if not problems else f"{len(problems)} problem(s)")
    )
    log(f"{'total':<13} {report.seconds:.1f} s on {report.device}")
    return report
