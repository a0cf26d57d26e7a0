"""Uploaded images on disk by id (the sha256 of the uploaded bytes), bounded in bytes, least recently used out.

Each entry is a folder ``<id>/`` of our own naming: ``image.npy`` (the model's uint8 image, memory-mapped when
read), ``gts.npy`` when the upload had ground truth, and ``meta.json``. Entries are written under a temporary
name and renamed, so a half-written one is never found."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from medsam_lite.serve.lru import ByteLRU


@dataclass
class ImageMeta:
    """What the service knows of an image besides its pixels."""

    name: str  # a display name (never a path)
    kind: str  # 'npz' (challenge case), 'medical' (NIfTI, DICOM, ...), 'picture' (PNG, JPEG, ...)
    is_3d: bool
    shape: list[int]  # of the model image: (D, H, W) or (H, W, 3)
    boxes: list = field(default_factory=list)  # boxes stored in a challenge npz
    spacing: list[float] | None = None  # (x, y, z) mm
    geometry: dict | None = None  # origin, spacing, direction of a medical image
    modality: str | None = None  # the intensity rule applied
    has_gts: bool = False
    has_raw: bool = False  # the values as stored in the file (HU for CT) are kept for display windowing
    value_range: list[float] = field(default_factory=lambda: [0.0, 255.0])  # of those values


@dataclass
class StoredImage:
    id: str
    meta: ImageMeta
    image: np.ndarray  # uint8, memory-mapped
    folder: Path

    def gts(self) -> np.ndarray | None:
        return np.load(self.folder / "gts.npy") if self.meta.has_gts else None

    def raw(self) -> np.ndarray:
        """The values as stored in the uploaded file (memory-mapped), else the model image."""
        return np.load(self.folder / "raw.npy", mmap_mode="r") if self.meta.has_raw else self.image


def _is_id(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


class ImageStore:
    """``put``/``get``/``delete`` by id; ``on_evict(id)`` is called for every id removed (e.g. to drop its
    embeddings from the cache)."""

    def __init__(self, root: Path | None, capacity_bytes: int, on_evict: Callable[[str], None] | None = None) -> None:
        self._owned = root is None
        self.root = Path(tempfile.mkdtemp(prefix="medsam-lite-store-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.incoming = self.root / ".incoming"  # uploads being received
        shutil.rmtree(self.incoming, ignore_errors=True)
        self.incoming.mkdir()
        for stale in self.root.iterdir():  # a previous run's entries (our names only) are not indexed: remove them
            if stale.is_dir() and (stale.name.startswith(".entry-") or _is_id(stale.name)):
                shutil.rmtree(stale, ignore_errors=True)
        self._on_evict = on_evict
        self._lru: ByteLRU[str, ImageMeta] = ByteLRU(capacity_bytes, on_evict=lambda key, _: self._remove(key))
        self._lock = threading.Lock()

    def _remove(self, image_id: str) -> None:
        shutil.rmtree(self.root / image_id, ignore_errors=True)
        if self._on_evict:
            self._on_evict(image_id)

    def put(self, image_id: str, image: np.ndarray, meta: ImageMeta, gts: np.ndarray | None = None,
            raw: np.ndarray | None = None) -> bool:
        """Store an image (and its ground truth, and its stored values); False when it is larger than the store."""
        nbytes = sum(a.nbytes for a in (image, gts, raw) if a is not None)
        if nbytes > self._lru.capacity:
            return False
        meta.has_gts, meta.has_raw = gts is not None, raw is not None
        tmp = Path(tempfile.mkdtemp(prefix=".entry-", dir=self.root))
        try:
            np.save(tmp / "image.npy", np.ascontiguousarray(image))
            for name, array in (("gts", gts), ("raw", raw)):
                if array is not None:
                    np.save(tmp / f"{name}.npy", np.ascontiguousarray(array))
            (tmp / "meta.json").write_text(json.dumps(asdict(meta)))
            with self._lock:
                target = self.root / image_id
                shutil.rmtree(target, ignore_errors=True)
                os.replace(tmp, target)
                self._lru.put(image_id, meta, nbytes)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return True

    def get(self, image_id: str) -> StoredImage | None:
        meta = self._lru.get(image_id)
        if meta is None:
            return None
        folder = self.root / image_id
        try:
            image = np.load(folder / "image.npy", mmap_mode="r")
        except OSError:
            return None
        return StoredImage(image_id, meta, image, folder)

    def delete(self, image_id: str) -> bool:
        with self._lock:
            if self._lru.pop(image_id) is None:
                return False
            self._remove(image_id)
            return True

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._lru

    @property
    def nbytes(self) -> int:
        return self._lru.nbytes

    def __len__(self) -> int:
        return len(self._lru)

    def close(self) -> None:
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)
