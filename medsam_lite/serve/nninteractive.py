"""nnInteractive's remote protocol under ``/nninteractive`` (its ``SERVER_CLIENT.md``): 3D Slicer's nnInteractive
extension (Remote) and ``napari-nninteractive`` connect to ``http://HOST:PORT/nninteractive`` as to their own
server. Box prompts only (the capabilities say so, and the viewers grey out the other tools): a box drawn on one
slice of any axis (``bbox_coords``: three half-open intervals, one of size 1) propagates along that axis until
its mask vanishes, as ``segment --until-empty`` does; the current object is the union of its boxes, and each answer
carries the changed sub-volume packed in nnInteractive's format with ``X-Meta``. Raw intensities arrive; the
service applies ``serve --modality`` (else: uint8 as it is, anything else by the 0.5-99.5 percentile rule)."""
from __future__ import annotations

import hashlib
import json
import logging
import math

import numpy as np
from fastapi import APIRouter, Header, Request, Response
from starlette.concurrency import run_in_threadpool

from medsam_lite.serve import nni_wire
from medsam_lite.serve.nni_sessions import NniSession
from medsam_lite.serve.service import VERSION, Service
from medsam_lite.serve.uploads import UploadError

log = logging.getLogger("medsam_lite.serve")
router = APIRouter(prefix="/nninteractive", tags=["nnInteractive (3D Slicer, napari)"])
LEASE = "X-Lease-Token"
META = "X-Meta"
CAPABILITIES = {
    "supported_interactions": {"bbox2d": True, "bbox3d": False, "points": False, "scribble": False, "lasso": False},
    "channel_mapping": {"prev_seg": 0, "bbox2d": [1, 2]},
    "num_interaction_channels": 3,
    "supports_initial_label": True,
    "supports_zero_shot_label_refinement": False,
    "preferred_scribble_thickness": [2, 2, 2],
    "interaction_decay": None,
    "patch_size": None,
    "do_autozoom": False,
    "inference_session_version": f"medsam-lite {VERSION}",
    "license": "Apache-2.0 (LiteMedSAM, bowang-lab/MedSAM)",
    "supports_undo": False,
}


def _service(request: Request) -> Service:
    return request.app.state.service


def _session(request: Request, token: str | None, active: bool = True) -> NniSession:
    return _service(request).sessions.get(token, active=active)


async def _json(request: Request) -> dict:
    try:
        payload = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise UploadError(400, f"the request body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise UploadError(400, "the request body must be a JSON object")
    return payload


def _meta_header(request: Request) -> dict:
    raw = request.headers.get(META)
    try:
        meta = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise UploadError(400, f"bad {META} header: {exc}") from exc
    return meta if isinstance(meta, dict) else {}


def _answer(ran: bool, sub: np.ndarray | None = None, bbox: list | None = None, headers: dict | None = None) -> Response:
    meta = {"ran_prediction": ran, "bbox": bbox}
    body = b""
    if sub is not None:
        meta.update(dtype=str(sub.dtype), shape=list(sub.shape))
        body = nni_wire.pack(sub)
    return Response(body, media_type="application/octet-stream",
                    headers={META: json.dumps(meta, separators=(",", ":")), **(headers or {})})


@router.get("/healthz", summary="Liveness (no token needed)")
def healthz() -> dict:
    return {"ok": True}


@router.get("/capabilities", summary="What this server does: 2D boxes on any axis, nothing else")
def capabilities() -> dict:
    return CAPABILITIES


@router.post("/claim", summary="A lease token for one viewer session (503 when the server is full)")
def claim(request: Request) -> dict:
    nni_wire.require_blosc2()  # 501 naming the install now, not at the first image
    service = _service(request)
    session = service.sessions.claim()
    log.info("nninteractive: session claimed (%d of %d held)", len(service.sessions), service.sessions.max_sessions)
    return {"lease_token": session.token, "idle_timeout_seconds": service.sessions.idle_seconds,
            "liveness_timeout_seconds": service.sessions.liveness_seconds,
            "max_sessions": service.sessions.max_sessions}


@router.post("/release", summary="Give the session back (idempotent)")
def release(request: Request, x_lease_token: str | None = Header(None)) -> dict:
    _service(request).sessions.release(x_lease_token)
    return {"released": True}


@router.post("/heartbeat", summary="The client is alive (does not postpone the idle timeout)")
def heartbeat(request: Request, x_lease_token: str | None = Header(None)) -> dict:
    session = _session(request, x_lease_token, active=False)
    return {"remaining_seconds": _service(request).sessions.remaining(session)}


@router.get("/lease_status", summary="Seconds left before the idle timeout (touches nothing)")
def lease_status(request: Request, x_lease_token: str | None = Header(None)) -> dict:
    registry = _service(request).sessions
    session = registry.get(x_lease_token, active=False, seen=False)
    return {"remaining_seconds": registry.remaining(session), "idle_timeout_seconds": registry.idle_seconds}


@router.post("/set_image", summary="The volume: a packed (1, X, Y, Z) array of raw intensities")
async def set_image(request: Request, x_lease_token: str | None = Header(None)) -> dict:
    from medsam_lite.serve.viewer_volume import to_model_volume

    session = _session(request, x_lease_token)
    service = _service(request)
    body, meta = await request.body(), _meta_header(request)

    def decode():
        array = nni_wire.unpack(body, service.settings.max_pixels)
        if array.ndim != 4 or array.shape[0] != 1 or min(array.shape) < 1:
            raise UploadError(400, f"expected a (1, X, Y, Z) image (one channel), got {array.shape}")
        volume, rule = to_model_volume(array[0], service.settings)
        digest = hashlib.sha256(str(volume.shape).encode())
        digest.update(memoryview(volume).cast("B"))  # no copy of the volume
        return array.shape, volume, rule, digest.hexdigest()

    shape, volume, rule, key = await run_in_threadpool(decode)
    with session.lock:  # the previous image stays until this one is whole
        session.volume, session.rule, session.image_key = volume, rule, key
        session.mask, session.target_dtype = None, None
    spacing = (meta.get("image_properties") or {}).get("spacing")
    log.info("nninteractive: image %s (%s), spacing %s", tuple(shape[1:]), rule, spacing)
    return {"original_image_shape": list(shape), "intensity": rule}


@router.post("/set_target_buffer", summary="The client's mask buffer: its shape (the image's) and dtype")
async def set_target_buffer(request: Request, x_lease_token: str | None = Header(None)) -> dict:
    session = _session(request, x_lease_token)
    payload = await _json(request)
    if session.volume is None:
        raise UploadError(400, "set_image first: there is no image in this session")
    shape = payload.get("shape")
    if shape != list(session.volume.shape):
        raise UploadError(400, f"the target buffer's shape {shape} is not the image's {list(session.volume.shape)}")
    try:
        dtype = np.dtype(str(payload.get("dtype")))
    except TypeError as exc:
        raise UploadError(400, f"invalid dtype {payload.get('dtype')!r}") from exc
    if dtype.kind not in "biuf":
        raise UploadError(400, f"the target buffer's dtype {dtype} is not numeric")
    with session.lock:
        session.target_dtype, session.mask = dtype, None
    return {}


@router.post("/set_do_autozoom", summary="Accepted and kept (box propagation has no zoom)")
async def set_do_autozoom(request: Request, x_lease_token: str | None = Header(None)) -> dict:
    session = _session(request, x_lease_token)
    session.do_autozoom = bool((await _json(request)).get("do_autozoom", False))
    return {}


@router.post("/reset_interactions", summary="Start a new object: its mask is cleared")
def reset_interactions(request: Request, x_lease_token: str | None = Header(None)) -> dict:
    session = _session(request, x_lease_token)
    with session.lock:
        session.mask = None
    return {}


@router.post("/undo", summary="Not supported (capabilities: supports_undo false): nothing is undone")
def undo(request: Request, x_lease_token: str | None = Header(None)) -> Response:
    _session(request, x_lease_token)
    return _answer(False)


@router.post("/predict", summary="Nothing is queued here (every box runs when it is added)")
def predict(request: Request, x_lease_token: str | None = Header(None)) -> Response:
    _session(request, x_lease_token)
    return _answer(False)


def slice_box(coords, shape: tuple[int, ...]) -> tuple[int, int, np.ndarray]:
    """``bbox_coords`` (three half-open [lo, hi), floats allowed, one of size 1) -> (axis, slice, box (4,)
    ``[x_min, y_min, x_max, y_max]`` inclusive, x along the last remaining axis): rounded and clipped as
    nnInteractive does; UploadError 400 naming what is wrong."""
    try:
        pairs = [(float(lo), float(hi)) for lo, hi in coords]
    except (TypeError, ValueError) as exc:
        raise UploadError(400, f"bbox_coords must be three [lo, hi] pairs, got {coords!r}") from exc
    if len(pairs) != 3 or not all(math.isfinite(v) for pair in pairs for v in pair):
        raise UploadError(400, f"bbox_coords must be three finite [lo, hi] pairs, got {coords!r}")
    if any(hi - lo <= 0 for lo, hi in pairs):
        raise UploadError(400, f"bbox_coords {coords!r} is empty or inverted on some axis (intervals are [lo, hi))")
    spans = []
    for (lo, hi), size in zip(pairs, shape):
        start, stop = max(0, round(lo)), min(size, round(hi))
        if stop <= start:
            if start >= size or round(hi) <= 0:
                raise UploadError(400, f"bbox_coords {coords!r} lies outside the image {list(shape)}")
            stop = start + 1
        spans.append((start, stop))
    flat = [a for a, (lo, hi) in enumerate(spans) if hi - lo == 1]
    if not flat:
        raise UploadError(400, f"bbox_coords {coords!r} is a 3D box; this server takes boxes drawn on one slice "
                               f"(one interval of size 1)")
    axis = next((a for a in flat if all(spans[b][1] - spans[b][0] > 1 for b in range(3) if b != a)), flat[0])
    (y0, y1), (x0, x1) = [spans[b] for b in range(3) if b != axis]
    return axis, spans[axis][0], np.array([x0, y0, x1 - 1, y1 - 1], dtype=np.int64)


@router.post("/add_bbox_interaction", summary="A box on one slice: propagated; the changed sub-volume comes back")
async def add_bbox_interaction(request: Request, x_lease_token: str | None = Header(None)) -> Response:
    session = _session(request, x_lease_token)
    service = _service(request)
    payload = await _json(request)
    if session.volume is None:
        raise UploadError(400, "set_image first: there is no image in this session")
    if not payload.get("include_interaction", True):
        raise UploadError(400, "negative (exclude) boxes are not supported: LiteMedSAM takes positive boxes only")
    axis, z, box = slice_box(payload.get("bbox_coords") or [], session.volume.shape)
    if not payload.get("run_prediction", True):
        raise UploadError(400, "this server runs every box when it is added: keep auto-run on (run_prediction)")
    volume, key = session.volume, session.image_key
    mask, timing = await service.worker.run(service.predictor.slice_box, key, volume, axis, z, box,
                                            service.settings.reach, client=request)
    headers = {"X-Compute-Seconds": f"{timing.seconds:.3f}", "X-Slices-Encoded": str(timing.encoded),
               "X-Slices-Cached": str(timing.cached)}
    log.info("nninteractive: box %s on axis %d slice %d: %.2f s (%d slices encoded, %d cached)", box.tolist(), axis,
             z, timing.seconds, timing.encoded, timing.cached)
    with session.lock:
        if session.volume is not volume:
            raise UploadError(409, "the session's image changed while this box ran; draw it again")
        added = mask if session.mask is None else mask & ~session.mask
        session.mask = mask if session.mask is None else session.mask | mask
        if session.target_dtype is None or not added.any():
            return _answer(True, headers=headers)
        bbox = [[int(i.min()), int(i.max()) + 1] for i in np.nonzero(added)]
        region = tuple(slice(lo, hi) for lo, hi in bbox)
        return _answer(True, session.mask[region].astype(session.target_dtype), bbox, headers)


@router.post("/add_initial_seg_interaction", summary="Start from an existing mask (a packed array of the image's shape)")
async def add_initial_seg_interaction(request: Request, x_lease_token: str | None = Header(None)) -> Response:
    session = _session(request, x_lease_token)
    body = await request.body()
    if session.volume is None:
        raise UploadError(400, "set_image first: there is no image in this session")
    seg = await run_in_threadpool(nni_wire.unpack, body, _service(request).settings.max_pixels)
    if seg.shape != session.volume.shape:
        raise UploadError(400, f"the initial segmentation is {list(seg.shape)}, the image {list(session.volume.shape)}")
    with session.lock:
        session.mask = seg > 0
    return _answer(False)


def _unsupported(kind: str):
    async def refuse(request: Request, x_lease_token: str | None = Header(None)) -> Response:
        _session(request, x_lease_token)
        raise UploadError(400, f"{kind} prompts are not supported here: LiteMedSAM takes boxes (capabilities)")
    return refuse


for _kind in ("point", "scribble", "lasso"):
    router.add_api_route(f"/add_{_kind}_interaction", _unsupported(_kind), methods=["POST"],
                         summary=f"Refused: {_kind} prompts are not supported (box prompts only)")
