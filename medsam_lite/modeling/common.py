"""Small building blocks shared by the LiteMedSAM parts."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


class ExportForm:
    """Mixin of the modules that have a second, exported form of their computation: the same sums in an order
    OpenVINO runs faster (float rounding apart). ``export_form`` is False (SAM's form, what training and the
    torch engine run) unless ``exported_form`` switches it on."""

    export_form: bool = False


@contextmanager
def exported_form(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every ``ExportForm`` module inside ``module`` computes in its exported form (what
    ``engines.export`` traces); restored afterwards, so that a model being trained keeps SAM's form."""
    parts = [m for m in module.modules() if isinstance(m, ExportForm)]
    before = [m.export_form for m in parts]
    for m in parts:
        m.export_form = True
    try:
        yield module
    finally:
        for m, state in zip(parts, before):
            m.export_form = state


def grid_to_tokens(x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C), the same values either way. ``channels_last`` (the encoder's exported form)
    writes it as one 4-D permutation, which OpenVINO folds into the channels-last layout its convolutions run in;
    flattened to (B, C, H*W) and transposed, it reorders to planar and transposes back. On a 2-core AMD EPYC
    (export format 9 -> 10) Transpose and Reorder went from 58 to 19 ms of an encoder pass (PERF_COUNT) and the
    microscopy volume's encoder stage from 69.1 to 62.3 s (means of three interleaved runs)."""
    if channels_last:
        b, c, h, w = x.shape
        return x.permute(0, 2, 3, 1).reshape(b, h * w, c)
    return x.flatten(2).transpose(1, 2)


def tokens_to_grid(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W), as a view."""
    return x.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2)


class LayerNorm2d(nn.Module):
    """Layer norm over the channel axis of a (B, C, H, W) tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLPBlock(nn.Module):
    """Two linear layers with an activation between them: (..., dim) -> (..., dim)."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))
