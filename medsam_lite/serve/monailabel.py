"""MONAI Label's REST API under ``/monailabel`` (as ``monailabel.client.MONAILabelClient`` and 3D Slicer's MONAI
Label module call it): ``/info/`` (one interactive model, ``medsam_lite``, type deepgrow, 3D), ``/auth/`` (enabled
when ``serve --token`` is set: the token is the password, any user name), ``PUT /datastore/?image=ID`` (NIfTI,
NRRD, ... as the native API reads them) and ``POST /infer/medsam_lite?image=ID`` with ``params``: ``roi`` (IJK
bounds, either order) is a box, a 3D box exactly as ``predict`` where it has a z extent, else drawn on its slice and
propagated until the mask vanishes; ``foreground``/``background`` clicks (IJK) are point prompts on their slices.
The answer is a label image (1 = the object) in the upload's geometry: multipart ``params`` + file, or either alone
(``output=image|json``)."""
from __future__ import annotations

import json
import secrets
from typing import Optional

import numpy as np
from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool

from medsam_lite.core.case import LARGEST_COORDINATE, CaseError, check_boxes
from medsam_lite.serve.encode import nifti_bytes, png_bytes
from medsam_lite.serve.service import VERSION, Service
from medsam_lite.serve.store import StoredImage
from medsam_lite.serve.uploads import Intensity, UploadError

router = APIRouter(prefix="/monailabel", tags=["MONAI Label (3D Slicer, OHIF, ...)"])
MODEL = "medsam_lite"
MAX_IDS = 10_000  # client image ids remembered (the images themselves live in the store, bounded in bytes)


def _service(request: Request) -> Service:
    return request.app.state.service


@router.get("/info/", summary="The app: one interactive 3D model, medsam_lite (deepgrow type: box ROI and clicks)")
def info(request: Request) -> dict:
    service = _service(request)
    model = {"type": "deepgrow", "dimension": 3, "labels": [], "config": {},
             "description": "LiteMedSAM: a box (ROI) per object, propagated through the volume as `predict` does; "
                            "clicks are point prompts on their slice"}
    return {"name": "medsam-lite", "version": VERSION, "description": service.choice.description, "labels": [],
            "models": {MODEL: model}, "trainers": {}, "strategies": {}, "scoring": {}, "train_stats": {},
            "datastore": {"total": len(service.viewer_ids), "completed": 0}}


@router.get("/auth/", summary="Whether a token is needed (no token needed to ask)")
def auth(request: Request) -> dict:
    return {"enabled": bool(_service(request).settings.token), "client_id": "medsam-lite", "realm_uri": ""}


@router.post("/auth/token", summary="The bearer token for the password (the service's --token; any user name)")
def auth_token(request: Request, username: str = Form(""), password: str = Form("")) -> dict:
    token = _service(request).settings.token
    if token and not secrets.compare_digest(password.encode(), token.encode()):
        raise UploadError(401, "wrong password: it is the service's --token")
    return {"access_token": token or "", "token_type": "bearer"}


@router.get("/auth/token/valid", summary="200 when the token sent is valid")
def auth_token_valid() -> dict:
    return {}


async def _store(service: Service, file: UploadFile, image_id: str | None) -> tuple[str, StoredImage]:
    from medsam_lite.serve.native import receive_upload

    path, sha, head = await receive_upload(service, file)
    settings = service.settings
    stored, _ = await run_in_threadpool(service.store_upload, path, sha, head, file.filename,
                                        Intensity(settings.modality, settings.window, fallback=True))
    name = image_id or (file.filename or sha).split("/")[-1].split(".")[0]
    if len(service.viewer_ids) >= MAX_IDS:
        service.viewer_ids.pop(next(iter(service.viewer_ids)))
    service.viewer_ids[name] = sha
    return name, stored


@router.put("/datastore/", summary="Upload an image (NIfTI, NRRD, MHA, DICOM zip, ...) under the id ?image=ID")
@router.put("/datastore/image", summary="Upload an image under the id ?image=ID")
async def add_image(request: Request, image: Optional[str] = None, params: str = Form("{}"),
                    file: UploadFile = File(...)) -> dict:
    name, _ = await _store(_service(request), file, image)
    return {"image": name}


@router.get("/datastore/", summary="The image ids this server holds")
def datastore(request: Request) -> dict:
    service = _service(request)
    objects = {name: {"image": {"id": name}, "labels": {}} for name, sha in service.viewer_ids.items() if sha in service.store}
    return {"total": len(objects), "completed": 0, "objects": objects}


def _ijk_points(value, name: str) -> np.ndarray:
    try:
        points = np.asarray(value if value else [], dtype=np.float64).reshape(-1, 3)
    except (TypeError, ValueError) as exc:
        raise UploadError(422, f"{name} must be a list of [i, j, k] points, got {value!r}") from exc
    if not (np.abs(points) <= LARGEST_COORDINATE).all():  # also NaN
        raise UploadError(422, f"{name} has a coordinate that is no voxel index: {points.tolist()!r:.200}")
    return np.round(points).astype(np.int64)


def _roi(value) -> np.ndarray | None:
    """``roi`` -> [i_min, i_max, j_min, j_max, k_min, k_max] (each pair sorted) or None."""
    if value in (None, [], ""):
        return None
    try:
        flat = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise UploadError(422, f"roi must be [i0, i1, j0, j1, k0, k1] (IJK), got {value!r}") from exc
    if flat.size not in (4, 6) or not (np.abs(flat) <= LARGEST_COORDINATE).all():
        raise UploadError(422, f"roi must be [i0, i1, j0, j1, k0, k1] (IJK), got {value!r}")
    pairs = np.sort(np.round(flat).astype(np.int64).reshape(-1, 2), axis=1)
    return pairs.ravel()


def infer_labels(service: Service, stored: StoredImage, roi: np.ndarray | None, foreground: np.ndarray,
                 background: np.ndarray) -> tuple[np.ndarray, dict]:
    """On the worker: the object's mask as uint8 0/1 in the stored image's grid, and what was run."""
    image, predictor, key = stored.image, service.predictor, stored.id
    is_3d = stored.meta.is_3d
    shape = image.shape if is_3d else image.shape[:2]
    out = np.zeros(shape, dtype=np.uint8)
    try:
        if roi is not None:
            i0, i1, j0, j1 = roi[:4]
            k0, k1 = (roi[4], roi[5]) if roi.size == 6 else (0, 0)
            if not is_3d:
                box = check_boxes(np.array([[i0, j0, i1, j1]]), image.shape, False)[0]
                segs, timing = predictor.boxes_2d(key, 0, np.asarray(image), box, np.uint8)
                return (segs > 0).astype(np.uint8), {"prompt": "box", "timing": timing}
            if k0 != k1:
                box = check_boxes(np.array([[i0, j0, k0, i1, j1, k1]]), image.shape, True)[0]
                segs, timing = predictor.boxes_3d(key, image, box, None, np.uint8)
                return (segs > 0).astype(np.uint8), {"prompt": "3D box", "timing": timing}
            box = check_boxes(np.array([[i0, j0, k0, i1, j1, k0]]), image.shape, True)[0][0]
            mask, timing = predictor.slice_box(key, image, 0, int(box[2]), box[[0, 1, 3, 4]], service.settings.reach)
            return mask.astype(np.uint8), {"prompt": "box on one slice, propagated until empty", "timing": timing}
    except CaseError as exc:
        raise UploadError(422, f"roi: {exc}") from exc
    if len(foreground) == 0:
        raise UploadError(422, "give a roi (a box) or foreground points")
    depth = image.shape[0] if is_3d else 1
    points = np.concatenate([foreground, background])
    labels = np.concatenate([np.ones(len(foreground)), np.zeros(len(background))]).astype(np.float32)
    inside = (points[:, 0] >= 0) & (points[:, 0] < shape[-1]) & (points[:, 1] >= 0) & (points[:, 1] < shape[-2])
    inside &= (points[:, 2] >= 0) & (points[:, 2] < depth) if is_3d else True
    if not inside.all():
        raise UploadError(422, f"point {points[~inside][0].tolist()} (i, j, k) is outside the image {list(shape[::-1])}")
    timing = None
    for k in sorted({int(p[2]) for p in foreground} if is_3d else {0}):
        here = points[:, 2] == k if is_3d else np.ones(len(points), bool)
        plane = image[k] if is_3d else np.asarray(image)
        masks, timing = predictor.prompt(key, k, plane, points[here, :2].astype(np.float32), labels[here], None, False)
        target = out[k] if is_3d else out
        target[masks[0].mask] = 1
    return out, {"prompt": "points", "timing": timing}


def _multipart(params: dict, filename: str, body: bytes, media: str) -> Response:
    boundary = secrets.token_hex(16)
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\nContent-Type: application/json\r\n\r\n'
            f'{json.dumps(params)}\r\n--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="{filename}"\r\nContent-Type: {media}\r\n\r\n').encode()
    return Response(head + body + f"\r\n--{boundary}--\r\n".encode(),
                    media_type=f"multipart/form-data; boundary={boundary}")


@router.post("/infer/{model}", summary="Segment one object: a roi (box) or clicks -> a label image in the upload's geometry")
async def infer(request: Request, model: str, image: str = "", params: str = Form("{}"),
                file: Optional[UploadFile] = File(None), label: Optional[UploadFile] = File(None),
                output: Optional[str] = Query(None, pattern="^(image|json|all)$")) -> Response:
    service = _service(request)
    if model != MODEL:
        raise UploadError(404, f"no model {model!r} here; this server has {MODEL!r}")
    try:
        p = json.loads(params or "{}")
    except ValueError as exc:
        raise UploadError(422, f"params is not JSON: {exc}") from exc
    if not isinstance(p, dict):
        raise UploadError(422, f"params must be a JSON object ({{\"roi\": ..., \"foreground\": ...}}), got {params[:80]!r}")
    if file is not None:
        image, stored = await _store(service, file, image or None)
    else:
        found = service.viewer_ids.get(image)
        stored = service.store.get(found) if found else None
        if stored is None:
            raise UploadError(404, f"no image {image[:80]!r} here: upload it first (PUT /datastore/?image=ID)")
    roi = _roi(p.get("roi"))
    foreground, background = _ijk_points(p.get("foreground"), "foreground"), _ijk_points(p.get("background"), "background")
    labels, ran = await service.worker.run(infer_labels, service, stored, roi, foreground, background, client=request)
    timing = ran.pop("timing")
    result = {"label_names": {str(p.get("label") or "object"): 1}, "prompt": ran["prompt"],
              "latencies": {"infer": round(timing.seconds, 3), "slices_encoded": timing.encoded,
                            "slices_cached": timing.cached}}
    if output == "json":
        return Response(json.dumps(result), media_type="application/json")
    if stored.meta.is_3d or stored.meta.kind == "medical":
        body, media, name = nifti_bytes(labels, stored.meta), "application/gzip", f"{image}_label.nii.gz"
    else:
        body, media, name = png_bytes(labels), "image/png", f"{image}_label.png"
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    if output == "image":
        return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})
    return _multipart(result, name, body, media)
