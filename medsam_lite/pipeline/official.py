"""The official script's schedule, for benchmarks: one encoder pass per box per slice, one decoder call per box.

Same maths as ``segment``; only the amount of work differs. It exists to measure what the official
``CVPR24_LiteMedSAM_infer.py`` pays as a user runs it (``predict --schedule official``, used by
``benchmarks/bench_predict.py``), never as a way to run cases. That mode also pays what the official script
pays around the model: ``import_official_startup`` loads matplotlib and pandas (the official script imports
both at start-up), and ``save_official_overlay`` draws the two-panel matplotlib figure that the official
script saves at dpi 300 for every case. Only that mode imports them (``pip install -e ".[bench]"``); the
schedule functions themselves need numpy alone.
"""
from __future__ import annotations

import numpy as np

from medsam_lite.engines.base import Engine
from medsam_lite.core.preprocess import box_to_256, image_to_model_input, mask_box_256

BENCH_INSTALL = 'pip install -e ".[bench]"'


def import_official_startup() -> None:
    """Import what the official script imports besides torch (matplotlib with the Agg backend, pandas).

    Raises ImportError naming the install command when they are missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
        import pandas  # noqa: F401  (the official script imports it for its efficiency.csv)
    except ImportError as exc:
        raise ImportError(f"the official schedule (a benchmark mode) needs matplotlib and pandas: {BENCH_INSTALL}") from exc


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


def save_official_overlay(path, image: np.ndarray, segs: np.ndarray, boxes: np.ndarray) -> None:
    """Image and image-with-masks side by side, 10x5 inches at dpi 300, like the official overlay."""
    import_official_startup()
    import matplotlib.pyplot as plt

    is_3d = segs.ndim == 3
    z = segs.shape[0] // 2 if is_3d else None
    shown = image[z] if is_3d else image
    labels = segs[z] if is_3d else segs
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    for ax, title in zip(axes, ("Image", "LiteMedSAM Segmentation")):
        ax.imshow(shown, cmap="gray" if is_3d else None)
        ax.set_title(title)
        ax.axis("off")
    rng = np.random.default_rng(2024)
    for label, box in enumerate(boxes, 1):
        if is_3d and not (labels == label).any():
            continue
        colour = rng.random(3)
        x0, y0, x1, y1 = (box[0], box[1], box[3], box[4]) if is_3d else box[:4]
        axes[1].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, edgecolor=colour, facecolor=(0, 0, 0, 0), lw=2))
        overlay = (labels == label)[..., None] * np.concatenate([colour, [0.5]])[None, None]
        axes[1].imshow(overlay)
    plt.tight_layout()
    plt.savefig(path, dpi=300)
    plt.close(fig)
