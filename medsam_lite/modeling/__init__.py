"""The LiteMedSAM network in torch: pure tensors in, tensors out."""
from medsam_lite.modeling.image_encoder import TinyViT
from medsam_lite.modeling.lite_medsam import EMBEDDING_SIZE, IMAGE_SIZE, LiteMedSAM, build_lite_medsam
from medsam_lite.modeling.mask_decoder import MaskDecoder
from medsam_lite.modeling.prompt_encoder import PromptEncoder
from medsam_lite.modeling.transformer import TwoWayTransformer

__all__ = [
    "EMBEDDING_SIZE",
    "IMAGE_SIZE",
    "LiteMedSAM",
    "MaskDecoder",
    "PromptEncoder",
    "TinyViT",
    "TwoWayTransformer",
    "build_lite_medsam",
]
