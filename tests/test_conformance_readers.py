"""Reader conformance suite: every format registered in ``usidgpu.translate`` passes one suite.

As xarray's backend tests or zarr's ``StoreTests`` do for their families of interchangeable
parts, each translator is checked on the same terms, for every sample file it reads:

* the output validates (``usidgpu.validate(out) == []``) and pyUSID takes every channel as Main;
* its channels' quantity, units, dimensions (names, units, values) and data equal what the reader
  library itself returns (rosettasciio, igor2, nanonispy2, SciFiReaders, tifffile, NumPy), read
  here directly — the oracle — with the USID conventions written out in the oracles below;
* the vendor metadata is kept (``Metadata`` groups with the reader's tags);
* the input file is unchanged (hash before and after) and not even opened for writing (mtime);
* a truncated copy, and random bytes with the format's suffix, make ``usidgpu translate`` exit
  with status 2 and a one-line error, leaving no output (and no partial) file.

Samples: the real files of ../shared/data (see its MANIFEST.md), the vendor files shipped in
``usidgpu/data``, and small generated files for the formats that have no real sample (TIFF, NPY).
A format registered without a sample here, or a data file that is neither a sample nor a known
refusal, fails the suite: it stays complete as formats and files are added.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from conftest import DATA_DIR, SAMPLES_DIR, import_pyusid

import usidgpu
from usidgpu.cli import main as cli
from usidgpu.translate import READERS, find_reader, readers, translate

pytestmark = pytest.mark.filterwarnings("ignore")

#: Import name of each reader library named in the registry.
LIBRARY_MODULES = {
    "rosettasciio": "rsciio",
    "igor2": "igor2",
    "nanonispy2": "nanonispy2",
    "SciFiReaders": "SciFiReaders",
    "tifffile": "tifffile",
    "numpy": "numpy",
}


# ------------------------------------------------------------------------------ the oracle
@dataclass
class Expected:
    """One channel as the reader library gives it, in the USID layout."""

    quantity: str
    units: str
    pos: list[tuple[str, str, np.ndarray]]  # name, units, values (slowest first)
    spec: list[tuple[str, str, np.ndarray]]
    data: np.ndarray  # (positions, spectroscopic points)
    dtype: np.dtype


def _dims(names_units_values: list[tuple[str, str, Any]]) -> list[tuple[str, str, np.ndarray]]:
    return [(n, u, np.atleast_1d(np.asarray(v, dtype=np.float64))) for n, u, v in names_units_values]


ONE_POSITION = [("Position", "", [0.0])]  # the placeholder dimension of a single spectrum
ONE_FRAME = [("Frame", "", [0.0])]  # the placeholder dimension of a single image


def _as_rows(data: np.ndarray, pos_axes: list[int], spec_axes: list[int]) -> np.ndarray:
    """An n-d array as USID rows: position axes (slowest first) then spectroscopic axes."""
    n_spec = int(np.prod([data.shape[a] for a in spec_axes])) if spec_axes else 1
    return np.transpose(data, pos_axes + spec_axes).reshape(-1, n_spec)


def _upper_xy(name: str) -> str:
    return name.upper() if name.lower() in ("x", "y") else name


def rsciio_oracle(module: str, spectroscopic: list[list[str]], **kwargs: Any) -> Callable[[Path], list[Expected]]:
    """Signals of ``rsciio.<module>.file_reader``: ``spectroscopic`` names, per signal, the axes
    that are spectroscopic (the rest are positions, in array order; x/y named X/Y)."""

    def oracle(path: Path) -> list[Expected]:
        reader = importlib.import_module(f"rsciio.{module}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            signals = reader.file_reader(str(path), **kwargs)
        assert len(signals) == len(spectroscopic), f"{path.name}: {len(signals)} signals from rosettasciio"
        out = []
        for sig, spec_names in zip(signals, spectroscopic):
            data = np.asarray(sig["data"])
            axes = sorted(enumerate(sig["axes"]), key=lambda ia: ia[1].get("index_in_array", ia[0]))
            axes = [a for _, a in axes]
            assert sorted(a["name"] for a in axes if a["name"] in spec_names) == sorted(spec_names)
            spec = [i for i, a in enumerate(axes) if a["name"] in spec_names]
            pos = [i for i in range(len(axes)) if i not in spec]

            def dim(a: dict) -> tuple[str, str, np.ndarray]:
                units = "" if a.get("units") in (None, "<undefined>", "<auto>") else str(a["units"]).strip()
                values = float(a.get("offset", 0.0)) + float(a.get("scale", 1.0)) * np.arange(a["size"])
                return _upper_xy(str(a["name"]).strip()), units, values

            quantity = str(sig["metadata"].get("Signal", {}).get("quantity", "") or "Intensity")
            units = ""
            if quantity.endswith(")") and "(" in quantity:  # HyperSpy's "Intensity (counts)"
                quantity, units = (s.strip() for s in quantity[:-1].split("(", 1))
            out.append(
                Expected(
                    quantity,
                    units,
                    _dims([dim(axes[i]) for i in pos]) or _dims(ONE_POSITION),
                    _dims([dim(axes[i]) for i in spec]) or _dims(ONE_FRAME),
                    _as_rows(data, pos, spec),
                    data.dtype,
                )
            )
        return out

    return oracle


def ibw_oracle(labels: list[str]) -> Callable[[Path], list[Expected]]:
    """Channels of an Igor wave read with igor2. ``labels``: the layer/column labels as stored
    (igor2 0.5.15 joins NUL-terminated labels with stale bytes — ``PhaseRetracerace`` — so the
    library's label must only start with the one given). Igor's dim 0 is X, dim 1 is Y; a layer
    label starting with ``Phase`` is in degrees (Asylum Research), else the wave's data units."""

    def oracle(path: Path) -> list[Expected]:
        from igor2 import binarywave

        wave = binarywave.load(str(path))["wave"]
        header, data = wave["wave_header"], wave["wData"]
        lib_labels = [bytes(b).decode("latin-1") for b in wave["labels"][data.ndim - 1][1:]]
        assert len(lib_labels) == len(labels)
        for mine, theirs in zip(labels, lib_labels):
            assert theirs.startswith(mine), (mine, theirs)

        def units_of(raw: Any) -> str:
            return b"".join(np.asarray(raw).reshape(-1)).split(b"\x00", 1)[0].decode("latin-1").strip()

        data_units = units_of(header["dataUnits"])

        def axis(i: int) -> np.ndarray:
            return float(header["sfB"][i]) + float(header["sfA"][i]) * np.arange(data.shape[i])

        out = []
        for k, label in enumerate(labels):
            units = "deg" if label.startswith("Phase") else data_units
            if data.ndim == 2:  # a force curve: one column per channel, dim 0 the time axis in s
                assert units_of(header["dimUnits"][0]) == "s"
                spec = _dims([("Time", "s", axis(0))])
                out.append(Expected(label, units, _dims(ONE_POSITION), spec, data[:, k][None, :], data.dtype))
            else:  # an image stack: one layer per channel, positions (Y, X)
                pos = _dims(
                    [("Y", units_of(header["dimUnits"][1]), axis(1)), ("X", units_of(header["dimUnits"][0]), axis(0))]
                )
                out.append(Expected(label, units, pos, _dims(ONE_FRAME), data[:, :, k].T.reshape(-1, 1), data.dtype))
        return out

    return oracle


def sxm_oracle(path: Path) -> list[Expected]:
    """nanonispy2's Scan: every channel and direction an image on (Y, X) in metres; up-scans are
    flipped vertically and backward scans horizontally, so all images share one grid."""
    import nanonispy2

    scan = nanonispy2.read.Scan(str(path))
    header = scan.header
    n_x, n_y = (int(v) for v in header["scan_pixels"])
    w, h = (float(v) for v in header["scan_range"])
    units = dict(zip(header["data_info"]["Name"], header["data_info"]["Unit"]))
    pos = _dims([("Y", "m", np.arange(n_y) * h / n_y), ("X", "m", np.arange(n_x) * w / n_x)])
    out = []
    for name, directions in scan.signals.items():
        for direction, img in directions.items():
            img = img[::-1] if str(header["scan_dir"]).strip() == "up" else img
            img = img[:, ::-1] if direction == "backward" else img
            out.append(Expected(name, units[name], pos, _dims(ONE_FRAME), img.reshape(-1, 1), np.dtype(np.float32)))
    return out


#: Neutral values for header keys that older Nanonis versions do not write (nanonispy2 refuses
#: the grid without them); the data do not depend on them.
GRID_MISSING = {"Delay before measuring (s)": 0.0, "Start time": "", "End time": "", "Comment": ""}


def _name_units(text: str) -> tuple[str, str]:
    m = re.match(r"^(.*?)\s*\(([^()]*)\)\s*$", text)
    return (m.group(1).strip(), m.group(2).strip()) if m else (text.strip(), "")


def grid_oracle(path: Path) -> list[Expected]:
    """nanonispy2's Grid: one channel per measured signal on (Y, X) × sweep, then the per-point
    parameters as a channel of their own."""
    import nanonispy2

    grid = nanonispy2.read.Grid(str(path), header_override=GRID_MISSING)
    n_x, n_y = (int(v) for v in grid.header["dim_px"])
    size_x, size_y = (float(v) for v in grid.header["size_xy"])
    pos = _dims([("Y", "m", np.linspace(0, size_y, n_y)), ("X", "m", np.linspace(0, size_x, n_x))])
    sweep_name, sweep_units = _name_units(grid.header["sweep_signal"])
    spec = _dims([(sweep_name, sweep_units, grid.signals["sweep_signal"])])
    out = []
    for key, arr in grid.signals.items():
        if key in ("sweep_signal", "params", "topo"):
            continue
        quantity, units = _name_units(key)
        out.append(Expected(quantity, units, pos, spec, arr.reshape(n_y * n_x, -1), np.dtype(np.float32)))
    params = grid.signals["params"]
    spec = _dims([("Parameter", "", np.arange(params.shape[2]))])
    out.append(Expected("Parameters", "", pos, spec, params.reshape(n_y * n_x, -1), np.dtype(np.float32)))
    return out


def nsid_oracle(units_fixed: dict[int, dict[str, str]] | None = None) -> Callable[[Path], list[Expected]]:
    """SciFiReaders' NSIDReader: SPATIAL/RECIPROCAL dimensions are positions, the others
    spectroscopic, in array order; data in the file's dtype. ``units_fixed``: channel → dimension
    → units where the file is known to be wrong (MANIFEST: PTO_Funakubo0001.h5's phase channel
    copies its data units, ``deg``, onto its x/y scales)."""

    def oracle(path: Path) -> list[Expected]:
        import SciFiReaders

        reader = SciFiReaders.NSIDReader(str(path))
        found = reader.read()
        out = []
        for c, ds in enumerate(found.values() if isinstance(found, dict) else found):
            kinds = [ds._axes[i].dimension_type.name for i in range(ds.ndim)]
            pos = [i for i, k in enumerate(kinds) if k in ("SPATIAL", "RECIPROCAL")]
            spec = [i for i in range(ds.ndim) if i not in pos]
            fixed = (units_fixed or {}).get(c, {})

            def dim(i: int, fixed: dict = fixed, ds: Any = ds) -> tuple[str, str, Any]:
                a = ds._axes[i]
                return a.name, fixed.get(a.name, str(a.units)), np.asarray(a.values)

            data = np.asarray(ds.h5_dataset[()])
            out.append(
                Expected(
                    str(ds.quantity),
                    str(ds.units),
                    _dims([dim(i) for i in pos]) or _dims(ONE_POSITION),
                    _dims([dim(i) for i in spec]) or _dims(ONE_FRAME),
                    _as_rows(data, pos, spec),
                    data.dtype,
                )
            )
            # sidpy gives float64: the same numbers as the file's
            np.testing.assert_array_equal(np.asarray(ds), data.astype(np.asarray(ds).dtype))
        reader.close()
        return out

    return oracle


def _image_stack(arr: np.ndarray, quantity: str = "Intensity", units: str = "a. u.") -> Expected:
    """(H, W) → positions (Y, X) in px; (frames, H, W) → positions (Y, X), spectroscopic Frame."""
    if arr.ndim == 2:
        h, w = arr.shape
        spec, rows = _dims(ONE_FRAME), arr.reshape(-1, 1)
    else:
        n, h, w = arr.shape
        spec, rows = _dims([("Frame", "", np.arange(n))]), arr.reshape(n, h * w).T
    pos = _dims([("Y", "px", np.arange(h)), ("X", "px", np.arange(w))])
    return Expected(quantity, units, pos, spec, rows, arr.dtype)


def tiff_oracle(path: Path) -> list[Expected]:
    import tifffile

    return [_image_stack(tifffile.imread(path))]


def npy_oracle(layout: str = "stack") -> Callable[[Path], list[Expected]]:
    """np.load: 1-D → one position × Index; 2-D/3-D stacks as images; ``spectrum_image`` (Y, X, S)."""

    def oracle(path: Path) -> list[Expected]:
        arr = np.load(path)
        if arr.ndim == 1:
            spec = _dims([("Index", "", np.arange(arr.size))])
            return [Expected("Intensity", "a. u.", _dims(ONE_POSITION), spec, arr[None, :], arr.dtype)]
        if layout == "spectrum_image":
            h, w, s = arr.shape
            pos = _dims([("Y", "px", np.arange(h)), ("X", "px", np.arange(w))])
            spec = _dims([("Spectral", "", np.arange(s))])
            return [Expected("Intensity", "a. u.", pos, spec, arr.reshape(h * w, s), arr.dtype)]
        return [_image_stack(arr, "Intensity", "a. u.")]

    return oracle


# ------------------------------------------------------------------------------ generated files
def _write_tiff(compression: str | None, shape: tuple[int, ...]) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        tifffile = pytest.importorskip("tifffile")
        tifffile.imwrite(path, np.arange(int(np.prod(shape)), dtype=np.uint16).reshape(shape), compression=compression)

    return make


def _write_npy(data: np.ndarray) -> Callable[[Path], None]:
    return lambda path: np.save(path, data)


# ------------------------------------------------------------------------------ the registry
@dataclass(frozen=True)
class Sample:
    """One input of the suite.

    ``where``: ``"data"`` (../shared/data), ``"shipped"`` (usidgpu/data) or ``"generated"`` (by
    ``make`` into a temporary folder). ``metadata``: key prefixes, one of which must be among the
    Metadata attributes of every channel (its group plus /Measurement_000/Metadata); ``values``:
    metadata keys with their expected values (floats compared to 1e-9 relative); ``absent``:
    keys that must not be there. ``layout``: the USID layout of each channel (one entry: of every
    channel), ``"name[units]size ... / name[units]size ..."``, positions then spectroscopic — pinned
    here so that the oracle and the translator cannot drift together.
    """

    format: str
    name: str
    where: str
    oracle: Callable[[Path], list[Expected]]
    metadata: tuple[str, ...]
    values: dict[str, Any] = field(default_factory=dict)
    absent: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    make: Callable[[Path], None] | None = None
    layout: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.format}:{self.where}:{self.name}"


RSCIIO_META = ("original_metadata.", "metadata.General.title")
SAMPLES = [
    Sample("DM3/DM4", "DMReader_EELS_STO.dm3", "data",
           rsciio_oracle("digitalmicrograph", [["Energy loss"]]), RSCIIO_META,
           layout=("Position[]1 / Energy loss[eV]2048",)),
    Sample("DM3/DM4", "DMReader_Image_SI-Survey.dm3", "data", rsciio_oracle("digitalmicrograph", [[]]), RSCIIO_META,
           values={"metadata.General.title": "06-SI Survey Image"}, layout=("Y[]512 X[]512 / Frame[]1",)),
    Sample("DM3/DM4", "DMReader_Image_SI-Survey.dm3", "shipped", rsciio_oracle("digitalmicrograph", [[]]), RSCIIO_META,
           values={"metadata.General.title": "06-SI Survey Image"}, layout=("Y[]512 X[]512 / Frame[]1",)),
    # stored energy-slowest (E, y, x) and flagged "navigation" by rosettasciio: energy goes last
    Sample("DM3/DM4", "DMReader_SpectrumImage_SI-EELS.dm3", "data",
           rsciio_oracle("digitalmicrograph", [["Energy loss"]]), RSCIIO_META,
           layout=("Y[]49 X[]6 / Energy loss[eV]1024",)),
    Sample("EMD", "EMDReader_SpectrumImage_Si.emd", "data",
           rsciio_oracle("emd", [[], ["X-ray energy"]], sum_frames=True), RSCIIO_META,
           layout=("Y[nm]16 X[nm]16 / Frame[]1", "Y[nm]16 X[nm]16 / X-ray energy[keV]4096")),
    Sample("EMD", "EMDReader_Spectrum_FEI.emd", "data",
           rsciio_oracle("emd", [["Energy"]], sum_frames=True), RSCIIO_META,
           layout=("Position[]1 / Energy[keV]4096",)),
    Sample("IBW", "IgorIBWReader_ForceCurve.ibw", "data", ibw_oracle(["Raw", "Defl", "ZSnsr"]), ("note.",),
           values={"note.NumOfSegments": 3, "wave_units": "m"}, layout=("Position[]1 / Time[s]1261",)),
    Sample("IBW", "IgorIBWReader_ImageStack_BTFO_DSO.ibw", "data",
           ibw_oracle(["HeightRetrace", "AmplitudeRetrace", "DeflectionRetrace", "PhaseRetrace"]), ("note.",),
           values={"note.ScanSize": 2e-6}, layout=("Y[m]256 X[m]256 / Frame[]1",)),
    Sample("SXM", "test.sxm", "data", sxm_oracle, ("header.",), values={"header.bias": 0.2, "header.scan_dir": "up"},
           layout=("Y[m]256 X[m]256 / Frame[]1",)),
    # the header lacks "Delay before measuring (s)" etc.: the values filled in are not stored
    Sample("3DS", "NanonisReader_STS_grid_lockin.3ds", "data", grid_oracle, ("header.",),
           values={"header.angle": 45.0}, absent=("header.measure_delay", "header.start_time"),
           layout=("Y[m]30 X[m]30 / Bias[V]200",) * 4 + ("Y[m]30 X[m]30 / Parameter[]10",)),
    Sample("NSID", "bfo_iv_final.hf5", "data", nsid_oracle(), ("data_type", "dimensions."),
           values={"data_type": "SPECTRAL_IMAGE"}, layout=("x[m]50 y[m]50 / $\\sqrt E$[$(V/m)^{0.5}$]53",)),
    Sample("NSID", "PTO_Funakubo0001.h5", "data", nsid_oracle({3: {"x": "m", "y": "m"}}), ("original_metadata.",),
           values={"data_type": "IMAGE"}, layout=("x[m]256 y[m]256 / Frame[]1",)),
    Sample("TIFF", "stack.tif", "generated", tiff_oracle, ("tiff.",), make=_write_tiff(None, (4, 6, 5)),
           layout=("Y[px]6 X[px]5 / Frame[]4",)),
    Sample("TIFF", "stack_zlib.tif", "generated", tiff_oracle, ("tiff.",), make=_write_tiff("zlib", (4, 6, 5)),
           layout=("Y[px]6 X[px]5 / Frame[]4",)),
    Sample("TIFF", "image.tiff", "generated", tiff_oracle, ("tiff.",), make=_write_tiff(None, (7, 9)),
           layout=("Y[px]7 X[px]9 / Frame[]1",)),
    Sample("NPY", "stack.npy", "generated", npy_oracle(), ("npy.",), values={"npy.shape": [3, 5, 7]},
           make=_write_npy(np.random.default_rng(0).random((3, 5, 7)).astype(np.float32)),
           layout=("Y[px]5 X[px]7 / Frame[]3",)),
    Sample("NPY", "spectrum_image.npy", "generated", npy_oracle("spectrum_image"), ("npy.",),
           values={"npy.layout": "spectrum_image"}, options={"layout": "spectrum_image"},
           make=_write_npy(np.random.default_rng(1).random((3, 5, 7)).astype(np.float32)),
           layout=("Y[px]3 X[px]5 / Spectral[]7",)),
    Sample("NPY", "spectrum.npy", "generated", npy_oracle(), ("npy.",), values={"npy.dtype": "int16"},
           make=_write_npy(np.arange(9, dtype=np.int16)), layout=("Position[]1 / Index[]9",)),
]  # fmt: skip

#: Data files no translator reads, and what the refusal says.
REFUSED = {
    "AFM_Force_Curve.h5": "already USID",
    "simulated_STEM_Image.h5": "already USID",
    "sparse_sampling.h5": "already USID",
    "chip.h5": "already USID",
    "NanonisReader_BiasSpectroscopy.dat": "unknown format",  # Nanonis point spectroscopy: no reader
}
NOT_DATA = {"MANIFEST.md", "README.md"}
FOLDERS = {"data": DATA_DIR, "shipped": SAMPLES_DIR}


def _reader(fmt: str):
    (reader,) = [r for r in READERS if r.name == fmt]
    return reader


def _need_library(fmt: str) -> None:
    library = _reader(fmt).library
    module = LIBRARY_MODULES[library]
    try:
        importlib.import_module(module)
    except ImportError:
        pytest.skip(f"{library} (the {fmt} reader) is not installed: pip install 'usidgpu[vendor]'")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("inputs")


#: An old modification time given to every input copy: any write to it shows as a new one.
OLD_MTIME_NS = 1_000_000_000 * 10**9


def _source(sample: Sample, inputs: Path) -> Path:
    """The sample as a private copy (generated samples: written there): the suite never opens the
    shared files themselves, which other test runs may be reading at the same time."""
    path = inputs / sample.where / sample.name
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        if sample.where == "generated":
            sample.make(path)
        else:
            folder = FOLDERS[sample.where]
            if not folder.is_dir():
                pytest.skip(f"data folder {folder} is absent")
            if not (folder / sample.name).is_file():
                pytest.skip(f"{folder / sample.name} is absent")
            shutil.copyfile(folder / sample.name, path)
        os.utime(path, ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    return path


@pytest.fixture(scope="module")
def translated(tmp_path_factory, inputs) -> Callable[[Sample], tuple[Path, Path, str]]:
    """``(input, output, input digest before translating)`` of a sample, translated once."""
    done: dict[str, tuple[Path, Path, str]] = {}
    out_dir = tmp_path_factory.mktemp("translated")

    def get(sample: Sample) -> tuple[Path, Path, str]:
        _need_library(sample.format)
        if sample.id not in done:
            src = _source(sample, inputs)
            before = _digest(src)
            out = out_dir / f"{len(done):02d}_{Path(sample.name).stem}.h5"
            assert find_reader(src).name == sample.format
            translate(src, out, **sample.options)
            done[sample.id] = (src, out, before)
        return done[sample.id]

    return get


def _mains(out: Path) -> list[Any]:
    with usidgpu.open(out) as f:
        return [
            dict(
                name=m.name,
                quantity=m.quantity,
                units=m.units,
                pos=[(d.name, d.units, np.asarray(d.values)) for d in m.pos_dims],
                spec=[(d.name, d.units, np.asarray(d.values)) for d in m.spec_dims],
                data=m[()],
                nd=m.to_ndim(),
                dtype=m.dtype,
            )
            for m in f.main_datasets()
        ]


def _metadata(out: Path, channel: int) -> dict[str, Any]:
    """What the file says about a channel: /Measurement_000/Metadata, then the channel's own
    Metadata group (attributes, and datasets for values too long for an attribute)."""
    meta: dict[str, Any] = {}
    with h5py.File(out, "r") as f:
        for group in (f["Measurement_000/Metadata"], f[f"Measurement_000/Channel_{channel:03d}/Metadata"]):
            meta.update(group.attrs)
            meta.update({k: v[()] for k, v in group.items() if isinstance(v, h5py.Dataset)})
    return meta


def _same(value: Any, expected: Any) -> bool:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(expected, float):
        return float(value) == pytest.approx(expected, rel=1e-9)
    if isinstance(expected, list):
        return np.asarray(value).tolist() == expected
    return value == expected


IDS = [s.id for s in SAMPLES]


# ------------------------------------------------------------------------------ completeness
def test_every_registered_format_has_samples():
    formats = [r["format"] for r in readers()]
    assert sorted(formats) == sorted(r.name for r in READERS)
    missing = set(formats) - {s.format for s in SAMPLES}
    assert not missing, f"formats registered in usidgpu.translate without a sample in this suite: {missing}"
    unknown = {r.library for r in READERS} - set(LIBRARY_MODULES)
    assert not unknown, f"reader libraries without an import name in LIBRARY_MODULES: {unknown}"
    for s in SAMPLES:  # every sample's suffix is one its format claims; every sample pins its layout
        assert Path(s.name).suffix.lower() in _reader(s.format).suffixes, s.id
        assert s.layout, f"{s.id}: no layout"


@pytest.mark.parametrize("where", sorted(FOLDERS))
def test_every_data_file_is_a_sample_or_refused(where):
    folder = FOLDERS[where]
    if not folder.is_dir():
        pytest.skip(f"data folder {folder} is absent")
    names = {p.name for p in folder.iterdir() if p.is_file() and p.name not in NOT_DATA}
    known = {s.name for s in SAMPLES if s.where == where} | set(REFUSED)
    assert names <= known, f"files in {folder} that the reader suite does not cover: {sorted(names - known)}"


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_files_without_a_reader_are_refused(name, tmp_path, capsys):
    found = next((folder / name for folder in FOLDERS.values() if (folder / name).is_file()), None)
    if found is None:
        pytest.skip(f"{name} is in neither {DATA_DIR} nor {SAMPLES_DIR}")
    path = tmp_path / name
    shutil.copyfile(found, path)
    before = _digest(path)
    out = tmp_path / "out.h5"
    _refused(capsys, path, out, REFUSED[name])
    assert _digest(path) == before


# ------------------------------------------------------------------------------ the suite
@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_output_validates(sample, translated):
    _src, out, _ = translated(sample)
    assert usidgpu.validate(out) == []
    with h5py.File(out, "r") as f:
        meas = f["Measurement_000"]
        assert isinstance(meas["Metadata"], h5py.Group)
        for key in ("original_file", "format", "reader", "reader_version", "translator"):
            assert key in meas.attrs, key
        assert meas.attrs["reader"] == _reader(sample.format).library
        assert meas.attrs["original_file"] == sample.name
        channels = sorted(k for k in meas if k.startswith("Channel_"))
        mains = [f"Measurement_000/{c}/Raw_Data" for c in channels]
        try:
            pyusid = import_pyusid()
        except ImportError:
            pyusid = None
        if pyusid is not None:  # the independent reader agrees every channel is a Main dataset
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert all(pyusid.hdf_utils.check_if_main(f[m]) for m in mains)
    with usidgpu.open(out) as f:
        assert [m.name.lstrip("/") for m in f.main_datasets()] == mains


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_output_equals_the_reader_library(sample, translated, tmp_path):
    src, out, _ = translated(sample)
    copy = tmp_path / src.name  # the oracle reads its own copy: some libraries open files for writing
    shutil.copyfile(src, copy)
    expected = sample.oracle(copy)
    mains = _mains(out)
    assert len(mains) == len(expected), [m["name"] for m in mains]
    for k, (m, e) in enumerate(zip(mains, expected)):
        where = f"{sample.name} channel {k}"
        assert (m["quantity"], m["units"]) == (e.quantity, e.units), where
        for side in ("pos", "spec"):
            got, want = m[side], getattr(e, side)
            assert [(n, u, v.size) for n, u, v in got] == [(n, u, v.size) for n, u, v in want], f"{where} {side}"
            for (name, _u, v), (_n, _u2, w) in zip(got, want):
                scale = float(np.abs(w).max()) if w.size else 0.0
                np.testing.assert_allclose(v, w, rtol=1e-6, atol=1e-7 * scale, err_msg=f"{where} {name}")
        assert m["dtype"] == e.dtype, where
        np.testing.assert_array_equal(m["data"], e.data, err_msg=where)
        nd_shape = tuple(v.size for _n, _u, v in e.pos) + tuple(v.size for _n, _u, v in e.spec)
        np.testing.assert_array_equal(m["nd"], e.data.reshape(nd_shape), err_msg=where)
    layouts = sample.layout * len(mains) if len(sample.layout) == 1 else sample.layout
    assert [_layout(m) for m in mains] == list(layouts)


def _layout(main: dict) -> str:
    def side(dims: list) -> str:
        return " ".join(f"{n}[{u}]{v.size}" for n, u, v in dims)

    return f"{side(main['pos'])} / {side(main['spec'])}"


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_vendor_metadata_is_kept(sample, translated):
    _src, out, _ = translated(sample)
    with h5py.File(out, "r") as f:
        n = sum(1 for k in f["Measurement_000"] if k.startswith("Channel_"))
        for c in range(n):
            assert isinstance(f[f"Measurement_000/Channel_{c:03d}/Metadata"], h5py.Group)
    for c in range(n):
        meta = _metadata(out, c)
        for prefix in sample.metadata:
            assert any(key.startswith(prefix) for key in meta), f"channel {c}: no {prefix!r} in {sorted(meta)[:20]}"
        for key, value in sample.values.items():
            assert key in meta and _same(meta[key], value), f"channel {c}: {key} = {meta.get(key)!r}, not {value!r}"
        for key in sample.absent:
            assert key not in meta, f"channel {c}: {key} is stored"


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_input_is_unchanged(sample, translated):
    src, _out, before = translated(sample)
    assert _digest(src) == before


#: Known library bugs, by sample id, of test_input_is_not_written.
#: formats whose reader writes into its input (none now: NSID is read from a private copy)
WRITES_INPUT_XFAIL: dict[str, str] = {}


@pytest.mark.parametrize(
    "sample",
    [
        pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=WRITES_INPUT_XFAIL[s.id]))
        if s.id in WRITES_INPUT_XFAIL
        else s
        for s in SAMPLES
    ],
    ids=IDS,
)
def test_input_is_not_written(sample, translated):
    """Not even opened for writing: its modification time stays as it was."""
    src, _out, _before = translated(sample)
    assert src.stat().st_mtime_ns == OLD_MTIME_NS, f"{src.name} was written to while it was translated"


# ------------------------------------------------------------------------------ damaged input
def _refused(capsys, src: Path, out: Path, message: str | None = None, argv: tuple[str, ...] = ()) -> str:
    capsys.readouterr()
    code = cli(["translate", str(src), str(out), *argv])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, f"exit status {code} for {src.name}; stderr: {err!r}"
    assert err.startswith("usidgpu: error:") and "\n" not in err, err
    assert "Traceback" not in captured.err
    if message is not None:
        assert message in err, err
    assert not out.exists(), f"{out} was left behind"
    assert not list(out.parent.glob(f".{out.name}.part-*")), "a partial output was left behind"
    return err


#: Known library bugs, by sample id: the suite keeps the check and expects it to fail.
#: formats known to translate a truncated file without noticing (none now; read_3ds checks the size)
TRUNCATED_XFAIL: dict[str, str] = {}


@pytest.mark.parametrize(
    "sample",
    [
        pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=TRUNCATED_XFAIL[s.id]))
        if s.id in TRUNCATED_XFAIL
        else s
        for s in SAMPLES
    ],
    ids=IDS,
)
def test_truncated_input_is_refused(sample, inputs, tmp_path, capsys):
    _need_library(sample.format)
    src = _source(sample, inputs)
    raw = src.read_bytes()
    bad = tmp_path / f"truncated{Path(sample.name).suffix}"
    bad.write_bytes(raw[: len(raw) // 2])
    argv = tuple(a for k, v in sample.options.items() for a in (f"--{k}", v))
    err = _refused(capsys, bad, tmp_path / "out.h5", argv=argv)
    assert bad.name in err


SUFFIXES = [(r.name, r.suffixes[0]) for r in READERS]


@pytest.mark.parametrize(("fmt", "suffix"), SUFFIXES, ids=[s for _f, s in SUFFIXES])
def test_random_bytes_are_refused(fmt, suffix, tmp_path, capsys):
    _need_library(fmt)
    bad = tmp_path / f"random{suffix}"
    bad.write_bytes(np.random.default_rng(len(suffix)).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    err = _refused(capsys, bad, tmp_path / "out.h5")
    assert bad.name in err
