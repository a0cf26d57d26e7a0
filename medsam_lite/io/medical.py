"""NIfTI, NRRD, MetaImage and DICOM (a file, a series folder, or a .zip of one) through SimpleITK, and label
maps written back as NIfTI with the input's geometry. SimpleITK is imported on first use."""
from __future__ import annotations

import contextlib
import errno
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from medsam_lite.core.optional import MissingDependency, missing
from medsam_lite.core.atomic import atomic_path
from medsam_lite.io.image import Geometry, ImageData, ImageError, TooLarge, case_name

IO_EXTRA = 'pip install -e .  (SimpleITK is one of its dependencies; alone: pip install SimpleITK)'
# Pixels a medical image may have before it is read (headers are read first): 2**31, about 8 GiB as int32.
MAX_VOXELS = 1 << 31
MAX_ZIP_BYTES = 8 << 30  # uncompressed size of a zipped DICOM series
MODALITY_TAG = "0008|0060"


def sitk():
    """The SimpleITK module, or MissingDependency with the install command."""
    if missing("SimpleITK"):
        raise MissingDependency(f"reading medical images needs SimpleITK, which is not installed here: {IO_EXTRA}")
    import SimpleITK

    SimpleITK.ProcessObject.SetGlobalWarningDisplay(False)  # our errors say what is wrong, in one line
    return SimpleITK


def geometry_of(image) -> Geometry:
    """The Geometry of a SimpleITK image."""
    return Geometry(tuple(image.GetOrigin()), tuple(image.GetSpacing()), tuple(image.GetDirection()))


def _modality(reader_or_image, keys) -> str | None:
    """'CT', 'MR', ... from the DICOM Modality tag, or from a MetaImage ``Modality = MET_MOD_CT``."""
    for key in (MODALITY_TAG, "Modality"):
        if key in keys:
            value = reader_or_image(key).strip().upper()
            if value.startswith("MET_MOD_"):
                value = value[len("MET_MOD_"):]
            return value or None
    return None


def _check_size(size: tuple[int, ...], what: str, limit: int) -> None:
    voxels = int(np.prod([int(s) for s in size], dtype=object))
    if voxels > limit:
        raise TooLarge(f"{what} has {voxels:,} voxels {tuple(size)}; more than the {limit:,} this reads")


def _array(image) -> np.ndarray:
    """(z, y, x) pixels, (y, x) for 2D, (y, x, c) for a 2D colour image."""
    return sitk().GetArrayFromImage(image)


def read_medical_file(path: Path, max_voxels: int = MAX_VOXELS) -> ImageData:
    """One NIfTI/NRRD/MHA/MHD/DICOM file; the header is checked (at most ``max_voxels``) before the pixels are
    read."""
    SimpleITK = sitk()
    reader = SimpleITK.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ImageError(f"cannot read as a medical image: {_itk_reason(exc)}") from exc
    _check_size(reader.GetSize(), "the image", max_voxels)
    if path.name.lower().endswith((".nii", ".nii.gz")):
        from medsam_lite.io.nifti_length import check_nifti_length

        check_nifti_length(path)
    elif path.name.lower().endswith((".mha", ".mhd")):
        from medsam_lite.io.metaimage_length import check_metaimage_length

        check_metaimage_length(path)
    if reader.GetDimension() not in (2, 3):
        raise ImageError(f"has {reader.GetDimension()} dimensions {reader.GetSize()}; expected a 2D or 3D image")
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise ImageError(f"cannot read the pixels: {_itk_reason(exc)}") from exc
    modality = _modality(reader.GetMetaData, set(reader.GetMetaDataKeys()))
    return _image_data(path, image, modality)


def _image_data(path: Path, image, modality: str | None) -> ImageData:
    components = image.GetNumberOfComponentsPerPixel()
    if components > 1 and image.GetDimension() == 3:
        raise ImageError(f"is a 3D image with {components} components per voxel; expected one (grey) value")
    return ImageData(case_name(path), path, _array(image), geometry_of(image), modality, "medical")


def _itk_reason(exc: RuntimeError) -> str:
    """The last line of ITK's multi-line message, which says what went wrong, with a quoted path cut to its file
    name (the line is shown next to the file's name; a server must not show its folders)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return re.sub(r'"[^"]*[/\\]([^"/\\]+)"', r'"\1"', lines[-1]) if lines else type(exc).__name__


def dicom_series(folder: Path) -> list[tuple[str, list[str]]]:
    """(series UID, its files sorted by position) for every DICOM series directly in ``folder``."""
    SimpleITK = sitk()
    ids = SimpleITK.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    return [(uid, list(SimpleITK.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))) for uid in ids]


def is_dicom_folder(folder: Path) -> bool:
    return folder.is_dir() and bool(dicom_series(folder))


def read_dicom_folder(folder: Path, series: str | None = None, name_from: Path | None = None,
                      max_voxels: int = MAX_VOXELS) -> ImageData:
    """The one series in ``folder`` (or the one whose UID is ``series``); two or more without a choice is an
    error naming them. At most ``max_voxels``, judged from the first file's header and the file count."""
    found = dicom_series(folder)
    if not found:
        raise ImageError("holds no DICOM series")
    if series is not None:
        chosen = [f for f in found if f[0] == series]
        if not chosen:
            raise ImageError(f"has no DICOM series {series}; it holds {_list_series(found)}")
    elif len(found) > 1:
        raise ImageError(f"holds {len(found)} DICOM series: {_list_series(found)}; choose one with --series UID")
    else:
        chosen = found
    uid, files = chosen[0]
    SimpleITK = sitk()
    first = SimpleITK.ImageFileReader()
    first.SetFileName(files[0])
    try:
        first.ReadImageInformation()
    except RuntimeError as exc:
        raise ImageError(f"cannot read DICOM file {Path(files[0]).name}: {_itk_reason(exc)}") from exc
    size = tuple(first.GetSize())[:2] + (len(files),)
    _check_size(size, f"DICOM series {uid}", max_voxels)
    reader = SimpleITK.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()  # each slice's position, for _check_even_slices
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise ImageError(f"cannot read DICOM series {uid}: {_itk_reason(exc)}") from exc
    _check_even_slices(reader, len(files), image.GetDirection()[2::3], uid)
    modality = _modality(first.GetMetaData, set(first.GetMetaDataKeys()))
    return _image_data(name_from or folder, image, modality)


POSITION_TAG = "0020|0032"  # Image Position (Patient): x\\y\\z of the slice's first voxel, mm
EVEN_TOLERANCE = 0.1  # a gap may differ from the typical one by this share (scanners round positions; a missing
# slice doubles a gap)


def _check_even_slices(reader, count: int, normal: tuple[float, ...], uid: str) -> None:
    """ImageError when the series' slices are not evenly spaced along ``normal``: SimpleITK stacks them as if
    they were (a series with a slice missing read as one volume with an averaged spacing, every slice past the gap
    in the wrong place), so the mask written would not lie on the anatomy."""
    try:
        positions = np.array([[float(v) for v in reader.GetMetaData(i, POSITION_TAG).split("\\")]
                              for i in range(count)])
    except (RuntimeError, ValueError):  # a slice without its position: nothing to check against
        return
    if count < 3 or positions.shape[1] != 3:
        return
    gaps = np.abs(np.diff(positions @ np.asarray(normal, np.float64)))
    typical = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - typical)))
    if typical == 0 or abs(gaps[worst] - typical) > EVEN_TOLERANCE * typical:
        raise ImageError(f"DICOM series {uid} is not evenly spaced: slices {worst} and {worst + 1} are "
                         f"{gaps[worst]:.3g} mm apart where the others are {typical:.3g} mm (a slice missing, or two "
                         f"acquisitions in one series); read as one volume, the slices past it would lie in the wrong "
                         f"place")


def _list_series(found: list[tuple[str, list[str]]]) -> str:
    return ", ".join(f"{uid} ({len(files)} files)" for uid, files in found)


@contextlib.contextmanager
def unzipped(path: Path) -> Iterator[Path]:
    """The regular files of a zip archive extracted into a temporary folder under names of our own (member
    names never become paths), removed afterwards. Archives over MAX_ZIP_BYTES uncompressed are refused."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ImageError(f"cannot read as a .zip archive: {exc}") from exc
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        total = sum(m.file_size for m in members)
        if total > MAX_ZIP_BYTES:
            raise ImageError(f"unpacks to {total / 2**20:,.0f} MiB; more than the {MAX_ZIP_BYTES >> 20:,} MiB allowed")
        folder = Path(tempfile.mkdtemp(prefix="medsam-lite-zip-"))
        try:
            for i, member in enumerate(members):
                with archive.open(member) as source, open(folder / f"{i:06d}.dcm", "wb") as target:
                    shutil.copyfileobj(source, target, 1 << 20)
            yield folder
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ImageError(f"cannot unpack the .zip archive: {exc}") from exc
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def read_dicom_zip(path: Path, series: str | None = None, max_voxels: int = MAX_VOXELS) -> ImageData:
    with unzipped(path) as folder:
        return read_dicom_folder(folder, series, name_from=path, max_voxels=max_voxels)


def write_labels_medical(path: Path, labels: np.ndarray, geometry: Geometry | None) -> None:
    """Write a label map (array order as read: (z, y, x) or (y, x)) as NIfTI/NRRD/MHA (by suffix), with
    ``geometry``, atomically (a temporary file beside ``path``, then a rename)."""
    SimpleITK = sitk()
    image = SimpleITK.GetImageFromArray(labels)
    if geometry is not None:
        if geometry.dimension != image.GetDimension():
            raise ImageError(f"labels {labels.shape} do not fit a {geometry.dimension}D geometry")
        image.SetOrigin(geometry.origin)
        image.SetSpacing(geometry.spacing)
        image.SetDirection(geometry.direction)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix
    with atomic_path(path, suffix) as tmp:
        try:
            SimpleITK.WriteImage(image, str(tmp), useCompression=True)
        except RuntimeError as exc:
            reason = _itk_reason(exc)
            code = errno.ENOSPC if "space" in reason.lower() else errno.EIO
            raise OSError(code, f"SimpleITK could not write {path}: {reason}") from exc
