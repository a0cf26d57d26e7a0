"""Which reader an image path takes, and the images a list of paths names (files, folders, DICOM series)."""
from __future__ import annotations

from pathlib import Path

from medsam_lite.io.image import IMAGE_SUFFIXES, RASTER_SUFFIXES, ImageData, ImageError, image_suffix


def read_image(path: str | Path, series: str | None = None, max_voxels: int | None = None) -> ImageData:
    """Read an image file, a DICOM series folder or a .zip of one; ImageError says what is wrong, TooLarge (one)
    for more than ``max_voxels`` pixels or voxels (default: the readers' own limits), found before decoding."""
    path = Path(path)
    from medsam_lite.io import medical, raster

    voxels = min(max_voxels or medical.MAX_VOXELS, medical.MAX_VOXELS)
    if path.is_dir():
        return medical.read_dicom_folder(path, series, max_voxels=voxels)
    if not path.is_file():
        raise ImageError("no such file or folder")
    suffix = image_suffix(path)
    if suffix in RASTER_SUFFIXES:
        return raster.read_raster(path, min(max_voxels or raster.MAX_PIXELS, raster.MAX_PIXELS))
    if suffix == ".zip":
        return medical.read_dicom_zip(path, series, max_voxels=voxels)
    if suffix:
        return medical.read_medical_file(path, voxels)
    raise ImageError(f"is not an image this reads ({', '.join(IMAGE_SUFFIXES)}, or a DICOM series folder)")


def find_images(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """The images ``paths`` name, in order: a file as it is; a folder that holds a DICOM series as one image;
    another folder's image files and DICOM series subfolders, sorted. Also: the files skipped in those folders."""
    from medsam_lite.io.medical import is_dicom_folder

    found, skipped = [], []
    for path in paths:
        if not path.is_dir() or is_dicom_folder(path):
            found.append(path)
            continue
        for entry in sorted(path.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                (found if is_dicom_folder(entry) else skipped).append(entry)
            elif image_suffix(entry):
                found.append(entry)
            else:
                skipped.append(entry)
    return found, skipped
