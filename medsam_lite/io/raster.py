"""2D raster files (PNG, JPEG, BMP, TIFF) through OpenCV: read as stored (8 or 16 bit, grey, RGB or RGBA, in
RGB order), and label maps written as PNG."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..outputs import write_with
from .image import ImageData, ImageError, case_name

MAX_PIXELS = 1 << 28  # 268 megapixels, checked from the header before decoding


def _header_size(path: Path) -> tuple[int, int] | None:
    """(H, W) from a PNG header without decoding (other formats: None, OpenCV's own limit applies)."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
    return None


def read_raster_array(path: Path) -> np.ndarray:
    """(H, W) or (H, W, C) as stored, channels in RGB(A) order."""
    try:
        size = _header_size(path)
    except OSError as exc:
        raise ImageError(f"cannot read: {exc}") from exc
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise ImageError(f"is {size[1]}x{size[0]} pixels; more than the {MAX_PIXELS:,} this reads")
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ImageError("cannot read as an image (not a PNG/JPEG/BMP/TIFF file, truncated, or unsupported)")
    if pixels.ndim == 3:
        if pixels.shape[2] == 3:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
        elif pixels.shape[2] == 4:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA)
        elif pixels.shape[2] == 1:
            pixels = pixels[:, :, 0]
    return pixels


def read_raster(path: Path) -> ImageData:
    return ImageData(case_name(path), path, read_raster_array(path), None, None, "raster")


def write_labels_png(path: Path, labels: np.ndarray) -> None:
    """(H, W) uint8 or uint16 label values as a grey PNG, atomically."""
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(labels))
    if not ok:
        raise OSError(f"OpenCV could not encode {path}")
    write_with(path, lambda handle: handle.write(encoded.tobytes()))
