"""Streaming in blocks: the plan, the values, prefetching, and peak memory within the budget."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from helpers import make_file

import usidgpu
from usidgpu import Dimension
from usidgpu.core.errors import BudgetError
from usidgpu.core.stream import iter_blocks, plan_blocks


def test_plan_fits_budget_and_aligns_to_chunks():
    plan = plan_blocks(n_rows=10_000, row_bytes=4096, budget=10 * 2**20, chunk_rows=64)
    assert plan.peak_bytes <= 10 * 2**20
    assert plan.rows_per_block % 64 == 0
    assert plan.rows_per_block == (10 * 2**20 // 2 // 4096) // 64 * 64
    blocks = list(plan)
    assert blocks[0] == (0, plan.rows_per_block) and blocks[-1][1] == 10_000
    assert all(b0[1] == b1[0] for b0, b1 in zip(blocks, blocks[1:]))
    assert len(plan) == len(blocks)


def test_plan_caps_block_size_and_handles_small_budgets():
    plan = plan_blocks(10**6, 1000, budget=10**12, max_block_bytes=10**6)
    assert plan.rows_per_block == 1000
    one = plan_blocks(100, 1000, budget=2000)  # room for exactly one row per buffer
    assert one.rows_per_block == 1 and one.n_blocks == 100
    with pytest.raises(BudgetError, match="one position takes"):
        plan_blocks(100, 1000, budget=1500)
    ranged = plan_blocks(100, 10, budget=400, start=30, stop=55)
    assert list(ranged)[0][0] == 30 and list(ranged)[-1][1] == 55 and ranged.n_rows == 25


@pytest.fixture
def big(tmp_path):
    path = tmp_path / "big.h5"
    data = np.random.default_rng(1).standard_normal((40, 30, 17)).astype(np.float32)
    make_file(
        path,
        data=data,
        pos=[Dimension("Y", "nm", 40), Dimension("X", "nm", 30)],
        spec=[Dimension("E", "eV", 17)],
        chunks=(50, 17),
    )
    return path, data.reshape(1200, 17)


@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.parametrize("budget", [2 * 17 * 4, 17 * 4 * 200, "1MB"])
def test_blocks_cover_every_row_once(big, prefetch, budget):
    path, data = big
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        seen = np.zeros(m.n_positions, int)
        out = np.empty_like(data)
        for b in m.blocks(budget=budget, prefetch=prefetch):
            assert isinstance(b.data, np.ndarray) and b.data.shape == (b.stop - b.start, 17)
            out[b.rows] = b.data
            seen[b.rows] += 1
        assert (seen == 1).all()
        np.testing.assert_array_equal(out, data)


def test_blocks_reuse_buffers_unless_copied(big):
    path, data = big
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        views = [b.data for b in m.blocks(budget=17 * 4 * 100 * 2)]
        copies = [b.data for b in m.blocks(budget=17 * 4 * 100 * 2, copy=True)]
    assert len({v.__array_interface__["data"][0] for v in views}) <= 2  # two reused buffers
    np.testing.assert_array_equal(np.concatenate(copies), data)


def test_buffers_are_kept_between_passes_but_never_shared(big):
    path, data = big
    budget = 17 * 4 * 100 * 2
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        first = {b.data.__array_interface__["data"][0] for b in m.blocks(budget=budget)}
        second = {b.data.__array_interface__["data"][0] for b in m.blocks(budget=budget)}
        assert first == second  # the second pass reused the first pass's buffers
        # two passes at once each get their own buffers and both see the right data
        a, b = m.blocks(budget=budget), m.blocks(budget=budget)
        for x, y in zip(a, b):
            assert x.data.__array_interface__["data"][0] != y.data.__array_interface__["data"][0]
            np.testing.assert_array_equal(x.data, data[x.rows])
            np.testing.assert_array_equal(y.data, data[y.rows])
        m.release_buffers()
        assert m._buffers._free == []
        # alternating prefetch on/off reuses the same buffers when the block shape is the same
        # (here: one block of the whole dataset either way)
        on = {b.data.__array_interface__["data"][0] for b in m.blocks(budget="1MB")}
        off = {b.data.__array_interface__["data"][0] for b in m.blocks(budget="1MB", prefetch=False)}
        assert off == on


def test_blocks_range_and_early_stop(big):
    path, data = big
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        part = np.concatenate([b.data for b in m.blocks(budget="16kB", start=100, stop=733, copy=True)])
        np.testing.assert_array_equal(part, data[100:733])
        it = m.blocks(budget="8kB")
        first = next(it)
        assert first.start == 0
        it.close()  # stops the prefetch thread without hanging
        import threading

        assert not [t for t in threading.enumerate() if t.name == "usidgpu-prefetch"]


def test_read_errors_reach_the_caller(big, monkeypatch):
    path, _ = big
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        calls = {"n": 0}
        real = h5py.Dataset.read_direct

        def flaky(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError("simulated read failure")
            return real(self, *args, **kwargs)

        monkeypatch.setattr(h5py.Dataset, "read_direct", flaky)
        with pytest.raises(OSError, match="simulated read failure"):
            for _ in m.blocks(budget="8kB"):
                pass


def test_gpu_device_without_gpu_is_an_error(big, no_gpu):
    path, _ = big
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        with pytest.raises(usidgpu.DeviceError, match="no GPU is usable"):
            next(m.blocks(device="gpu"))


def test_compound_blocks(tmp_path):
    dt = np.dtype([("amp", np.float32), ("phase", np.float32)])
    data = np.zeros((6, 4), dt)
    data["amp"] = np.arange(24).reshape(6, 4)
    make_file(tmp_path / "c.h5", data=data, pos=[Dimension("X", "", 6)], spec=[Dimension("F", "Hz", 4)])
    with usidgpu.open(tmp_path / "c.h5") as f:
        got = np.concatenate([b.data for b in iter_blocks(f.main_datasets()[0].h5, budget=64, copy=True)])
    np.testing.assert_array_equal(got, data)


PEAK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import usidgpu

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    path, budget, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with usidgpu.open(path) as f:
        m = f.main_datasets()[0]
        m.blocks  # imports done, file open
        base = status("VmRSS:")
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak (VmHWM) to the current RSS
        total = 0.0
        if mode == "stream":
            for b in m.blocks(budget=budget):
                total += float(b.data[:, 0].sum())
        elif mode == "reduce":
            total = float(m.reduce(["X"], "mean", budget=budget).sum())
        else:
            total = float(m[()][:, 0].sum())
        peak = status("VmHWM:")
    print(json.dumps({"base": base, "peak": peak, "total": total}))
    """
)


def _peak(path, budget, mode):
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(path), str(budget), mode],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def large_file(tmp_path_factory):
    """256 MiB of float32, written block by block with the incremental API."""
    path = tmp_path_factory.mktemp("large") / "large.h5"
    n_y, n_x, n_spec = 256, 256, 1024
    with h5py.File(path, "w") as f:
        m = usidgpu.write_main(
            f.create_group("Measurement_000/Channel_000"),
            "Raw_Data",
            None,
            "Counts",
            "",
            [Dimension("Y", "nm", n_y), Dimension("X", "nm", n_x)],
            [Dimension("E", "eV", n_spec)],
        )
        ramp = np.arange(n_spec, dtype=np.float32)
        for start in range(0, n_y * n_x, 8192):
            rows = np.arange(start, start + 8192, dtype=np.float32)[:, None]
            m.write_rows(start, rows + ramp)
    return path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_peak_memory_stays_within_budget(large_file):
    budget = 32 * 2**20
    dataset_bytes = 256 * 256 * 1024 * 4
    assert dataset_bytes >= 8 * budget
    streamed = _peak(large_file, budget, "stream")
    expected_total = float(np.arange(256 * 256, dtype=np.float64).sum())
    assert streamed["total"] == pytest.approx(expected_total)  # every block was read
    growth = streamed["peak"] - streamed["base"]
    assert growth <= budget + 16 * 2**20, f"streaming grew RSS by {growth / 2**20:.1f} MiB"
    # the same measurement on a whole read is 8x larger: the test can tell the difference
    whole = _peak(large_file, budget, "whole")
    assert whole["peak"] - whole["base"] >= 0.9 * dataset_bytes
    reduced = _peak(large_file, budget, "reduce")
    assert reduced["peak"] - reduced["base"] <= budget + 16 * 2**20 + 256 * 1024 * 8 * 3


def test_big_endian_data_arrive_in_native_order(tmp_path):
    data = np.arange(60, dtype=">f4").reshape(12, 5)
    make_file(tmp_path / "be.h5", data=data, pos=[Dimension("X", "", 12)], spec=[Dimension("E", "eV", 5)], dtype=">f4")
    with usidgpu.open(tmp_path / "be.h5") as f:
        m = f.main_datasets()[0]
        assert m.dtype == np.dtype(">f4")
        blocks = [b.data for b in m.blocks(budget=64, copy=True)]
    assert all(b.dtype == np.dtype("=f4") for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), data)
