// Long work as server jobs (POST /jobs): videos and TIFF stacks tracked frame to frame, ZIPs of
// images segmented as a batch. A job shows its upload, then its progress, ETA and a cancel button;
// a finished video opens in the motion view (frames with outlines coloured by track and their
// tails, a frame slider, plots of speed, crossings and size over time, the tracks table, the result
// files); a finished batch shows its images' table and files.

import { histogram } from "./analysis.js";
import { api, askForKey, authHeaders, explain } from "./api.js";
import { $, download, el, fmt, say } from "./dom.js";
import { drawBars, plotCanvas } from "./panels.js";
import { autoFilters, filtersForServer, umPerPx } from "./state.js";

const JOB_MAX_MB = Number(document.body.dataset.jobMaxMb);
const LONG_WORK = /\.(avi|mp4|mov|mkv|m4v|webm|zip)$/i;
const POLL_MS = 1000;
const TABLE_ROWS = 500;

export const longJobs = [];
let nextId = 1;
let view = null; // the open result: {job, result, stops, position, frames: Map, images: Map, playing}

// A video or a ZIP (a TIFF is an image unless dropped on the jobs' own area).
export function isLongWork(file) {
  return /^video\//.test(file.type) || file.type === "application/zip" || LONG_WORK.test(file.name);
}

export function submitJobs(files) {
  for (const file of files) {
    const job = { id: nextId++, file, name: file.name, status: "uploading", progress: 0, kind: /\.zip$/i.test(file.name) ? "batch" : "video" };
    longJobs.push(job);
    upload(job);
  }
  renderList();
  const last = document.querySelector("#long-list li:last-child");
  if (last) last.scrollIntoView({ block: "nearest" });
  say(`${files.length === 1 ? files[0].name : `${files.length} files`} sent to the server as ${files.length === 1 ? "a job" : "jobs"}: progress under "Videos, stacks and batches"; the result opens when it is done.`);
}

function fieldsFor(job) {
  const form = new FormData();
  form.append("file", job.file, job.name);
  form.append("segmenter", $("segmenter").value);
  form.append("detector", $("detector").value);
  form.append("preset", $("preset").value);
  if (umPerPx()) form.append("um_per_px", String(umPerPx()));
  if (!autoFilters()) form.append("filters", JSON.stringify(filtersForServer()));
  if ($("contents").checked) {
    form.append("contents", "true");
    form.append("spot_diameter_px", $("spot-diameter").value || "5");
  }
  if (job.kind === "video") {
    for (const [id, name] of [["job-fps", "fps"], ["job-frame-step", "frame_step"], ["job-max-frames", "max_frames"], ["job-max-gap", "max_gap"]]) {
      if ($(id).value) form.append(name, $(id).value);
    }
  }
  return form;
}

function upload(job) {
  if (job.file.size > JOB_MAX_MB * 1024 * 1024) {
    fail(job, `The file is larger than the server's limit for jobs, ${JOB_MAX_MB} MB.`);
    return;
  }
  const xhr = new XMLHttpRequest();
  job.xhr = xhr;
  xhr.open("POST", "/jobs");
  for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
  xhr.responseType = "json";
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) { job.progress = e.loaded / e.total; renderList(); } };
  xhr.onload = () => {
    job.xhr = null;
    const body = xhr.response;
    if (xhr.status === 202 && body && body.success) {
      Object.assign(job, { jobId: body.job_id, kind: body.kind, status: "queued", total: body.frames, done: 0, statusUrl: body.status_url });
      renderList();
      poll(job);
    } else {
      if (xhr.status === 401) askForKey("The server did not accept the key.");
      fail(job, explain(xhr.status, body, xhr.getResponseHeader("Retry-After")));
    }
  };
  xhr.onerror = () => fail(job, explain(0));
  xhr.onabort = () => { job.status = "cancelled"; renderList(); };
  xhr.send(fieldsFor(job));
}

function fail(job, message) {
  job.status = "failed";
  job.error = message;
  renderList();
}

async function poll(job) {
  while (["queued", "running"].includes(job.status)) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    const r = await api(job.statusUrl);
    if (!r.ok) {
      if (r.status === 404) { fail(job, "The job is gone from the server (expired or deleted)."); return; }
      continue; // a busy or restarting server: ask again
    }
    const b = r.body;
    Object.assign(job, { status: b.state, done: b.progress.done, total: b.progress.total ?? job.total, eta: b.eta_s, error: b.error, resultUrl: b.result_url });
    renderList();
  }
  if (job.status === "done" && (!view || view.job === job)) open(job);
}

async function cancel(job) {
  if (job.xhr) { job.xhr.abort(); return; }
  const r = await api(job.statusUrl, { method: "DELETE" });
  if (r.ok) job.status = r.body.state === "cancelling" ? "running" : r.body.state;
  else say(r.message, true);
  renderList();
}

async function remove(job) {
  if (job.statusUrl) await api(job.statusUrl, { method: "DELETE" });
  longJobs.splice(longJobs.indexOf(job), 1);
  if (view && view.job === job) close();
  renderList();
}

function statusText(job) {
  const unit = job.kind === "batch" ? "image" : "frame";
  switch (job.status) {
    case "uploading": return `uploading ${(100 * job.progress).toFixed(0)} %`;
    case "queued": return "waiting for a worker";
    case "running": {
      const of = job.total ? ` of ${job.total}` : "";
      const eta = job.eta != null ? ` · about ${job.eta < 90 ? `${Math.ceil(job.eta)} s` : `${Math.ceil(job.eta / 60)} min`} left` : "";
      return `${unit} ${job.done}${of}${eta}`;
    }
    case "done": return `done · ${job.total ?? job.done} ${unit}s`;
    case "cancelled": return "cancelled";
    default: return job.error || "failed";
  }
}

function renderList() {
  $("long-list").replaceChildren(...longJobs.map((job) => {
    const li = el("li", { class: `job long ${job.status}${view && view.job === job ? " current" : ""}`, "data-long-job": job.id });
    const bar = el("progress", { max: 1, class: "bar", "aria-label": `progress of ${job.name}` });
    if (job.status === "uploading") bar.value = job.progress;
    else if (job.status === "running" && job.total) bar.value = job.done / job.total;
    else if (job.status === "done") bar.value = 1;
    else if (job.status !== "queued") bar.value = 0;
    const name = el("button", { type: "button", class: "job-name link", disabled: job.status !== "done", title: job.name, onclick: () => open(job) }, job.name);
    const actions = el("span", { class: "job-actions" });
    if (["uploading", "queued", "running"].includes(job.status)) actions.append(el("button", { type: "button", class: "link cancel", onclick: () => cancel(job), "aria-label": `cancel ${job.name}` }, "Cancel"));
    if (job.status === "done") actions.append(el("button", { type: "button", class: "link", onclick: () => open(job) }, "Open"));
    if (["done", "failed", "cancelled"].includes(job.status)) actions.append(el("button", { type: "button", class: "link", onclick: () => remove(job) }, "Remove"));
    const badge = el("span", { class: "thumb none", text: job.kind === "batch" ? "ZIP" : "▶" });
    const status = el("span", { class: "job-status", role: job.status === "failed" ? "alert" : null }, statusText(job));
    li.append(badge, el("div", { class: "job-body" }, name, bar, status, actions));
    return li;
  }));
}

// -- the result view ---------------------------------------------------------------------------------

function showView(on) {
  $("image-stage").hidden = on;
  $("image-panel").hidden = on;
  $("motion-stage").hidden = !on;
  $("motion-panel").hidden = !on;
}

export function close() {
  if (view) view.playing = false;
  view = null;
  showView(false);
  renderList();
}

async function open(job) {
  const r = await api(job.resultUrl || `${job.statusUrl}/result`);
  if (!r.ok) { say(r.message, true); return; }
  if (view) view.playing = false;
  view = { job, result: r.body, stops: [], position: 0, frames: new Map(), images: new Map(), playing: false };
  showView(true);
  renderList();
  $("motion-title").textContent = job.name;
  const video = r.body.kind === "video";
  $("motion-stage").classList.toggle("batch", !video);
  for (const id of ["motion-play", "frame-slider", "frame-label", "show-tails", "motion-box", "motion-plots"]) {
    const node = $(id);
    (node.closest("label") || node).hidden = !video;
  }
  renderExports(job, r.body.kind);
  if (!video) { renderBatch(r.body); return; }
  const stops = await api(`${job.statusUrl}/frames`);
  view.stops = stops.ok ? stops.body.frames : [];
  $("frame-slider").max = String(Math.max(0, view.stops.length - 1));
  $("frame-slider").value = "0";
  renderSummary(r.body);
  renderPlots(r.body);
  renderTracks(r.body);
  await showFrame(0);
}

async function frameRecord(index) {
  if (!view.frames.has(index)) {
    const r = await api(`${view.job.statusUrl}/frames/${index}`);
    if (!r.ok) throw new Error(r.message);
    view.frames.set(index, r.body);
  }
  return view.frames.get(index);
}

async function frameImage(record) {
  if (!view.images.has(record.frame)) {
    const response = await fetch(record.image_url, { headers: authHeaders() });
    if (!response.ok) throw new Error(`the frame's picture failed (HTTP ${response.status})`);
    view.images.set(record.frame, await createImageBitmap(await response.blob()));
    if (view.images.size > 64) view.images.delete(view.images.keys().next().value); // bounded memory
  }
  return view.images.get(record.frame);
}

async function showFrame(position) {
  if (!view || !view.stops.length) return;
  const current = view;
  position = Math.max(0, Math.min(view.stops.length - 1, position));
  view.position = position;
  $("frame-slider").value = String(position);
  try {
    const record = await frameRecord(view.stops[position]);
    const picture = await frameImage(record);
    if (view !== current || view.position !== position) return; // the slider moved on meanwhile
    drawFrame(record, picture);
    const t = record.time_s != null ? ` · ${fmt(record.time_s, 3)} s` : "";
    $("frame-label").textContent = `frame ${record.frame} (${position + 1} of ${view.stops.length})${t} · ${record.droplets.length} droplets`;
    $("motion-message").textContent = "";
  } catch (err) {
    $("motion-message").textContent = `Frame ${view.stops[position]} could not be shown: ${err.message}`;
  }
}

// A track's colour: hues spread by the golden angle, so neighbouring ids differ.
const trackColour = (id, alpha = 1) => `hsla(${(id * 137.508) % 360}, 85%, 58%, ${alpha})`;

function drawFrame(record, picture) {
  const canvas = $("motion-canvas");
  const box = $("motion-box").getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  canvas.width = box.width * dpr;
  canvas.height = box.height * dpr;
  canvas.style.width = `${box.width}px`;
  canvas.style.height = `${box.height}px`;
  const ctx = canvas.getContext("2d");
  const scale = Math.min(box.width / record.width, box.height / record.height);
  const ox = (box.width - record.width * scale) / 2;
  const oy = (box.height - record.height * scale) / 2;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, box.width, box.height);
  ctx.imageSmoothingEnabled = scale < 1;
  ctx.drawImage(picture, ox, oy, record.width * scale, record.height * scale);
  const X = (x) => ox + x * scale;
  const Y = (y) => oy + y * scale;
  const tails = $("show-tails").checked;
  ctx.lineJoin = "round";
  for (const d of record.droplets) {
    const colour = trackColour(d.track_id);
    if (tails && d.tail.length) {
      ctx.strokeStyle = trackColour(d.track_id, 0.9);
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.moveTo(X(d.tail[0][0]), Y(d.tail[0][1]));
      for (const [x, y] of d.tail.slice(1)) ctx.lineTo(X(x), Y(y));
      ctx.lineTo(X(d.x), Y(d.y));
      ctx.stroke();
    }
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1.5;
    ctx.setLineDash(d.on_border ? [4, 3] : []);
    ctx.beginPath();
    d.outline.forEach(([x, y], i) => (i ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
    ctx.closePath();
    ctx.stroke();
    ctx.setLineDash([]);
    if (d.diameter_px * scale > 16) {
      ctx.fillStyle = colour;
      ctx.font = "11px system-ui, sans-serif";
      ctx.fillText(String(d.track_id), X(d.x) - 6, Y(d.y) + 4);
    }
  }
}

function per(result) { return result.summary.fps ? "s" : "frame"; }

function renderSummary(result) {
  const s = result.summary;
  const p = per(result);
  const freq = s.crossing_frequency_hz ?? s.crossing_frequency_per_frame;
  const speed = s[`median_speed_px_per_${p}`];
  const rows = [
    ["Frames", `${s.frames}${s.frame_step > 1 ? ` (every ${s.frame_step}th of ${s.source_frames})` : ""}`],
    ["Frame rate", s.fps ? `${+s.fps.toFixed(3)} frames/s` : "unknown (times in frames)"],
    ["Tracks", String(s.tracks)],
    ["Flow", s.flow ? "yes" : "no (a time-lapse)"],
    ["Crossings of the middle", String(s.crossings)],
    [`Crossing frequency (${s.fps ? "Hz" : "per frame"})`, fmt(freq, 3)],
    [`Median speed (px/${p})`, fmt(speed, 1)],
  ];
  if (s[`median_speed_um_per_${p}`] != null) rows.push([`Median speed (µm/${p})`, fmt(s[`median_speed_um_per_${p}`], 1)]);
  const size = s.size_um || s.size;
  rows.push(
    [`Mean diameter over tracks (${size.unit === "um" ? "µm" : "px"})`, fmt(size.mean, 2)],
    ["CV over tracks", size.cv == null ? "–" : `${(100 * size.cv).toFixed(1)} %`],
    ["Merges", String(s.merges)], ["Splits", String(s.splits)],
  );
  $("motion-summary-title").textContent = "Tracking summary";
  $("motion-summary").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  $("motion-events").replaceChildren(...result.events.slice(0, 50).map((e) => {
    const t = e.time_s != null ? ` (${fmt(e.time_s, 3)} s)` : "";
    const text = e.kind === "merge" ? `merge at frame ${e.frame}${t}: tracks ${e.tracks.join(" + ")} → ${e.into.join(", ")}` : `split at frame ${e.frame}${t}: track ${e.tracks.join(", ")} → ${e.into.join(" + ")}`;
    return el("li", { class: "link", text, onclick: () => jumpTo(e.frame) });
  }));
}

function jumpTo(frame) {
  const position = view.stops.findIndex((f) => f >= frame);
  showFrame(position < 0 ? view.stops.length - 1 : position);
}

function linePlot(canvas, points, { title, xLabel, yLabel, step = false, digits = 1 }) {
  const { ctx, w, h, fg, accent } = plotCanvas(canvas);
  if (points.length < 2) { ctx.fillText(`${title}: not enough data`, 8, h / 2); return; }
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y1 - y0 < 1e-9) { y0 -= 1; y1 += 1; }
  const plotH = h - 18;
  const X = (x) => 4 + ((x - x0) / (x1 - x0 || 1)) * (w - 8);
  const Y = (y) => plotH - ((y - y0) / (y1 - y0)) * (plotH - 14);
  ctx.strokeStyle = accent;
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  points.forEach(([x, y], i) => {
    if (!i) ctx.moveTo(X(x), Y(y));
    else { if (step) ctx.lineTo(X(x), Y(points[i - 1][1])); ctx.lineTo(X(x), Y(y)); }
  });
  ctx.stroke();
  ctx.fillStyle = fg;
  ctx.fillText(`${title} (${fmt(y0, digits)}–${fmt(y1, digits)}${yLabel ? ` ${yLabel}` : ""})`, 2, 10);
  ctx.fillText(fmt(x0, 2), 2, h - 4);
  const last = `${fmt(x1, 2)} ${xLabel}`;
  ctx.fillText(last, w - ctx.measureText(last).width - 2, h - 4);
}

function renderPlots(result) {
  const p = per(result);
  const speeds = result.tracks.filter((t) => t.n_frames >= 3 && t[`speed_px_per_${p}`] != null).map((t) => t[`speed_px_per_${p}`]);
  drawBars($("speed-plot"), histogram(speeds, 20), { label: `px/${p} (track speed)` });
  const crossings = result.crossing_times.map((t, i) => [t, i + 1]);
  const freq = result.summary.crossing_frequency_hz ?? result.summary.crossing_frequency_per_frame;
  linePlot($("crossing-plot"), crossings, { title: `droplets crossing the middle, ${fmt(freq, 2)} per ${p}`, xLabel: p, yLabel: "", step: true, digits: 0 });
  const sizes = result.frames.filter((f) => f.mean_diameter_px != null).map((f) => [f.time_s ?? f.frame, f.mean_diameter_px]);
  linePlot($("size-time-plot"), sizes, { title: "mean diameter", xLabel: p, yLabel: "px" });
}

function table(head, rows, onRow) {
  $("motion-table").querySelector("thead").replaceChildren(el("tr", {}, ...head.map((h) => el("th", { text: h }))));
  $("motion-table").querySelector("tbody").replaceChildren(...rows.map(([cells, target]) => {
    const tr = el("tr", { tabindex: onRow ? "0" : null }, ...cells.map((c) => el("td", { text: c })));
    if (onRow) { tr.addEventListener("click", () => onRow(target)); tr.addEventListener("keydown", (e) => { if (e.key === "Enter") onRow(target); }); }
    return tr;
  }));
}

function renderTracks(result) {
  const p = per(result);
  const head = ["track", "first frame", "last frame", "frames", "diameter px", `speed px/${p}`, `vx px/${p}`, `vy px/${p}`, `Δd px/${p}`];
  const rows = result.tracks.slice(0, TABLE_ROWS).map((t) => [[
    String(t.track_id), String(t.first_frame), String(t.last_frame), String(t.n_frames), fmt(t.mean_diameter_px, 1),
    fmt(t[`speed_px_per_${p}`], 1), fmt(t[`vx_px_per_${p}`], 1), fmt(t[`vy_px_per_${p}`], 1), fmt(t[`diameter_change_px_per_${p}`], 2),
  ], t.first_frame]);
  table(head, rows, jumpTo);
  if (result.tracks.length > TABLE_ROWS) $("motion-message").textContent = `The first ${TABLE_ROWS} of ${result.tracks.length} tracks are listed; the CSV has them all.`;
}

function renderBatch(result) {
  $("motion-summary-title").textContent = "Batch summary";
  const rows = [["Images", String(result.images)], ["Failed", String(result.failed)], ["Droplets", String(result.droplets)]];
  if (result.skipped_members.length) rows.push(["Other files skipped", String(result.skipped_members.length)]);
  $("motion-summary").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  table(["image", "droplets", "mean d (px)", "CV", "Dv50", "error"], result.rows.map((r) => [[
    r.file, r.droplets == null ? "–" : String(r.droplets), fmt(r.diameter_mean_px, 1), r.cv == null ? "–" : `${(100 * r.cv).toFixed(1)} %`,
    fmt(r.dv50, 1), r.error || "",
  ], null]));
  $("motion-message").textContent = result.failed ? `${result.failed} image(s) failed; their errors are in the table and the summary CSV.` : "";
}

const EXPORTS = {
  video: [["csv", "Tracks CSV"], ["frames", "Frames CSV"], ["positions", "Positions CSV"], ["json", "Summary JSON"], ["zip", "All (ZIP)"]],
  batch: [["csv", "Summary CSV"], ["zip", "Per-image files (ZIP)"], ["json", "Summary JSON"]],
};

function renderExports(job, kind) {
  $("motion-exports").replaceChildren(...EXPORTS[kind].map(([format, label]) => el("button", {
    type: "button", "data-job-export": format, onclick: () => fetchResult(job, format),
  }, label)));
}

async function fetchResult(job, format) {
  const response = await fetch(`${job.statusUrl}/result?format=${format}`, { headers: authHeaders() }).catch(() => null);
  if (!response || !response.ok) { say(explain(response ? response.status : 0, null), true); return; }
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = (disposition.match(/filename="?([^";]+)"?/) || [])[1] || `${job.name.replace(/\.[^.]+$/, "")}_${format}.${format === "json" ? "json" : format === "zip" ? "zip" : "csv"}`;
  download(await response.blob(), name);
}

// -- controls ------------------------------------------------------------------------------------------

async function play() {
  if (!view) return;
  view.playing = !view.playing;
  $("motion-play").textContent = view.playing ? "Pause" : "Play";
  $("motion-play").setAttribute("aria-pressed", String(view.playing));
  const current = view;
  while (current.playing && view === current) {
    const next = current.position + 1 >= current.stops.length ? 0 : current.position + 1;
    const started = performance.now();
    await showFrame(next);
    await new Promise((r) => setTimeout(r, Math.max(0, 125 - (performance.now() - started))));
  }
}

export function setupMotion() {
  $("frame-slider").addEventListener("input", () => showFrame(Number($("frame-slider").value)));
  $("show-tails").addEventListener("change", () => view && showFrame(view.position));
  $("motion-play").addEventListener("click", play);
  $("motion-close").addEventListener("click", close);
  $("long-input").addEventListener("change", (e) => { submitJobs(e.target.files); e.target.value = ""; });
  const drop = $("long-drop");
  for (const ev of ["dragover", "dragenter"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); submitJobs(e.dataTransfer.files); });
  document.addEventListener("keydown", (e) => {
    if (!view || $("motion-stage").hidden || e.target.closest("input, select, textarea, dialog, button")) return;
    if (e.key === "ArrowRight") { e.preventDefault(); showFrame(view.position + 1); }
    if (e.key === "ArrowLeft") { e.preventDefault(); showFrame(view.position - 1); }
    if (e.key === " ") { e.preventDefault(); play(); }
  });
  window.addEventListener("resize", () => view && view.stops.length && showFrame(view.position));
}
