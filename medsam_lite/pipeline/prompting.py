"""Point and box prompts as SAM's ``SamPredictor.predict`` takes them, on this project's engines: one image's
embedding, any number of prompts, masks in original pixels with the decoder's IoU estimates.

Coordinates in original pixels (x, y). Points are scaled to 256 as SAM's ``ResizeLongestSide`` does (float);
a box as LiteMedSAM's challenge path does (``box_to_256``: truncated), entering as two corner points
(labels 2, 3). Without a box, SAM's padding point (label -1) is appended.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medsam_lite.engines.base import Engine
from medsam_lite.core.postprocess import masks_from_logits
from medsam_lite.core.preprocess import MODEL_SIZE, box_to_256, resized_size
from medsam_lite.core.timing import stage


@dataclass
class PromptMask:
    """One mask of a prompt: (H, W) bool in original pixels, the decoder's IoU estimate, and its logits at 256
    (cropped to the resized image) for stability scores."""

    mask: np.ndarray
    iou: float
    low_res: np.ndarray


def sam_prompt(original: tuple[int, int], points: np.ndarray | None = None, point_labels: np.ndarray | None = None,
               box: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Prompt in original pixels -> ((K, 2) float32 coordinates at 256, (K,) float32 SAM labels)."""
    ratio = MODEL_SIZE / max(original)
    coords, labels = [], []
    if points is not None and len(points):
        coords.append(np.asarray(points, np.float64).reshape(-1, 2) * ratio)
        labels.append(np.asarray(point_labels, np.float64).reshape(-1))
    if box is not None:
        coords.append(box_to_256(np.asarray(box).reshape(1, 4), original).reshape(2, 2).astype(np.float64))
        labels.append(np.array([2.0, 3.0]))
    else:
        coords.append(np.zeros((1, 2)))
        labels.append(np.array([-1.0]))
    return np.concatenate(coords).astype(np.float32), np.concatenate(labels).astype(np.float32)


def prompt_masks(engine: Engine, embedding: Any, coords_256: np.ndarray, labels: np.ndarray,
                 original: tuple[int, int], multimask: bool) -> list[PromptMask]:
    """SAM's choice of outputs: the three multimask tokens when ``multimask``, else the single-mask token."""
    logits, iou = engine.prompt_logits(embedding, coords_256, labels)
    chosen = [1, 2, 3] if multimask else [0]
    resized = resized_size(*original)
    with stage("postprocess"):
        parts = masks_from_logits(logits[chosen], resized, original)
        out = []
        for index, (part, (rows, cols)) in zip(chosen, parts):
            mask = np.zeros(original, dtype=bool)
            mask[rows, cols] = part
            out.append(PromptMask(mask, float(iou[index]), logits[index, : resized[0], : resized[1]]))
    return out
