"""SAM's automatic mask generation (``SamAutomaticMaskGenerator``) on this project's engines: a grid of
foreground points per crop, the decoder's IoU estimate and the stability score as filters, box NMS within and
across crops, optional removal of small islands and holes.

One difference, for speed on a CPU: the stability score is computed on the logits at 256 (the decoder's own
resolution, cropped to the resized image), not after upsampling every candidate to the original size; only
the masks that pass it are upsampled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np

from medsam_lite.engines.base import Engine
from medsam_lite.pipeline.prompting import PromptMask, prompt_masks, sam_prompt

OUTPUT_TYPES = ("Single mask", "Multi-mask (all)", "Multi-mask (largest)", "Multi-mask (smallest)",
                "Multi-mask (best quality)")


@dataclass
class AutoMaskParams:
    """samapi's /sam/automask/ parameters (its defaults)."""

    points_per_side: int = 32
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    output_type: str = "Single mask"


@dataclass
class AutoMask:
    """A generated mask in the full image: (H, W) bool, XYXY box (inclusive), IoU estimate, stability."""

    mask: np.ndarray
    box: np.ndarray
    iou: float
    stability: float
    point: tuple[float, float]
    crop: tuple[int, int, int, int]


def point_grid(n: int) -> np.ndarray:
    """(n * n, 2) points in [0, 1] (x, y), cell centres, row by row (SAM's ``build_point_grid``)."""
    offset = 1 / (2 * n)
    side = np.linspace(offset, 1 - offset, n)
    return np.stack([np.tile(side[None, :], (n, 1)), np.tile(side[:, None], (1, n))], axis=-1).reshape(-1, 2)


def crop_boxes(height: int, width: int, n_layers: int, overlap_ratio: float) -> list[tuple[tuple[int, int, int, int], int]]:
    """(XYXY crop, layer) of SAM's ``generate_crop_boxes``: the whole image, then 2^k x 2^k overlapping crops."""
    out = [((0, 0, width, height), 0)]
    short = min(height, width)
    for layer in range(n_layers):
        per_side = 2 ** (layer + 1)
        overlap = int(overlap_ratio * short * (2 / per_side))
        crop_w = int(math.ceil((overlap * (per_side - 1) + width) / per_side))
        crop_h = int(math.ceil((overlap * (per_side - 1) + height) / per_side))
        for y0 in [int((crop_h - overlap) * i) for i in range(per_side)]:
            for x0 in [int((crop_w - overlap) * i) for i in range(per_side)]:
                out.append(((x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)), layer + 1))
    return out


def stability_score(logits: np.ndarray, offset: float) -> float:
    """|logits > offset| / |logits > -offset| (SAM's ``calculate_stability_score`` at threshold 0)."""
    union = int(np.count_nonzero(logits > -offset))
    return float(np.count_nonzero(logits > offset)) / union if union else 0.0


def mask_box(mask: np.ndarray) -> np.ndarray:
    """XYXY box of a mask, maxima inclusive; zeros for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return np.zeros(4, np.int64)
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], np.int64)


def box_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Indices kept by greedy NMS on XYXY boxes (inclusive maxima), best score first."""
    order = list(np.argsort(-scores, kind="stable"))
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep = []
    while order:
        i = order.pop(0)
        keep.append(int(i))
        if not order:
            break
        rest = np.array(order)
        w = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]) + 1, 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]) + 1, 0, None)
        iou = w * h / (area[i] + area[rest] - w * h)
        order = [j for j, o in zip(order, iou) if o <= threshold]
    return keep


def remove_small_regions(mask: np.ndarray, area: int) -> tuple[np.ndarray, bool]:
    """Fill holes and drop islands smaller than ``area`` pixels (SAM's ``remove_small_regions``); changed?"""
    changed = False
    for mode in ("holes", "islands"):
        working = (~mask).astype(np.uint8) if mode == "holes" else mask.astype(np.uint8)
        count, regions, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
        small = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] < area]
        if not small:
            continue
        changed = True
        if mode == "holes":
            mask = mask | np.isin(regions, small)
        else:
            keep = [i for i in range(1, count) if i not in small] or [int(np.argmax(stats[1:, cv2.CC_STAT_AREA])) + 1]
            mask = np.isin(regions, keep)
    return mask, changed


def _choose(masks: list[PromptMask], output_type: str) -> list[PromptMask]:
    if output_type in ("Single mask", "Multi-mask (all)"):
        return masks
    if output_type == "Multi-mask (largest)":
        return [max(masks, key=lambda m: int(m.mask.sum()))]
    if output_type == "Multi-mask (smallest)":
        return [min(masks, key=lambda m: int(m.mask.sum()))]
    return [max(masks, key=lambda m: m.iou)]


def generate(engine: Engine, image: np.ndarray, params: AutoMaskParams,
             embedding_of: Callable[[tuple[int, int, int, int], np.ndarray], Any]) -> list[AutoMask]:
    """Masks of an (H, W, 3) uint8 image. ``embedding_of(crop_box, crop_image)``: the embedding of a crop
    (the service caches the whole image's)."""
    if params.output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type {params.output_type!r}: choose one of {', '.join(OUTPUT_TYPES)}")
    if params.points_per_side < 1 or params.crop_n_layers < 0 or params.crop_n_points_downscale_factor < 1:
        raise ValueError("points_per_side and crop_n_points_downscale_factor must be >= 1, crop_n_layers >= 0")
    if not 0 <= params.crop_overlap_ratio < 1:
        raise ValueError(f"crop_overlap_ratio {params.crop_overlap_ratio}: it must be in [0, 1)")
    height, width = image.shape[:2]
    multimask = params.output_type != "Single mask"
    crops = crop_boxes(height, width, params.crop_n_layers, params.crop_overlap_ratio)
    found: list[AutoMask] = []
    for crop, layer in crops:
        x0, y0, x1, y1 = crop
        part = np.ascontiguousarray(image[y0:y1, x0:x1])
        embedding = embedding_of(crop, part)
        side = max(1, int(params.points_per_side / params.crop_n_points_downscale_factor ** layer))
        in_crop = []
        for px, py in point_grid(side) * np.array([x1 - x0, y1 - y0]):
            coords, labels = sam_prompt(part.shape[:2], np.array([[px, py]]), np.array([1]))
            for m in _choose(prompt_masks(engine, embedding, coords, labels, part.shape[:2], multimask), params.output_type):
                if m.iou <= params.pred_iou_thresh:
                    continue
                stability = stability_score(m.low_res, params.stability_score_offset)
                if stability < params.stability_score_thresh or not m.mask.any():
                    continue
                box = mask_box(m.mask)
                if len(crops) > 1 and (x0, y0, x1, y1) != (0, 0, width, height) and _near_crop_edge(box, crop, width, height):
                    continue
                full = np.zeros((height, width), bool)
                full[y0:y1, x0:x1] = m.mask
                in_crop.append(AutoMask(full, box + [x0, y0, x0, y0], m.iou, stability, (px + x0, py + y0), crop))
        if in_crop:
            kept = box_nms(np.stack([a.box for a in in_crop]), np.array([a.iou for a in in_crop]), params.box_nms_thresh)
            found += [in_crop[i] for i in kept]
    if len(crops) > 1 and found:
        areas = np.array([(a.crop[2] - a.crop[0]) * (a.crop[3] - a.crop[1]) for a in found], np.float64)
        found = [found[i] for i in box_nms(np.stack([a.box for a in found]), 1 / areas, params.crop_nms_thresh)]
    if params.min_mask_region_area > 0 and found:
        unchanged = []
        for a in found:
            a.mask, changed = remove_small_regions(a.mask, params.min_mask_region_area)
            a.box = mask_box(a.mask)
            unchanged.append(0.0 if changed else 1.0)
        found = [found[i] for i in box_nms(np.stack([a.box for a in found]), np.array(unchanged), params.box_nms_thresh)
                 if found[i].mask.any()]
    return found


def _near_crop_edge(box: np.ndarray, crop: tuple[int, int, int, int], width: int, height: int, atol: float = 20.0) -> bool:
    """A box (full-image coordinates offset by the crop) that touches a crop edge which is not the image's."""
    x0, y0, _, _ = crop
    full_box = box + [x0, y0, x0, y0]
    crop_edges = np.array(crop[:2] + (crop[2] - 1, crop[3] - 1), np.float64)
    image_edges = np.array([0, 0, width - 1, height - 1], np.float64)
    near_crop = np.isclose(full_box, crop_edges, atol=atol, rtol=0)
    near_image = np.isclose(full_box, image_edges, atol=atol, rtol=0)
    return bool(np.any(near_crop & ~near_image))
