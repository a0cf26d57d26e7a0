"""Writing test images in the formats users hold: NIfTI/NRRD/MHA with a given geometry, DICOM series (one
file per slice, as scanners write them), and zips of them."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

# A rotation about an oblique axis (det +1, as DICOM's slice normal = row x column requires), anisotropic spacing
# and an origin away from zero: a geometry that a reader or writer which drops or reorders anything gets wrong.
ORIGIN = (-101.25, 37.5, 412.0)
SOP_CLASSES = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4", "OT": "1.2.840.10008.5.1.4.1.1.7"}


def oblique_direction() -> tuple[float, ...]:
    axis = np.array([1.0, 2.0, 3.0]) / np.linalg.norm([1.0, 2.0, 3.0])
    angle = 0.4
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    return tuple(rotation.ravel().tolist())


def sitk_image(array: np.ndarray, spacing, origin=ORIGIN, direction=None):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(origin[: array.ndim]))
    image.SetDirection(direction or oblique_direction())
    return image


def write_medical(path: Path, array: np.ndarray, spacing, origin=ORIGIN, direction=None) -> Path:
    import SimpleITK as sitk

    sitk.WriteImage(sitk_image(array, spacing, origin, direction), str(path), useCompression=True)
    return path


def write_dicom_series(folder: Path, volume: np.ndarray, spacing, origin=ORIGIN, direction=None,
                       modality: str = "OT", series_uid: str = "1.2.826.0.1.3680043.2.1125.1.1",
                       prefix: str = "slice") -> Path:
    """``volume`` (D, H, W) as one int16 DICOM file per slice with position, orientation and spacing tags."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    direction = np.array(direction or oblique_direction()).reshape(3, 3)
    row, column, normal = direction[:, 0], direction[:, 1], direction[:, 2]
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(volume.shape[0]):
        slice_ = sitk.GetImageFromArray(volume[z].astype(np.int16))
        slice_.SetSpacing((float(spacing[0]), float(spacing[1])))  # the writer fills PixelSpacing from it
        position = np.array(origin) + z * spacing[2] * normal
        tags = {
            "0008|0060": modality,
            "0008|0016": SOP_CLASSES.get(modality, SOP_CLASSES["OT"]),
            "0008|0018": f"{series_uid}.{z + 1}",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": series_uid,
            "0020|0013": str(z + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.10f}" for v in (*row, *column)),
            "0028|0030": f"{spacing[1]:.10f}\\{spacing[0]:.10f}",
            "0018|0050": f"{spacing[2]:.6f}",
            "0028|1052": "0",
            "0028|1053": "1",
        }
        for key, value in tags.items():
            slice_.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{prefix}{z:04d}.dcm"))
        writer.Execute(slice_)
    return folder


def zip_folder(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"series/{path.name}")
    return target
