"""The LiteMedSAM network in torch: pure tensors in, tensors out."""
from .image_encoder import TinyViT
from .lite_medsam import EMBEDDING_SIZE, IMAGE_SIZE, LiteMedSAM, build_lite_medsam
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .transformer import TwoWayTransformer

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
