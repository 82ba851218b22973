"""Every CLI command that computes, with ``--device gpu``: it says so, writes the same results as
``--device cpu`` (in-process and through the block-wise Process framework), and ``--device gpu``
without a GPU is a one-line error, never a silent CPU run.
"""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from helpers import make_file

from usidgpu import Dimension
from usidgpu.atoms.synthetic import lattice_image
from usidgpu.bayes import simulate_giv
from usidgpu.cli import main as cli


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-sources")
    rng = np.random.default_rng(7)
    e = np.linspace(0, 1, 32)
    phases = np.stack([np.exp(-((e - c) ** 2) / 0.01) for c in (0.3, 0.7)])
    labels = rng.integers(0, 2, 24 * 20)
    si = 500 + 200 * phases[labels] + rng.normal(0, 3, (480, 32))
    make_file(folder / "si.h5", data=si.reshape(24, 20, 32).astype(np.float32),
              pos=[Dimension("Y", "nm", 24), Dimension("X", "nm", 20)], spec=[Dimension("E", "eV", e)])  # fmt: skip
    np.save(folder / "image.npy", lattice_image((96, 96), spacing=14, dose=100, seed=3).image.astype(np.float32))
    sim = simulate_giv(12, 128, noise=0.03, seed=6)
    with h5py.File(folder / "giv.h5", "a") as f:
        from usidgpu import write_main

        g = f.require_group("Measurement_000/Channel_000")
        g.attrs["excitation_frequency_[Hz]"] = sim["frequency"]
        pos = [Dimension("Y", "µm", 3), Dimension("X", "µm", 4)]
        current = sim["current"].astype(np.float32).reshape(3, 4, -1)
        write_main(g, "Raw_Data", current, "Current", "nA", pos, [Dimension("Bias", "V", sim["bias"])])
    return folder


def results(path):
    """Every dataset of every results group (groups whose name has a '-Tool_NNN' part)."""
    out = {}
    with h5py.File(path, "r") as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and any("-" in part for part in name.split("/")[:-1]):
                if obj.dtype.kind in "fciub" and obj.dtype.fields is None:
                    out[name] = obj[()]

        f.visititems(visit)
    return out


COMMANDS = {
    "svd": (["svd", "{si}", "-k", "3", "--no-progress"], 1e-4),
    "svd block-wise": (["svd", "{si}", "-k", "3", "--scheduler", "inline", "--no-progress"], 1e-4),
    "pca": (["pca", "{si}", "-k", "2", "--no-progress"], 1e-4),
    "nmf": (["nmf", "{si}", "-k", "2", "--iterations", "15", "--tol", "0", "--no-progress"], 1e-3),
    "cluster": (["cluster", "{si}", "-k", "2", "--no-progress"], 1e-4),
    "cluster block-wise": (["cluster", "{si}", "-k", "2", "--scheduler", "threads", "--no-progress"], 1e-4),
    "denoise": (["denoise", "{image}", "--window", "10", "-k", "5"], 1e-4),
    "atoms": (["atoms", "{image}"], 1e-5),
    "bayes": (["bayes", "{giv}", "--samples", "100", "--grid-points", "60"], 1e-4),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_cli_on_the_device_writes_what_the_cpu_writes(device, sources, tmp_path, capsys, command):
    args, rtol = COMMANDS[command]
    if "--scheduler" in args or command == "bayes":  # bayes runs as a block-wise Process
        pytest.importorskip("zarr", reason="block-wise runs keep their blocks in a zarr store")
    written = {}
    for run, name in (("reference", "cpu"), ("tested", device.name)):
        folder = tmp_path / run
        folder.mkdir()
        paths = {}
        for key, filename in (("si", "si.h5"), ("image", "image.npy"), ("giv", "giv.h5")):
            shutil.copy(sources / filename, folder / filename)
            paths[key] = str(folder / filename)
        argv = [a.format(**paths) for a in args] + ["--device", name]
        assert cli(argv) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert f"{name} (" in out or f"device {name}" in out or f"device        {name}" in out, out
        source = argv[1]
        written[run] = results(source if source.endswith(".h5") else source + ".h5")
    cpu, got = written["reference"], written["tested"]
    assert cpu and sorted(got) == sorted(cpu)
    for key in cpu:
        if np.issubdtype(cpu[key].dtype, np.floating) or np.issubdtype(cpu[key].dtype, np.complexfloating):
            scale = max(float(np.abs(cpu[key]).max(initial=0)), 1e-30)
            np.testing.assert_allclose(got[key], cpu[key], rtol=rtol, atol=rtol * scale, err_msg=key)
        else:
            np.testing.assert_array_equal(got[key], cpu[key], err_msg=key)


@pytest.mark.parametrize("command", ["svd", "denoise", "atoms", "bayes"])
def test_device_gpu_without_a_gpu_is_a_one_line_error(sources, tmp_path, capsys, no_gpu, command):
    args, _ = COMMANDS[command]
    paths = {"si": str(sources / "si.h5"), "image": str(sources / "image.npy"), "giv": str(sources / "giv.h5")}
    argv = [a.format(**paths) for a in args] + ["--device", "gpu", "--no-write"] * (command != "bayes")
    if command == "bayes":
        argv += ["--device", "gpu", "--output", str(tmp_path / "never.h5")]
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "no GPU is usable" in err
