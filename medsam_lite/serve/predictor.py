"""SamPredictor's set-image-once / prompt-many for the service: slice embeddings cached by (image key, slice),
and every segmentation run by the pipeline's own functions (``segment_2d``, ``segment_3d``, ``prompt_masks``)
with embeddings from that cache. Runs on the inference worker only."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Hashable

import numpy as np

from medsam_lite.engines.base import Engine
from medsam_lite.pipeline.prompting import PromptMask, prompt_masks, sam_prompt
from medsam_lite.pipeline.segment import EMBEDDING_BYTES, encode_image, segment_2d, segment_3d, slice_boxes
from medsam_lite.serve.lru import ByteLRU


@dataclass
class Timing:
    """Server-side seconds of a request's inference and how many slices it had to encode."""

    seconds: float = 0.0
    encoded: int = 0
    cached: int = 0


class SlicePredictor:
    def __init__(self, engine: Engine, cache_bytes: int) -> None:
        self.engine = engine  # the service's StoppableEngine: a job whose client has gone stops at its next pass
        self.cache: ByteLRU[tuple[Hashable, int], Any] = ByteLRU(cache_bytes)

    def embedding(self, key: Hashable, z: int, plane: np.ndarray, timing: Timing | None = None) -> Any:
        """The embedding of slice ``z`` of image ``key`` ((H, W) grey or (H, W, 3)), encoded on a miss."""
        found = self.cache.get((key, z))
        if found is not None:
            if timing:
                timing.cached += 1
            return found
        embedding = encode_image(self.engine, np.ascontiguousarray(plane))
        self.cache.put((key, z), embedding, EMBEDDING_BYTES)
        if timing:
            timing.encoded += 1
        return embedding

    def forget(self, key: Hashable) -> int:
        """Drop every cached slice of image ``key`` (along any axis)."""
        return self.cache.discard_where(lambda k: k[0] == key or (isinstance(k[0], tuple) and k[0][0] == key))

    def boxes_2d(self, key: Hashable, z: int, plane: np.ndarray, boxes: np.ndarray, dtype: type) -> tuple[np.ndarray, Timing]:
        """(H, W) labels 1..N of (N, 4) boxes on one 2D image or slice (``plane`` (H, W, 3) or (H, W))."""
        timing, start = Timing(), time.perf_counter()
        rgb = plane if plane.ndim == 3 else np.repeat(plane[:, :, None], 3, -1)
        segs = segment_2d(self.engine, rgb, boxes, dtype=dtype, embedding=self.embedding(key, z, plane, timing))
        timing.seconds = time.perf_counter() - start
        return segs, timing

    def boxes_3d(self, key: Hashable, volume: np.ndarray, boxes: np.ndarray, z_middle: np.ndarray | None,
                 dtype: type) -> tuple[np.ndarray, Timing]:
        """(D, H, W) labels of (N, 6) boxes propagated exactly as ``predict`` does."""
        timing, start = Timing(), time.perf_counter()
        segs = segment_3d(self.engine, volume, boxes, dtype=dtype, z_middle=z_middle,
                          slice_embedding=lambda z: self.embedding(key, z, volume[z], timing))
        timing.seconds = time.perf_counter() - start
        return segs, timing

    def slice_box(self, key: Hashable, volume: np.ndarray, axis: int, z: int, box: np.ndarray,
                  reach: int | None) -> tuple[np.ndarray, Timing]:
        """A box (4,) ``[x_min, y_min, x_max, y_max]`` drawn on slice ``z`` of ``axis`` of a (D, H, W) volume (x, y:
        the other two axes, last first) -> (D, H, W) bool: propagated along ``axis`` until the mask vanishes (at
        most ``reach`` slices each way), exactly ``segment --until-empty`` on the volume turned to that axis."""
        timing, start = Timing(), time.perf_counter()
        turned = np.moveaxis(volume, axis, 0)
        cache_key = key if axis == 0 else (key, axis)  # axis 0 shares the 3D boxes' slices
        boxes = slice_boxes(np.asarray(box)[None], np.array([z]), turned.shape[0], reach)
        segs = segment_3d(self.engine, turned, boxes, z_middle=np.array([z]), until_empty=True,
                          slice_embedding=lambda s: self.embedding(cache_key, s, turned[s], timing))
        timing.seconds = time.perf_counter() - start
        return np.moveaxis(segs, 0, axis) > 0, timing

    def prompt(self, key: Hashable, z: int, plane: np.ndarray, points: np.ndarray | None, point_labels: np.ndarray | None,
               box: np.ndarray | None, multimask: bool) -> tuple[list[PromptMask], Timing]:
        """SAM's point/box prompt on one image: masks with the decoder's IoU estimates."""
        timing, start = Timing(), time.perf_counter()
        original = plane.shape[:2]
        coords, labels = sam_prompt(original, points, point_labels, box)
        masks = prompt_masks(self.engine, self.embedding(key, z, plane, timing), coords, labels, original, multimask)
        timing.seconds = time.perf_counter() - start
        return masks, timing
