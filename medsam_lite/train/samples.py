"""Training samples: every (case, slice, label) whose mask at 256 has at least ``min_pixels`` pixels, with the
target mask laid out as the model's 256x256 logits are (resized as ``predict`` resizes the image, then
zero-padded), and its box with jitter.

Targets are resized with nearest-neighbour from the original label slice, so that a target pixel is a label
of the image pixel under it; the box is the target's tight box, and each side moves by up to ``jitter``
pixels either way (a fresh draw every time a sample is used), so the decoder learns from boxes as loose or
tight as a user's.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from medsam_lite.core.preprocess import MODEL_SIZE, pad_to_square, resized_size
from medsam_lite.train.data import TrainingCase


@dataclass(frozen=True)
class Sample:
    """One target: case index (into the training cases), slice, label value, mirrored or not."""

    case: int
    z: int
    label: int
    flip: bool = False


def labels_256(labels: np.ndarray, flip: bool = False) -> np.ndarray:
    """(H, W) labels -> (256, 256) uint16 at the model's scale (nearest), zero-padded bottom/right."""
    if flip:
        labels = labels[:, ::-1]
    h, w = resized_size(*labels.shape)
    resized = cv2.resize(np.ascontiguousarray(labels, dtype=np.uint16), (w, h), interpolation=cv2.INTER_NEAREST)
    return pad_to_square(resized)


def case_samples(case: TrainingCase, index: int, min_pixels: int, flips: bool) -> tuple[list[Sample], int]:
    """Samples of one case, and how many (slice, label) pairs were too small at 256."""
    samples, skipped = [], 0
    for flip in (False, True) if flips else (False,):
        for z in range(case.slices):
            target = labels_256(case.labels[z], flip)
            values, counts = np.unique(target[target > 0], return_counts=True)
            present = set(np.unique(case.labels[z][case.labels[z] > 0]).tolist())
            big = {int(v) for v, c in zip(values, counts) if c >= min_pixels}
            samples += [Sample(index, z, v, flip) for v in sorted(big)]
            if not flip:
                skipped += len(present - big)
    return samples, skipped


def jittered_box(mask: np.ndarray, jitter: int, rng: np.random.Generator) -> np.ndarray:
    """(256, 256) boolean target -> box [x0, y0, x1, y1] at 256 (float32): tight, each side moved by up to
    ``jitter`` pixels either way, kept inside the image and at least one pixel wide."""
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.int64)
    if jitter:
        box = box + rng.integers(-jitter, jitter + 1, size=4)
    box = np.clip(box, 0, MODEL_SIZE - 1)
    box[2] = max(box[2], box[0] + 1)
    box[3] = max(box[3], box[1] + 1)
    return box.astype(np.float32)


def epoch_order(count: int, per_epoch: int, seed: int, epoch: int) -> np.ndarray:
    """The sample indices of one epoch: a fresh seeded permutation, its first ``per_epoch`` (0: all)."""
    order = np.random.default_rng([seed, epoch]).permutation(count)
    return order[:per_epoch] if per_epoch else order
