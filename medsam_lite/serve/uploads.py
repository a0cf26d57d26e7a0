"""Uploaded bytes -> the model's image: a challenge npz, or any format the readers of ``medsam_lite.io`` read.

What the client sends never becomes a path: the bytes go to a temporary file of our own naming whose suffix is
chosen from a fixed list (by the client's file name where it has one of ours, else by the bytes themselves).
Sizes are checked from headers before pixels are decoded (decompression bombs), and npz arrays are read without
pickles."""
from __future__ import annotations

import base64
import binascii
import io
import math
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from medsam_lite.core.case import Case, CaseError, check_grid, check_label_map, check_spacing
from medsam_lite.io.challenge import load_case
from medsam_lite.core.optional import MissingDependency
from medsam_lite.io.image import IMAGE_SUFFIXES, ImageError, TooLarge, image_suffix
from medsam_lite.io.intensity import window_for
from medsam_lite.io.raster import as_rgb, check_jpeg_end, file_header_size, header_size, opencv_quiet
from medsam_lite.serve.store import ImageMeta


class UploadError(ValueError):
    """A request the service refuses: ``status`` (400, 413, 415, 422) and a message naming the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Intensity:
    """How a medical image becomes uint8 (``medsam_lite.io.image_case``): modality and CT window."""

    modality: str | None = None
    window: tuple[float, float] | None = None
    fallback: bool = False  # no modality here or in the metadata: uint8 as it is, else 'other' (viewer uploads)


def safe_name(name: str | None, default: str = "upload") -> str:
    """A display name from a client's file name: its last part, only [A-Za-z0-9._-], at most 100 characters."""
    base = re.split(r"[\\/]", name or "")[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")[:100]
    return cleaned or default


def sniff_suffix(head: bytes, client_name: str | None) -> str:
    """The suffix to read the bytes as: the client's when it is one of ours, else from magic numbers."""
    suffix = image_suffix(client_name or "")
    if suffix:
        return suffix
    if head.startswith(b"PK"):
        return ".npz"
    if head.startswith(b"\x89PNG"):
        return ".png"
    if head.startswith(b"\xff\xd8"):
        return ".jpg"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return ".tif"
    if head.startswith(b"BM"):
        return ".bmp"
    if head.startswith(b"\x1f\x8b"):
        return ".nii.gz"
    if head[344:348] in (b"n+1\x00", b"ni1\x00") or head[:4] in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c"):
        return ".nii"
    if head.startswith(b"NRRD"):
        return ".nrrd"
    if b"ObjectType" in head[:200]:
        return ".mha"
    if head[128:132] == b"DICM":
        return ".dcm"
    raise UploadError(415, f"not an image this service reads (npz, {', '.join(IMAGE_SUFFIXES)})")


def _check_pixels(count: int, shape, max_pixels: int) -> None:
    if count > max_pixels:
        raise UploadError(413, f"the image is {tuple(shape)}: {count:,} pixels, more than the {max_pixels:,} this "
                               f"service accepts (--max-pixels)")


def read_case_npz(path: Path, client_name: str | None, max_pixels: int, require_boxes: bool = True) -> Case:
    """A challenge npz (checked as ``predict`` checks it; a stored image may come without ``boxes``); 3D by the
    client's name (``3D...``), else by the width of ``boxes`` (4 or 6), else by the shape of ``imgs``."""
    from medsam_lite.io.npy_header import read_npz_headers

    try:
        headers = read_npz_headers(path)
    except CaseError as exc:
        raise UploadError(422, f"not a readable challenge npz: {exc}") from exc
    if "imgs" not in headers:
        raise UploadError(422, "the npz has no imgs array")
    shape = headers["imgs"].shape
    _check_pixels(int(np.prod(shape, dtype=object)), shape, max_pixels)
    name = safe_name(client_name)
    if not (name.startswith("2D") or name.startswith("3D")):
        boxes = headers.get("boxes")
        width = boxes.shape[1] if boxes is not None and len(boxes.shape) == 2 else None
        is_3d = width == 6 if width in (4, 6) else len(shape) == 3 and shape[-1] != 3
        name = ("3DBox_" if is_3d else "2DBox_") + name
    folder = Path(tempfile.mkdtemp(prefix="read-", dir=path.parent))  # this upload's own: names cannot collide
    named = folder / (name if name.endswith(".npz") else name + ".npz")
    shutil.move(path, named)
    try:
        return load_case(named, require_boxes)
    except CaseError as exc:
        raise UploadError(422, str(exc)) from exc
    finally:
        shutil.move(named, path)
        shutil.rmtree(folder, ignore_errors=True)


def _spacing_and_gts(path: Path, name: str, case: Case) -> tuple[list[float] | None, np.ndarray | None]:
    """A stored npz's ``spacing`` (mm) and ``gts`` (integer labels on the image's grid), each None where absent;
    422 naming the file for one that is no spacing or no such label map."""
    from medsam_lite.io.npy_header import read_npz_headers

    grid = case.image.shape if case.is_3d else case.image.shape[:2]
    try:
        headers = read_npz_headers(path, ("spacing", "gts"))  # a few MB of zeros can claim gigabytes: not loaded
        if "gts" in headers:
            check_grid(headers["gts"].shape, grid, "gts")
        if "spacing" in headers and math.prod(headers["spacing"].shape) > 3:
            raise CaseError(f"spacing has shape {headers['spacing'].shape}; expected 2 or 3 values (mm)")
        with np.load(path, allow_pickle=False) as data:
            spacing = data["spacing"] if "spacing" in data.files else None
            gts = data["gts"] if "gts" in data.files else None
        if spacing is not None:
            spacing = list(check_spacing(spacing, (3,) if case.is_3d else (2, 3)))
        return spacing, None if gts is None else check_label_map(gts, grid, "gts")
    except CaseError as exc:
        raise UploadError(422, f"{name}: {exc}") from exc
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UploadError(422, f"{name}: cannot read spacing or gts: {exc}") from exc


def decode_file(path: Path, suffix: str, client_name: str | None, intensity: Intensity,
                max_pixels: int) -> tuple[np.ndarray, ImageMeta, np.ndarray | None, np.ndarray | None]:
    """The uploaded file -> (model image uint8, meta, gts or None, the stored values of a medical image or None)."""
    name = safe_name(client_name)
    if suffix == ".npz":
        case = read_case_npz(path, client_name, max_pixels, require_boxes=False)
        spacing, gts = _spacing_and_gts(path, name, case)
        meta = ImageMeta(name, "npz", case.is_3d, list(case.image.shape), case.boxes.tolist(), spacing)
        return case.image, meta, gts, None
    from medsam_lite.io.image_case import model_image, resolve_modality
    from medsam_lite.io.read import read_image

    folder = Path(tempfile.mkdtemp(prefix="read-", dir=path.parent))  # this upload's own: names cannot collide
    typed = folder / ("upload" + suffix)
    shutil.move(path, typed)
    try:
        if suffix in (".png", ".jpg", ".jpeg"):
            size = file_header_size(typed)
            if size is not None:
                _check_pixels(size[0] * size[1], size, max_pixels)
        try:
            data = read_image(typed, max_voxels=max_pixels)
        except MissingDependency as exc:
            raise UploadError(415, f"{name}: this server cannot read {suffix} files: {exc}") from exc
        except TooLarge as exc:  # from the header: nothing decoded
            raise UploadError(413, f"{name}: {exc} (--max-pixels)") from exc
        except (ImageError, CaseError) as exc:
            raise UploadError(422, f"{name}: {exc}") from exc
        try:
            try:
                modality = resolve_modality(data, intensity.modality)
            except ImageError:
                if not intensity.fallback:
                    raise
                from medsam_lite.serve.viewer_volume import default_modality

                modality = default_modality(np.asarray(data.pixels))
            window = window_for(modality, intensity.window)
            image = model_image(data, modality, window)
        except (ImageError, CaseError) as exc:
            raise UploadError(422, f"{name}: {exc}") from exc
        _check_pixels(image.size // (1 if data.is_3d else 3), image.shape, max_pixels)
        geometry = None
        if data.geometry is not None:
            geometry = {"origin": list(data.geometry.origin), "spacing": list(data.geometry.spacing),
                        "direction": list(data.geometry.direction)}
        meta = ImageMeta(name, "picture" if data.kind == "raster" else "medical", data.is_3d, list(image.shape),
                         spacing=geometry["spacing"] if geometry else None, geometry=geometry, modality=modality)
        raw = None
        if data.kind == "medical" and not data.is_vector:
            raw = np.asarray(data.pixels).reshape(image.shape if data.is_3d else image.shape[:2])
            meta.value_range = [float(raw.min()), float(raw.max())]
        return image, meta, None, raw
    finally:
        shutil.move(typed, path)
        shutil.rmtree(folder, ignore_errors=True)


def decode_b64_picture(text: str, max_pixels: int) -> np.ndarray:
    """samapi's ``b64img`` (a base64 PNG or JPEG; a browser's ``data:image/...;base64,`` URL too) -> (H, W, 3)
    uint8 RGB by the pre_grey_rgb rules."""
    from medsam_lite.io.intensity import grey_rgb

    if text.startswith("data:") and ";base64," in text[:100]:  # canvas.toDataURL()'s form
        text = text.split(";base64,", 1)[1]
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UploadError(400, f"b64img is not valid base64: {exc}") from exc
    size = header_size(raw[:32], io.BytesIO(raw))
    if size is None:
        raise UploadError(415, "b64img is not a PNG or JPEG image")
    _check_pixels(size[0] * size[1], size, max_pixels)
    try:
        check_jpeg_end(raw)
    except ImageError as exc:
        raise UploadError(422, f"b64img {exc}") from exc
    with opencv_quiet():
        pixels = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise UploadError(422, "b64img could not be decoded (truncated or corrupt image)")
    try:
        return grey_rgb(as_rgb(pixels))
    except ImageError as exc:
        raise UploadError(422, f"b64img {exc}") from exc
