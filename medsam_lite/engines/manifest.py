"""The manifest of an OpenVINO export: which checkpoint it came from (sha256) and what it holds."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 10  # 2: the decoder in two graphs (per image, per box); 3: and the point-prompt decoder;
# 4: the decoder attention's exported form (modeling.common.exported_form); 5: the encoder's first stage in
# strips of rows (modeling.row_strips); 6: the second layer's image -> token query projection on the key side;
# 7: the final attention for the one token a box's mask reads, the upscaling on strips of image tokens; 8: the box
# part's input fixed at one box (BOX_INPUT_SHAPE); 9: the image -> token scores laid out (56, 4096) for the softmax
# over each head's 7 prompt tokens (modeling.transformer.Attention._weighted_values); 10: the encoder's grids turned
# back into tokens by one 4-D permutation, which OpenVINO folds into its convolutions' layout
# (modeling.common.grid_to_tokens)
MODEL_FILES = {
    "encoder": "image_encoder.xml",
    "decoder_image": "decoder_image.xml",
    "decoder": "mask_decoder.xml",
    "decoder_prompts": "prompt_decoder.xml",
    "encoder_int8": "image_encoder_int8.xml",
}
# What decoder_image.xml gives mask_decoder.xml, in order: image tokens (1, 4096, 256) and the first layer's
# token->image keys, values and image->token queries (1, 4096, 128 each).
DECODER_IMAGE_OUTPUTS = ("keys", "token_to_image_k", "token_to_image_v", "image_to_token_q")
# The boxes mask_decoder.xml takes per inference: one (``BoxDecoder`` decodes one box per call). With every shape
# static, OpenVINO fuses the box part's element-wise operations (the residual adds, LayerNorms and positional
# encodings on the 4096 image tokens) into its matmuls' neighbours: on the 2-core AMD EPYC (OpenVINO 2026.4.1,
# official weights) 24 boxes of each of 12 microscopy slices side by side on two streams took 20.2-21.3 ms a box
# with a dynamic box axis and 18.7-19.1 ms with it fixed at 1 (medians of two runs of 10-12 interleaved rounds);
# one box on one thread 33.8 -> 32.0 ms (median of 150); the logits the same bit for bit.
BOX_INPUT_SHAPE = (1, 4)


class ExportError(Exception):
    """An export folder that is missing, incomplete or made from another checkpoint."""


@dataclass
class Manifest:
    checkpoint: str
    checkpoint_sha256: str
    openvino: str
    torch: str
    created: str
    encoder_max_abs_diff: float
    decoder_max_abs_diff: float
    int8_encoder: bool = False
    format: int = MANIFEST_FORMAT

    def to_json(self) -> dict:
        return asdict(self)


def read_manifest(export_dir: str | os.PathLike[str]) -> Manifest | None:
    """The manifest in ``export_dir``, or None when there is no export there."""
    path = Path(export_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        manifest = Manifest(**data)
    except (ValueError, TypeError) as exc:
        raise ExportError(f"{path} is not a medsam-lite export manifest ({exc}); re-run `medsam-lite export`") from exc
    if manifest.format != MANIFEST_FORMAT:
        raise ExportError(f"{path} has format {manifest.format}, expected {MANIFEST_FORMAT}; re-run `medsam-lite export`")
    for part in ("encoder", "decoder_image", "decoder") + (("encoder_int8",) if manifest.int8_encoder else ()):
        xml = Path(export_dir) / MODEL_FILES[part]
        if not xml.is_file() or not xml.with_suffix(".bin").is_file():
            raise ExportError(f"{xml} (or its .bin) is missing from the export; re-run `medsam-lite export`")
    return manifest


def write_manifest(export_dir: str | os.PathLike[str], manifest: Manifest) -> None:
    """Write ``manifest.json`` atomically (it marks the export as complete)."""
    from medsam_lite.core.atomic import write_with

    write_with(Path(export_dir) / MANIFEST_NAME, lambda handle: json.dump(manifest.to_json(), handle, indent=2), mode="w")


def check_matches(manifest: Manifest, export_dir: str | os.PathLike[str], checkpoint_sha256: str, checkpoint: str) -> None:
    """Refuse an export made from another checkpoint."""
    if manifest.checkpoint_sha256 != checkpoint_sha256:
        raise ExportError(
            f"the OpenVINO export in {export_dir} was made from another checkpoint "
            f"({manifest.checkpoint}, sha256 {manifest.checkpoint_sha256[:12]}...) than {checkpoint} "
            f"(sha256 {checkpoint_sha256[:12]}...): it is stale. Re-run "
            f"`medsam-lite export --checkpoint {checkpoint} --out {export_dir}`."
        )
