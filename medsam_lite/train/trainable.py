"""What ``--train`` trains, the optimiser and schedule over it, and the weights saved in the official layout.

- ``decoder``: the mask decoder (the single-mask path: the three multi-mask hypernetworks get no gradient and
  stay frozen); ``prompt+decoder`` adds the prompt encoder; ``all`` trains every weight with the encoder's
  BatchNorm layers kept in eval mode (their running statistics stay those of the starting checkpoint: batches
  of a few slices would make them drift); ``lora`` adds rank-r adapters to each encoder attention's ``qkv``
  (LoRA, B initialised to zero, so step 0 is the starting model) and trains them with the decoder.
- AdamW, no weight decay on norms, biases, embeddings and adapters' zero start; linear warm-up then cosine.
- ``official_state_dict`` merges adapters into ``qkv`` so that every saved ``best.pth`` loads into
  ``predict``, ``export``, the service and the official script as they are.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from medsam_lite.modeling.image_encoder import WindowAttention


class LoRALinear(nn.Module):
    """``base(x) + scale * x A^T B^T``: a frozen linear layer with a trainable low-rank update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        self.base = base
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scale = (alpha or rank) / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    def merged_weight(self) -> torch.Tensor:
        return self.base.weight + self.scale * (self.lora_b @ self.lora_a)


def add_lora(model: nn.Module, rank: int) -> int:
    """Wrap every encoder attention's ``qkv`` in a LoRALinear; returns how many."""
    count = 0
    for module in model.image_encoder.modules():
        if isinstance(module, WindowAttention) and isinstance(module.qkv, nn.Linear):
            module.qkv = LoRALinear(module.qkv, rank)
            count += 1
    return count


def select_trainable(model: nn.Module, mode: str, lora_rank: int = 4) -> list[str]:
    """Set ``requires_grad`` for ``mode``; returns the names of the trained parameters."""
    if mode == "lora":
        add_lora(model, lora_rank)
    for name, param in model.named_parameters():
        if mode == "all":
            train = True
        elif mode == "lora":
            train = name.startswith("mask_decoder.") or ".lora_" in name
        elif mode == "prompt+decoder":
            train = name.startswith(("mask_decoder.", "prompt_encoder."))
        else:
            train = name.startswith("mask_decoder.")
        unused = name.startswith("mask_decoder.output_hypernetworks_mlps.") and not name.startswith(
            "mask_decoder.output_hypernetworks_mlps.0.")
        param.requires_grad_(train and not unused)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def set_train_mode(model: nn.Module, mode: str) -> None:
    """Training mode for what is trained; BatchNorm (encoder) always in eval mode."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    if mode not in ("all", "lora"):
        model.image_encoder.eval()


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: decay on weight matrices and kernels only."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        plain = param.ndim <= 1 or name.endswith(("token.weight", "tokens.weight", "lora_b", "lora_a")) or "embed" in name
        (no_decay if plain else decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def make_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` of the steps, then cosine to zero at ``total_steps``."""
    warm = max(1, int(round(total_steps * warmup)))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights in the official ``lite_medsam.pth`` layout (adapters merged), as CPU tensors."""
    merged: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            merged[f"{name}.weight"] = module.merged_weight().detach()
            merged[f"{name}.bias"] = module.base.bias.detach()
    out = {}
    for key, value in model.state_dict().items():
        if ".lora_" in key:
            continue
        key = key.replace(".base.", ".") if ".qkv.base." in key else key
        out[key] = merged.get(key, value).detach().cpu().clone()
    return out
