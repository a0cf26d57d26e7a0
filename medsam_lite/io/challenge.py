"""The challenge ``.npz`` case, read and checked (``load_case`` -> ``core.case.Case``).

2D: ``imgs`` (H, W, 3) uint8, ``boxes`` (N, 4) ``[x_min, y_min, x_max, y_max]`` in original pixels.
3D (file name starts with ``3D``): ``imgs`` (D, H, W) uint8, ``boxes`` (N, 6)
``[x_min, y_min, z_min, x_max, y_max, z_max]`` (pixels, slice indices; maxima inclusive), or the CVPR 2025
layout (``layout2025``): a list of box dicts that start at their own ``z_mid``, ``boxes`` possibly missing
(then ``prev_pred`` or zeros are written), ``clicks`` ignored.
"""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from medsam_lite.core.case import MAX_LABEL, Case, CaseError, check_boxes, is_3d_name, too_many_boxes
from medsam_lite.io.layout2025 import UnsafePickle, boxes_from_dicts, read_object_array
from medsam_lite.io.npy_header import ArrayHeader, read_npz_headers


ZIP_STARTS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive's first member, or an empty archive
NPY_START = b"\x93NUMPY"


def _check_start(path: Path) -> None:
    """CaseError unless the file starts as a zip archive or an .npy array: anything else numpy would try to read
    as a pickle and answer with advice about ``allow_pickle``."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(NPY_START))
    except OSError as exc:
        raise CaseError(f"cannot read: {exc.strerror or exc}") from exc
    if not head:
        raise CaseError("not an .npz archive: the file is empty")
    if not head.startswith(ZIP_STARTS) and head != NPY_START:
        raise CaseError(f"not an .npz archive: neither a zip archive nor an .npy array (it starts with {head!r})")


def open_npz(path: Path) -> np.lib.npyio.NpzFile:
    """The .npz archive at ``path``, opened without unpickling anything; CaseError saying what it is instead (the
    caller names the file)."""
    _check_start(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise CaseError(f"cannot read as .npz (truncated or not an npz file): {exc}") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise CaseError("not an .npz archive (it holds a single .npy array)")
    return data


def _read_arrays(path: Path, is_3d: bool, require_boxes: bool) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays of a case (``imgs``; ``boxes`` and ``prev_pred`` where present) and the names in the file.

    Nothing is unpickled by numpy: a pickled ``boxes`` (the 2025 layout) goes through ``layout2025``."""
    with open_npz(path) as data:
        required = ("imgs", "boxes") if require_boxes and not is_3d else ("imgs",)  # a 2025 3D case may have none
        missing = [k for k in required if k not in data.files]
        if missing:
            raise CaseError(f"missing array(s) {', '.join(missing)} (has: {', '.join(data.files) or 'none'})")
        arrays = {}
        headers = read_npz_headers(path, ("imgs", "boxes", "prev_pred"))
        for key in ("imgs", "boxes", "prev_pred"):
            if key not in data.files:
                continue
            stand_in = _not_to_load(key, headers, is_3d)
            if stand_in is not None:
                arrays[key] = stand_in
                continue
            try:
                arrays[key] = data[key]
            except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
                if key == "boxes" and "allow_pickle" in str(exc):  # an object array: the 2025 layout
                    arrays[key] = _read_pickled_boxes(path)
                elif "allow_pickle" in str(exc):
                    raise CaseError(f"{key} is a pickled object array; expected numbers") from exc
                else:
                    raise CaseError(f"cannot read as .npz (truncated or corrupt member): {exc}") from exc
        return arrays, list(data.files)


def _not_to_load(key: str, headers: dict[str, ArrayHeader], is_3d: bool) -> np.ndarray | None:
    """What stands in for an array that its header shows is not to be read (a few MB of zeros in a file can
    claim gigabytes): CaseError for more boxes than a label map holds; for a ``prev_pred`` off the image's grid,
    which is never used, an array of its shape and dtype that takes no memory. None: read it."""
    header = headers.get(key)
    if header is None or header.dtype.hasobject:
        return None
    if key == "boxes" and math.prod(header.shape) > MAX_LABEL * 6:
        raise CaseError(too_many_boxes(header.shape) + "; not loaded")
    image = headers.get("imgs")
    if key == "prev_pred" and image is not None:
        grid = image.shape if is_3d else image.shape[:2]
        if header.shape != tuple(grid):
            return np.broadcast_to(np.zeros((), header.dtype), header.shape)
    return None


def _read_pickled_boxes(path: Path) -> np.ndarray:
    try:
        return read_object_array(path, "boxes")
    except UnsafePickle as exc:
        raise CaseError(f"boxes is a pickle that was refused: {exc}") from exc
    except (ValueError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise CaseError(f"cannot read boxes: {exc}") from exc


def _check_image(imgs: np.ndarray, is_3d: bool) -> tuple[np.ndarray, list[str]]:
    expected = "(D, H, W)" if is_3d else "(H, W, 3)"
    shape_ok = imgs.ndim == 3 and (is_3d or imgs.shape[2] == 3)
    if not shape_ok:
        raise CaseError(f"imgs has shape {imgs.shape}; a {'3D' if is_3d else '2D'} case needs {expected}")
    if is_3d and imgs.shape[2] == 3 and imgs.shape[1] > 3:
        raise CaseError(f"imgs has shape {imgs.shape}, an RGB 2D image; a 3D case needs (D, H, W) grey slices")
    if min(imgs.shape) == 0:
        raise CaseError(f"imgs is empty (shape {imgs.shape})")
    if imgs.dtype == np.uint8:
        return imgs, []
    if not np.issubdtype(imgs.dtype, np.integer):
        raise CaseError(f"imgs has dtype {imgs.dtype}; expected uint8 (integer values 0..255)")
    lo, hi = int(imgs.min()), int(imgs.max())
    if lo < 0 or hi > 255:
        raise CaseError(f"imgs values span {lo}..{hi}; expected 0..255 (uint8)")
    return imgs.astype(np.uint8), [f"imgs converted from {imgs.dtype} to uint8 (values 0..255, lossless)"]


def _boxes_2025(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    try:
        return boxes_from_dicts(raw)
    except ValueError as exc:
        raise CaseError(f"boxes (2025 layout): {exc}") from exc


def _fallback(arrays: dict[str, np.ndarray], shape: tuple[int, ...]) -> tuple[np.ndarray | None, str]:
    """prev_pred when a case has no boxes and prev_pred fits the image, else None; and what is written."""
    previous = arrays.get("prev_pred")
    if previous is None:
        return None, "writing an all-zero segmentation"
    if previous.shape == shape and np.issubdtype(previous.dtype, np.integer) \
            and previous.size and 0 <= previous.min() and previous.max() <= 255:
        return previous.astype(np.uint8), "writing prev_pred (the previous prediction) unchanged"
    return None, (f"writing an all-zero segmentation (prev_pred is {previous.shape} {previous.dtype}, not labels "
                  f"0..255 on the image's grid {shape})")


def load_case(path: str | Path, require_boxes: bool = True) -> Case:
    """Read and check ``path``; raise CaseError with a message naming the problem. ``require_boxes`` False: a
    2D case without ``boxes`` is read too (for prompts that come from elsewhere: a request, label maps)."""
    path = Path(path)
    is_3d = is_3d_name(path.name)
    arrays, names = _read_arrays(path, is_3d, require_boxes)
    image, warnings = _check_image(arrays["imgs"], is_3d)
    raw = arrays.get("boxes", np.zeros((0, 6), np.int64))
    z_middle = None
    if raw.dtype.hasobject:
        if not is_3d:
            raise CaseError("boxes holds objects; a 2D case needs an (N, 4) integer array")
        raw, z_middle = _boxes_2025(raw)
    boxes, box_warnings = check_boxes(raw, image.shape, is_3d)
    if z_middle is not None:
        z_middle = np.clip(z_middle, boxes[:, 2], boxes[:, 5])  # the box itself was clipped to the volume
    fallback = None
    if len(boxes) == 0:
        fallback, written = _fallback(arrays, image.shape)
        warnings.append(f"no boxes: {written}" if "boxes" in names else f"no boxes array (2025 layout): {written}")
    if len(boxes) > 255:
        warnings.append(f"{len(boxes)} boxes: segs is written as uint16 so that labels do not wrap")
    notes = []
    if "clicks" in names:
        notes.append("clicks (2025 layout) are ignored: LiteMedSAM is prompted by boxes only")
    return Case(path.name, is_3d, image, boxes, warnings + box_warnings, z_middle, fallback, notes)
