"""Agreement between two segmentations of one case: voxel agreement and per-label Dice."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The bar for "computes what the official code computes" where bit-identity cannot be promised: torch's and
# OpenVINO's float sums depend on the CPU's kernels and on the thread count, which moves a few boundary
# pixels by rounding. scripts/check_fidelity.py reports separately how many cases are bit-identical.
MIN_VOXEL_AGREEMENT = 0.99999
MIN_LABEL_DICE = 0.9999


@dataclass
class Agreement:
    """How far ``ours`` is from ``reference``: fraction of equal voxels and the Dice of every label."""

    voxels: float
    label_dice: dict[int, float]
    identical: bool

    @property
    def min_dice(self) -> float:
        return min(self.label_dice.values(), default=1.0)

    @property
    def passes(self) -> bool:
        return self.voxels >= MIN_VOXEL_AGREEMENT and self.min_dice >= MIN_LABEL_DICE


def compare(ours: np.ndarray, reference: np.ndarray) -> Agreement:
    """Compare label maps of equal shape; a label empty in both counts as Dice 1."""
    if ours.shape != reference.shape:
        raise ValueError(f"shapes differ: {ours.shape} vs {reference.shape}")
    labels = np.union1d(np.unique(ours), np.unique(reference))
    dice = {}
    for label in labels[labels > 0]:
        a, b = ours == label, reference == label
        total = int(a.sum()) + int(b.sum())
        dice[int(label)] = 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total
    return Agreement(float(np.mean(ours == reference)), dice, bool(np.array_equal(ours, reference)))
