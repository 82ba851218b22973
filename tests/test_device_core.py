"""The device layer, one test body for NumPy and the device: device choice, kernel loading,
blocks streamed onto the device, reductions, writing device data, the dask-cuda cluster.

"gpu" is real CuPy on a GPU machine and the strict CuPy stand-in everywhere else (see conftest).
This module imports neither dask nor zarr, so it runs on a bare GPU machine too.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import assert_waits_do_not_grow_with_blocks, make_file

import usidgpu
from usidgpu import Dimension
from usidgpu.core import device as core_device
from usidgpu.core import kernels
from usidgpu.core.errors import DeviceError

KERNEL = Path(__file__).parent / "kernels" / "scale_add.cu"


@pytest.fixture
def dataset(tmp_path):
    data = np.random.default_rng(0).standard_normal((30, 20, 33)).astype(np.float32)
    path = tmp_path / "g.h5"
    make_file(
        path,
        data=data,
        pos=[Dimension("Y", "nm", 30), Dimension("X", "nm", 20)],
        spec=[Dimension("E", "eV", 33)],
        chunks=(40, 33),
    )
    f = usidgpu.open(path)
    yield f.main_datasets()[0], data.reshape(600, 33)
    f.close()


# ------------------------------------------------------------------------------ device choice
@pytest.mark.gpu
def test_device_selection_finds_the_gpu(gpu):
    dev = usidgpu.select_device("gpu")
    assert dev.is_gpu and dev.xp is gpu.xp
    assert usidgpu.select_device("auto").is_gpu and "auto" in str(usidgpu.select_device("auto"))
    assert usidgpu.memory_budget(device="gpu") > 0


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_loader_compiles_once_per_dtype_and_returns_the_same_kernel(gpu, dtype):
    cp = gpu.xp
    k = kernels.get_kernel(KERNEL, "scale_add", dtype=dtype)
    assert kernels.get_kernel(KERNEL, "scale_add", dtype=dtype) is k  # cached per device and dtype
    n = 1000
    x = cp.arange(n, dtype=dtype)
    y = cp.ones(n, dtype=dtype)
    k(((n + 255) // 256,), (256,), (x, y, dtype(2.5), np.int64(n)))
    np.testing.assert_allclose(cp.asnumpy(y), 2.5 * np.arange(n) + 1)
    fill = kernels.get_kernel(KERNEL, "fill_index")
    assert kernels.get_kernel(KERNEL, "fill_index") is fill
    out = cp.zeros(n, dtype=cp.float32)
    fill(((n + 255) // 256,), (256,), (out, np.int64(n)))
    np.testing.assert_array_equal(cp.asnumpy(out), np.arange(n, dtype=np.float32))


def test_a_kernel_file_in_the_working_directory_is_never_compiled_instead(tmp_path, monkeypatch):
    shipped = kernels.kernel_dir() / "fit_gaussian2d.cu"
    (tmp_path / "fit_gaussian2d.cu").write_text("this is not the kernel\n")
    monkeypatch.chdir(tmp_path)
    assert kernels.kernel_path("fit_gaussian2d.cu") == shipped
    assert kernels.kernel_source("fit_gaussian2d.cu") == shipped.read_text()
    # a path with a folder part is taken as given
    assert kernels.kernel_path(Path(".") / "sub" / "k.cu") == Path("sub/k.cu")


# ------------------------------------------------------------------------------ streaming
@pytest.mark.parametrize("prefetch", [True, False])
def test_blocks_arrive_on_the_device_with_the_same_values(device, dataset, prefetch):
    m, data = dataset
    kept = []
    with device.counting() as counts:
        for b in m.blocks(budget=33 * 4 * 64 * 2, device=device.name, prefetch=prefetch):
            assert device.is_device_array(b.data)
            kept.append((b.rows, b.data * 1))  # touch it with a kernel on the current stream
    assert len(kept) > 3
    got = np.empty_like(data)
    for rows, block in kept:
        got[rows] = device.asnumpy(block)
    np.testing.assert_array_equal(got, data)
    if counts is not None:  # each block goes up once; nothing comes back while streaming
        assert counts.h2d == len(kept) and counts.d2h == 0, counts.summary()


def test_device_blocks_with_range_and_copy(device, dataset):
    m, data = dataset
    kept = [b.data for b in m.blocks(budget="64kB", device=device.name, start=77, stop=411, copy=True)]
    np.testing.assert_array_equal(device.asnumpy(device.xp.concatenate(kept)), data[77:411])


def test_complex_blocks(device, tmp_path):
    data = (np.arange(24) + 1j * np.arange(24)).astype(np.complex64).reshape(6, 4)
    make_file(tmp_path / "c.h5", data=data, pos=[Dimension("X", "", 6)], spec=[Dimension("F", "Hz", 4)])
    with usidgpu.open(tmp_path / "c.h5") as f:
        got = [device.asnumpy(b.data) for b in f.main_datasets()[0].blocks(device=device.name, copy=True)]
    np.testing.assert_array_equal(np.concatenate(got), data)


@pytest.mark.gpu
def test_compound_rows_stream_to_the_cpu_under_auto_and_are_refused_on_the_gpu(gpu, tmp_path):
    dt = np.dtype([("Amplitude", np.float32), ("Phase", np.float32)])
    data = np.zeros((6, 4), dtype=dt)
    data["Amplitude"] = np.arange(24).reshape(6, 4)
    make_file(tmp_path / "be.h5", data=data, pos=[Dimension("X", "", 6)], spec=[Dimension("F", "Hz", 4)])
    with usidgpu.open(tmp_path / "be.h5") as f:
        m = f.main_datasets()[0]
        got = np.concatenate([b.data for b in m.blocks(device="auto", copy=True)])
        np.testing.assert_array_equal(got, data)
        with pytest.raises(TypeError, match="compound dtype"):
            next(iter(m.blocks(device="gpu")))


# ------------------------------------------------------------------------------ reductions
@pytest.mark.parametrize(
    "dims, func", [(["E"], "mean"), (["Y", "X"], "std"), (["X"], "max"), (["Y"], "nansum"), (["Y", "E"], "min")]
)
def test_reductions_equal_numpy(device, dataset, dims, func):
    m, data = dataset
    cube = data.reshape(30, 20, 33)
    axes = tuple(["Y", "X", "E"].index(d) for d in dims)
    expected = getattr(np, func)(cube.astype(np.float64), axis=axes)
    got = m.reduce(dims, func, device=device.name)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize(
    "dtype, funcs",
    [
        (np.complex64, ("sum", "mean")),
        (np.int16, ("sum", "min", "max")),
        (np.uint8, ("sum", "max")),
        (np.int64, ("sum", "min", "max")),
    ],
)
def test_reductions_of_complex_and_integer_data_are_exact(device, tmp_path, dtype, funcs):
    rng = np.random.default_rng(1)
    shape = (9, 7, 5)
    if np.dtype(dtype).kind == "c":
        data = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        data = rng.integers(max(info.min, -(2**40)), min(info.max, 2**40), size=shape, dtype=dtype)
    make_file(
        tmp_path / "d.h5",
        data=data,
        pos=[Dimension("Y", "nm", 9), Dimension("X", "nm", 7)],
        spec=[Dimension("E", "eV", 5)],
    )
    with usidgpu.open(tmp_path / "d.h5") as f:
        m = f.main_datasets()[0]
        for func in funcs:
            for dims, axes in ((["Y", "X"], (0, 1)), (["E"], (2,))):
                expected = getattr(np, func)(data, axis=axes)
                got = m.reduce(dims, func, device=device.name, budget="4kB")
                if np.dtype(dtype).kind in "iu":
                    np.testing.assert_array_equal(got, expected, err_msg=f"{func} over {dims}")
                else:
                    np.testing.assert_allclose(got, expected, rtol=1e-5, err_msg=f"{func} over {dims}")


@pytest.mark.gpu
def test_reductions_make_no_host_waits_per_block(gpu, dataset):
    m, _ = dataset
    waits = assert_waits_do_not_grow_with_blocks(
        gpu, lambda budget: m.reduce(["Y", "X"], "std", device="gpu", budget=budget), budgets=("8kB", "64kB")
    )
    assert waits[0] <= 3


# ------------------------------------------------------------------------------ writing
def test_write_main_takes_device_data(device, tmp_path):
    data = np.random.default_rng(2).standard_normal((4, 5, 6)).astype(np.float32)
    with h5py.File(tmp_path / "w.h5", "w") as f:
        main = usidgpu.write_main(
            f.create_group("Measurement_000/Channel_000"),
            "Raw_Data",
            device.asarray(data),
            "Current",
            "nA",
            [Dimension("Y", "nm", 4), Dimension("X", "nm", 5)],
            [Dimension("Bias", "V", 6)],
        )
        np.testing.assert_array_equal(main.h5[()], data.reshape(20, 6))
    assert usidgpu.validate(tmp_path / "w.h5") == []


# ------------------------------------------------------------------------------ dask-cuda
def test_cuda_cluster_keeps_the_gpus_a_batch_scheduler_assigned(monkeypatch):
    """SLURM/PBS hand a job its GPUs in CUDA_VISIBLE_DEVICES: the cluster must use those (dask-cuda
    reads the variable), taking the first n for --workers n, never override it with 0..n-1."""
    from usidgpu.parallel import executors

    made = {}

    class FakeCluster:
        def __init__(self, **kwargs):
            made.update(kwargs)

        def close(self):
            pass

    class FakeClient:
        def __init__(self, cluster):
            self.cluster = cluster

        def scheduler_info(self):
            return {"workers": {"a": {}, "b": {}}}

    monkeypatch.setitem(sys.modules, "dask_cuda", types.SimpleNamespace(LocalCUDACluster=FakeCluster))
    monkeypatch.setitem(sys.modules, "distributed", types.SimpleNamespace(Client=FakeClient))
    monkeypatch.setattr(core_device, "gpu_status", lambda: (True, "GPU 0: test"))
    fake_cupy = types.SimpleNamespace(
        cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 2))
    )
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    ex = executors._cuda_cluster(2)
    assert "CUDA_VISIBLE_DEVICES" not in made and made["n_workers"] == 2
    assert ex.n_workers == 2
    made.clear()
    executors._cuda_cluster(None)
    assert "CUDA_VISIBLE_DEVICES" not in made and "n_workers" not in made
    with pytest.raises(DeviceError, match=r"--workers 3 .* 2 \(CUDA_VISIBLE_DEVICES=5,7\)"):
        executors._cuda_cluster(3)
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5,7"


@pytest.mark.gpu
def test_local_cuda_cluster_equals_the_in_process_run(gpu, tmp_path):
    if gpu.kind != "cupy":
        pytest.skip("dask-cuda workers need a real GPU")
    pytest.importorskip("dask_cuda", reason="dask-cuda is not installed")
    from usidgpu.parallel.fits import PolynomialFit

    x = np.linspace(-1, 1, 32)
    data = np.random.default_rng(2).standard_normal((20, 30, 32)).astype(np.float32)
    path = tmp_path / "iv.h5"
    make_file(path, data, pos=[Dimension("Y", "nm", 20), Dimension("X", "nm", 30)], spec=[Dimension("Bias", "V", x)])
    copy = tmp_path / "copy.h5"
    copy.write_bytes(path.read_bytes())
    with usidgpu.open(path) as f:
        ref = PolynomialFit(f.main_datasets()[0], degree=2, rows_per_block=64, progress=False).run()
    with usidgpu.open(copy) as f:
        got = PolynomialFit(
            f.main_datasets()[0], degree=2, rows_per_block=64, scheduler="cuda", device="gpu", progress=False
        ).run()
    with h5py.File(path, "r") as a, h5py.File(copy, "r") as b:
        np.testing.assert_allclose(b[got + "/Coefficients"][()], a[ref + "/Coefficients"][()], rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------ Process framework
@pytest.mark.parametrize("scheduler", [None, "threads"])
def test_block_wise_process_on_the_device_equals_numpy(device, tmp_path, scheduler):
    """The Process framework reads each block onto the device and computes it there; the
    coefficients equal NumPy's least-squares fit of every spectrum."""
    pytest.importorskip("zarr", reason="block-wise runs keep their blocks in a zarr store")
    from usidgpu.parallel.fits import PolynomialFit

    x = np.linspace(-1, 1, 32)
    rng = np.random.default_rng(2)
    coef = rng.standard_normal((600, 3))
    data = (coef @ np.vander(x, 3).T + 0.01 * rng.standard_normal((600, 32))).astype(np.float32)
    path = tmp_path / "iv.h5"
    make_file(path, data.reshape(20, 30, 32), pos=[Dimension("Y", "nm", 20), Dimension("X", "nm", 30)],
              spec=[Dimension("Bias", "V", x)])  # fmt: skip
    with usidgpu.open(path) as f:
        group = PolynomialFit(
            f.main_datasets()[0], degree=2, rows_per_block=64, scheduler=scheduler, device=device.name, progress=False
        ).run()
    expected = np.linalg.lstsq(np.vander(x, 3), data.astype(np.float64).T, rcond=None)[0].T
    with h5py.File(path, "r") as f:
        np.testing.assert_allclose(f[group + "/Coefficients"][()], expected, rtol=1e-4, atol=1e-5)
