"""Make the synthetic sanity cases in test_demo/: bright ellipses/ellipsoids on a noisy background.

Writes test_demo/imgs/*.npz (imgs, boxes[, spacing]) and test_demo/gts/*.npz (gts[, spacing]) in the
challenge layout; boxes are the tight boxes of the ground-truth labels. Deterministic (seeded).
Usage: python scripts/make_test_demo.py [--out test_demo]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def tight_boxes(gts: np.ndarray) -> np.ndarray:
    """(N, 2*ndim) int64 tight boxes of labels 1..N, ordered [mins..., maxs...] in x, y[, z] order."""
    boxes = []
    for label in range(1, int(gts.max()) + 1):
        idx = np.nonzero(gts == label)
        axes = idx[::-1]  # x, y[, z]
        boxes.append([int(a.min()) for a in axes] + [int(a.max()) for a in axes])
    return np.array(boxes, dtype=np.int64)


def ellipse_mask(shape: tuple[int, ...], centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def render(gts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 image: dark noisy background, each label a different brightness."""
    image = rng.normal(40, 8, gts.shape)
    for label in range(1, int(gts.max()) + 1):
        image[gts == label] = rng.normal(120 + 40 * label, 10, int((gts == label).sum()))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_2d(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    gts = np.zeros((240, 320), dtype=np.uint8)
    gts[ellipse_mask(gts.shape, (80, 90), (40, 55))] = 1
    gts[ellipse_mask(gts.shape, (160, 230), (35, 30))] = 2
    image = render(gts, rng)
    return np.repeat(image[:, :, None], 3, axis=2), gts


def make_3d(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    gts = np.zeros((12, 160, 192), dtype=np.uint8)
    gts[ellipse_mask(gts.shape, (5, 60, 70), (3, 30, 35))] = 1
    gts[ellipse_mask(gts.shape, (6, 110, 140), (2, 22, 25))] = 2
    return render(gts, rng), gts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "test_demo")
    args = parser.parse_args()
    rng = np.random.default_rng(2024)
    (args.out / "imgs").mkdir(parents=True, exist_ok=True)
    (args.out / "gts").mkdir(parents=True, exist_ok=True)
    image, gts = make_2d(rng)
    np.savez_compressed(args.out / "imgs/2DBox_Synthetic_ellipses.npz", imgs=image, boxes=tight_boxes(gts))
    np.savez_compressed(args.out / "gts/2DBox_Synthetic_ellipses.npz", gts=gts)
    volume, gts = make_3d(rng)
    spacing = np.array([1.0, 1.0, 2.5])  # SimpleITK order (x, y, z), as in the challenge files
    np.savez_compressed(
        args.out / "imgs/3DBox_Synthetic_ellipsoids.npz", imgs=volume, boxes=tight_boxes(gts), spacing=spacing
    )
    np.savez_compressed(args.out / "gts/3DBox_Synthetic_ellipsoids.npz", gts=gts, spacing=spacing)
    print(f"wrote 2 cases to {args.out}")


if __name__ == "__main__":
    main()
