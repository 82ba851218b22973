"""Round trips with pyUSID 0.0.12 in both directions, on random dimensions, units and dtypes."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import usidgpu
from usidgpu import Dimension

UNITS = ["nm", "µm", "Å", "°", "", "V", "a. u.", "m"]
LABELS = ["X", "Y", "Z", "Bias", "Cycle", "Frequency", "Field", "Time", "Température"]
COMPOUND = np.dtype([("Amplitude", np.float32), ("Phase", np.float32)])
DTYPES = [np.float32, np.float64, np.int16, np.uint8, np.complex64, COMPOUND]


@st.composite
def datasets(draw):
    n_pos = draw(st.integers(1, 3))
    n_spec = draw(st.integers(1, 2))
    labels = draw(st.permutations(LABELS))[: n_pos + n_spec]
    sizes = [draw(st.integers(1, 4)) for _ in range(n_pos + n_spec)]
    units = [draw(st.sampled_from(UNITS)) for _ in range(n_pos + n_spec)]
    dims = [
        Dimension(lab, u, np.round(np.linspace(-1, 2, n) * (i + 1), 3))
        for i, (lab, u, n) in enumerate(zip(labels, units, sizes))
    ]
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shape = tuple(sizes)
    if dtype.fields:
        data = np.empty(shape, dtype)
        data["Amplitude"] = rng.random(shape)
        data["Phase"] = rng.random(shape)
    elif dtype.kind == "c":
        data = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    else:
        data = (rng.random(shape) * 100).astype(dtype)
    return dims[:n_pos], dims[n_pos:], data


def _decode(x):
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.atleast_1d(x)]


def _pyusid_view(pyusid, path, name):
    """What pyUSID reports about a Main dataset (its n-d form, or the error it raises)."""
    with h5py.File(path, "r") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert pyusid.hdf_utils.check_if_main(f[name])
        u = pyusid.USIDataset(f[name])
        try:
            nd = np.asarray(u.get_n_dim_form())
        except Exception as exc:
            nd = type(exc).__name__
        return {
            "pos_labels": list(u.pos_dim_labels),
            "spec_labels": list(u.spec_dim_labels),
            "pos_sizes": [int(x) for x in u.pos_dim_sizes],
            "spec_sizes": [int(x) for x in u.spec_dim_sizes],
            "pos_units": _decode(pyusid.hdf_utils.get_attr(u.h5_pos_inds, "units")),
            "spec_units": _decode(pyusid.hdf_utils.get_attr(u.h5_spec_vals, "units")),
            "quantity": pyusid.hdf_utils.get_attr(u, "quantity"),
            "units": pyusid.hdf_utils.get_attr(u, "units"),
            "pos_values": u.h5_pos_vals[()],
            "spec_values": u.h5_spec_vals[()],
            "nd": nd,
        }


def _assert_same_view(a, b):
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert isinstance(b[key], np.ndarray) and a[key].shape == b[key].shape, key
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key] == b[key], key


@given(datasets(), st.sampled_from(["slow_to_fast", "fast_to_slow"]))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_pyusid_reads_what_usidgpu_writes(pyusid, tmp_path_factory, case, dim_order):
    pos, spec, data = case
    folder = tmp_path_factory.mktemp("w")
    with h5py.File(folder / "ours.h5", "w") as f:
        m = usidgpu.write_main(
            f.create_group("Measurement_000/Channel_000"),
            "Raw_Data",
            data,
            "Quantité",
            "µA",
            pos,
            spec,
            dim_order=dim_order,
        )
        name, shape2d = m.name, m.shape
    ours = _pyusid_view(pyusid, folder / "ours.h5", name)

    truth_matches = True
    if dim_order == "slow_to_fast":
        # Oracle 1: pyUSID reads our file exactly as it reads its own file of the same data —
        # including pyUSID's own misreadings of degenerate tables (pyUSID#82: several
        # dimensions of size 1 on one side), which no writer can avoid.
        to_pd = lambda dims: [pyusid.Dimension(d.name, d.units, d.values) for d in dims]  # noqa: E731
        with h5py.File(folder / "theirs.h5", "w") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pyusid.hdf_utils.write_main_dataset(
                f.create_group("Measurement_000/Channel_000"),
                data.reshape(shape2d),
                "Raw_Data",
                "Quantité",
                "µA",
                to_pd(pos),
                to_pd(spec),
                slow_to_fast=True,
            )
        theirs = _pyusid_view(pyusid, folder / "theirs.h5", name)
        _assert_same_view(ours, theirs)
        truth_matches = theirs["pos_sizes"] == [d.size for d in pos] and theirs["spec_sizes"] == [d.size for d in spec]
    else:
        truth_matches = all(len(side) == 1 or all(d.size > 1 for d in side) for side in (pos, spec))
    if not truth_matches:
        return
    # Oracle 2: the known truth
    flip = (lambda x: list(x)[::-1]) if dim_order == "fast_to_slow" else list
    assert ours["pos_labels"] == flip([d.name for d in pos])
    assert ours["spec_labels"] == flip([d.name for d in spec])
    assert ours["pos_sizes"] == flip([d.size for d in pos])
    assert ours["spec_sizes"] == flip([d.size for d in spec])
    assert ours["pos_units"] == flip([d.units for d in pos])
    assert ours["spec_units"] == flip([d.units for d in spec])
    assert (ours["quantity"], ours["units"]) == ("Quantité", "µA")
    n_p, n_s = len(pos), len(spec)
    axes = tuple(flip(range(n_p))) + tuple(n_p + a for a in flip(range(n_s)))
    np.testing.assert_array_equal(ours["nd"], np.transpose(data, axes))


@given(datasets(), st.booleans())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_usidgpu_reads_what_pyusid_writes(pyusid, tmp_path_factory, case, slow_to_fast):
    pos, spec, data = case
    path = tmp_path_factory.mktemp("p") / "theirs.h5"
    to_pd = lambda dims: [pyusid.Dimension(d.name, d.units, d.values) for d in dims]  # noqa: E731
    listed_pos, listed_spec = (pos, spec) if slow_to_fast else (pos[::-1], spec[::-1])
    with h5py.File(path, "w") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pyusid.hdf_utils.write_main_dataset(
            f.create_group("Measurement_000/Channel_000"),
            data.reshape(int(np.prod([d.size for d in pos])), -1),
            "Raw_Data",
            "Quantité",
            "µA",
            to_pd(listed_pos),
            to_pd(listed_spec),
            slow_to_fast=slow_to_fast,
        )
    with usidgpu.open(path) as f:
        (m,) = f.main_datasets()
        assert [d.name for d in m.pos_dims] == [d.name for d in pos]  # pyUSID writes slowest first
        assert [d.name for d in m.spec_dims] == [d.name for d in spec]
        assert m.pos_dims == [Dimension(d.name, d.units, d.values.astype(np.float32)) for d in pos]
        assert m.spec_dims == [Dimension(d.name, d.units, d.values.astype(np.float32)) for d in spec]
        assert (m.quantity, m.units) == ("Quantité", "µA")
        assert m.dtype == data.dtype
        assert m.nd_shape == data.shape
        np.testing.assert_array_equal(m.to_ndim(), data)
        assert usidgpu.validate(f) == []
    theirs = _pyusid_view(pyusid, path, "/Measurement_000/Channel_000/Raw_Data")
    if theirs["pos_sizes"] == [d.size for d in pos] and theirs["spec_sizes"] == [d.size for d in spec]:
        np.testing.assert_array_equal(theirs["nd"], data)  # where pyUSID reads it right, we agree
