"""Overlay PNGs of a segmentation (OpenCV only): the image, or the middle slice, with masks and boxes."""
from __future__ import annotations

import os

import cv2
import numpy as np


def label_colours(n: int) -> np.ndarray:
    """(n + 1, 3) uint8 BGR colours, label 0 black; the same colours every run."""
    rng = np.random.default_rng(2024)
    colours = rng.integers(64, 256, size=(n + 1, 3), dtype=np.int64).astype(np.uint8)
    colours[0] = 0
    return colours


def overlay_image(image: np.ndarray, segs: np.ndarray, boxes: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """2D (H, W, 3) image or 3D (D, H, W) volume with its labels -> (H, W, 3) uint8 BGR picture.

    For 3D the middle slice is drawn, with the boxes that reach it.
    """
    if segs.ndim == 3:
        z = segs.shape[0] // 2
        picture = cv2.cvtColor(np.ascontiguousarray(image[z]), cv2.COLOR_GRAY2BGR)
        labels = segs[z]
        rects = [(i + 1, (b[0], b[1], b[3], b[4])) for i, b in enumerate(boxes) if b[2] <= z <= b[5]]
    else:
        picture = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
        labels = segs
        rects = [(i + 1, tuple(b)) for i, b in enumerate(boxes)]
    colours = label_colours(len(boxes))
    fg = labels > 0
    blended = picture.astype(np.float32)
    blended[fg] = (1 - alpha) * blended[fg] + alpha * colours[labels[fg]].astype(np.float32)
    picture = blended.astype(np.uint8)
    thickness = max(1, round(max(picture.shape[:2]) / 400))
    for label, (x0, y0, x1, y1) in rects:
        colour = tuple(int(c) for c in colours[label])
        cv2.rectangle(picture, (int(x0), int(y0)), (int(x1), int(y1)), colour, thickness)
    return picture


def save_overlay(path: str | os.PathLike[str], image: np.ndarray, segs: np.ndarray, boxes: np.ndarray) -> None:
    """Write the overlay as PNG at ``path`` (atomically)."""
    from .outputs import write_with

    ok, encoded = cv2.imencode(".png", overlay_image(image, segs, boxes))
    if not ok:
        raise OSError(f"OpenCV could not encode the overlay for {path}")
    write_with(path, lambda handle: handle.write(encoded.tobytes()))
