"""FastMedSAM backend's two endpoints: upload a challenge npz with ``gts``, get it back segmented by the tight
box of each label on each slice (as that backend does, on the image's own aspect ratio)."""
from __future__ import annotations

import re
import threading
from collections import OrderedDict

import numpy as np
from fastapi import APIRouter, File, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from medsam_lite.core.case import label_dtype
from medsam_lite.io.prompts import label_values_of, tight_boxes, widen_thin_boxes
from medsam_lite.serve.encode import npz_bytes
from medsam_lite.serve.native import receive_upload
from medsam_lite.serve.service import Service
from medsam_lite.serve.store import StoredImage
from medsam_lite.serve.uploads import Intensity, UploadError, safe_name

router = APIRouter(tags=["FastMedSAM"])
NAMES_KEPT = 10000


class UploadNames:
    """The names handed out by /upload/ -> image ids; bounded, oldest out. Names are keys, never paths."""

    def __init__(self) -> None:
        self._names: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, name: str, image_id: str) -> None:
        with self._lock:
            self._names[name] = image_id
            while len(self._names) > NAMES_KEPT:
                self._names.popitem(last=False)

    def get(self, name: str) -> str | None:
        with self._lock:
            return self._names.get(name)


def _names(request: Request) -> UploadNames:
    state = request.app.state
    if not hasattr(state, "fastmedsam_names"):
        state.fastmedsam_names = UploadNames()
    return state.fastmedsam_names


@router.post("/upload/")
async def upload(request: Request, file: UploadFile = File(...)) -> JSONResponse:
    """Store the npz; ``{"filename": name}`` is what /segment/ takes."""
    service: Service = request.app.state.service
    path, image_id, head = await receive_upload(service, file)
    stored, _ = await run_in_threadpool(service.store_upload, path, image_id, head, file.filename or "upload.npz",
                                        Intensity())
    if stored.meta.kind != "npz":
        raise UploadError(415, "FastMedSAM's /upload/ takes a challenge .npz (imgs, gts)")
    stem = re.sub(r"\.npz$", "", safe_name(file.filename, "upload.npz"))
    name = f"{stem}_{image_id[:8]}.npz"
    _names(request).add(name, image_id)
    return JSONResponse({"filename": name})


def _segment_by_gts(service: Service, stored: StoredImage, gts: np.ndarray) -> np.ndarray:
    image = stored.image
    segs = np.zeros(gts.shape, dtype=label_dtype(int(gts.max(initial=0))))
    planes = [(z, image[z], gts[z]) for z in range(gts.shape[0])] if stored.meta.is_3d else [(0, np.asarray(image), gts)]
    for z, plane, labels in planes:
        values, boxes = tight_boxes(labels)
        if not len(values):
            continue
        widen_thin_boxes(boxes, labels.shape)
        part, _ = service.predictor.boxes_2d(stored.id, z, plane, boxes, np.uint16)
        mapped = label_values_of(part, values)
        if stored.meta.is_3d:
            segs[z] = mapped
        else:
            segs[...] = mapped
    return segs


@router.get("/segment/", responses={200: {"content": {"application/octet-stream": {}}}})
async def segment(request: Request, filename: str = Query(...)) -> Response:
    """npz with ``imgs``, ``gts``, ``segs`` (and ``spacing``); 404 for a name /upload/ did not give."""
    service: Service = request.app.state.service
    image_id = _names(request).get(filename)
    stored = service.store.get(image_id) if image_id else None
    if stored is None:
        raise UploadError(404, "File not found")
    if not stored.meta.has_gts:
        raise UploadError(422, f"{filename} has no gts: FastMedSAM segments by the boxes of the labels in gts")
    gts = stored.gts()
    segs = await service.worker.run(_segment_by_gts, service, stored, gts, client=request)
    arrays = {"imgs": np.asarray(stored.image), "gts": gts, "segs": segs}
    if stored.meta.spacing is not None:
        arrays["spacing"] = np.array(stored.meta.spacing)
    return Response(npz_bytes(**arrays), media_type="application/octet-stream")
