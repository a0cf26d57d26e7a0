"""Area of the surface inside every 2x2x2 neighbourhood ("surfel"), from our own marching cubes.

A boundary point of a binary mask is a corner shared by 8 voxels; its neighbour code (0..255) says which of
them are inside. The surface through that cube is built as in marching cubes: a vertex at the midpoint of
every cube edge whose two corners differ, vertices joined along each face into closed polygons (on a face with
two diagonal inside corners, the contour cuts off the corners of the minority class: inside corners when at
most 4 of the 8 are inside, outside corners otherwise), and each polygon split into the triangles that give it
the largest area. This reproduces, for any voxel spacing, the surfel areas of the official
``compute_metrics.py`` / DeepMind ``surface-distance`` (Nikolov et al. 2021).

The area of a triangle with area vector (a0, a1, a2) in voxel units is ``|(a0*s1*s2, a1*s0*s2, a2*s0*s1)|``
in mm^2 for spacing (s0, s1, s2) mm.
"""
from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

CORNERS = list(itertools.product((0, 1), repeat=3))


def corner_bit(corner: tuple[int, int, int]) -> int:
    """Bit of a cube corner (offsets in axes 0, 1, 2) in the neighbour code: (0,0,0) -> 128 ... (1,1,1) -> 1."""
    a, b, c = corner
    return 1 << (7 - (4 * a + 2 * b + c))


EDGES = [(p, q) for p, q in itertools.combinations(CORNERS, 2) if sum(x != y for x, y in zip(p, q)) == 1]


def _contour_loops(code: int) -> list[list[tuple]]:
    """Closed polygons (as lists of crossed edges, in order) of the surface in one cube."""
    inside = {c for c in CORNERS if code & corner_bit(c)}
    crossed = [e for e in EDGES if (e[0] in inside) != (e[1] in inside)]
    cut_off = inside if len(inside) <= 4 else set(CORNERS) - inside
    links: dict[tuple, list[tuple]] = {e: [] for e in crossed}
    for axis, side in itertools.product(range(3), (0, 1)):
        on_face = [e for e in crossed if e[0][axis] == side and e[1][axis] == side]
        if len(on_face) == 2:
            pairs = [on_face]
        else:  # 4 crossings: pair the two edges around each cut-off corner of the face
            pairs = [[e for e in on_face if c in e] for c in CORNERS if c[axis] == side and c in cut_off]
        for first, second in (p for p in pairs if len(p) == 2):
            links[first].append(second)
            links[second].append(first)
    loops, seen = [], set()
    for start in crossed:
        if start in seen:
            continue
        loop, previous = [start], None
        seen.add(start)
        while True:
            step = [e for e in links[loop[-1]] if e != previous and e not in seen]
            if not step:
                break
            previous = loop[-1]
            loop.append(step[0])
            seen.add(step[0])
        loops.append(loop)
    return loops


def _triangulations(n: int) -> list[list[tuple[int, int, int]]]:
    """Every triangulation of a polygon with vertices 0..n-1 (diagonals that do not cross)."""

    def split(i: int, j: int) -> list[list[tuple[int, int, int]]]:
        if j - i < 2:
            return [[]]
        return [left + right + [(i, k, j)] for k in range(i + 1, j) for left in split(i, k) for right in split(k, j)]

    return split(0, n - 1)


def _largest_triangulation(points: np.ndarray) -> np.ndarray:
    """(n, 3) polygon vertices -> (n - 2, 3) triangle area vectors of its largest-area triangulation."""
    best, best_area = None, -1.0
    for triangles in _triangulations(len(points)):
        vectors = np.array([0.5 * np.cross(points[b] - points[a], points[c] - points[a]) for a, b, c in triangles])
        area = float(np.linalg.norm(vectors, axis=1).sum())
        if area > best_area + 1e-12:
            best, best_area = vectors, area
    return best


@lru_cache(maxsize=1)
def surfel_area_vectors() -> tuple[np.ndarray, ...]:
    """For each neighbour code 0..255: (k, 3) triangle area vectors in voxel units (k = 0 for 0 and 255)."""
    table = []
    for code in range(256):
        vectors = [np.zeros((0, 3))]
        for loop in _contour_loops(code):
            midpoints = np.array([[(p + q) / 2 for p, q in zip(*edge)] for edge in loop], dtype=np.float64)
            vectors.append(_largest_triangulation(midpoints))
        table.append(np.concatenate(vectors))
    return tuple(table)


def surfel_areas(spacing: tuple[float, float, float]) -> np.ndarray:
    """(256,) float64: surface area in mm^2 inside a cube of each neighbour code, for a voxel spacing in mm."""
    return _surfel_areas(*(float(s) for s in spacing)).copy()


@lru_cache(maxsize=64)
def _surfel_areas(s0: float, s1: float, s2: float) -> np.ndarray:
    scale = np.array([s1 * s2, s0 * s2, s0 * s1])
    return np.array([np.linalg.norm(v * scale, axis=1).sum() for v in surfel_area_vectors()])
