"""2D raster files (PNG, JPEG, BMP, TIFF) through OpenCV: read as stored (8 or 16 bit, grey, RGB or RGBA, in
RGB order), and label maps written as PNG."""
from __future__ import annotations

import io
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from medsam_lite.core.atomic import write_with
from medsam_lite.io.image import ImageData, ImageError, TooLarge, case_name

MAX_PIXELS = 1 << 28  # 268 megapixels, checked from the header before decoding


def header_size(head: bytes, handle=None) -> tuple[int, int] | None:
    """(H, W) of a PNG or JPEG from its header, without decoding; None for other formats (OpenCV's own pixel
    limit applies to those). ``head``: the file's first 32 bytes; ``handle``: the open file, for JPEG's markers."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
    if head[:2] != b"\xff\xd8" or handle is None:
        return None
    handle.seek(2)
    while True:
        marker = handle.read(4)
        if len(marker) < 4 or marker[0] != 0xFF:
            return None
        kind, length = marker[1], int.from_bytes(marker[2:4], "big")
        if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):
            frame = handle.read(5)
            return int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big")
        handle.seek(length - 2, 1)


def check_jpeg_end(data: bytes) -> None:
    """ImageError for a JPEG cut short: libjpeg decodes what there is and OpenCV returns the rest as grey (a
    copy or download that stopped part-way, read without a word). A whole JPEG has its end-of-image marker after
    its last scan (entropy-coded data cannot hold FF D9: its FF bytes are stuffed)."""
    if data[:2] == b"\xff\xd8" and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        raise ImageError("is cut short: the JPEG ends before its end-of-image marker (a copy or download that "
                         "stopped part-way; the missing part would be read as grey)")


def file_header_size(path: Path) -> tuple[int, int] | None:
    """``header_size`` of a file."""
    with open(path, "rb") as handle:
        return header_size(handle.read(32), handle)


def as_rgb(pixels: np.ndarray) -> np.ndarray:
    """OpenCV's BGR(A) channel order -> RGB(A); one channel -> (H, W)."""
    if pixels.ndim == 3:
        if pixels.shape[2] == 3:
            return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
        if pixels.shape[2] == 4:
            return cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA)
        if pixels.shape[2] == 1:
            return pixels[:, :, 0]
    return pixels


_quiet_lock = threading.Lock()
_quiet_blocks = 0  # blocks inside opencv_quiet now (the service decodes in several threads)
_level_before = 0  # OpenCV's log level before the first of them


@contextmanager
def opencv_quiet() -> Iterator[None]:
    """OpenCV's own log lines (``[ERROR:0@0.07] global grfmt_png.cpp ... IHDR chunk shall be first``) held back
    within the block: a file it cannot decode gets our one error line naming it instead. The level is restored
    when the last block open in any thread ends."""
    global _quiet_blocks, _level_before
    logging = cv2.utils.logging
    with _quiet_lock:
        if _quiet_blocks == 0:
            _level_before = logging.getLogLevel()
            logging.setLogLevel(logging.LOG_LEVEL_SILENT)
        _quiet_blocks += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_blocks -= 1
            if _quiet_blocks == 0:
                logging.setLogLevel(_level_before)


def read_raster_array(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """(H, W) or (H, W, C) as stored, channels in RGB(A) order; at most ``max_pixels`` (judged from the header)."""
    try:
        data = Path(path).read_bytes()  # read once: the header's size, the JPEG's end and the decoder take it
    except OSError as exc:
        raise ImageError(f"cannot read: {exc}") from exc
    size = header_size(data[:32], io.BytesIO(data))
    if size is not None and size[0] * size[1] > max_pixels:
        raise TooLarge(f"is {size[1]}x{size[0]} pixels; more than the {max_pixels:,} this reads")
    check_jpeg_end(data)
    with opencv_quiet():
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ImageError("cannot read as an image (not a PNG/JPEG/BMP/TIFF file, truncated, or unsupported)")
    return as_rgb(pixels)


def read_raster(path: Path, max_pixels: int = MAX_PIXELS) -> ImageData:
    return ImageData(case_name(path), path, read_raster_array(path, max_pixels), None, None, "raster")


def write_labels_png(path: Path, labels: np.ndarray) -> None:
    """(H, W) uint8 or uint16 label values as a grey PNG, atomically."""
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(labels))
    if not ok:
        raise OSError(f"OpenCV could not encode {path}")
    write_with(path, lambda handle: handle.write(encoded.tobytes()))
