"""Masks as GeoJSON polygons on pixel edges: filling them gives back exactly the mask's pixels."""
from __future__ import annotations

import cv2
import numpy as np

from medsam_lite.io.polygons import geojson_geometry, mask_polygons, rasterize, signed_area


def test_random_masks_round_trip_exactly():
    rng = np.random.default_rng(0)
    for trial in range(300):
        mask = rng.random((rng.integers(1, 25), rng.integers(1, 25))) > rng.random()
        polygons = mask_polygons(mask)
        assert np.array_equal(rasterize(polygons, mask.shape), mask), trial
        count, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
        assert len(polygons) == count - 1  # one polygon per 4-connected component
        for rings in polygons:
            assert signed_area(rings[0]) > 0 and all(signed_area(r) < 0 for r in rings[1:])  # outer, then holes
            assert all(r[0] == r[-1] for r in rings)  # closed, as GeoJSON wants


def test_holes_diagonal_pixels_and_geometry_types():
    mask = np.zeros((9, 9), bool)
    mask[1:8, 1:8] = True
    mask[3:6, 3:6] = False
    mask[4, 4] = True  # an island inside the hole
    polygons = mask_polygons(mask)
    assert polygons == [[[(1, 1), (8, 1), (8, 8), (1, 8), (1, 1)], [(3, 6), (6, 6), (6, 3), (3, 3), (3, 6)]],
                        [[(4, 4), (5, 4), (5, 5), (4, 5), (4, 4)]]]
    assert geojson_geometry(mask)["type"] == "MultiPolygon"
    diagonal = np.array([[1, 0], [0, 1]], bool)  # touching at a corner: two components
    assert len(mask_polygons(diagonal)) == 2
    single = np.zeros((4, 4), bool)
    single[1, 2] = True
    assert geojson_geometry(single) == {"type": "Polygon", "coordinates": [[[2, 1], [3, 1], [3, 2], [2, 2], [2, 1]]]}
    assert geojson_geometry(np.zeros((3, 3), bool)) is None
