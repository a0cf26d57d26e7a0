"""What the routers share: the engine on its worker, the embedding cache, the image store, and the steps that
turn a request into a job (upload -> stored image; stored image + boxes -> labels)."""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from medsam_lite.core.case import MAX_LABEL, CaseError, check_boxes, label_dtype
from medsam_lite.core.preprocess import resized_size
from medsam_lite.engines import EngineChoice
from medsam_lite.io.image import ImageError
from medsam_lite.io.prompts import integer_boxes, label_values_of
from medsam_lite.io.layout2025 import boxes_from_dicts
from medsam_lite.serve.nni_sessions import SessionRegistry
from medsam_lite.serve.predictor import SlicePredictor, Timing
from medsam_lite.serve.settings import MIB, ServeSettings
from medsam_lite.serve.stoppable import StoppableEngine
from medsam_lite.serve.store import ImageMeta, ImageStore, StoredImage
from medsam_lite.serve.uploads import Intensity, UploadError, decode_file, sniff_suffix
from medsam_lite.serve.worker import InferenceWorker

VERSION = "0.1.0"


@dataclass
class Service:
    settings: ServeSettings
    choice: EngineChoice
    model_sha256: str | None
    predictor: SlicePredictor
    worker: InferenceWorker
    store: ImageStore
    sessions: SessionRegistry = field(default=None)  # nnInteractive's leases
    viewer_ids: dict[str, str] = field(default_factory=dict)  # MONAI Label image id -> stored image id
    stopping: bool = False  # a signal is stopping the server: requests are answered 503 (app.StopGuard)

    @classmethod
    def start(cls, settings: ServeSettings, choice: EngineChoice, model_sha256: str | None) -> "Service":
        worker = InferenceWorker(settings.queue_size)
        predictor = SlicePredictor(StoppableEngine(choice.engine, worker.check), settings.cache_mb * MIB)
        store = ImageStore(settings.store_dir, settings.store_mb * MIB, on_evict=predictor.forget)
        sessions = SessionRegistry(settings.max_sessions, settings.idle_seconds, settings.liveness_seconds)
        return cls(settings, choice, model_sha256, predictor, worker, store, sessions)

    def close(self) -> None:
        self.worker.close()
        self.store.close()

    # --- uploads ---

    def receive(self, source: BinaryIO) -> tuple[Path, str, bytes]:
        """Copy an upload into the store's incoming folder while hashing it: (file, sha256, first bytes)."""
        digest = hashlib.sha256()
        fd, name = tempfile.mkstemp(prefix="upload-", dir=self.store.incoming)
        path = Path(name)
        head = b""
        try:
            with open(fd, "wb") as target:
                while chunk := source.read(1 << 20):
                    if len(head) < 512:
                        head += chunk[: 512 - len(head)]
                    digest.update(chunk)
                    target.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path, digest.hexdigest(), head

    def store_upload(self, path: Path, image_id: str, head: bytes, client_name: str | None,
                     intensity: Intensity) -> tuple[StoredImage, bool]:
        """Decode and keep an upload (the same bytes again: the stored image, ``existed`` True)."""
        try:
            found = self.store.get(image_id)
            if found is not None and (found.meta.kind != "medical" or intensity.modality in (None, found.meta.modality)):
                return found, True
            suffix = sniff_suffix(head, client_name)
            image, meta, gts, raw = decode_file(path, suffix, client_name, intensity, self.settings.max_pixels)
            try:
                resized_size(*(image.shape[1:] if meta.is_3d else image.shape[:2]))  # the model can take its planes
            except CaseError as exc:
                raise UploadError(422, f"{meta.name}: {exc}") from exc
            if found is not None:
                self.predictor.forget(image_id)
            if not self.store.put(image_id, image, meta, gts, raw):
                raise UploadError(413, f"the image needs {image.nbytes / MIB:,.0f} MiB, more than the store holds "
                                       f"({self.settings.store_mb:,} MiB, --store-mb)")
            return self.store.get(image_id), False
        finally:
            path.unlink(missing_ok=True)

    # --- segmentation (on the worker) ---

    def segment(self, stored: StoredImage, boxes: list | None, slice_: int | None,
                labels: list[int] | None) -> tuple[np.ndarray, Timing]:
        """Labels for ``boxes`` (see SegmentRequest) on a stored image; UploadError for bad boxes."""
        meta, image = stored.meta, stored.image
        raw = meta.boxes if boxes is None else boxes
        z_middle = None
        if meta.is_3d and slice_ is None:
            if raw and all(isinstance(b, dict) for b in raw):
                try:
                    arr, z_middle = boxes_from_dicts(np.array(raw, dtype=object))
                except ValueError as exc:
                    raise UploadError(422, f"boxes: {exc}") from exc
            else:
                arr = _box_array(raw, 6)
            arr = _checked(arr, image.shape, True)
            if z_middle is not None:
                z_middle = np.clip(z_middle, arr[:, 2], arr[:, 5])
        else:
            if slice_ is not None:
                check_slice(meta, slice_)
            arr = _box_array(raw if boxes is not None or not meta.is_3d else [], 4)
            plane_shape = image.shape[1:] if meta.is_3d else image.shape[:2]
            arr = _checked(arr, plane_shape, False)
        values = _label_values(labels, len(arr))
        dtype = label_dtype(len(arr))
        if meta.is_3d and slice_ is None:
            segs, timing = self.predictor.boxes_3d(stored.id, image, arr, z_middle, dtype)
        elif meta.is_3d:
            segs, timing = self.predictor.boxes_2d(stored.id, slice_, image[slice_], arr, dtype)
        else:
            segs, timing = self.predictor.boxes_2d(stored.id, 0, np.asarray(image), arr, dtype)
        if values is not None:
            segs = label_values_of(segs, values)
        return segs, timing


def check_slice(meta: ImageMeta, z: int) -> None:
    """422 for a slice index the image does not have (a 2D image has slice 0 only)."""
    depth = meta.shape[0] if meta.is_3d else 1
    if z >= depth:
        raise UploadError(422, f"slice {z} is outside the volume (0..{depth - 1})" if meta.is_3d
                          else f"slice {z}: this image is 2D (one plane, slice 0)")


def _box_array(raw: list, width: int) -> np.ndarray:
    try:
        return integer_boxes(raw, width, "boxes")
    except ImageError as exc:
        raise UploadError(422, str(exc)) from exc


def _checked(boxes: np.ndarray, shape: tuple[int, ...], is_3d: bool) -> np.ndarray:
    try:
        return check_boxes(boxes, shape, is_3d)[0]
    except CaseError as exc:
        raise UploadError(422, str(exc)) from exc


def _label_values(labels: list[int] | None, count: int) -> list[int] | None:
    if labels is None:
        return None
    if len(labels) != count or any(not 1 <= v <= MAX_LABEL for v in labels):
        raise UploadError(422, f"labels must be {count} integers 1..{MAX_LABEL}, one per box")
    return labels
