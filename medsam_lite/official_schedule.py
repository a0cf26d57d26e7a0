"""The official script's schedule, for benchmarks: one encoder pass per box per slice, one decoder call per box.

Same maths as ``segment``; only the amount of work differs. It exists to measure what the official
``CVPR24_LiteMedSAM_infer.py`` pays, never as a way to run cases.
"""
from __future__ import annotations

import numpy as np

from .engines.base import Engine
from .preprocess import box_to_256, image_to_model_input, mask_box_256


def _one_box(engine: Engine, embedding, box_256: np.ndarray, resized, original) -> np.ndarray:
    return next(iter(engine.masks(embedding, box_256[None], resized, original)))


def segment_2d_official(engine: Engine, image: np.ndarray, boxes: np.ndarray, dtype: type = np.uint8) -> np.ndarray:
    """One encoder pass for the image, then one decoder call per box."""
    segs = np.zeros(image.shape[:2], dtype=dtype)
    model_in, resized = image_to_model_input(image)
    embedding = engine.encode(model_in)
    for label, box in enumerate(box_to_256(boxes, image.shape[:2]), 1):
        segs[_one_box(engine, embedding, box, resized, image.shape[:2])] = label
    return segs


def segment_3d_official(engine: Engine, volume: np.ndarray, boxes: np.ndarray, dtype: type = np.uint8) -> np.ndarray:
    """Box after box: up from the middle slice, then down; every slice re-encoded for every box."""
    depth, height, width = volume.shape
    original = (height, width)
    segs = np.zeros(volume.shape, dtype=dtype)
    for label, box in enumerate(boxes, 1):
        x0, y0, z0, x1, y1, z1 = (int(v) for v in box)
        box_256 = box_to_256(np.array([x0, y0, x1, y1]), original)
        z_middle = int((z1 - z0) / 2 + z0)
        own = np.zeros(volume.shape, dtype=bool)
        upward = list(range(z_middle, min(z1 + 1, depth)))
        downward = list(range(z_middle - 1, max(-1, z0 - 1), -1))
        for z, previous in [(z, z - 1) for z in upward] + [(z, z + 1) for z in downward]:
            model_in, resized = image_to_model_input(volume[z])
            embedding = engine.encode(model_in)
            prompt = box_256 if z == z_middle else mask_box_256(own[previous], label)
            if prompt is None:
                prompt = box_256
            own[z] = _one_box(engine, embedding, prompt, resized, original)
        segs[own] = label
    return segs
