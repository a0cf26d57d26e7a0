"""Prompt encoder of SAM, as used by LiteMedSAM: boxes (the challenge), and points (the service); no mask prompts.

Checkpoint keys are kept (``point_embeddings``, ``not_a_point_embed``, ``mask_downscaling``) so the official
state dict loads with ``strict=True``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from medsam_lite.modeling.common import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Fourier features of 2-D coordinates with a fixed random Gaussian frequency matrix (2, num_feats)."""

    def __init__(self, num_pos_feats: int = 64) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, num_pos_feats)))

    def encode_unit(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) coordinates in [0, 1] (x, y) -> (..., 2 * num_feats) as [sin, cos]."""
        projected = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        projected = 2 * math.pi * projected
        return torch.cat([torch.sin(projected), torch.cos(projected)], dim=-1)

    def grid(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of every cell centre of an (h, w) grid: (2 * num_feats, h, w)."""
        h, w = size
        ones = torch.ones((h, w), dtype=torch.float32, device=self.positional_encoding_gaussian_matrix.device)
        y = (ones.cumsum(dim=0) - 0.5) / h
        x = (ones.cumsum(dim=1) - 0.5) / w
        return self.encode_unit(torch.stack([x, y], dim=-1)).permute(2, 0, 1)

    def encode_pixels(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, N, 2) coordinates in pixels of an (h, w) image -> (B, N, 2 * num_feats)."""
        h, w = image_size
        unit = torch.stack([coords[..., 0] / w, coords[..., 1] / h], dim=-1)
        return self.encode_unit(unit.to(torch.float32))


class PromptEncoder(nn.Module):
    """Embeds boxes as two corner tokens and gives the dense "no mask" embedding.

    Boxes are (B, 4) or (B, 1, 4) ``[x_min, y_min, x_max, y_max]`` in pixels of the 256x256 model input.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        image_embedding_size: tuple[int, int] = (64, 64),
        input_image_size: tuple[int, int] = (256, 256),
        mask_in_chans: int = 16,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0/1: negative/positive point, 2/3: top-left/bottom-right box corner.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        # Mask-prompt branch: unused at inference, kept for the checkpoint layout.
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the embedding grid: (1, embed_dim, 64, 64)."""
        return self.pe_layer.grid(self.image_embedding_size).unsqueeze(0)

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """(B, 4) or (B, 1, 4) boxes at 256 -> (B, 2, embed_dim) corner tokens."""
        corners = (boxes.to(torch.float32) + 0.5).reshape(-1, 2, 2)  # pixel centres
        tokens = self.pe_layer.encode_pixels(corners, self.input_image_size)
        corner_kind = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight], dim=0)
        return tokens + corner_kind

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, K, 2) points at 256 (x, y) with labels (B, K) -> (B, K, embed_dim) tokens, as SAM's prompt
        encoder: label 1 foreground, 0 background, 2/3 a box's top-left/bottom-right corner, -1 padding (SAM
        appends one padding point when there is no box). A box as corners 2, 3 gives ``embed_boxes``' tokens."""
        tokens = self.pe_layer.encode_pixels(coords.to(torch.float32) + 0.5, self.input_image_size)
        labels = labels.to(torch.float32).unsqueeze(-1)
        tokens = tokens * (labels != -1) + self.not_a_point_embed.weight * (labels == -1)
        for kind, embedding in enumerate(self.point_embeddings):
            tokens = tokens + embedding.weight * (labels == kind)
        return tokens

    def forward(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes (B, 4) -> sparse (B, 2, embed_dim) and dense (B, embed_dim, 64, 64) embeddings."""
        sparse = self.embed_boxes(boxes)
        h, w = self.image_embedding_size
        dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(sparse.shape[0], -1, h, w)
        return sparse, dense
