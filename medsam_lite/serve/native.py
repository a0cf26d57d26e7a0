"""The native API: upload an image once, segment it with many prompts, get masks in the format you need."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from fastapi import APIRouter, File, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from medsam_lite.core.case import MAX_LABEL, label_dtype
from medsam_lite.serve.encode import MEDIA, encode, npz_bytes
from medsam_lite.serve.schemas import ImageInfo, Info, LabelMap, MaskFormat, SegmentRequest
from medsam_lite.serve.service import VERSION, Service, check_slice
from medsam_lite.serve.store import StoredImage
from medsam_lite.serve.uploads import Intensity, UploadError, read_case_npz

router = APIRouter()
ID = re.compile(r"^[0-9a-f]{64}$")


def _service(request: Request) -> Service:
    return request.app.state.service


def _stored(service: Service, image_id: str) -> StoredImage:
    found = service.store.get(image_id) if ID.match(image_id) else None
    if found is None:
        raise UploadError(404, f"no image {image_id[:80]} here (unknown id, deleted, or evicted from the store); upload it again")
    return found


def _info(stored: StoredImage, existed: bool = False) -> ImageInfo:
    m = stored.meta
    return ImageInfo(id=stored.id, name=m.name, kind=m.kind, is_3d=m.is_3d, shape=m.shape, boxes=m.boxes,
                     spacing=m.spacing, geometry=m.geometry, modality=m.modality, has_gts=m.has_gts,
                     value_range=m.value_range, existed=existed)


@router.get("/healthz", tags=["service"])
async def healthz() -> dict:
    """Liveness: answers without the token."""
    return {"status": "ok"}


@router.get("/v1/info", response_model=Info, tags=["service"])
async def info(request: Request) -> Info:
    """The model (sha256 of the checkpoint), engine, precision, version, and the cache/store/queue state."""
    service = _service(request)
    cache, store = service.predictor.cache, service.store
    return Info(version=VERSION, engine=service.choice.engine.name,
                precision=service.choice.engine.precision_label, model_sha256=service.model_sha256,
                model=service.choice.description,
                cache={"bytes": cache.nbytes, "capacity": cache.capacity, "slices": len(cache), "hits": cache.hits,
                       "misses": cache.misses},
                store={"bytes": store.nbytes, "images": len(store), "capacity": service.settings.store_mb * 2**20},
                queue={"waiting": service.worker.waiting, "size": service.settings.queue_size,
                       "running": service.worker.running, "done": service.worker.done, "stopped": service.worker.stopped})


async def receive_upload(service: Service, file: UploadFile) -> tuple[Path, str, bytes]:
    try:
        return await run_in_threadpool(service.receive, file.file)
    finally:
        await file.close()


@router.post("/v1/images", response_model=ImageInfo, tags=["images"])
async def upload_image(request: Request, file: UploadFile = File(..., description="challenge npz, NIfTI, NRRD, MHA, "
                                                                          "DICOM (file or zip), PNG, JPEG, BMP, TIFF"),
                       modality: Optional[str] = Query(None, pattern="^(CT|MR|other|raw)$",
                                                       description="intensity rule for medical images"),
                       window_level: Optional[float] = None, window_width: Optional[float] = Query(None, gt=0)) -> ImageInfo:
    """Store an image and return its id (the sha256 of the bytes; the same bytes again are not decoded again)."""
    service = _service(request)
    path, image_id, head = await receive_upload(service, file)
    window = None
    if window_level is not None or window_width is not None:
        window = (40.0 if window_level is None else window_level, 400.0 if window_width is None else window_width)
    stored, existed = await run_in_threadpool(service.store_upload, path, image_id, head, file.filename,
                                              Intensity(modality, window))
    return _info(stored, existed)


@router.get("/v1/images/{image_id}", response_model=ImageInfo, tags=["images"])
async def image_info(request: Request, image_id: str) -> ImageInfo:
    return _info(_stored(_service(request), image_id))


@router.get("/v1/images/{image_id}/slice", tags=["images"],
            responses={200: {"content": {"image/png": {}}, "description": "the model image (uint8) of one slice"}})
async def image_slice(request: Request, image_id: str, z: int = Query(0, ge=0)) -> Response:
    """The uint8 image the model sees, as PNG: slice ``z`` of a volume, or the 2D image."""
    stored = _stored(_service(request), image_id)
    image = stored.image
    check_slice(stored.meta, z)
    if stored.meta.is_3d:
        plane = np.asarray(image[z])
    else:
        plane = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", plane)
    return Response(encoded.tobytes(), media_type="image/png")


@router.get("/v1/images/{image_id}/pixels", tags=["images"],
            responses={200: {"content": {"application/octet-stream": {}}, "description": "float32, row-major"}})
async def image_pixels(request: Request, image_id: str, z: int = Query(0, ge=0)) -> Response:
    """The stored values of slice ``z`` (HU for a CT volume; the uint8 image otherwise) as little-endian float32,
    for windowing on the client. ``X-Shape``: H,W (or H,W,3)."""
    stored = _stored(_service(request), image_id)
    raw = stored.raw()
    check_slice(stored.meta, z)
    if stored.meta.is_3d:
        raw = raw[z]
    values = np.ascontiguousarray(raw, dtype="<f4")
    return Response(values.tobytes(), media_type="application/octet-stream",
                    headers={"X-Shape": ",".join(map(str, values.shape))})


@router.post("/v1/images/{image_id}/export", tags=["images"],
             responses={200: {"content": {"application/octet-stream": {}, "image/png": {}}}})
async def export_labels(request: Request, image_id: str, body: LabelMap,
                        format: MaskFormat = Query("npz", description="npz (segs), nifti, png (2D)")) -> Response:
    """A label map made on the client (e.g. the web page), written as npz/NIfTI/PNG with the image's geometry."""
    stored = _stored(_service(request), image_id)
    shape = stored.meta.shape if stored.meta.is_3d else stored.meta.shape[:2]
    if body.shape != list(shape) or len(body.values) != len(body.lengths) or sum(body.lengths) != int(np.prod(shape)) \
            or any(v < 0 or v > MAX_LABEL for v in body.values) or any(n < 0 for n in body.lengths):
        raise UploadError(422, f"the label map must be runs filling the image's shape {list(shape)} with values 0..{MAX_LABEL}")
    values = np.array(body.values, dtype=np.int64)
    labels = np.repeat(values.astype(label_dtype(int(values.max(initial=0)))), body.lengths).reshape(shape)
    return await run_in_threadpool(_reply, labels, format, stored, None)


@router.delete("/v1/images/{image_id}", status_code=204, tags=["images"])
async def delete_image(request: Request, image_id: str) -> Response:
    """Remove an image and its cached embeddings."""
    service = _service(request)
    _stored(service, image_id)
    service.store.delete(image_id)
    return Response(status_code=204)


def _reply(labels: np.ndarray, fmt: str, stored: StoredImage, timing) -> Response:
    headers = {} if timing is None else {"X-Compute-Seconds": f"{timing.seconds:.4f}",
                                         "X-Slices-Encoded": str(timing.encoded), "X-Slices-Cached": str(timing.cached)}
    try:
        out = encode(labels, fmt, stored.meta)
    except ValueError as exc:
        raise UploadError(422, str(exc)) from exc
    if isinstance(out, dict):
        return JSONResponse(out, headers=headers)
    content, media = out
    return Response(content, media_type=media, headers=headers)


@router.post("/v1/images/{image_id}/segment", tags=["segment"],
             responses={200: {"content": {"application/octet-stream": {}, "application/json": {}},
                              "description": "the label map in the format asked for"}})
async def segment(request: Request, image_id: str, body: SegmentRequest,
                  format: MaskFormat = Query("npz", description="npz (segs), nifti, png (2D), rle or geojson")) -> Response:
    """Segment a stored image: 2D boxes (per slice of a volume with ``slice``) or 3D boxes propagated as
    ``predict`` does. A second prompt on a slice already encoded runs the decoder only."""
    service = _service(request)
    stored = _stored(service, image_id)
    labels, timing = await service.worker.run(service.segment, stored, body.boxes, body.slice, body.labels,
                                              client=request)
    return await run_in_threadpool(_reply, labels, format, stored, timing)  # encoding off the event loop


@router.post("/v1/predict", tags=["segment"],
             responses={200: {"content": {"application/octet-stream": {}}, "description": "npz with segs"}})
async def predict_once(request: Request, file: UploadFile = File(..., description="a challenge .npz case")) -> Response:
    """One challenge case in, exactly what ``medsam-lite predict`` writes for it out (an npz with ``segs``)."""
    service = _service(request)
    path, _, _ = await receive_upload(service, file)
    try:
        case = await run_in_threadpool(read_case_npz, path, file.filename, service.settings.max_pixels)
        from medsam_lite.pipeline.case import segment_case

        segs = await service.worker.run(segment_case, service.predictor.engine, case, client=request)
    finally:
        path.unlink(missing_ok=True)
    return Response(npz_bytes(segs=segs), media_type=MEDIA["npz"])


__all__ = ["router", "receive_upload"]
