// The panels of the current result: statistics, histograms, fluorescence and ddPCR, outlines and
// their legend, the droplet table. They draw from the page's state; none sends a request.

import { cumulative, ddpcr, describe, histogram, occupancy, sizeDistribution, sizePopulations, volumePl } from "./analysis.js";
import { $, el, fmt } from "./dom.js";
import { COLOURS, RAMP, isKept, isPositive, lengthUnit, reasonOf, state, umPerPx } from "./state.js";

export function renderStats(job) {
  const s = umPerPx();
  const d = describe(job.kept.map((r) => r.equivalent_diameter_px * (s || 1)));
  const unit = lengthUnit();
  const rows = [
    ["Segmenter", job.result.segmenter],
    ["Detector", detectorName(job.result.summary && job.result.summary.detector)],
    [`Mean diameter (${unit})`, fmt(d.mean)],
    [`Median diameter (${unit})`, fmt(d.median)],
    [`SD (${unit})`, fmt(d.std)],
    ["CV (polydispersity)", d.cv == null ? "–" : `${(100 * d.cv).toFixed(1)} %`],
    [`Range (${unit})`, d.n ? `${fmt(d.min)} – ${fmt(d.max)}` : "–"],
    ["Mean circularity", fmt(describe(job.kept.map((r) => r.circularity)).mean, 3)],
  ];
  if (s) {
    const v = describe(job.kept.map((r) => volumePl(r.equivalent_diameter_px * s)));
    rows.push(["Mean volume (pL)", fmt(v.mean, 3)], ["Total volume (nL)", fmt(v.n ? (v.mean * v.n) / 1000 : null, 4)]);
  }
  const removed = {};
  for (const r of job.records) if (!isKept(job, r)) { const why = reasonOf(job, r).replace("removed: ", ""); removed[why] = (removed[why] || 0) + 1; }
  rows.push(["Removed", Object.entries(removed).map(([k, v]) => `${v} ${k}`).join(", ") || "none"]);
  const added = job.records.filter((r) => r.added && isKept(job, r)).length;
  if (added) rows.push(["Added by you", String(added)]);
  const ms = Object.values(job.result.timing_ms).reduce((a, b) => a + b, 0);
  rows.push(["Server time", `${(ms / 1000).toFixed(2)} s`]);
  $("stats").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
}

// The detector that found the droplets, and the droplet model's version when it ran.
export function detectorName(detector) {
  if (!detector || !detector.name) return "–";
  return detector.model ? `${detector.name} (droplet model ${detector.model.version})` : detector.name;
}

// A cleared canvas sized for the screen's pixel ratio, with the page's colours and plot font set.
export function plotCanvas(canvas) {
  const ctx = canvas.getContext("2d");
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 320;
  const h = canvas.clientHeight || 150;
  canvas.width = w * dpr;
  canvas.height = h * dpr;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const style = getComputedStyle(document.body);
  const fg = style.getPropertyValue("--fg").trim() || "#222";
  const accent = style.getPropertyValue("--accent").trim() || "#2f6fdf";
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = fg;
  return { ctx, w, h, fg, accent };
}

export function drawBars(canvas, hist, { marker, colourAbove, label }) {
  const { ctx, w, h, fg, accent: bar } = plotCanvas(canvas);
  if (!hist.counts.length) { ctx.fillText("no droplets", 8, h / 2); return; }
  const top = Math.max(...hist.counts) || 1;
  const plotH = h - 18;
  const bw = w / hist.counts.length;
  hist.counts.forEach((c, i) => {
    const lo = hist.edges[i];
    ctx.fillStyle = colourAbove != null && lo >= colourAbove ? COLOURS.positive : bar;
    const bh = (c / top) * (plotH - 12);
    ctx.fillRect(i * bw + 0.5, plotH - bh, Math.max(bw - 1, 1), bh);
  });
  ctx.fillStyle = fg;
  const first = hist.edges[0];
  const last = hist.edges[hist.edges.length - 1];
  ctx.fillText(fmt(first, 1), 2, h - 4);
  const lastText = `${fmt(last, 1)} ${label}`;
  ctx.fillText(lastText, w - ctx.measureText(lastText).width - 2, h - 4);
  ctx.fillText(`max ${top}`, 2, 10);
  if (marker != null && last > first) {
    const x = ((marker - first) / (last - first)) * w;
    ctx.strokeStyle = COLOURS.positive;
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(x, 0);
    ctx.lineTo(x, plotH);
    ctx.stroke();
  }
}

export function renderHistogram(job) {
  const s = umPerPx() || 1;
  drawBars($("histogram"), histogram(job.kept.map((r) => r.equivalent_diameter_px * s), 20), { label: lengthUnit() });
}

// -- size distribution and populations -----------------------------------------------------------------

const SIZE_ROWS = [
  ["n", "droplets", 0], ["mean", "mean", 2], ["sd", "SD", 2], ["cv", "CV", 3], ["dn10", "Dn10", 2], ["dn50", "Dn50", 2],
  ["dn90", "Dn90", 2], ["dv10", "Dv10", 2], ["dv50", "Dv50", 2], ["dv90", "Dv90", 2], ["span", "span", 3],
  ["d32", "D[3,2] Sauter", 2], ["d43", "D[4,3] De Brouckère", 2],
];

// The kept droplets' size distribution (in µm when calibrated), its cumulative curve by number or by
// volume, and the size populations: recomputed from the records on every change.
export function renderSize(job) {
  const s = umPerPx();
  const unit = s ? "um" : "px";
  const d = job.kept.map((r) => r.equivalent_diameter_px * (s || 1));
  const size = sizeDistribution(d, unit);
  const shown = lengthUnit();
  $("size-table").replaceChildren(...SIZE_ROWS.flatMap(([key, label, digits]) => {
    const withUnit = ["n", "cv", "span"].includes(key) ? label : `${label} (${shown})`;
    return [el("dt", { text: withUnit }), el("dd", { text: key === "n" ? String(size.n) : fmt(size[key], digits) })];
  }));
  const byVolume = $("cumulative-weight").value === "volume";
  drawCumulative($("cumulative"), cumulative(d, byVolume), { label: shown, byVolume });
  const populations = sizePopulations(d, unit);
  const head = el("tr", {}, ...["", "n", `d (${shown})`, "CV", "n %", "vol %", "V/main"].map((t) => el("th", { text: t })));
  const rows = populations.map((p, i) => el("tr", {},
    el("th", { text: String(i + 1) }), el("td", { text: String(p.n) }), el("td", { text: fmt(p.mean_diameter, 2) }),
    el("td", { text: fmt(p.cv, 3) }), el("td", { text: fmt(100 * p.number_fraction, 1) }),
    el("td", { text: fmt(100 * p.volume_fraction, 1) }), el("td", { text: fmt(p.volume_ratio, 2) })));
  $("populations").replaceChildren(el("tbody", {}, head, ...rows));
}

function drawCumulative(canvas, points, { label, byVolume }) {
  const { ctx, w, h, fg, accent } = plotCanvas(canvas);
  if (!points.length) { ctx.fillText("no droplets", 8, h / 2); return; }
  const lo = points[0][0];
  const hi = points[points.length - 1][0];
  const span = hi > lo ? hi - lo : 1;
  const plotH = h - 18;
  const x = (v) => 4 + ((v - lo) / span) * (w - 8);
  const y = (f) => plotH - f * (plotH - 12);
  ctx.strokeStyle = accent;
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  ctx.moveTo(x(lo), y(0));
  for (const [v, f] of points) ctx.lineTo(x(v), y(f));
  ctx.stroke();
  ctx.fillText(fmt(lo, 1), 2, h - 4);
  const last = `${fmt(hi, 1)} ${label}`;
  ctx.fillText(last, w - ctx.measureText(last).width - 2, h - 4);
  ctx.fillText(`cumulative % by ${byVolume ? "volume" : "number"}`, 2, 10);
}

// Objects inside the droplets, counted in bright field (when the segmentation counted them).
export function renderContents(job) {
  const counted = job.records.some((r) => r.contents);
  $("contents-panel").hidden = !counted;
  if (!counted) return;
  const occ = occupancy(job.kept.map((r) => (r.contents ? r.contents.count : 0)));
  const head = el("tr", {}, el("th", { text: "objects" }), ...["0", "1", "2", "3+"].map((t) => el("th", { text: t })));
  const obs = el("tr", {}, el("th", { text: "observed" }), ...occ.observed.map((v) => el("td", { text: String(v) })));
  const exp = el("tr", {}, el("th", { text: `Poisson (mean ${fmt(occ.mean, 2)})` }), ...occ.expected.map((v) => el("td", { text: fmt(v, 1) })));
  $("contents-occupancy").replaceChildren(el("tbody", {}, head, obs, exp));
}

// -- fluorescence ------------------------------------------------------------------------------------

export function setupThreshold(job) {
  const fl = job.result.summary.fluorescence;
  $("fl-panel").hidden = !fl;
  if (!fl) return;
  const values = job.records.map((r) => r.fl_corrected_mean).filter((v) => v != null);
  // A margin below the dimmest droplet lets the slider call every droplet positive.
  const spread = Math.max(...values, job.threshold) - Math.min(...values, job.threshold) || 1;
  const lo = Math.min(...values, job.threshold) - 0.01 * spread;
  const hi = Math.max(...values, job.threshold) + 0.01 * spread;
  const slider = $("threshold");
  slider.min = String(lo);
  slider.max = String(hi);
  slider.step = String((hi - lo) / 1000 || 1);
  slider.value = String(job.threshold);
}

export function renderFluorescence(job) {
  const fl = job.result.summary.fluorescence;
  if (!fl) return;
  const values = job.kept.map((r) => r.fl_corrected_mean);
  const lo = Number($("threshold").min);
  const hi = Number($("threshold").max);
  drawBars($("fl-histogram"), histogram(values, 40, lo, hi), { marker: job.threshold, colourAbove: job.threshold, label: "" });
  $("threshold-value").textContent = fmt(job.threshold, 2);
  const auto = job.threshold === job.autoThreshold;
  const call = fl.call;
  $("fl-call").textContent = auto
    ? `Automatic threshold (${call.method}). ${call.ambiguous ? `Ambiguous: ${call.message}` : `Separation: Ashman's D = ${fmt(call.ashman_d, 2)}, gap ${fmt(call.gap, 1)}.`}`
    : "Your threshold.";
  const positives = job.kept.filter((r) => isPositive(job, r)).length;
  const s = umPerPx();
  const volume = s ? describe(job.kept.map((r) => volumePl(r.equivalent_diameter_px * s))).mean : null;
  const q = ddpcr(job.kept.length, positives, volume);
  const ci = (pair, digits) => (pair ? `[${fmt(pair[0], digits)}, ${fmt(pair[1], digits)}]` : "");
  const rows = [
    ["Droplets n", String(q.n)],
    ["Positive k", String(q.k)],
    ["Fraction p", `${fmt(q.p, 4)} ${ci(q.p_ci, 4)}`],
    ["Copies per droplet λ", `${fmt(q.lambda, 4)} ${ci(q.lambda_ci, 4)}`],
    ["Mean volume (pL)", fmt(volume, 3)],
    ["Copies per µL", q.copies_per_ul == null ? "–" : `${fmt(q.copies_per_ul, 1)} ${ci(q.copies_per_ul_ci, 1)}`],
  ];
  if (q.message) rows.push(["Note", q.message]);
  $("ddpcr").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  const occ = occupancy(job.kept.map((r) => r.objects || 0));
  const head = el("tr", {}, el("th", { text: "objects" }), ...["0", "1", "2", "3+"].map((t) => el("th", { text: t })));
  const obs = el("tr", {}, el("th", { text: "observed" }), ...occ.observed.map((v) => el("td", { text: String(v) })));
  const exp = el("tr", {}, el("th", { text: `Poisson (mean ${fmt(occ.mean, 2)})` }), ...occ.expected.map((v) => el("td", { text: fmt(v, 1) })));
  $("occupancy").replaceChildren(el("tbody", {}, head, obs, exp));
}

// -- outlines ----------------------------------------------------------------------------------------

function metricColour(job, key) {
  const values = job.kept.map((r) => r[key]).filter((v) => v != null);
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  return (r) => {
    if (r[key] == null || !(hi > lo)) return RAMP[2];
    return RAMP[Math.min(RAMP.length - 1, Math.floor(((r[key] - lo) / (hi - lo)) * RAMP.length))];
  };
}

export function renderLayers(job) {
  const groups = new Map();
  const put = (colour, r, opts = {}) => {
    const key = `${colour}|${opts.dash ? 1 : 0}|${opts.width || 1}`;
    if (!groups.has(key)) groups.set(key, { path: new Path2D(), color: colour, dash: opts.dash, width: opts.width });
    groups.get(key).path.addPath(r.path);
  };
  const by = $("colour-by").value;
  const colourOf = by === "status" ? null : by === "positive" ? (r) => (isPositive(job, r) ? COLOURS.positive : COLOURS.kept) : metricColour(job, by);
  const showRemoved = $("show-removed").checked;
  for (const r of job.records) {
    if (isKept(job, r)) {
      const colour = colourOf ? colourOf(r) : r.added ? COLOURS.added : COLOURS.kept;
      // Positives are few and must stand out: a wider stroke (the many hairlines stay fast).
      put(colour, r, { width: colour === COLOURS.positive || r.added ? 2.5 : 1 });
    }
    else if (showRemoved) put(COLOURS.removed, r, { dash: [4, 3] });
  }
  state.viewer.setLayers([...groups.values()]);
  const sel = state.selected != null && job.byId.get(state.selected);
  state.viewer.setHighlight(sel ? sel.path : null);
  $("legend").replaceChildren(...legendItems(by, job));
}

function legendItems(by, job) {
  const swatch = (colour, text) => el("span", {}, el("i", { style: { background: colour } }), text);
  if (by === "status") return [swatch(COLOURS.kept, "kept"), swatch(COLOURS.added, "added"), swatch(COLOURS.removed, "removed")];
  if (by === "positive") return [swatch(COLOURS.positive, "positive"), swatch(COLOURS.kept, "negative")];
  const values = job.kept.map((r) => r[by]).filter((v) => v != null);
  return [el("span", { text: fmt(Math.min(...values)) }), ...RAMP.map((c) => el("i", { style: { background: c } })), el("span", { text: fmt(Math.max(...values)) })];
}

// -- table -------------------------------------------------------------------------------------------

function columns(job) {
  const s = umPerPx() || 1;
  const u = lengthUnit();
  const cols = [
    ["id", "#", (r) => r.id, 0],
    ["equivalent_diameter_px", `d (${u})`, (r) => r.equivalent_diameter_px * s, 2],
    ["area_px", `area (${u}²)`, (r) => r.area_px * s * s, s === 1 ? 0 : 1],
    ["circularity", "circ.", (r) => r.circularity, 3],
    ["intensity_mean", "mean I", (r) => r.intensity_mean, 1],
  ];
  if (job.result.summary.fluorescence) {
    cols.push(["fl_corrected_mean", "F (bg-corr.)", (r) => r.fl_corrected_mean, 1]);
    cols.push(["positive", "+", (r) => (isPositive(job, r) ? 1 : 0), 0]);
    cols.push(["objects", "objects", (r) => r.objects, 0]);
  }
  if (job.records.some((r) => r.contents)) cols.push(["contents", "contents", (r) => (r.contents ? r.contents.count : 0), 0]);
  cols.push(["status", "status", (r) => reasonOf(job, r), null]);
  return cols;
}

export function renderTable(job) {
  const cols = columns(job);
  const { key, dir } = state.sort;
  const col = cols.find((c) => c[0] === key) || cols[0];
  const rows = job.records.filter((r) => isKept(job, r) || $("show-removed").checked);
  rows.sort((a, b) => {
    const va = col[2](a);
    const vb = col[2](b);
    return (typeof va === "string" ? va.localeCompare(vb) : va - vb) * dir || a.id - b.id;
  });
  const head = el("tr", {}, ...cols.map(([k, title]) => el("th", { scope: "col", "aria-sort": k === key ? (dir > 0 ? "ascending" : "descending") : null },
    el("button", { type: "button", class: "sort", onclick: () => { state.sort = { key: k, dir: k === key ? -dir : 1 }; renderTable(job); } }, title + (k === key ? (dir > 0 ? " ▲" : " ▼") : "")))));
  $("droplet-table").tHead.replaceChildren(head);
  const body = $("droplet-table").tBodies[0];
  body.replaceChildren(...rows.map((r) => {
    const tr = el("tr", { tabindex: "0", "data-id": r.id, class: `${isKept(job, r) ? "" : "removed"}${r.id === state.selected ? " selected" : ""}` });
    for (const [, , get, digits] of cols) tr.append(el("td", { text: digits == null ? get(r) : fmt(get(r), digits) }));
    return tr;
  }));
}
