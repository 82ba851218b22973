"""usidgpu.translate and `usidgpu translate`: the registry, refusals and the command line.

Every format and sample file is checked against its reader library (the oracle), validated and
read back by pyUSID in the reader conformance suite, tests/test_conformance_readers.py."""

from __future__ import annotations

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


def test_readers_listed():
    names = {r["format"] for r in readers()}
    assert {"DM3/DM4", "IBW", "SXM", "3DS", "NSID", "TIFF", "NPY", "EMD"} <= names


# The per-format checks (every format and sample file against its reader library, validation,
# metadata, unchanged input, damaged input) live in test_conformance_readers.py.


def test_usid_input_refused(tmp_path):
    with pytest.raises(usidgpu.FileProblem, match="already USID"):
        translate(_data("chip.h5"), tmp_path / "c.h5")
    assert not (tmp_path / "c.h5").exists()


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
    assert not list(out.parent.glob(f".{out.name}*"))  # no work folder (or older .part-PID file)
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


def test_a_read_only_nsid_file_translates_and_stays_untouched(tmp_path):
    src = DATA_DIR / "PTO_Funakubo0001.h5"
    if not src.is_file():
        pytest.skip(f"{src} is absent")
    pytest.importorskip("SciFiReaders")
    mine = tmp_path / "in.h5"
    mine.write_bytes(src.read_bytes())
    mine.chmod(0o444)
    before = (mine.read_bytes(), mine.stat().st_mtime_ns)
    translate(mine, tmp_path / "out.h5")
    assert usidgpu.validate(tmp_path / "out.h5") == []
    assert (mine.read_bytes(), mine.stat().st_mtime_ns) == before
