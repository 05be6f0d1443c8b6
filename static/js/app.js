// The upload page: a queue of images sent one after another to /segment_file, and a workbench for
// the result. Everything after the segmentation (filters, corrections, statistics, fluorescence
// threshold, exports) runs here from the records the API returned, without a new request; only
// adding a missed droplet asks the server again (/segment_point).

import { applyFilters, ddpcr, describe, histogram, occupancy, volumePl } from "./analysis.js";
import { cropMask, encodePng16, outlinePath, paintIndex } from "./masks.js";
import { Viewer } from "./viewer.js";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "sam_droplet_api_key";
const MAX_MB = Number(document.body.dataset.maxMb);
const COLOURS = { kept: "#30d158", removed: "#ff453a", added: "#0a84ff", positive: "#ff2dd4" };
const RAMP = ["#440154", "#414487", "#2a788e", "#22a884", "#7ad151", "#fde725"]; // viridis

const state = {
  defaults: null,
  health: null,
  jobs: [],
  current: null,
  running: false,
  filters: {},
  sort: { key: "id", dir: 1 },
  selected: null,
  nextJobId: 1,
};

// -- small helpers ---------------------------------------------------------------------------------

function fmt(v, digits = 2) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (!Number.isFinite(v)) return "∞";
  const text = Number(v).toFixed(digits);
  return /^-0\.?0*$/.test(text) ? text.slice(1) : text; // no "-0.0"
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "style") Object.assign(node.style, v); // through the CSSOM: the CSP forbids style attributes
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== false && v !== null && v !== undefined) node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children);
  return node;
}

function say(text, isError = false) {
  const m = $("message");
  m.textContent = text;
  m.classList.toggle("error", isError);
}

function umPerPx() {
  const v = Number($("um-per-px").value);
  return v > 0 && Number.isFinite(v) ? v : null;
}

function lengthUnit() {
  return umPerPx() ? "µm" : "px";
}

function download(blob, name) {
  const a = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function stem(name) {
  return name.replace(/\.[^.]+$/, "").replace(/[^\w.-]+/g, "_") || "image";
}

function csvText(rows) {
  const cell = (v) => {
    const s = v === null || v === undefined ? "" : typeof v === "boolean" ? String(Number(v)) : String(v);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return rows.map((r) => r.map(cell).join(",")).join("\n") + "\n";
}

// -- server calls ----------------------------------------------------------------------------------

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { "X-API-Key": key } : {};
}

// Plain words for an HTTP failure, next to the file it concerns.
function explain(status, body, retryAfter) {
  const server = body && body.error ? body.error.message : "";
  const wait = retryAfter ? ` Try again in ${retryAfter} s.` : "";
  switch (status) {
    case 0: return "Could not reach the server: check the network connection and that the service is running.";
    case 400: return `The server could not use this file: ${server || "bad request"}.`;
    case 401: return "The server needs a valid API key.";
    case 404: return server || "Not found on the server.";
    case 413: return `The file is too large for the server: ${server || `the limit is ${MAX_MB} MB`}.`;
    case 415: return "This file type is not supported: use PNG, JPEG, TIFF, BMP or WebP.";
    case 429: return `Too many requests for now: the server's rate limit was reached.${wait}`;
    case 503: return `The server is busy or not ready${server ? ` (${server})` : ""}.${wait}`;
    case 504: return "The analysis took longer than the server allows and was stopped. Try a smaller image or the classical segmenter.";
    default: return `The server failed (HTTP ${status})${server ? `: ${server}` : ""}.`;
  }
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: { ...(options.headers || {}), ...authHeaders() } });
  } catch {
    return { ok: false, status: 0, body: null, message: explain(0) };
  }
  const body = await response.json().catch(() => null);
  if (response.status === 401) askForKey("The server did not accept the key.");
  const message = response.ok ? "" : explain(response.status, body, response.headers.get("Retry-After"));
  return { ok: response.ok, status: response.status, body, message };
}

function askForKey(error = "") {
  $("key-error").textContent = error;
  $("key-button").hidden = false;
  if (!$("key-dialog").open) $("key-dialog").showModal();
}

// -- start-up --------------------------------------------------------------------------------------

async function connect() {
  const health = await api("/health");
  state.health = health.body;
  if (!health.body) {
    $("server-state").textContent = "server unreachable";
    return;
  }
  const h = health.body;
  $("server-state").textContent = `${h.model_loaded ? `SAM ${h.model_type} on ${h.device}` : "classical detector (no SAM model)"} · v${h.version}`;
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

function setPreset(name) {
  const preset = state.defaults && state.defaults.presets[name];
  if (!preset) return;
  $("preset-help").textContent = preset.description;
  const f = preset.filters;
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

// A preset's detection hints (the detector's cue, nested droplets) act when an image is segmented;
// its filters act in the page. Results made under other hints are segmented again on a change.
function detectionHints(name) {
  const p = state.defaults && state.defaults.presets[name];
  return p ? `${p.appearance}/${p.nested_droplets}` : "";
}

function presetChanged() {
  const name = $("preset").value;
  setPreset(name);
  for (const job of state.jobs) {
    if (!job.result) continue;
    if (job.hints !== undefined && job.hints !== detectionHints(name)) requeue(job);
    else recompute(job);
  }
}

// The filter controls as a filter spec in px (what the API's `filters` accepts).
function readFilters() {
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

function filtersForServer() {
  return Object.fromEntries(Object.entries(state.filters).filter(([, v]) => v !== null));
}

// -- the queue -------------------------------------------------------------------------------------

function addFiles(files) {
  const accepted = [...files].filter((f) => /^image\//.test(f.type) || /\.(tiff?|png|jpe?g|bmp|webp)$/i.test(f.name));
  for (const file of accepted) {
    const job = { id: state.nextJobId++, file, flFile: null, name: file.name, status: "queued", message: "", progress: 0 };
    job.thumb = /^image\/(png|jpeg|webp|bmp)$/.test(file.type) ? URL.createObjectURL(file) : null;
    state.jobs.push(job);
  }
  if (accepted.length < files.length) say(`${files.length - accepted.length} file(s) skipped: not an image.`, true);
  renderJobs();
  runQueue();
}

function renderJobs() {
  const list = $("job-list");
  list.replaceChildren(...state.jobs.map((job) => {
    const li = el("li", { class: `job ${job.status}${state.current === job ? " current" : ""}`, "data-job": job.id });
    const placeholder = () => el("span", { class: "thumb none", text: job.name.split(".").pop().toUpperCase() });
    const thumb = job.thumb ? el("img", { src: job.thumb, alt: "", class: "thumb" }) : placeholder();
    if (job.thumb) thumb.addEventListener("error", () => { job.thumb = null; thumb.replaceWith(placeholder()); });
    const open = el("button", { type: "button", class: "job-name link", disabled: !job.result, title: job.name, onclick: () => show(job) }, job.name);
    const bar = el("progress", { max: 100, class: "bar", "aria-label": `progress of ${job.name}` });
    if (job.status === "uploading") bar.value = job.progress;
    else if (job.status === "done") bar.value = 100;
    else if (job.status !== "processing") bar.value = 0;
    const status = el("span", { class: "job-status", role: job.status === "error" ? "alert" : null }, statusText(job));
    const actions = el("span", { class: "job-actions" });
    if (["queued", "uploading", "processing"].includes(job.status)) {
      actions.append(el("button", { type: "button", class: "link cancel", onclick: () => cancel(job), "aria-label": `cancel ${job.name}` }, "Cancel"));
    }
    const flInput = el("input", { type: "file", accept: "image/*,.tif,.tiff", class: "sr-only fl-input", "aria-label": `fluorescence channel for ${job.name}`,
      onchange: (e) => { if (e.target.files[0]) attachFluorescence(job, e.target.files[0]); } });
    const flLabel = el("label", { class: "link fl-label", title: "A fluorescence picture of the same field" }, flInput, job.flFile ? `FL: ${job.flFile.name}` : "+ fluorescence");
    actions.append(flLabel);
    if (job.status === "error" || job.status === "cancelled") actions.append(el("button", { type: "button", class: "link", onclick: () => requeue(job) }, "Retry"));
    li.append(thumb, el("div", { class: "job-body" }, open, bar, status, actions));
    return li;
  }));
  $("export-batch").disabled = !state.jobs.some((j) => j.result);
}

function statusText(job) {
  const secs = job.started ? ((job.finished || performance.now()) - job.started) / 1000 : 0;
  switch (job.status) {
    case "queued": return "waiting";
    case "uploading": return `uploading ${job.progress.toFixed(0)} %`;
    case "processing": return `analysing… ${secs.toFixed(0)} s`;
    case "done": return `${job.keptCount ?? job.result.num_droplets} droplets · ${secs.toFixed(1)} s`;
    case "cancelled": return "cancelled";
    default: return job.message;
  }
}

function attachFluorescence(job, file) {
  job.flFile = file;
  if (job.status === "done" || job.status === "error") requeue(job);
  else renderJobs();
}

function requeue(job) {
  job.status = "queued";
  job.message = "";
  renderJobs();
  runQueue();
}

function cancel(job) {
  if (job.xhr) job.xhr.abort();
  job.status = "cancelled";
  renderJobs();
}

async function runQueue() {
  if (state.running) return;
  state.running = true;
  const ticker = setInterval(() => {
    for (const node of document.querySelectorAll("li.job.processing .job-status, li.job.uploading .job-status")) {
      const job = state.jobs.find((j) => String(j.id) === node.closest("li").dataset.job);
      if (job) node.textContent = statusText(job);
    }
  }, 500);
  try {
    let job;
    while ((job = state.jobs.find((j) => j.status === "queued"))) await segment(job);
  } finally {
    clearInterval(ticker);
    state.running = false;
  }
}

function segment(job) {
  return new Promise((resolve) => {
    if (job.file.size > MAX_MB * 1024 * 1024) {
      job.status = "error";
      job.message = `The file is larger than the server's limit of ${MAX_MB} MB.`;
      renderJobs();
      return resolve();
    }
    const form = new FormData();
    form.append("file", job.file, job.name);
    if (job.flFile) form.append("fluorescence", job.flFile, job.flFile.name);
    form.append("segmenter", $("segmenter").value);
    form.append("preset", $("preset").value);
    job.hints = detectionHints($("preset").value);
    form.append("filters", JSON.stringify(filtersForServer()));
    if (umPerPx()) form.append("um_per_px", String(umPerPx()));
    if (job.flFile) {
      form.append("threshold_method", $("threshold-method").value);
      form.append("spot_diameter_px", $("spot-diameter").value || "5");
    }
    const xhr = new XMLHttpRequest();
    job.xhr = xhr;
    job.status = "uploading";
    job.progress = 0;
    job.started = performance.now();
    job.finished = null;
    renderJobs();
    xhr.open("POST", "/segment_file");
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) { job.progress = (100 * e.loaded) / e.total; renderJobProgress(job); }
    };
    xhr.upload.onload = () => { job.status = "processing"; renderJobs(); };
    const finish = () => { job.xhr = null; job.finished = performance.now(); renderJobs(); resolve(); };
    xhr.onload = async () => {
      const body = xhr.response;
      if (xhr.status === 200 && body && body.success) {
        try {
          await prepare(job, body);
          job.status = "done";
          if (!state.current || state.current.status !== "done" || state.current === job) show(job);
        } catch (err) {
          job.status = "error";
          job.message = `The result could not be shown: ${err.message}`;
        }
      } else {
        if (xhr.status === 401) askForKey("The server did not accept the key.");
        job.status = "error";
        job.message = explain(xhr.status, body, xhr.getResponseHeader("Retry-After"));
      }
      finish();
    };
    xhr.onerror = () => { job.status = "error"; job.message = explain(0); finish(); };
    xhr.onabort = () => { job.status = "cancelled"; finish(); };
    xhr.send(form);
  });
}

function renderJobProgress(job) {
  const li = document.querySelector(`li.job[data-job="${job.id}"]`);
  if (!li) return;
  li.querySelector("progress").value = job.progress;
  li.querySelector(".job-status").textContent = statusText(job);
}

// -- a result --------------------------------------------------------------------------------------

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

async function prepare(job, data) {
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
  recompute(job);
}

function indexMap(job) {
  if (!job.index) {
    const { width, height } = job.result.image;
    job.index = paintIndex(width, height, job.records.map((r) => r.crop));
  }
  return job.index;
}

function isKept(job, r) {
  if (job.excluded.has(r.id)) return false;
  if (job.restored.has(r.id) || r.added) return true;
  return job.reasons.get(r.id) == null;
}

function reasonOf(job, r) {
  if (job.excluded.has(r.id)) return "removed by you";
  if (isKept(job, r)) return r.added ? "added by you" : job.restored.has(r.id) ? "restored by you" : "kept";
  return `removed: ${job.reasons.get(r.id).replace(/_/g, " ")}`;
}

function isPositive(job, r) {
  return job.threshold != null && r.fl_corrected_mean != null && r.fl_corrected_mean > job.threshold;
}

// Filters, statistics, table and outlines from the current state; no request.
function recompute(job) {
  job.reasons = applyFilters(job.records.filter((r) => !r.added), state.filters, umPerPx());
  job.kept = job.records.filter((r) => isKept(job, r));
  job.keptCount = job.kept.length;
  if (job === state.current) render();
  const li = document.querySelector(`li.job[data-job="${job.id}"] .job-status`);
  if (li && job.status === "done") li.textContent = statusText(job);
}

function show(job) {
  state.current = job;
  state.selected = null;
  viewer.setImage(job.bitmap);
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

function render() {
  const job = state.current;
  if (!job) return;
  $("count").textContent = String(job.kept.length);
  $("result-title").textContent = job.name;
  renderStats(job);
  renderHistogram(job);
  renderFluorescence(job);
  renderTable(job);
  renderLayers(job);
  $("undo").disabled = !job.undo.length;
}

function renderStats(job) {
  const s = umPerPx();
  const d = describe(job.kept.map((r) => r.equivalent_diameter_px * (s || 1)));
  const unit = lengthUnit();
  const rows = [
    ["Segmenter", job.result.segmenter],
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

function drawBars(canvas, hist, { marker, colourAbove, label }) {
  const ctx = canvas.getContext("2d");
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 320;
  const h = canvas.clientHeight || 150;
  canvas.width = w * dpr;
  canvas.height = h * dpr;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const style = getComputedStyle(document.body);
  const fg = style.getPropertyValue("--fg").trim() || "#222";
  const bar = style.getPropertyValue("--accent").trim() || "#2f6fdf";
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = fg;
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

function renderHistogram(job) {
  const s = umPerPx() || 1;
  drawBars($("histogram"), histogram(job.kept.map((r) => r.equivalent_diameter_px * s), 20), { label: lengthUnit() });
}

// -- fluorescence ------------------------------------------------------------------------------------

function setupThreshold(job) {
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

function renderFluorescence(job) {
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

function renderLayers(job) {
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
  viewer.setLayers([...groups.values()]);
  const sel = state.selected != null && job.byId.get(state.selected);
  viewer.setHighlight(sel ? sel.path : null);
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
  cols.push(["status", "status", (r) => reasonOf(job, r), null]);
  return cols;
}

function renderTable(job) {
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

function select(id, centre) {
  const job = state.current;
  state.selected = id;
  const r = job.byId.get(id);
  viewer.setHighlight(r ? r.path : null);
  for (const tr of document.querySelectorAll("#droplet-table tr.selected")) tr.classList.remove("selected");
  const row = document.querySelector(`#droplet-table tr[data-id="${id}"]`);
  if (row) { row.classList.add("selected"); row.scrollIntoView({ block: "nearest" }); }
  if (r && centre) viewer.centerOn(r.centroid[0], r.centroid[1], Math.max(viewer.zoom, 200 / Math.max(r.bbox[2], r.bbox[3], 1) / 2));
}

// -- corrections -------------------------------------------------------------------------------------

function toggle(job, r) {
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

function undo() {
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

function dropletAt(job, x, y) {
  const { width, height } = job.result.image;
  if (x < 0 || y < 0 || x >= width || y >= height) return null;
  const i = indexMap(job)[Math.floor(y) * width + Math.floor(x)];
  const r = i ? job.records[i - 1] : null;
  return r && (isKept(job, r) || $("show-removed").checked) ? r : null;
}

async function addAt(job, x, y) {
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

const CSV_COLUMNS = [
  ["id", (r) => r.id], ["centroid_x_px", (r) => r.centroid[0]], ["centroid_y_px", (r) => r.centroid[1]],
  ["bbox_x_px", (r) => r.bbox[0]], ["bbox_y_px", (r) => r.bbox[1]], ["bbox_w_px", (r) => r.bbox[2]], ["bbox_h_px", (r) => r.bbox[3]],
  ["area_px2", (r) => r.area_px], ["perimeter_px", (r) => r.perimeter_px], ["equivalent_diameter_px", (r) => r.equivalent_diameter_px],
  ["max_feret_px", (r) => r.max_feret_px], ["min_feret_px", (r) => r.min_feret_px], ["circularity", (r) => r.circularity],
  ["aspect_ratio", (r) => r.aspect_ratio], ["intensity_mean", (r) => r.intensity_mean], ["intensity_median", (r) => r.intensity_median],
  ["intensity_std", (r) => r.intensity_std], ["intensity_min", (r) => r.intensity_min], ["intensity_max", (r) => r.intensity_max],
  ["touches_edge", (r) => Number(r.touches_edge)], ["min_edge_distance_px", (r) => r.min_edge_distance_px], ["score", (r) => r.score],
  ["source", (r) => (r.added ? "manual" : r.source)],
];
const FL_COLUMNS = ["fl_mean", "fl_max", "fl_integrated", "fl_background", "fl_corrected_mean", "positive", "objects"];

function calibrated(r, s) {
  const d = r.equivalent_diameter_px * s;
  return {
    area_um2: r.area_px * s * s, perimeter_um: r.perimeter_px * s, equivalent_diameter_um: d, max_feret_um: r.max_feret_px * s,
    min_feret_um: r.min_feret_px * s, min_edge_distance_um: r.min_edge_distance_px * s, volume_pl: volumePl(d),
  };
}

function exportRecord(job, r) {
  const { crop, path, added, ...rec } = r;
  const s = umPerPx();
  const out = { ...rec, source: added ? "manual" : rec.source };
  if (s) Object.assign(out, calibrated(r, s));
  if (job.threshold != null && r.fl_corrected_mean != null) out.positive = isPositive(job, r);
  if (!isKept(job, r)) out.removed_reason = job.excluded.has(r.id) ? "manual" : job.reasons.get(r.id);
  else delete out.removed_reason;
  return out;
}

function exportCsv(job) {
  const s = umPerPx();
  const fl = Boolean(job.result.summary.fluorescence);
  const calCols = s ? Object.keys(calibrated(job.kept[0] || job.records[0], s)) : [];
  const header = [...CSV_COLUMNS.map((c) => c[0]), ...calCols, ...(fl ? FL_COLUMNS : [])];
  const rows = job.kept.map((r) => {
    const cal = s ? calibrated(r, s) : {};
    return [...CSV_COLUMNS.map(([, get]) => get(r)), ...calCols.map((c) => +cal[c].toFixed(6)), ...(fl ? FL_COLUMNS.map((c) => (c === "positive" ? Number(isPositive(job, r)) : r[c])) : [])];
  });
  return new Blob([csvText([header, ...rows])], { type: "text/csv" });
}

function summaryRow(job) {
  const s = umPerPx();
  const d = describe(job.kept.map((r) => r.equivalent_diameter_px));
  const row = {
    file: job.name, segmenter: job.result.segmenter, droplets: job.kept.length,
    removed_by_filters: job.records.filter((r) => !isKept(job, r) && !job.excluded.has(r.id)).length,
    removed_by_you: job.excluded.size, added_by_you: job.records.filter((r) => r.added).length,
    mean_diameter_px: d.mean, median_diameter_px: d.median, sd_diameter_px: d.std, cv: d.cv,
    um_per_px: s, mean_diameter_um: s && d.mean ? d.mean * s : null, median_diameter_um: s && d.median ? d.median * s : null,
    mean_volume_pl: s ? describe(job.kept.map((r) => volumePl(r.equivalent_diameter_px * s))).mean : null,
  };
  if (job.result.summary.fluorescence) {
    const k = job.kept.filter((r) => isPositive(job, r)).length;
    const q = ddpcr(job.kept.length, k, row.mean_volume_pl);
    const occ = occupancy(job.kept.map((r) => r.objects || 0));
    Object.assign(row, {
      fl_threshold: job.threshold, positive: k, p: q.p, lambda: q.lambda, lambda_ci_low: q.lambda_ci && q.lambda_ci[0], lambda_ci_high: q.lambda_ci && q.lambda_ci[1],
      copies_per_ul: q.copies_per_ul, copies_per_ul_ci_low: q.copies_per_ul_ci && q.copies_per_ul_ci[0], copies_per_ul_ci_high: q.copies_per_ul_ci && q.copies_per_ul_ci[1],
      objects_mean: occ.mean, droplets_0: occ.observed[0], droplets_1: occ.observed[1], droplets_2: occ.observed[2], droplets_3plus: occ.observed[3],
    });
  }
  return row;
}

async function overlayPng(job) {
  const { width, height } = job.result.image;
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(job.bitmap, 0, 0);
  ctx.lineWidth = Math.max(1, Math.round(Math.min(width, height) / 900));
  for (const r of job.records) {
    const kept = isKept(job, r);
    if (!kept && !$("show-removed").checked) continue;
    ctx.strokeStyle = !kept ? COLOURS.removed : isPositive(job, r) ? COLOURS.positive : r.added ? COLOURS.added : COLOURS.kept;
    ctx.stroke(r.path);
  }
  return canvas.convertToBlob({ type: "image/png" });
}

async function labelPng(job) {
  const { width, height } = job.result.image;
  const values = new Uint16Array(width * height);
  for (const r of job.kept) {
    const m = r.crop;
    for (let y = 0; y < m.h; y++) for (let x = 0; x < m.w; x++) if (m.data[y * m.w + x]) values[(m.y0 + y) * width + m.x0 + x] = r.id;
  }
  return encodePng16(values, width, height);
}

function coco(job) {
  const { width, height } = job.result.image;
  return {
    info: { description: "droplets segmented by sam_droplet, corrected by hand", version: "1.0" },
    licenses: [],
    images: [{ id: 1, width, height, file_name: job.name }],
    categories: [{ id: 1, name: "droplet", supercategory: "droplet" }],
    annotations: job.kept.map((r) => ({ id: r.id, image_id: 1, category_id: 1, segmentation: r.mask, area: r.area_px, bbox: r.bbox, iscrowd: 0, score: r.score })),
  };
}

async function exportAs(kind) {
  const job = state.current;
  if (kind === "batch") {
    const rows = state.jobs.filter((j) => j.result).map(summaryRow);
    const keys = [...new Set(rows.flatMap((r) => Object.keys(r)))];
    download(new Blob([csvText([keys, ...rows.map((r) => keys.map((k) => (typeof r[k] === "number" ? +r[k].toPrecision(8) : r[k])))])], { type: "text/csv" }), "sam_droplet_batch_summary.csv");
    return;
  }
  if (!job) return;
  const name = stem(job.name);
  if (kind === "csv") download(exportCsv(job), `${name}_droplets.csv`);
  if (kind === "json") {
    const body = {
      image: { ...job.result.image, file_name: job.name }, segmenter: job.result.segmenter, model: job.result.model,
      um_per_px: umPerPx(), filters: state.filters, preset: $("preset").value,
      corrections: { removed: [...job.excluded], restored: [...job.restored], added: job.records.filter((r) => r.added).map((r) => r.id) },
      summary: summaryRow(job), num_droplets: job.kept.length,
      droplets: job.kept.map((r) => exportRecord(job, r)),
      removed: job.records.filter((r) => !isKept(job, r)).map((r) => exportRecord(job, r)),
    };
    download(new Blob([JSON.stringify(body)], { type: "application/json" }), `${name}_droplets.json`);
  }
  if (kind === "coco") download(new Blob([JSON.stringify(coco(job))], { type: "application/json" }), `${name}_coco.json`);
  if (kind === "labels") download(await labelPng(job), `${name}_labels.png`);
  if (kind === "overlay") download(await overlayPng(job), `${name}_overlay.png`);
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
  calibrationChanged(before);
  $("scale-form").hidden = true;
  viewer.line = null;
  setTool("exclude");
  say(`Calibrated: ${$("um-per-px").value} µm per pixel.`);
});
$("scale-cancel").addEventListener("click", () => { $("scale-form").hidden = true; viewer.line = null; viewer.draw(); setTool("exclude"); });

// A new calibration keeps the filters' meaning: lengths are shown in the new unit.
function calibrationChanged(filtersPx) {
  const s = umPerPx() || 1;
  const show = (id, v) => { $(id).value = v == null ? "" : String(+(v * s).toPrecision(6)); };
  show("f-diameter-min", filtersPx.diameter_min);
  show("f-diameter-max", filtersPx.diameter_max);
  show("f-edge-distance", filtersPx.min_edge_distance);
  for (const node of document.querySelectorAll(".len-unit")) node.textContent = lengthUnit();
  readFilters();
  for (const job of state.jobs) if (job.result) recompute(job);
}
let lastFilters = null;
$("um-per-px").addEventListener("focus", () => { lastFilters = { ...state.filters }; });
$("um-per-px").addEventListener("change", () => calibrationChanged(lastFilters || state.filters));

for (const id of ["f-diameter-min", "f-diameter-max", "f-circularity-min", "f-edge-distance", "f-outliers", "f-outlier-factor", "f-exclude-edge"]) {
  $(id).addEventListener("input", () => { readFilters(); for (const job of state.jobs) if (job.result) recompute(job); });
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
drop.addEventListener("drop", (e) => { e.preventDefault(); addFiles(e.dataTransfer.files); });
$("file-input").addEventListener("change", (e) => { addFiles(e.target.files); e.target.value = ""; });

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
