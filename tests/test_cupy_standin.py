"""The CuPy stand-in (tests/cupy_standin) behaves like CuPy where callers can tell.

Each test names the CuPy behaviour it pins down; the stand-in's modules cite CuPy's source.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
import threading
import types
import warnings
from pathlib import Path

import cupy_standin as cs
import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def cp(monkeypatch):
    cs.reset()
    yield cs.install_into(monkeypatch)
    cs.reset()


@pytest.fixture
def cupyx(cp):
    import cupyx

    return cupyx


# -- activation ---------------------------------------------------------------------------------------


def test_install_puts_modules_with_specs_and_restores_sys_modules(monkeypatch):
    sentinel = types.ModuleType("cupy")
    monkeypatch.setitem(sys.modules, "cupy", sentinel)
    monkeypatch.setitem(sys.modules, "cupy._core", types.ModuleType("cupy._core"))
    with cs.install() as cp:
        import cupy
        import cupy.cuda.runtime
        import cupy.lib.stride_tricks
        import cupyx.scipy.special

        assert cupy is cp and sys.modules["cupy"] is cp
        assert "cupy._core" not in sys.modules  # a real CuPy's leftovers are hidden
        for name in ("cupy", "cupy.cuda", "cupy.cuda.runtime", "cupy.linalg", "cupy.fft", "cupy.random", "cupyx"):
            assert importlib.util.find_spec(name) is not None
        assert cupy.cuda.runtime is sys.modules["cupy.cuda.runtime"]
        assert cupy.lib.stride_tricks.sliding_window_view.__module__ == "cupy.lib.stride_tricks"
        assert callable(cupyx.scipy.special.erf)
        with pytest.raises(ImportError):
            import cupy.nonexistent  # noqa: F401
    assert sys.modules["cupy"] is sentinel and "cupy._core" in sys.modules
    assert "cupyx" not in sys.modules and "cupy.cuda" not in sys.modules


def test_install_resets_usidgpu_gpu_status():
    from usidgpu.core import device as backend

    outside = backend.gpu_status()
    with cs.install():
        usable, why = backend.gpu_status()
        assert usable and "cupy_standin" in why
        assert backend.select_device("gpu").is_gpu
    assert backend.gpu_status() == outside


def test_install_into_monkeypatch_and_cuml(monkeypatch):
    from usidgpu.core import device as backend

    cs.install_into(monkeypatch, cuml=True)
    import cuml

    assert importlib.util.find_spec("cuml") is not None and cuml.PCA.__module__ == "cuml"
    assert backend.select_device("gpu").is_gpu


def test_subprocess_shim_gives_the_standin():
    code = (
        "import importlib.util, sys; assert importlib.util.find_spec('cupy') is not None\n"
        "import cupy, cupyx, cuml\n"
        "x = cupy.arange(3)\n"
        "print(type(x).__module__, type(x).__name__, cupy.__name__, cupyx.empty_pinned.__module__,"
        " cuml.KMeans.__name__)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(cs.SITE_DIR), str(cs.SITE_CUML_DIR), str(TESTS)]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["cupy", "ndarray", "cupy", "cupyx", "KMeans"]


# -- the ndarray: no implicit host conversion, no host operands ---------------------------------------------


def test_implicit_conversion_to_numpy_fails(cp):
    x = cp.arange(4.0)
    assert type(x).__module__ == "cupy" and not isinstance(x, np.ndarray)
    for convert in (np.asarray, np.array, lambda a: np.asarray([a, a]), lambda a: np.float64(a) + np.zeros(2)):
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
            convert(x)


@pytest.mark.parametrize("host", [np.ones(4), np.array(1.0)], ids=["1-d", "0-d"])
def test_numpy_operands_are_refused_from_either_side(cp, host):
    x = cp.ones(4)
    msg = r"Unsupported type <class 'numpy.ndarray'>"
    for op in (lambda: x + host, lambda: host + x, lambda: x * host, lambda: cp.add(x, host), lambda: np.add(host, x)):
        with pytest.raises(TypeError, match=msg):
            op()
    with pytest.raises(TypeError, match=msg):
        x += host
    with pytest.raises(TypeError, match="Only cupy arrays can be concatenated"):
        cp.concatenate([x, host])
    with pytest.raises(TypeError, match=msg):
        cp.where(x > 0, x, host)
    with pytest.raises(TypeError, match="Unsupported type <class 'list'>"):
        cp.maximum(x, [1, 2, 3, 4])


def test_scalars_are_fine_and_comparisons_take_0d_host_arrays(cp):
    x = cp.arange(4.0)
    assert ((x + 1) * np.float32(2) - True).get().tolist() == [1.0, 3.0, 5.0, 7.0]
    assert int((x > np.array(1.5)).sum()) == 2  # CuPy's workaround: 0-d operands of comparisons


def test_numpy_functions_dispatch_to_the_standin(cp):
    x = cp.arange(6.0).reshape(2, 3)
    s = np.sum(x, axis=0)
    assert type(s) is cp.ndarray and s.get().tolist() == [3.0, 5.0, 7.0]
    assert type(np.linalg.norm(x)) is cp.ndarray
    with pytest.raises(TypeError, match="no implementation found"):
        np.nanpercentile(x, 50)  # CuPy has no nanpercentile: NumPy refuses
    with pytest.raises(TypeError, match="Wrong arguments"):
        np.add(x, 1, where=x > 2)  # cupy ufuncs take no where=
    z = cp.zeros(3)
    np.add.at(z, cp.asarray([0, 0, 2]), 1.0)
    assert z.get().tolist() == [2.0, 0.0, 1.0]
    assert np.add.reduce(x).get().tolist() == [3.0, 5.0, 7.0]
    assert np.multiply.outer(cp.arange(2), cp.arange(3)).shape == (2, 3)
    with pytest.raises(NotImplementedError):
        np.maximum.reduce(x)  # only add/multiply reduce on CuPy
    with pytest.raises(NotImplementedError):
        cp.multiply.at(z, cp.asarray([0]), 2.0)


def test_reductions_and_elements_are_0d_device_arrays(cp):
    x = cp.arange(6.0).reshape(2, 3)
    for r in (x.sum(), cp.max(x), x[1, 2], x.mean(), cp.allclose(x, x), cp.count_nonzero(x), cp.array_equal(x, x)):
        assert type(r) is cp.ndarray and r.shape == ()
    e = x[1, 2]
    e += 10  # a 0-d view: writes through
    assert x.get()[1, 2] == 15.0


def test_conversions_are_counted_transfers_and_waits(cp):
    x = cp.arange(4.0)
    with cs.counters() as c:
        assert float(x[1]) == 1.0 and int(x[2]) == 2 and complex(x[3]) == 3 and bool(x[1])
        assert x[2].item() == 2.0 and x.tolist() == [0.0, 1.0, 2.0, 3.0]
        assert repr(x[0]) == "array(0.)" and f"{x[3]:.1f}" == "3.0"
    assert c.d2h == 8 and c.syncs == 8 and c.h2d == 0
    with pytest.raises(ValueError, match="more than one element"):
        bool(x)
    with pytest.warns(DeprecationWarning):
        assert not bool(cp.zeros(0))
    with pytest.raises(ValueError, match="size 1"):
        x.item()
    with pytest.raises(TypeError, match="cannot be interpreted as an integer"):
        range(cp.asarray(3))  # no __index__
    with pytest.raises(TypeError, match="unhashable"):
        hash(x)


def test_get_set_asnumpy(cp):
    x = cp.arange(6, dtype=np.float32).reshape(2, 3)
    with cs.counters() as c:
        a = x.get()
        b = cp.asnumpy(x, order="F")
        out = np.empty((2, 3), np.float32)
        assert x.get(out=out) is out
    assert c.d2h == 3 and c.syncs == 3
    assert isinstance(a, np.ndarray) and b.flags.f_contiguous and np.array_equal(out, a)
    host = np.arange(3)
    assert cp.asnumpy(host) is host
    with pytest.raises(TypeError, match="float64 array cannot be set to float32 array"):
        x.set(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="Shape mismatch"):
        x.set(np.zeros(6, np.float32))
    with pytest.raises(RuntimeError, match="non-contiguous"):
        x[:, ::2].set(np.zeros((2, 2), np.float32))
    with cs.counters() as c:
        x.set(np.full((2, 3), 7, np.float32))
    assert c.h2d == 1 and x.get().max() == 7
    with pytest.raises(TypeError, match="Only numpy.ndarray can be set"):
        x.set(x)


def test_iteration_len_and_containment(cp):
    x = cp.arange(3)
    items = list(x)
    assert all(type(i) is cp.ndarray and i.shape == () for i in items) and len(x) == 3
    with cs.counters() as c:
        assert 2 in x  # no __contains__ in CuPy: element by element, each read back
    assert c.d2h == 3
    with pytest.raises(TypeError, match="0-d"):
        iter(cp.asarray(1.0))


def test_only_cupy_attributes_exist(cp):
    x = cp.ones((2, 3))
    for name in ("ctypes", "itemset", "newbyteorder", "resize", "__array_interface__", "setflags", "__index__"):
        assert not hasattr(x, name), name
    assert x.flags.c_contiguous and x.flags["C_CONTIGUOUS"] and x.T.flags.f_contiguous
    assert x.strides == (24, 8) and x.nbytes == 48 and x.itemsize == 8 and x.device.id == 0
    cai = x.__cuda_array_interface__
    assert cai["version"] == 3 and cai["data"][0] == x.data.ptr and cai["strides"] is None
    assert pickle.loads(pickle.dumps(x)).get().tolist() == x.get().tolist()


def test_views_share_memory_and_name_their_base(cp):
    x = cp.zeros((4, 4))
    assert x.base is None
    v = x[1:3]
    assert v.base is x and v[0].base is x and x.T.base is x and x.reshape(16).base is x
    v += 1
    x[:, 0][...] = 5
    x.diagonal()[:] = 9  # a writable view on CuPy (NumPy's is read-only)
    got = x.get()
    assert got[1:3, 1:].min() >= 1 and (got[:, 0] == np.array([9, 5, 5, 5])).all() and got[2, 2] == 9
    assert (x[1:3] + 0).base is None


# -- indexing ---------------------------------------------------------------------------------------------


def test_host_index_arrays_are_uploaded_and_wrap_around(cp):
    x = cp.arange(5) * 10
    with cs.counters() as c:
        assert x[np.array([1, 6])].get().tolist() == [10, 10]  # 6 wraps to 1 (NumPy: IndexError)
        assert x[[0, -6]].get().tolist() == [0, 40]
    assert c.h2d == 2
    with cs.counters() as c:
        assert x[cp.asarray([7])].get().tolist() == [20]
        assert cp.take(x, cp.asarray([5])).get().tolist() == [0]
        assert cp.take_along_axis(x, cp.asarray([9]), 0).get().tolist() == [40]
    with pytest.raises(IndexError):
        x[5]  # scalar indices are still checked


def test_boolean_masks_read_their_count_back(cp):
    x = cp.arange(6)
    with cs.counters() as c:
        y = x[x > 2]
        x[x > 4] = 0
        cp.nonzero(x)
        cp.where(x > 1)
    assert y.get().tolist() == [3, 4, 5] and c.syncs == 4 and c.d2h == 4 and c.h2d == 0


def test_assigning_host_arrays(cp):
    x = cp.zeros((2, 3))
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
        x[0] = np.ones(3)  # basic indexing goes to fill(): CuPy refuses CPU arrays (gh-2079)
    with pytest.raises(ValueError, match="non-scalar"):
        x[:] = [[1, 2, 3], [4, 5, 6]]
    x[0] = np.array(2.0)  # a 0-d host array is a scalar to fill()
    with cs.counters() as c:
        x[[1]] = np.arange(3.0)  # advanced indexing uploads the value
    assert c.h2d == 2 and x.get().tolist() == [[2, 2, 2], [0, 1, 2]]
    x[1] = cp.asarray([7.0, 8.0, 9.0])
    x[0, 1] = np.float32(4)
    assert x.get().tolist() == [[2, 4, 2], [7, 8, 9]]


# -- the namespace --------------------------------------------------------------------------------------


def test_only_cupy_names_exist(cp):
    for name in ("lookfor", "nanpercentile", "asmatrix", "matrix", "object_", "str_", "datetime64", "einsum_path"):
        assert not hasattr(cp, name), name
        with pytest.raises(AttributeError):
            getattr(cp, name)
    for name in ("asnumpy", "RawModule", "trapz", "product", "float_", "PINF", "newaxis", "scatter_add"[:0] or "pi"):
        assert hasattr(cp, name), name
    assert cp.newaxis is None and cp.float32 is np.float32
    assert not hasattr(cp.random.default_rng(0), "normal")  # CuPy's Generator has no normal()
    with pytest.raises(NotImplementedError, match="does not imitate cupy.ElementwiseKernel"):
        cp.ElementwiseKernel("T x", "T y", "y = x", "copy")


def test_host_data_where_cupy_converts_it_and_where_it_does_not(cp):
    with cs.counters() as c:
        assert cp.tril(np.ones((3, 3))).get().sum() == 6  # tril: m = cupy.asarray(m)
        assert cp.vstack([np.ones(2), [2, 2]]).shape == (2, 2)  # atleast_2d uploads each
        assert cp.isclose(cp.ones(2), np.ones(2)).all()
    assert c.h2d == 4
    with pytest.raises(TypeError, match="must be a cupy.ndarray object"):
        cp.nonzero(np.ones(3))  # _util.check_array
    with pytest.raises(TypeError, match="takes a cupy.ndarray"):
        cp.sum([1, 2, 3])  # CuPy calls a.sum(): a list fails
    with pytest.raises(TypeError, match="incorrect type"):
        cp.stack([cp.ones(2), 1.0])
    with pytest.raises(TypeError, match="Unsupported type"):
        cp.sum(np.ones(3))  # stricter than CuPy, which would return NumPy's sum silently


def test_keywords_are_checked_against_cupys_signatures(cp):
    x = cp.arange(4.0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'like'"):
        cp.zeros(3, like=x)
    with pytest.raises(TypeError, match="unexpected keyword argument 'min'"):
        cp.clip(x, min=0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'where'"):
        cp.sum(x, where=x > 0)
    with pytest.raises(TypeError, match="Wrong arguments"):
        cp.exp(x, order="C")
    assert cp.argmax(x, None, np.int32).dtype == np.int32  # CuPy's 3rd positional is dtype
    with pytest.raises(NotImplementedError):
        cp.sort(x, kind="quicksort")  # CuPy sorts stably, and only that
    assert cp.clip(x, 1, 2).get().tolist() == [1, 1, 2, 2]


def test_empty_is_garbage(cp, cupyx):
    assert np.isnan(cp.empty(3).get()).all()
    assert np.isnan(cp.empty((2, 2), np.complex64).get()).all()
    assert (cp.empty(4, np.int32).get() == np.iinfo(np.int32).max - 7).all()
    assert cp.empty(2, bool).get().all()
    assert np.isnan(cp.empty_like(cp.zeros(3)).get()).all()
    assert np.isnan(cp.ndarray((2,), np.float32).get()).all()
    pinned = cupyx.empty_pinned((3,), np.float64)
    assert type(pinned) is np.ndarray and np.isnan(pinned).all()
    assert (cupyx.zeros_pinned(3) == 0).all()
    with cs.configure(poison_empty=False):
        assert cp.empty(3).shape == (3,)


def test_host_constructors(cp):
    with cs.counters() as c:
        a = cp.asarray(np.arange(3.0))
        b = cp.array([1, 2])
        s = cp.asarray(1.5)
        same = cp.asarray(a)
        stacked = cp.asarray([a, a])
    assert c.h2d == 3 and same is a and stacked.shape == (2, 3) and s.shape == ()
    assert cp.asarray(np.arange(3, dtype=">f4")).dtype == np.dtype("<f4")  # byte-swapped on upload
    with pytest.raises(TypeError, match="Implicit conversion"):
        cp.asarray([1.0, a[0]])  # a device array inside host data
    with pytest.raises(TypeError, match="incorrect type"):
        cp.ascontiguousarray(np.ones(3))  # ascontiguousarray takes device arrays only
    assert cp.ascontiguousarray(cp.asarray(2.0)).shape == (1,)  # 0-d comes back 1-d
    assert cp.ascontiguousarray(a) is a
    assert b.dtype == np.int64
    with pytest.raises(ValueError, match="Unsupported dtype object"):
        cp.zeros(3, dtype=object)


def test_floating_point_errors_do_not_warn(cp):
    x = cp.zeros(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isinf((1 / x).get()).all() and np.isnan(cp.log(x - 1).get()).all()


# -- linalg, fft, random, stride tricks, scatter: numbers as NumPy's --------------------------------------------


def test_linalg_batched_equals_numpy(cp):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 4, 4))
    spd = a @ a.transpose(0, 2, 1) + 4 * np.eye(4)
    b = rng.standard_normal((5, 4, 2))
    d_spd, d_b = cp.asarray(spd), cp.asarray(b)
    np.testing.assert_allclose(cp.linalg.solve(d_spd, d_b).get(), np.linalg.solve(spd, b))
    np.testing.assert_allclose(cp.linalg.inv(d_spd).get(), np.linalg.inv(spd))
    np.testing.assert_allclose(cp.linalg.cholesky(d_spd).get(), np.linalg.cholesky(spd))
    w, v = cp.linalg.eigh(d_spd)
    np.testing.assert_allclose(w.get(), np.linalg.eigvalsh(spd))
    np.testing.assert_allclose((v @ cp.swapaxes(v, -1, -2)).get(), np.broadcast_to(np.eye(4), (5, 4, 4)), atol=1e-12)
    u, s, vh = cp.linalg.svd(cp.asarray(a[0]))
    np.testing.assert_allclose(s.get(), np.linalg.svd(a[0])[1])
    res = cp.linalg.eigh(d_spd)
    assert type(res) is tuple and not hasattr(res, "eigenvalues")  # no named tuples
    assert cp.linalg.eig(cp.eye(2))[0].dtype == np.complex128


def test_linalg_failures_and_refusals(cp, cupyx):
    from numpy.linalg import LinAlgError

    with pytest.raises(LinAlgError, match="only supports cupy.ndarray"):
        cp.linalg.inv(np.eye(2))
    singular = cp.asarray(np.stack([np.eye(2), np.zeros((2, 2))]))
    out = cp.linalg.inv(singular).get()  # cuSOLVER does not raise: garbage (NaN here) for the bad one
    assert np.array_equal(out[0], np.eye(2)) and np.isnan(out[1]).all()
    assert np.isnan(cp.linalg.cholesky(-cp.eye(3)).get()).all()
    with cupyx.errstate(linalg="raise"):
        with pytest.raises(LinAlgError):
            cp.linalg.cholesky(-cp.eye(3))
    with pytest.raises(LinAlgError, match="two-dimensional"):
        cp.linalg.lstsq(cp.ones((2, 3, 3)), cp.ones((2, 3)))
    with pytest.raises(ValueError, match="multidimensional b"):
        cp.linalg.solve(cp.ones((5, 3, 3)), cp.ones((3, 2)))  # no stack broadcasting on CuPy
    x, _res, rank, _s = cp.linalg.lstsq(cp.eye(3), cp.ones(3))
    assert rank.dtype == np.int32 and rank.shape == () and x.get().tolist() == [1, 1, 1]


def test_fft_stride_tricks_take_along_axis_scatter(cp, cupyx):
    rng = np.random.default_rng(2)
    img = rng.standard_normal((8, 6)).astype(np.float32)
    d = cp.asarray(img)
    f = cp.fft.rfft2(d)
    assert f.dtype == np.complex64
    np.testing.assert_allclose(f.get(), np.fft.rfft2(img), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cp.fft.irfft2(f, s=img.shape).get(), img, atol=1e-5)
    np.testing.assert_allclose(cp.fft.fftshift(cp.fft.fftfreq(8)).get(), np.fft.fftshift(np.fft.fftfreq(8)))
    win = cp.lib.stride_tricks.sliding_window_view(d, (3, 2))
    np.testing.assert_array_equal(win.get(), np.lib.stride_tricks.sliding_window_view(img, (3, 2)))
    with pytest.raises(NotImplementedError):
        cp.lib.stride_tricks.sliding_window_view(d, (3, 2), writeable=True)
    order = cp.argsort(d, axis=1)
    np.testing.assert_array_equal(cp.take_along_axis(d, order, 1).get(), np.sort(img, axis=1))
    acc = cp.zeros(4)
    with pytest.warns(DeprecationWarning, match="scatter_add"):
        cupyx.scatter_add(acc, cp.asarray([0, 1, 1, 3, 3, 3]), cp.ones(6))
    assert acc.get().tolist() == [1, 2, 0, 3]
    with pytest.warns(DeprecationWarning):
        cupyx.scatter_max(acc, cp.asarray([0, 0]), cp.asarray([5.0, 7.0]))
    assert acc.get()[0] == 7
    with pytest.raises(TypeError, match="add.at only supports"):
        cp.add.at(cp.zeros(3, np.int16), cp.asarray([0]), 1)
    np.testing.assert_allclose(cp.cumsum(d, axis=0).get(), np.cumsum(img, axis=0), rtol=1e-6)
    np.testing.assert_allclose(cp.einsum("ij,kj->ik", d, d).get(), img @ img.T, rtol=1e-5)


def test_random(cp):
    g = cp.random.default_rng(0)
    for r in (g.random(3), g.standard_normal((2, 2), dtype=np.float32), g.integers(0, 5, 4)):
        assert type(r) is cp.ndarray
    assert g.standard_normal((2, 2), dtype=np.float32).dtype == np.float32
    rs = cp.random.RandomState(1)
    assert rs.rand(2, 3, dtype=np.float32).dtype == np.float32 and rs.randn(4).shape == (4,)
    cp.random.seed(3)
    a = cp.random.standard_normal(5)
    cp.random.seed(3)
    assert cp.random.standard_normal(5).get().tolist() == a.get().tolist()
    with pytest.raises(TypeError, match="unexpected keyword"):
        cp.random.rand(3, size=2)


# -- streams, events and late copies ---------------------------------------------------------------------------


def test_uploads_are_late_until_an_event_is_waited_for(cp, cupyx):
    host = cupyx.empty_pinned((4,), np.float32)
    host[:] = 1
    dev = cp.zeros(4, np.float32)
    upload = cp.cuda.Stream(non_blocking=True)
    dev.set(host, stream=upload)
    done = upload.record()
    assert not done.done and cs.pending()
    host[:] = 2  # refilled before the DMA ran: the upload will carry the new data
    assert dev.get().tolist() == [0, 0, 0, 0]  # read without waiting: stale
    cp.cuda.get_current_stream().wait_event(done)
    assert done.done and dev.get().tolist() == [2, 2, 2, 2]


def test_deferred_waits_catch_a_refill_without_synchronize(cp, cupyx):
    host = cupyx.empty_pinned((2,), np.float32)
    dev = cp.zeros(2, np.float32)
    s = cp.cuda.Stream(non_blocking=True)
    with cs.configure(defer_waits=True):
        host[:] = 1
        dev.set(host, stream=s)
        cp.cuda.get_current_stream().wait_event(s.record())  # a device-side wait: the host goes on
        host[:] = 2  # refilled without Event.synchronize()
        assert dev.get().tolist() == [2, 2]  # the DMA ran late and uploaded the new contents
        host[:] = 3
        dev.set(host, stream=s)
        done = s.record()
        cp.cuda.get_current_stream().wait_event(done)
        done.synchronize()
        host[:] = 4
        assert dev.get().tolist() == [3, 3]


def test_pageable_sources_are_staged_at_the_call(cp):
    dev = cp.zeros(3)
    s = cp.cuda.Stream(non_blocking=True)
    src = np.ones(3)
    dev.set(src, stream=s)
    src[:] = 5
    with cs.counters() as c:
        s.synchronize()
    assert c.syncs == 1 and dev.get().tolist() == [1, 1, 1]


@pytest.mark.parametrize("force", ["event", "stream", "device", "runtime"])
def test_every_kind_of_synchronization_runs_the_queue(cp, force):
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        x = cp.asarray(np.arange(3.0))  # an upload on s
        e = s.record()
    assert np.isnan(x.get()).all()  # the null stream does not wait for a non-blocking stream
    {
        "event": e.synchronize,
        "stream": s.synchronize,
        "device": cp.cuda.Device().synchronize,
        "runtime": cp.cuda.runtime.deviceSynchronize,
    }[force]()
    assert x.get().tolist() == [0, 1, 2]


def test_stream_order_and_the_legacy_null_stream(cp):
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        x = cp.asarray(np.arange(3.0))
        assert (x * 2).get().tolist() == [0, 2, 4]  # work on the same stream runs after the copy
    blocking = cp.cuda.Stream()
    with blocking:
        y = cp.asarray(np.arange(3.0))
    assert (y + 1).get().tolist() == [1, 2, 3]  # the null stream waits for blocking streams
    assert cp.cuda.get_current_stream() == cp.cuda.Stream.null


def test_uploads_from_another_thread(cp, cupyx):
    """The pattern of usidgpu.stream: a reader thread fills pinned buffers and uploads them."""
    n, size = 20, 1000
    host = cupyx.empty_pinned((size,), np.float64)
    dev = cp.zeros(size)
    s = cp.cuda.Stream(non_blocking=True)
    events: list = []
    seen: list = []
    ready, consumed = threading.Semaphore(0), threading.Semaphore(1)

    def reader():
        for i in range(n):
            consumed.acquire()
            if events:
                events[-1].synchronize()  # the previous upload from this pinned buffer is done
            host[:] = i
            dev.set(host, stream=s)
            events.append(s.record())
            ready.release()

    t = threading.Thread(target=reader)
    t.start()
    for _ in range(n):
        ready.acquire()
        cp.cuda.get_current_stream().wait_event(events[-1])
        seen.append(float(dev.sum()) / size)
        consumed.release()
    t.join()
    assert seen == list(range(n))


def test_counters_see_other_threads_and_allow_synchronize(cp, cupyx):
    x = cp.ones(3)
    with cs.counters() as c:
        t = threading.Thread(target=lambda: x.get(), name="reader")
        t.start()
        t.join()
    assert c.d2h == 1 and c.of("d2h", "reader")
    with pytest.warns(UserWarning), cupyx.allow_synchronize(False):
        with pytest.raises(cupyx.DeviceSynchronized):
            x.get()
        with pytest.raises(cupyx.DeviceSynchronized):
            cp.cuda.Device().synchronize()
    x.get()


# -- the device, memory ----------------------------------------------------------------------------------


def test_device_properties_and_memory(cp):
    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    assert b"cupy_standin" in props["name"] and props["totalGlobalMem"] == cs.CONFIG.total_memory
    assert dev.compute_capability == "90" and dev.attributes["MultiProcessorCount"] == props["multiProcessorCount"]
    assert {"MaxThreadsPerBlock", "SingleToDoublePrecisionPerfRatio", "ComputeCapabilityMajor"} <= set(dev.attributes)
    assert cp.cuda.runtime.getDeviceCount() == 1 and cp.is_available()
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError):
        cp.cuda.Device(3).use()
    pool = cp.get_default_memory_pool()
    free0 = dev.mem_info[0]
    big = cp.zeros(1 << 20)
    assert pool.used_bytes() >= big.nbytes and dev.mem_info[0] <= free0 - big.nbytes
    del big
    assert pool.free_bytes() >= 8 << 20
    pool.free_all_blocks()
    assert pool.free_bytes() == 0
    with cs.configure(total_memory=1 << 20):
        with pytest.raises(cp.cuda.memory.OutOfMemoryError, match="Out of memory allocating"):
            cp.zeros(1 << 18)
    with cp.cuda.Device(0):
        assert cp.cuda.runtime.getDevice() == 0


# -- RawModule / RawKernel -------------------------------------------------------------------------------


class _FakeHarness:
    """A stand-in for tests/cudasim: records the launches, runs ``y = a * x`` for ``axpy``."""

    def __init__(self):
        self.modules: list = []
        self.launches: list = []

    def Module(self, code, name_expressions=(), options=(), filename=None):  # noqa: N802
        harness = self

        class Module:
            def compile(self):
                pass

            def get_function(self, name):
                def kernel(grid, block, args, shared_mem=0):
                    harness.launches.append((name, grid, block, list(args), shared_mem))
                    if name.startswith("axpy"):
                        args[1][...] = args[2] * args[0]

                return kernel

        harness.modules.append((code, tuple(name_expressions), tuple(options)))
        return Module()


@pytest.fixture
def harness(monkeypatch):
    h = _FakeHarness()
    monkeypatch.setitem(sys.modules, "cudasim", h)
    return h


def test_kernel_arguments_are_converted_as_cupy_does(cp, harness):
    mod = cp.RawModule(code="// axpy", options=("-std=c++17",), name_expressions=["axpy<float>"])
    kern = mod.get_function("axpy<float>")
    assert harness.modules == [("// axpy", ("axpy<float>",), ("-std=c++17",))]
    x = cp.arange(4, dtype=np.float32)
    y = cp.zeros(4, np.float32)
    with cs.counters() as c:
        kern((1,), (4,), (x, y, np.float32(2), 3, 1.5, True, np.array([7], np.int32), None))
    assert c.launches == 1 and c.h2d == 0 and c.d2h == 0
    assert y.get().tolist() == [0, 2, 4, 6]  # the kernel wrote into device memory in place
    args = harness.launches[0][3]
    assert args[0] is x._a and type(args[2]) is np.float32
    assert type(args[3]) is np.int64 and type(args[4]) is np.float64 and type(args[5]) is np.bool_
    assert type(args[6]) is np.int32 and args[6] == 7 and args[7] is None
    kern((1,), (1,), (x, y, np.float32(1), 2**63))
    assert type(harness.launches[-1][3][3]) is np.uint64


def test_kernel_arguments_cupy_refuses(cp, harness):
    kern = cp.RawKernel("// axpy", "axpy")
    x = cp.zeros((4, 4), np.float32)
    with pytest.raises(TypeError, match="Only numpy.ndarrays of size one can be passed by value"):
        kern((1,), (1,), (np.zeros(4, np.float32),))
    with pytest.raises(TypeError, match="non-C-contiguous"):
        kern((1,), (1,), (x[:, 1],))
    with pytest.raises(TypeError, match="Unsupported type <class 'list'>"):
        kern((1,), (1,), ([1, 2],))
    with pytest.raises(TypeError, match="'grid' has incorrect type"):
        kern([1], (1,), (x,))
    with pytest.raises(TypeError, match="'options' has incorrect type"):
        cp.RawModule(code="", options=["-O3"])
    with pytest.raises(NotImplementedError):
        cp.RawModule(path="kernel.cubin")
    assert harness.launches == []


def test_usidgpu_get_kernel_goes_to_the_harness(cp, harness):
    from usidgpu.core import kernels as backend

    kernel = backend.get_kernel("gather_windows.cu", "gather_windows", dtype=np.float32)
    assert harness.modules[0][1] == ("gather_windows<float>",) and kernel.name == "gather_windows<float>"


# -- cuML ---------------------------------------------------------------------------------------------------


def test_cuml_standin_matches_scikit_learn(cp):
    from cupy_standin import cuml
    from sklearn.decomposition import PCA as SkPCA

    rng = np.random.default_rng(3)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    with pytest.raises(TypeError):
        cuml.KMeans(3)  # keyword-only, as cuML
    with cs.counters() as c:
        pca = cuml.PCA(n_components=3, output_type="cupy").fit(cp.asarray(x))
    assert c.h2d == 1  # only the asarray: device input is used in place
    assert type(pca.singular_values_) is cp.ndarray and pca.components_.shape == (3, 8)
    np.testing.assert_allclose(pca.explained_variance_.get(), SkPCA(3).fit(x).explained_variance_, rtol=1e-4)
    assert type(cuml.PCA(n_components=2, output_type="numpy").fit(x).mean_) is np.ndarray
    assert type(cuml.PCA(n_components=2).fit(x).transform(x)) is np.ndarray  # output_type None: as the input
    tsvd = cuml.TruncatedSVD(n_components=2, output_type="cupy").fit(cp.asarray(x))
    np.testing.assert_allclose(tsvd.singular_values_.get(), np.linalg.svd(x, compute_uv=False)[:2], rtol=1e-4)
    km = cuml.KMeans(n_clusters=2, init="k-means++", random_state=0, output_type="numpy").fit(cp.asarray(x))
    assert km.labels_.dtype == np.int32 and km.cluster_centers_.shape == (2, 8)
    assert isinstance(km.inertia_, float) and isinstance(km.n_iter_, int)
    given = cuml.KMeans(n_clusters=2, init=x[:2], max_iter=5, output_type="cupy").fit(x)
    assert type(given.labels_) is cp.ndarray
