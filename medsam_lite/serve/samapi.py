"""samapi 0.7.1's endpoints, as QuPath's SAM extension calls them. The image comes base64-encoded with every
prompt: its embedding is cached by the decoded pixels' sha256, so every prompt after the first runs the
decoder only. Masks come back as GeoJSON Features with every component and its holes, exact to the pixels."""
from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse

from medsam_lite.pipeline.automask import AutoMaskParams, generate
from medsam_lite.io.polygons import geojson_geometry
from medsam_lite.serve.schemas import SAMAutoMaskBody, SAMBody, SAMWeightsBody
from medsam_lite.serve.service import VERSION, Service
from medsam_lite.serve.uploads import UploadError, decode_b64_picture

router = APIRouter(prefix="/sam", tags=["samapi (QuPath)"])
SAM_TYPES = ("vit_h", "vit_l", "vit_b", "vit_t", "sam2_l", "sam2_bp", "sam2_s", "sam2_t", "sam3")
MODEL_NAME = "LiteMedSAM"


def _service(request: Request) -> Service:
    return request.app.state.service


def _decode(service: Service, text: str) -> tuple[np.ndarray, str]:
    image = decode_b64_picture(text, service.settings.max_pixels)
    key = hashlib.sha256(repr(image.shape).encode() + image.tobytes()).hexdigest()
    return image, key


def _feature(mask: np.ndarray, index: int, quality: float, model: Optional[str]) -> dict | None:
    geometry = geojson_geometry(mask)
    if geometry is None:
        return None
    return {"type": "Feature", "geometry": geometry,
            "properties": {"object_idx": index - 1, "label": "object", "quality": quality, "sam_model": model}}


def _points(body: SAMBody, width: int, height: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    if not body.point_coords:
        return None, None
    coords = np.array(body.point_coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise UploadError(422, "point_coords must be a list of [x, y] pairs")
    labels = np.array(body.point_labels if body.point_labels else [1] * len(coords))
    if len(labels) != len(coords) or not np.isin(labels, (0, 1)).all():
        raise UploadError(422, f"point_labels must hold one 0 (background) or 1 (foreground) per point "
                               f"({len(coords)} points)")
    outside = (coords[:, 0] < 0) | (coords[:, 0] > width) | (coords[:, 1] < 0) | (coords[:, 1] > height)
    if outside.any():
        raise UploadError(422, f"point {int(np.flatnonzero(outside)[0])} {coords[outside][0].tolist()} lies outside "
                               f"the {width}x{height} image")
    return coords, labels


def _box(body: SAMBody, width: int, height: int) -> np.ndarray | None:
    if not body.bbox:
        return None
    x0, y0, x1, y1 = body.bbox
    if x0 >= x1 or y0 >= y1:
        raise UploadError(422, f"bbox {body.bbox} is empty or inverted; expected [x1, y1, x2, y2] with x1 < x2, y1 < y2")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise UploadError(422, f"bbox {body.bbox} lies outside the {width}x{height} image")
    return np.clip(np.array(body.bbox, np.float64), 0, [width, height, width, height])


@router.post("/")
async def predict_sam(request: Request, body: SAMBody) -> list[dict]:
    """Segment with a box and/or points: one GeoJSON Feature per mask (three with ``multimask_output``), quality
    = the decoder's IoU estimate."""
    service = _service(request)
    image, key = await run_in_threadpool(_decode, service, body.b64img)
    height, width = image.shape[:2]
    box = _box(body, width, height)
    points, labels = _points(body, width, height)
    if box is None and points is None:
        raise UploadError(422, "give a bbox or point_coords")
    masks, _ = await service.worker.run(service.predictor.prompt, ("sam", key), 0, image, points, labels, box,
                                        body.multimask_output, client=request)
    return await run_in_threadpool(_features, [(m.mask, m.iou) for m in masks], body.type)


def _features(masks: list[tuple[np.ndarray, float]], model: Optional[str]) -> list[dict]:
    """GeoJSON Features of the non-empty masks (polygon tracing runs off the event loop)."""
    features = [_feature(mask, i, quality, model) for i, (mask, quality) in enumerate(masks)]
    return [f for f in features if f is not None]


@router.post("/automask/")
async def automask(request: Request, body: SAMAutoMaskBody) -> list[dict]:
    """SAM's automatic mask generation (point grid, IoU and stability filters, NMS) with samapi's parameters."""
    service = _service(request)
    image, key = await run_in_threadpool(_decode, service, body.b64img)
    params = AutoMaskParams(
        points_per_side=body.points_per_side or 32, pred_iou_thresh=body.pred_iou_thresh,
        stability_score_thresh=body.stability_score_thresh, stability_score_offset=body.stability_score_offset,
        box_nms_thresh=body.box_nms_thresh, crop_n_layers=body.crop_n_layers, crop_nms_thresh=body.crop_nms_thresh,
        crop_overlap_ratio=body.crop_overlap_ratio, crop_n_points_downscale_factor=body.crop_n_points_downscale_factor,
        min_mask_region_area=body.min_mask_region_area, output_type=body.output_type)
    predictor = service.predictor

    def run():
        return generate(predictor.engine, image, params,
                        lambda crop, part: predictor.embedding(("sam", key, tuple(crop)), 0, part))

    try:
        found = await service.worker.run(run, client=request)
    except ValueError as exc:
        raise UploadError(422, str(exc)) from exc
    return await run_in_threadpool(_features, [(a.mask, a.iou) for a in found], body.type)


def _weights(service: Service, model_type: str) -> dict:
    source = service.choice.description
    return {"type": model_type, "name": f"{MODEL_NAME} ({(service.model_sha256 or 'export')[:12]})",
            "url": f"medsam-lite://{source}"}


@router.get("/weights/")
async def get_weights(request: Request, type: Optional[str] = None) -> list[dict]:
    """The served model, listed under every model type (the client fails on an empty list)."""
    service = _service(request)
    return [_weights(service, t) for t in ([type] if type else SAM_TYPES)]


@router.post("/weights/", response_class=PlainTextResponse)
async def register_weights(request: Request, body: SAMWeightsBody) -> str:
    """Registering weights is not possible: this server serves one model; answered in samapi's words."""
    sha = (_service(request).model_sha256 or "export")[:12]
    return (f"Model file with the name '{body.name}' already exists. Skip registration. "
            f"(This server serves one model: {MODEL_NAME} {sha}.)")


@router.get("/version/", response_class=PlainTextResponse)
async def version() -> str:
    return f"medsam-lite {VERSION} (samapi 0.7.1 API)"


@router.get("/progress/")
async def progress() -> dict:
    """No downloads happen here: nothing in progress."""
    return {"message": None, "percent": -1}


@router.get("/weights/cancel/", response_class=PlainTextResponse)
async def cancel() -> str:
    return "Cancel signal sent"
