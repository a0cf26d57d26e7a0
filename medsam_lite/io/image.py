"""An image as read from a file: its pixels, where they lie in space, and what its metadata says."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

MEDICAL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ARCHIVE_SUFFIXES = (".zip",)  # a zipped DICOM series
IMAGE_SUFFIXES = MEDICAL_SUFFIXES + RASTER_SUFFIXES + ARCHIVE_SUFFIXES


class ImageError(Exception):
    """An image or prompt file that cannot be used; the message names the problem (the caller names the file)."""


class TooLarge(ImageError):
    """An image with more pixels or voxels than the reader was allowed, found from its header (nothing decoded)."""


@dataclass(frozen=True)
class Geometry:
    """Where the voxels lie, in SimpleITK's (x, y, z) order: origin and spacing in mm, direction as a
    row-major 3x3 (or 2x2) matrix. Arrays are indexed (z, y, x)."""

    origin: tuple[float, ...]
    spacing: tuple[float, ...]
    direction: tuple[float, ...]

    @property
    def dimension(self) -> int:
        return len(self.spacing)

    def matches(self, other: "Geometry", tolerance: float = 1e-4) -> bool:
        """Same grid within ``tolerance`` (mm for origin/spacing, cosine for direction)."""
        return self.dimension == other.dimension and all(
            np.allclose(a, b, atol=tolerance, rtol=0)
            for a, b in ((self.origin, other.origin), (self.spacing, other.spacing), (self.direction, other.direction))
        )

    def describe(self) -> str:
        fmt = lambda values: "(" + ", ".join(f"{v:g}" for v in values) + ")"  # noqa: E731
        return f"origin {fmt(self.origin)}, spacing {fmt(self.spacing)}, direction {fmt(self.direction)}"


@dataclass
class ImageData:
    """Pixels as stored (HU for CT): 3D (D, H, W); 2D (H, W) or (H, W, C).

    ``geometry`` is None for raster files (PNG, JPEG, ...), which have none. ``modality`` is what the metadata
    says ('CT', 'MR', another DICOM code) or None. ``kind``: 'medical' (SimpleITK) or 'raster' (OpenCV)."""

    name: str
    source: Path
    pixels: np.ndarray
    geometry: Geometry | None
    modality: str | None
    kind: str

    @property
    def is_3d(self) -> bool:
        """A volume of more than one slice (a one-slice DICOM or NIfTI is segmented as a 2D image)."""
        return self.kind == "medical" and self.pixels.ndim == 3 and self.pixels.shape[0] > 1 and not self.is_vector

    @property
    def is_vector(self) -> bool:
        """A 2D image with colour channels (H, W, C)."""
        return self.pixels.ndim == 3 and (self.kind == "raster" or (self.geometry is not None and self.geometry.dimension == 2))

    @property
    def plane_shape(self) -> tuple[int, int]:
        """(H, W) of a slice."""
        return tuple(self.pixels.shape[:2]) if self.is_vector else tuple(self.pixels.shape[-2:])


def case_name(path: str | Path) -> str:
    """The case name of an image file or DICOM folder: the name without its image suffix, and without nnU-Net's
    channel suffix ``_0000`` (``liver_001_0000.nii.gz`` -> ``liver_001``)."""
    name = Path(path).name
    lower = name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            name = name[: -len(suffix)]
            break
    if len(name) > 5 and name.endswith("_0000"):
        name = name[:-5]
    return name


def image_suffix(path: str | Path) -> str:
    """The image suffix of ``path`` (lower case, ``.nii.gz`` as one), or '' when it is none of ours."""
    lower = Path(path).name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return suffix
    return ""
