"""One training epoch: the epoch's seeded sample order in batches of ``batch_size`` (over all processes; the
last incomplete batch is left out), bf16 autocast where asked, a scheduler step per optimiser step, and the
mean loss parts for the log and ``metrics.csv``."""
from __future__ import annotations

import sys

import numpy as np
import torch
from tqdm import tqdm

from medsam_lite.train.config import FinetuneConfig
from medsam_lite.train.distributed import Distributed
from medsam_lite.train.objective import segmentation_loss
from medsam_lite.train.samples import Sample, epoch_order
from medsam_lite.train.step import batch_inputs


def train_epoch(config: FinetuneConfig, epoch: int, samples: list[Sample], cases, embeddings: dict | None,
                step_module: torch.nn.Module, optimizer, schedule, steps: int, per_epoch: int, amp: bool,
                dist: Distributed) -> dict:
    order = epoch_order(len(samples), per_epoch, config.seed, epoch)
    sums = np.zeros(4)
    device = dist.device
    with tqdm(range(steps), desc=f"epoch {epoch}", unit="step", file=sys.stderr, disable=not dist.is_main,
              leave=False) as bar:  # closed however the epoch ends (a stop, a full disk)
        for step in bar:
            batch = order[step * config.batch_size:(step + 1) * config.batch_size]
            positions = list(range(dist.rank, len(batch), dist.world))
            mine = [samples[batch[p]] for p in positions]
            inputs, boxes, targets = batch_inputs(mine, positions, cases, embeddings, config.jitter, config.seed, epoch, step)
            inputs, boxes, targets = inputs.to(device), boxes.to(device), targets.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits, iou = step_module(inputs, boxes)
            loss = segmentation_loss(logits, iou, targets, config.dice_weight, config.bce_weight, config.iou_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            optimizer.step()
            schedule.step()
            sums += [float(loss.total.detach()), loss.dice, loss.bce, loss.iou]
            bar.set_postfix(loss=f"{sums[0] / (step + 1):.4f}")
    means = [dist.mean(v / steps) for v in sums]
    return dict(zip(("train_loss", "train_dice", "train_bce", "train_iou"), means))
