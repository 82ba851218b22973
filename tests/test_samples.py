"""``sample:NAME`` wherever a FILE is asked for: every command that takes a file, on every shipped
sample — the vendor (DM3) sample translated once into the cache, never written to."""

from __future__ import annotations

import os

import pytest

import usidgpu
from usidgpu.cli import build_parser
from usidgpu.cli import main as cli
from usidgpu.core.errors import FileProblem
from usidgpu.samples import SAMPLES, cache_dir, is_sample, resolve, sample_path
from usidgpu.translate.samples import resolve_usid, usid_sample

#: Every command whose positional argument is a file to read, with arguments that keep it quick.
#: (``translate``/``convert`` read IN; ``resume`` reads the file runs were attached to.)
COMMANDS = {
    "info": [],
    "validate": [],
    "svd": ["-k", "1", "--no-write", "--no-progress"],
    "pca": ["-k", "1", "--no-write", "--no-progress"],
    "nmf": ["-k", "1", "--no-write", "--no-progress"],
    "cluster": ["-k", "1", "--no-write", "--no-progress"],
    "denoise": ["--no-write", "--window", "16", "-k", "2"],
    "atoms": ["--no-write"],
    "bayes": ["--output", "{tmp}/bayes.h5"],
    "resume": [],
    "translate": ["{tmp}/translated.h5"],
    "convert": ["{tmp}/converted.zarr"],
}
#: Errors that say the file could not be read as what the command needs: none may remain.
NOT_READ = ("not an HDF5 file", "no such file", "no such sample", "sample:", "internal error", "Traceback")
#: What must succeed; the rest may refuse the data with a one-line reason (a force curve is no image,
#: holds negative deflections for NMF; no sample is a G-mode file).
MUST_WORK = {
    "stem-image": set("info validate svd pca nmf cluster denoise atoms resume convert".split()),
    "survey-dm3": set("info validate svd pca nmf cluster denoise atoms resume convert translate".split()),
    "force-curve": set("info validate svd pca cluster resume convert".split()),
}


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    """Translations of vendor samples go to a cache of the test session, not the user's."""
    folder = tmp_path_factory.getbasetemp() / "usidgpu-cache"
    monkeypatch.setenv("USIDGPU_CACHE", str(folder))
    return folder


def test_the_table_names_every_command_that_reads_a_file():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    reading = {
        name
        for name, p in sub.choices.items()
        if any(not a.option_strings and a.dest in ("file", "input") for a in p._actions)
    }
    assert reading == set(COMMANDS)  # a new command with a FILE gets a row here, and so a test


@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_file_command_reads_every_sample(command, name, tmp_path, capsys):
    pytest.importorskip("rsciio") if name == "survey-dm3" else None
    args = [a.format(tmp=tmp_path) for a in COMMANDS[command]]
    before = sample_path(name).read_bytes()
    rc = cli([command, f"sample:{name}", *args])
    out, err = capsys.readouterr()
    assert not any(text in err for text in NOT_READ), err
    if command in MUST_WORK[name]:
        assert rc == 0, err
    else:
        assert rc == 2 and err.startswith("usidgpu: error: ") and err.count("\n") == 1, err
    assert sample_path(name).read_bytes() == before  # shipped samples stay as they are


def test_vendor_sample_translated_once_into_the_cache_and_never_written(tmp_path, monkeypatch, capsys):
    pytest.importorskip("rsciio")
    cache = tmp_path / "cache"  # empty: nothing translated yet
    monkeypatch.setenv("USIDGPU_CACHE", str(cache))
    with pytest.raises(FileProblem, match="usid_sample"):  # not translated yet: says how
        resolve("sample:survey-dm3")
    path = resolve_usid("sample:survey-dm3")
    assert path.parent == cache / "samples" == cache_dir() and path.suffix == ".h5"
    stamp = os.stat(path).st_mtime_ns
    assert usid_sample("survey-dm3") == resolve("sample:survey-dm3") == path  # found again, not redone
    assert os.stat(path).st_mtime_ns == stamp
    assert resolve_usid("sample:stem-image") == sample_path("stem-image")  # a USID sample is itself
    assert resolve("sample:survey-dm3", usid=False) == sample_path("survey-dm3")  # the DM3 itself
    assert is_sample(path) and is_sample(sample_path("survey-dm3")) and not is_sample(cache / "other.h5")
    assert usidgpu.validate(path) == []
    with usidgpu.open("sample:survey-dm3") as f:
        assert f.main_datasets()[0].pos_sizes == (512, 512)
    # results are never attached to a sample or its translation: they go to --output
    assert cli(["atoms", "sample:survey-dm3", "--device", "cpu"]) == 2
    assert "sample shipped with usidgpu" in capsys.readouterr().err
    assert os.stat(path).st_mtime_ns == stamp
    out = tmp_path / "atoms.h5"
    assert cli(["atoms", "sample:survey-dm3", "--device", "cpu", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "vacancies     0 " in text and "scan          fast scan line start at" in text
    assert usidgpu.validate(out) == []


def test_unknown_sample_is_one_line(capsys):
    assert cli(["info", "sample:nothing"]) == 2
    err = capsys.readouterr().err
    assert "no such sample; choose one of stem-image, force-curve, survey-dm3" in err and err.count("\n") == 1
