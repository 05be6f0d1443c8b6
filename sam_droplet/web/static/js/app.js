// The upload page: a queue of images sent one after another to /segment_file, and a workbench for
// the result. Everything after the segmentation (filters, corrections, statistics, fluorescence
// threshold, exports) runs here from the records the API returned, without a new request; only
// adding a missed droplet asks the server again (/segment_point).

// The modules: api.js (requests), queue.js (uploads), workbench.js (a result and its
// corrections), panels.js (statistics, histograms, table, outlines), exports.js (files),
// motion.js (videos, stacks and batches as server jobs, and their result view), on
// state.js (shared state and rules), analysis.js, masks.js and viewer.js. This one starts the page
// and wires the controls.

import { KEY_STORAGE, api, askForKey } from "./api.js";
import { $, el, fmt, say } from "./dom.js";
import { exportAs } from "./exports.js";
import { close as closeMotion, isLongWork, setupMotion, submitJobs } from "./motion.js";
import { renderLayers } from "./panels.js";
import { addFiles, hooks, requeue } from "./queue.js";
import { detectionHints, isPositive, readFilters, reasonOf, state, umPerPx } from "./state.js";
import { Viewer } from "./viewer.js";
import { addAt, calibrationChanged, dropletAt, hooks as workbenchHooks, prepare, recompute, render, select, show, toggle, undo } from "./workbench.js";

hooks.segmented = prepare;
hooks.show = (job) => { closeMotion(); show(job); };

// Videos and ZIPs dropped with the images go to the server as jobs; the rest is segmented here.
function addAny(files) {
  const all = [...files];
  const long = all.filter(isLongWork);
  if (long.length) submitJobs(long);
  if (long.length < all.length) addFiles(all.filter((f) => !isLongWork(f)));
}

async function connect() {
  const health = await api("/health");
  state.health = health.body;
  if (!health.body) {
    $("server-state").textContent = "server unreachable";
    return;
  }
  const h = health.body;
  const detector = h.droplet_model ? `${h.detector} detector, droplet model ${h.droplet_model.version}` : `${h.detector} detector`;
  $("server-state").textContent = `${h.model_loaded ? `SAM ${h.model_type} on ${h.device}` : "no SAM model"} · ${detector} · v${h.version}`;
  $("server-state").classList.toggle("warn", h.status !== "ok");
  if (h.auth_required) {
    $("key-button").hidden = false;
    if (!sessionStorage.getItem(KEY_STORAGE)) { askForKey(); return; }
  }
  const defaults = await api("/defaults");
  if (defaults.ok) {
    state.defaults = defaults.body;
    setPreset($("preset").value);
  }
}

function setPreset(name, filters = null) {
  const preset = state.defaults && state.defaults.presets[name];
  if (!preset) return;
  $("preset-help").textContent = preset.description;
  const f = filters || preset.filters;
  // Preset lengths are in px unless the preset says um.
  const toShown = (v) => (v == null ? "" : f.units === "um" || !umPerPx() ? v : +(v * umPerPx()).toPrecision(6));
  $("f-diameter-min").value = toShown(f.diameter_min);
  $("f-diameter-max").value = toShown(f.diameter_max);
  $("f-edge-distance").value = toShown(f.min_edge_distance);
  $("f-circularity-min").value = f.circularity_min ?? "";
  $("f-outliers").value = f.outliers || "none";
  $("f-outlier-factor").value = f.outlier_factor ?? "";
  $("f-exclude-edge").checked = Boolean(f.exclude_edge_touching);
  readFilters();
}

// Under the auto preset the fields show what the server chose for the image on screen.
workbenchHooks.showChoice = (job) => {
  const chosen = job.result.summary && job.result.summary.preset;
  if (!chosen) return;
  setPreset(chosen.chosen, job.result.filters_applied);
  const cover = `${(100 * chosen.area_fraction).toFixed(0)} % of the field`;
  const cv = chosen.diameter_robust_cv == null ? "" : `, robust CV ${(100 * chosen.diameter_robust_cv).toFixed(1)} %`;
  const inside = chosen.contents_in_droplets ? `; ${chosen.contents_in_droplets} objects inside droplets are their contents, not droplets` : "";
  const loose = chosen.contents_outside_droplets ? `, and ${chosen.contents_outside_droplets} of their size outside droplets too` : "";
  $("preset-help").textContent = `Auto: ${chosen.chosen.replace(/_/g, " ")} for this image (${chosen.whole_droplets} whole droplets over ${cover}${cv}${inside}${loose}). Edit a filter to apply your own to every image.`;
};

function presetChanged() {
  const name = $("preset").value;
  state.filtersTouched = false;
  setPreset(name);
  if (name === "auto" && state.current && state.current.result) workbenchHooks.showChoice(state.current);
  for (const job of state.jobs) {
    if (!job.result) continue;
    if (job.hints !== undefined && job.hints !== detectionHints(name)) requeue(job);
    else recompute(job);
  }
}

// -- events ------------------------------------------------------------------------------------------

const viewer = new Viewer($("viewer"), {
  onHover(point) {
    const tip = $("tooltip");
    const job = state.current;
    const r = point && job ? dropletAt(job, point.x, point.y) : null;
    if (!r) { tip.hidden = true; return; }
    const s = umPerPx();
    const lines = [
      `#${r.id} · ${reasonOf(job, r)}`,
      `diameter ${fmt(r.equivalent_diameter_px)} px${s ? ` (${fmt(r.equivalent_diameter_px * s)} µm)` : ""}`,
      `circularity ${fmt(r.circularity, 3)} · intensity ${fmt(r.intensity_mean, 1)}`,
    ];
    if (r.fl_corrected_mean != null) lines.push(`fluorescence ${fmt(r.fl_corrected_mean, 1)} · ${isPositive(job, r) ? "positive" : "negative"} · ${r.objects} object(s)`);
    tip.replaceChildren(...lines.map((t) => el("div", { text: t })));
    const box = $("viewer-box").getBoundingClientRect();
    tip.style.left = `${Math.min(point.clientX - box.left + 14, box.width - 240)}px`;
    tip.style.top = `${Math.min(point.clientY - box.top + 14, box.height - 90)}px`;
    tip.hidden = false;
  },
  onClick({ x, y }) {
    const job = state.current;
    if (!job) return;
    const r = dropletAt(job, x, y);
    if (viewer.tool === "add") {
      if (r) { say(`Droplet #${r.id} is already here.`, true); select(r.id); return; }
      addAt(job, x, y);
    } else if (viewer.tool === "exclude") {
      if (!r) { say("No droplet here. To add a missed one, choose Add droplet (A) and click it."); return; }
      toggle(job, r);
    }
  },
  onLine(line) {
    const px = Math.hypot(line[2] - line[0], line[3] - line[1]);
    $("scale-form").hidden = false;
    $("scale-form").dataset.pixels = String(px);
    $("scale-pixels").textContent = `${px.toFixed(1)} px`;
    $("scale-length").focus();
  },
});
state.viewer = viewer;

function setTool(name) {
  viewer.tool = name;
  $(`tool-${name}`).checked = true;
  $("viewer").dataset.tool = name;
  if (name === "scale") say("Drag along the scale bar, then type its length.");
}

for (const radio of document.querySelectorAll('input[name="tool"]')) radio.addEventListener("change", () => setTool(radio.value));
$("tool-scale-side").addEventListener("click", () => { setTool("scale"); $("viewer").focus(); });

$("scale-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const um = Number($("scale-length").value);
  const px = Number($("scale-form").dataset.pixels);
  if (!(um > 0) || !(px > 0)) return;
  const before = readFilters();
  $("um-per-px").value = String(+(um / px).toPrecision(6));
  state.calibration = { source: "typed" };
  calibrationChanged(before);
  $("scale-form").hidden = true;
  viewer.line = null;
  setTool("exclude");
  say(`Calibrated: ${$("um-per-px").value} µm per pixel.`);
});
$("scale-cancel").addEventListener("click", () => { $("scale-form").hidden = true; viewer.line = null; viewer.draw(); setTool("exclude"); });

let lastFilters = null;
$("um-per-px").addEventListener("focus", () => { lastFilters = { ...state.filters }; });
$("um-per-px").addEventListener("change", () => {
  state.calibration = umPerPx() ? { source: "typed" } : null;
  calibrationChanged(lastFilters || state.filters);
});
$("cumulative-weight").addEventListener("change", () => state.current && render());

for (const id of ["f-diameter-min", "f-diameter-max", "f-circularity-min", "f-edge-distance", "f-outliers", "f-outlier-factor", "f-exclude-edge"]) {
  $(id).addEventListener("input", () => { state.filtersTouched = true; readFilters(); for (const job of state.jobs) if (job.result) recompute(job); });
}
$("preset").addEventListener("change", presetChanged);
$("show-removed").addEventListener("change", () => state.current && render());
$("colour-by").addEventListener("change", () => state.current && renderLayers(state.current));
$("fit").addEventListener("click", () => viewer.fit());
$("undo").addEventListener("click", undo);
$("rerun").addEventListener("click", () => { if (state.current) requeue(state.current); });
$("threshold").addEventListener("input", () => {
  const job = state.current;
  if (!job) return;
  job.threshold = Number($("threshold").value);
  render();
});
$("threshold-auto").addEventListener("click", () => {
  const job = state.current;
  if (!job) return;
  job.threshold = job.autoThreshold;
  $("threshold").value = String(job.threshold);
  render();
});
for (const b of document.querySelectorAll("[data-export]")) b.addEventListener("click", () => exportAs(b.dataset.export));

$("droplet-table").addEventListener("click", (e) => {
  const tr = e.target.closest("tbody tr");
  if (tr) select(Number(tr.dataset.id), true);
});
$("droplet-table").addEventListener("keydown", (e) => {
  const tr = e.target.closest("tbody tr");
  if (!tr || !state.current) return;
  const r = state.current.byId.get(Number(tr.dataset.id));
  if (e.key === "Enter" || e.key === " ") { e.preventDefault(); select(r.id, true); }
  if (e.key === "Delete" || e.key === "x") { e.preventDefault(); toggle(state.current, r); }
  if (e.key === "ArrowDown" || e.key === "ArrowUp") {
    e.preventDefault();
    const next = e.key === "ArrowDown" ? tr.nextElementSibling : tr.previousElementSibling;
    if (next) { next.focus(); select(Number(next.dataset.id), true); }
  }
});

const drop = $("drop");
for (const ev of ["dragover", "dragenter"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); addAny(e.dataTransfer.files); });
$("file-input").addEventListener("change", (e) => { addAny(e.target.files); e.target.value = ""; });
setupMotion();

$("key-form").addEventListener("submit", () => {
  const key = $("key-input").value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  $("key-input").value = "";
  connect();
});
$("key-button").addEventListener("click", () => askForKey());

document.addEventListener("keydown", (e) => {
  if (e.target.closest("input, select, textarea, dialog")) return;
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") { e.preventDefault(); undo(); return; }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const tools = { e: "exclude", a: "add", s: "scale" };
  if (tools[e.key.toLowerCase()]) setTool(tools[e.key.toLowerCase()]);
  if (e.key === "Escape") { $("scale-form").hidden = true; viewer.line = null; setTool("exclude"); viewer.draw(); }
});

// Tests and scripts read the page's state through this (counts, the current result's droplets).
window.samDroplet = { state, viewer };
connect();
