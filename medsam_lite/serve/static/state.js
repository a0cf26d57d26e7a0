// What the page holds (the image on screen, how it is shown, its labels), its connection to the service, and the
// line that tells the user what went wrong.

import { Api, ApiError } from "./api.js";

export const $ = (id) => document.getElementById(id);

export const state = {
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
};

export const api = new Api(askToken);

function askToken() {
  return new Promise((resolve) => {
    const dialog = $("token-dialog");
    dialog.addEventListener("close", () => resolve($("token").value.trim()), { once: true });
    dialog.showModal();
  });
}

export function showError(err) {
  const text = err instanceof ApiError ? err.message : `Something went wrong: ${err.message || err}`;
  $("error-text").textContent = text;
  $("error").hidden = false;
}
