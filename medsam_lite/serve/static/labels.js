// The label map being built (one value per voxel, 0 = background), the labels' list with the boxes that made
// each, and an undo stack. Masks come from the server as runs (format=rle) and go back the same way.

const PALETTE = [
  [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240],
  [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200],
  [128, 0, 0], [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128], [128, 128, 128],
];
const UNDO_DEPTH = 12;

export function colourOf(label) {
  return PALETTE[(label - 1) % PALETTE.length];
}

// Runs {shape, values, lengths} -> a typed array of the values.
export function decodeRuns(rle) {
  const size = rle.shape.reduce((a, b) => a * b, 1);
  const out = new Uint16Array(size);
  let at = 0;
  for (let i = 0; i < rle.values.length; i++) {
    const n = rle.lengths[i];
    if (rle.values[i]) out.fill(rle.values[i], at, at + n);
    at += n;
  }
  return out;
}

export function encodeRuns(values, shape) {
  const runs = { shape, values: [], lengths: [] };
  let i = 0;
  while (i < values.length) {
    let j = i + 1;
    while (j < values.length && values[j] === values[i]) j++;
    runs.values.push(values[i]);
    runs.lengths.push(j - i);
    i = j;
  }
  return runs;
}

export class Labels {
  constructor(shape) {
    this.shape = shape; // [D, H, W] or [H, W]
    this.map = new Uint16Array(shape.reduce((a, b) => a * b, 1));
    this.entries = []; // {label, visible, boxes: [...]} in creation order
    this.undoStack = [];
  }

  nextLabel() {
    return this.entries.reduce((m, e) => Math.max(m, e.label), 0) + 1;
  }

  snapshot() {
    this.undoStack.push({ map: this.map.slice(), entries: structuredClone(this.entries) });
    if (this.undoStack.length > UNDO_DEPTH) this.undoStack.shift();
  }

  undo() {
    const last = this.undoStack.pop();
    if (!last) return false;
    this.map = last.map;
    this.entries = last.entries;
    return true;
  }

  // Paint `mask` (values > 0 mark the label's voxels) at `offset` of the map as `label`; later boxes win.
  paint(mask, offset, label, box) {
    for (let i = 0; i < mask.length; i++) if (mask[i]) this.map[offset + i] = label;
    let entry = this.entries.find((e) => e.label === label);
    if (!entry) {
      entry = { label, visible: true, boxes: [] };
      this.entries.push(entry);
    }
    if (box) entry.boxes.push(box);
  }

  // Replace everything by a whole label map (labels 1..N for boxes 0..N-1).
  replace(map, boxes) {
    this.map = map;
    this.entries = [];
    for (let i = 0; i < boxes.length; i++) this.entries.push({ label: i + 1, visible: true, boxes: [boxes[i]] });
  }

  remove(label) {
    for (let i = 0; i < this.map.length; i++) if (this.map[i] === label) this.map[i] = 0;
    this.entries = this.entries.filter((e) => e.label !== label);
  }

  visible(label) {
    const entry = this.entries.find((e) => e.label === label);
    return entry ? entry.visible : true;
  }
}
