"""The browser page of ``usidgpu serve``, driven in a real headless Chromium (Debian's, through
Playwright) against a real server on loopback. What the page shows is read back from the page —
the image's pixels drawn into a canvas, the spectrum it plotted — and compared with
:meth:`usidgpu.MainDataset.sel` on the same file. Screenshots go to ``tests/artifacts/``."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import h5py
import httpx
import numpy as np
import pytest
from fault_tools import results_groups
from helpers import make_file
from service_tools import served

import usidgpu
from usidgpu import Dimension

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (.ci/run installs Debian's)")
ARTIFACTS = Path(__file__).parent / "artifacts"
LOADED = "window.usidgpu.view && window.usidgpu.view.image && window.usidgpu.view.image.loaded"

PIPELINE = """
[[rule]]
name = "svd"
kind = ["spectrum image"]
analysis = "svd"
parameters = { k = 2 }
"""


def spectrum_image(path: Path, seed: int = 0) -> None:
    data = np.random.default_rng(seed).standard_normal((24, 32, 40)).astype(np.float32)
    make_file(path, data, pos=[Dimension("Y", "nm", np.arange(24) * 0.5), Dimension("X", "nm", np.arange(32) * 0.5)],
              spec=[Dimension("Bias", "V", np.linspace(-1, 1, 40))])  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    # the page's own policy forbids eval; Playwright's waits evaluate strings, so tests bypass it
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # expected failures: the event stream cut when a test stops its server, and images the page
    # dropped itself (a slider moved on before the last one arrived)
    page.on(
        "requestfailed",
        lambda r: (
            None
            if r.url.endswith("/api/v1/events") or "ERR_ABORTED" in (r.failure or "")
            else errors.append(f"failed: {r.url} {r.failure}")
        ),
    )
    outside: list[str] = []
    page.on(
        "request",
        lambda r: (
            outside.append(r.url)
            if not r.url.startswith(("http://127.0.0.1", "data:", "blob:http://127.0.0.1"))
            else None
        ),
    )
    yield page
    context.close()
    assert not errors, errors
    assert not outside, f"the page asked the outside world for {outside}"


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def displayed_pixels(page, selector: str = "#image") -> np.ndarray:
    """The RGBA pixels of an image the page shows, at its natural size (drawn into a canvas)."""
    flat = page.evaluate(
        """(selector) => { const img = document.querySelector(selector);
                   const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
                   const g = c.getContext('2d'); g.drawImage(img, 0, 0);
                   return [c.width, c.height, Array.from(g.getImageData(0, 0, c.width, c.height).data)]; }""",
        selector,
    )
    w, h, data = flat
    return np.array(data, dtype=np.uint8).reshape(h, w, 4)


def test_a_dropped_file_appears_live_with_its_pipeline_and_a_corrupt_one_with_its_reason(page, tmp_path):
    folder = tmp_path / "instrument"
    folder.mkdir()
    pipeline = tmp_path / "pipeline.toml"
    pipeline.write_text(PIPELINE)
    with served(folder, "--pipeline", pipeline, "--settle", "0.3", "--state", tmp_path / "state") as server:
        page.goto(server.url)
        page.wait_for_selector("#datasets")
        assert page.locator(".card").count() == 0
        staging = tmp_path / "si.h5"
        spectrum_image(staging)
        shutil.copy(staging, folder / "si.h5")  # no reload from here on: the event stream updates the page
        page.wait_for_selector(".card", timeout=60_000)
        card = page.locator(".card").first
        assert "spectrum image" in card.inner_text() and "Bias 40 V" in card.inner_text()
        page.wait_for_selector(".card .badge.done", timeout=90_000)
        assert "svd: done" in card.inner_text()
        (folder / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
        page.wait_for_selector("#failed li", timeout=60_000)
        text = page.locator("#failed li").first.inner_text()
        assert text.startswith("broken.h5: ") and "\n" not in text and str(folder) not in text
        page.fill("input[type=search]", "no such thing")
        assert page.locator(".card").count() == 0
        page.fill("input[type=search]", "bias")
        assert page.locator(".card").count() == 1
        shot(page, "datasets")
        page.goto("about:blank")  # leave before the server stops


def test_slider_and_click_show_the_image_and_spectrum_of_sel_then_an_svd_runs(page, tmp_path):
    from PIL import Image

    from usidgpu.service.encode import png_bytes

    folder = tmp_path / "instrument"
    folder.mkdir()
    spectrum_image(folder / "si.h5", seed=3)
    with served(folder, "--no-pipeline", "--state", tmp_path / "state") as server:
        page.goto(server.url)
        page.click(".card")
        page.wait_for_function(LOADED)
        page.focus("#slider-Bias")  # the keyboard moves the slider
        for _ in range(7):
            page.keyboard.press("ArrowRight")
        page.wait_for_function("window.usidgpu.view.image.loaded && window.usidgpu.view.index.Bias === 7")
        page.wait_for_function("document.querySelector('#image').complete")
        with usidgpu.open(folder / "si.h5") as f:
            m = f.main_datasets()[0]
            want = np.asarray(Image.open(io.BytesIO(png_bytes(m.sel(Bias=7)))))
            shown = displayed_pixels(page)  # the very pixels of sel(Bias=7), opaque
            np.testing.assert_array_equal(shown[..., :3], want[..., :3])
            assert (shown[..., 3] == 255).all()
            box = page.locator("#image").bounding_box()
            # click the middle of pixel (row 10, column 21)
            page.mouse.click(box["x"] + (21.5 / 32) * box["width"], box["y"] + (10.5 / 24) * box["height"])
            page.wait_for_function("window.usidgpu.view.spectrum && window.usidgpu.view.spectrum.selection.Y === 10")
            spectrum = page.evaluate("window.usidgpu.view.spectrum")
            assert spectrum["selection"]["X"] == 21
            np.testing.assert_allclose(spectrum["values"], m.sel(Y=10, X=21), rtol=1e-6)
            np.testing.assert_allclose(spectrum["x"], m.dim("Bias").values)
        assert page.locator("#xlabel").text_content() == "Bias (V)"
        assert page.locator("#ylabel").text_content() == "Current (nA)"
        assert page.locator("#scalebar").inner_text().endswith("nm")
        shot(page, "dataset")
        # an SVD from the page, with k = 3: queued, done, its group in the file and on the page
        page.select_option("select[name=analysis]", "svd")
        page.fill("input[name=k]", "3")
        page.click("#run button[type=submit]")
        page.wait_for_selector("#jobs tr[data-status=done]", timeout=90_000)
        page.wait_for_selector("#results li[data-tool=SVD] a[data-result]", timeout=30_000)
        shot(page, "dataset-after-svd")
        # the downloads of the view are the numbers shown
        spectrum_csv = httpx.get(server.url + page.get_attribute("#download-spectrum", "href")).text
        np.testing.assert_allclose(np.loadtxt(io.StringIO(spectrum_csv), delimiter=",", skiprows=1)[:, 1],
                                   spectrum["values"], rtol=1e-6)  # fmt: skip
        image_npy = httpx.get(server.url + page.get_attribute("#download-npy", "href")).content
        with usidgpu.open(folder / "si.h5") as f:
            np.testing.assert_array_equal(np.load(io.BytesIO(image_npy)), f.main_datasets()[0].sel(Bias=7))
        # a results dataset opens in the same viewer; its NPY download equals the file's dataset
        links = {a.get_attribute("data-result"): a.get_attribute("href") for a in page.locator("a[data-result]").all()}
        assert {"U", "V"} <= set(links), links  # the group's Main datasets (S is a plain table)
        u_npy = page.locator("#results a[download='U.npy']").get_attribute("href")
        with h5py.File(folder / "si.h5", "r") as h:
            group = [k for k in h["Measurement_000/Channel_000"] if k.endswith("SVD_000")][0]
            stored = h[f"Measurement_000/Channel_000/{group}/U"][()]
        np.testing.assert_allclose(
            np.load(io.BytesIO(httpx.get(server.url + u_npy).content)).reshape(stored.shape), stored
        )
        page.click("a[data-result=U]")
        page.wait_for_function("window.usidgpu.view && window.usidgpu.view.desc.name === 'U'")
        page.wait_for_function(LOADED)
        page.go_back()
        page.wait_for_selector("#run")
        # a refused parameter: the page shows the command's own one line
        page.fill("input[name=k]", "many")
        page.click("#run button[type=submit]")
        page.wait_for_selector("#error:not([hidden])")
        assert "invalid int value: 'many'" in page.locator("#error").inner_text()
        page.goto("about:blank")
    (group,) = results_groups(folder / "si.h5", "SVD")
    assert group.endswith("Raw_Data-SVD_000")
    with usidgpu.open(folder / "si.h5") as f:
        (svd,) = [r for r in f.results_groups(f.main_datasets()[0]) if r.tool == "SVD"]
        assert svd.complete and svd.attrs["num_components"] == 3  # the k typed into the page


def test_zoom_and_pan_ask_for_the_part_shown_and_clicks_find_their_pixel(page, tmp_path):
    from PIL import Image

    from usidgpu.service.encode import png_bytes

    folder = tmp_path / "instrument"
    folder.mkdir()
    spectrum_image(folder / "si.h5", seed=5)  # 24 × 32 positions
    with served(folder, "--no-pipeline", "--state", tmp_path / "state") as server:
        page.goto(server.url)
        page.click(".card")
        page.wait_for_function(LOADED)
        page.click("#zoom-in")  # the middle half of each side: rows 6–17, columns 8–23
        page.wait_for_function(LOADED + " && window.usidgpu.view.image.window.rows[0] === 6")
        page.wait_for_function("document.querySelector('#image').complete")
        window = page.evaluate("window.usidgpu.view.image.window")
        assert window == {"rows": [6, 18], "cols": [8, 24]}
        with usidgpu.open(folder / "si.h5") as f:
            m = f.main_datasets()[0]
            want = np.asarray(Image.open(io.BytesIO(png_bytes(m.sel(Y=slice(6, 18), X=slice(8, 24), Bias=0)))))
            np.testing.assert_array_equal(displayed_pixels(page)[..., :3], want[..., :3])
            # drag a quarter of the width to the left: the window moves 4 columns right
            box = page.locator("#image").bounding_box()
            y = box["y"] + box["height"] / 2
            page.mouse.move(box["x"] + 0.75 * box["width"], y)
            page.mouse.down()
            page.mouse.move(box["x"] + 0.5 * box["width"], y, steps=5)
            page.mouse.up()
            page.wait_for_function(LOADED + " && window.usidgpu.view.image.window.cols[0] === 12")
            # a click in the zoomed view finds its pixel of the whole image
            box = page.locator("#image").bounding_box()
            page.mouse.click(box["x"] + (2.5 / 16) * box["width"], box["y"] + (3.5 / 12) * box["height"])
            page.wait_for_function("window.usidgpu.view.spectrum && window.usidgpu.view.spectrum.selection.Y === 9")
            spectrum = page.evaluate("window.usidgpu.view.spectrum")
            assert spectrum["selection"]["X"] == 14
            np.testing.assert_allclose(spectrum["values"], m.sel(Y=9, X=14), rtol=1e-6)
        page.click("#zoom-reset")
        page.wait_for_function(LOADED + " && window.usidgpu.view.image.window.rows[1] === 24")
        page.goto("about:blank")


def test_off_loopback_the_page_signs_in_with_a_key(page, tmp_path):
    """A service bound beyond loopback needs a key: the page asks for it once, refuses a wrong
    one with the server's words, and with the right one shows the datasets (the key then travels
    in an HttpOnly cookie, also for images and the event stream)."""
    from usidgpu.service.keys import KeyStore

    folder = tmp_path / "instrument"
    folder.mkdir()
    spectrum_image(folder / "si.h5")
    state = tmp_path / "state"
    state.mkdir()
    key = KeyStore(state / "keys.json").add("read")
    with served(folder, "--host", "0.0.0.0", "--no-pipeline", "--state", state) as server:
        page.goto(server.url.replace("0.0.0.0", "127.0.0.1"))
        page.wait_for_selector("#sign-in")
        page.fill("#key", "not-the-key-0123456789")
        page.click("#sign-in button")
        page.wait_for_selector("#error:not([hidden])")
        assert "not a key of this service" in page.locator("#error").inner_text()
        page.fill("#key", key)
        page.click("#sign-in button")
        page.wait_for_selector(".card img")
        page.wait_for_function("document.querySelector('.card img').naturalWidth > 0")  # the thumbnail got through
        cookies = page.context.cookies()
        (cookie,) = [c for c in cookies if c["name"] == "usidgpu_key"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert page.evaluate("document.cookie") == ""  # no script can read it
        page.goto("about:blank")


def test_a_sparse_dataset_shows_no_broken_image(page, tmp_path, real_sparse):
    """Positions that fill no grid (pyUSID's sparse-sampling sample): no thumbnail is asked for and
    the dataset page says why there is no image, with the table to download."""
    folder = tmp_path / "instrument"
    folder.mkdir()
    shutil.copy(real_sparse, folder / "sparse.h5")
    with served(folder, "--no-pipeline", "--read-only", "--state", tmp_path / "state") as server:
        page.goto(server.url)
        page.wait_for_selector(".card")
        assert page.locator(".card img").count() == 0
        page.locator(".card").first.click()
        page.wait_for_selector("text=sparse sampling")
        href = page.locator("a[download$='.npy']").first.get_attribute("href")
        assert httpx.get(server.url + href).status_code == 200
        page.goto("about:blank")


@pytest.fixture
def real_sparse():
    from conftest import real_file

    path = real_file("sparse_sampling.h5")
    if not path.exists():
        pytest.skip("the sparse-sampling sample is not here")
    return path


def test_a_denoising_result_is_shown_beside_its_source_with_the_same_contrast(page, tmp_path):
    from fault_tools import usidgpu as run_cli
    from PIL import Image

    from usidgpu.service.encode import contrast_limits, png_bytes

    folder = tmp_path / "instrument"
    folder.mkdir()
    y, x = np.mgrid[0:64, 0:64]
    image = np.sin(x / 5.0) * np.cos(y / 7.0) + np.random.default_rng(1).normal(0, 0.3, (64, 64))
    pos = [Dimension("Y", "nm", 64), Dimension("X", "nm", 64)]
    spec = [Dimension("arb", "a.u.", 1)]
    make_file(
        folder / "img.h5", image[..., None].astype(np.float32), pos=pos, spec=spec, quantity="Intensity", units="counts"
    )
    assert run_cli("denoise", folder / "img.h5", "--window", "8").returncode == 0
    with served(folder, "--no-pipeline", "--read-only", "--state", tmp_path / "state") as server:
        page.goto(server.url)
        page.click(".card")
        page.wait_for_function(LOADED)
        # an image has no spectrum: a click shows the value at the pixel (row 20, column 40)
        box = page.locator("#image").bounding_box()
        page.mouse.click(box["x"] + (40.5 / 64) * box["width"], box["y"] + (20.5 / 64) * box["height"])
        page.wait_for_function("window.usidgpu.view.spectrum && window.usidgpu.view.spectrum.selection.Y === 20")
        shown = page.evaluate("window.usidgpu.view.spectrum.values")
        with usidgpu.open(folder / "img.h5") as f:
            value = float(f.main_datasets()[0].sel(Y=20, X=40, arb=0))
        assert shown == pytest.approx([value], rel=1e-6)
        assert page.locator("#point").inner_text().endswith("counts")
        page.click("button.compare")
        page.wait_for_function(
            "['#compare-raw', '#compare-cleaned', '#compare-noise'].every((s) => { const i = document.querySelector(s);"
            " return i && i.complete && i.naturalWidth > 0; })"
        )
        shot(page, "denoise-compare")
        with usidgpu.open(folder / "img.h5") as f:
            raw = f.main_datasets()[0].sel(arb=0)
            (group,) = [r for r in f.results_groups(f.main_datasets()[0])]
            cleaned = f[group.path + "/Cleaned_Image"].sel(arb=0)
        lo, hi = contrast_limits(raw)
        assert page.evaluate("window.usidgpu.compare.limits") == pytest.approx([lo, hi])
        want = np.asarray(Image.open(io.BytesIO(png_bytes(cleaned, lo, hi, "gray"))))
        np.testing.assert_array_equal(displayed_pixels(page, "#compare-cleaned")[..., :3], want[..., :3])
        page.goto("about:blank")


def test_a_kmeans_result_shows_its_label_map_and_mean_responses_in_matching_colours(page, tmp_path):
    import matplotlib
    from fault_tools import usidgpu as run_cli
    from PIL import Image

    from usidgpu.service.encode import png_bytes

    folder = tmp_path / "instrument"
    folder.mkdir()
    spectrum_image(folder / "si.h5", seed=9)
    assert run_cli("cluster", folder / "si.h5", "-k", "3").returncode == 0
    with served(folder, "--no-pipeline", "--read-only", "--state", tmp_path / "state") as server:
        page.goto(server.url)
        page.click(".card")
        page.wait_for_function(LOADED)
        page.click("button.clusters")
        page.wait_for_function(
            "(() => { const i = document.querySelector('#label-map');"
            " return i && i.complete && i.naturalWidth > 0; })()"
        )
        shot(page, "kmeans")
        with usidgpu.open(folder / "si.h5") as f:
            (group,) = f.results_groups(f.main_datasets()[0])
            labels = f[group.path + "/Labels"]
            label_image = labels.sel(**{d.name: 0 for d in labels.spec_dims})
            responses = f[group.path + "/Mean_Response"].to_ndim()
        want = np.asarray(Image.open(io.BytesIO(png_bytes(label_image.astype(float), -0.5, 9.5, "tab10"))))
        np.testing.assert_array_equal(displayed_pixels(page, "#label-map")[..., :3], want[..., :3])
        shown = page.evaluate("window.usidgpu.clusters")
        assert shown["k"] == 3
        np.testing.assert_allclose(np.array(shown["responses"]), responses.reshape(3, -1), rtol=1e-6)
        colours = page.evaluate("[...document.querySelectorAll('#responses polyline')].map((l) => l.style.stroke)")
        tab10 = [tuple(round(255 * c) for c in matplotlib.colormaps["tab10"](i)[:3]) for i in range(3)]
        assert colours == [f"rgb({r}, {g}, {b})" for r, g, b in tab10]  # the lines wear the map's colours
        page.goto("about:blank")


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """A spectrum image with an SVD and an NMF, a lattice image denoised and with its atomic
    columns, and a G-mode file with its Bayesian inference — each written by the CLI."""
    from fault_tools import usidgpu as run_cli

    from usidgpu.atoms.synthetic import lattice_image
    from usidgpu.bayes import simulate_giv

    folder = tmp_path_factory.mktemp("analysed")
    spectrum_image(folder / "si.h5", seed=4)
    with h5py.File(folder / "si.h5", "a") as f:  # NMF needs non-negative data
        f["Measurement_000/Channel_000/Raw_Data"][...] = np.abs(f["Measurement_000/Channel_000/Raw_Data"][...])
    lattice = lattice_image((96, 96), spacing=12, vacancies=2, displacement=0.3, dose=300, seed=2)
    make_file(folder / "img.h5", lattice.image[:, :, None].astype(np.float32),
              pos=[Dimension("Y", "Å", 96), Dimension("X", "Å", 96)], spec=[Dimension("arb", "a.u.", 1)],
              quantity="Intensity", units="counts")  # fmt: skip
    sim = simulate_giv(12, 256, noise=0.03, seed=6, g_shunt=np.linspace(0.4, 0.8, 12))
    with h5py.File(folder / "giv.h5", "a") as f:
        g = f.require_group("Measurement_000/Channel_000")
        g.attrs["excitation_frequency_[Hz]"] = sim["frequency"]
        pos, spec = [Dimension("Y", "µm", 3), Dimension("X", "µm", 4)], [Dimension("Bias", "V", sim["bias"])]
        current = sim["current"].astype(np.float32).reshape(3, 4, -1)
        usidgpu.write_main(g, "Raw_Data", current, "Current", "nA", pos, spec)
    for args in (("svd", "si.h5", "-k", "3"), ("nmf", "si.h5", "-k", "2"), ("denoise", "img.h5", "--window", "8"),
                 ("atoms", "img.h5"), ("bayes", "giv.h5", "--samples", "200", "--grid-points", "40")):  # fmt: skip
        ran = run_cli(args[0], folder / args[1], *args[2:])
        assert ran.returncode == 0, ran.stderr
    return folder


def open_dataset_of(page, server, file: str) -> None:
    page.goto(server.url)
    page.wait_for_selector(".card")
    page.locator(".card", has_text=file).first.click()
    page.wait_for_function(LOADED)


def images_loaded(selector: str) -> str:
    return f"[...document.querySelectorAll('{selector}')].every((i) => i.complete && i.naturalWidth > 0)"


def test_decompositions_show_scree_components_and_abundance_maps_of_the_file(page, analysed, tmp_path):
    from PIL import Image

    from usidgpu.service.encode import contrast_limits, png_bytes

    with served(analysed, "--no-pipeline", "--read-only", "--state", tmp_path / "state") as server:
        open_dataset_of(page, server, "si.h5")
        with usidgpu.open(analysed / "si.h5") as f:
            main = f.main_datasets()[0]
            groups = {g.tool: g.path for g in f.results_groups(main)}
            s = f.h5[groups["SVD"] + "/S"][()]
            v = f[groups["SVD"] + "/V"].to_ndim().reshape(3, -1)
            u = f[groups["SVD"] + "/U"]
            u0 = u.sel(**{u.spec_dims[0].name: 0})
            errors = f.h5[groups["NMF"] + "/Reconstruction_Error"][()]
            h = f[groups["NMF"] + "/Components"].to_ndim().reshape(2, -1)
        page.click("li[data-tool=SVD] button.decomposition")
        page.wait_for_function(f"window.usidgpu.results?.tool === 'SVD' && {images_loaded('img.abundance')}")
        shot(page, "svd-views")
        shown = page.evaluate("window.usidgpu.results")
        np.testing.assert_allclose(shown["scree"], s, rtol=1e-6)
        np.testing.assert_allclose(np.array(shown["components"]), v, rtol=1e-6)
        assert shown["k"] == 3 and len(shown["maps"]) == 3
        assert page.locator("#scree .mark").count() == 1  # the k kept, marked on the scree
        assert "Bias (V)" in page.locator("#components").inner_html()
        want = np.asarray(Image.open(io.BytesIO(png_bytes(u0, None, None, "RdBu_r"))))
        np.testing.assert_array_equal(displayed_pixels(page, "img.abundance")[..., :3], want[..., :3])
        limits = page.evaluate("document.querySelector('img.abundance').dataset.limits").split(",")
        assert [float(v) for v in limits] == pytest.approx(contrast_limits(u0))  # the colour scale shown with it
        assert page.locator(".colour-scale").first.inner_text().endswith(u.units)
        # the line plots download as PNG, drawn in the browser: the components in their colours
        with page.expect_download() as download:
            page.click("#compare a.png-download[data-name=V]")
        assert download.value.suggested_filename == "V.png"
        drawn = np.asarray(Image.open(download.value.path()).convert("RGB")).astype(int)
        assert drawn.shape == (520, 1200, 3)
        for colour in ((31, 119, 180), (255, 127, 14), (44, 160, 44)):  # tab10's first three
            assert (np.abs(drawn - colour).max(axis=-1) <= 24).sum() > 100, colour

        page.click("li[data-tool=NMF] button.decomposition")
        page.wait_for_function(f"window.usidgpu.results.tool === 'NMF' && {images_loaded('img.abundance')}")
        shown = page.evaluate("window.usidgpu.results")
        np.testing.assert_allclose(shown["scree"], errors, rtol=1e-6)
        np.testing.assert_allclose(np.array(shown["components"]), h, rtol=1e-6)
        csv_link = page.locator("#compare a", has_text="CSV").first.get_attribute("href")
        table = np.loadtxt(io.StringIO(httpx.get(server.url + csv_link).text), delimiter=",", skiprows=1)
        np.testing.assert_allclose(table[:, 1], errors, rtol=1e-8)  # the numbers behind the plot
        page.goto("about:blank")


def test_denoising_scree_atomic_columns_and_bayes_maps_show_the_files_numbers(page, analysed, tmp_path):
    with served(analysed, "--no-pipeline", "--read-only", "--state", tmp_path / "state") as server:
        open_dataset_of(page, server, "img.h5")
        with usidgpu.open(analysed / "img.h5") as f:
            main = f.main_datasets()[0]
            groups = {g.tool: g for g in f.results_groups(main)}
            singular = f.h5[groups["Windowed_SVD"].path + "/Singular_Values"][()]
            k = int(groups["Windowed_SVD"].attrs["num_components"])
            columns = f.h5[groups["Atomic_Columns"].path + "/Columns"][()].reshape(-1)
            vacancies = f.h5[groups["Atomic_Columns"].path + "/Vacancies"][()]
        page.click("li[data-tool=Windowed_SVD] button.compare")
        page.wait_for_function("window.usidgpu.compare && window.usidgpu.compare.scree")
        assert page.evaluate("window.usidgpu.compare.k") == k
        np.testing.assert_allclose(page.evaluate("window.usidgpu.compare.scree"), singular, rtol=1e-9)

        page.click("li[data-tool=Atomic_Columns] button.columns")
        page.wait_for_function(
            f"window.usidgpu.results?.tool === 'Atomic_Columns' && {images_loaded('#columns-image')}"
        )
        shot(page, "atom-columns")
        shown = page.evaluate("window.usidgpu.results")
        np.testing.assert_allclose(
            np.array(shown["columns"]), np.column_stack([columns["y"], columns["x"], columns["sublattice"]]), rtol=1e-9
        )
        np.testing.assert_allclose(np.array(shown["vacancies"]).reshape(vacancies.shape), vacancies, rtol=1e-9)
        assert page.locator("#columns-overlay circle").count() == len(columns)
        assert page.locator("#columns-overlay .vacancy").count() == len(vacancies)
        assert page.locator("#columns-table tr").count() == len(columns) + 1
        colours = set(
            page.evaluate("[...document.querySelectorAll('#columns-overlay circle')].map((c) => c.style.stroke)")
        )
        assert len(colours) == len(set(columns["sublattice"]))  # one colour per sublattice
        # the strain map: every column's local strain, as the file holds it, one component at a time
        page.wait_for_function("window.usidgpu.results.strain && window.usidgpu.results.scan")
        with h5py.File(analysed / "img.h5", "r") as h:
            strain = h[groups["Atomic_Columns"].path + "/Strain"][()]
            scan = h[groups["Atomic_Columns"].path + "/Scan_Distortion"]
            fast = scan[0, :, list(scan.attrs["columns"]).index("fast_spacing")]
        shown = page.evaluate("window.usidgpu.results.strain")
        assert shown["component"] == "exx"
        np.testing.assert_allclose(np.array(shown["values"], dtype=float), strain[:, 0], rtol=1e-9, equal_nan=True)
        page.select_option("#strain-component", "rotation")
        shown = page.evaluate("window.usidgpu.results.strain")
        np.testing.assert_allclose(np.array(shown["values"], dtype=float), strain[:, 3], rtol=1e-9, equal_nan=True)
        assert "°" in page.locator("#strain-scale").inner_text()
        assert page.locator("#strain-overlay circle").count() == len(columns)
        shown_fast = np.array(page.evaluate("window.usidgpu.results.scan.fast"), dtype=float)
        np.testing.assert_allclose(shown_fast, fast, rtol=1e-9, equal_nan=True)
        shot(page, "atom-strain")

        open_dataset_of(page, server, "giv.h5")
        with usidgpu.open(analysed / "giv.h5") as f:
            (group,) = f.results_groups(f.main_datasets()[0])
            resistance = f[group.path + "/Resistance"]
            rv = resistance.sel(Y=1, X=2)
        page.click("li[data-tool=Bayesian_Inference] button.bayes")
        page.wait_for_function(images_loaded("#resistance-map, img.capacitance"))
        # the colour scales arrive with their maps: wait, so the layout no longer moves under the click
        page.wait_for_function("[...document.querySelectorAll('.colour-scale')].every((s) => s.textContent)")
        box = page.locator("#resistance-map").bounding_box()
        page.mouse.click(box["x"] + (2.5 / 4) * box["width"], box["y"] + (1.5 / 3) * box["height"])
        page.wait_for_function("window.usidgpu.results.bayes.rv")
        shot(page, "bayes-maps")
        assert page.evaluate("window.usidgpu.results.bayes.point") == [1, 2]
        np.testing.assert_allclose(
            page.evaluate("window.usidgpu.results.bayes.rv"), np.ravel(rv), rtol=1e-6, equal_nan=True
        )
        assert page.locator("img.capacitance").count() == 2
        page.wait_for_function("[...document.querySelectorAll('.colour-scale')].every((s) => s.textContent)")
        scales = page.locator(".colour-scale").all_inner_texts()
        assert scales[0].endswith(resistance.units) and all(t.endswith("pF") for t in scales[1:]), scales
        page.goto("about:blank")
