"""Validation as ``predict`` + ``evaluate`` score a model: the case's own boxes (no jitter), 2D cases through
``segment_2d`` and 3D cases through ``segment_3d``'s propagation, masks from the logits by the same
post-processing as the OpenVINO engine, DSC/NSD by ``evaluation.metrics``.

The only difference from ``predict`` is where embeddings come from: the training run's cache (frozen
encoder) or the model being trained (``all``, ``lora``), so one epoch's score costs decoder passes only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from evaluation.metrics import case_metrics
from medsam_lite.core.postprocess import full_masks
from medsam_lite.pipeline.segment import segment_2d, segment_3d
from medsam_lite.train.data import TrainingCase


class ModelEngine:
    """The ``Engine`` contract over a torch LiteMedSAM in training. ``refresh()`` converts the model's decoder as
    it is now to OpenVINO (the exported graphs, about 6 s), which then decodes as ``predict`` does: 15 ms a box
    instead of torch's 44 on 2 cores, the larger part of a validation's time. On a GPU, and for validations too
    small to repay the conversion (``convert=False``), the model decodes itself.
    ``encode`` runs the model's own encoder (``--train all``/``lora``); cached embeddings are given instead."""

    name = "training"
    slice_pairs = False  # the model's own encoder or cached embeddings: one slice at a time

    def __init__(self, model: torch.nn.Module, device: torch.device, convert: bool = True) -> None:
        self.model = model
        self.device = device
        self.convert = convert and device.type == "cpu"
        self.encoder_passes = 0
        self.decoder = None

    def ready(self) -> None:
        """Nothing to wait for."""

    def refresh(self) -> None:
        """Take the decoder's current weights (call after training steps, before segmenting)."""
        if not self.convert:
            return
        from medsam_lite.engines.box_decoder import compile_box_decoder, decoder_models
        from medsam_lite.engines.openvino_engine import compile_config

        image_model, box_model = decoder_models(self.model)
        self.decoder = compile_box_decoder(image_model, box_model, compile_config("f32", torch.get_num_threads()))

    @torch.no_grad()
    def encode(self, image: np.ndarray) -> np.ndarray:
        self.encoder_passes += 1
        return self.model.encode(torch.from_numpy(image).to(self.device)).float().cpu().numpy()

    @torch.no_grad()
    def masks(self, embedding, boxes_256: np.ndarray, resized: tuple[int, int], original: tuple[int, int]) -> Iterator[np.ndarray]:
        embedding = np.array(embedding, dtype=np.float32).reshape(1, *np.shape(embedding)[-3:])  # a float32 copy
        if self.decoder is not None:
            return self.decoder.masks(embedding, boxes_256, resized, original)
        boxes = torch.as_tensor(np.asarray(boxes_256), dtype=torch.float32, device=self.device)
        logits = self.model.decode(torch.from_numpy(embedding).to(self.device), boxes)[:, 0].float().cpu().numpy()
        return full_masks(logits, resized, original)


@dataclass
class CaseScore:
    """One validation case: DSC (and NSD when asked) over its labels."""

    name: str
    dsc: float
    nsd: float | None


def segment_validation_case(engine: ModelEngine, case: TrainingCase,
                            embedding_of: Callable[[int], object] | None) -> np.ndarray:
    """The case's labels as ``predict`` would write them: (D, H, W) for 3D, (H, W) for 2D.

    ``embedding_of(z)``: the slice's cached embedding; None: encode with the model being trained."""
    if case.is_3d:
        return segment_3d(engine, case.image, case.boxes, dtype=np.uint16, slice_embedding=embedding_of)
    embedding = embedding_of(0) if embedding_of is not None else None
    return segment_2d(engine, case.image[0], case.boxes, dtype=np.uint16, embedding=embedding)


def score_case(engine: ModelEngine, case: TrainingCase, embedding_of: Callable[[int], object] | None,
               nsd: bool = False) -> CaseScore:
    segs = segment_validation_case(engine, case, embedding_of)
    gts = case.labels if case.is_3d else case.labels[0]
    metrics = case_metrics(gts, segs, case.spacing if case.is_3d else None, nsd=nsd)
    return CaseScore(case.name, metrics.dsc, metrics.nsd)

