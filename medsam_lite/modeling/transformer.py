"""Two-way transformer of SAM's mask decoder: prompt tokens and image tokens attend to each other.

What depends only on the image (the flattened embedding, its positional encoding and the first layer's
projections of them) is computed once by ``prepare``; ``forward_prepared`` does the rest for any number of
boxes. ``forward`` is both in one go, as SAM's ``TwoWayTransformer.forward``.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from medsam_lite.modeling.common import MLPBlock


class ImageProjections(NamedTuple):
    """A block's projections of the image tokens that do not depend on the prompts, each (B, 4096, 128):
    token->image keys and values, image->token queries."""

    token_to_image_k: torch.Tensor
    token_to_image_v: torch.Tensor
    image_to_token_q: torch.Tensor


class PreparedImage(NamedTuple):
    """The image side of the transformer before the first layer: tokens (B, 4096, 256), their positional
    encoding (1, 4096, 256), and the first layer's prompt-independent projections."""

    keys: torch.Tensor
    key_pe: torch.Tensor
    first_layer: ImageProjections


class Attention(nn.Module):
    """Multi-head attention whose projections may shrink the width by ``downsample_rate``.

    q: (B, Nq, dim), k and v: (B, Nk, dim) -> (B, Nq, dim).
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads
        internal = embedding_dim // downsample_rate
        if internal % num_heads:
            raise ValueError("num_heads must divide the internal width")
        self.q_proj = nn.Linear(embedding_dim, internal)
        self.k_proj = nn.Linear(embedding_dim, internal)
        self.v_proj = nn.Linear(embedding_dim, internal)
        self.out_proj = nn.Linear(internal, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.attend(self.q_proj(q), self.k_proj(k), self.v_proj(v))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Already projected q (B, Nq, internal), k and v (B, Nk, internal) -> (B, Nq, dim); batches of 1
        broadcast against the others."""
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        attn = (q @ k.permute(0, 1, 3, 2)) / math.sqrt(q.shape[-1])
        out = torch.softmax(attn, dim=-1) @ v
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image cross-attention, token MLP, image->token cross-attention."""

    def __init__(
        self, embedding_dim: int, num_heads: int, mlp_dim: int, downsample_rate: int, skip_first_layer_pe: bool
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def image_projections(self, keys: torch.Tensor, key_pe: torch.Tensor) -> ImageProjections:
        """The projections of the image tokens (B, 4096, 256) that this block would make from them."""
        k = keys + key_pe
        return ImageProjections(
            self.cross_attn_token_to_image.k_proj(k),
            self.cross_attn_token_to_image.v_proj(keys),
            self.cross_attn_image_to_token.q_proj(k),
        )

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        projections: ImageProjections | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries (B, N, 256), keys (B or 1, 4096, 256) -> both updated; ``projections`` if already made."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)
        if projections is None:
            projections = self.image_projections(keys, key_pe)
        to_image = self.cross_attn_token_to_image
        attn_out = to_image.attend(to_image.q_proj(queries + query_pe), projections.token_to_image_k,
                                   projections.token_to_image_v)
        queries = self.norm2(queries + attn_out)
        queries = self.norm3(queries + self.mlp(queries))
        q = queries + query_pe
        to_token = self.cross_attn_image_to_token
        attn_out = to_token.attend(projections.image_to_token_q, to_token.k_proj(q), to_token.v_proj(queries))
        keys = self.norm4(keys + attn_out)
        return queries, keys


class TwoWayTransformer(nn.Module):
    """image (B, C, h, w), image_pe (B, C, h, w), tokens (B, N, C) -> tokens (B, N, C), image (B, h*w, C)."""

    def __init__(
        self, depth: int = 2, embedding_dim: int = 256, num_heads: int = 8, mlp_dim: int = 2048, downsample_rate: int = 2
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, downsample_rate, skip_first_layer_pe=(i == 0))
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def prepare(self, image_embedding: torch.Tensor, image_pe: torch.Tensor) -> PreparedImage:
        """The prompt-independent image side: (B, C, h, w) embedding and (1, C, h, w) encoding."""
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        return PreparedImage(keys, key_pe, self.layers[0].image_projections(keys, key_pe))

    def forward_prepared(
        self, image: PreparedImage, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt tokens (B, N, C) against a prepared image -> tokens (B, N, C), image tokens (B, h*w, C)."""
        keys, key_pe = image.keys, image.key_pe
        queries = point_embedding
        for i, layer in enumerate(self.layers):
            queries, keys = layer(queries, keys, point_embedding, key_pe, image.first_layer if i == 0 else None)
        q, k = queries + point_embedding, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q=q, k=k, v=keys))
        return queries, keys

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_prepared(self.prepare(image_embedding, image_pe[:1]), point_embedding)
