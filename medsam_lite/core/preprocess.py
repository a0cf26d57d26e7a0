"""Image and box transforms of the official pipeline, in numpy/OpenCV (no torch).

Sizes: "original" pixels are those of the input image (H, W); "at 256" means the model input, where the
longest side is resized to 256 and the rest is zero-padded at the bottom/right.
"""
from __future__ import annotations

import cv2
import numpy as np

from medsam_lite.core.case import CaseError, label_dtype

MODEL_SIZE = 256
BOX_MARGIN_256 = 3  # pixels at 256 added around a propagated mask's box


def resized_size(height: int, width: int, target: int = MODEL_SIZE) -> tuple[int, int]:
    """(h, w) after resizing the longest side of (height, width) to ``target``, rounded half up.

    CaseError where the shorter side would round to 0 pixels (an aspect ratio above 2 * target : 1), which
    OpenCV cannot resize to and the model could not see."""
    scale = target * 1.0 / max(height, width)
    h, w = int(height * scale + 0.5), int(width * scale + 0.5)
    if min(h, w) < 1:
        raise CaseError(f"the image is {height} x {width} pixels: resized to {target} on its longer side, its shorter "
                        f"side would be 0 pixels (LiteMedSAM takes aspect ratios up to {2 * target}:1); crop or pad it")
    return h, w


def resize_longest_side(image: np.ndarray, target: int = MODEL_SIZE) -> np.ndarray:
    """(H, W[, C]) uint8 -> (h, w[, C]) uint8 with max(h, w) == target, ``cv2.INTER_AREA``."""
    h, w = resized_size(image.shape[0], image.shape[1], target)
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


def pad_to_square(image: np.ndarray, target: int = MODEL_SIZE) -> np.ndarray:
    """Zero-pad (h, w[, C]) at the bottom/right to (target, target[, C])."""
    pad = [(0, target - image.shape[0]), (0, target - image.shape[1])] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, pad)


def model_input(image_256: np.ndarray) -> np.ndarray:
    """Resized (h, w, 3) uint8 -> (1, 3, 256, 256) float32: min-max normalised, then zero-padded.

    The division is done in float64 and cast to float32, as the official script does.
    """
    lo, hi = image_256.min(), image_256.max()
    norm = (image_256 - lo) / np.clip(hi - lo, a_min=1e-8, a_max=None)
    return np.ascontiguousarray(pad_to_square(norm).astype(np.float32).transpose(2, 0, 1)[None])


def image_to_model_input(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W, 3) or (H, W) uint8 -> ((1, 3, 256, 256) float32, (h, w) of the resized, unpadded image).

    A grey (H, W) slice is resized once and repeated to 3 channels; INTER_AREA works per channel, so this
    equals resizing the repeated image.
    """
    resized = resize_longest_side(image)
    if resized.ndim == 2:
        resized = np.repeat(resized[:, :, None], 3, axis=-1)
    return model_input(resized), (resized.shape[0], resized.shape[1])


def box_to_256(boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """(N, 4) boxes in original pixels -> (N, 4) int64 at 256: ``int(c * 256 / max(H, W))`` per coordinate."""
    ratio = MODEL_SIZE / max(original_size)
    scaled = np.asarray(boxes, dtype=np.float64) * ratio
    return np.trunc(scaled).astype(np.int64)


def mask_box_256(mask: np.ndarray, label: int, margin: int = BOX_MARGIN_256) -> np.ndarray | None:
    """Box at 256 of a previous slice's (H, W) boolean mask, or None where the resized mask is empty.

    The mask is resized holding the label value (not 1), as the official script does: INTER_AREA then
    rounds the average, so partly covered pixels survive for larger labels. Returns int64
    ``[x_min, y_min, x_max, y_max]`` grown by ``margin`` and clamped to [0, 256].
    """
    dtype = label_dtype(label)
    small = resize_longest_side(mask.astype(dtype) * dtype(label))
    ys, xs = np.nonzero(small)
    if ys.size == 0:
        return None
    return np.array(
        [
            max(0, xs.min() - margin),
            max(0, ys.min() - margin),
            min(MODEL_SIZE, xs.max() + margin),
            min(MODEL_SIZE, ys.max() + margin),
        ],
        dtype=np.int64,
    )
