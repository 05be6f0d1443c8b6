// The page's state (the queue of images, the current result, the filters) and the rules every
// view shares: which droplets are kept, why others are not, which are positive.

import { $ } from "./dom.js";

export const MAX_MB = Number(document.body.dataset.maxMb);
export const COLOURS = { kept: "#30d158", removed: "#ff453a", added: "#0a84ff", positive: "#ff2dd4" };
export const RAMP = ["#440154", "#414487", "#2a788e", "#22a884", "#7ad151", "#fde725"]; // viridis

export const state = {
  defaults: null,
  health: null,
  jobs: [],
  current: null,
  running: false,
  filters: {},
  filtersTouched: false, // with the auto preset: the filter fields were edited, so they apply to every image
  sort: { key: "id", dir: 1 },
  selected: null,
  nextJobId: 1,
  viewer: null, // the image viewer (viewer.js), set when the page starts
  calibration: null, // where the µm-per-pixel value came from: {source: "typed"} or {source: "file", file}
};

export function umPerPx() {
  const v = Number($("um-per-px").value);
  return v > 0 && Number.isFinite(v) ? v : null;
}

export function lengthUnit() {
  return umPerPx() ? "µm" : "px";
}

// A preset's detection hints (the detector's cue, nested droplets) act when an image is segmented;
// its filters act in the page. Results made under other hints are segmented again on a change.
export function detectionHints(name) {
  const p = state.defaults && state.defaults.presets[name];
  return p ? `${p.appearance}/${p.nested_droplets}` : "";
}

// The filter controls as a filter spec in px (what the API's `filters` accepts).
export function readFilters() {
  const num = (id) => { const v = $(id).value.trim(); return v === "" || !(Number(v) >= 0) ? null : Number(v); };
  const len = (id) => { const v = num(id); return v == null ? null : umPerPx() ? v / umPerPx() : v; };
  state.filters = {
    diameter_min: len("f-diameter-min"),
    diameter_max: len("f-diameter-max"),
    min_edge_distance: len("f-edge-distance"),
    circularity_min: num("f-circularity-min"),
    outliers: $("f-outliers").value,
    outlier_factor: num("f-outlier-factor") || null,
    exclude_edge_touching: $("f-exclude-edge").checked,
    units: "px",
  };
  return state.filters;
}

// The auto preset lets the server choose each image's filters until the person edits a filter field.
export function autoFilters() {
  return $("preset").value === "auto" && !state.filtersTouched;
}

// The filters a result is judged by: the server's choice for that image under the auto preset (its
// lengths turned into px), else the filter fields.
export function filtersFor(job) {
  const chosen = job.result && job.result.filters_applied;
  if (!autoFilters() || !chosen) return state.filters;
  const s = chosen.units === "um" ? umPerPx() || 1 : 1;
  const out = { ...chosen, units: "px" };
  for (const k of ["diameter_min", "diameter_max", "min_edge_distance"]) if (out[k] != null) out[k] = out[k] / s;
  for (const k of ["area_min", "area_max"]) if (out[k] != null) out[k] = out[k] / (s * s);
  return out;
}

export function filtersForServer() {
  return Object.fromEntries(Object.entries(state.filters).filter(([, v]) => v !== null));
}

export function isKept(job, r) {
  if (job.excluded.has(r.id)) return false;
  if (job.restored.has(r.id) || r.added) return true;
  return job.reasons.get(r.id) == null;
}

export function reasonOf(job, r) {
  if (job.excluded.has(r.id)) return "removed by you";
  if (isKept(job, r)) return r.added ? "added by you" : job.restored.has(r.id) ? "restored by you" : "kept";
  return `removed: ${job.reasons.get(r.id).replace(/_/g, " ")}`;
}

export function isPositive(job, r) {
  return job.threshold != null && r.fl_corrected_mean != null && r.fl_corrected_mean > job.threshold;
}
