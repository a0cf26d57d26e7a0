"""SAM mask decoder: one low-resolution mask (256x256 logits) per box (``multimask_output=False``), or all four
mask tokens with their IoU estimates for point prompts."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medsam_lite.modeling.common import LayerNorm2d
from medsam_lite.modeling.transformer import PreparedImage, TwoWayTransformer


# Image tokens per strip of the exported upscaling: its (rows * 16, 64) and (rows * 16, 32) activations stay in
# cache between the two transposed convolutions, the LayerNorm, the GELUs and the product with the hypernetwork
# output, instead of 4-8 MiB tensors streamed through memory per box. Measured on the 2-core AMD EPYC (OpenVINO
# 2026.4.1, official weights, one box, interleaved, best / median of 30): whole 4096 tokens 20.0 / 21.8 ms on 2
# threads, 32.0 / 38.5 ms on 1; strips of 512 18.0 / 21.8 and 30.5 / 35.0; of 1024 17.5 / 20.2 and 29.8 / 34.8.
# In the microscopy volume's two side-by-side streams the decoder stage moved within that machine's spread
# (54.3 / 59.6 -> 54.1 / 55.5 s, interleaved); the logits are the same bit for bit.
UPSCALE_ROWS = 1024


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MaskDecoder(nn.Module):
    """Embedding (1 or B, 256, 64, 64) + prompts -> logits (B, 1, 256, 256) and IoU estimate (B, 1)."""

    def __init__(
        self,
        transformer: TwoWayTransformer,
        transformer_dim: int = 256,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def prepare(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, dense_prompt_embeddings: torch.Tensor
    ) -> PreparedImage:
        """What the decoder computes from the image alone: embedding (B, 256, 64, 64) plus the dense prompt
        embedding (B or 1, 256, 64, 64), with the positional encoding (1, 256, 64, 64)."""
        return self.transformer.prepare(image_embeddings + dense_prompt_embeddings, image_pe[:1])

    def _transformer(
        self, image: PreparedImage, sparse_prompt_embeddings: torch.Tensor, final_tokens: slice = slice(None)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Output tokens (B, 7, 256), or those of ``final_tokens``, and image tokens (B, 4096, 256) after the
        two-way transformer."""
        n = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(n, -1, -1), sparse_prompt_embeddings], dim=1)
        return self.transformer.forward_prepared(image, tokens, final_tokens)

    def predict(self, image: PreparedImage, sparse_prompt_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt tokens (B, 2, 256) against a prepared image -> logits (B, 1, 256, 256), IoU estimate (B, 1).

        Single-mask output: the first of the four mask tokens, as SAM does for ``multimask_output=False``.
        """
        hs, src = self._transformer(image, sparse_prompt_embeddings)
        b, n, c = src.shape
        side = math.isqrt(n)
        upscaled = self.output_upscaling(src.transpose(1, 2).view(b, c, side, side))
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
        iou_pred = self.iou_prediction_head(hs[:, 0, :])
        return masks[:, 0:1], iou_pred[:, 0:1]

    def predict_mask(self, image: PreparedImage, sparse_prompt_embeddings: torch.Tensor) -> torch.Tensor:
        """``predict``'s logits (B, 1, 256, 256) alone, in the form that is exported.

        Only the first mask token's hypernetwork runs, and the upscaling stays with the image tokens: each
        ConvTranspose2d (kernel = stride = 2) maps one pixel to its own 2x2 output pixels, so it is a matmul
        on channels-last pixels, and the product with the hypernetwork output is taken before the 256x256
        grid is laid out. The same sums in another order: the logits differ from ``predict``'s by float
        rounding (about 1e-5); OpenVINO runs it without layout transposes, 15 ms a box instead of 25. The final
        attention runs for the first mask token alone, the one token this mask reads, and the upscaling runs on
        strips of UPSCALE_ROWS image tokens (each token's 16 pixels are its own sums: bit-identical in OpenVINO).
        """
        hs, src = self._transformer(image, sparse_prompt_embeddings, final_tokens=slice(1, 2))
        return self._masks_per_pixel(src, self.output_hypernetworks_mlps[0](hs[:, 0, :])[:, :, None])

    def predict_all_masks(self, image: PreparedImage, sparse_prompt_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt tokens (B, K, 256) -> logits of all four mask tokens (B, 4, 256, 256) and their IoU estimates
        (B, 4), in ``predict_mask``'s per-pixel form. SAM's ``multimask_output`` takes masks 1..3, else mask 0."""
        hs, src = self._transformer(image, sparse_prompt_embeddings)
        hyper = torch.stack([mlp(hs[:, 1 + i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=-1)
        return self._masks_per_pixel(src, hyper), self.iou_prediction_head(hs[:, 0, :])

    def _masks_per_pixel(self, src: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """Image tokens (B, n, 256) and hypernetwork outputs (B, 32, K) -> logits (B, K, 4 sqrt(n), 4 sqrt(n)): the
        upscaling on strips of UPSCALE_ROWS tokens, its product with the hypernetwork outputs taken per pixel
        before the grid is laid out."""
        logits = torch.cat([self._upscaled_per_pixel(part) @ hyper for part in src.split(UPSCALE_ROWS, dim=1)], dim=1)
        b, n, _ = src.shape
        side = math.isqrt(n)
        # (token row, token col, i, j, i2, j2, mask) -> pixel (4 * row + 2 * i + i2, 4 * col + 2 * j + j2) of each mask
        grid = logits.view(b, side, side, 2, 2, 2, 2, -1).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return grid.reshape(b, -1, 4 * side, 4 * side)

    def _upscaled_per_pixel(self, src: torch.Tensor) -> torch.Tensor:
        """Image tokens (B, n, 256) -> upscaled features (B, n * 16, 32): the 4x4 output pixels of each token."""
        up1, norm, act1, up2, act2 = self.output_upscaling
        b = src.shape[0]
        x = _per_pixel(src, up1)  # (B, n, 4, 64): the 2x2 pixels each token becomes
        x = act1(F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps))
        x = act2(_per_pixel(x, up2))  # (B, n, 4, 4, 32)
        return x.reshape(b, -1, x.shape[-1])

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedding (1 or B, 256, 64, 64) and B boxes' prompt embeddings -> logits, IoU (SAM's signature)."""
        return self.predict(self.prepare(image_embeddings, image_pe, dense_prompt_embeddings), sparse_prompt_embeddings)


def _per_pixel(x: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """A ConvTranspose2d with kernel = stride = 2 on channels-last pixels: (..., C_in) -> (..., 4, C_out),
    the four output pixels of each input pixel in (row, col) order."""
    weight = conv.weight.permute(0, 2, 3, 1).flatten(1)  # (C_in, 2 * 2 * C_out)
    return (x @ weight + conv.bias.repeat(4)).unflatten(-1, (4, -1))
