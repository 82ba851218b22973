// usidgpu serve: the browser page. Plain JavaScript written for this project (no framework, no
// third-party code, nothing fetched from elsewhere): it only calls the service's own API.
"use strict";

const state = { datasets: [], failed: [], jobs: [], analyses: null, view: null };
window.usidgpu = state; // what the page shows, for tests and for the curious

// ---------------------------------------------------------------------------------------- helpers
const $ = (sel, root = document) => root.querySelector(sel);
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  return q.toString();
}
function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { box.hidden = true; }, 8000);
}
async function api(path, options = {}) {
  const response = await fetch(`/api/v1/${path}`, options);
  if (response.status === 401 && path !== "session") { // the sign-in form says why; no second message
    signIn();
    throw new Error("an API key is needed");
  }
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (_) { /* not JSON */ }
    showError(detail);
    throw new Error(detail);
  }
  return response.json();
}
const fmt = (x) => (Math.abs(x) >= 1e4 || (Math.abs(x) < 1e-3 && x !== 0) ? x.toExponential(3) : +x.toPrecision(4));
const label = (name, units) => (units ? `${name} (${units})` : name);

// which two dimensions make the image, which one the spectrum, which get sliders
function layoutOf(desc) {
  if (!desc.nd_shape) return { image: [], spectrum: null, sliders: [] }; // sparse sampling: no grid to draw
  const real = desc.dims.filter((d) => d.size > 1);
  const pos = real.filter((d) => d.role === "position");
  const image = (pos.length >= 2 ? pos : real).slice(0, 2);
  const spectrum = real.find((d) => d.role === "spectroscopic" && !image.includes(d)) || null;
  const sliders = desc.dims.filter((d) => d.size > 1 && !image.includes(d));
  return { image, spectrum, sliders };
}
function stride(size, target) { return Math.max(1, Math.ceil(size / target)); }
const MAX_SIDE = 1024;
function thumbnailUrl(d) { // the first image of the dataset's viewer, strided to ~96 px
  const lay = layoutOf(d);
  if (lay.image.length < 2) return null;
  const params = { format: "png", cmap: "gray" };
  for (const x of d.dims) params[x.name] = lay.image.includes(x) ? `::${stride(x.size, 96)}` : "0";
  return `/api/v1/datasets/${d.id}/data?${query(params)}`;
}

// a service off loopback needs an API key: asked once, kept by the server in an HttpOnly cookie
function signIn() {
  state.needKey = true;
  if ($("#sign-in")) return;
  const input = el("input", { type: "password", name: "key", id: "key", "aria-label": "API key", autocomplete: "off", size: 48 });
  const form = el("form", { id: "sign-in", onsubmit: async (e) => {
    e.preventDefault();
    try {
      await api("session", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ key: input.value }) });
      location.reload();
    } catch (_) { input.select(); }
  } }, el("h1", {}, "Sign in"), el("p", {}, "This service needs an API key (ask whoever runs it)."),
    el("div", { class: "toolbar" }, input, el("button", { class: "primary", type: "submit" }, "Sign in")));
  $("#main").replaceChildren(form);
  input.focus();
}

// ---------------------------------------------------------------------------------------- live data
async function refresh() {
  const [list, jobs] = await Promise.all([api("datasets"), api("jobs")]);
  state.datasets = list.datasets;
  state.failed = list.failed;
  state.jobs = jobs.jobs;
}
function listen() {
  const source = new EventSource("/api/v1/events");
  source.addEventListener("dataset", () => schedule());
  source.addEventListener("failed", () => schedule());
  source.addEventListener("job", (e) => {
    const job = JSON.parse(e.data);
    const i = state.jobs.findIndex((j) => j.id === job.id);
    if (i >= 0) state.jobs[i] = job; else state.jobs.unshift(job);
    if (job.status === "done" || job.status === "failed") schedule(); else rerenderJobs();
  });
  source.onopen = () => { $("#status").textContent = "live"; };
  source.onerror = () => { $("#status").textContent = "reconnecting…"; };
}
let pending = null;
function schedule() { // coalesce bursts of events into one refresh
  clearTimeout(pending);
  pending = setTimeout(async () => {
    try { await refresh(); } catch (_) { return; } // shown by api()
    route(false);
  }, 150);
}

// ---------------------------------------------------------------------------------------- datasets page
function jobsOf(id) { return state.jobs.filter((j) => j.dataset_id === id); }
function statusBadges(id) {
  return jobsOf(id).map((j) => el("span", { class: `badge ${j.status}`, title: j.message }, `${j.analysis}: ${j.status}`));
}
function renderDatasets() {
  const main = $("#main");
  const filter = state.filter || { q: "", kind: "" };
  const search = el("input", { type: "search", placeholder: "search name, dims, units, instrument…", "aria-label": "search", value: filter.q,
    oninput: (e) => { filter.q = e.target.value; state.filter = filter; drawGrid(); } });
  const kinds = [...new Set(state.datasets.map((d) => d.kind))].sort();
  const kind = el("select", { "aria-label": "kind", onchange: (e) => { filter.kind = e.target.value; state.filter = filter; drawGrid(); } },
    el("option", { value: "" }, "every kind"), kinds.map((k) => el("option", { value: k, selected: k === filter.kind }, k)));
  const grid = el("div", { class: "grid", id: "datasets" });
  function drawGrid() {
    const words = filter.q.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = state.datasets.filter((d) => (!filter.kind || d.kind === filter.kind) && words.every((w) =>
      JSON.stringify([d.name, d.file, d.path, d.kind, d.quantity, d.units, d.dims, d.instrument]).toLowerCase().includes(w)));
    grid.replaceChildren(...shown.map(card));
    if (!shown.length) grid.append(el("p", { class: "meta" }, state.datasets.length ? "nothing matches" : "no datasets yet: files dropped into the folder appear here"));
  }
  drawGrid();
  const failed = state.failed.length ? el("section", {}, el("h2", {}, "Files that could not be read"),
    el("ul", { class: "failed-list", id: "failed" }, state.failed.map((f) => el("li", {}, `${f.file}: ${f.error}`)))) : "";
  main.replaceChildren(el("h1", {}, "Datasets"), el("div", { class: "toolbar" }, search, kind), grid, failed);
}
function card(d) {
  const thumb = thumbnailUrl(d);
  const dims = d.dims.map((x) => `${x.name} ${x.size}${x.units ? " " + x.units : ""}`).join(" × ");
  const inst = Object.entries(d.instrument || {}).map(([k, v]) => `${k}: ${v}`).join(", ");
  return el("a", { class: "card", href: `#/dataset/${d.id}`, "data-id": d.id },
    thumb ? el("img", { src: thumb, alt: `${d.name} thumbnail`, loading: "lazy" }) : el("div", { class: "meta" }, d.kind),
    el("div", {}, el("div", { class: "name" }, `${d.file} ${d.path}`),
      el("div", { class: "meta" }, `${d.kind} · ${label(d.quantity, d.units)}`),
      el("div", { class: "meta" }, dims), inst ? el("div", { class: "meta" }, inst) : "",
      el("div", {}, statusBadges(d.id))));
}

// ---------------------------------------------------------------------------------------- dataset page
async function renderDataset(id) {
  const desc = await api(`datasets/${id}`);
  const lay = layoutOf(desc);
  const view = { id, desc, layout: lay, index: {}, point: null, vmin: "", vmax: "", cmap: "viridis", image: null, spectrum: null };
  for (const d of desc.dims) view.index[d.name] = 0;
  // the part of the image shown, in index space [start, stop) per image dimension: zoom and pan
  // ask the server for that part only, strided to at most MAX_SIDE pixels a side
  if (lay.image.length === 2) view.window = { rows: [0, lay.image[0].size], cols: [0, lay.image[1].size] };
  state.view = view;
  const main = $("#main");
  const title = el("h1", {}, desc.name, " ", el("span", { class: "meta" }, `${desc.file} ${desc.path}`));
  const summary = el("p", { class: "meta" }, `${desc.kind} · ${label(desc.quantity, desc.units)} · ` +
    desc.dims.map((d) => `${label(d.name, d.units)} ${d.size}`).join(" × "));
  if (lay.image.length < 2) {
    const why = desc.nd_shape ? "This dataset has no two dimensions to show as an image."
      : "Its positions do not fill a grid (sparse sampling), so there is no image to draw; the values are served as a table.";
    main.replaceChildren(title, summary, el("p", {}, why,
      " ", el("a", { href: `/api/v1/datasets/${id}/data?format=npy`, download: `${desc.name}.npy` }, "download (NPY)")),
      analysisPanel(desc), resultsPanel(desc));
    rerenderJobs();
    return;
  }
  const img = el("img", { id: "image", alt: `${desc.name} at the chosen indices`, draggable: "false" });
  enablePanZoom(img);
  const zoomBar = el("div", { class: "toolbar" },
    el("button", { type: "button", id: "zoom-in", onclick: () => zoom(0.5) }, "zoom in"),
    el("button", { type: "button", id: "zoom-out", onclick: () => zoom(2) }, "zoom out"),
    el("button", { type: "button", id: "zoom-reset", onclick: () => zoom(Infinity) }, "whole image"),
    el("span", { class: "meta", id: "window" }));
  const marker = el("div", { id: "marker", hidden: true });
  const scale = el("div", { class: "scalebar", id: "scalebar" });
  const controls = el("div", { class: "controls" }, lay.sliders.map((d) => slider(d)),
    el("label", {}, "contrast min", el("input", { type: "number", step: "any", id: "vmin", "aria-label": "contrast minimum", onchange: (e) => { view.vmin = e.target.value; drawImage(); } }), el("span", {})),
    el("label", {}, "contrast max", el("input", { type: "number", step: "any", id: "vmax", "aria-label": "contrast maximum", onchange: (e) => { view.vmax = e.target.value; drawImage(); } }), el("span", {})),
    el("label", {}, "colormap", el("select", { id: "cmap", onchange: (e) => { view.cmap = e.target.value; drawImage(); } },
      ["viridis", "gray", "magma", "inferno", "cividis", "RdBu_r"].map((c) => el("option", { value: c }, c))), el("span", {})));
  const plot = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  for (const [k, v] of Object.entries({ class: "plot", id: "spectrum", role: "img", "aria-label": "spectrum at the chosen position" })) plot.setAttribute(k, v);
  const left = el("figure", {}, zoomBar, el("div", { class: "image-wrap" }, img, marker), scale, el("p", { class: "meta", id: "downloads" }));
  const right = el("div", {}, el("h2", {}, lay.spectrum ? `Spectrum along ${lay.spectrum.name}` : "Value"),
    el("p", { class: "meta", id: "point" }, "click the image to show the spectrum there"), plot, controls);
  main.replaceChildren(title, summary, el("div", { class: "viewer" }, left, right), analysisPanel(desc), resultsPanel(desc));
  rerenderJobs();
  drawImage();
}
function slider(d) {
  const view = state.view;
  const out = el("output", { id: `value-${d.name}` }, valueText(d, 0));
  const input = el("input", { type: "range", min: 0, max: d.size - 1, step: 1, value: 0, id: `slider-${d.name}`, "aria-label": d.name,
    oninput: (e) => { view.index[d.name] = +e.target.value; out.textContent = valueText(d, +e.target.value); drawImage(); if (view.point) drawSpectrum(); } });
  return el("label", {}, label(d.name, d.units), input, out);
}
function valueText(d, i) { return d.values ? `${fmt(d.values[i])}${d.units ? " " + d.units : ""}` : `#${i}`; }
function imageSelection() {
  const view = state.view, lay = view.layout, sel = {};
  const [dy, dx] = lay.image;
  for (const d of view.desc.dims) {
    if (d === dy || d === dx) {
      const [a, b] = d === dy ? view.window.rows : view.window.cols;
      sel[d.name] = `${a}:${b}:${stride(b - a, MAX_SIDE)}`; // never more than MAX_SIDE px a side
    } else sel[d.name] = String(view.index[d.name]);
  }
  return sel;
}
function drawImage() {
  const view = state.view, img = $("#image");
  const params = { ...imageSelection(), format: "png", cmap: view.cmap, vmin: view.vmin, vmax: view.vmax };
  const url = `/api/v1/datasets/${view.id}/data?${query(params)}`;
  view.image = { url, selection: imageSelection(), window: JSON.parse(JSON.stringify(view.window)), loaded: false };
  img.onload = () => { view.image.loaded = true; drawScale(); downloads(); placeMarker(); };
  const { rows, cols } = view.window, [dy, dx] = view.layout.image;
  $("#window").textContent = rows[1] - rows[0] < dy.size || cols[1] - cols[0] < dx.size
    ? `${dy.name} ${rows[0]}–${rows[1] - 1}, ${dx.name} ${cols[0]}–${cols[1] - 1}` : "";
  img.onerror = async () => { const r = await fetch(url); try { showError((await r.json()).detail); } catch (_) { showError(`image: ${r.status}`); } };
  img.src = url;
}
function drawScale() {
  const view = state.view, [, dx] = view.layout.image, img = $("#image"), bar = $("#scalebar");
  if (!dx.values || dx.values.length < 2 || !img.clientWidth) { bar.replaceChildren(); return; }
  const step = Math.abs(dx.values[1] - dx.values[0]);
  const width = step * (view.window.cols[1] - view.window.cols[0]); // the shown part's physical width
  const nice = [1, 2, 5].flatMap((m) => [-3, -2, -1, 0, 1, 2, 3, 4, 5, 6].map((e) => m * 10 ** e)).sort((a, b) => a - b)
    .filter((v) => v <= width / 4).pop();
  if (!nice) { bar.replaceChildren(); return; }
  const px = (nice / width) * img.clientWidth;
  const line = el("span", { class: "bar" });
  line.style.width = `${px}px`; // through the CSSOM: the page's policy allows no inline style attributes
  bar.replaceChildren(line, `${fmt(nice)} ${dx.units || "px"}`);
}
function indexAt(event) { // the (row, column) of the image under the pointer, in the whole image
  const view = state.view, r = $("#image").getBoundingClientRect();
  const { rows: [y0, y1], cols: [x0, x1] } = view.window;
  const col = Math.min(x1 - 1, x0 + Math.floor(((event.clientX - r.left) / r.width) * (x1 - x0)));
  const row = Math.min(y1 - 1, y0 + Math.floor(((event.clientY - r.top) / r.height) * (y1 - y0)));
  return [Math.max(y0, row), Math.max(x0, col)];
}
function pick(event) {
  const view = state.view, [dy, dx] = view.layout.image;
  const [row, col] = indexAt(event);
  view.point = { [dy.name]: row, [dx.name]: col };
  placeMarker();
  drawSpectrum();
}
function placeMarker() {
  const view = state.view, marker = $("#marker"), [dy, dx] = view.layout.image;
  if (!view.point) return;
  const { rows: [y0, y1], cols: [x0, x1] } = view.window, r = $("#image").getBoundingClientRect();
  const row = view.point[dy.name], col = view.point[dx.name];
  marker.hidden = row < y0 || row >= y1 || col < x0 || col >= x1;
  marker.style.left = `${((col - x0 + 0.5) / (x1 - x0)) * r.width}px`;
  marker.style.top = `${((row - y0 + 0.5) / (y1 - y0)) * r.height}px`;
}
function zoom(factor, center) { // factor < 1 zooms in; Infinity shows the whole image
  const view = state.view, [dy, dx] = view.layout.image, w = view.window;
  const fit = (range, size, c) => {
    if (factor === Infinity) return [0, size];
    const span = Math.max(Math.min(8, size), Math.min(size, Math.round((range[1] - range[0]) * factor)));
    const mid = c ?? (range[0] + range[1]) / 2;
    const start = Math.max(0, Math.min(size - span, Math.round(mid - span / 2)));
    return [start, start + span];
  };
  view.window = { rows: fit(w.rows, dy.size, center && center[0]), cols: fit(w.cols, dx.size, center && center[1]) };
  drawImage();
}
function pan(dRows, dCols) {
  const view = state.view, [dy, dx] = view.layout.image, w = view.window;
  const shift = (range, size, d) => { const s = Math.max(-range[0], Math.min(size - range[1], d)); return [range[0] + s, range[1] + s]; };
  view.window = { rows: shift(w.rows, dy.size, dRows), cols: shift(w.cols, dx.size, dCols) };
  drawImage();
}
function enablePanZoom(img) {
  let drag = null;
  img.addEventListener("wheel", (e) => { e.preventDefault(); zoom(e.deltaY < 0 ? 0.5 : 2, indexAt(e)); }, { passive: false });
  img.addEventListener("pointerdown", (e) => { drag = { x: e.clientX, y: e.clientY, moved: false }; img.setPointerCapture(e.pointerId); });
  img.addEventListener("pointermove", (e) => {
    if (!drag) return;
    if (Math.hypot(e.clientX - drag.x, e.clientY - drag.y) > 4) drag.moved = true;
  });
  img.addEventListener("pointerup", (e) => {
    const d = drag; drag = null;
    if (!d) return;
    if (!d.moved) { pick(e); return; }
    const view = state.view, r = img.getBoundingClientRect(), w = view.window;
    pan(-Math.round(((e.clientY - d.y) / r.height) * (w.rows[1] - w.rows[0])), -Math.round(((e.clientX - d.x) / r.width) * (w.cols[1] - w.cols[0])));
  });
}
async function drawSpectrum() {
  const view = state.view, lay = view.layout, sel = { ...view.point, format: "json" };
  for (const d of view.desc.dims) if (!(d.name in sel) && d !== lay.spectrum) sel[d.name] = view.index[d.name];
  const answer = await api(`datasets/${view.id}/data?${query(sel)}`);
  const flat = [answer.data].flat(Infinity); // one value (an image's pixel) or a spectrum
  const complex = answer.dtype.includes("c"); // complex values come as [re, im] pairs: their magnitude is drawn
  const y = complex ? flat.filter((_, i) => i % 2 === 0).map((re, i) => Math.hypot(re, flat[2 * i + 1])) : flat;
  const axis = lay.spectrum;
  const x = axis && axis.values ? axis.values : y.map((_, i) => i);
  view.spectrum = { selection: sel, values: y, x, dims: answer.dims };
  const where = Object.entries(view.point).map(([k, v]) => `${k} = ${valueText(view.desc.dims.find((d) => d.name === k), v)}`).join(", ");
  const quantity = label(complex ? `|${view.desc.quantity}|` : view.desc.quantity, view.desc.units);
  if (axis) {
    $("#point").textContent = where;
    $("#spectrum").removeAttribute("hidden");
    plotLine($("#spectrum"), x, y, label(axis.name, axis.units), quantity);
  } else { // an image: the value at the pixel
    $("#point").textContent = `${where}: ${fmt(y[0])}${view.desc.units ? " " + view.desc.units : ""}`;
    $("#spectrum").replaceChildren();
    $("#spectrum").setAttribute("hidden", "");
  }
  downloads();
}
function plotLine(svg, x, y, xlabel, ylabel, options = {}) { plotLines(svg, x, [y], [null], xlabel, ylabel, options); }
// line plot(s) with labelled axes; options: logY (a logarithmic y axis: non-positive values are
// left out), markX (a dashed vertical line there, with its label markText)
function plotLines(svg, x, rows, colours, xlabel, ylabel, options = {}) {
  const W = 600, H = 260, L = 60, R = 10, T = 10, B = 40;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const ty = options.logY ? (v) => (v > 0 ? Math.log10(v) : NaN) : (v) => v;
  const finite = rows.flat().map(ty).filter(Number.isFinite);
  const [x0, x1] = [Math.min(...x), Math.max(...x)], [y0, y1] = [Math.min(...finite), Math.max(...finite)];
  const sx = (v) => L + ((v - x0) / (x1 - x0 || 1)) * (W - L - R), sy = (v) => H - B - ((ty(v) - y0) / (y1 - y0 || 1)) * (H - T - B);
  const yText = (v) => (options.logY ? fmt(10 ** v) : fmt(v));
  const ns = "http://www.w3.org/2000/svg", mk = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  };
  const lines = rows.map((y, i) => {
    const points = x.map((v, j) => (Number.isFinite(sy(y[j])) ? `${sx(v).toFixed(1)},${sy(y[j]).toFixed(1)}` : "")).filter(Boolean).join(" ");
    const line = mk("polyline", { class: "line", points, "data-cluster": i });
    if (colours[i % colours.length]) line.style.stroke = colours[i % colours.length]; // CSSOM: the policy forbids style attributes
    return line;
  });
  const marks = options.markX === undefined ? [] : [
    mk("line", { x1: sx(options.markX), y1: T, x2: sx(options.markX), y2: H - B, stroke: "#b3261e", "stroke-dasharray": "4 3", class: "mark" }),
    mk("text", { x: sx(options.markX) + 4, y: T + 12 }, options.markText || "")];
  svg.replaceChildren(
    mk("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999" }), mk("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#999" }),
    ...lines, ...marks,
    mk("text", { x: L, y: H - B + 14 }, fmt(x0)), mk("text", { x: W - R, y: H - B + 14, "text-anchor": "end" }, fmt(x1)),
    mk("text", { x: L - 4, y: H - B, "text-anchor": "end" }, yText(y0)), mk("text", { x: L - 4, y: T + 10, "text-anchor": "end" }, yText(y1)),
    mk("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle", id: "xlabel" }, xlabel),
    mk("text", { x: 12, y: (T + H - B) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(T + H - B) / 2})`, id: "ylabel" }, ylabel));
}

// ---------------------------------------------------------------------------------------- analyses
function analysisPanel(desc) {
  const form = el("form", { id: "run", onsubmit: (e) => { e.preventDefault(); submit(desc, form).catch(() => { /* shown by api() */ }); } });
  const choose = el("select", { name: "analysis", "aria-label": "analysis", onchange: () => fields() });
  const box = el("div", { class: "controls" });
  function fields() {
    const options = (state.analyses || {})[choose.value] || [];
    box.replaceChildren(...options.map((o) => el("label", {}, o.name,
      o.choices ? el("select", { name: o.name, "aria-label": o.name }, o.choices.map((c) => el("option", { value: c, selected: c === o.default }, c)))
        : o.kind === "bool" ? el("input", { type: "checkbox", name: o.name, "aria-label": o.name, checked: !!o.default })
          : el("input", { name: o.name, "aria-label": o.name, value: o.default ?? "", placeholder: o.required ? "required" : "default", title: o.help }),
      el("span", { class: "meta" }, o.help.slice(0, 60)))));
  }
  api("analyses").then((a) => { state.analyses = a; choose.replaceChildren(...Object.keys(a).map((n) => el("option", { value: n }, n))); fields(); }).catch(() => {});
  form.append(el("h2", {}, "Run an analysis"), el("div", { class: "toolbar" }, choose, el("button", { class: "primary", type: "submit" }, "Run")), box);
  return el("section", {}, form, el("h2", {}, "Jobs"), el("table", { id: "jobs" }));
}
async function submit(desc, form) {
  const analysis = form.elements.analysis.value, parameters = {};
  for (const o of state.analyses[analysis]) {
    const input = form.elements[o.name];
    if (!input) continue;
    if (o.kind === "bool") { if (input.checked !== !!o.default) parameters[o.name] = input.checked; continue; }
    const text = input.value.trim();
    if (text === "" || text === String(o.default ?? "")) continue;
    // numbers as numbers; anything else as typed, so the server answers with the command's own words
    const number = Number(text);
    parameters[o.name] = o.kind === "list" ? text.split(/[\s,]+/) : (o.kind === "int" || o.kind === "float") && Number.isFinite(number) ? number : text;
  }
  const job = await api("jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ dataset: desc.id, analysis, parameters }) });
  if (!state.jobs.some((j) => j.id === job.id)) state.jobs.unshift(job);
  rerenderJobs();
}
function rerenderJobs() {
  const table = $("#jobs"), view = state.view;
  if (!table || !view) { if (location.hash === "" || location.hash === "#/") renderDatasetsBadges(); return; }
  const rows = jobsOf(view.id).map((j) => el("tr", { "data-job": j.id, "data-status": j.status },
    el("td", {}, `#${j.id}`), el("td", {}, j.analysis), el("td", {}, JSON.stringify(j.parameters)),
    el("td", {}, j.status === "running" ? el("progress", { max: 1, value: j.progress }) : j.status),
    el("td", { class: j.status === "failed" ? "failed-list" : "meta" }, j.status === "failed" ? j.message : (j.result || "")),
    el("td", {}, ["queued", "running"].includes(j.status) ? el("button", { type: "button", onclick: () => api(`jobs/${j.id}/cancel`, { method: "POST" }) }, "Cancel") : "")));
  table.replaceChildren(el("tr", {}, ["job", "analysis", "parameters", "status", "result", ""].map((h) => el("th", {}, h))), ...rows);
}
function renderDatasetsBadges() {
  for (const node of document.querySelectorAll(".card")) {
    const holder = node.querySelector("div > div:last-child");
    if (holder) holder.replaceChildren(...statusBadges(node.dataset.id));
  }
}
function downloads() { // links to the numbers and pictures of the current view
  const view = state.view, box = $("#downloads");
  if (!box || !view || !view.image) return;
  const base = `/api/v1/datasets/${view.id}/data?`, sel = view.image.selection, name = view.desc.name;
  const links = [el("a", { href: view.image.url, download: `${name}.png` }, "image (PNG)"), " · ",
    el("a", { href: base + query({ ...sel, format: "npy" }), download: `${name}.npy`, id: "download-npy" }, "image (NPY)"), " · ",
    el("a", { href: base + query({ ...sel, format: "csv" }), download: `${name}.csv`, id: "download-csv" }, "image (CSV)")];
  if (view.spectrum && view.layout.spectrum) {
    links.push(" · ", el("a", { href: base + query({ ...view.spectrum.selection, format: "csv" }), download: `${name}-spectrum.csv`, id: "download-spectrum" }, "spectrum (CSV)"));
  }
  box.replaceChildren("download: ", ...links);
}

// ---------------------------------------------------------------------------------------- routing
async function route(fresh = true) {
  if (state.needKey) return; // the sign-in form stays until a key is accepted
  const m = location.hash.match(/^#\/dataset\/([0-9a-f]+)/);
  try {
    if (m) {
      if (fresh || !state.view || state.view.id !== m[1]) await renderDataset(m[1]);
      else { const desc = await api(`datasets/${m[1]}`); state.view.desc.results = desc.results; $("#results").replaceWith(resultsPanel(desc)); rerenderJobs(); }
    } else {
      state.view = null;
      renderDatasets();
    }
  } catch (err) { /* shown by api() */ }
}
window.addEventListener("hashchange", () => route(true));
window.addEventListener("DOMContentLoaded", async () => {
  try { await refresh(); } catch (_) { /* shown by api(), or the sign-in form */ }
  if (state.needKey) return;
  listen();
  route(true);
});
