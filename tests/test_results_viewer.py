"""The results viewers (SVD/PCA/NMF components, k-means clusters, atomic columns), built
headlessly and driven through their widgets' values: what is drawn is the result's arrays."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")

from matplotlib.backend_bases import MouseEvent  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.quiver import Quiver  # noqa: E402

import usidgpu  # noqa: E402
from usidgpu import Dimension  # noqa: E402
from usidgpu.decompose.results import KMeansResult, NMFResult, PCAResult, SVDResult  # noqa: E402
from usidgpu.viz.results_viewer import ClusterViewer, ColumnsViewer, SVDViewer, visualize  # noqa: E402

NY, NX, NB = 6, 9, 40
Y = Dimension("Y", "µm", np.linspace(0, 2, NY))
X = Dimension("X", "µm", np.linspace(0, 3, NX))
BIAS = Dimension("Bias", "V", np.linspace(-1, 1, NB))
FREQ = Dimension("Frequency", "kHz", np.linspace(300, 310, 7))
META = dict(quantity="Current", units="nA")


def svd_result(k=4, pos=(Y, X), spec=(BIAS,), complex_=False, cls=SVDResult, **kw):
    n_pos = int(np.prod([d.size for d in pos]))
    n_spec = int(np.prod([d.size for d in spec]))
    rng = np.random.default_rng(0)
    U = rng.standard_normal((n_pos, k))
    V = rng.standard_normal((k, n_spec))
    if complex_:
        U, V = U + 1j * rng.standard_normal(U.shape), V + 1j * rng.standard_normal(V.shape)
    S = np.sort(rng.uniform(1, 100, k))[::-1]
    return cls(
        U=U, S=S, V=V, pos_dims=list(pos), spec_dims=list(spec), total_energy=float((S**2).sum() * 1.25), **META, **kw
    )


def kmeans_result(k=3, pos=(Y, X), spec=(BIAS,), **kw):
    n_pos = int(np.prod([d.size for d in pos])) if kw.get("pos_grid", True) else pos[0].size
    n_spec = int(np.prod([d.size for d in spec]))
    labels = (np.arange(n_pos) * 7 % k).astype(np.uint32)
    mean = np.random.default_rng(1).standard_normal((k, n_spec))
    return KMeansResult(
        labels=labels,
        centroids=mean,
        mean_response=mean,
        counts=np.bincount(labels, minlength=k),
        pos_dims=list(pos),
        spec_dims=list(spec),
        **META,
        **kw,
    )


def _click(v, ax, x, y):
    px, py = ax.transData.transform((x, y))
    event = MouseEvent("button_press_event", v.figure.canvas, px, py, button=1)
    v.figure.canvas.callbacks.process("button_press_event", event)


def _png(v):
    return v._output.value


# ------------------------------------------------------------------------------------- SVD / PCA
def test_svd_component_slider_shows_map_loading_and_scree():
    r = svd_result()
    v = r.visualize(interactive=False)
    assert isinstance(v, SVDViewer) and v.slider.max == r.k and v.pos_view.kind == "image"
    for j in (2, 0, 3):
        before = _png(v)
        v.slider.value = j + 1  # as a user moving the slider: component numbers 1 … k
        assert v.index == j
        np.testing.assert_array_equal(v.map_data, r.U[:, j].reshape(NY, NX))  # rows = Y (slower)
        np.testing.assert_array_equal(v.map_artist.get_array(), r.U[:, j].reshape(NY, NX))
        np.testing.assert_array_equal(v.loading_data, r.V[j])
        np.testing.assert_array_equal(v.loading_artist.get_ydata(), r.V[j])
        np.testing.assert_array_equal(v.loading_artist.get_xdata(), BIAS.values)
        np.testing.assert_allclose(v._scree_marker.get_data(), [[j + 1], [r.S[j]]])  # the scree marks it
        assert f"Component {j + 1} (" in v.ax_map.get_title() and f"Component {j + 1}" in v._readout.value
        assert _png(v) != before  # redrawn
    # units on every axis
    assert v.ax_map.get_xlabel() == "X (µm)" and v.ax_map.get_ylabel() == "Y (µm)"
    assert v.colorbar.ax.get_ylabel() == "Abundance (a. u.)"
    assert v.ax_loading.get_xlabel() == "Bias (V)" and v.ax_loading.get_ylabel() == "Current loading (a. u.)"
    assert v.ax_scree.get_ylabel() == "Singular value (nA)" and v.ax_scree.get_xlabel() == "Component"
    assert len(v.figure.axes) == 5  # map, colour bar, loading, scree and its twin: no colour bar piles up


def test_svd_scree_click_picks_the_component():
    r = svd_result()
    v = SVDViewer(r, interactive=False)
    _click(v, v.ax_scree, 3.1, r.S[2])
    assert v.slider.value == 3
    np.testing.assert_array_equal(v.loading_data, r.V[2])


def test_pca_scores_on_one_position_dimension_are_curves_in_data_units():
    r = svd_result(pos=(X,), cls=PCAResult, explained_variance_ratio=np.array([0.5, 0.2, 0.1, 0.05]))
    v = r.visualize(interactive=False, scores=True)
    v.set(2)
    assert v.pos_view.kind == "line" and v.colorbar is None
    np.testing.assert_allclose(v.map_artist.get_ydata(), r.U[:, 1] * r.S[1])
    np.testing.assert_array_equal(v.map_artist.get_xdata(), X.values)
    assert v.ax_map.get_xlabel() == "X (µm)" and v.ax_map.get_ylabel() == "Current score (nA)"
    assert "(10 %)" in v.ax_loading.get_title() or "(20 %)" in v.ax_loading.get_title()


def test_nmf_has_no_scree():
    rng = np.random.default_rng(3)
    r = NMFResult(W=rng.random((NY * NX, 3)), H=rng.random((3, NB)), pos_dims=[Y, X], spec_dims=[BIAS], **META)
    v = r.visualize(interactive=False)
    assert v.ax_scree is None and v.slider.max == 3
    v.set(3)
    np.testing.assert_array_equal(v.map_data, r.W[:, 2].reshape(NY, NX))
    np.testing.assert_array_equal(v.loading_artist.get_ydata(), r.H[2])
    assert v.ax_loading.get_xlabel() == "Bias (V)" and v.ax_loading.get_ylabel() == "Current (a. u.)"


def test_complex_components_part_dropdown():
    r = svd_result(complex_=True)
    v = SVDViewer(r, interactive=False)
    v.set(2)
    np.testing.assert_allclose(v.loading_artist.get_ydata(), np.abs(r.V[1]))
    np.testing.assert_allclose(v.map_artist.get_array(), np.abs(r.U[:, 1]).reshape(NY, NX))
    v.part_dropdown.value = "phase"
    np.testing.assert_allclose(v.loading_artist.get_ydata(), np.angle(r.V[1]))
    assert v.ax_loading.get_ylabel().endswith("(rad)") and v.colorbar.ax.get_ylabel().endswith("(rad)")
    np.testing.assert_array_equal(v.loading_data, r.V[1])  # the raw values are kept


def test_two_spectroscopic_dimensions_give_a_loading_image():
    r = svd_result(spec=(FREQ, BIAS))
    v = SVDViewer(r, interactive=False)
    v.set(4)
    assert v.spec_view.kind == "image"
    np.testing.assert_array_equal(v.loading_artist.get_array(), r.V[3].reshape(FREQ.size, NB))
    assert v.ax_loading.get_xlabel() == "Bias (V)" and v.ax_loading.get_ylabel() == "Frequency (kHz)"
    assert v.loading_colorbar.ax.get_ylabel() == "Current loading (a. u.)"


def test_real_svd_and_pca_of_a_dataset(tmp_path):
    import h5py

    rng = np.random.default_rng(5)
    data = rng.random((NY * NX, NB)).astype(np.float32)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        usidgpu.write_main(
            f.create_group("Measurement_000/Channel_000"), "Raw_Data", data, "Current", "nA", [Y, X], [BIAS]
        )
    with usidgpu.open(tmp_path / "a.h5") as f:
        m = f.main_datasets()[0]
        for r in (usidgpu.svd(m, 3, device="cpu"), usidgpu.pca(m, 3, device="cpu")):
            v = r.visualize(interactive=False)
            v.set(3)
            np.testing.assert_allclose(v.map_artist.get_array(), np.asarray(r.U)[:, 2].reshape(NY, NX), rtol=1e-6)
            np.testing.assert_allclose(v.loading_artist.get_ydata(), np.asarray(r.V)[2], rtol=1e-6)
            assert v.ax_scree.get_ylabel() == "Singular value (nA)"


# ------------------------------------------------------------------------------------- k-means
def test_cluster_picker_highlights_the_cluster_and_its_mean_response():
    r = kmeans_result(k=4)
    v = r.visualize(interactive=False)
    assert isinstance(v, ClusterViewer)
    labels = r.labels.reshape(NY, NX)
    np.testing.assert_array_equal(v.labels_data, labels)
    np.testing.assert_array_equal(v.map_artist.get_array(), labels)
    for c in (2, 0, 3):
        v.dropdown.value = c
        assert v.cluster == c
        np.testing.assert_array_equal(v.highlight, labels == c)
        veil = np.ma.getdata(v._veil.get_array())
        assert np.isnan(veil[labels == c]).all() and (veil[labels != c] == 1).all()  # the others fade
        np.testing.assert_array_equal(v.mean_data, r.mean_response[c])
        (line,) = v.mean_lines[c]
        np.testing.assert_array_equal(line.get_ydata(), r.mean_response[c])
        assert line.get_alpha() == 1.0 and line.get_linewidth() > 2
        assert all(ln.get_alpha() == v.FAINT for j, lines in enumerate(v.mean_lines) if j != c for ln in lines)
        assert f"Cluster {c} (n = {r.counts[c]})" in v.ax_mean.get_title()
    v.set(None)  # all
    assert v.dropdown.value == -1 and v.highlight.all()
    assert all(ln.get_alpha() == 1.0 for lines in v.mean_lines for ln in lines)
    # units
    assert v.ax_map.get_xlabel() == "X (µm)" and v.ax_map.get_ylabel() == "Y (µm)"
    assert v.ax_mean.get_xlabel() == "Bias (V)" and v.ax_mean.get_ylabel() == "Current (nA)"


def test_cluster_map_click_picks_the_cluster_there():
    r = kmeans_result(k=3)
    v = ClusterViewer(r, interactive=False)
    _click(v, v.ax_map, X.values[4], Y.values[2])
    assert v.cluster == int(r.labels.reshape(NY, NX)[2, 4])


def test_cluster_scatter_of_sparse_positions_and_image_mean_responses():
    n = 30
    rng = np.random.default_rng(2)
    xs = Dimension("X", "nm", rng.uniform(0, 5, n))
    ys = Dimension("Y", "nm", rng.uniform(0, 5, n))
    r = kmeans_result(k=3, pos=(ys, xs), spec=(FREQ, BIAS), pos_grid=False)
    v = ClusterViewer(r, interactive=False)
    assert v.pos_view.kind == "scatter" and isinstance(v.map_artist, PathCollection)
    v.set(1)
    np.testing.assert_array_equal(v.map_artist.get_alpha(), np.where(r.labels == 1, 1.0, v.FAINT))
    np.testing.assert_array_equal(v.mean_artist.get_array(), r.mean_response[1].reshape(FREQ.size, NB))
    assert v.mean_colorbar.ax.get_ylabel() == "Current (nA)"
    assert v.ax_map.get_xlabel() == "X (nm)" and v.ax_mean.get_ylabel() == "Frequency (kHz)"
    _click(v, v.ax_map, xs.values[7], ys.values[7])
    assert v.cluster == int(r.labels[7])


# ------------------------------------------------------------------------------------- columns
@pytest.fixture(scope="module")
def columns():
    from usidgpu.atoms.analysis import analyze
    from usidgpu.atoms.synthetic import lattice_image

    truth = lattice_image(
        (96, 96), spacing=14.0, angle_deg=-7.0, vacancies=2, displacement=0.3, dose=200.0, margin=3.0, seed=2
    )
    return analyze(truth.image, device="cpu", engine="array"), truth.image


def _vacancy_markers(ax):
    return [c for c in ax.collections if isinstance(c, PathCollection) and c.get_label().startswith("vacancies")]


def test_column_picker_lists_the_fit(columns):
    a, image = columns
    v = a.visualize(image, interactive=False)
    assert isinstance(v, ColumnsViewer) and v.slider.max == a.n_columns - 1
    for i in (5, 0, a.n_columns - 1):
        v.slider.value = i
        y, x = a.fit.params[i, 1], a.fit.params[i, 2]
        ey, ex = a.fit.errors[i, 1], a.fit.errors[i, 2]
        assert f"Column {i} of {a.n_columns}" in v.text.value
        assert f"x          = {x:.3f} ± {ex:.3f} px" in v.text.value
        assert f"y          = {y:.3f} ± {ey:.3f} px" in v.text.value
        assert f"amplitude  = {a.fit.params[i, 0]:.3f}" in v.text.value
        np.testing.assert_allclose(v.marker.get_data(), [[x], [y]])
    assert v.ax.get_xlabel() == "x (px)" and v.ax.get_ylabel() == "y (px)"
    _click(v, v.ax, a.positions[12, 1] + 0.4, a.positions[12, 0] - 0.3)
    assert v.column == 12


def test_column_toggles_and_physical_units(columns):
    a0, image = columns
    import dataclasses

    a = dataclasses.replace(a0, pixel_size=(0.02, 0.02), units="nm")  # 20 pm pixels
    v = ColumnsViewer(a, image, interactive=False)
    assert any(isinstance(c, Quiver) for c in v.ax.collections) and len(_vacancy_markers(v.ax)) == 1
    png = _png(v)
    v.displacements.value = False
    assert not any(isinstance(c, Quiver) for c in v.ax.collections)
    v.vacancies.value = False
    assert not _vacancy_markers(v.ax) and _png(v) != png
    v.set(column=3, displacements=True, vacancies=True)
    assert any(isinstance(c, Quiver) for c in v.ax.collections) and len(_vacancy_markers(v.ax)) == 1
    x = a.fit.params[3, 2]
    np.testing.assert_allclose(v.marker.get_data()[0], [x * 0.02])  # drawn in nm
    assert f"({x * 0.02:.4g} ± " in v.text.value and " nm)" in v.text.value
    assert v.ax.get_xlabel() == "x (nm)" and v.ax.get_ylabel() == "y (nm)"
    with pytest.raises(IndexError):
        v.set(column=a.n_columns)


# ------------------------------------------------------------------------------------- display
def test_widgets_render_and_dispatch(columns):
    import ipywidgets

    for r, cls in ((svd_result(), SVDViewer), (kmeans_result(), ClusterViewer), (columns[0], ColumnsViewer)):
        args = (columns[1],) if cls is ColumnsViewer else ()
        v = visualize(r, *args, interactive=False)
        assert isinstance(v, cls) and isinstance(v.widget, ipywidgets.VBox)
        assert _png(v)[:8] == b"\x89PNG\r\n\x1a\n"
        assert "application/vnd.jupyter.widget-view+json" in v._repr_mimebundle_()
        assert cls.__name__ in repr(v)
    with pytest.raises(TypeError):
        SVDViewer(kmeans_result())
    with pytest.raises(ValueError):
        columns[0].visualize()  # an analysis of a bare array has no source to draw


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ipympl's Toolbar and traitlets
def test_ipympl_canvas():
    pytest.importorskip("ipympl")
    r = kmeans_result()
    v = r.visualize(interactive=True)
    assert type(v.figure.canvas).__module__.startswith("ipympl")
    _click(v, v.ax_map, X.values[1], Y.values[1])
    assert v.cluster == int(r.labels.reshape(NY, NX)[1, 1])
