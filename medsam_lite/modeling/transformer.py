"""Two-way transformer of SAM's mask decoder: prompt tokens and image tokens attend to each other.

What depends only on the image (the flattened embedding, its positional encoding and the first layer's
projections of them) is computed once by ``prepare``; ``forward_prepared`` does the rest for any number of
boxes. ``forward`` is both in one go, as SAM's ``TwoWayTransformer.forward``.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from medsam_lite.modeling.common import ExportForm, MLPBlock, grid_to_tokens


class ImageProjections(NamedTuple):
    """A block's projections of the image tokens that do not depend on the prompts, each (B, 4096, 128), heads
    first (B, 8, 4096, 16) in the exported form (``Attention.image_heads``): token->image keys and values,
    image->token queries."""

    token_to_image_k: torch.Tensor
    token_to_image_v: torch.Tensor
    image_to_token_q: torch.Tensor


class PreparedImage(NamedTuple):
    """The image side of the transformer before the first layer: tokens (B, 4096, 256), their positional
    encoding (1, 4096, 256), and the first layer's prompt-independent projections."""

    keys: torch.Tensor
    key_pe: torch.Tensor
    first_layer: ImageProjections


class Attention(ExportForm, nn.Module):
    """Multi-head attention whose projections may shrink the width by ``downsample_rate``.

    q: (B, Nq, dim), k and v: (B, Nk, dim) -> (B, Nq, dim). Exported form: heads as block-diagonal matrices
    (``_attend_block_diagonal``, ``_tokens_to_image``); on 2 cores OpenVINO decodes a box in 13.3 ms instead
    of 19.4 ms with it (best of 10, same run). The image -> token query projection moved to the key side as
    well (``_image_to_tokens``, format 6): on the 2-core AMD EPYC the microscopy 3D case's decoder took 51.0 and
    52.0 s instead of 55.8 and 63.8 s (same run, interleaved, identical masks). A prepared image's first-layer
    projections are heads first (``image_heads``, format 11): on the 2-core Xeon with AMX that case's decoder
    stage took 28.8 s instead of 31.1 s (means of four runs each, interleaved, identical masks).
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

    def _head_mask(self, x: torch.Tensor) -> torch.Tensor:
        """(heads, 1, internal): 1 where a channel belongs to the head, else 0."""
        width = x.shape[-1]
        heads = torch.arange(width, device=x.device) // (width // self.num_heads)
        return (heads == torch.arange(self.num_heads, device=x.device)[:, None]).to(x.dtype)[:, None, :]

    def _spread(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N, internal) -> (B, heads * N, internal): a copy per head, the other heads' channels zeroed."""
        return (x.unsqueeze(1) * mask).flatten(1, 2)

    def _own_heads(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, heads * N, internal) -> (B, N, internal): each head's rows keep their own channels, summed."""
        return (x.unflatten(1, (self.num_heads, -1)) * mask).sum(1)

    def _attend_block_diagonal(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``attend`` with the heads as block-diagonal matrices instead of a heads axis, for q with at least as
        many tokens as k: in the exported graphs only the prompt tokens' self-attention (7 x 7) comes here; the
        prompts-to-image attentions take ``_tokens_to_image`` or a heads-first image side (``image_heads``), the
        image-to-prompts ones ``_image_to_tokens`` or ``_image_heads_to_tokens``.

        k and v are copied once per head with the other heads' channels zeroed, so each product is one matmul
        over the full width (the added terms are exact zeros) and the scores come laid out for
        ``_weighted_values``. Same sums in another order: float rounding.
        """
        mask = self._head_mask(q)
        keys = self._spread(k, mask)  # (B, heads * Nk, internal)
        scale = math.sqrt(q.shape[-1] // self.num_heads)
        return self._weighted_values((keys @ q.transpose(1, 2)) / scale, self._spread(v, mask))

    def _tokens_to_image(self, q: torch.Tensor, image_k: torch.Tensor, image_v: torch.Tensor) -> torch.Tensor:
        """Few projected queries (B, Nq, internal) against unprojected image inputs (B or 1, 4096, dim), the
        key and value projections moved to the query side: q . (W_k x + b_k) = (q W_k) . x + q . b_k and
        sum_i p_i (W_v x_i + b_v) = W_v (sum_i p_i x_i) + b_v (the p_i sum to 1). 56 rows are projected
        instead of 4096 image tokens twice. -> (B, Nq, dim)."""
        mask = self._head_mask(q)
        scale = math.sqrt(q.shape[-1] // self.num_heads)
        queries = self._spread(q, mask)  # (B, heads * Nq, internal)
        # Scores as (4096, 56) x-side products, then laid out (56, 4096) for the softmax and the sum over the
        # image: OpenVINO runs this as plain matmuls (fused attention was 2 ms a layer instead of 0.6), and a
        # softmax over axis 1 followed by a transposed product tripled the logits' rounding error.
        scores = image_k @ (queries @ self.k_proj.weight).transpose(1, 2) + (queries @ self.k_proj.bias)[:, None, :]
        attn = torch.softmax(scores.transpose(1, 2) / scale, dim=-1)  # (B, heads * Nq, 4096)
        out = F.linear(attn @ image_v, self.v_proj.weight, self.v_proj.bias)  # (B, heads * Nq, internal)
        return self.out_proj(self._own_heads(out, mask))

    def _weighted_values(self, scores: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Scaled scores laid out (B, heads * Nk, Nq) and spread values (B, heads * Nk, internal) -> (B, Nq, dim):
        the softmax over each head's Nk rows, ``out_proj`` applied to the 56 value rows before the sum.

        With the Nq = 4096 image tokens on the last axis, OpenVINO's softmax runs along them (Nk = 7 at a time,
        vectorised over the tokens) instead of over 32768 rows of 7 (format 9): on the 2-core AMD EPYC the two
        layers' softmaxes took 2.89 -> 0.48 ms of a box on one thread (median of 150 interleaved), and the product
        reads the scores transposed without a layout node. (The prompt tokens' self-attention, 7 x 7, takes this
        path too.)"""
        attn = torch.softmax(scores.unflatten(1, (self.num_heads, -1)), dim=2).flatten(1, 2)
        return attn.transpose(1, 2) @ F.linear(values, self.out_proj.weight) + self.out_proj.bias

    def _image_to_tokens(self, image_q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Unprojected image queries (B, 4096, dim) against few projected keys and values (B, Nk, internal), the
        query projection moved to the key side: (W_q x + b_q) . k = x . (W_q^T k) + b_q . k, so 56 rows are
        projected instead of 4096 image tokens. -> (B, 4096, dim)."""
        mask = self._head_mask(k)
        scale = math.sqrt(k.shape[-1] // self.num_heads)
        keys = self._spread(k, mask)  # (B, heads * Nk, internal)
        scores = (keys @ self.q_proj.weight) @ image_q.transpose(1, 2) + (keys @ self.q_proj.bias)[:, :, None]
        return self._weighted_values(scores / scale, self._spread(v, mask))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.export_form and q.shape[1] < k.shape[1]:
            return self._tokens_to_image(self.q_proj(q), k, v)
        if self.export_form and q.shape[1] > k.shape[1]:
            return self._image_to_tokens(q, self.k_proj(k), self.v_proj(v))
        return self.attend(self.q_proj(q), self.k_proj(k), self.v_proj(v))

    def image_heads(self, x: torch.Tensor) -> torch.Tensor:
        """A projection of the image tokens (B, 4096, internal) as ``attend`` takes it: heads first, (B, heads,
        4096, head_dim), in the exported form (made once per image, so no box pays the layout change), else as
        it is."""
        return self._heads(x) if self.export_form else x

    def _image_heads_to_tokens(self, image_q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Image queries heads first (B, heads, 4096, head_dim; ``image_heads``) against projected prompt keys
        and values (B, Nk, internal) -> (B, 4096, dim), the softmax over each head's Nk tokens as in
        ``_weighted_values``."""
        scores = (self._heads(k) @ image_q.transpose(2, 3)).flatten(1, 2)  # (B, heads * Nk, 4096)
        return self._weighted_values(scores / math.sqrt(image_q.shape[-1]), self._spread(v, self._head_mask(v)))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Already projected q (B, Nq, internal), k and v (B, Nk, internal) -> (B, Nq, dim); batches of 1
        broadcast against the others. In the exported form a prepared image's side comes heads first
        (``image_heads``, export format 11): each head's scores then use its own 16 channels, where the
        block-diagonal form multiplies all 128 and 112 of the products are exact zeros. The first layer's two
        image-side score products took 2.47 + 0.70 ms of a box on one thread block-diagonal and 0.85 + 0.41 ms
        heads first (2-core Xeon with AMX, PERF_COUNT); the box logits came out the same bit for bit."""
        if self.export_form and q.dim() == 4:
            return self._image_heads_to_tokens(q, k, v)
        if self.export_form and k.dim() == 3 and q.shape[1] >= k.shape[1]:
            return self._attend_block_diagonal(q, k, v)
        # SAM's form, and the exported form's prompt queries against image keys and values already heads first
        q, k, v = (x if x.dim() == 4 else self._heads(x) for x in (q, k, v))
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
        to_image, to_token = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        return ImageProjections(
            to_image.image_heads(to_image.k_proj(k)),
            to_image.image_heads(to_image.v_proj(keys)),
            to_token.image_heads(to_token.q_proj(k)),
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
        to_image = self.cross_attn_token_to_image
        if projections is None:
            image_k = keys + key_pe
            attn_out = to_image(q=queries + query_pe, k=image_k, v=keys)
        else:
            attn_out = to_image.attend(to_image.q_proj(queries + query_pe), projections.token_to_image_k,
                                       projections.token_to_image_v)
        queries = self.norm2(queries + attn_out)
        queries = self.norm3(queries + self.mlp(queries))
        q = queries + query_pe
        to_token = self.cross_attn_image_to_token
        if projections is None:
            attn_out = to_token(q=image_k, k=q, v=queries)
        else:
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
        keys = grid_to_tokens(image_embedding)
        key_pe = grid_to_tokens(image_pe)
        return PreparedImage(keys, key_pe, self.layers[0].image_projections(keys, key_pe))

    def forward_prepared(
        self, image: PreparedImage, point_embedding: torch.Tensor, final_tokens: slice = slice(None)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt tokens (B, N, C) against a prepared image -> tokens (B, N, C), image tokens (B, h*w, C).

        ``final_tokens``: the tokens that go through the final token -> image attention and are returned (the
        others are not wanted). Each query row of that attention is its own softmax and sum, so leaving rows
        out changes nothing in the rows kept; one box's mask needs 1 of the 7 (format 7).
        """
        keys, key_pe = image.keys, image.key_pe
        queries = point_embedding
        for i, layer in enumerate(self.layers):
            queries, keys = layer(queries, keys, point_embedding, key_pe, image.first_layer if i == 0 else None)
        queries, query_pe = queries[:, final_tokens], point_embedding[:, final_tokens]
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q=q, k=k, v=keys))
        return queries, keys

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_prepared(self.prepare(image_embedding, image_pe[:1]), point_embedding)
