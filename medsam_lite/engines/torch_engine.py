"""The torch engine: the model of ``medsam_lite.modeling`` run eagerly, as the official script runs it."""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from medsam_lite.engines.checkpoint import load_model
from medsam_lite.engines.precision import needs_openvino, resolve
from medsam_lite.core.timing import stage

# Boxes per decoder run. Measured on 33 boxes of one 2D image (2 cores): one at a time 1.8 s, all 33 in
# one batch 4.8 s (the decoder repeats the 64x64 embedding per box, and large batches leave the cache).
# One at a time is also bit-identical to the official script; batches differ in the last float bits.
DECODE_CHUNK = 1


class TorchEngine:
    """LiteMedSAM in torch eager mode on the CPU (or ``device``)."""

    name = "torch"
    slice_pairs = False  # one encoder: a volume's slices one at a time

    def __init__(self, checkpoint: str | os.PathLike[str], device: str = "cpu", threads: int | None = None,
                 precision: str = "f32") -> None:
        chosen = resolve(precision)
        if chosen.mode != "f32":
            raise ValueError(needs_openvino(chosen.asked, chosen.mode))
        self.precision, self.precision_label = chosen.mode, chosen.label  # f32; "fast=f32" where fast chose it
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        model, self.notes = load_model(checkpoint)
        self.model = model.to(self.device)
        self.image_pe = self.model.prompt_encoder.get_dense_pe()
        self.encoder_passes = 0

    def ready(self) -> None:
        """Loaded when made: nothing to wait for."""

    @torch.no_grad()
    def encode(self, image: np.ndarray) -> torch.Tensor:
        """(1, 3, 256, 256) float32 -> (1, 256, 64, 64) embedding tensor."""
        self.encoder_passes += 1
        with stage("encoder"):
            return self.model.encode(torch.from_numpy(image).to(self.device))

    @torch.no_grad()
    def logits(self, embedding: torch.Tensor, boxes_256: np.ndarray) -> torch.Tensor:
        """(N, 4) boxes at 256 -> (N, 1, 256, 256) low-res logits, decoded in chunks of DECODE_CHUNK."""
        boxes = torch.as_tensor(np.asarray(boxes_256), dtype=torch.float32, device=self.device)
        image = self.model.prepare_decoder(embedding)
        parts = [self.model.decode_prepared(image, boxes[i : i + DECODE_CHUNK]) for i in range(0, len(boxes), DECODE_CHUNK)]
        return torch.cat(parts)

    @torch.no_grad()
    def prompt_logits(self, embedding: torch.Tensor, coords_256: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(K, 2) points at 256 with SAM labels (K,) -> logits of the four mask tokens (4, 256, 256), IoU (4,)."""
        with stage("decoder"):
            image = self.model.prepare_decoder(embedding)
            coords = torch.as_tensor(np.asarray(coords_256, np.float32).reshape(1, -1, 2), device=self.device)
            kinds = torch.as_tensor(np.asarray(labels, np.float32).reshape(1, -1), device=self.device)
            logits, iou = self.model.decode_prompts(image, coords, kinds)
            return logits[0].cpu().numpy(), iou[0].cpu().numpy()

    @torch.no_grad()
    def masks(
        self, embedding: torch.Tensor, boxes_256: np.ndarray, resized: tuple[int, int], original: tuple[int, int]
    ) -> Iterator[np.ndarray]:
        """Masks in original pixels, one box at a time: crop, bilinear upsample, sigmoid > 0.5."""
        with stage("decoder"):
            logits = self.logits(embedding, boxes_256)[..., : resized[0], : resized[1]]
        for i in range(logits.shape[0]):
            with stage("postprocess"):
                up = F.interpolate(logits[i : i + 1], size=original, mode="bilinear", align_corners=False)
                mask = (torch.sigmoid(up) > 0.5)[0, 0].cpu().numpy()
            yield mask
