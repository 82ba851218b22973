"""Index/value tables: built like pyUSID builds them, and their layout read back from values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usidgpu import Dimension
from usidgpu.usid.ancillary import GRID, IRREGULAR, SPARSE, build_tables, infer_layout, unit_values


@given(st.lists(st.integers(1, 5), min_size=1, max_size=4))
@settings(max_examples=60, deadline=None)
def test_tables_equal_pyusid_build(pyusid, sizes):
    dims = [Dimension(f"d{i}", "u", np.arange(n) * (i + 1.5)) for i, n in enumerate(sizes)]
    inds, vals = build_tables(dims)
    # pyUSID builds fastest-first, then write_ind_val_dsets flips to slowest-first
    ref_i, ref_v = pyusid.io.anc_build_utils.build_ind_val_matrices([d.values for d in dims[::-1]], is_spectral=False)
    np.testing.assert_array_equal(inds, np.fliplr(ref_i))
    np.testing.assert_allclose(vals, np.fliplr(ref_v))
    assert inds.dtype == np.uint32 and vals.dtype == np.float32


@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.booleans())
@settings(max_examples=80, deadline=None)
def test_layout_inferred_from_values_in_both_orders(sizes, fastest_first):
    dims = [Dimension(f"d{i}", "", np.linspace(0, 1, n)) for i, n in enumerate(sizes)]
    inds, vals = build_tables(dims, fastest_first=fastest_first)
    layout = infer_layout(inds)
    assert layout.kind == GRID
    file_sizes = tuple(sizes[::-1]) if fastest_first else tuple(sizes)
    assert layout.sizes == file_sizes
    # the slowest-first sizes are the dims' sizes, whichever way the file lists them
    # (dimensions of size 1 may sit anywhere: they never change)
    assert [s for s in layout.slow_to_fast_sizes if s > 1] == [s for s in sizes if s > 1]
    for c, v in enumerate(unit_values(inds, vals)):
        ref = dims[::-1][c] if fastest_first else dims[c]
        np.testing.assert_allclose(v, ref.values.astype(np.float32))


def test_single_entry_tables_are_grids():
    inds, vals = build_tables([Dimension("arb", "a.u.", 1)])
    assert inds.shape == (1, 1)
    assert infer_layout(inds) == infer_layout(np.zeros((1, 1), np.uint32))
    assert infer_layout(inds).kind == GRID and infer_layout(inds).sizes == (1,)
    # a single position with several dimensions (pyUSID#82's shape class)
    inds, _ = build_tables([Dimension("X", "nm", 1), Dimension("Y", "nm", 1)])
    assert inds.shape == (1, 2) and infer_layout(inds).kind == GRID


def test_sparse_layout():
    x = Dimension("X", "nm", [150, 200, 100, 100], incomplete=True)
    y = Dimension("Y", "um", [3.75, 0, 3.75, 1.25], incomplete=True)
    inds, vals = build_tables([x, y])
    np.testing.assert_array_equal(inds, np.tile(np.arange(4)[:, None], (1, 2)))
    layout = infer_layout(inds)
    assert layout.kind == SPARSE and not layout.is_grid
    np.testing.assert_allclose(unit_values(inds, vals)[1], y.values)
    with pytest.raises(ValueError, match="one value per position"):
        build_tables([x, Dimension("Y", "um", [1, 2], incomplete=True)])
    with pytest.raises(ValueError, match="cannot mix"):
        build_tables([x, Dimension("Y", "um", 4)])


def test_irregular_layouts():
    inds, _ = build_tables([Dimension("Y", "", 3), Dimension("X", "", 4)])
    assert infer_layout(inds[:-2]).kind == IRREGULAR  # an aborted scan
    serpentine = inds.copy()
    serpentine[4:8, 1] = serpentine[4:8, 1][::-1]
    assert infer_layout(serpentine).kind == IRREGULAR  # not C order: no silent reshape


def test_dimension_validation():
    with pytest.raises(ValueError):
        Dimension("", "nm", 3)
    with pytest.raises(ValueError):
        Dimension("X", "nm", 0)
    with pytest.raises(TypeError):
        Dimension("X", 3, 3)
    with pytest.raises(TypeError):
        Dimension("X", "nm", ["a", "b"])
    d = Dimension(" X ", " m\n", [1, 2])
    assert d.name == "X" and d.units == "m" and len(d) == 2
    assert d == Dimension("X", "m", [1.0, 2.0]) and d != Dimension("X", "nm", [1, 2])
    assert "X" in repr(d)


@pytest.mark.parametrize("dtype", ["uint8", "uint32", "int64", "int16"])
@pytest.mark.parametrize("kind", ["small", "wide", "negative", "grid"])
def test_linear_time_unique_equals_numpy(dtype, kind):
    """The counting path of index columns gives exactly np.unique's values, first positions and
    inverse (and the sorting path takes over where counting does not apply)."""
    from usidgpu.usid.ancillary import _unique_column

    rng = np.random.default_rng(7)
    column = {
        "small": rng.integers(0, 20, 5000),
        "wide": rng.integers(0, 120, 40),  # values beyond 4·n + 1024? no: still counted
        "negative": rng.integers(-3, 3, 300),
        "grid": np.tile(np.arange(64), 64),
    }[kind]
    if np.dtype(dtype).kind == "u":
        column = np.abs(column)
    column = column.astype(dtype)
    got = _unique_column(column)
    want = np.unique(column, return_index=True, return_inverse=True)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, np.asarray(w).reshape(-1))
    assert got[0].dtype == column.dtype
