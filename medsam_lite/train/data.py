"""Training cases: where they are (``find_cases``), how one is read (``read_case``: the same readers and
intensity rules as ``predict`` and ``segment``), and the split by case.

A data folder is either a challenge folder (``imgs/`` + ``gts/`` npz files of the same names, 2D or 3D) or
an image + label-map folder (``images/`` + ``labels/``, or nnU-Net's ``imagesTr/`` + ``labelsTr/``, in any
format ``segment`` reads). 2D cases are volumes of one slice here: slice 0, image (1, H, W, 3).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsam_lite.core.case import CaseError, check_label_map, check_spacing
from medsam_lite.core.preprocess import resized_size
from medsam_lite.io.challenge import load_case, open_npz
from medsam_lite.io.image import ImageError, case_name, image_suffix

PAIR_FOLDERS = (("imgs", "gts"), ("images", "labels"), ("imagesTr", "labelsTr"))


@dataclass(frozen=True)
class CaseSource:
    """Where one training case's image and labels are."""

    name: str  # the case's name (file name of the challenge npz, else the image's name)
    image: Path
    labels: Path
    challenge: bool  # True: npz files with ``imgs`` / ``gts``; False: image + label map via `segment`'s readers


@dataclass
class TrainingCase:
    """One case read and checked: every array in original pixels.

    ``image``: (D, H, W) uint8 for 3D, (1, H, W, 3) uint8 for 2D; ``labels``: (D, H, W) with values 1..N;
    ``boxes``: (N, 6) 3D or (N, 4) 2D prompts of labels 1..N (the case's own where it has them);
    ``spacing``: (3,) mm for 3D, None for 2D."""

    name: str
    is_3d: bool
    image: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    spacing: tuple[float, float, float] | None

    @property
    def slices(self) -> int:
        return self.labels.shape[0]


def find_cases(folders: list[str | Path]) -> list[CaseSource]:
    """The cases of each data folder, sorted by name; ValueError naming a folder that is neither kind, an image
    without its label map, or a name that two folders share."""
    found: dict[str, CaseSource] = {}
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise ValueError(f"{folder}: no such folder")
        pair = next(((folder / a, folder / b) for a, b in PAIR_FOLDERS if (folder / a).is_dir() and (folder / b).is_dir()), None)
        if pair is None:
            raise ValueError(f"{folder}: expected imgs/ + gts/ (challenge npz), images/ + labels/ or imagesTr/ + "
                             "labelsTr/ inside it")
        images, labels = pair
        for source in _pairs(images, labels):
            if source.name in found:
                raise ValueError(f"{source.image}: a case named {source.name} is also in {found[source.name].image.parent}")
            found[source.name] = source
    if not found:
        raise ValueError(f"no training cases in {', '.join(map(str, folders))}")
    return [found[name] for name in sorted(found)]


def _pairs(images: Path, labels: Path) -> list[CaseSource]:
    if images.name == "imgs":
        return [CaseSource(p.name, p, labels / p.name, True) for p in sorted(images.glob("*.npz"))]
    by_name = {case_name(p): p for p in sorted(labels.iterdir()) if image_suffix(p)}
    out = []
    for path in sorted(images.iterdir()):
        if path.name.startswith(".") or not image_suffix(path):
            continue
        name = case_name(path).removesuffix("_0000")  # nnU-Net names the first channel <case>_0000
        out.append(CaseSource(name, path, by_name.get(name, labels / path.name), False))
    return out


def read_case(source: CaseSource, modality: str | None = None, window: tuple[float, float] | None = None) -> TrainingCase:
    """Read one case; CaseError naming the file and the problem (no labels, other grids, unreadable)."""
    if not source.labels.exists():
        raise CaseError(f"{source.image}: no label map {source.labels}")
    try:
        case = _read_challenge(source) if source.challenge else _read_pair(source, modality, window)
        resized_size(*case.image.shape[1:3])  # the model can take its slices: (D, H, W[, 3])
    except (ImageError, OSError, ValueError, KeyError) as exc:
        raise CaseError(f"{source.image}: {exc}") from exc
    except CaseError as exc:
        raise CaseError(f"{source.image}: {exc}") from exc
    if not case.labels.any():
        raise CaseError(f"{source.labels}: holds no labels (all zero): nothing to learn from")
    return case


def _read_challenge(source: CaseSource) -> TrainingCase:
    case = load_case(source.image, require_boxes=False)  # boxes come from the labels where they differ
    try:
        labels_file = open_npz(source.labels)
    except CaseError as exc:
        raise CaseError(f"labels {source.labels}: {exc}") from exc
    with labels_file as data:
        if "gts" not in data.files:
            raise CaseError(f"{source.labels} has no gts array")
        gts = data["gts"]
        spacing = data["spacing"] if "spacing" in data.files else None
    grid = case.image.shape if case.is_3d else case.image.shape[:2]
    gts = check_label_map(gts, grid, f"gts in {source.labels.name}")
    if spacing is None:
        with np.load(source.image, allow_pickle=False) as data:
            spacing = data["spacing"] if "spacing" in data.files else None
    labels = _renumbered(gts)
    boxes = case.boxes if len(case.boxes) == int(labels.max()) else _boxes_of(labels, case.is_3d)
    if case.is_3d:
        return TrainingCase(source.name, True, case.image, labels, boxes, _spacing(spacing))
    return TrainingCase(source.name, False, case.image[None], labels[None], boxes, None)


def _read_pair(source: CaseSource, modality: str | None, window: tuple[float, float] | None) -> TrainingCase:
    from medsam_lite.io.image_case import model_image, resolve_modality
    from medsam_lite.io.intensity import window_for
    from medsam_lite.io.prompts import label_values
    from medsam_lite.io.read import read_image

    data = read_image(source.image)
    found = resolve_modality(data, modality)
    image = model_image(data, found, window_for(found, window))
    labels = label_values(read_image(source.labels), data)
    if not data.is_3d:
        labels = labels.reshape(image.shape[:2])
    labels = _renumbered(labels)
    if data.is_3d:
        spacing = data.geometry.spacing[::-1] if data.geometry is not None else None  # (z, y, x) mm
        return TrainingCase(source.name, True, image, labels, _boxes_of(labels, True), _spacing(spacing))
    return TrainingCase(source.name, False, image[None], labels[None], _boxes_of(labels, False), None)


def _renumbered(labels: np.ndarray) -> np.ndarray:
    """Label values -> 1..N in increasing order (label i + 1 belongs to box i), uint16."""
    values = np.unique(labels[labels > 0])
    lut = np.zeros(int(values.max(initial=0)) + 1, dtype=np.uint16)
    lut[values] = np.arange(1, len(values) + 1)
    return lut[labels]


def _boxes_of(labels: np.ndarray, is_3d: bool) -> np.ndarray:
    from medsam_lite.io.prompts import tight_boxes

    return tight_boxes(labels if is_3d else labels.reshape(labels.shape[-2:]))[1]


def _spacing(raw) -> tuple[float, float, float]:
    """A volume's (x, y, z) mm for validation's NSD: 1 mm without one; CaseError for one that is no spacing."""
    return (1.0, 1.0, 1.0) if raw is None else check_spacing(raw)  # type: ignore[return-value]


def draw_split(names: list[str], val_fraction: float, seed: int, max_train: int = 0) -> dict[str, list[str]]:
    """Cases -> {"train": [...], "val": [...]}: a seeded shuffle by case (never by slice), at least one each."""
    if len(names) < 2:
        raise ValueError(f"{len(names)} case(s): a split needs at least 2 (one to train on, one to validate with)")
    order = np.random.default_rng(seed).permutation(len(names))
    n_val = min(len(names) - 1, max(1, int(round(len(names) * val_fraction))))
    val = sorted(names[i] for i in order[:n_val])
    train = sorted(names[i] for i in order[n_val:])
    if max_train:
        keep = set(names[i] for i in order[n_val:][:max_train])
        train = [n for n in train if n in keep]
    return {"train": train, "val": val}


def read_split(path: str | Path, names: list[str]) -> dict[str, list[str]]:
    """A user's split.json; ValueError naming unknown cases. A case in both parts is allowed (``shared_cases``
    names them: the validation score then measures fitting, not generalisation)."""
    raw = json.loads(Path(path).read_text())
    if not isinstance(raw, dict) or not isinstance(raw.get("train"), list) or not isinstance(raw.get("val"), list):
        raise ValueError(f"{path}: expected {{\"train\": [case names], \"val\": [case names]}}")
    known = set(names)
    unknown = [n for n in raw["train"] + raw["val"] if n not in known]
    if unknown:
        raise ValueError(f"{path}: no such case(s) in the data: {', '.join(unknown[:5])}")
    if not raw["train"] or not raw["val"]:
        raise ValueError(f"{path}: train and val each need at least one case")
    return {"train": sorted(raw["train"]), "val": sorted(raw["val"])}


def shared_cases(split: dict[str, list[str]]) -> list[str]:
    """Cases that are both trained on and validated with."""
    return sorted(set(split["train"]) & set(split["val"]))
