"""The Python API: ``Predictor`` (set an image once, prompt it many times, as ``segment_anything``'s
``SamPredictor``), ``Predictor.predict_volume`` (3D boxes propagated through a volume exactly as ``predict``),
and ``segment_npz`` for one challenge case (``batch.runner.segment_folder`` for a folder). Every call goes
through the same engines and pipeline as the command line, so the numbers are the CLI's.

    from medsam_lite import Predictor
    predictor = Predictor()                 # the official weights (fetched once), OpenVINO fp32
    predictor.set_image(image)              # (H, W, 3) or (H, W) uint8: one encoder pass
    masks = predictor.predict(boxes)        # (N, 4) boxes in original pixels -> (N, H, W) bool
"""
from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np


class Predictor:
    """LiteMedSAM on one image at a time: ``set_image`` encodes it once, ``predict``/``segment`` decode boxes.

    ``checkpoint``: None finds the weights as the CLI does (``$MEDSAM_LITE_CHECKPOINT``, the checkout's, the
    cached official ones, else fetched once unless ``offline``). ``engine``: ``auto`` (OpenVINO on the export of
    those weights, made once where there is none), ``openvino`` or ``torch``. ``precision``: ``f32`` (exact),
    ``bf16`` or ``int8`` (OpenVINO, approximate), ``fast`` (what ``medsam_lite.engines.precision`` measured to
    keep accuracy on this CPU; ``predictor.engine.precision_label`` says which ran). ``export_dir``: an export folder to use as it is.

    Calls from several threads take turns (each runs whole; the engine's inference requests serve one call at a
    time), and ``set_image`` sets the image with its embedding or not at all. A Predictor holds one image, as
    ``SamPredictor`` does: threads that each segment images of their own need a Predictor each."""

    def __init__(self, checkpoint: str | os.PathLike[str] | None = None, engine: str = "auto", precision: str = "f32",
                 export_dir: str | os.PathLike[str] | None = None, threads: int | None = None, offline: bool = False,
                 say: Callable[[str], None] | None = None) -> None:
        from medsam_lite.engines import create_engine

        self.choice = create_engine(engine, checkpoint, export_dir, precision, threads, allow_fetch=not offline,
                                    say=say)
        self.engine = self.choice.engine
        self.engine.ready()
        self.image: np.ndarray | None = None
        self.embedding: Any | None = None  # of ``image``: keep it and pass it to ``set_image`` to skip the encoder
        self._turn = threading.RLock()  # one call at a time: "Infer Request is busy" from OpenVINO otherwise

    @property
    def description(self) -> str:
        """Which engine and weights: e.g. ``openvino f32 engine (/path)``."""
        return self.choice.description

    def set_image(self, image: np.ndarray, embedding: Any | None = None) -> None:
        """(H, W, 3) RGB or (H, W) grey uint8 (as in the challenge files) -> encoded once; ``embedding``: one
        this image already has (``predictor.embedding`` after an earlier ``set_image``), so nothing is encoded."""
        from medsam_lite.pipeline.segment import encode_image

        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise ValueError(f"expected an (H, W, 3) or (H, W) uint8 image, got {image.shape} {image.dtype}"
                             f"{_uint8_hint(image)}")
        _check_model_size(image.shape[:2])
        with self._turn:  # an encoding that fails (or is interrupted) leaves the image before with its embedding
            encoded = embedding if embedding is not None else encode_image(self.engine, image)
            self.image, self.embedding = image, encoded

    def _boxes(self, boxes: np.ndarray | list) -> np.ndarray:
        if self.image is None:
            raise RuntimeError("call set_image(image) before predict")
        return checked_boxes(boxes, self.image.shape, is_3d=False)

    def predict(self, boxes: np.ndarray | list) -> np.ndarray:
        """One box (4,) -> (H, W) bool mask; (N, 4) boxes -> (N, H, W) bool masks, in original pixels
        (``[x_min, y_min, x_max, y_max]``)."""
        from medsam_lite.core.preprocess import box_to_256, resized_size

        single = np.ndim(boxes) == 1 and np.size(boxes) > 0  # [] is no boxes: (0, H, W)
        with self._turn:
            array = self._boxes(boxes)
            original = self.image.shape[:2]
            masks = list(self.engine.masks(self.embedding, box_to_256(array, original), resized_size(*original),
                                           original))
        stacked = np.stack(masks) if masks else np.zeros((0, *original), bool)
        return stacked[0] if single else stacked

    def segment(self, boxes: np.ndarray | list) -> np.ndarray:
        """(N, 4) boxes -> (H, W) label map: label i + 1 for box i, later boxes over earlier ones (uint8, uint16
        past 255): exactly what ``predict`` writes for a 2D case."""
        from medsam_lite.core.case import label_dtype
        from medsam_lite.pipeline.segment import segment_2d

        with self._turn:
            array = self._boxes(boxes)
            return segment_2d(self.engine, self.image, array, dtype=label_dtype(len(array)), embedding=self.embedding)

    def predict_volume(self, volume: np.ndarray, boxes: np.ndarray | list,
                       z_middle: np.ndarray | list | None = None) -> np.ndarray:
        """(D, H, W) uint8 volume, (N, 6) boxes ``[x_min, y_min, z_min, x_max, y_max, z_max]`` (z inclusive) ->
        (D, H, W) labels: each box starts on its middle slice (or ``z_middle``) and propagates up and down, each
        slice encoded once: what ``predict`` writes for a 3D case."""
        from medsam_lite.core.case import label_dtype
        from medsam_lite.pipeline.segment import segment_3d

        volume = np.asarray(volume)
        if volume.dtype != np.uint8 or volume.ndim != 3 or volume.shape[2] in (3, 4):
            hint = "; an (H, W, 3) picture goes to set_image" if volume.ndim == 3 and volume.shape[2] in (3, 4) else ""
            raise ValueError(f"expected a (D, H, W) uint8 volume, got {volume.shape} {volume.dtype}"
                             f"{hint or _uint8_hint(volume)}")
        _check_model_size(volume.shape[1:])
        array = checked_boxes(boxes, volume.shape, is_3d=True)
        starts = None if z_middle is None else np.asarray(z_middle, dtype=np.int64)
        with self._turn:
            return segment_3d(self.engine, volume, array, dtype=label_dtype(len(array)), z_middle=starts)


def _uint8_hint(pixels: np.ndarray) -> str:
    """For pixels of another type (a CT in HU, an MR as stored): how to make them what the model takes."""
    if pixels.dtype == np.uint8 or pixels.dtype.kind not in "iuf":
        return ""
    return ("; medsam_lite.to_uint8(pixels, 'CT') (HU through a window, as the official preprocessing) or "
            "to_uint8(pixels, 'MR') (percentiles) makes them uint8")


def _check_model_size(plane: tuple[int, int]) -> None:
    """ValueError (as for other bad input here) for an image the model cannot take: too elongated."""
    from medsam_lite.core.case import CaseError
    from medsam_lite.core.preprocess import resized_size

    try:
        resized_size(*plane)
    except CaseError as exc:
        raise ValueError(str(exc)) from exc


def checked_boxes(boxes: np.ndarray | list, shape: tuple[int, ...], is_3d: bool) -> np.ndarray:
    """Boxes as ``predict`` takes them (``cases.check_boxes``): int64, clipped to the image with a warning;
    ValueError naming the box for one that is inverted, empty or outside."""
    from medsam_lite.core.case import CaseError, check_boxes

    width = 6 if is_3d else 4
    array = np.asarray(boxes)
    if array.size == 0:
        array = np.zeros((0, width), np.int64)
    elif array.shape == (width,):
        array = array[None]  # one box
    elif array.ndim != 2 or array.shape[1] != width:
        layout = "[x_min, y_min, z_min, x_max, y_max, z_max]" if is_3d else "[x_min, y_min, x_max, y_max]"
        raise ValueError(f"boxes must be (N, {width}) {layout}, or one box of {width}; got shape {array.shape}")
    try:
        array, notes = check_boxes(array, shape, is_3d)
    except CaseError as exc:
        raise ValueError(str(exc)) from exc
    for note in notes:
        warnings.warn(note, stacklevel=3)
    return array


def segment_npz(path: str | os.PathLike[str], predictor: Predictor | None = None) -> np.ndarray:
    """One challenge case (2D or 3D, 2024 or 2025 layout) -> its ``segs``, as ``predict`` computes them."""
    from medsam_lite.core.case import CaseError
    from medsam_lite.io.challenge import load_case
    from medsam_lite.pipeline.case import segment_case

    try:
        case = load_case(Path(path))
    except CaseError as exc:  # its message leaves the file to the caller (predict puts the case's name first)
        raise CaseError(f"{path}: {exc}") from exc
    predictor = predictor or Predictor()
    return segment_case(predictor.engine, case)
