"""From low-resolution logits (at 256) to masks in original pixels, in numpy (no torch).

Matches ``F.interpolate(mode="bilinear", align_corners=False)`` of the cropped logits followed by
``sigmoid > 0.5``: the same source indices and weights (float32, fused multiply-add for the source
coordinate); values may differ from torch in the last bit, which flips a pixel only where a logit is
within about 1e-6 of zero.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from medsam_lite.core.timing import stage

# sigmoid(x) > 0.5 in float32 (torch's CPU kernel) holds exactly for x > 1.5 * 2**-24.
LOGIT_THRESHOLD = np.float32(1.5 * 2.0**-24)


def bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each output index: the two source indices and their float32 weights (half-pixel centres)."""
    scale = np.float32(in_size) / np.float32(out_size)
    centres = np.arange(out_size, dtype=np.float32) + np.float32(0.5)
    src = (np.float64(scale) * centres.astype(np.float64) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0))
    i0 = src.astype(np.int64)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = src - i0.astype(np.float32)
    return i0, i1, np.float32(1) - w1, w1


def upscale_logits(
    logits: np.ndarray,
    resized: tuple[int, int],
    original: tuple[int, int],
    rows: slice = slice(None),
    cols: slice = slice(None),
) -> np.ndarray:
    """(N, 256, 256) logits -> (N, H, W) float32 logits (or the ``rows`` x ``cols`` part of it).

    ``resized`` is the (h, w) of the image before padding; the padding is cropped away first.
    """
    h, w = resized
    cropped = logits[:, :h, :w]
    y0, y1, wy0, wy1 = (a[rows] for a in bilinear_taps(h, original[0]))
    x0, x1, wx0, wx1 = (a[cols] for a in bilinear_taps(w, original[1]))
    rows0, rows1 = cropped[:, y0], cropped[:, y1]
    top = rows0[:, :, x0] * wx0 + rows0[:, :, x1] * wx1
    bottom = rows1[:, :, x0] * wx0 + rows1[:, :, x1] * wx1
    return wy0[:, None] * top + wy1[:, None] * bottom


def foreground(logits: np.ndarray) -> np.ndarray:
    """Logits of any shape -> boolean mask of ``sigmoid(logits) > 0.5``."""
    return logits > LOGIT_THRESHOLD


def _tap_range(i0: np.ndarray, i1: np.ndarray, lo: int, hi: int) -> slice:
    """Output indices whose two source taps reach source indices lo..hi (taps are non-decreasing)."""
    first = int(np.searchsorted(i1, lo, side="left"))
    last = int(np.searchsorted(i0, hi, side="right"))
    return slice(first, last)


def masks_from_logits(
    logits: np.ndarray, resized: tuple[int, int], original: tuple[int, int]
) -> list[tuple[np.ndarray, tuple[slice, slice]]]:
    """(N, 256, 256) logits -> per box a boolean mask of the part of (H, W) that can be foreground, and where.

    Bilinear weights are non-negative, so an output pixel whose four source logits are all <= 0 is <= 0:
    only the output rows/columns that reach a positive source logit are computed, which gives exactly the
    full-image result. A box with no positive logit gets an empty (0, 0) mask.
    """
    h, w = resized
    y0, y1, _, _ = bilinear_taps(h, original[0])
    x0, x1, _, _ = bilinear_taps(w, original[1])
    out = []
    for box_logits in logits[:, :h, :w]:
        positive = box_logits > 0
        rows, cols = np.flatnonzero(positive.any(axis=1)), np.flatnonzero(positive.any(axis=0))
        if rows.size == 0:
            out.append((np.zeros((0, 0), dtype=bool), (slice(0, 0), slice(0, 0))))
            continue
        region = (_tap_range(y0, y1, rows[0], rows[-1]), _tap_range(x0, x1, cols[0], cols[-1]))
        up = upscale_logits(box_logits[None], resized, original, rows=region[0], cols=region[1])[0]
        out.append((foreground(up), region))
    return out


def full_masks(logits: np.ndarray, resized: tuple[int, int], original: tuple[int, int]) -> Iterator[np.ndarray]:
    """(N, 256, 256) logits -> N boolean (H, W) masks in box order (``masks_from_logits`` laid into the image)."""
    with stage("postprocess"):
        parts = masks_from_logits(logits, resized, original)
    for part, (rows, cols) in parts:
        with stage("postprocess"):
            mask = np.zeros(original, dtype=bool)
            mask[rows, cols] = part
        yield mask
