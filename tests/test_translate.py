"""usidgpu.translate and `usidgpu translate`: every supported file in ../shared/data, checked
against the reader library itself (the oracle), validated, and read back by pyUSID."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
from conftest import DATA_DIR

import usidgpu
from usidgpu.cli import main
from usidgpu.translate import readers, translate

pytestmark = pytest.mark.filterwarnings("ignore")


def _data(name):
    path = DATA_DIR / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def _mains(out):
    with usidgpu.open(out) as f:
        return [
            dict(
                name=m.name,
                quantity=m.quantity,
                units=m.units,
                pos=[(d.name, d.units, d.size) for d in m.pos_dims],
                spec=[(d.name, d.units, d.size) for d in m.spec_dims],
                pos_values=[np.asarray(d.values) for d in m.pos_dims],
                spec_values=[np.asarray(d.values) for d in m.spec_dims],
                data=m.h5[()],
                nd=m.to_ndim(),
                dtype=m.dtype,
            )
            for m in f.main_datasets()
        ]


def _check_file(out, pyusid, n_mains):
    assert usidgpu.validate(out) == []
    with h5py.File(out, "r") as f:
        meas = f["Measurement_000"]
        for key in ("original_file", "reader", "reader_version", "format", "translator"):
            assert key in meas.attrs
        assert "Metadata" in meas
        for i in range(n_mains):
            assert isinstance(f[f"Measurement_000/Channel_{i:03d}/Metadata"], h5py.Group)
            assert pyusid.hdf_utils.check_if_main(f[f"Measurement_000/Channel_{i:03d}/Raw_Data"])
    mains = _mains(out)
    assert len(mains) == n_mains
    return mains


def _meta(out, channel=None):
    with h5py.File(out, "r") as f:
        attrs = dict(f["Measurement_000/Metadata"].attrs)
        if channel is not None:
            attrs.update(f[f"Measurement_000/Channel_{channel:03d}/Metadata"].attrs)
        return attrs


def test_readers_listed():
    names = {r["format"] for r in readers()}
    assert {"DM3/DM4", "IBW", "SXM", "3DS", "NSID", "TIFF", "NPY", "EMD"} <= names


# --------------------------------------------------------------------------- NumPy / TIFF
def test_npy_image_stack_spectrum(tmp_path, pyusid):
    stack = np.random.default_rng(0).random((3, 5, 7)).astype(np.float32)
    np.save(tmp_path / "s.npy", stack)
    translate(tmp_path / "s.npy", tmp_path / "s.h5")
    (m,) = _check_file(tmp_path / "s.h5", pyusid, 1)
    assert m["pos"] == [("Y", "px", 5), ("X", "px", 7)] and m["spec"] == [("Frame", "", 3)]
    np.testing.assert_array_equal(m["nd"], stack.transpose(1, 2, 0))
    translate(tmp_path / "s.npy", tmp_path / "si.h5", layout="spectrum_image")
    (m,) = _mains(tmp_path / "si.h5")
    np.testing.assert_array_equal(m["nd"], stack)
    np.save(tmp_path / "sp.npy", np.arange(9, dtype=np.int16))
    translate(tmp_path / "sp.npy", tmp_path / "sp.h5")
    (m,) = _check_file(tmp_path / "sp.h5", pyusid, 1)
    assert m["data"].shape == (1, 9) and m["dtype"] == np.int16


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_tiff_stack(tmp_path, pyusid, compression):
    tifffile = pytest.importorskip("tifffile")
    stack = np.arange(4 * 6 * 5, dtype=np.uint16).reshape(4, 6, 5)
    tifffile.imwrite(tmp_path / "s.tif", stack, compression=compression)
    translate(tmp_path / "s.tif", tmp_path / "s.h5")
    (m,) = _check_file(tmp_path / "s.h5", pyusid, 1)
    oracle = tifffile.imread(tmp_path / "s.tif")
    assert m["pos"] == [("Y", "px", 6), ("X", "px", 5)] and m["spec"] == [("Frame", "", 4)]
    np.testing.assert_array_equal(m["nd"], oracle.transpose(1, 2, 0))
    assert any(k.startswith("tiff.") for k in _meta(tmp_path / "s.h5", 0))


# --------------------------------------------------------------------------- rosettasciio
def _rsciio_oracle(sig):
    from usidgpu.translate.rsciio_formats import axis_roles

    axes = sorted(sig["axes"], key=lambda a: a.get("index_in_array", 0))
    pos, spec = axis_roles(axes)
    data = np.asarray(sig["data"])
    n_spec = int(np.prod([data.shape[i] for i in spec])) if spec else 1
    return axes, pos, spec, np.transpose(data, pos + spec).reshape(-1, n_spec)


def _axis_vals(a):
    return float(a.get("offset", 0.0)) + float(a.get("scale", 1.0)) * np.arange(a["size"])


RSCIIO_FILES = {
    "DMReader_EELS_STO.dm3": ("digitalmicrograph", [([("Position", "", 1)], [("Energy loss", "eV", 2048)])]),
    "DMReader_Image_SI-Survey.dm3": ("digitalmicrograph", [([("Y", "", 512), ("X", "", 512)], [("Frame", "", 1)])]),
    "DMReader_SpectrumImage_SI-EELS.dm3": (
        "digitalmicrograph",
        [([("Y", "", 49), ("X", "", 6)], [("Energy loss", "eV", 1024)])],
    ),
    "EMDReader_SpectrumImage_Si.emd": (
        "emd",
        [
            ([("Y", "nm", 16), ("X", "nm", 16)], [("Frame", "", 1)]),
            ([("Y", "nm", 16), ("X", "nm", 16)], [("X-ray energy", "keV", 4096)]),
        ],
    ),
    "EMDReader_Spectrum_FEI.emd": ("emd", [([("Position", "", 1)], [("Energy", "keV", 4096)])]),
}


@pytest.mark.parametrize("name", sorted(RSCIIO_FILES))
def test_rsciio_files(tmp_path, pyusid, name):
    pytest.importorskip("rsciio")
    import importlib

    module, expected = RSCIIO_FILES[name]
    src = _data(name)
    out = tmp_path / "out.h5"
    translate(src, out)
    mains = _check_file(out, pyusid, len(expected))
    kwargs = {"sum_frames": True} if module == "emd" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        signals = importlib.import_module(f"rsciio.{module}").file_reader(str(src), **kwargs)
    for i, (m, sig, (pos, spec)) in enumerate(zip(mains, signals, expected)):
        assert m["pos"] == pos and m["spec"] == spec
        axes, pa, sa, oracle = _rsciio_oracle(sig)
        np.testing.assert_array_equal(m["data"], oracle)
        assert m["dtype"] == sig["data"].dtype
        for vals, ax in zip(m["spec_values"], sa):
            np.testing.assert_allclose(vals, _axis_vals(axes[ax]), rtol=1e-6)
        for vals, ax in zip(m["pos_values"], pa):
            np.testing.assert_allclose(vals, _axis_vals(axes[ax]), rtol=1e-6)
        meta = _meta(out, i)
        assert any(k.startswith("original_metadata.") for k in meta)
        assert "metadata.General.title" in meta
    if name == "DMReader_SpectrumImage_SI-EELS.dm3":  # energy slowest in the file → last in USID
        assert mains[0]["nd"].shape == (49, 6, 1024)
        np.testing.assert_array_equal(mains[0]["nd"], np.moveaxis(np.asarray(signals[0]["data"]), 0, -1))


# --------------------------------------------------------------------------- Igor IBW
def test_ibw_force_curve(tmp_path, pyusid):
    pytest.importorskip("igor2")
    from igor2 import binarywave

    src = _data("IgorIBWReader_ForceCurve.ibw")
    translate(src, tmp_path / "f.h5")
    mains = _check_file(tmp_path / "f.h5", pyusid, 3)
    wave = binarywave.load(str(src))["wave"]
    data = wave["wData"]
    for k, (m, label) in enumerate(zip(mains, ["Raw", "Defl", "ZSnsr"])):
        assert m["quantity"] == label and m["units"] == "m"
        assert m["pos"] == [("Position", "", 1)] and m["spec"] == [("Time", "s", 1261)]
        np.testing.assert_array_equal(m["data"][0], data[:, k])
        np.testing.assert_allclose(m["spec_values"][0], 5e-4 * np.arange(1261), rtol=1e-6, atol=1e-9)
    meta = _meta(tmp_path / "f.h5", 0)
    assert meta["note.NumOfSegments"] == 3


def test_ibw_image_stack(tmp_path, pyusid):
    pytest.importorskip("igor2")
    from igor2 import binarywave

    src = _data("IgorIBWReader_ImageStack_BTFO_DSO.ibw")
    translate(src, tmp_path / "i.h5")
    mains = _check_file(tmp_path / "i.h5", pyusid, 4)
    data = binarywave.load(str(src))["wave"]["wData"]
    labels = ["HeightRetrace", "AmplitudeRetrace", "DeflectionRetrace", "PhaseRetrace"]  # cut at the NUL
    assert [m["quantity"] for m in mains] == labels
    assert [m["units"] for m in mains] == ["m", "m", "m", "deg"]
    for k, m in enumerate(mains):
        assert m["pos"] == [("Y", "m", 256), ("X", "m", 256)]
        np.testing.assert_allclose(m["pos_values"][1], 7.843137e-9 * np.arange(256), rtol=1e-5)
        np.testing.assert_array_equal(m["nd"][..., 0], data[:, :, k].T)  # Igor: dim 0 is X
    assert _meta(tmp_path / "i.h5", 0)["note.ScanSize"] == pytest.approx(2e-6)


# --------------------------------------------------------------------------- NSID
def test_nsid_spectral_image(tmp_path, pyusid):
    sfr = pytest.importorskip("SciFiReaders")
    src = _data("bfo_iv_final.hf5")
    translate(src, tmp_path / "n.h5")
    (m,) = _check_file(tmp_path / "n.h5", pyusid, 1)
    (ds,) = sfr.NSIDReader(str(src)).read().values()
    assert m["quantity"] == ds.quantity == "log J" and m["units"] == ds.units == "$A/m^2$"
    assert m["pos"] == [("x", "m", 50), ("y", "m", 50)]
    assert m["spec"] == [("$\\sqrt E$", "$(V/m)^{0.5}$", 53)]
    np.testing.assert_allclose(m["spec_values"][0], np.asarray(ds._axes[2].values), rtol=1e-6)
    np.testing.assert_array_equal(m["nd"], np.asarray(ds))
    assert _meta(tmp_path / "n.h5", 0)["data_type"] == "SPECTRAL_IMAGE"


def test_nsid_images(tmp_path, pyusid):
    sfr = pytest.importorskip("SciFiReaders")
    src = _data("PTO_Funakubo0001.h5")
    translate(src, tmp_path / "p.h5")
    mains = _check_file(tmp_path / "p.h5", pyusid, 4)
    oracle = list(sfr.NSIDReader(str(src)).read().values())
    for k, (m, ds) in enumerate(zip(mains, oracle)):
        assert m["quantity"] == ds.quantity and m["units"] == ds.units
        # the x/y scales of the phase channel say 'deg' in the file; usidgpu restores 'm'
        assert m["pos"] == [("x", "m", 256), ("y", "m", 256)]
        np.testing.assert_array_equal(m["nd"][..., 0], np.asarray(ds).astype(m["dtype"]))
        assert any(key.startswith("original_metadata.") for key in _meta(tmp_path / "p.h5", k))
    assert mains[3]["units"] == "deg"


def test_usid_input_refused(tmp_path):
    with pytest.raises(usidgpu.FileProblem, match="already USID"):
        translate(_data("chip.h5"), tmp_path / "c.h5")
    assert not (tmp_path / "c.h5").exists()


# --------------------------------------------------------------------------- Nanonis
def test_sxm(tmp_path, pyusid):
    nap = pytest.importorskip("nanonispy2")
    src = _data("test.sxm")
    translate(src, tmp_path / "s.h5")
    mains = _check_file(tmp_path / "s.h5", pyusid, 4)
    scan = nap.read.Scan(str(src))
    expected = [
        ("Z", "m", "forward"),
        ("Z", "m", "backward"),
        ("Current", "A", "forward"),
        ("Current", "A", "backward"),
    ]
    for m, (q, u, direction) in zip(mains, expected):
        assert (m["quantity"], m["units"]) == (q, u)
        assert m["pos"] == [("Y", "m", 256), ("X", "m", 256)]
        np.testing.assert_allclose(m["pos_values"][1][-1], 5e-6 * 255 / 256, rtol=1e-6)
        raw = scan.signals[q][direction]
        oriented = raw[::-1] if scan.header["scan_dir"] == "up" else raw
        oriented = oriented[:, ::-1] if direction == "backward" else oriented
        np.testing.assert_array_equal(m["nd"][..., 0], oriented)
    meta = _meta(tmp_path / "s.h5", 0)
    assert meta["header.bias"] == pytest.approx(0.2) and meta["header.scan_dir"] == "up"


def test_3ds_grid(tmp_path, pyusid):
    nap = pytest.importorskip("nanonispy2")
    from usidgpu.translate.nanonis import GRID_OPTIONAL

    src = _data("NanonisReader_STS_grid_lockin.3ds")
    translate(src, tmp_path / "g.h5")
    mains = _check_file(tmp_path / "g.h5", pyusid, 5)
    grid = nap.read.Grid(str(src), header_override=GRID_OPTIONAL)
    for m, key in zip(mains, ["Current (A)", "LockinX (V)", "LockinY (V)", "Bias_m (V)"]):
        assert f"{m['quantity']} ({m['units']})" == key
        assert m["pos"] == [("Y", "m", 30), ("X", "m", 30)] and m["spec"] == [("Bias", "V", 200)]
        np.testing.assert_allclose(m["spec_values"][0], grid.signals["sweep_signal"], rtol=1e-6)
        np.testing.assert_array_equal(m["nd"], grid.signals[key])
    np.testing.assert_array_equal(mains[4]["nd"], grid.signals["params"])
    meta = _meta(tmp_path / "g.h5", 0)
    assert meta["header.angle"] == 45.0 and "header.measure_delay" not in meta


# --------------------------------------------------------------------------- CLI
def test_cli_success(tmp_path, capsys):
    src = _data("DMReader_EELS_STO.dm3")
    assert main(["translate", str(src), str(tmp_path / "o.h5")]) == 0
    assert "1 Main dataset" in capsys.readouterr().out
    assert usidgpu.validate(tmp_path / "o.h5") == []


def _fails(capsys, argv, out):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("usidgpu: error:") and "\n" not in err
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.part-*"))
    return err


def test_cli_failures(tmp_path, capsys):
    out = tmp_path / "o.h5"
    (tmp_path / "x.xyz").write_bytes(b"nothing")
    assert "unknown format" in _fails(capsys, ["translate", str(tmp_path / "x.xyz"), str(out)], out)
    assert "no such file" in _fails(capsys, ["translate", str(tmp_path / "missing.dm3"), str(out)], out)
    src = _data("DMReader_Image_SI-Survey.dm3")
    (tmp_path / "bad.dm3").write_bytes(src.read_bytes()[:100_000])
    _fails(capsys, ["translate", str(tmp_path / "bad.dm3"), str(out)], out)
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    _fails(capsys, ["translate", str(tmp_path / "bad.npy"), str(out)], out)
    (tmp_path / "bad.ibw").write_bytes(b"\x05\x00" + b"\x00" * 30)
    _fails(capsys, ["translate", str(tmp_path / "bad.ibw"), str(out)], out)
    out.write_bytes(b"keep me")
    assert main(["translate", str(src), str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
