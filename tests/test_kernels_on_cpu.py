"""Every CUDA kernel of kernels/ executed on the CPU by the harness (tests/cudasim) against its
NumPy twin, its launch contract, and planted bugs that the harness must catch.

These tests call the kernels directly with NumPy arrays; the library's own GPU code paths reach
the same kernels through the CuPy stand-in (tests/test_device.py).
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from usidgpu.atoms import fit as F
from usidgpu.atoms.fit_kernel import THREADS, check_threads, kernel_arguments
from usidgpu.atoms.gaussian import model_and_jacobian
from usidgpu.atoms.synthetic import lattice_image, render
from usidgpu.core.kernels import kernel_source
from usidgpu.denoise.patches import origins, patch_chunks

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the CPU kernel harness needs g++")
cudasim = pytest.importorskip("cudasim")


def fit_kernel(dtype, source=None):
    name = f"fit_gaussian2d<{'float' if dtype == np.float32 else 'double'}>"
    code = source if source is not None else kernel_source("fit_gaussian2d.cu")
    return cudasim.Module(code, name_expressions=(name,), filename="fit_gaussian2d.cu").get_function(name)


def gather_kernel(dtype, source=None):
    name = f"gather_windows<{'float' if dtype == np.float32 else 'double'}>"
    code = source if source is not None else kernel_source("gather_windows.cu")
    return cudasim.Module(code, name_expressions=(name,), filename="gather_windows.cu").get_function(name)


# --------------------------------------------------------------------------- gather_windows
def gather(kernel, image, window, step, i0, rows, shift, blocks=3, threads=64):
    """The launch of usidgpu.denoise.patches._gather_on_gpu, with few blocks so that the
    grid-stride loop runs many rounds."""
    wy, wx = window
    nx = origins(image.shape[1], wx, step[1])
    ny = origins(image.shape[0], wy, step[0])
    i1 = min(i0 + rows, ny)
    out = np.zeros(((i1 - i0) * nx, wy * wx), dtype=image.dtype)
    kernel(
        (blocks,),
        (threads,),
        (
            image,
            out,
            np.int64(image.shape[1]),
            np.int64(i0),
            np.int64((i1 - i0) * nx),
            np.int64(nx),
            np.int32(wy),
            np.int32(wx),
            np.int32(step[0]),
            np.int32(step[1]),
            image.dtype.type(shift),
        ),
    )
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("window, step", [((7, 5), (1, 1)), ((6, 6), (3, 4)), ((1, 9), (2, 1))])
def test_gather_windows_is_bit_exact_with_the_numpy_patches(dtype, window, step):
    image = (np.random.default_rng(3).random((37, 41)) * 50).astype(dtype)
    kernel = gather_kernel(dtype)
    ny = origins(37, window[0], step[0])
    for i0, i1, ref in patch_chunks(np, image, window, step, 5, shift=12.5):
        got = gather(kernel, image, window, step, i0, i1 - i0, 12.5)
        np.testing.assert_array_equal(got, ref)
    assert i1 == ny


# --------------------------------------------------------------------------- fit_gaussian2d
@pytest.fixture(scope="module")
def columns():
    """Packed fit pixels of a noisy two-sublattice image with vacancies and border columns."""
    s = lattice_image(
        (112, 128), spacing=16, angle_deg=9, vacancies=2, displacement=0.3, dose=100, read_noise=0.02, seed=2
    )
    image = s.image * 1000 + 5000  # counts far from zero: the float32 path must cope
    from usidgpu.atoms.find import find_columns

    found = find_columns(image)
    start, radius = found.positions, 0.5 * found.spacing
    neighbours = F._neighbours(start, radius)
    return F.prepare(np, image.astype(np.float64), start, neighbours, radius), start, radius


def run_fit(columns, precision, threads=THREADS, source=None, orders="both"):
    (yy, xx, data, weight, p0), start, radius = columns
    dtype, args, finish = kernel_arguments(np, yy, xx, data, weight, p0, start, radius, 100, 1e-10, precision)
    fit_kernel(dtype, source)((len(start),), (threads,), args, orders=orders)
    return finish(args[4]), args[-2], args[-1]


def test_the_float64_fit_kernel_is_the_array_engines_iteration(columns):
    (yy, xx, data, weight, p0), start, radius = columns
    ref, ref_conv, ref_iter = F.lm_array(np, yy, xx, data, weight, p0, start, radius, 100, 1e-10)
    p, conv, iters = run_fit(columns, "float64")
    np.testing.assert_array_equal(conv, ref_conv)
    np.testing.assert_array_equal(iters, ref_iter)
    np.testing.assert_allclose(p, ref, rtol=1e-10, atol=1e-10)
    assert ref_conv.all()


@pytest.mark.parametrize("threads", [32, 40, 2048])
def test_block_sizes_the_reduction_cannot_use_are_refused(columns, threads):
    with pytest.raises(ValueError, match="multiple of 32 threads between 36 and 1024"):
        check_threads(threads)
    (yy, xx, data, weight, p0), start, radius = columns
    dtype, args, _ = kernel_arguments(np, yy, xx, data, weight, p0, start, radius, 100, 1e-10, "float64")
    before = args[4].copy()
    if threads > 1024:  # beyond CUDA's own limit: the launch itself fails
        with pytest.raises(cudasim.KernelError, match="invalid configuration"):
            fit_kernel(dtype)((len(start),), (threads,), args)
        return
    # the kernel's own guard: every block returns at once and marks its column
    fit_kernel(dtype)((len(start),), (threads,), args)
    assert (args[-1] == -1).all() and not args[-2].any()
    np.testing.assert_array_equal(args[4], before)


def test_other_valid_block_sizes_give_the_same_fit(columns):
    ref, conv, iters = run_fit(columns, "float64")
    for threads in (64, 96, 256):
        p, c, i = run_fit(columns, "float64", threads=threads, orders="ascending")
        np.testing.assert_array_equal(c, conv)
        np.testing.assert_array_equal(i, iters)
        np.testing.assert_allclose(p, ref, rtol=1e-9, atol=1e-9)


def isolated_columns(n_side=11, spacing=20, sigma=2.0, amplitude=1.0, background=0.1, noise=0.05, seed=0):
    """Identical round columns far apart on a grid, at random sub-pixel positions, with white
    Gaussian noise: the Cramér–Rao bound of their positions is known exactly."""
    rng = np.random.default_rng(seed)
    grid = (np.arange(n_side) + 1) * spacing
    truth = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2).astype(float)
    truth += rng.uniform(-0.5, 0.5, truth.shape)
    shape = ((n_side + 1) * spacing,) * 2
    clean = render(shape, truth, np.full(len(truth), amplitude), sigma, background)
    return clean + rng.normal(0, noise, shape), truth


def cramer_rao_positions(yy, xx, weight, truth, sigma, amplitude, background, noise):
    """√CRB of (y0, x0) for each column: (JᵀJ/σ²)⁻¹ at the true parameters over its fit pixels."""
    q = 0.5 / sigma**2
    n = len(truth)
    p = np.column_stack([np.full(n, amplitude), truth, np.tile([q, 0.0, q], (n, 1)), np.full(n, background)])
    _, jac = model_and_jacobian(np, p, yy, xx)
    jac = jac * weight[:, None, :]
    cov = np.linalg.inv(jac @ jac.transpose(0, 2, 1)) * noise**2
    return np.sqrt(cov[:, 1, 1]), np.sqrt(cov[:, 2, 2])


def test_float32_positions_reach_the_cramer_rao_bound_and_stay_far_inside_it_of_float64():
    sigma, amplitude, background, noise = 2.0, 1.0, 0.1, 0.05
    image, truth = isolated_columns(sigma=sigma, amplitude=amplitude, background=background, noise=noise)
    start = np.rint(truth)  # a pixel-level start, as a peak finder gives
    radius = 8.0
    neighbours = F._neighbours(start, radius)
    columns = (F.prepare(np, image, start, neighbours, radius), start, radius)
    yy, xx, _data, weight, _p0 = columns[0]
    crb_y, crb_x = cramer_rao_positions(yy, xx, weight, truth, sigma, amplitude, background, noise)
    p64, c64, _ = run_fit(columns, "float64", orders="ascending")
    p32, c32, _ = run_fit(columns, "float32")
    assert c64.all() and c32.all()
    for p in (p64, p32):
        # the fits are efficient: the error spread is the bound (±20 %: 121 columns)
        ratio_y = np.sqrt(np.mean(((p[:, 1] - truth[:, 0]) / crb_y) ** 2))
        ratio_x = np.sqrt(np.mean(((p[:, 2] - truth[:, 1]) / crb_x) ** 2))
        assert 0.8 < ratio_y < 1.2 and 0.8 < ratio_x < 1.2, (ratio_y, ratio_x)
    # and float32 moves no position by more than 2 % of its statistical error
    assert np.max(np.abs(p32[:, 1] - p64[:, 1]) / crb_y) < 0.02
    assert np.max(np.abs(p32[:, 2] - p64[:, 2]) / crb_x) < 0.02


def test_float32_on_a_noisy_lattice_with_large_counts(columns):
    ref, ref_conv, _ = run_fit(columns, "float64", orders="ascending")
    p, conv, iters = run_fit(columns, "float32")
    assert conv.all() and ref_conv.all() and (iters < 100).all()
    # position errors of these columns are ~0.05-0.1 px; float32 stays far below
    assert np.abs(p[:, 1:3] - ref[:, 1:3]).max() < 2e-3
    np.testing.assert_allclose(p[:, 0], ref[:, 0], rtol=1e-3)


# --------------------------------------------------------------------------- planted bugs
def plant(source: str, old: str, new: str, count: int = 1) -> str:
    """The kernel source with one bug planted (the original text must be there)."""
    assert source.count(old) >= count, f"the kernel no longer contains {old!r}: update the planted bug"
    return source.replace(old, new, count)


FIT_BUGS = {
    "removed barrier before the cross-warp sum": (
        "        if (lane == 0) warp_partial[warp * N_SUM + i] = v;\n    }\n    __syncthreads();",
        "        if (lane == 0) warp_partial[warp * N_SUM + i] = v;\n    }\n",
    ),
    "removed barrier after the trial step": (
        "radius, q_lo, q_hi);\n        }\n        __syncthreads();",
        "radius, q_lo, q_hi);\n        }\n",
    ),
    "shuffle with a partial mask": ("__shfl_down_sync(0xffffffffu", "__shfl_down_sync(0x7fffffffu"),
    "pixel loop one past the end": (
        "for (int k = threadIdx.x; k < m; k += blockDim.x)",
        "for (int k = threadIdx.x; k <= m; k += blockDim.x)",
    ),
    "off-by-one parameter index": (
        "params[col * N_PAR + threadIdx.x] = p[threadIdx.x]",
        "params[col * N_PAR + threadIdx.x + 1] = p[threadIdx.x]",
    ),
}


@pytest.mark.parametrize("bug", list(FIT_BUGS))
def test_planted_fit_kernel_bugs_are_caught(columns, bug):
    ref, ref_conv, ref_iter = run_fit(columns, "float64", orders="ascending")
    source = plant(kernel_source("fit_gaussian2d.cu"), *FIT_BUGS[bug])
    try:
        p, conv, iters = run_fit(columns, "float64", source=source)
    except cudasim.KernelError:
        return  # the harness reported it
    same = np.allclose(p, ref, rtol=1e-9, atol=1e-9) and (conv == ref_conv).all() and (iters == ref_iter).all()
    assert not same, f"planted bug not detected: {bug}"


GATHER_BUGS = {
    "grid-stride loop one past the end": ("idx < total;", "idx <= total;"),
    "off-by-one column": ("+ j * sx + b] - shift", "+ j * sx + b + 1] - shift"),
    "wrong stride": (
        "idx += static_cast<long long>(gridDim.x) * blockDim.x",
        "idx += static_cast<long long>(gridDim.x) * blockDim.x + 1",
    ),
}


@pytest.mark.parametrize("bug", list(GATHER_BUGS))
def test_planted_gather_kernel_bugs_are_caught(bug):
    image = (np.random.default_rng(4).random((29, 31)) * 10).astype(np.float32)
    ref = np.concatenate([c for *_, c in patch_chunks(np, image, (6, 5), (1, 2), 100)])
    source = plant(kernel_source("gather_windows.cu"), *GATHER_BUGS[bug])
    try:
        got = gather(gather_kernel(np.float32, source), image, (6, 5), (1, 2), 0, 100, 0.0)
    except cudasim.KernelError:
        return
    assert not np.array_equal(got, ref), f"planted bug not detected: {bug}"


def test_every_kernel_source_is_covered_here():
    from usidgpu.core.kernels import kernel_dir

    assert sorted(p.name for p in kernel_dir().glob("*.cu")) == ["fit_gaussian2d.cu", "gather_windows.cu"], (
        "a new kernel needs its harness test against its NumPy twin and planted bugs in this file"
    )
    assert math.isfinite(THREADS)
