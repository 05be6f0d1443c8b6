// Exports of the current result with the user's corrections (CSV, JSON, COCO, label and overlay
// PNGs) and the batch summary. Column names come from the server (/defaults), so a file exported
// here has the columns the API and the command line write.

import { ddpcr, describe, occupancy, volumePl } from "./analysis.js";
import { $, csvText, download, stem } from "./dom.js";
import { encodePng16 } from "./masks.js";
import { COLOURS, isKept, isPositive, state, umPerPx } from "./state.js";

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
  });
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
  if (kind === "overlay") download(await overlayPng(job), `${name}_overlay.png`);
}
