"""Box prompts for an image: from a JSON file, or the tight boxes of the labels of a label map.

Coordinates are array indices of the image as read (``ImageData.pixels``), maxima inclusive::

         x (columns, last axis) ->
      y  +---------------------+        3D: z is the slice (first axis) of the (D, H, W) array;
      |  |   [x_min, y_min]    |        a 3D box is [x_min, y_min, z_min, x_max, y_max, z_max]
      v  |        +------+     |        and starts on its middle slice (or its own z_mid).
         |        |      |     |
         |        +------+     |        2D box: [x_min, y_min, x_max, y_max].
         |     [x_max, y_max]  |
         +---------------------+

JSON: a list of boxes, or an object whose ``boxes`` key holds that list, optionally with ``labels`` (the label
value of each box, default 1..N) and, for 3D, ``z_mid`` (the slice each box starts on, default its middle). A 3D
box may also be a CVPR 2025 dict ``{z_min, z_max, z_mid, z_mid_x_min, z_mid_y_min, z_mid_x_max, z_mid_y_max}``. The ``<case>.json`` that ``segment`` writes reads back the same way.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsam_lite.core.case import LARGEST_COORDINATE, MAX_LABEL, CaseError, integer_labels, label_dtype
from medsam_lite.io.layout2025 import boxes_from_dicts
from medsam_lite.io.image import ImageData, ImageError


@dataclass
class Prompts:
    """(N, 4) or (N, 6) int64 boxes, (N,) label values written for them, (N,) start slices or None."""

    boxes: np.ndarray
    labels: np.ndarray
    z_middle: np.ndarray | None
    source: str  # what they came from, for the record

    def __len__(self) -> int:
        return len(self.boxes)


def _box_list(value, where: str) -> tuple[list, list | None, list | None]:
    if isinstance(value, dict):
        if "boxes" not in value:
            raise ImageError(f"{where} is a JSON object without a 'boxes' key (has: {', '.join(value) or 'nothing'})")
        labels, middles = value.get("labels"), value.get("z_mid")
        value = value["boxes"]
    else:
        labels = middles = None
    if not isinstance(value, list):
        raise ImageError(f"{where}: boxes must be a JSON list, not {type(value).__name__}")
    return value, labels, middles


def integer_boxes(items: list, width: int, where: str) -> np.ndarray:
    """JSON boxes (lists of ``width`` integers: a box file, a service request) -> (N, width) int64; ImageError
    naming ``where`` and the box that is not ``width`` integer pixel or slice indices."""
    rows = []
    for i, item in enumerate(items):
        if not isinstance(item, list) or len(item) != width:
            got = f"{len(item)} numbers" if isinstance(item, list) else type(item).__name__
            raise ImageError(f"{where}: box {i} is {got}; a {'3D' if width == 6 else '2D'} box is {width} integers")
        for v in item:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:  # v != v: NaN
                raise ImageError(f"{where}: box {i} has {v!r}; coordinates are integer indices")
            if abs(v) > LARGEST_COORDINATE:  # infinities too
                raise ImageError(f"{where}: box {i} has {v!r}: a coordinate beyond 2**53 is no pixel or slice index")
            if v != int(v):
                raise ImageError(f"{where}: box {i} has {v!r}; coordinates are integer indices")
        rows.append([int(v) for v in item])
    return np.array(rows, dtype=np.int64).reshape(-1, width)


def _labels(labels, count: int, where: str) -> np.ndarray:
    if labels is None:
        return np.arange(1, count + 1, dtype=np.int64)
    if not isinstance(labels, list) or len(labels) != count:
        raise ImageError(f"{where}: 'labels' must be a list of {count} integers, one per box")
    for v in labels:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_LABEL:
            raise ImageError(f"{where}: label {v!r} is not an integer 1..{MAX_LABEL}")
    return np.array(labels, dtype=np.int64)


def boxes_from_json(path: Path, is_3d: bool) -> Prompts:
    """Read a box JSON file (see the module docstring) for a 3D or 2D image; ImageError says what is wrong."""
    where = path.name
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ImageError(f"cannot read the box file {where}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImageError(f"the box file {where} is not valid JSON: {exc}") from exc
    items, labels, middles = _box_list(value, where)
    z_middle = None
    if middles is not None:
        if not is_3d:
            raise ImageError(f"{where}: 'z_mid' is for 3D boxes; this image is 2D")
        if not isinstance(middles, list) or len(middles) != len(items):
            raise ImageError(f"{where}: 'z_mid' must be a list of {len(items)} integers, one per box")
        z_middle = integer_boxes([middles], len(items), where + " z_mid")[0] if items else np.zeros(0, np.int64)
    if items and all(isinstance(item, dict) for item in items):
        if not is_3d:
            raise ImageError(f"{where}: dict boxes (2025 layout) are 3D; this image is 2D")
        try:
            boxes, z_middle = boxes_from_dicts(np.array(items, dtype=object))
        except (ValueError, OverflowError) as exc:
            raise ImageError(f"{where}: {exc}") from exc
    else:
        boxes = integer_boxes(items, 6 if is_3d else 4, where)
    return Prompts(boxes, _labels(labels, len(boxes), where), z_middle, f"boxes from {where}")


def label_values_of(segs: np.ndarray, values) -> np.ndarray:
    """Labels 1..N in box order -> the label value of each box (0 stays 0); uint8, uint16 past 255."""
    values = np.asarray(values, dtype=np.int64)
    lut = np.zeros(len(values) + 1, dtype=label_dtype(int(values.max(initial=0))))
    lut[1:] = values
    return lut[segs]


def tight_boxes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label map (D, H, W) or (H, W) -> (label values (N,), boxes (N, 6) or (N, 4)) of each value > 0:
    ``[x_min, y_min, (z_min,) x_max, y_max, (z_max)]``, maxima inclusive, sorted by value."""
    flat = np.flatnonzero(labels)
    values = labels.reshape(-1)[flat]
    order = np.argsort(values, kind="stable")
    flat, values = flat[order], values[order]
    unique, starts = np.unique(values, return_index=True)
    coords = np.unravel_index(flat, labels.shape)  # (z,) y, x
    lows = [np.minimum.reduceat(c, starts) if len(flat) else c[:0] for c in coords]
    highs = [np.maximum.reduceat(c, starts) if len(flat) else c[:0] for c in coords]
    xyz_low, xyz_high = lows[::-1], highs[::-1]  # x, y, (z)
    boxes = np.stack([*xyz_low, *xyz_high], axis=1).astype(np.int64)
    return unique.astype(np.int64), boxes.reshape(len(unique), 2 * labels.ndim)


def widen_thin_boxes(boxes: np.ndarray, plane: tuple[int, int]) -> np.ndarray:
    """In place: a box one pixel wide or high (x_min == x_max) gets a second pixel, inside an (H, W) plane, so
    that ``check_boxes`` (which refuses empty boxes) takes it."""
    height, width = plane
    half = boxes.shape[1] // 2
    for lo, hi, size in ((0, half, width), (1, half + 1, height)):
        thin = boxes[:, lo] == boxes[:, hi]
        grow = thin & (boxes[:, hi] < size - 1)
        boxes[grow, hi] += 1
        boxes[thin & ~grow, lo] -= 1
    return boxes


def label_values(label_map: ImageData, image: ImageData) -> np.ndarray:
    """The label map's integer values, checked against the image: same grid and geometry."""
    labels = label_map.pixels
    if label_map.is_vector:
        raise ImageError(f"the label map {label_map.source.name} has colour channels; expected one label per pixel")
    expected = image.pixels.shape if not image.is_vector else image.pixels.shape[:2]
    if labels.shape != expected:
        raise ImageError(f"the label map {label_map.source.name} is {labels.shape[::-1]} (x, y, z) but the image "
                         f"is {expected[::-1]}")
    if image.geometry is not None and label_map.geometry is not None and not label_map.geometry.matches(image.geometry):
        raise ImageError(f"the label map {label_map.source.name} lies elsewhere than the image: "
                         f"{label_map.geometry.describe()} vs {image.geometry.describe()}")
    try:
        return integer_labels(labels, f"the label map {label_map.source.name}")
    except CaseError as exc:
        raise ImageError(str(exc)) from exc


def boxes_from_label_map(label_map: ImageData, image: ImageData, margin: int = 0) -> Prompts:
    """One box per label value of ``label_map``: its tight box, grown by ``margin`` pixels in x and y (not z)
    and clipped to the image; the label values are kept for the output."""
    labels = label_values(label_map, image)
    if not image.is_3d and labels.ndim == 3:
        labels = labels[0]  # a one-slice volume, segmented as 2D
    values, boxes = tight_boxes(labels)
    height, width = image.plane_shape
    half = boxes.shape[1] // 2
    widen_thin_boxes(boxes, (height, width))
    if margin:
        boxes[:, [0, 1]] = np.maximum(boxes[:, [0, 1]] - margin, 0)
        boxes[:, [half, half + 1]] = np.minimum(boxes[:, [half, half + 1]] + margin, [width - 1, height - 1])
    return Prompts(boxes, values, None, f"tight boxes of the labels of {label_map.source.name}"
                   + (f" + {margin} px" if margin else ""))
