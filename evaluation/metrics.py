"""DSC and NSD of one case, with the leaderboard's semantics (official ``compute_metrics.py``).

- Labels are 1..max(gts). DSC per label; a label absent from both gts and segs has no DSC (the official
  script gets NaN and so a NaN case mean): it is skipped and reported.
- NSD at ``tolerance`` mm over surface elements weighted by area (Nikolov et al. 2021), per label, averaged;
  computed only when the case's mean DSC > 0.2, else 0.
- Arrays are (D, H, W) for 3D with ``spacing`` applied axis by axis as given (the official script passes
  the file's SimpleITK x, y, z spacing unchanged); 2D arrays get a singleton last axis and spacing 1, 1, 1.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .surfels import corner_bit, surfel_areas

NSD_TOLERANCE_MM = 2.0
NSD_MIN_DSC = 0.2


@dataclass
class CaseMetrics:
    """Mean DSC and NSD over the evaluated labels; ``skipped`` are labels absent from both masks."""

    dsc: float
    nsd: float | None
    label_dsc: dict[int, float] = field(default_factory=dict)
    label_nsd: dict[int, float] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)


def label_dice(gts: np.ndarray, segs: np.ndarray) -> tuple[dict[int, float], list[int]]:
    """Dice of every label 1..max(gts) in one pass over the arrays; labels empty in both are skipped."""
    n = int(gts.max()) + 1 if gts.size else 1
    gt_count = np.bincount(gts.ravel(), minlength=n)[:n]
    seg_count = np.bincount(segs.ravel(), minlength=n)[:n]
    same = gts[gts == segs]
    both = np.bincount(same.ravel(), minlength=n)[:n]
    dice, skipped = {}, []
    for label in range(1, n):
        total = int(gt_count[label]) + int(seg_count[label])
        if total == 0:
            skipped.append(label)
        else:
            dice[label] = 2.0 * int(both[label]) / total
    return dice, skipped


def _neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """(n0, n1, n2) bool -> (n0+1, n1+1, n2+1) uint8 code of every voxel corner (the 8 voxels around it)."""
    padded = np.pad(mask.astype(np.uint8), 1)
    n0, n1, n2 = mask.shape
    codes = np.zeros((n0 + 1, n1 + 1, n2 + 1), dtype=np.uint8)
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                codes |= padded[a : a + n0 + 1, b : b + n1 + 1, c : c + n2 + 1] * np.uint8(corner_bit((a, b, c)))
    return codes


def _within_tolerance(points: np.ndarray, targets: np.ndarray, spacing: np.ndarray, tolerance: float) -> np.ndarray:
    """For (n, 3) voxel points: is the nearest of the (m, 3) target points within ``tolerance`` mm?

    The distance to the nearest target is computed as scipy's exact EDT computes it,
    ``sqrt(sum(((p - t) * spacing) ** 2))``, so the result equals thresholding an EDT of the targets.
    """
    if len(targets) == 0:
        return np.zeros(len(points), dtype=bool)
    _, nearest = cKDTree(targets * spacing).query(points * spacing, k=1)
    delta = (points - targets[nearest]).astype(np.float64) * spacing
    return np.sqrt(np.add.reduce(delta * delta, axis=1)) <= tolerance


def surface_dice(gt: np.ndarray, pred: np.ndarray, spacing: tuple[float, float, float], tolerance: float,
                 areas: np.ndarray | None = None) -> float:
    """NSD of two 3-D boolean masks (already cropped to where either is set); NaN if both are empty."""
    areas = surfel_areas(spacing) if areas is None else areas
    code_gt, code_pred = _neighbour_codes(gt), _neighbour_codes(pred)
    border_gt = np.argwhere((code_gt != 0) & (code_gt != 255))
    border_pred = np.argwhere((code_pred != 0) & (code_pred != 255))
    area_gt = areas[code_gt[tuple(border_gt.T)]]
    area_pred = areas[code_pred[tuple(border_pred.T)]]
    total = area_gt.sum() + area_pred.sum()
    if total == 0:
        return float("nan")
    sampling = np.asarray(spacing, dtype=np.float64)
    near_gt = area_gt[_within_tolerance(border_gt, border_pred, sampling, tolerance)].sum()
    near_pred = area_pred[_within_tolerance(border_pred, border_gt, sampling, tolerance)].sum()
    return float((near_gt + near_pred) / total)


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...]:
    if a is None or b is None:
        return a if b is None else b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def label_nsd(gts: np.ndarray, segs: np.ndarray, labels: list[int], spacing: tuple[float, float, float],
              tolerance: float = NSD_TOLERANCE_MM) -> dict[int, float]:
    """NSD of each label, each computed in the bounding box of the label in either array."""
    n = max(labels, default=0)
    boxes_gt = ndimage.find_objects(gts, max_label=n)
    boxes_seg = ndimage.find_objects(segs, max_label=n)
    areas = surfel_areas(spacing)
    result = {}
    for label in labels:
        box = _union_box(boxes_gt[label - 1], boxes_seg[label - 1])
        result[label] = surface_dice(gts[box] == label, segs[box] == label, spacing, tolerance, areas)
    return result


def case_metrics(gts: np.ndarray, segs: np.ndarray, spacing: tuple[float, float, float] | None = None,
                 nsd: bool = True, tolerance: float = NSD_TOLERANCE_MM) -> CaseMetrics:
    """Metrics of one case. 2D (H, W) arrays when ``spacing`` is None; else (D, H, W) with that spacing."""
    if gts.shape != segs.shape:
        raise ValueError(f"segs shape {segs.shape} differs from gts shape {gts.shape}")
    if spacing is None:
        gts, segs, spacing = gts[..., None], segs[..., None], (1.0, 1.0, 1.0)
    gts, segs = np.asarray(gts), np.asarray(segs)
    dice, skipped = label_dice(gts, segs)
    dsc = float(np.mean(list(dice.values()))) if dice else float("nan")
    result = CaseMetrics(dsc, None, dice, {}, skipped)
    if nsd:
        if dsc > NSD_MIN_DSC:
            result.label_nsd = label_nsd(gts, segs, sorted(dice), tuple(float(s) for s in spacing), tolerance)
            result.nsd = float(np.mean(list(result.label_nsd.values())))
        else:
            result.nsd = 0.0
    return result
