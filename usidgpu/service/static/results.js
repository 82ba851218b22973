// usidgpu serve: the page's views of results groups — one per kind of analysis, each with the
// numbers behind it for download. Plain JavaScript written for this project; it uses the helpers
// of app.js (loaded first) and only calls the service's own API.
"use strict";

const svgNS = "http://www.w3.org/2000/svg";
function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}
function plotBox(id, labelText) { return svgEl("svg", { class: "plot", id, role: "img", "aria-label": labelText }); }
function figure(content, caption, ...links) {
  return el("figure", { class: "panel" }, content, el("figcaption", {}, caption, links.length ? " · " : "", ...links));
}
function link(href, text, name) { return el("a", { href, download: name }, text); }
// a line plot (SVG) as a PNG download, drawn in the browser: the standalone SVG gets the styles
// the page's stylesheet gives plots as attributes, then goes through a canvas
function pngLink(svg, name) {
  return el("a", { href: "#", class: "png-download", "data-name": name, onclick: (event) => {
    event.preventDefault();
    svgToPng(svg).then((url) => {
      const a = el("a", { href: url, download: `${name}.png` });
      document.body.append(a);
      a.click();
      a.remove();
    }).catch(() => showError("the plot could not be drawn as PNG"));
  } }, "PNG");
}
async function svgToPng(svg, scale = 2) {
  const [, , W, H] = (svg.getAttribute("viewBox") || "0 0 600 260").split(" ").map(Number);
  const copy = svg.cloneNode(true);
  copy.setAttribute("xmlns", svgNS);
  copy.setAttribute("width", W * scale);
  copy.setAttribute("height", H * scale);
  for (const line of copy.querySelectorAll("polyline")) {
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", line.style.stroke || "#0b6bcb");
    line.setAttribute("stroke-width", "1.5");
    line.removeAttribute("style");
  }
  for (const text of copy.querySelectorAll("text")) {
    text.setAttribute("font-size", "11");
    text.setAttribute("font-family", "sans-serif");
    text.setAttribute("fill", "#5f6b73");
  }
  const blob = new Blob([new XMLSerializer().serializeToString(copy)], { type: "image/svg+xml" });
  const image = new Image();
  image.src = URL.createObjectURL(blob);
  await image.decode();
  const canvas = document.createElement("canvas");
  canvas.width = W * scale;
  canvas.height = H * scale;
  const g = canvas.getContext("2d");
  g.fillStyle = "#fff";
  g.fillRect(0, 0, canvas.width, canvas.height);
  g.drawImage(image, 0, 0, canvas.width, canvas.height);
  URL.revokeObjectURL(image.src);
  return canvas.toDataURL("image/png");
}
const dataUrl = (id, params) => `/api/v1/datasets/${id}/data?${query(params)}`;
const arrayUrl = (desc, n, name, format) => `/api/v1/datasets/${desc.id}/results/${n}/arrays/${encodeURIComponent(name)}?format=${format}`;
const ordinal = (n) => Array.from({ length: n }, (_, i) => i + 1);

// a PNG the server drew (as a blob URL) and the contrast limits it used (X-Contrast-Limits); a
// refusal or a lost connection is shown on the page, then thrown
async function fetchMap(url) {
  let response;
  try {
    response = await fetch(url);
  } catch (err) {
    showError("a map could not be loaded");
    throw err;
  }
  if (!response.ok) { showError((await response.json()).detail); throw new Error("map refused"); }
  const limits = (response.headers.get("X-Contrast-Limits") || "").split(",").map(Number);
  return { url: URL.createObjectURL(await response.blob()), limits };
}
const scaleText = (cmap, limits, units) => (limits.length === 2 && limits.every(Number.isFinite)
  ? `${cmap}: ${fmt(limits[0])} … ${fmt(limits[1])}${units ? " " + units : ""}` : "");

// a map drawn by the server, shown with its colour scale (the limits the server chose, and units)
function colourMap(url, attrs, units, cmap) {
  const img = el("img", attrs), scale = el("span", { class: "meta colour-scale" });
  fetchMap(url).then((map) => {
    scale.textContent = scaleText(cmap, map.limits, units);
    img.dataset.limits = map.limits.join(",");
    img.src = map.url;
  }).catch(() => { /* shown by fetchMap */ });
  return el("div", {}, img, scale);
}

// the image dimensions of a dataset strided to at most `side` pixels, the others at index 0 (or as given)
function imageParams(desc, side, fixed = {}) {
  const lay = layoutOf(desc), sel = {};
  for (const d of desc.dims) sel[d.name] = lay.image.includes(d) ? `::${stride(d.size, side)}` : String(fixed[d.name] ?? 0);
  return sel;
}

// which view each tool gets (tools without one list their datasets only)
const RESULT_VIEWS = {
  SVD: { button: "decomposition", text: "scree | components | abundance maps", show: showDecomposition },
  PCA: { button: "decomposition", text: "scree | components | abundance maps", show: showDecomposition },
  NMF: { button: "decomposition", text: "error | components | abundance maps", show: showDecomposition },
  Windowed_SVD: { button: "compare", text: "raw | cleaned | removed noise, scree", show: showDenoising },
  KMeans: { button: "clusters", text: "label map | mean responses", show: (r) => showClusters(byName(r).Labels, byName(r).Mean_Response) },
  Atomic_Columns: { button: "columns", text: "columns on the image | displacements | table", show: showColumns },
  Bayesian_Inference: { button: "bayes", text: "R(V) | capacitance maps", show: showBayes },
};
const byName = (r) => Object.fromEntries((r.datasets || []).map((d) => [d.name, d]));

function resultsPanel(desc) {
  const section = el("section", { id: "results" }, el("h2", {}, "Results"));
  if (!desc.results.length) { section.append(el("p", { class: "meta" }, "none yet")); return section; }
  const viewButton = (r, n) => {
    const view = RESULT_VIEWS[r.tool];
    if (!view || !r.complete || !state.view || !state.view.layout.image.length) return "";
    return el("button", { type: "button", class: view.button, onclick: () => view.show(r, n, desc).catch((e) => showError(String(e.message || e))) }, view.text);
  };
  section.append(el("div", { id: "compare" }));
  section.append(el("ul", {}, desc.results.map((r, n) => el("li", { "data-tool": r.tool },
    `${r.tool}: ${r.path.split("/").pop()}${r.complete ? "" : " (incomplete)"} `, viewButton(r, n),
    el("ul", {},
      (r.datasets || []).map((d) => el("li", {},
        el("a", { href: `#/dataset/${d.id}`, "data-result": d.name }, d.name), ` ${d.kind} · download `,
        link(dataUrl(d.id, { format: "npy" }), "npy", `${d.name}.npy`))),
      (r.arrays || []).filter((a) => a.served).map((a) => el("li", {}, `${a.name} (${a.shape.join(" × ")}) · download `,
        link(arrayUrl(desc, n, a.name, "npy"), "npy", `${a.name}.npy`), " ",
        a.shape.length <= 2 ? link(arrayUrl(desc, n, a.name, "csv"), "csv", `${a.name}.csv`) : "")))))));
  return section;
}

// ---------------------------------------------------------------------------- SVD, PCA, NMF
async function showDecomposition(r, n, desc) {
  const box = $("#compare"), parts = byName(r), nmf = r.tool === "NMF";
  const comps = parts[nmf ? "Components" : "V"], maps = parts[nmf ? "Projection" : "U"];
  const k = Number(r.attributes.num_components) || null;
  const [cdesc, mdesc] = await Promise.all([api(`datasets/${comps.id}`), api(`datasets/${maps.id}`)]);
  const answer = await api(`datasets/${comps.id}/data?format=json`);
  const rows = answer.data.map((row) => [row].flat(Infinity));
  const spec = cdesc.dims.find((d) => d.role === "spectroscopic" && d.size > 1) || cdesc.dims[cdesc.dims.length - 1];
  const x = spec.values || rows[0].map((_, i) => i);
  // the scree (singular values, log scale, with the k kept) or NMF's error after each iteration
  const curveName = nmf ? "Reconstruction_Error" : "S";
  const curve = (r.arrays || []).find((a) => a.name === curveName);
  const scree = curve ? [(await api(`datasets/${desc.id}/results/${n}/arrays/${curveName}?format=json`)).data].flat(Infinity) : [];
  const screePlot = plotBox("scree", nmf ? "reconstruction error per iteration" : "scree plot");
  if (scree.length) {
    plotLine(screePlot, ordinal(scree.length), scree, nmf ? "iteration" : "component", nmf ? "‖X − WH‖" : "singular value",
      nmf ? {} : { logY: true, markX: k || scree.length, markText: `k = ${k || scree.length}` });
  }
  const palette = rows.length <= 10 ? TAB10 : TAB20;
  const compPlot = plotBox("components", "components");
  plotLines(compPlot, x, rows, palette, label(spec.name, spec.units), label(cdesc.quantity, cdesc.units));
  const index = mdesc.dims.find((d) => d.role === "spectroscopic" && d.size === rows.length) || mdesc.dims[mdesc.dims.length - 1];
  const shown = Math.min(rows.length, 8);
  const mapUrls = ordinal(shown).map((i) => dataUrl(maps.id, { ...imageParams(mdesc, 256, { [index.name]: i - 1 }), format: "png", cmap: "RdBu_r" }));
  state.results = { tool: r.tool, k, scree, components: rows, x, maps: mapUrls };
  const legend = el("p", { class: "meta" }, rows.map((_, i) => el("span", { class: "swatch", "data-colour": palette[i % palette.length] }, `component ${i}`)));
  box.replaceChildren(el("h3", {}, `${r.tool}: ${rows.length} components`),
    el("div", { class: "triptych" },
      figure(screePlot, nmf ? "error after each iteration" : `scree (log scale), k = ${k || scree.length} kept`,
        pngLink(screePlot, nmf ? "error" : "scree"), " ",
        ...(curve ? [link(arrayUrl(desc, n, curveName, "csv"), "CSV", `${curveName}.csv`), " ", link(arrayUrl(desc, n, curveName, "npy"), "NPY", `${curveName}.npy`)] : [])),
      el("figure", { class: "panel wide" }, compPlot, legend, el("figcaption", {}, "components · ", pngLink(compPlot, comps.name), " ",
        link(dataUrl(comps.id, { format: "csv" }), "CSV", `${comps.name}.csv`), " ", link(dataUrl(comps.id, { format: "npy" }), "NPY", `${comps.name}.npy`)))),
    el("h3", {}, `abundance maps (${maps.name})`),
    el("div", { class: "maps" }, mapUrls.map((url, i) => figure(colourMap(url, { alt: `abundance map ${i}`, class: "abundance" }, mdesc.units, "RdBu_r"),
      `component ${i}`, link(url, "PNG", `${maps.name}-${i}.png`), " ",
      link(dataUrl(maps.id, { ...imageParams(mdesc, Infinity, { [index.name]: i }), format: "csv" }), "CSV", `${maps.name}-${i}.csv`)))));
  for (const sw of legend.querySelectorAll(".swatch")) sw.style.borderLeftColor = sw.dataset.colour;
}

// ---------------------------------------------------------------------------- windowed-SVD denoising
async function showDenoising(r, n, desc) {
  const parts = byName(r);
  await compareDenoising(parts.Cleaned_Image, parts.Removed_Noise);
  if (!(r.arrays || []).some((a) => a.name === "Singular_Values")) return;
  const values = [(await api(`datasets/${desc.id}/results/${n}/arrays/Singular_Values?format=json`)).data].flat(Infinity);
  const k = Number(r.attributes.num_components) || values.length;
  const scree = plotBox("scree", "scree plot of the windows");
  plotLine(scree, ordinal(values.length), values, "component", "singular value", { logY: true, markX: k, markText: `k = ${k}` });
  state.compare.scree = values;
  state.compare.k = k;
  $("#compare").append(el("div", { class: "triptych" }, el("figure", { class: "panel wide" }, scree,
    el("figcaption", {}, `scree of the windows (log scale): k = ${k} kept (${r.attributes.k_rule || "given"}) · `, pngLink(scree, "scree"), " ",
      link(arrayUrl(desc, n, "Singular_Values", "csv"), "CSV", "Singular_Values.csv"), " ",
      link(arrayUrl(desc, n, "Singular_Values", "npy"), "NPY", "Singular_Values.npy")))));
}

// ---------------------------------------------------------------------------- atomic columns
const TABLE_ROWS = 500;
async function showColumns(r, n, desc) {
  const box = $("#compare"), parts = byName(r), view = state.view;
  const answer = await api(`datasets/${parts.Columns.id}/data?format=json`);
  const fields = answer.data; // compound: one list per field
  const count = fields.x ? [fields.x].flat(Infinity).length : 0;
  const col = (name) => (fields[name] ? [fields[name]].flat(Infinity) : new Array(count).fill(0));
  const xs = col("x"), ys = col("y"), subl = col("sublattice"), dx = col("dx"), dy = col("dy");
  const hasVacancies = (r.arrays || []).some((a) => a.name === "Vacancies" && a.shape[0] > 0);
  const vacancies = hasVacancies ? (await api(`datasets/${desc.id}/results/${n}/arrays/Vacancies?format=json`)).data : [];
  // the source image, whole (strided to ≤ 1024 px) with the columns drawn in its pixel coordinates
  const [rowsDim, colsDim] = view.layout.image;
  const frame = Number(r.attributes.frame) || 0;
  const fixed = {};
  for (const d of view.layout.sliders) fixed[d.name] = d === view.layout.sliders[0] ? frame : 0;
  const url = dataUrl(view.id, { ...imageParams(view.desc, MAX_SIDE, fixed), format: "png", cmap: "gray" });
  const overlay = svgEl("svg", { id: "columns-overlay", viewBox: `0 0 ${colsDim.size} ${rowsDim.size}`, preserveAspectRatio: "none", class: "overlay" });
  const radius = Math.max(0.8, (Number(r.attributes.spacing) || 10) / 8);
  const shift = Math.max(...dx.map(Math.abs), ...dy.map(Math.abs), 1e-9);
  const gain = ((Number(r.attributes.spacing) || 10) / 3) / shift; // the largest displacement drawn a third of a spacing long
  for (let i = 0; i < count; i++) {
    const c = svgEl("circle", { cx: xs[i] + 0.5, cy: ys[i] + 0.5, r: radius, class: "column", "data-sublattice": subl[i] });
    c.style.stroke = TAB10[Math.max(0, subl[i]) % 10];
    overlay.append(c);
    if (dx[i] || dy[i]) overlay.append(svgEl("line", { x1: xs[i] + 0.5, y1: ys[i] + 0.5, x2: xs[i] + 0.5 + gain * dx[i], y2: ys[i] + 0.5 + gain * dy[i], class: "displacement" }));
  }
  for (const v of vacancies) { // rows (frame, y, x, sublattice)
    const [vy, vx] = [v[1] + 0.5, v[2] + 0.5], s = radius * 1.3;
    overlay.append(svgEl("path", { d: `M${vx - s},${vy - s}L${vx + s},${vy + s}M${vx - s},${vy + s}L${vx + s},${vy - s}`, class: "vacancy" }));
  }
  const sublattices = [...new Set(subl)].sort((a, b) => a - b);
  state.results = { tool: r.tool, columns: xs.map((x, i) => [ys[i], x, subl[i]]), vacancies, gain, image: url };
  const legend = el("p", { class: "meta" }, sublattices.map((s) => el("span", { class: "swatch", "data-colour": TAB10[Math.max(0, s) % 10] }, `sublattice ${s} (${subl.filter((v) => v === s).length})`)),
    el("span", { class: "swatch vacancy-key" }, `vacancies (${vacancies.length})`), el("span", { class: "swatch displacement-key" }, `displacement × ${fmt(gain)}`));
  const shownFields = ["column", "sublattice", "y", "x", "dy", "dx", "amplitude", "sigma_x", "sigma_y", "y_error", "x_error"].filter((f) => fields[f]);
  const table = el("table", { id: "columns-table" }, el("tr", {}, shownFields.map((f) => el("th", {}, f))),
    ...ordinal(Math.min(count, TABLE_ROWS)).map((i) => el("tr", {}, shownFields.map((f) => el("td", {}, fmt(col(f)[i - 1]))))));
  box.replaceChildren(el("h3", {}, `${count} atomic columns, ${sublattices.length} sublattice(s), ${vacancies.length} vacancies`),
    el("div", { class: "columns-view" }, figure(el("div", { class: "image-wrap" }, el("img", { src: url, alt: "the image the columns were found in", id: "columns-image" }), overlay),
      "columns by sublattice, vacancies (×) and displacements from the lattice (lines, magnified)", link(url, "image (PNG)", "image.png"), " ",
      link(dataUrl(parts.Columns.id, { format: "csv" }), "columns (CSV)", "columns.csv"), " ",
      hasVacancies ? link(arrayUrl(desc, n, "Vacancies", "csv"), "vacancies (CSV)", "vacancies.csv") : ""), legend),
    el("h3", {}, count > TABLE_ROWS ? `the first ${TABLE_ROWS} of ${count} columns (all of them in the CSV)` : "columns (px)"),
    el("div", { class: "table-wrap" }, table));
  for (const sw of legend.querySelectorAll(".swatch[data-colour]")) sw.style.borderLeftColor = sw.dataset.colour;
  const extra = (r.arrays || []).filter((a) => a.served);
  const strain = extra.find((a) => a.name === "Strain" && a.shape[0] === count);
  if (strain) box.append(await strainPanel(desc, n, strain, url, xs, ys, radius, colsDim, rowsDim));
  const scan = extra.find((a) => a.name === "Scan_Distortion" && a.columns);
  if (scan) box.append(await scanPanel(desc, n, scan));
}

// a diverging colour (blue – white – red, as matplotlib's RdBu_r) for t in [-1, 1]
function diverging(t) {
  const stops = [[33, 102, 172], [247, 247, 247], [178, 24, 43]];
  const u = Math.max(-1, Math.min(1, Number.isFinite(t) ? t : 0)) + 1; // 0 … 2
  const [a, b] = u <= 1 ? [stops[0], stops[1]] : [stops[1], stops[2]], f = u <= 1 ? u : u - 1;
  return `rgb(${a.map((c, i) => Math.round(c + f * (b[i] - c))).join(", ")})`;
}

// the columns on the image again, each filled with the colour of its local strain component
async function strainPanel(desc, n, strain, imageUrl, xs, ys, radius, colsDim, rowsDim) {
  const rows = (await api(`datasets/${desc.id}/results/${n}/arrays/Strain?format=json`)).data;
  const names = strain.columns || ["exx", "eyy", "exy", "rotation"];
  const overlay = svgEl("svg", { id: "strain-overlay", viewBox: `0 0 ${colsDim.size} ${rowsDim.size}`, preserveAspectRatio: "none", class: "overlay" });
  const scale = el("span", { class: "meta colour-scale", id: "strain-scale" });
  const choose = el("select", { id: "strain-component", "aria-label": "strain component" }, names.map((c) => el("option", { value: c }, c)));
  const draw = () => {
    const k = names.indexOf(choose.value), values = rows.map((row) => row[k]);
    const finite = values.filter(Number.isFinite).map(Math.abs).sort((a, b) => a - b);
    const limit = finite.length ? finite[Math.min(finite.length - 1, Math.floor(0.98 * finite.length))] || 1e-12 : 1;
    const rotation = choose.value === "rotation";
    const shown = (v) => (rotation ? `${fmt((v * 180) / Math.PI)}°` : `${fmt(100 * v)} %`);
    overlay.replaceChildren(...values.map((v, i) => {
      const c = svgEl("circle", { cx: xs[i] + 0.5, cy: ys[i] + 0.5, r: radius * 1.1, class: "strain" });
      c.style.fill = Number.isFinite(v) ? diverging(v / limit) : "transparent";
      return c;
    }));
    scale.textContent = `${choose.value}: blue ${shown(-limit)} … red ${shown(limit)} (98th percentile of |${choose.value}|)`;
    state.results.strain = { component: choose.value, values, limit };
  };
  choose.addEventListener("change", draw);
  draw();
  return el("div", { class: "columns-view" }, el("h3", {}, "local strain and rotation"),
    el("label", {}, "component ", choose),
    figure(el("div", { class: "image-wrap" }, el("img", { src: imageUrl, alt: "the image under the strain map", id: "strain-image" }), overlay),
      `relative to ${strain.meaning ? strain.meaning.replace(/^.*relative to /, "") : "the fitted lattice"}`,
      link(arrayUrl(desc, n, "Strain", "csv"), "strain (CSV)", "strain.csv"), " ", link(arrayUrl(desc, n, "Strain", "npy"), "NPY", "strain.npy")),
    scale);
}

// the scan's fitted distortion: the apparent spacing along a line (fast scan) and across lines (slow)
async function scanPanel(desc, n, scan) {
  const frames = (await api(`datasets/${desc.id}/results/${n}/arrays/Scan_Distortion?format=json`)).data;
  const rows = frames[0], col = (name) => rows.map((row) => row[scan.columns.indexOf(name)]);
  const pixel = col("pixel"), fast = col("fast_spacing"), slow = col("slow_spacing");
  const plot = plotBox("scan-distortion", "apparent spacing along and across the scan lines");
  plotLines(plot, pixel, [fast, slow], [TAB10[0], TAB10[1]], "pixel (along a line for the fast scan, line number for the slow scan)", "apparent spacing / true");
  state.results.scan = { pixel, fast, slow, summary: scan.summary };
  const legend = el("p", { class: "meta" }, el("span", { class: "swatch", "data-colour": TAB10[0] }, "fast scan (along each line)"),
    el("span", { class: "swatch", "data-colour": TAB10[1] }, "slow scan (line to line)"));
  for (const sw of legend.querySelectorAll(".swatch")) sw.style.borderLeftColor = sw.dataset.colour;
  const summary = [scan.summary].flat()[0] || "";
  return el("div", {}, el("h3", {}, "scan distortion (reported as such, not as strain or vacancies)"),
    el("figure", { class: "panel" }, plot, legend, el("figcaption", {}, summary, " · ", pngLink(plot, "scan_distortion"), " ",
      link(arrayUrl(desc, n, "Scan_Distortion", "npy"), "profiles (NPY)", "scan_distortion.npy"))));
}

// ---------------------------------------------------------------------------- G-mode Bayesian inference
async function showBayes(r, n, desc) {
  const box = $("#compare"), parts = byName(r);
  const [rdesc, cdesc] = await Promise.all([api(`datasets/${parts.Resistance.id}`), api(`datasets/${parts.Capacitance.id}`)]);
  const bias = rdesc.dims.find((d) => d.role === "spectroscopic");
  const direction = cdesc.dims.find((d) => d.role === "spectroscopic");
  const lay = layoutOf(rdesc);
  const bayes = { bias: Math.floor(bias.size / 2), point: null, rv: null };
  state.results = { tool: r.tool, bayes };
  const rImage = el("img", { id: "resistance-map", alt: "resistance at the chosen bias" });
  const cImages = ordinal(direction.size).map((i) => dataUrl(parts.Capacitance.id, { ...imageParams(cdesc, 512, { [direction.name]: i - 1 }), format: "png", cmap: "magma" }));
  const rv = plotBox("rv", "resistance against bias at the chosen position");
  const readout = el("output", {});
  const rScale = el("span", { class: "meta colour-scale" });
  const drawR = async () => {
    const url = dataUrl(parts.Resistance.id, { ...imageParams(rdesc, 512, { [bias.name]: bayes.bias }), format: "png", cmap: "viridis" });
    readout.textContent = valueText(bias, bayes.bias);
    const map = await fetchMap(url);
    rScale.textContent = scaleText("viridis", map.limits, rdesc.units);
    rImage.src = map.url;
  };
  const slide = el("input", { type: "range", min: 0, max: bias.size - 1, value: bayes.bias, "aria-label": `${bias.name} of the resistance map`,
    oninput: (e) => { bayes.bias = Number(e.target.value); drawR().catch(() => { /* shown by fetchMap */ }); } });
  rImage.addEventListener("click", async (event) => { // R(V) at the pixel clicked
    const rect = rImage.getBoundingClientRect(), [rowDim, colDim] = lay.image;
    const row = Math.min(rowDim.size - 1, Math.floor(((event.clientY - rect.top) / rect.height) * rowDim.size));
    const column = Math.min(colDim.size - 1, Math.floor(((event.clientX - rect.left) / rect.width) * colDim.size));
    const sel = { [rowDim.name]: row, [colDim.name]: column, format: "json" };
    const answer = await api(`datasets/${parts.Resistance.id}/data?${query(sel)}`);
    bayes.point = [row, column];
    bayes.rv = [answer.data].flat(Infinity);
    plotLine(rv, bias.values || bayes.rv.map((_, i) => i), bayes.rv, label(bias.name, bias.units), label(rdesc.quantity, rdesc.units));
  });
  drawR().catch(() => { /* shown by fetchMap */ });
  box.replaceChildren(el("h3", {}, "G-mode Bayesian inference: resistance R(V) and capacitance"),
    el("div", { class: "triptych" },
      figure(el("div", {}, rImage, rScale, el("label", {}, ` ${bias.name} `, slide, " ", readout)), "resistance map (click a pixel for its R(V))",
        link(dataUrl(parts.Resistance.id, { format: "npy" }), "R (NPY)", "Resistance.npy")),
      ...cImages.map((url, i) => figure(colourMap(url, { alt: `capacitance ${i}`, class: "capacitance" }, cdesc.units, "magma"),
        `capacitance, ${direction.name} ${valueText(direction, i)}`, link(url, "PNG", `Capacitance-${i}.png`), " ",
        link(dataUrl(parts.Capacitance.id, { ...imageParams(cdesc, Infinity, { [direction.name]: i }), format: "csv" }), "CSV", `Capacitance-${i}.csv`)))),
    el("figure", { class: "panel" }, rv, el("figcaption", {}, "R(V) at the clicked position · ", pngLink(rv, "R_of_V"))));
}

// a denoising result beside its source: the same frame, the same contrast for raw and cleaned
async function compareDenoising(cleaned, noise) {
  const view = state.view, box = $("#compare");
  const viewOf = async (id) => {
    const desc = id === view.id ? view.desc : await api(`datasets/${id}`);
    const lay = layoutOf(desc), sel = {};
    for (const d of desc.dims) {
      sel[d.name] = lay.image.includes(d) ? `::${stride(d.size, 512)}` : String(view.index[d.name] ?? 0);
    }
    return sel;
  };
  const png = (id, params) => fetchMap(dataUrl(id, params));
  const raw = await png(view.id, { ...(await viewOf(view.id)), format: "png", cmap: "gray" });
  const [lo, hi] = raw.limits;
  const clean = await png(cleaned.id, { ...(await viewOf(cleaned.id)), format: "png", cmap: "gray", vmin: lo, vmax: hi });
  const removed = await png(noise.id, { ...(await viewOf(noise.id)), format: "png", cmap: "RdBu_r" });
  state.compare = { limits: [lo, hi], noiseLimits: removed.limits, cleaned: cleaned.id, noise: noise.id };
  const panel = (title, image, id) => el("figure", { class: "panel" }, el("img", { src: image.url, alt: title, id }), el("figcaption", {}, title));
  box.replaceChildren(el("h3", {}, `raw | cleaned | removed noise (same contrast for raw and cleaned: ${fmt(lo)} … ${fmt(hi)}${view.desc.units ? " " + view.desc.units : ""})`),
    el("div", { class: "triptych" }, panel("raw", raw, "compare-raw"), panel("cleaned", clean, "compare-cleaned"), panel("removed noise", removed, "compare-noise")));
}

// k-means: the label map and each cluster's mean response, in the same colours (matplotlib's
// tab10 / tab20, whose colours are listed here so the lines match the map the server draws)
const TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const TAB20 = ["#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd", "#c5b0d5",
  "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d", "#17becf", "#9edae5"];
async function showClusters(labels, responses) {
  const box = $("#compare"), ldesc = await api(`datasets/${labels.id}`), rdesc = await api(`datasets/${responses.id}`);
  const answer = await api(`datasets/${responses.id}/data?format=json`);
  const k = answer.shape[0], palette = k <= 10 ? TAB10 : TAB20, cmap = k <= 10 ? "tab10" : "tab20";
  if (k > 20) { showError(`${k} clusters: the colours repeat beyond 20`); }
  const lay = layoutOf(ldesc), sel = {};
  for (const d of ldesc.dims) sel[d.name] = lay.image.includes(d) ? `::${stride(d.size, 512)}` : "0";
  const url = `/api/v1/datasets/${labels.id}/data?${query({ ...sel, format: "png", cmap, vmin: -0.5, vmax: palette.length - 0.5 })}`;
  const spec = rdesc.dims.find((d) => d.role === "spectroscopic" && d.size > 1) || rdesc.dims[rdesc.dims.length - 1];
  const x = spec.values || answer.data[0].map((_, i) => i);
  const rows = answer.data.map((r) => (Array.isArray(r[0]) ? r.flat(Infinity) : r));
  state.clusters = { k, responses: rows, x, labels: url };
  const plot = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  plot.setAttribute("class", "plot");
  plot.setAttribute("id", "responses");
  plotLines(plot, x, rows, palette, label(spec.name, spec.units), label(rdesc.quantity, rdesc.units));
  const legend = el("p", { class: "meta" }, rows.map((_, i) => el("span", { class: "swatch", "data-colour": palette[i % palette.length] }, `cluster ${i}`)));
  box.replaceChildren(el("h3", {}, `k-means: ${k} clusters`),
    el("div", { class: "triptych" }, el("figure", { class: "panel" }, el("img", { src: url, alt: "label map", id: "label-map" }), el("figcaption", {}, "label map")),
      el("figure", { class: "panel wide" }, plot, legend, el("figcaption", {}, "mean response of each cluster · ", pngLink(plot, "mean_responses")))));
  for (const sw of legend.querySelectorAll(".swatch")) sw.style.borderLeftColor = sw.dataset.colour;
}
