"""Intensity to uint8 as the official preprocessing does it (``pre_CT_MR.py``, ``pre_grey_rgb.py``).

- CT: clip to the window [level - width/2, level + width/2], then min-max of the clipped data to 0..255.
- MR / other: clip to the 0.5 and 99.5 percentiles of the non-zero voxels, min-max to 0..255; zeros stay 0.
- raw: the values as they are (they must be integers 0..255, e.g. an image written by ``convert to-npz``).
Both min-max rules compute in float64 and truncate to uint8 (``np.uint8``), as the official scripts.
"""
from __future__ import annotations

import numpy as np

from medsam_lite.io.image import ImageError

MODALITIES = ("CT", "MR", "other", "raw")
# (level, width) in HU; abdomen is pre_CT_MR.py's default
WINDOWS = {"abdomen": (40.0, 400.0), "lung": (-600.0, 1500.0), "brain": (40.0, 80.0), "bone": (400.0, 1800.0)}
DEFAULT_WINDOW = WINDOWS["abdomen"]


def _min_max_255(values: np.ndarray) -> np.ndarray:
    """float64 (values - min) / (max - min) * 255; a constant image gives zeros."""
    lo, hi = np.min(values), np.max(values)
    if hi == lo:
        return np.zeros(values.shape, np.float64)
    return (values - lo) / (hi - lo) * 255.0


def window_ct(pixels: np.ndarray, level: float, width: float) -> np.ndarray:
    """HU -> uint8: clip to the window, then min-max of the clipped data (pre_CT_MR.py, modality CT)."""
    if width <= 0:
        raise ImageError(f"the CT window width must be positive, not {width:g}")
    clipped = np.clip(pixels.astype(np.float64, copy=False), level - width / 2, level + width / 2)
    return np.uint8(_min_max_255(clipped))


def percentile_normalise(pixels: np.ndarray) -> np.ndarray:
    """-> uint8: clip to the 0.5/99.5 percentiles of the non-zero values, min-max, zeros kept (MR and other)."""
    values = pixels.astype(np.float64, copy=False)
    nonzero = values[values > 0]
    if nonzero.size == 0:
        return np.zeros(pixels.shape, np.uint8)
    lo, hi = np.percentile(nonzero, 0.5), np.percentile(nonzero, 99.5)
    out = _min_max_255(np.clip(values, lo, hi))
    out[values == 0] = 0
    return np.uint8(out)


def check_raw(pixels: np.ndarray) -> np.ndarray:
    """The values unchanged as uint8; they must be integers in 0..255."""
    if pixels.dtype == np.uint8:
        return pixels
    lo, hi = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    if lo < 0 or hi > 255 or not np.array_equal(pixels, np.round(pixels)):
        raise ImageError(f"--modality raw needs integer values 0..255, but they span {lo:g}..{hi:g} "
                         f"({pixels.dtype}); choose --modality CT, MR or other")
    return pixels.astype(np.uint8)


def window_for(modality: str, window: tuple[float, float] | None) -> tuple[float, float] | None:
    """The CT window a modality uses: ``window`` or the default (abdomen 40/400) for CT, None otherwise."""
    return (window or DEFAULT_WINDOW) if modality == "CT" else None


def to_uint8(pixels: np.ndarray, modality: str, window: tuple[float, float] | None = None) -> np.ndarray:
    """Pixels as stored -> uint8 by ``modality`` (see the module docstring); ``window`` (level, width) for CT."""
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise ImageError(f"has {int((~np.isfinite(pixels)).sum()):,} NaN or infinite values; replace them (e.g. by "
                         f"the background value) first")
    if modality == "CT":
        return window_ct(pixels, *(window or DEFAULT_WINDOW))
    if modality in ("MR", "other"):
        return percentile_normalise(pixels)
    if modality == "raw":
        return check_raw(pixels)
    raise ImageError(f"unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}")


def grey_rgb(pixels: np.ndarray) -> np.ndarray:
    """A 2D picture (pre_grey_rgb.py): values above 255 min-max scaled to uint8 (over all channels), grey
    repeated to 3 channels, a 4th (alpha) channel cut -> (H, W, 3) uint8."""
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)):
        raise ImageError(f"has shape {pixels.shape}; a 2D picture needs (H, W), (H, W, 3) or (H, W, 4)")
    if np.max(pixels) > 255.0 or np.min(pixels) < 0:
        pixels = np.uint8(_min_max_255(pixels.astype(np.float64)))
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, -1)
    pixels = pixels[:, :, :3]
    if pixels.dtype != np.uint8:
        pixels = check_raw(pixels)
    return np.ascontiguousarray(pixels)


def modality_of(metadata: str | None) -> str | None:
    """Our modality for a DICOM/MetaImage code: CT, MR, another code -> 'other', none -> None."""
    if metadata is None:
        return None
    return metadata if metadata in ("CT", "MR") else "other"
