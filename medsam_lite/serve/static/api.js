// The service's native API, with the token of `serve --token` (asked once, kept for the session) and errors
// turned into sentences a person can act on.

const TOKEN_KEY = "medsam-lite-token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function plainWords(status, detail) {
  if (status === 413) return `Too large: ${detail}`;
  if (status === 415) return `Not a file this server reads: ${detail}`;
  if (status === 422) return `The server could not use it: ${detail}`;
  if (status === 503) return `The server cannot take it now (${detail}); try again in a moment.`; // busy or stopping
  if (status === 404) return `Not found on the server: ${detail}`;
  if (status === 507) return `Not kept: ${detail}`; // its disk is full
  if (status === 401) return "The server needs its token.";
  return `The server answered ${status}: ${detail}`;
}

export class Api {
  constructor(askToken) {
    this.askToken = askToken; // async () => token string
    this.token = sessionStorage.getItem(TOKEN_KEY) || "";
  }

  async request(path, options = {}, retried = false) {
    const headers = new Headers(options.headers || {});
    if (this.token) headers.set("Authorization", `Bearer ${this.token}`);
    let reply;
    try {
      reply = await fetch(path, { ...options, headers });
    } catch (err) {
      throw new ApiError(0, `Cannot reach the server (${err.message}).`);
    }
    if (reply.status === 401 && !retried) {
      this.token = await this.askToken();
      sessionStorage.setItem(TOKEN_KEY, this.token);
      return this.request(path, options, true);
    }
    if (!reply.ok) {
      let detail = reply.statusText;
      try {
        detail = (await reply.json()).detail || detail;
      } catch (_) { /* not JSON */ }
      throw new ApiError(reply.status, plainWords(reply.status, detail));
    }
    return reply;
  }

  async json(path, body) {
    const options = body === undefined ? {} : {
      method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" },
    };
    return (await this.request(path, options)).json();
  }

  // modality: "" (from the file's metadata) or CT, MR, other, raw
  async upload(file, modality = "") {
    const form = new FormData();
    form.append("file", file, file.name);
    const query = modality ? `?modality=${encodeURIComponent(modality)}` : "";
    return (await this.request(`/v1/images${query}`, { method: "POST", body: form })).json();
  }

  async pixels(id, z) {
    const reply = await this.request(`/v1/images/${id}/pixels?z=${z}`);
    const shape = reply.headers.get("X-Shape").split(",").map(Number);
    return { shape, values: new Float32Array(await reply.arrayBuffer()) };
  }

  // Segment with boxes; returns { rle, encoded, cached, seconds } (rle as the server's format=rle).
  async segment(id, body) {
    const reply = await this.request(`/v1/images/${id}/segment?format=rle`, {
      method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" },
    });
    return {
      rle: await reply.json(),
      encoded: Number(reply.headers.get("X-Slices-Encoded")),
      cached: Number(reply.headers.get("X-Slices-Cached")),
      seconds: Number(reply.headers.get("X-Compute-Seconds")),
    };
  }

  async exportLabels(id, rle, format) {
    const reply = await this.request(`/v1/images/${id}/export?format=${format}`, {
      method: "POST", body: JSON.stringify(rle), headers: { "Content-Type": "application/json" },
    });
    return reply.blob();
  }
}
