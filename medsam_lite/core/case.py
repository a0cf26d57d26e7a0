"""The case contract: a checked image with its box prompts (``Case``), the error that names what is wrong with
a case (``CaseError``), box checking and the label maps' dtype. Numpy only: no files, no torch.

2D: image (H, W, 3) uint8, boxes (N, 4) ``[x_min, y_min, x_max, y_max]`` in original pixels.
3D: image (D, H, W) uint8, boxes (N, 6) ``[x_min, y_min, z_min, x_max, y_max, z_max]`` (pixels, slice indices;
maxima inclusive).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class CaseError(Exception):
    """A case that cannot be segmented; the message says what is wrong with the file."""


def label_dtype(largest: int) -> type:
    """The dtype of a label map whose largest label is ``largest``: uint8 up to 255, else uint16 (no wrapping)."""
    return np.uint8 if largest <= 255 else np.uint16


@dataclass
class Case:
    """A checked case: image as uint8, boxes as int64 clipped to the image, and warnings to report."""

    name: str
    is_3d: bool
    image: np.ndarray
    boxes: np.ndarray
    warnings: list[str] = field(default_factory=list)
    z_middle: np.ndarray | None = None  # (N,) start slice of each 3D box (2025 layout); None: the box's middle
    fallback: np.ndarray | None = None  # what to write when there are no boxes (2025: prev_pred)
    notes: list[str] = field(default_factory=list)  # things to say once per run, not per case
    until_empty: bool = False  # 3D boxes drawn on one slice: propagate until the mask vanishes (z range = bounds)

    @property
    def label_dtype(self) -> type:
        """uint8 for up to 255 boxes, else uint16 so that labels do not wrap."""
        return label_dtype(len(self.boxes))


MAX_LABEL = 65535  # label maps are written as uint16 at most
LARGEST_COORDINATE = 2**53  # a box coordinate beyond it is a client's mistake (and would overflow int64 past 2**63)


def integer_labels(labels: np.ndarray, name: str) -> np.ndarray:
    """A label map's values as integers 0..MAX_LABEL (integer-valued floats and booleans taken); CaseError naming
    ``name`` for fractional, negative or larger values."""
    if labels.dtype.kind == "b":
        return labels.astype(np.uint8)
    if labels.dtype.kind not in "iuf":
        raise CaseError(f"{name} has dtype {labels.dtype}; expected integer labels")
    if labels.dtype.kind == "f":
        if not np.array_equal(labels, np.round(labels)):  # NaN too
            raise CaseError(f"{name} holds non-integer values ({labels.dtype})")
        labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > MAX_LABEL):
        raise CaseError(f"{name} holds values {labels.min()}..{labels.max()}; labels are 0..{MAX_LABEL}")
    return labels


def check_label_map(labels: np.ndarray, grid: tuple[int, ...], name: str) -> np.ndarray:
    """A label map that must lie on the image's ``grid`` (a challenge ``gts``) -> its ``integer_labels``; CaseError
    naming ``name`` for another grid or other values."""
    check_grid(labels.shape, grid, name)
    return integer_labels(labels, name)


def check_grid(shape: tuple[int, ...], grid: tuple[int, ...], name: str) -> None:
    """CaseError naming ``name`` unless a label map of ``shape`` lies on the image's ``grid`` (also from its .npy
    header alone, before it is read)."""
    if tuple(shape) != tuple(grid):
        raise CaseError(f"{name} is {tuple(shape)} but imgs is {tuple(grid)}: images and labels on different grids")


def check_spacing(raw: np.ndarray, lengths: tuple[int, ...] = (3,)) -> tuple[float, ...]:
    """A case's ``spacing`` array -> its values (mm, in the stored order) as floats; CaseError unless they are
    finite, positive numbers, as many as one of ``lengths`` (3 for a volume's x, y, z)."""
    values = np.asarray(raw)
    if values.dtype.kind not in "iuf":
        raise CaseError(f"spacing has dtype {values.dtype}; expected numbers (mm)")
    flat = values.astype(np.float64).ravel()
    if flat.size not in lengths or not np.all(np.isfinite(flat)) or np.any(flat <= 0):
        count = " or ".join(str(n) for n in lengths)
        raise CaseError(f"spacing is {values.tolist()}; expected {count} positive, finite values (mm)")
    return tuple(float(v) for v in flat)


def is_3d_name(name: str) -> bool:
    """The challenge's rule: a file whose name starts with ``3D`` is a 3D case."""
    return name.startswith("3D")


def too_many_boxes(shape: tuple[int, ...]) -> str:
    """The words for boxes of ``shape`` that are more than a label map can tell apart."""
    return f"boxes has shape {tuple(shape)}: more than the {MAX_LABEL:,} boxes a label map can hold (uint16)"


def check_boxes(boxes: np.ndarray, image_shape: tuple[int, ...], is_3d: bool) -> tuple[np.ndarray, list[str]]:
    """(N, 4|6) boxes against the image: int64, clipped to it (with a warning); CaseError for a box that is
    inverted, empty, or lies wholly outside."""
    width = 6 if is_3d else 4
    if boxes.size == 0:
        return np.zeros((0, width), dtype=np.int64), []
    if boxes.ndim != 2 or boxes.shape[1] != width:
        raise CaseError(f"boxes has shape {boxes.shape}; expected (N, {width})")
    if len(boxes) > MAX_LABEL:
        raise CaseError(too_many_boxes(boxes.shape))
    if not (np.issubdtype(boxes.dtype, np.integer) or np.issubdtype(boxes.dtype, np.floating)):
        raise CaseError(f"boxes has dtype {boxes.dtype}; expected integers")
    if not np.all(np.isfinite(boxes)):
        raise CaseError("boxes holds NaN or infinite values")
    if np.abs(boxes.astype(np.float64)).max() > LARGEST_COORDINATE:  # would wrap or saturate as int64
        raise CaseError(f"boxes holds {boxes.ravel()[np.argmax(np.abs(boxes.astype(np.float64)))]}: coordinates are "
                        f"pixel and slice indices")
    if np.issubdtype(boxes.dtype, np.floating):
        if not np.array_equal(boxes, np.round(boxes)):
            raise CaseError("boxes holds non-integer coordinates; expected pixel/slice indices")
    boxes = boxes.astype(np.int64)
    if is_3d:
        depth, height, width_px = image_shape
        lo_idx, hi_idx, limits = [0, 1, 2], [3, 4, 5], [width_px, height, depth]
    else:
        height, width_px = image_shape[:2]
        lo_idx, hi_idx, limits = [0, 1], [2, 3], [width_px, height]
    axes = "xyz"
    for i, box in enumerate(boxes):
        for a, (lo, hi, n) in enumerate(zip(lo_idx, hi_idx, limits)):
            if box[lo] > box[hi] or (box[lo] == box[hi] and a < 2):
                relation = ">" if box[lo] > box[hi] else "=="
                raise CaseError(
                    f"box {i} has {axes[a]}_min {box[lo]} {relation} {axes[a]}_max {box[hi]} (box {box.tolist()})"
                )
            if box[hi] < 0 or box[lo] > n - 1:
                raise CaseError(
                    f"box {i} {box.tolist()} lies outside the image along {axes[a]} (valid 0..{n - 1})"
                )
    clipped = boxes.copy()
    clipped[:, lo_idx] = np.clip(boxes[:, lo_idx], 0, np.array(limits) - 1)
    clipped[:, hi_idx] = np.clip(boxes[:, hi_idx], 0, np.array(limits) - 1)
    warnings = []
    changed = np.nonzero(np.any(clipped != boxes, axis=1))[0]
    if changed.size:
        shown = ", ".join(str(i) for i in changed[:10]) + (" ..." if changed.size > 10 else "")
        warnings.append(f"{changed.size} box(es) reach outside the image and were clipped to it: {shown}")
    for i, box in enumerate(clipped):
        for a, (lo, hi) in enumerate(zip(lo_idx[:2], hi_idx[:2])):
            if box[lo] >= box[hi]:
                raise CaseError(f"box {i} is empty along {axes[a]} after clipping to the image: {boxes[i].tolist()}")
    return clipped, warnings
