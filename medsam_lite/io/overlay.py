"""Overlay PNGs of a segmentation (OpenCV only): the image, or the middle slice, with masks and boxes.

Drawn to be read at a glance on grey medical images: each label in the web page's colour (the same list as
``serve/static/labels.js``: saturated, distinct), filled at 40 % with a full-colour outline, and the box that
made it in the same colour.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

# RGB, label i -> PALETTE[(i - 1) % 20]; the web page's list (tests/test_overlay.py keeps the two equal).
PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200),
    (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
]
FILL_ALPHA = 0.4  # the image stays readable under the mask; the outline carries the full colour


def label_colours(n: int) -> np.ndarray:
    """(n + 1, 3) uint8 BGR colours for labels 0..n, label 0 black."""
    colours = np.zeros((n + 1, 3), np.uint8)
    for label in range(1, n + 1):
        r, g, b = PALETTE[(label - 1) % len(PALETTE)]
        colours[label] = (b, g, r)
    return colours


def overlay_image(image: np.ndarray, segs: np.ndarray, boxes: np.ndarray, alpha: float = FILL_ALPHA) -> np.ndarray:
    """2D (H, W, 3) image or 3D (D, H, W) volume with its labels -> (H, W, 3) uint8 BGR picture.

    For 3D the middle slice is drawn, with the boxes that reach it. Boxes in original pixels."""
    if segs.ndim == 3:
        z = segs.shape[0] // 2
        picture = cv2.cvtColor(np.ascontiguousarray(image[z]), cv2.COLOR_GRAY2BGR)
        labels = segs[z]
        rects = [(i + 1, (b[0], b[1], b[3], b[4])) for i, b in enumerate(boxes) if b[2] <= z <= b[5]]
    else:
        picture = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
        labels = segs
        rects = [(i + 1, tuple(b)) for i, b in enumerate(boxes)]
    colours = label_colours(max(len(boxes), int(labels.max(initial=0))))
    fg = labels > 0
    blended = picture.astype(np.float32)
    blended[fg] = (1 - alpha) * blended[fg] + alpha * colours[labels[fg]].astype(np.float32)
    picture = blended.astype(np.uint8)
    thickness = max(1, round(max(picture.shape[:2]) / 400))
    for label in np.unique(labels[fg]):
        contours, _ = cv2.findContours((labels == label).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(picture, contours, -1, tuple(int(c) for c in colours[label]), thickness)
    for label, (x0, y0, x1, y1) in rects:
        colour = tuple(int(c) for c in colours[label])
        cv2.rectangle(picture, (int(x0), int(y0)), (int(x1), int(y1)), colour, thickness)
    return picture


def save_overlay(path: str | os.PathLike[str], image: np.ndarray, segs: np.ndarray, boxes: np.ndarray) -> None:
    """Write the overlay as PNG at ``path`` (atomically)."""
    from medsam_lite.core.atomic import write_with

    ok, encoded = cv2.imencode(".png", overlay_image(image, segs, boxes))
    if not ok:
        raise OSError(f"OpenCV could not encode the overlay for {path}")
    write_with(path, lambda handle: handle.write(encoded.tobytes()))
