// Upload page: send the image to /segment_file and draw the droplets that come back.
"use strict";

const form = document.getElementById("upload-form");
const fileInput = document.getElementById("file");
const drop = document.getElementById("drop");
const statusLine = document.getElementById("status");
const runButton = document.getElementById("run");

function setStatus(text, isError) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", Boolean(isError));
}

["dragover", "dragenter"].forEach((ev) => drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((ev) => drop.addEventListener(ev, () => drop.classList.remove("over")));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  if (e.dataTransfer.files.length) fileInput.files = e.dataTransfer.files;
});

function fmt(v, digits) {
  return v === null || v === undefined ? "–" : Number(v).toFixed(digits);
}

function showSummary(data) {
  const s = data.summary;
  const unit = data.filters_applied.um_per_px ? "µm" : "px";
  const d = data.filters_applied.um_per_px ? s.diameter_um : s.diameter_px;
  const rows = [
    ["Segmenter", data.segmenter],
    [`Mean diameter (${unit})`, fmt(d.mean, 2)],
    [`Median diameter (${unit})`, fmt(d.median, 2)],
    [`SD (${unit})`, fmt(d.std, 2)],
    ["CV", d.cv === null ? "–" : (100 * d.cv).toFixed(1) + " %"],
    ["Removed by filters", String(data.removed.length)],
    ["Time", fmt(Object.values(data.timing_ms).reduce((a, b) => a + b, 0) / 1000, 2) + " s"],
  ];
  const table = document.getElementById("summary");
  table.replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement("tr");
    for (const text of [k, v]) { const td = document.createElement("td"); td.textContent = text; tr.appendChild(td); }
    return tr;
  }));
}

function draw(file, data) {
  const canvas = document.getElementById("view");
  const img = new Image();
  img.onload = () => {
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0);
    ctx.lineWidth = Math.max(1, Math.round(canvas.width / 800));
    for (const [list, color] of [[data.removed, "#e8453c"], [data.droplets, "#34c759"]]) {
      ctx.strokeStyle = color;
      for (const d of list) {
        ctx.beginPath();
        ctx.arc(d.centroid[0], d.centroid[1], d.equivalent_diameter_px / 2, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }
    URL.revokeObjectURL(img.src);
  };
  img.src = URL.createObjectURL(file);
}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const file = fileInput.files[0];
  if (!file) { setStatus("Choose an image first.", true); return; }
  const maxMb = Number(form.dataset.maxMb);
  if (file.size > maxMb * 1024 * 1024) { setStatus(`${file.name} is larger than ${maxMb} MB.`, true); return; }
  const body = new FormData(form);
  for (const [k, v] of [...body.entries()]) if (v === "") body.delete(k);
  runButton.disabled = true;
  const started = performance.now();
  const timer = setInterval(() => setStatus(`Analysing ${file.name}… ${((performance.now() - started) / 1000).toFixed(0)} s`), 500);
  try {
    const response = await fetch("/segment_file", { method: "POST", body });
    const data = await response.json().catch(() => null);
    if (!response.ok || !data || !data.success) {
      const message = data && data.error ? data.error.message : `HTTP ${response.status}`;
      throw new Error(message);
    }
    document.getElementById("count").textContent = data.num_droplets;
    showSummary(data);
    draw(file, data);
    document.getElementById("result").hidden = false;
    setStatus(`${file.name}: ${data.num_droplets} droplets.`);
  } catch (err) {
    setStatus(`${file.name}: ${err.message}`, true);
  } finally {
    clearInterval(timer);
    runButton.disabled = false;
  }
});
