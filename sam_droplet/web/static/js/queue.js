// The queue: images sent one after another to /segment_file, each with its progress, elapsed time,
// cancel and retry. What happens to a finished segmentation is the workbench's (hooks.segmented).

import { askForKey, authHeaders, explain } from "./api.js";
import { $, el, say } from "./dom.js";
import { MAX_MB, autoFilters, detectionHints, filtersForServer, state, umPerPx } from "./state.js";

// Set by the page: what to do with a segmentation the server answered (prepare it), and how to
// show a finished one.
export const hooks = { segmented: async (_job, _body) => {}, show: (_job) => {} };

export function addFiles(files) {
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

export function renderJobs() {
  const list = $("job-list");
  list.replaceChildren(...state.jobs.map((job) => {
    const li = el("li", { class: `job ${job.status}${state.current === job ? " current" : ""}`, "data-job": job.id });
    const placeholder = () => el("span", { class: "thumb none", text: job.name.split(".").pop().toUpperCase() });
    const thumb = job.thumb ? el("img", { src: job.thumb, alt: "", class: "thumb" }) : placeholder();
    if (job.thumb) thumb.addEventListener("error", () => { job.thumb = null; thumb.replaceWith(placeholder()); });
    const open = el("button", { type: "button", class: "job-name link", disabled: !job.result, title: job.name, onclick: () => hooks.show(job) }, job.name);
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
  $("export-batch-report").disabled = !state.jobs.some((j) => j.result);
}

export function statusText(job) {
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

export function requeue(job) {
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
    form.append("detector", $("detector").value);
    form.append("preset", $("preset").value);
    job.hints = detectionHints($("preset").value);
    if (!autoFilters()) form.append("filters", JSON.stringify(filtersForServer())); // auto: the server chooses
    if (umPerPx()) form.append("um_per_px", String(umPerPx()));
    if ($("contents").checked) form.append("contents", "true");
    if (job.flFile) form.append("threshold_method", $("threshold-method").value);
    if (job.flFile || $("contents").checked || $("preset").value === "droplets_with_contents") {
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
          await hooks.segmented(job, body);
          job.status = "done";
          if (!state.current || state.current.status !== "done" || state.current === job) hooks.show(job);
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
