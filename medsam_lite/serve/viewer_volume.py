"""Raw intensities from a viewer -> the model's uint8 volume, by the same rules as ``segment``
(``io.intensity``): ``serve --modality`` (and ``--window...`` for CT) where given, else the file's metadata where
there is one, else a uint8 image as it is and anything else by the 0.5-99.5 percentile rule ('other')."""
from __future__ import annotations

import numpy as np

from medsam_lite.io.image import ImageError
from medsam_lite.io.intensity import to_uint8, window_for
from medsam_lite.serve.settings import ServeSettings
from medsam_lite.serve.uploads import UploadError


def default_modality(pixels: np.ndarray) -> str:
    """The rule for an image whose metadata names none and with no ``serve --modality``: 'raw' for uint8, else
    'other' (percentiles of the non-zero voxels: sensible for MR, usable for CT; give --modality CT for HU)."""
    return "raw" if pixels.dtype == np.uint8 else "other"


def rule_name(modality: str, window: tuple[float, float] | None) -> str:
    return f"CT window {window[0]:g}/{window[1]:g}" if modality == "CT" and window else modality


def to_model_volume(pixels: np.ndarray, settings: ServeSettings) -> tuple[np.ndarray, str]:
    """(D0, D1, D2) raw values -> (uint8 volume, the rule applied); UploadError 400 when the rule refuses them."""
    modality = settings.modality or default_modality(pixels)
    window = window_for(modality, settings.window)
    if pixels.dtype == np.bool_:
        pixels = pixels.astype(np.uint8)
    try:
        return np.ascontiguousarray(to_uint8(pixels, modality, window)), rule_name(modality, window)
    except ImageError as exc:
        raise UploadError(400, f"the image: {exc}") from exc
