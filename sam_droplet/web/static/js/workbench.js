// The workbench: a segmentation turned into records the page works on, shown, re-filtered live,
// and corrected by hand (remove, restore, undo, add a missed droplet at a click).

import { applyFilters, describe } from "./analysis.js";
import { api, authHeaders } from "./api.js";
import { $, fmt, say } from "./dom.js";
import { cropMask, outlinePath, paintIndex } from "./masks.js";
import { renderContents, renderFluorescence, renderHistogram, renderLayers, renderSize, renderStats, renderTable, setupThreshold } from "./panels.js";
import { renderJobs, statusText } from "./queue.js";
import { autoFilters, filtersFor, isKept, lengthUnit, readFilters, state, umPerPx } from "./state.js";

// Set by the page: show the filters the auto preset chose for an image in the filter fields.
export const hooks = { showChoice: (_job) => {} };

async function loadBitmap(job, data) {
  const native = ["PNG", "JPEG", "BMP", "WEBP"].includes(data.image.format) && data.image.bit_depth === 8;
  if (native) {
    try { return await createImageBitmap(job.file); } catch { /* fall back to the server's copy */ }
  }
  // TIFF and 16-bit images: the server's 8-bit rendering of the cached upload.
  const response = await fetch(`/image/${data.image.sha256}.png`, { headers: authHeaders() });
  if (!response.ok) throw new Error("the server no longer holds the image to display");
  return createImageBitmap(await response.blob());
}

function addRecord(job, record, added) {
  record.added = added;
  record.crop = cropMask(record);
  record.path = outlinePath(record.crop);
  job.records.push(record);
  job.byId.set(record.id, record);
}

export async function prepare(job, data) {
  job.result = data;
  job.records = [];
  job.byId = new Map();
  for (const r of [...data.droplets, ...data.removed]) addRecord(job, r, false);
  job.records.sort((a, b) => a.id - b.id);
  job.excluded = new Set();
  job.restored = new Set();
  job.undo = [];
  const fl = data.summary.fluorescence;
  job.threshold = fl ? fl.call.threshold : null;
  job.autoThreshold = job.threshold;
  job.bitmap = await loadBitmap(job, data);
  job.index = null;
  const cal = data.calibration;
  if (cal && cal.source === "file" && !umPerPx()) {
    // The file says its pixel size (TIFF metadata): calibrate with it, and say so.
    const before = { ...state.filters };
    $("um-per-px").value = String(+cal.um_per_px.toPrecision(6));
    state.calibration = { source: "file", file: job.name };
    calibrationChanged(before);
  }
  recompute(job);
}

// A new calibration keeps the filters' meaning: lengths are shown in the new unit.
export function calibrationChanged(filtersPx) {
  const s = umPerPx() || 1;
  const show = (id, v) => { $(id).value = v == null ? "" : String(+(v * s).toPrecision(6)); };
  show("f-diameter-min", filtersPx.diameter_min);
  show("f-diameter-max", filtersPx.diameter_max);
  show("f-edge-distance", filtersPx.min_edge_distance);
  for (const node of document.querySelectorAll(".len-unit")) node.textContent = lengthUnit();
  const c = state.calibration;
  $("calibration-source").textContent = !umPerPx() ? "" : c && c.source === "file" ? `From the metadata of ${c.file}.` : "Typed or drawn here.";
  readFilters();
  for (const job of state.jobs) if (job.result) recompute(job);
}

function indexMap(job) {
  if (!job.index) {
    const { width, height } = job.result.image;
    job.index = paintIndex(width, height, job.records.map((r) => r.crop));
  }
  return job.index;
}

// Filters, statistics, table and outlines from the current state; no request.
export function recompute(job) {
  job.reasons = applyFilters(job.records.filter((r) => !r.added), filtersFor(job), umPerPx());
  job.kept = job.records.filter((r) => isKept(job, r));
  job.keptCount = job.kept.length;
  if (job === state.current) render();
  const li = document.querySelector(`li.job[data-job="${job.id}"] .job-status`);
  if (li && job.status === "done") li.textContent = statusText(job);
}

export function show(job) {
  state.current = job;
  if (autoFilters()) hooks.showChoice(job);
  state.selected = null;
  state.viewer.setImage(job.bitmap);
  $("empty-hint").hidden = true;
  $("rerun").disabled = false;
  for (const b of document.querySelectorAll("[data-export]")) b.disabled = false;
  const hasFl = Boolean(job.result.summary.fluorescence);
  for (const v of ["fl_corrected_mean", "positive"]) $("colour-by").querySelector(`[value="${v}"]`).disabled = !hasFl;
  if (!hasFl && ["fl_corrected_mean", "positive"].includes($("colour-by").value)) $("colour-by").value = "status";
  if (hasFl) $("colour-by").value = "positive";
  setupThreshold(job);
  recompute(job);
  renderJobs();
}

export function render() {
  const job = state.current;
  if (!job) return;
  $("count").textContent = String(job.kept.length);
  $("result-title").textContent = job.name;
  renderStats(job);
  renderHistogram(job);
  renderSize(job);
  renderContents(job);
  renderFluorescence(job);
  renderTable(job);
  renderLayers(job);
  $("undo").disabled = !job.undo.length;
}

export function select(id, centre) {
  const job = state.current;
  state.selected = id;
  const r = job.byId.get(id);
  state.viewer.setHighlight(r ? r.path : null);
  for (const tr of document.querySelectorAll("#droplet-table tr.selected")) tr.classList.remove("selected");
  const row = document.querySelector(`#droplet-table tr[data-id="${id}"]`);
  if (row) { row.classList.add("selected"); row.scrollIntoView({ block: "nearest" }); }
  const { viewer } = state;
  if (r && centre) viewer.centerOn(r.centroid[0], r.centroid[1], Math.max(viewer.zoom, 200 / Math.max(r.bbox[2], r.bbox[3], 1) / 2));
}

// -- corrections -------------------------------------------------------------------------------------

export function toggle(job, r) {
  job.undo.push({ type: "toggle", id: r.id, excluded: job.excluded.has(r.id), restored: job.restored.has(r.id) });
  if (isKept(job, r)) {
    job.restored.delete(r.id);
    if (isKept(job, r)) job.excluded.add(r.id);
    say(`Droplet #${r.id} removed. Undo with Ctrl+Z.`);
  } else {
    job.excluded.delete(r.id);
    if (!isKept(job, r)) job.restored.add(r.id);
    say(`Droplet #${r.id} restored.`);
  }
  state.selected = r.id;
  $("tooltip").hidden = true; // it described the droplet before the click
  recompute(job);
}

export function undo() {
  const job = state.current;
  const step = job && job.undo.pop();
  if (!step) return;
  if (step.type === "toggle") {
    job.excluded[step.excluded ? "add" : "delete"](step.id);
    job.restored[step.restored ? "add" : "delete"](step.id);
    say(`Undone: droplet #${step.id} is ${isKept(job, job.byId.get(step.id)) ? "kept" : "removed"} again.`);
  } else {
    job.records = job.records.filter((r) => r.id !== step.id);
    job.byId.delete(step.id);
    job.index = null;
    say(`Undone: added droplet #${step.id} removed.`);
  }
  recompute(job);
}

export function dropletAt(job, x, y) {
  const { width, height } = job.result.image;
  if (x < 0 || y < 0 || x >= width || y >= height) return null;
  const i = indexMap(job)[Math.floor(y) * width + Math.floor(x)];
  const r = i ? job.records[i - 1] : null;
  return r && (isKept(job, r) || $("show-removed").checked) ? r : null;
}

export async function addAt(job, x, y) {
  const kept = describe(job.kept.map((r) => r.equivalent_diameter_px));
  const query = {
    x: Math.round(x * 10) / 10,
    y: Math.round(y * 10) / 10,
    segmenter: job.result.segmenter,
    diameter_px: kept.median || undefined,
    appearance: job.result.summary.detector ? job.result.summary.detector.appearance : undefined,
  };
  say(`Looking for a droplet at (${query.x.toFixed(0)}, ${query.y.toFixed(0)})…`);
  let reply = await api("/segment_point", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ sha256: job.result.image.sha256, ...query }) });
  if (reply.status === 404 && reply.body && reply.body.error && reply.body.error.code === "image_not_cached") {
    // This server process no longer holds the image: send it with the point.
    const form = new FormData();
    form.append("file", job.file, job.name);
    for (const [k, v] of Object.entries(query)) if (v !== undefined) form.append(k, String(v));
    reply = await api("/segment_point", { method: "POST", body: form });
  }
  if (!reply.ok) { say(reply.message, true); return; }
  const d = reply.body.droplet;
  if (!d) { say(`No droplet found there (${reply.body.message}).`, true); return; }
  d.id = Math.max(0, ...job.records.map((r) => r.id)) + 1;
  addRecord(job, d, true);
  job.index = null;
  job.undo.push({ type: "add", id: d.id });
  state.selected = d.id;
  say(`Added droplet #${d.id}: ${fmt(d.equivalent_diameter_px * (umPerPx() || 1))} ${lengthUnit()} across (${reply.body.verdict}).`);
  recompute(job);
}

// -- exports -----------------------------------------------------------------------------------------
