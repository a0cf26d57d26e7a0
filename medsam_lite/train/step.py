"""One training step's forward pass as a module (so that DistributedDataParallel sees it), and the batch it
takes: embeddings (cached, or the encoder's on model inputs), jittered boxes and 256x256 targets."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medsam_lite.train.data import TrainingCase
from medsam_lite.train.embeddings import slice_input
from medsam_lite.train.samples import Sample, jittered_box, labels_256


class TrainStep(nn.Module):
    """(B, 256, 64, 64) embeddings or (B, 3, 256, 256) model inputs, (B, 4) boxes at 256 -> logits (B, 1, 256,
    256) and IoU estimates (B, 1), through the same model parts as inference (``predict`` in the decoder)."""

    def __init__(self, model: nn.Module, live_encoder: bool) -> None:
        super().__init__()
        self.model = model
        self.live_encoder = live_encoder

    def forward(self, inputs: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.model.encode(inputs) if self.live_encoder else inputs
        sparse = self.model.prompt_encoder.embed_boxes(boxes)
        return self.model.mask_decoder.predict(self.model.prepare_decoder(embedding), sparse)


def batch_inputs(samples: list[Sample], positions: list[int], cases: list[TrainingCase], embeddings: dict | None,
                 jitter: int, seed: int, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, boxes and targets of ``samples``; ``positions`` are their places in the global batch, so that the
    jitter of a sample is the same whichever process takes it."""
    inputs, boxes, targets = [], [], []
    for sample, position in zip(samples, positions):
        case = cases[sample.case]
        target = labels_256(case.labels[sample.z], sample.flip) == sample.label
        rng = np.random.default_rng([seed, epoch, step, position])
        boxes.append(jittered_box(target, jitter, rng))
        targets.append(target)
        if embeddings is not None:
            inputs.append(np.asarray(embeddings[(case.name, sample.flip)][sample.z], dtype=np.float32))
        else:
            inputs.append(slice_input(case, sample.z, sample.flip)[0])
    return (torch.from_numpy(np.stack(inputs)), torch.from_numpy(np.stack(boxes)),
            torch.from_numpy(np.stack(targets)[:, None].astype(np.float32)))
