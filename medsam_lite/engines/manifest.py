"""The manifest of an OpenVINO export: which checkpoint it came from (sha256) and what it holds."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 12  # 2: the decoder in two graphs (per image, per box); 3: and the point-prompt decoder;
# 4: the decoder attention's exported form (modeling.common.exported_form); 5: the encoder's first stage in
# strips of rows (modeling.row_strips); 6: the second layer's image -> token query projection on the key side;
# 7: the final attention for the one token a box's mask reads, the upscaling on strips of image tokens; 8: the box
# part's input fixed at one box (BOX_INPUT_SHAPE); 9: the image -> token scores laid out (56, 4096) for the softmax
# over each head's 7 prompt tokens (modeling.transformer.Attention._weighted_values); 10: the encoder's grids turned
# back into tokens by one 4-D permutation, which OpenVINO folds into its convolutions' layout
# (modeling.common.grid_to_tokens); 11: the first layer's image-side projections heads first, so that each head's
# scores use its own channels (modeling.transformer.Attention.image_heads); 12: the encoder attention's q, k and v
# each from a linear of its own, not split from one (modeling.image_encoder.WindowAttention._qkv)
MODEL_FILES = {
    "encoder": "image_encoder.xml",
    "decoder_image": "decoder_image.xml",
    "decoder": "mask_decoder.xml",
    "decoder_prompts": "prompt_decoder.xml",
    "encoder_int8": "image_encoder_int8.xml",
}
# What decoder_image.xml gives mask_decoder.xml, in order: image tokens (1, 4096, 256) and the first layer's
# token->image keys, values and image->token queries (1, 8, 4096, 16 each: heads first).
DECODER_IMAGE_OUTPUTS = ("keys", "token_to_image_k", "token_to_image_v", "image_to_token_q")
# The boxes mask_decoder.xml takes per inference: one (``BoxDecoder`` decodes one box per call). With every shape
# static, OpenVINO fuses the box part's element-wise operations (the residual adds, LayerNorms and positional
# encodings on the 4096 image tokens) into its matmuls' neighbours: on the 2-core AMD EPYC (OpenVINO 2026.4.1,
# official weights) 24 boxes of each of 12 microscopy slices side by side on two streams took 20.2-21.3 ms a box
# with a dynamic box axis and 18.7-19.1 ms with it fixed at 1 (medians of two runs of 10-12 interleaved rounds);
# one box on one thread 33.8 -> 32.0 ms (median of 150); the logits the same bit for bit.
BOX_INPUT_SHAPE = (1, 4)


REMAKE = "re-run `medsam-lite export`"  # what makes an export folder whole again


class ExportError(Exception):
    """An export folder that is missing, incomplete or made from another checkpoint. ``problem``: what is wrong,
    without what to do about it (the store says that itself: it makes its exports again)."""

    def __init__(self, message: str, problem: str | None = None) -> None:
        super().__init__(message)
        self.problem = problem or message


def _unusable(problem: str) -> ExportError:
    return ExportError(f"{problem}; {REMAKE}", problem)


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
    # the int8 encoder quantises the linears alone (batch.int8); False: every layer, as `export --int8` did before
    # 2026-12-05 (CT lesion 000010 -0.16 DSC), which the engine refuses
    int8_linears_only: bool = False
    format: int = MANIFEST_FORMAT
    # bytes of each IR file as written; read_manifest compares them, so that a copy or a disk cut short (a file
    # of the right name and the wrong length) is found before OpenVINO reads it. {} in exports made before it.
    files: dict[str, int] = field(default_factory=dict)

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
        raise _unusable(f"{path} is not a medsam-lite export manifest ({exc})") from exc
    if manifest.format != MANIFEST_FORMAT:
        raise _unusable(f"{path} has format {manifest.format}, expected {MANIFEST_FORMAT}")
    for part in ("encoder", "decoder_image", "decoder") + (("encoder_int8",) if manifest.int8_encoder else ()):
        xml = Path(export_dir) / MODEL_FILES[part]
        if not xml.is_file() or not xml.with_suffix(".bin").is_file():
            raise _unusable(f"{xml} (or its .bin) is missing from the export")
    for name, size in manifest.files.items():
        found = Path(export_dir) / name
        length = found.stat().st_size if found.is_file() else None
        if length != size:
            raise _unusable(f"{found} has {length} bytes where the export wrote {size}: the export is damaged")
    return manifest


def _ir_files(export_dir: Path) -> dict[str, int]:
    """name -> bytes of every IR file (.xml, .bin) of the models in ``export_dir``."""
    paths = [export_dir / xml for xml in MODEL_FILES.values()]
    return {p.name: p.stat().st_size for xml in paths for p in (xml, xml.with_suffix(".bin")) if p.is_file()}


def write_manifest(export_dir: str | os.PathLike[str], manifest: Manifest) -> None:
    """Write ``manifest.json`` atomically (it marks the export as complete), with the bytes of its IR files."""
    from medsam_lite.core.atomic import write_with

    manifest.files = _ir_files(Path(export_dir))

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
