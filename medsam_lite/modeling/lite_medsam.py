"""LiteMedSAM: TinyViT image encoder + SAM prompt encoder + SAM mask decoder, built as the official model."""
from __future__ import annotations

import torch
from torch import nn

from medsam_lite.modeling.image_encoder import TinyViT
from medsam_lite.modeling.mask_decoder import MaskDecoder
from medsam_lite.modeling.prompt_encoder import PromptEncoder
from medsam_lite.modeling.transformer import PreparedImage, TwoWayTransformer

IMAGE_SIZE = 256  # model input side, pixels
EMBEDDING_SIZE = 64  # image embedding side


class LiteMedSAM(nn.Module):
    """The three parts; ``encode`` once per image, ``decode`` any number of boxes against that embedding."""

    def __init__(self, image_encoder: TinyViT, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) float32 in [0, 1] -> (B, 256, 64, 64) image embedding."""
        return self.image_encoder(image)

    def prepare_decoder(self, embedding: torch.Tensor) -> PreparedImage:
        """What the decoder needs of an embedding (1, 256, 64, 64) whatever the boxes; compute once per image."""
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return self.mask_decoder.prepare(embedding, self.prompt_encoder.get_dense_pe(), dense)

    def decode_prepared(self, image: PreparedImage, boxes: torch.Tensor) -> torch.Tensor:
        """N boxes (N, 4) at 256 against a prepared embedding -> low-res logits (N, 1, 256, 256)."""
        sparse = self.prompt_encoder.embed_boxes(boxes)
        logits, _ = self.mask_decoder.predict(image, sparse)
        return logits

    def decode_prompts(self, image: PreparedImage, coords: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Points (1, K, 2) at 256 with SAM labels (1, K) against a prepared embedding -> logits of the four
        mask tokens (1, 4, 256, 256) and their IoU estimates (1, 4)."""
        return self.mask_decoder.predict_all_masks(image, self.prompt_encoder.embed_points(coords, labels))

    def decode(self, embedding: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Embedding (1, 256, 64, 64) and N boxes (N, 4) at 256 -> low-res logits (N, 1, 256, 256)."""
        return self.decode_prepared(self.prepare_decoder(embedding), boxes)

    def forward(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """One image (1, 3, 256, 256) and boxes (N, 4) -> logits (N, 1, 256, 256)."""
        return self.decode(self.encode(image), boxes)


def build_lite_medsam() -> LiteMedSAM:
    """The architecture of the official ``lite_medsam.pth`` (9,801,439 parameters), randomly initialised."""
    return LiteMedSAM(
        image_encoder=TinyViT(img_size=IMAGE_SIZE),
        prompt_encoder=PromptEncoder(
            embed_dim=256,
            image_embedding_size=(EMBEDDING_SIZE, EMBEDDING_SIZE),
            input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, num_heads=8, mlp_dim=2048),
            transformer_dim=256,
            num_multimask_outputs=3,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
    )
