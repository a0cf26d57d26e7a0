"""A case from your own image: pixels to the model's uint8 by the intensity rules, boxes from JSON or a label
map, checked as a challenge case is (``cases.check_boxes``), and the label values to write for each box."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsam_lite.core.case import Case, CaseError, check_boxes, label_dtype
from medsam_lite.io.image import ImageData, ImageError, case_name, image_suffix
from medsam_lite.io.intensity import grey_rgb, modality_of, to_uint8, window_for
from medsam_lite.io.prompts import Prompts, boxes_from_json, boxes_from_label_map, label_values_of


@dataclass
class ImageOptions:
    """How ``segment``/``convert`` turn an image into a case.

    ``modality``: CT, MR, other, raw, or None (from the metadata; raster files: pre_grey_rgb rules);
    ``window``: (level, width) HU for CT; ``boxes``: a JSON file, or a folder of ``<case>.json``;
    ``boxes_from``: a label map, or a folder of label maps named after the cases; ``box_margin``: pixels."""

    modality: str | None = None
    window: tuple[float, float] | None = None
    boxes: Path | None = None
    boxes_from: Path | None = None
    box_margin: int = 0
    series: str | None = None
    until_empty: bool = False  # 3D: each box starts on its z_mid (else its middle) and goes until its mask vanishes
    reach: int | None = None  # with until_empty: at most this many slices each way (None: the whole volume)


@dataclass
class ImageCase:
    """The challenge-shaped case (``image`` uint8 (D, H, W) or (H, W, 3), boxes) and what writing it needs."""

    case: Case
    data: ImageData
    labels: np.ndarray  # (N,) label value written for box i
    modality: str  # the rule applied: CT, MR, other, raw, or 'picture' (pre_grey_rgb)
    window: tuple[float, float] | None
    box_source: str
    notes: list[str] = field(default_factory=list)

    @property
    def label_dtype(self) -> type:
        return label_dtype(int(self.labels.max(initial=0)))

    def label_values(self, segs: np.ndarray) -> np.ndarray:
        """Segmentation with labels 1..N (box order) -> the label values of the prompts, in the data's shape."""
        out = label_values_of(segs, self.labels)
        return out.reshape(self.data.pixels.shape[:2] if self.data.is_vector else self.data.pixels.shape)


def resolve_modality(data: ImageData, modality: str | None) -> str:
    """The intensity rule for ``data``: the explicit choice, else the metadata, else (raster) 'picture'."""
    if modality is not None:
        return modality
    if data.kind == "raster" or data.is_vector:
        return "picture"
    found = modality_of(data.modality)
    if found is None:
        raise ImageError("its metadata names no modality; choose --modality CT (with --window or --window-level/"
                         "--window-width), MR, other, or raw (values already 0..255)")
    return found


def model_image(data: ImageData, modality: str, window: tuple[float, float] | None) -> np.ndarray:
    """uint8 (D, H, W) for a volume, (H, W, 3) for a 2D image (grey repeated to 3 channels)."""
    if data.is_vector:
        pixels = data.pixels if modality == "picture" else to_uint8(data.pixels, modality, window)
        return grey_rgb(pixels)
    grey = data.pixels if modality == "picture" else to_uint8(data.pixels, modality, window)
    if data.is_3d:
        return np.ascontiguousarray(grey)
    return grey_rgb(grey.reshape(data.plane_shape))


def _matching(folder: Path, name: str, suffixes: tuple[str, ...] | None) -> Path:
    for entry in sorted(folder.iterdir()):
        if case_name(entry) == name and (entry.is_dir() or image_suffix(entry)) and (suffixes is None or image_suffix(entry) in suffixes):
            return entry
    raise ImageError(f"has no prompt: no file for case {name!r} in {folder}")


def prompts_for(data: ImageData, options: ImageOptions) -> Prompts:
    """The boxes of ``options`` for this image (a folder of prompt files: the one named after the case)."""
    from medsam_lite.io.read import read_image

    if options.boxes is not None and options.boxes_from is not None:
        raise ImageError("give --boxes or --boxes-from, not both")
    if options.boxes is not None:
        path = options.boxes
        if path.is_dir():
            path = path / f"{data.name}.json"
            if not path.is_file():
                raise ImageError(f"has no prompt: {path} does not exist")
        return boxes_from_json(path, data.is_3d)
    if options.boxes_from is not None:
        path = options.boxes_from
        if path.is_dir() and not _is_series(path):
            path = _matching(path, data.name, None)
        try:
            label_map = read_image(path)
        except ImageError as exc:
            raise ImageError(f"the label map {path.name} {exc}") from exc
        return boxes_from_label_map(label_map, data, options.box_margin)
    raise ImageError("has no box prompts: give --boxes FILE.json or --boxes-from LABELS (e.g. a .nii.gz label map)")


def _is_series(path: Path) -> bool:
    from medsam_lite.io.medical import is_dicom_folder

    return is_dicom_folder(path)


def image_case(data: ImageData, options: ImageOptions) -> ImageCase:
    """Build the case; CaseError/ImageError name what is wrong (bad prompts, boxes outside the image, ...)."""
    modality = resolve_modality(data, options.modality)
    window = window_for(modality, options.window)
    image = model_image(data, modality, window)
    prompts = prompts_for(data, options)
    boxes, warnings = check_boxes(prompts.boxes, image.shape, data.is_3d)
    z_middle = prompts.z_middle
    if z_middle is not None:
        outside = np.nonzero((z_middle < prompts.boxes[:, 2]) | (z_middle > prompts.boxes[:, 5]))[0]
        if outside.size:
            i = int(outside[0])
            raise CaseError(f"box {i} has z_mid {int(z_middle[i])} outside its z range "
                            f"{int(prompts.boxes[i, 2])}..{int(prompts.boxes[i, 5])}")
        z_middle = np.clip(z_middle, boxes[:, 2], boxes[:, 5])
    if len(boxes) == 0:
        warnings.append("no boxes: writing an all-zero segmentation")
    until_empty = options.until_empty and data.is_3d
    if until_empty and len(boxes):
        from medsam_lite.pipeline.segment import slice_boxes

        if z_middle is None:
            z_middle = ((boxes[:, 5] - boxes[:, 2]) / 2 + boxes[:, 2]).astype(np.int64)
        boxes = slice_boxes(boxes[:, [0, 1, 3, 4]], z_middle, image.shape[0], options.reach)
    case = Case(data.name, data.is_3d, image, boxes, warnings, z_middle, until_empty=until_empty)
    return ImageCase(case, data, prompts.labels, modality, window, prompts.source)
