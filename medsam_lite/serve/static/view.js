// Drawing the slice on screen: its stored values through the window/level, the labels over them, the boxes; and
// the mapping between image pixels and the canvas (fit, zoom, pan, slice).

import { $, api, showError, state } from "./state.js";
import { colourOf } from "./labels.js";

export const PRESETS = { abdomen: [40, 400], lung: [-600, 1500], brain: [40, 80], bone: [400, 1800] };
const canvas = $("canvas");
const context = canvas.getContext("2d");

// Slice z of the image on screen, or null when another image was opened while it came.
async function sliceValues(z) {
  if (!state.slices.has(z)) {
    const image = state.info;
    const { shape, values } = await api.pixels(image.id, z);
    if (state.info !== image) return null;
    state.channels = shape.length === 3 ? shape[2] : 1;
    state.slices.set(z, values);
    if (state.slices.size > 64) state.slices.delete(state.slices.keys().next().value);
  }
  return state.slices.get(z);
}

const offscreen = document.createElement("canvas");

export function fit() {
  const box = canvas.getBoundingClientRect();
  canvas.width = Math.max(1, Math.round(box.width));
  canvas.height = Math.max(1, Math.round(box.height));
  if (!state.info) return;
  state.scale = Math.min(canvas.width / state.width, canvas.height / state.height);
  state.offset = [(canvas.width - state.width * state.scale) / 2, (canvas.height - state.height * state.scale) / 2];
}

export function imageToClient(x, y) {
  // image pixel coordinates (x, y; a pixel's centre is +0.5) -> client (page) coordinates
  const box = canvas.getBoundingClientRect();
  return [box.left + (x * state.scale + state.offset[0]) * box.width / canvas.width,
    box.top + (y * state.scale + state.offset[1]) * box.height / canvas.height];
}

export function clientToPixel(event) {
  const box = canvas.getBoundingClientRect();
  const cx = (event.clientX - box.left) * canvas.width / box.width;
  const cy = (event.clientY - box.top) * canvas.height / box.height;
  return [Math.floor((cx - state.offset[0]) / state.scale), Math.floor((cy - state.offset[1]) / state.scale)];
}

export function clampPixel([x, y]) {
  return [Math.min(Math.max(x, 0), state.width - 1), Math.min(Math.max(y, 0), state.height - 1)];
}

export async function render() {
  if (!state.info) return;
  const z = state.z;
  let values;
  try {
    values = await sliceValues(z);
  } catch (err) { // the server went away, or forgot the image: said, and the slice on screen stays
    showError(err);
    return;
  }
  if (values === null || z !== state.z) return; // a later render draws what is on screen now
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
  const base = state.info.is_3d ? z * plane : 0;
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

export function renderLabelList() {
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

export function afterEdit() {
  renderLabelList();
  return render();
}

export function zoom(factor, event) {
  const box = canvas.getBoundingClientRect();
  const cx = event ? (event.clientX - box.left) * canvas.width / box.width : canvas.width / 2;
  const cy = event ? (event.clientY - box.top) * canvas.height / box.height : canvas.height / 2;
  state.offset = [cx - (cx - state.offset[0]) * factor, cy - (cy - state.offset[1]) * factor];
  state.scale *= factor;
  render();
}

export function setSlice(z) {
  if (!state.info) return;
  state.z = Math.min(Math.max(z, 0), state.depth - 1);
  render();
}

export function preset(name) {
  if (!state.info) return;
  if (name === "full") {
    const [lo, hi] = state.info.value_range;
    [state.level, state.width_] = [(lo + hi) / 2, Math.max(hi - lo, 1)];
  } else if (state.info.kind === "medical" && state.info.modality === "CT") {
    [state.level, state.width_] = PRESETS[name];
  }
  render();
}
