"""Figures of decomposition results: the right numbers in the right place, with units."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.collections import PathCollection, QuadMesh  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import usidgpu  # noqa: E402
from usidgpu import Dimension  # noqa: E402
from usidgpu.decompose.results import KMeansResult, NMFResult, PCAResult, SVDResult  # noqa: E402
from usidgpu.viz import (  # noqa: E402
    plot_clusters,
    plot_components,
    plot_decomposition,
    plot_maps,
    plot_scree,
    save_figure,
)

NY, NX, NB = 8, 10, 50
Y = Dimension("Y", "µm", np.linspace(0, 2, NY))
X = Dimension("X", "µm", np.linspace(0, 3, NX))
BIAS = Dimension("Bias", "V", np.linspace(-1, 1, NB))
META = dict(quantity="Current", units="nA")


def _rng(seed=0):
    return np.random.default_rng(seed)


def svd_result(k=4, pos=(Y, X), spec=(BIAS,), source=None, complex_=False, **kw) -> SVDResult:
    n_pos = int(np.prod([d.size for d in pos])) if kw.get("pos_grid", True) else pos[0].size
    n_spec = int(np.prod([d.size for d in spec]))
    rng = _rng()
    U = rng.standard_normal((n_pos, k))
    V = rng.standard_normal((k, n_spec))
    if complex_:
        V = V + 1j * rng.standard_normal((k, n_spec))
    S = np.sort(rng.uniform(1, 100, k))[::-1]
    return SVDResult(
        U=U,
        S=S,
        V=V,
        pos_dims=list(pos),
        spec_dims=list(spec),
        total_energy=float((S**2).sum() * 1.25),
        source=source,
        **META,
        **kw,
    )


def kmeans_result(k=3, pos=(Y, X), spec=(BIAS,)) -> KMeansResult:
    n_pos = int(np.prod([d.size for d in pos]))
    n_spec = int(np.prod([d.size for d in spec]))
    labels = (np.arange(n_pos) * 7 % k).astype(np.uint32)
    mean = _rng(1).standard_normal((k, n_spec))
    return KMeansResult(
        labels=labels,
        centroids=mean,
        mean_response=mean,
        counts=np.bincount(labels, minlength=k),
        pos_dims=list(pos),
        spec_dims=list(spec),
        **META,
    )


def images(fig) -> list:
    """AxesImages of the figure's axes, in panel order (colour bar axes hold none)."""
    return [im for ax in fig.axes for im in ax.images]


def axes_with(fig, kind) -> list:
    return [ax for ax in fig.axes if any(isinstance(c, kind) for c in ax.get_children())]


def data_lines(ax) -> list:
    """Curves holding data (grid lines and zero lines are not Line2D children of ax.lines)."""
    return [ln for ln in ax.lines if len(ln.get_xdata()) > 2 or ln.get_marker() not in ("None", None, "")]


# --------------------------------------------------------------------------------------- imports


def test_import_usidgpu_imports_no_matplotlib_and_viz_no_pyplot():
    code = (
        "import sys, usidgpu; a = 'matplotlib' in sys.modules or 'cupy' in sys.modules; "
        "import usidgpu.viz; print(a, 'matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# ----------------------------------------------------------------------------------------- scree


def test_scree_draws_singular_values_and_cumulative_energy():
    r = svd_result(k=6)
    ax = plot_scree(r)
    line = ax.lines[0]
    np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 7))
    np.testing.assert_allclose(line.get_ydata(), r.S)
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "Component"
    assert "Singular value" in ax.get_ylabel() and "(nA)" in ax.get_ylabel()
    twin = [a for a in ax.figure.axes if a is not ax][0]
    np.testing.assert_allclose(twin.lines[0].get_ydata(), 100 * np.cumsum(r.energy_ratio))
    assert "Cumulative energy" in twin.get_ylabel() and "%" in twin.get_ylabel()


def test_scree_of_pca_uses_explained_variance_ratio():
    r = svd_result(k=3)
    ratio = np.array([0.5, 0.2, 0.1])
    pca = PCAResult(U=r.U, S=r.S, V=r.V, explained_variance_ratio=ratio, pos_dims=[Y, X], spec_dims=[BIAS], **META)
    ax = plot_scree(pca)
    twin = ax.figure.axes[-1]
    np.testing.assert_allclose(twin.lines[0].get_ydata(), [50, 70, 80])
    assert "variance" in twin.get_ylabel()


def test_scree_without_total_energy_says_of_what():
    r = svd_result(k=3)
    r.total_energy = float("nan")
    twin = plot_scree(r).figure.axes[-1]
    assert twin.lines[0].get_ydata()[-1] == pytest.approx(100)
    assert "3 components" in twin.get_ylabel()


def test_scree_into_given_axes_and_rejects_nmf():
    fig = Figure()
    ax = fig.add_subplot()
    assert plot_scree(svd_result(k=1), ax=ax) is ax
    with pytest.raises(TypeError, match="singular values"):
        plot_scree(NMFResult(W=np.ones((4, 2)), H=np.ones((2, 3))))


# ------------------------------------------------------------------------------------------ maps


def test_maps_are_images_on_the_position_grid_with_units():
    r = svd_result(k=4)
    fig = plot_maps(r)
    ims = images(fig)
    assert len(ims) == 4
    for j, im in enumerate(ims):
        np.testing.assert_array_equal(im.get_array(), r.U[:, j].reshape(NY, NX))
        ext = im.get_extent()
        dx, dy = 3 / (NX - 1) / 2, 2 / (NY - 1) / 2
        np.testing.assert_allclose(ext, [-dx, 3 + dx, -dy, 2 + dy])
        assert im.origin == "lower"
        assert im.axes.get_title() == f"Component {j + 1}"
    # 2 x 2 panels: x labels on the bottom row, y labels on the left column
    assert ims[2].axes.get_xlabel() == "X (µm)" and ims[2].axes.get_ylabel() == "Y (µm)"
    assert ims[0].axes.get_ylabel() == "Y (µm)" and ims[0].axes.get_xlabel() == ""
    cb = ims[-1].colorbar
    assert cb is not None and cb.ax.get_ylabel() == "Abundance (a. u.)"
    assert "Current (nA)" in fig.get_suptitle()


def test_maps_follow_the_layout_order_when_the_fastest_dimension_is_listed_first():
    r = svd_result(k=2, pos=(X, Y), source=SimpleNamespace(pos_layout=SimpleNamespace(order=(1, 0))))
    ims = images(plot_maps(r))
    for j, im in enumerate(ims):
        np.testing.assert_array_equal(im.get_array(), r.U[:, j].reshape(NY, NX))  # rows = Y (slowest)
        np.testing.assert_allclose(im.get_extent()[:2], [X.values[0] - 3 / 18, X.values[-1] + 3 / 18])
    assert ims[0].axes.get_xlabel() == "X (µm)" and ims[0].axes.get_ylabel() == "Y (µm)"


def test_maps_of_a_real_fastest_first_file_match_to_ndim(tmp_path):
    data = _rng(3).standard_normal((NX, NY, 3)).astype(np.float32)  # file order X, Y (X fastest)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        usidgpu.write_main(
            f,
            "Raw_Data",
            np.transpose(data, (1, 0, 2)),
            "Current",
            "nA",
            [Y, X],
            [Dimension("Bias", "V", [0.0, 1.0, 2.0])],
            dim_order="fast_to_slow",
        )
    with usidgpu.open(tmp_path / "f.h5") as f:
        m = f.main_datasets()[0]
        assert [d.name for d in m.pos_dims] == ["X", "Y"]
        r = SVDResult(U=m[:], S=np.ones(3), V=np.eye(3), pos_dims=m.pos_dims, spec_dims=m.spec_dims, source=m)
        nd = m.to_ndim()  # (X, Y, Bias)
        ims = images(plot_maps(r))
    for j, im in enumerate(ims):
        np.testing.assert_array_equal(im.get_array(), nd[:, :, j].T)
        assert im.axes.get_xlabel() in ("X (µm)", "")


def test_maps_of_scores_are_in_data_units():
    r = svd_result(k=3)
    ims = images(plot_maps(r, scores=True))
    np.testing.assert_allclose(ims[1].get_array(), (r.U[:, 1] * r.S[1]).reshape(NY, NX))
    assert ims[-1].colorbar.ax.get_ylabel() == "Current score (nA)"


def test_maps_of_sparse_positions_are_scatter_plots_at_the_coordinates():
    n = 30
    xs, ys = _rng(4).uniform(0, 5, n), _rng(5).uniform(-2, 0, n)
    pos = (Dimension("Y", "nm", ys, incomplete=True), Dimension("X", "nm", xs, incomplete=True))
    r = svd_result(k=2, pos=pos, pos_grid=False)
    fig = plot_maps(r)
    axes = axes_with(fig, PathCollection)
    assert len(axes) == 2
    for j, ax in enumerate(axes):
        sc = [c for c in ax.collections if isinstance(c, PathCollection)][0]
        np.testing.assert_allclose(sc.get_offsets(), np.column_stack([xs, ys]))  # x = X, y = Y
        np.testing.assert_allclose(sc.get_array(), r.U[:, j])
    assert axes[0].get_xlabel() == "X (nm)" and axes[0].get_ylabel() == "Y (nm)"


def test_maps_of_one_position_dimension_are_curves():
    line_dim = Dimension("Time", "s", np.linspace(0, 1, 40))
    r = svd_result(k=3, pos=(line_dim,))
    fig = plot_maps(r)
    axes = [ax for ax in fig.axes if ax.lines]
    assert len(axes) == 3
    for j, ax in enumerate(axes):
        np.testing.assert_allclose(ax.lines[0].get_xdata(), line_dim.values)
        np.testing.assert_allclose(ax.lines[0].get_ydata(), r.U[:, j])
        assert ax.get_xlabel() == "Time (s)"
    assert axes[0].get_ylabel() == "Abundance (a. u.)"


def test_bare_si_units_get_a_prefix():
    xm = Dimension("X", "m", np.linspace(0, 5e-9, NX))
    r = svd_result(k=1, pos=(Dimension("Y", "m", np.linspace(0, 2e-6, NY)), xm))
    im = images(plot_maps(r))[0]
    assert im.axes.get_xlabel() == "X (nm)" and im.axes.get_ylabel() == "Y (µm)"
    np.testing.assert_allclose(im.get_extent()[:2], [-5 / 18, 5 + 5 / 18])
    np.testing.assert_allclose(im.get_extent()[2:], [-1 / 7, 2 + 1 / 7])


def test_maps_drop_singleton_position_dimensions():
    r = svd_result(k=2, pos=(Dimension("Z", "nm", [5.0]), Y, X))
    ims = images(plot_maps(r))
    np.testing.assert_array_equal(ims[1].get_array(), r.U[:, 1].reshape(NY, NX))


def test_maps_of_a_single_position_are_bars():
    r = svd_result(k=5, pos=(Dimension("X", "µm", [1.0]),))
    ax = plot_maps(r).axes[0]
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, r.U[0])
    assert ax.get_xlabel() == "Component" and ax.get_ylabel() == "Abundance (a. u.)"


def test_maps_of_nmf_complex_and_integer_data():
    w = _rng(6).integers(0, 9, (NY * NX, 3))
    nmf = NMFResult(W=w, H=np.ones((3, NB), dtype=np.int64), pos_dims=[Y, X], spec_dims=[BIAS], **META)
    np.testing.assert_array_equal(images(plot_maps(nmf))[2].get_array(), w[:, 2].reshape(NY, NX))
    r = svd_result(k=2)
    r.U = r.U + 1j * r.U[::-1]
    ims = images(plot_maps(r))
    np.testing.assert_allclose(ims[0].get_array(), np.abs(r.U[:, 0]).reshape(NY, NX))
    assert ims[-1].colorbar.ax.get_ylabel().replace("\n", " ") == "Abundance amplitude (a. u.)"


def test_maps_colour_scale_ignores_outliers_and_nan():
    r = svd_result(k=1)
    r.U[0, 0] = 1e6
    r.U[1, 0] = np.nan
    im = images(plot_maps(r))[0]
    vmin, vmax = im.get_clim()
    assert vmax < 100 and vmin == -vmax  # signed data: symmetric, not stretched by the outlier
    assert im.colorbar.extend in ("max", "both")
    assert np.ma.getmaskarray(im.get_array())[0, 1]  # NaN is left blank


def test_maps_on_non_uniform_grid_use_cell_edges():
    xs = np.array([0.0, 1.0, 3.0, 7.0])
    r = svd_result(k=1, pos=(Y, Dimension("X", "µm", xs)))
    fig = plot_maps(r)
    mesh = [c for ax in fig.axes for c in ax.collections if isinstance(c, QuadMesh)][0]
    np.testing.assert_allclose(mesh.get_array().reshape(NY, 4), r.U[:, 0].reshape(NY, 4))
    edges = mesh.get_coordinates()[0, :, 0]
    np.testing.assert_allclose(edges, [-0.5, 0.5, 2, 5, 9])  # midpoints between the values
    assert np.all(edges[:-1] < xs) and np.all(xs < edges[1:])


# ------------------------------------------------------------------------------------ components


def test_components_against_one_spectroscopic_dimension():
    r = svd_result(k=12)
    fig = plot_components(r)
    axes = [ax for ax in fig.axes if ax.lines]
    assert len(axes) == 9  # default min(k, 9)
    for j, ax in enumerate(axes):
        np.testing.assert_allclose(ax.lines[0].get_xdata(), BIAS.values)
        np.testing.assert_allclose(ax.lines[0].get_ydata(), r.V[j])
        assert ax.get_title().startswith(f"Component {j + 1} (")
    assert axes[-1].get_xlabel() == "Bias (V)"
    assert axes[0].get_ylabel() == "Current loading (a. u.)"
    assert len([ax for ax in plot_components(r, n=3).axes if ax.lines]) == 3
    assert len([ax for ax in plot_components(r, n=50).axes if ax.lines]) == 12
    with pytest.raises(ValueError):
        plot_components(r, n=0)


def test_components_of_two_spectroscopic_dimensions_are_images():
    freq = Dimension("Frequency", "kHz", np.linspace(300, 330, 12))
    r = svd_result(k=2, spec=(freq, BIAS))
    ims = images(plot_components(r))
    assert len(ims) == 2
    np.testing.assert_array_equal(ims[1].get_array(), r.V[1].reshape(12, NB))
    np.testing.assert_allclose(ims[0].get_extent()[2:], [300 - 30 / 22, 330 + 30 / 22])
    assert ims[0].axes.get_xlabel() == "Bias (V)" and ims[0].axes.get_ylabel() == "Frequency (kHz)"
    assert ims[-1].colorbar.ax.get_ylabel() == "Current loading (a. u.)"


def test_components_with_a_short_second_dimension_are_curves_per_value():
    cycle = Dimension("Cycle", "", [1, 2])
    r = svd_result(k=1, spec=(cycle, BIAS))
    ax = [ax for ax in plot_components(r).axes if ax.lines][0]
    curves = r.V[0].reshape(2, NB)
    assert len(ax.lines) == 2
    for line, curve in zip(ax.lines, curves):
        np.testing.assert_allclose(line.get_xdata(), BIAS.values)
        np.testing.assert_allclose(line.get_ydata(), curve)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Cycle = 1", "Cycle = 2"]


def test_complex_components_are_drawn_as_amplitude_and_phase():
    r = svd_result(k=2, complex_=True)
    fig = plot_components(r)
    axes = [ax for ax in fig.axes if ax.lines]
    assert len(axes) == 4
    amp, phase = axes[0], axes[1]
    np.testing.assert_allclose(amp.lines[0].get_ydata(), np.abs(r.V[0]))
    np.testing.assert_allclose(phase.lines[0].get_ydata(), np.angle(r.V[0]))
    assert amp.get_ylabel().replace("\n", " ") == "Current loading amplitude (a. u.)"
    assert phase.get_ylabel().replace("\n", " ") == "Current loading phase (rad)"
    assert axes[-1].get_xlabel() == "Bias (V)"


def test_components_of_a_non_grid_spectroscopic_side_use_the_point_index():
    r = svd_result(k=2, spec_grid=False)
    ax = [ax for ax in plot_components(r).axes if ax.lines][0]
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), np.arange(NB))
    assert "index" in ax.get_xlabel() and "Bias" in ax.get_xlabel()


def test_components_with_one_spectroscopic_point_are_bars():
    r = svd_result(k=3, spec=(Dimension("None", "a.u.", [1]),))
    ax = plot_components(r).axes[0]
    np.testing.assert_allclose([p.get_height() for p in ax.patches], r.V[:, 0])


def test_nmf_and_kmeans_components():
    h = np.abs(_rng(7).standard_normal((3, NB)))
    nmf = NMFResult(W=np.ones((NY * NX, 3)), H=h, pos_dims=[Y, X], spec_dims=[BIAS], **META)
    ax = [ax for ax in plot_components(nmf).axes if ax.lines][2]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), h[2])
    km = kmeans_result(k=3)
    axes = [ax for ax in plot_components(km).axes if ax.lines]
    assert axes[0].get_ylabel() == "Current (nA)"
    assert axes[1].get_title().startswith("Cluster 1 (n = ")


# -------------------------------------------------------------------------------------- clusters


def test_cluster_map_shows_the_labels_in_the_colours_of_the_mean_responses():
    km = kmeans_result(k=3)
    fig = plot_clusters(km)
    im = images(fig)[0]
    np.testing.assert_array_equal(im.get_array(), km.labels.reshape(NY, NX))
    assert im.colorbar.ax.get_ylabel() == "Cluster ID"
    np.testing.assert_array_equal(im.colorbar.get_ticks(), [0, 1, 2])
    spec_ax = [ax for ax in fig.axes if ax.lines][0]
    assert spec_ax.get_xlabel() == "Bias (V)" and spec_ax.get_ylabel() == "Current (nA)"
    for i, line in enumerate(spec_ax.lines[:3]):
        np.testing.assert_allclose(line.get_ydata(), km.mean_response[i])
        np.testing.assert_allclose(im.cmap(im.norm(i)), line.get_color())  # same colour as on the map
    texts = [t.get_text() for t in spec_ax.get_legend().get_texts()]
    assert texts == [f"Cluster {i} (n = {c})" for i, c in enumerate(km.counts)]


def test_cluster_map_of_sparse_positions_and_image_responses():
    n = 20
    pos = (Dimension("X", "nm", np.arange(n) * 1.0, incomplete=True), Dimension("Y", "nm", np.ones(n), incomplete=True))
    km = kmeans_result(k=2, pos=(Dimension("P", "", n),))
    km.pos_dims, km.pos_grid = list(pos), False
    fig = plot_clusters(km)
    sc = [c for ax in fig.axes for c in ax.collections if isinstance(c, PathCollection)][0]
    np.testing.assert_allclose(sc.get_offsets()[:, 0], np.arange(n))
    np.testing.assert_array_equal(sc.get_array(), km.labels)
    freq = Dimension("Frequency", "kHz", np.linspace(1, 2, 7))
    km2 = kmeans_result(k=2, spec=(freq, BIAS))
    ims = images(plot_clusters(km2))
    assert len(ims) == 3  # the label map and one image per cluster
    np.testing.assert_allclose(ims[2].get_array(), km2.mean_response[1].reshape(7, NB))


def test_plot_maps_of_kmeans_is_the_label_map():
    km = kmeans_result(k=4)
    np.testing.assert_array_equal(images(plot_maps(km))[0].get_array(), km.labels.reshape(NY, NX))
    with pytest.raises(TypeError):
        plot_clusters(svd_result())


# ----------------------------------------------------------------------------------- robustness


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    "case",
    ["k1", "one_position", "one_point", "big_k", "nan", "integer", "all_nan", "three_pos_dims", "constant_dim"],
)
def test_plots_are_robust(case):
    kw: dict = {}
    if case == "k1":
        kw["k"] = 1
    elif case == "one_position":
        kw["pos"] = (Dimension("X", "µm", [0.0]),)
    elif case == "one_point":
        kw["spec"] = (Dimension("Bias", "V", [0.5]),)
    elif case == "big_k":
        kw["k"] = 40
    elif case == "three_pos_dims":
        kw["pos"] = (Dimension("T", "s", 3), Y, X)
    elif case == "constant_dim":
        kw["pos"] = (Y, Dimension("X", "µm", np.zeros(NX)))
    r = svd_result(**kw)
    if case == "nan":
        r.U[::3] = np.nan
        r.V[:, ::5] = np.nan
        r.S[-1] = np.nan
    if case == "all_nan":
        r.U[:] = np.nan
        r.V[:] = np.nan
    if case == "integer":
        r.U = (r.U * 10).astype(np.int32)
        r.V = (r.V * 10).astype(np.int16)
        r.S = np.arange(r.k, 0, -1)
    plot_decomposition(r).canvas.draw()  # scree, components and maps, laid out and rendered
    n_shown = len([ax for ax in plot_components(r).axes if ax.lines or ax.images or ax.patches])
    assert n_shown == ({"k1": 1, "big_k": 9, "one_point": 1}.get(case, 4))
    km = kmeans_result(k=40 if case == "big_k" else 3, pos=tuple(r.pos_dims), spec=tuple(r.spec_dims))
    plot_clusters(km).canvas.draw()


def test_three_position_dimensions_fall_back_to_the_flat_index():
    r = svd_result(k=1, pos=(Dimension("T", "s", 3), Y, X))
    ax = [ax for ax in plot_maps(r).axes if ax.lines][0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), r.U[:, 0])
    assert ax.get_xlabel() == "Position index (T × Y × X)"


# ---------------------------------------------------------------------------------- summary, save


def test_decomposition_figures_per_result_type():
    svd = plot_decomposition(svd_result(k=5), n=4)
    assert isinstance(svd, Figure)
    assert len(images(svd)) == 4 and any(ax.get_yscale() == "log" for ax in svd.axes)
    assert "SVD of Current (nA)" in svd.get_suptitle()
    nmf = NMFResult(
        W=np.ones((NY * NX, 2)),
        H=np.ones((2, NB)),
        errors=np.geomspace(10, 1, 20),
        pos_dims=[Y, X],
        spec_dims=[BIAS],
        **META,
    )
    fig = plot_decomposition(nmf)
    err_ax = [ax for ax in fig.axes if ax.get_xlabel() == "Iteration"][0]
    np.testing.assert_allclose(err_ax.lines[0].get_ydata(), nmf.errors)
    assert "(nA)" in err_ax.get_ylabel()
    nmf.errors = None
    assert not [ax for ax in plot_decomposition(nmf).axes if ax.get_xlabel() == "Iteration"]
    km = plot_decomposition(kmeans_result())
    assert images(km)[0].colorbar.ax.get_ylabel() == "Cluster ID"


@pytest.mark.parametrize("ext", ["png", "pdf", "svg"])
def test_save_figure_writes_the_format_of_the_extension(tmp_path, ext):
    fig = plot_maps(svd_result(k=2))
    path = save_figure(fig, tmp_path / "deep" / "er" / f"svd.{ext}", dpi=60)
    data = path.read_bytes()
    assert path.parent.is_dir() and len(data) > 1000
    magic = {"png": b"\x89PNG", "pdf": b"%PDF", "svg": b"<?xml"}[ext]
    assert data.startswith(magic)


def test_save_figure_rejects_unknown_extensions(tmp_path):
    with pytest.raises(ValueError, match="png"):
        save_figure(Figure(), tmp_path / "x.jpeg")
