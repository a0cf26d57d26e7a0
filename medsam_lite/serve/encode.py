"""A label map as the bytes or JSON a client asked for: npz (``segs``, as ``predict`` writes), NIfTI (with the
image's geometry), PNG (2D), RLE, GeoJSON (exact pixel-edge polygons per label, per slice in 3D)."""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import cv2
import numpy as np

from medsam_lite.io.polygons import geojson_geometry
from medsam_lite.serve.store import ImageMeta

FORMATS = ("npz", "nifti", "png", "rle", "geojson")
MEDIA = {"npz": "application/octet-stream", "nifti": "application/gzip", "png": "image/png"}


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def nifti_bytes(labels: np.ndarray, meta: ImageMeta) -> bytes:
    """.nii.gz of ``labels`` with the image's origin/spacing/direction (a challenge npz: its spacing only)."""
    from medsam_lite.io.image import Geometry
    from medsam_lite.io.medical import write_labels_medical

    if meta.geometry is not None and len(meta.geometry["spacing"]) == labels.ndim:
        geometry = Geometry(tuple(meta.geometry["origin"]), tuple(meta.geometry["spacing"]), tuple(meta.geometry["direction"]))
    else:
        spacing = meta.spacing if meta.spacing and len(meta.spacing) == labels.ndim else [1.0] * labels.ndim
        geometry = Geometry((0.0,) * labels.ndim, tuple(spacing), tuple(np.eye(labels.ndim).ravel().tolist()))
    with tempfile.TemporaryDirectory(prefix="medsam-lite-nifti-") as folder:
        path = Path(folder) / "labels.nii.gz"
        write_labels_medical(path, np.ascontiguousarray(labels), geometry)
        return path.read_bytes()


def png_bytes(labels: np.ndarray) -> bytes:
    if labels.ndim != 2:
        raise ValueError("PNG holds a 2D label map; ask a 3D result as npz, nifti, rle or geojson")
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(labels))
    if not ok:
        raise ValueError("the label map could not be encoded as PNG")
    return encoded.tobytes()


def rle(labels: np.ndarray) -> dict:
    """Row-major runs: ``values[i]`` repeated ``lengths[i]`` times fills ``shape``."""
    flat = labels.reshape(-1)
    if flat.size == 0:
        return {"shape": list(labels.shape), "order": "C", "values": [], "lengths": []}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [flat.size]]))
    return {"shape": list(labels.shape), "order": "C", "values": flat[starts].tolist(), "lengths": lengths.tolist()}


def geojson(labels: np.ndarray) -> dict:
    """A FeatureCollection: one Feature per label (and slice, for 3D) with its exact polygon(s)."""
    features = []
    planes = [(None, labels)] if labels.ndim == 2 else [(z, labels[z]) for z in range(labels.shape[0])]
    for z, plane in planes:
        for value in np.unique(plane):
            if value == 0:
                continue
            geometry = geojson_geometry(plane == value)
            properties = {"label": int(value)}
            if z is not None:
                properties["slice"] = int(z)
            features.append({"type": "Feature", "geometry": geometry, "properties": properties})
    return {"type": "FeatureCollection", "features": features}


def encode(labels: np.ndarray, fmt: str, meta: ImageMeta):
    """(bytes, media type) or a JSON-able dict for ``fmt``."""
    if fmt == "npz":
        return npz_bytes(segs=labels), MEDIA["npz"]
    if fmt == "nifti":
        return nifti_bytes(labels, meta), MEDIA["nifti"]
    if fmt == "png":
        return png_bytes(labels), MEDIA["png"]
    if fmt == "rle":
        return rle(labels)
    if fmt == "geojson":
        return geojson(labels)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


__all__ = ["FORMATS", "encode", "npz_bytes", "rle", "geojson"]
