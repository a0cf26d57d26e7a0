// The page: open an image, look through it, draw boxes, get masks, download them. Everything is computed by the
// service (the same pipeline as `medsam-lite predict`); the page shows and collects.

import { Labels, decodeRuns, encodeRuns } from "./labels.js";
import { $, api, showError, state } from "./state.js";
import { PRESETS, afterEdit, clampPixel, clientToPixel, fit, imageToClient, preset, render, renderLabelList, setSlice, zoom }
  from "./view.js";

const canvas = $("canvas");
const timings = []; // {kind, ms, encoded}: mouse-up to mask drawn, measured with performance.now()
window.medsam = { state, timings, imageToClient, fileName: () => state.info && state.info.name };

function status(text) {
  $("status").textContent = text;
}

// The job the progress line shows (an upload, a propagation, stored boxes): drawing waits for it. Opening another
// image starts a job of its own, and what a job of the image before brings back is dropped (its masks are not
// this image's).
let busyJob = null;

function startBusy(text) {
  const job = { text, started: performance.now() };
  busyJob = job;
  $("progress").hidden = false;
  const tick = () => {
    if (busyJob !== job) return;
    $("progress-text").textContent = `${text} (${((performance.now() - job.started) / 1000).toFixed(1)} s)`;
    requestAnimationFrame(tick);
  };
  tick();
  return job;
}

function endBusy(job) {
  if (busyJob !== job) return;
  busyJob = null;
  $("progress").hidden = true;
}

// --- opening an image ---

async function open(file) {
  $("error").hidden = true;
  const job = startBusy(`Uploading ${file.name}`);
  try {
    const info = await api.upload(file, $("modality").value);
    if (busyJob !== job) return; // another file was opened meanwhile
    await show(info);
    status(`${info.name}: ${info.shape.join(" x ")}${info.is_3d ? " (3D)" : ""}, ${info.boxes.length} stored box(es). `
      + "Draw a box to segment.");
  } catch (err) {
    if (busyJob === job) showError(err);
  } finally {
    endBusy(job);
  }
}

async function show(info) {
  state.info = info;
  state.slices.clear();
  state.depth = info.is_3d ? info.shape[0] : 1;
  state.height = info.is_3d ? info.shape[1] : info.shape[0];
  state.width = info.is_3d ? info.shape[2] : info.shape[1];
  state.z = info.is_3d ? Math.floor(state.depth / 2) : 0;
  const stored = info.boxes.filter((b) => b.length === 6);
  if (stored.length) state.z = Math.floor((stored[0][2] + stored[0][5]) / 2);
  state.labels = new Labels(info.is_3d ? [state.depth, state.height, state.width] : [state.height, state.width]);
  const [lo, hi] = info.value_range;
  const hu = info.kind === "medical" && info.modality === "CT";
  [state.level, state.width_] = hu ? PRESETS.abdomen : [(lo + hi) / 2, Math.max(hi - lo, 1)];
  $("name").textContent = info.name;
  $("slice-row").hidden = !info.is_3d;
  $("propagate-row").hidden = !info.is_3d;
  $("slice").max = state.depth - 1;
  $("z-min").max = $("z-max").max = state.depth - 1;
  $("z-min").value = 0;
  $("z-max").value = state.depth - 1;
  $("segment-all").disabled = info.boxes.length === 0;
  $("download-menu").disabled = false;
  document.querySelector('[data-download="nifti"]').disabled = !(info.geometry || info.spacing);
  document.querySelector('[data-download="png"]').disabled = info.is_3d;
  for (const button of document.querySelectorAll("#presets button")) button.disabled = !hu && button.dataset.preset !== "full";
  fit();
  await render();
  renderLabelList();
}

// --- segmenting ---

// Segment a drawn box on the slice it was drawn on; several may be on their way at once (each gets its label when
// its mask arrives). A reply for an image no longer on screen is dropped.
async function segmentBox(box, releasedAt) {
  const image = state.info;
  const z = state.z;
  const propagate = image.is_3d && $("propagate").checked;
  let body;
  let record;
  let job = null;
  if (!image.is_3d) {
    body = { boxes: [box], labels: [1] };
    record = box;
  } else if (propagate) {
    const zMin = Math.min(Number($("z-min").value), z);
    const zMax = Math.max(Number($("z-max").value), z);
    body = { boxes: [{ z_min: zMin, z_max: zMax, z_mid: z, z_mid_x_min: box[0], z_mid_y_min: box[1],
      z_mid_x_max: box[2], z_mid_y_max: box[3] }] };
    record = [box[0], box[1], zMin, box[2], box[3], zMax, z];
    job = startBusy(`Propagating over slices ${zMin}–${zMax}`);
  } else {
    body = { boxes: [box], slice: z };
    record = [box[0], box[1], z, box[2], box[3], z, z];
  }
  try {
    const result = await api.segment(image.id, body);
    if (state.info !== image) return;
    const mask = decodeRuns(result.rle);
    const labels = state.labels;
    const label = labels.nextLabel();
    labels.snapshot();
    const offset = image.is_3d && !propagate ? z * state.height * state.width : 0;
    labels.paint(mask, offset, label, record);
    await afterEdit();
    const ms = performance.now() - releasedAt;
    timings.push({ kind: propagate ? "propagate" : "box", ms, encoded: result.encoded, server_ms: result.seconds * 1000 });
    status(`label ${label}: mask drawn ${ms.toFixed(0)} ms after the mouse was released `
      + `(${result.encoded ? "slice encoded" : "cached embedding"}, server ${(result.seconds * 1000).toFixed(0)} ms)`);
  } catch (err) {
    if (state.info === image) showError(err);
  } finally {
    if (job) endBusy(job);
  }
}

async function segmentAll() {
  const image = state.info;
  if (!image || !image.boxes.length || busyJob) return;
  const job = startBusy(`Segmenting ${image.boxes.length} stored box(es)`);
  try {
    const result = await api.segment(image.id, {});
    if (state.info !== image) return;
    state.labels.snapshot();
    state.labels.replace(decodeRuns(result.rle), image.boxes.map((b) => (b.length === 6
      ? [...b, Math.floor((b[5] - b[2]) / 2 + b[2])] : b)));
    await afterEdit();
    status(`${image.boxes.length} box(es) segmented: ${result.encoded} slice(s) encoded, server `
      + `${result.seconds.toFixed(2)} s`);
  } catch (err) {
    if (state.info === image) showError(err);
  } finally {
    endBusy(job);
  }
}

// --- downloads ---

function save(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

function stem() {
  return state.info.name.replace(/\.(npz|nii\.gz|nii|nrrd|nhdr|mha|mhd|dcm|zip|png|jpe?g|bmp|tiff?)$/i, "");
}

async function download(kind) {
  $("downloads").hidden = true;
  if (!state.info) return;
  try {
    if (kind === "boxes") {
      const boxes = [];
      const labels = [];
      const middles = [];
      for (const entry of state.labels.entries) {
        for (const b of entry.boxes) {
          boxes.push(b.slice(0, b.length === 7 ? 6 : 4));
          labels.push(entry.label);
          if (b.length === 7) middles.push(b[6]);
        }
      }
      const record = state.info.is_3d ? { boxes, labels, z_mid: middles } : { boxes, labels };
      save(new Blob([JSON.stringify(record, null, 1)], { type: "application/json" }), `${stem()}.json`);
      return;
    }
    const runs = encodeRuns(state.labels.map, state.labels.shape);
    const blob = await api.exportLabels(state.info.id, runs, kind);
    const name = kind === "npz" ? (state.info.name.endsWith(".npz") ? state.info.name : `${stem()}.npz`)
      : kind === "nifti" ? `${stem()}.nii.gz` : `${stem()}.png`;
    save(blob, name);
  } catch (err) {
    showError(err);
  }
}

// --- input ---

canvas.addEventListener("contextmenu", (e) => e.preventDefault());
canvas.addEventListener("pointerdown", (e) => {
  if (!state.info || busyJob) return;
  canvas.setPointerCapture(e.pointerId);
  const kind = e.button === 1 || e.altKey ? "pan" : e.button === 2 || e.shiftKey ? "window" : "box";
  state.drag = { kind, start: clampPixel(clientToPixel(e)), now: clampPixel(clientToPixel(e)), client: [e.clientX, e.clientY],
    level: state.level, width: state.width_, offset: [...state.offset] };
  e.preventDefault();
});
canvas.addEventListener("pointermove", (e) => {
  const drag = state.drag;
  if (!drag) return;
  const dx = e.clientX - drag.client[0];
  const dy = e.clientY - drag.client[1];
  if (drag.kind === "box") drag.now = clampPixel(clientToPixel(e));
  else if (drag.kind === "window") {
    const step = Math.max(drag.width, 1) / 200;
    state.width_ = Math.max(1, drag.width + dx * step);
    state.level = drag.level - dy * step;
  } else state.offset = [drag.offset[0] + dx, drag.offset[1] + dy];
  render();
});
canvas.addEventListener("pointerup", (e) => {
  const drag = state.drag;
  if (!drag) return;
  const releasedAt = performance.now();
  state.drag = null;
  if (drag.kind !== "box") return;
  const [a, b] = [drag.start, clampPixel(clientToPixel(e))];
  const box = [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
  if (box[2] - box[0] < 1 || box[3] - box[1] < 1) { render(); return; }
  segmentBox(box, releasedAt);
});
canvas.addEventListener("wheel", (e) => {
  if (!state.info) return;
  e.preventDefault();
  if (e.ctrlKey || !state.info.is_3d) zoom(e.deltaY < 0 ? 1.15 : 1 / 1.15, e);
  else setSlice(state.z + (e.deltaY > 0 ? 1 : -1));
}, { passive: false });

$("file").addEventListener("change", (e) => { if (e.target.files[0]) open(e.target.files[0]); e.target.value = ""; });
$("slice").addEventListener("input", (e) => setSlice(Number(e.target.value)));
$("opacity").addEventListener("input", (e) => { state.opacity = Number(e.target.value) / 100; render(); });
$("outline").addEventListener("change", (e) => { state.outline = e.target.checked; render(); });
$("fit").addEventListener("click", () => { fit(); render(); });
$("zoom-in").addEventListener("click", () => zoom(1.25));
$("zoom-out").addEventListener("click", () => zoom(0.8));
$("segment-all").addEventListener("click", segmentAll);
$("undo").addEventListener("click", () => { if (state.labels && state.labels.undo()) afterEdit(); });
$("download-menu").addEventListener("click", () => { $("downloads").hidden = !$("downloads").hidden; });
for (const button of document.querySelectorAll("[data-download]")) {
  button.addEventListener("click", () => download(button.dataset.download));
}
for (const button of document.querySelectorAll("[data-preset]")) button.addEventListener("click", () => preset(button.dataset.preset));
$("help-button").addEventListener("click", () => $("help").showModal());
$("error-close").addEventListener("click", () => { $("error").hidden = true; });
window.addEventListener("resize", () => { fit(); render(); });

document.addEventListener("dragover", (e) => { e.preventDefault(); $("drop").hidden = false; });
document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) $("drop").hidden = true; });
document.addEventListener("drop", (e) => {
  e.preventDefault();
  $("drop").hidden = true;
  if (e.dataTransfer.files[0]) open(e.dataTransfer.files[0]);
});

document.addEventListener("keydown", (e) => {
  if (e.target instanceof HTMLInputElement && e.target.type !== "range" && e.target.type !== "checkbox") return;
  const key = e.key;
  if ((e.ctrlKey || e.metaKey) && key.toLowerCase() === "z") {
    e.preventDefault();
    if (state.labels && state.labels.undo()) afterEdit();
  } else if (["ArrowUp", "ArrowRight", "PageUp"].includes(key)) { e.preventDefault(); setSlice(state.z + 1); }
  else if (["ArrowDown", "ArrowLeft", "PageDown"].includes(key)) { e.preventDefault(); setSlice(state.z - 1); }
  else if (key === "+" || key === "=") zoom(1.25);
  else if (key === "-") zoom(0.8);
  else if (key === "f" || key === "F") { fit(); render(); }
  else if (key === "o" || key === "O") { $("outline").checked = !$("outline").checked; state.outline = $("outline").checked; render(); }
  else if (key === "p" || key === "P") $("propagate").checked = !$("propagate").checked;
  else if (key === "a" || key === "A") segmentAll();
  else if (key === "?") $("help").showModal();
  else if (key === "Delete" && state.labels && state.labels.entries.length) {
    state.labels.snapshot();
    state.labels.remove(state.labels.entries[state.labels.entries.length - 1].label);
    afterEdit();
  } else if ("12345".includes(key) && key.length === 1) preset(["abdomen", "lung", "brain", "bone", "full"][Number(key) - 1]);
});

fit();
api.json("/v1/info").then((info) => status(`Connected: ${info.model}. Open an image to start.`)).catch(showError);
