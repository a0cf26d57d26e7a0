// The page: open an image, look through it, draw boxes, get masks, download them. Everything is computed by the
// service (the same pipeline as `medsam-lite predict`); the page shows and collects.

import { Api, ApiError } from "./api.js";
import { Labels, colourOf, decodeRuns, encodeRuns } from "./labels.js";

const PRESETS = { abdomen: [40, 400], lung: [-600, 1500], brain: [40, 80], bone: [400, 1800] };
const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const context = canvas.getContext("2d");

const state = {
  info: null, // ImageInfo from the server
  z: 0,
  depth: 1,
  height: 0,
  width: 0,
  channels: 1,
  level: 127.5,
  width_: 255,
  scale: 1,
  offset: [0, 0],
  slices: new Map(), // z -> Float32Array of stored values
  labels: null,
  opacity: 0.5,
  outline: false,
  drag: null, // {kind: 'box'|'window'|'pan', start: [x, y], ...}
  busy: false,
};
const timings = []; // {kind, ms, encoded}: mouse-up to mask drawn, measured with performance.now()
window.medsam = { state, timings, imageToClient, fileName: () => state.info && state.info.name };

const api = new Api(askToken);

function askToken() {
  return new Promise((resolve) => {
    const dialog = $("token-dialog");
    dialog.addEventListener("close", () => resolve($("token").value.trim()), { once: true });
    dialog.showModal();
  });
}

function showError(err) {
  const text = err instanceof ApiError ? err.message : `Something went wrong: ${err.message || err}`;
  $("error-text").textContent = text;
  $("error").hidden = false;
}

function status(text) {
  $("status").textContent = text;
}

function setBusy(text) {
  state.busy = Boolean(text);
  $("progress").hidden = !text;
  if (!text) return;
  const started = performance.now();
  const tick = () => {
    if (!state.busy) return;
    $("progress-text").textContent = `${text} (${((performance.now() - started) / 1000).toFixed(1)} s)`;
    requestAnimationFrame(tick);
  };
  tick();
}

// --- opening an image ---

async function open(file) {
  $("error").hidden = true;
  setBusy(`Uploading ${file.name}`);
  try {
    const info = await api.upload(file, $("modality").value);
    await show(info);
    status(`${info.name}: ${info.shape.join(" x ")}${info.is_3d ? " (3D)" : ""}, ${info.boxes.length} stored box(es). `
      + "Draw a box to segment.");
  } catch (err) {
    showError(err);
  } finally {
    setBusy("");
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

// --- drawing ---

async function sliceValues(z) {
  if (!state.slices.has(z)) {
    const { shape, values } = await api.pixels(state.info.id, z);
    state.channels = shape.length === 3 ? shape[2] : 1;
    state.slices.set(z, values);
    if (state.slices.size > 64) state.slices.delete(state.slices.keys().next().value);
  }
  return state.slices.get(z);
}

const offscreen = document.createElement("canvas");

function fit() {
  const box = canvas.getBoundingClientRect();
  canvas.width = Math.max(1, Math.round(box.width));
  canvas.height = Math.max(1, Math.round(box.height));
  if (!state.info) return;
  state.scale = Math.min(canvas.width / state.width, canvas.height / state.height);
  state.offset = [(canvas.width - state.width * state.scale) / 2, (canvas.height - state.height * state.scale) / 2];
}

function imageToClient(x, y) {
  // image pixel coordinates (x, y; a pixel's centre is +0.5) -> client (page) coordinates
  const box = canvas.getBoundingClientRect();
  return [box.left + (x * state.scale + state.offset[0]) * box.width / canvas.width,
    box.top + (y * state.scale + state.offset[1]) * box.height / canvas.height];
}

function clientToPixel(event) {
  const box = canvas.getBoundingClientRect();
  const cx = (event.clientX - box.left) * canvas.width / box.width;
  const cy = (event.clientY - box.top) * canvas.height / box.height;
  return [Math.floor((cx - state.offset[0]) / state.scale), Math.floor((cy - state.offset[1]) / state.scale)];
}

function clampPixel([x, y]) {
  return [Math.min(Math.max(x, 0), state.width - 1), Math.min(Math.max(y, 0), state.height - 1)];
}

async function render() {
  if (!state.info) return;
  const values = await sliceValues(state.z);
  const { width, height, channels } = state;
  offscreen.width = width;
  offscreen.height = height;
  const octx = offscreen.getContext("2d");
  const picture = octx.createImageData(width, height);
  const out = picture.data;
  const low = state.level - state.width_ / 2;
  const gain = 255 / state.width_;
  const plane = height * width;
  const labels = state.labels.map;
  const base = state.info.is_3d ? state.z * plane : 0;
  const alpha = state.opacity;
  const top = state.labels.entries.reduce((m, e) => Math.max(m, e.label), 0);
  const shown = new Uint8Array(top + 1);
  const colours = new Uint8Array((top + 1) * 3);
  for (const entry of state.labels.entries) {
    shown[entry.label] = entry.visible ? 1 : 0;
    colours.set(colourOf(entry.label), entry.label * 3);
  }
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      const v = channels === 3 ? values[i * 3 + c] : values[i];
      out[i * 4 + c] = Math.max(0, Math.min(255, (v - low) * gain));
    }
    out[i * 4 + 3] = 255;
    const label = labels[base + i];
    if (!label || label > top || !shown[label]) continue;
    if (state.outline) {
      const x = i % width;
      const y = (i - x) / width;
      const same = (j) => labels[base + j] === label;
      const inside = x > 0 && x < width - 1 && y > 0 && y < height - 1
        && same(i - 1) && same(i + 1) && same(i - width) && same(i + width);
      if (inside) continue;
    }
    const a = state.outline ? 1 : alpha;
    for (let c = 0; c < 3; c++) out[i * 4 + c] = (1 - a) * out[i * 4 + c] + a * colours[label * 3 + c];
  }
  octx.putImageData(picture, 0, 0);
  context.setTransform(1, 0, 0, 1, 0, 0);
  context.fillStyle = "#000";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.imageSmoothingEnabled = false;
  context.setTransform(state.scale, 0, 0, state.scale, state.offset[0], state.offset[1]);
  context.drawImage(offscreen, 0, 0);
  drawBoxes();
  $("slice").value = state.z;
  $("slice-number").textContent = `${state.z} / ${state.depth - 1}`;
  $("window-text").textContent = `L ${Math.round(state.level)} / W ${Math.round(state.width_)}`;
}

function strokeBox(x0, y0, x1, y1, colour, dashed) {
  context.save();
  context.setTransform(1, 0, 0, 1, 0, 0);
  context.strokeStyle = colour;
  context.lineWidth = 1.5;
  context.setLineDash(dashed ? [5, 4] : []);
  const s = state.scale;
  context.strokeRect(x0 * s + state.offset[0], y0 * s + state.offset[1], (x1 - x0 + 1) * s, (y1 - y0 + 1) * s);
  context.restore();
}

function drawBoxes() {
  const z = state.z;
  for (const b of state.info.boxes) { // stored boxes of the npz
    if (b.length === 4) strokeBox(b[0], b[1], b[2], b[3], "#ffffff", true);
    else if (b[2] <= z && z <= b[5]) strokeBox(b[0], b[1], b[3], b[4], "#ffffff", true);
  }
  for (const entry of state.labels.entries) {
    if (!entry.visible) continue;
    const [r, g, bl] = colourOf(entry.label);
    for (const b of entry.boxes) {
      if (b.length === 4) strokeBox(b[0], b[1], b[2], b[3], `rgb(${r},${g},${bl})`, false);
      else if (b[2] <= z && z <= b[5] && (b[2] === b[5] || b[6] === z)) strokeBox(b[0], b[1], b[3], b[4], `rgb(${r},${g},${bl})`, false);
    }
  }
  if (state.drag && state.drag.kind === "box") {
    const [a, b] = [state.drag.start, state.drag.now];
    strokeBox(Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1]), "#6cb6ff", false);
  }
}

function renderLabelList() {
  const list = $("labels");
  list.replaceChildren();
  for (const entry of state.labels.entries) {
    const item = document.createElement("li");
    const [r, g, b] = colourOf(entry.label);
    const boxes = entry.boxes.map((box) => `[${box.slice(0, box.length === 7 ? 6 : box.length).join(", ")}]`).join(" ");
    item.innerHTML = `<input type="checkbox" ${entry.visible ? "checked" : ""} title="show">`
      + `<span class="swatch" style="background: rgb(${r},${g},${b})"></span><span>${entry.label}</span>`
      + `<span class="boxes" title="${boxes}">${boxes}</span><button title="delete">×</button>`;
    item.querySelector("input").addEventListener("change", (e) => { entry.visible = e.target.checked; render(); });
    item.querySelector("button").addEventListener("click", () => {
      state.labels.snapshot();
      state.labels.remove(entry.label);
      afterEdit();
    });
    list.append(item);
  }
  $("undo").disabled = state.labels.undoStack.length === 0;
}

function afterEdit() {
  renderLabelList();
  return render();
}

// --- segmenting ---

async function segmentBox(box, releasedAt) {
  const labels = state.labels;
  const label = labels.nextLabel();
  const propagate = state.info.is_3d && $("propagate").checked;
  let body;
  let record;
  if (!state.info.is_3d) {
    body = { boxes: [box], labels: [1] };
    record = box;
  } else if (propagate) {
    const zMin = Math.min(Number($("z-min").value), state.z);
    const zMax = Math.max(Number($("z-max").value), state.z);
    body = { boxes: [{ z_min: zMin, z_max: zMax, z_mid: state.z, z_mid_x_min: box[0], z_mid_y_min: box[1],
      z_mid_x_max: box[2], z_mid_y_max: box[3] }] };
    record = [box[0], box[1], zMin, box[2], box[3], zMax, state.z];
    setBusy(`Propagating over slices ${zMin}–${zMax}`);
  } else {
    body = { boxes: [box], slice: state.z };
    record = [box[0], box[1], state.z, box[2], box[3], state.z, state.z];
  }
  try {
    const result = await api.segment(state.info.id, body);
    const mask = decodeRuns(result.rle);
    labels.snapshot();
    const offset = state.info.is_3d && !propagate ? state.z * state.height * state.width : 0;
    labels.paint(mask, offset, label, record);
    await afterEdit();
    const ms = performance.now() - releasedAt;
    timings.push({ kind: propagate ? "propagate" : "box", ms, encoded: result.encoded, server_ms: result.seconds * 1000 });
    status(`label ${label}: mask drawn ${ms.toFixed(0)} ms after the mouse was released `
      + `(${result.encoded ? "slice encoded" : "cached embedding"}, server ${(result.seconds * 1000).toFixed(0)} ms)`);
  } catch (err) {
    showError(err);
  } finally {
    setBusy("");
  }
}

async function segmentAll() {
  if (!state.info || !state.info.boxes.length) return;
  setBusy(`Segmenting ${state.info.boxes.length} stored box(es)`);
  try {
    const result = await api.segment(state.info.id, {});
    state.labels.snapshot();
    state.labels.replace(decodeRuns(result.rle), state.info.boxes.map((b) => (b.length === 6
      ? [...b, Math.floor((b[5] - b[2]) / 2 + b[2])] : b)));
    await afterEdit();
    status(`${state.info.boxes.length} box(es) segmented: ${result.encoded} slice(s) encoded, server `
      + `${result.seconds.toFixed(2)} s`);
  } catch (err) {
    showError(err);
  } finally {
    setBusy("");
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
  if (!state.info || state.busy) return;
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

function zoom(factor, event) {
  const box = canvas.getBoundingClientRect();
  const cx = event ? (event.clientX - box.left) * canvas.width / box.width : canvas.width / 2;
  const cy = event ? (event.clientY - box.top) * canvas.height / box.height : canvas.height / 2;
  state.offset = [cx - (cx - state.offset[0]) * factor, cy - (cy - state.offset[1]) * factor];
  state.scale *= factor;
  render();
}

function setSlice(z) {
  if (!state.info) return;
  state.z = Math.min(Math.max(z, 0), state.depth - 1);
  render();
}

function preset(name) {
  if (!state.info) return;
  if (name === "full") {
    const [lo, hi] = state.info.value_range;
    [state.level, state.width_] = [(lo + hi) / 2, Math.max(hi - lo, 1)];
  } else if (state.info.kind === "medical" && state.info.modality === "CT") {
    [state.level, state.width_] = PRESETS[name];
  }
  render();
}

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
