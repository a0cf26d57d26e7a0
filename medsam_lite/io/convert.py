"""``medsam-lite convert``: your images to the challenge layout, and challenge segmentations back to NIfTI.

to-npz writes what the official preprocessing (``pre_CT_MR.py``, ``pre_grey_rgb.py``) writes: ``imgs`` uint8
((D, H, W) or (H, W, 3)), ``gts`` (labels renumbered 1..N when the map's values are not already), ``spacing``
in SimpleITK's (x, y, z) order (medical images only), and ``boxes``: the tight box of each label (label i+1 ->
box i), as the challenge's cases hold them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsam_lite.core.case import CaseError, check_spacing, label_dtype
from medsam_lite.io.challenge import open_npz
from medsam_lite.io.image_case import ImageOptions, model_image, resolve_modality
from medsam_lite.io.image import Geometry, ImageError
from medsam_lite.io.intensity import window_for
from medsam_lite.io.prompts import label_values, tight_boxes
from medsam_lite.core.atomic import check_writable_dir, write_with


@dataclass
class Converted:
    """What a conversion wrote and what the user should be told."""

    path: Path
    shape: tuple[int, ...]
    boxes: int
    notes: list[str] = field(default_factory=list)


def default_npz_name(case: str, is_3d: bool, modality: str) -> str:
    """``3DBox_<Modality>_<case>.npz`` / ``2DBox_...``: the challenge's names (``predict`` reads 3D from them)."""
    shown = {"other": "Other", "raw": "Image", "picture": "Image"}.get(modality, modality)
    return f"{'3D' if is_3d else '2D'}Box_{shown}_{case}.npz"


def to_npz(image_path: Path, out: Path, options: ImageOptions, labels_path: Path | None = None,
           label_slices_only: bool = False) -> Converted:
    """Write the challenge case of ``image_path`` (and its label map) to ``out`` (a .npz file, or a folder for
    the default name)."""
    from medsam_lite.io.read import read_image

    data = read_image(image_path, options.series)
    modality = resolve_modality(data, options.modality)
    window = window_for(modality, options.window)
    imgs = model_image(data, modality, window)
    notes = []
    arrays: dict[str, np.ndarray] = {"imgs": imgs}
    if labels_path is not None:
        try:
            label_map = read_image(labels_path)
        except ImageError as exc:
            raise ImageError(f"the label map {labels_path.name} {exc}") from exc
        labels = label_values(label_map, data)
        if not data.is_3d and labels.ndim == 3:
            labels = labels[0]
        values = np.unique(labels[labels > 0])
        if not np.array_equal(values, np.arange(1, len(values) + 1)):
            lut = np.zeros(int(values.max()) + 1, dtype=np.int64)
            lut[values] = np.arange(1, len(values) + 1)
            labels = lut[labels]
            notes.append(f"labels {', '.join(map(str, values[:8]))}{' ...' if len(values) > 8 else ''} renumbered "
                         f"1..{len(values)} (the challenge layout's label i+1 belongs to box i)")
        gts = labels.astype(label_dtype(len(values)))
        if label_slices_only and data.is_3d:
            z_index = np.unique(np.nonzero(gts)[0])
            if z_index.size == 0:
                raise ImageError(f"the label map {labels_path.name} holds no labels, so no slice is kept")
            imgs, gts = imgs[z_index], gts[z_index]
            notes.append(f"kept the {z_index.size} of {data.pixels.shape[0]} slices that hold a label "
                         f"({int(z_index[0])}..{int(z_index[-1])})")
        arrays["imgs"], arrays["gts"] = imgs, gts
        arrays["boxes"] = tight_boxes(gts)[1]
    elif label_slices_only:
        raise ImageError("--label-slices-only needs --labels")
    if data.geometry is not None:
        arrays["spacing"] = np.array(data.geometry.spacing, dtype=np.float64)
    target = out / default_npz_name(data.name, data.is_3d, modality) if out.is_dir() else out
    if data.is_3d and not target.name.startswith("3D"):
        notes.append(f"{target.name} does not start with '3D': `predict` would read it as a 2D case")
    check_writable_dir(target.parent)  # made if missing, as predict makes its output folder
    write_with(target, lambda handle: np.savez_compressed(handle, **arrays))
    return Converted(target, imgs.shape, len(arrays.get("boxes", ())), notes)


def _read_npz_array(path: Path, key: str) -> np.ndarray | None:
    try:
        with open_npz(path) as data:
            return data[key] if key in data.files else None
    except CaseError as exc:
        raise CaseError(f"{path.name}: {exc}") from exc
    except (OSError, ValueError) as exc:
        raise CaseError(f"cannot read {path.name} as .npz: {exc}") from exc


def to_nifti(segs_path: Path, out: Path, like: Path | None = None, case_path: Path | None = None) -> Converted:
    """``segs`` of a challenge output -> ``out`` (.nii.gz) with the geometry of the original image ``like``;
    without it, the ``spacing`` of ``case_path`` (or of the segs file) only, and that is said."""
    from medsam_lite.io.medical import write_labels_medical
    from medsam_lite.io.read import read_image

    segs = _read_npz_array(segs_path, "segs")
    if segs is None:
        raise CaseError(f"{segs_path.name} has no 'segs' array")
    notes = []
    if like is not None:
        data = read_image(like)
        if data.geometry is None:
            raise ImageError(f"{like.name} has no geometry (a picture); write PNG with `segment` instead")
        shape = data.pixels.shape[:2] if data.is_vector else data.pixels.shape
        if segs.shape != shape and not (segs.ndim == 2 and shape == (1, *segs.shape)):
            raise ImageError(f"segs is {segs.shape} (z, y, x) but {like.name} is {shape}: a case cut to its "
                             f"labelled slices (to-npz --label-slices-only) cannot be placed back; segment the whole volume")
        geometry = data.geometry
        segs = segs.reshape(shape)
    else:
        spacing = None
        for source in (case_path, segs_path):
            if source is not None and spacing is None:
                spacing = _read_npz_array(source, "spacing")
        if spacing is None:
            spacing = np.ones(segs.ndim)
            notes.append("no original image and no spacing: written with 1 mm spacing, origin 0, identity direction")
        else:
            notes.append("no original image given (--like): written with the spacing only (origin 0, identity "
                         "direction); pass --like IMAGE for its full geometry")
        spacing = check_spacing(spacing, (segs.ndim,))
        geometry = Geometry((0.0,) * segs.ndim, spacing, tuple(np.eye(segs.ndim).ravel().tolist()))
    check_writable_dir(out.parent)
    write_labels_medical(out, np.ascontiguousarray(segs), geometry)
    return Converted(out, segs.shape, 0, notes)
