// Exports of the current result with the user's corrections (CSV, JSON, COCO, label and overlay
// PNGs) and the batch summary. Column names come from the server (/defaults), so a file exported
// here has the columns the API and the command line write.

import { ddpcr, describe, occupancy, sizeDistribution, sizePopulations, volumePl } from "./analysis.js";
import { authHeaders, explain } from "./api.js";
import { $, csvText, download, say, stem } from "./dom.js";
import { crc32, encodePng16, outlineLoops } from "./masks.js";
import { COLOURS, isKept, isPositive, reasonOf, state, umPerPx } from "./state.js";

// The column lists (per droplet, calibrated, fluorescence, batch) the server defines once.
function columnsOf(kind) {
  const columns = state.defaults && state.defaults.columns;
  if (!columns) throw new Error("the server's column lists (/defaults) are not loaded");
  return columns[kind];
}

function calibrated(r, s) {
  const d = r.equivalent_diameter_px * s;
  return {
    area_um2: r.area_px * s * s, perimeter_um: r.perimeter_px * s, equivalent_diameter_um: d, max_feret_um: r.max_feret_px * s,
    min_feret_um: r.min_feret_px * s, min_edge_distance_um: r.min_edge_distance_px * s, volume_pl: volumePl(d),
  };
}

// One cell of the per-droplet CSV: the record's value under the server's column name.
const CELLS = {
  centroid_x_px: (r) => r.centroid[0], centroid_y_px: (r) => r.centroid[1],
  bbox_x_px: (r) => r.bbox[0], bbox_y_px: (r) => r.bbox[1], bbox_w_px: (r) => r.bbox[2], bbox_h_px: (r) => r.bbox[3],
  area_px2: (r) => r.area_px, touches_edge: (r) => Number(r.touches_edge), source: (r) => (r.added ? "manual" : r.source),
};

function exportRecord(job, r) {
  const { crop, path, added, ...rec } = r; // eslint-disable-line no-unused-vars -- dropped from the export
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
  const base = columnsOf("droplet");
  const calCols = s ? columnsOf("calibrated") : [];
  const flCols = fl ? columnsOf("fluorescence") : [];
  const rows = job.kept.map((r) => {
    const cal = s ? calibrated(r, s) : {};
    return [
      ...base.map((c) => (CELLS[c] ? CELLS[c](r) : r[c])),
      ...calCols.map((c) => +cal[c].toFixed(6)),
      ...flCols.map((c) => (c === "positive" ? Number(isPositive(job, r)) : r[c])),
    ];
  });
  return new Blob([csvText([[...base, ...calCols, ...flCols], ...rows])], { type: "text/csv" });
}

// The batch-summary row of one image, with the user's corrections, in the server's batch columns.
function summaryRow(job) {
  const row = { file: job.name, error: job.status === "error" ? job.message : null };
  if (!job.result) return row;
  const s = umPerPx();
  const d = describe(job.kept.map((r) => r.equivalent_diameter_px));
  Object.assign(row, {
    segmenter: job.result.segmenter, droplets: job.kept.length,
    removed_by_filters: job.records.filter((r) => !isKept(job, r) && !job.excluded.has(r.id)).length,
    removed_by_you: job.excluded.size, added_by_you: job.records.filter((r) => r.added).length,
    um_per_px: s, diameter_mean_px: d.mean, diameter_median_px: d.median, diameter_sd_px: d.std, cv: d.cv,
    diameter_mean_um: s && d.mean ? d.mean * s : null, diameter_median_um: s && d.median ? d.median * s : null,
    volume_mean_pl: s ? describe(job.kept.map((r) => volumePl(r.equivalent_diameter_px * s))).mean : null,
    seconds: job.finished && job.started ? (job.finished - job.started) / 1000 : null,
    calibration: s ? (state.calibration && state.calibration.source === "file" ? "file" : "request") : "none",
  });
  const size = sizeDistribution(job.kept.map((r) => r.equivalent_diameter_px * (s || 1)), s ? "um" : "px");
  Object.assign(row, { size_unit: size.unit, dn10: size.dn10, dn50: size.dn50, dn90: size.dn90, dv10: size.dv10, dv50: size.dv50, dv90: size.dv90, span: size.span, d32: size.d32, d43: size.d43 });
  row.populations = sizePopulationsCount(job);
  if (job.records.some((r) => r.contents)) {
    const occ = occupancy(job.kept.map((r) => (r.contents ? r.contents.count : 0)));
    Object.assign(row, { contents_mean: occ.mean, contents_0: occ.observed[0], contents_1: occ.observed[1], contents_2: occ.observed[2], contents_3plus: occ.observed[3] });
  }
  const fl = job.result.summary.fluorescence;
  if (fl) {
    const k = job.kept.filter((r) => isPositive(job, r)).length;
    const q = ddpcr(job.kept.length, k, row.volume_mean_pl);
    const occ = occupancy(job.kept.map((r) => r.objects || 0));
    const auto = job.threshold === job.autoThreshold;
    Object.assign(row, {
      fl_threshold: job.threshold, threshold_method: auto ? fl.call.method : "user", ambiguous: auto ? fl.call.ambiguous : null,
      positive: k, p: q.p, lambda: q.lambda, lambda_ci_low: q.lambda_ci && q.lambda_ci[0], lambda_ci_high: q.lambda_ci && q.lambda_ci[1],
      copies_per_ul: q.copies_per_ul, copies_per_ul_ci_low: q.copies_per_ul_ci && q.copies_per_ul_ci[0], copies_per_ul_ci_high: q.copies_per_ul_ci && q.copies_per_ul_ci[1],
      objects_mean: occ.mean, droplets_0: occ.observed[0], droplets_1: occ.observed[1], droplets_2: occ.observed[2], droplets_3plus: occ.observed[3],
    });
  }
  return row;
}

function sizePopulationsCount(job) {
  const s = umPerPx();
  return sizePopulations(job.kept.map((r) => r.equivalent_diameter_px * (s || 1)), s ? "um" : "px").length;
}

// -- ImageJ / Fiji ROIs ---------------------------------------------------------------------------------

// One polygon ROI in ImageJ's format (version 228, big-endian): vertices at pixel corners, so
// ImageJ's fill (pixel centres inside) gives back the droplet's pixels; named by the droplet's id.
function roiBytes(points, name) {
  const n = points.length;
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const left = Math.min(...xs);
  const top = Math.min(...ys);
  const header2 = 64 + 4 * n;
  const out = new Uint8Array(header2 + 64 + 2 * name.length);
  const v = new DataView(out.buffer);
  out.set([73, 111, 117, 116], 0); // "Iout"
  v.setInt16(4, 228);
  out[6] = 0; // polygon
  v.setInt16(8, top);
  v.setInt16(10, left);
  v.setInt16(12, Math.max(...ys));
  v.setInt16(14, Math.max(...xs));
  v.setUint16(16, n);
  v.setInt32(60, header2);
  points.forEach(([x, y], i) => { v.setInt16(64 + 2 * i, x - left); v.setInt16(64 + 2 * n + 2 * i, y - top); });
  v.setInt32(header2 + 16, header2 + 64); // name offset
  v.setInt32(header2 + 20, name.length); // name length in UTF-16 characters
  for (let i = 0; i < name.length; i++) v.setUint16(header2 + 64 + 2 * i, name.charCodeAt(i));
  return out;
}

// A ZIP of stored (uncompressed) files: what ImageJ's ROI Manager opens.
function zipStore(files) {
  const enc = new TextEncoder();
  const parts = [];
  const central = [];
  let offset = 0;
  for (const { name, data } of files) {
    const fname = enc.encode(name);
    const crc = crc32(data);
    const local = new Uint8Array(30 + fname.length);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(4, 20, true);
    lv.setUint32(14, crc, true);
    lv.setUint32(18, data.length, true);
    lv.setUint32(22, data.length, true);
    lv.setUint16(26, fname.length, true);
    local.set(fname, 30);
    const entry = new Uint8Array(46 + fname.length);
    const cv = new DataView(entry.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 20, true);
    cv.setUint16(6, 20, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, data.length, true);
    cv.setUint32(24, data.length, true);
    cv.setUint16(28, fname.length, true);
    cv.setUint32(42, offset, true);
    entry.set(fname, 46);
    parts.push(local, data);
    central.push(entry);
    offset += local.length + data.length;
  }
  const size = central.reduce((a, e) => a + e.length, 0);
  const end = new Uint8Array(22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, files.length, true);
  ev.setUint16(10, files.length, true);
  ev.setUint32(12, size, true);
  ev.setUint32(16, offset, true);
  return new Blob([...parts, ...central, end], { type: "application/zip" });
}

function imagejZip(job) {
  const files = [];
  for (const r of job.kept) {
    const loops = outlineLoops(r.crop, 0);
    if (!loops.length) continue;
    const outer = loops.reduce((a, b) => (b.length > a.length ? b : a));
    files.push({ name: `${r.id}.roi`, data: roiBytes(outer, String(r.id)) });
  }
  return zipStore(files);
}

// -- PDF reports (drawn by the server from what the page keeps) ------------------------------------------

async function overlayDataUrl(job, side = 900) {
  const { width, height } = job.result.image;
  const scale = Math.min(1, side / Math.max(width, height));
  const canvas = new OffscreenCanvas(Math.max(1, Math.round(width * scale)), Math.max(1, Math.round(height * scale)));
  const ctx = canvas.getContext("2d");
  ctx.scale(scale, scale);
  ctx.drawImage(job.bitmap, 0, 0);
  ctx.lineWidth = Math.max(1, 1.5 / scale);
  for (const r of job.kept) {
    ctx.strokeStyle = isPositive(job, r) ? COLOURS.positive : r.added ? COLOURS.added : COLOURS.kept;
    ctx.stroke(r.path);
  }
  const blob = await canvas.convertToBlob({ type: "image/jpeg", quality: 0.85 });
  return new Promise((resolve) => { const reader = new FileReader(); reader.onload = () => resolve(reader.result); reader.readAsDataURL(blob); });
}

async function reportImage(job) {
  const fl = job.result.summary.fluorescence;
  const auto = job.threshold === job.autoThreshold;
  const removed = {};
  for (const r of job.records) if (!isKept(job, r)) { const why = reasonOf(job, r).replace("removed: ", ""); removed[why] = (removed[why] || 0) + 1; }
  const c = state.calibration;
  return {
    file_name: job.name,
    diameters_px: job.kept.map((r) => r.equivalent_diameter_px),
    um_per_px: umPerPx(),
    calibration: umPerPx() ? (c && c.source === "file" ? "file" : "page") : "none",
    overlay: await overlayDataUrl(job),
    positive: fl ? job.kept.map((r) => isPositive(job, r)) : null,
    threshold: fl ? { threshold: job.threshold, method: auto ? fl.call.method : "user" } : null,
    objects: fl ? job.kept.map((r) => r.objects || 0) : null,
    contents: job.records.some((r) => r.contents) ? job.kept.map((r) => (r.contents ? r.contents.count : 0)) : null,
    settings: { segmenter: job.result.segmenter, preset: $("preset").value, corrections: `${job.excluded.size} removed, ${job.records.filter((r) => r.added).length} added by hand` },
    removed,
  };
}

async function requestReport(jobs, name) {
  say(`Making the report of ${jobs.length} image(s)…`);
  const images = [];
  for (const job of jobs) images.push(await reportImage(job));
  let response;
  try {
    response = await fetch("/report", { method: "POST", headers: { "Content-Type": "application/json", ...authHeaders() }, body: JSON.stringify({ images }) });
  } catch {
    say(explain(0), true);
    return;
  }
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    say(explain(response.status, body, response.headers.get("Retry-After")), true);
    return;
  }
  download(await response.blob(), name);
  say(`Report of ${jobs.length} image(s) ready.`);
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

export async function exportAs(kind) {
  const job = state.current;
  if (kind === "batch-report") {
    await requestReport(state.jobs.filter((j) => j.result), "sam_droplet_batch_report.pdf");
    return;
  }
  if (kind === "batch") {
    // Every image analysed or failed, in the columns of the command line's summary.csv.
    const rows = state.jobs.filter((j) => j.result || j.status === "error").map(summaryRow);
    const keys = columnsOf("batch");
    const cell = (v) => (typeof v === "number" ? +v.toPrecision(8) : v);
    download(new Blob([csvText([keys, ...rows.map((r) => keys.map((k) => cell(r[k])))])], { type: "text/csv" }), "sam_droplet_batch_summary.csv");
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
  if (kind === "imagej") download(imagejZip(job), `${name}_rois.zip`);
  if (kind === "report") await requestReport([job], `${name}_report.pdf`);
  if (kind === "overlay") download(await overlayPng(job), `${name}_overlay.png`);
}
