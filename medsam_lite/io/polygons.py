"""Masks as polygons on pixel edges, exact to the mask: pixel (row r, column c) is the square [c, c+1] x
[r, r+1], so a polygon's vertices are pixel corners and filling it gives back exactly the mask's pixels.

Each 4-connected component of a mask is one polygon: its outer ring, then one ring per hole. Rings are closed
(first vertex repeated, as GeoJSON wants); outer rings run clockwise on the screen (y down), holes the other way.
Pixels that touch only at a corner are separate components.
"""
from __future__ import annotations

import cv2
import numpy as np

Ring = list[tuple[int, int]]


def _boundary_edges(mask: np.ndarray) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Directed pixel sides between foreground and background, foreground on the right (y down)."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1]
    edges = []
    sides = [  # (neighbour offset, start corner, end corner) of a pixel's side, clockwise on the screen
        ((-1, 0), (0, 0), (1, 0)),  # top: (c, r) -> (c + 1, r)
        ((0, 1), (1, 0), (1, 1)),  # right
        ((1, 0), (1, 1), (0, 1)),  # bottom
        ((0, -1), (0, 1), (0, 0)),  # left
    ]
    for (dr, dc), (sx, sy), (ex, ey) in sides:
        neighbour = padded[1 + dr : padded.shape[0] - 1 + dr, 1 + dc : padded.shape[1] - 1 + dc]
        rows, cols = np.nonzero(inner & ~neighbour)
        edges += [((c + sx, r + sy), (c + ex, r + ey)) for r, c in zip(rows.tolist(), cols.tolist())]
    return edges


def _rings(mask: np.ndarray) -> list[Ring]:
    """Closed rings of a mask's boundary; at a corner where two pixels touch diagonally the walk turns right,
    staying with the pixel it is going round."""
    outgoing: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for start, end in _boundary_edges(mask):
        outgoing.setdefault(start, []).append(end)
    rings = []
    while outgoing:
        start = next(iter(outgoing))
        ring = [start]
        previous, current = None, start
        while True:
            ends = outgoing[current]
            if len(ends) == 1 or previous is None:
                end = ends.pop(0)
            else:
                dx, dy = current[0] - previous[0], current[1] - previous[1]
                right = (current[0] - dy, current[1] + dx)
                end = right if right in ends else ends[0]
                ends.remove(end)
            if not ends:
                del outgoing[current]
            previous, current = current, end
            ring.append(current)
            if current == start and (start not in outgoing):
                break
            if current == start and previous is not None and len(ring) > 2 and start in outgoing:
                break
        rings.append(_corners(ring))
    return rings


def _corners(ring: Ring) -> Ring:
    """Drop the vertices where the ring goes straight on; keep it closed."""
    points = ring[:-1]
    kept = []
    n = len(points)
    for i, (x, y) in enumerate(points):
        px, py = points[i - 1]
        nx, ny = points[(i + 1) % n]
        if (x - px) * (ny - y) - (y - py) * (nx - x) != 0:
            kept.append((x, y))
    return kept + kept[:1]


def signed_area(ring: Ring) -> float:
    """Shoelace area in pixels: positive for outer rings, negative for holes."""
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:]))


# The pixel on the right of a boundary edge leaving vertex (x, y) in direction (dx, dy), as (row, column) offsets.
_RIGHT_PIXEL = {(1, 0): (0, 0), (0, 1): (0, -1), (-1, 0): (-1, -1), (0, -1): (-1, 0)}


def mask_polygons(mask: np.ndarray) -> list[list[Ring]]:
    """(H, W) bool -> one polygon per 4-connected component: [outer ring, hole rings...], in pixel corners.

    All rings are traced at once; each belongs to the component of the foreground pixel on its right."""
    count, components = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    grouped: dict[int, list[Ring]] = {}
    for ring in _rings(mask):
        (x0, y0), (x1, y1) = ring[0], ring[1]
        dr, dc = _RIGHT_PIXEL[((x1 > x0) - (x1 < x0), (y1 > y0) - (y1 < y0))]
        grouped.setdefault(int(components[y0 + dr, x0 + dc]), []).append(ring)
    polygons = []
    for label in sorted(grouped):
        rings = sorted(grouped[label], key=signed_area, reverse=True)
        polygons.append(rings)
    return polygons


def geojson_geometry(mask: np.ndarray) -> dict | None:
    """A GeoJSON Polygon (one component) or MultiPolygon, coordinates in pixels; None for an empty mask."""
    polygons = [[[list(p) for p in ring] for ring in polygon] for polygon in mask_polygons(mask)]
    if not polygons:
        return None
    if len(polygons) == 1:
        return {"type": "Polygon", "coordinates": polygons[0]}
    return {"type": "MultiPolygon", "coordinates": polygons}


def rasterize(polygons: list[list[Ring]], shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies inside (even-odd over all rings): the inverse of ``mask_polygons``."""
    crossings = np.zeros((shape[0], shape[1] + 1), np.int64)
    for polygon in polygons:
        for ring in polygon:
            for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:]):
                if x0 == x1 and y0 != y1:
                    lo, hi = sorted((y0, y1))
                    crossings[lo:hi, x0] += 1
    return (np.cumsum(crossings, axis=1)[:, :-1] % 2).astype(bool)
