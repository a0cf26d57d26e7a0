"""The training loss on the decoder's 256x256 logits: Dice + BCE on the mask, and the IoU head's estimate
against the IoU its own mask reaches (MSE), as in the LiteMedSAM training script; weights are options."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossParts:
    """Per-batch means: the total that is optimised, and its parts for the log."""

    total: torch.Tensor
    dice: float
    bce: float
    iou: float


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(B, 1, 256, 256) logits, {0, 1} target -> per-sample 1 - soft Dice (B,), squared denominators (MONAI's
    ``DiceLoss(sigmoid=True, squared_pred=True)``, which the official script uses)."""
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    inter = (prob * target).sum(1)
    return 1 - (2 * inter + eps) / ((prob * prob).sum(1) + (target * target).sum(1) + eps)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU (B,) of the thresholded logits (> 0, i.e. sigmoid > 0.5) with the target; 1 where both are empty."""
    pred = (logits > 0).flatten(1)
    truth = target.flatten(1) > 0.5
    inter = (pred & truth).sum(1).float()
    union = (pred | truth).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def segmentation_loss(logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor,
                      dice_weight: float = 1.0, bce_weight: float = 1.0, iou_weight: float = 1.0) -> LossParts:
    """logits (B, 1, 256, 256), IoU estimates (B, 1), target (B, 1, 256, 256) in {0, 1} -> the weighted loss.

    Every part is a mean over the batch's samples, so that data-parallel processes (each a share of the batch,
    gradients averaged) compute the gradient of one process on the whole batch."""
    logits = logits.float()
    dice = soft_dice_loss(logits, target).mean()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    iou = F.mse_loss(iou_pred.float()[:, 0], mask_iou(logits.detach(), target))
    total = dice_weight * dice + bce_weight * bce + iou_weight * iou
    return LossParts(total, float(dice.detach()), float(bce.detach()), float(iou.detach()))
