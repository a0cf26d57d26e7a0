"""The case contract and numpy at the model's 256 grid: ``Case``, ``CaseError``, ``check_boxes``, ``label_dtype``
(``case``), the official resize/normalise/pad and box maths (``preprocess``, ``postprocess``), seconds per stage
(``timing``), optional dependencies (``optional``) and atomic writes (``atomic``). No torch, no file formats."""
from medsam_lite.core.lazy import lazy_exports

_EXPORTS = {
    "Case": "case", "CaseError": "case", "check_boxes": "case", "is_3d_name": "case", "label_dtype": "case",
    "MODEL_SIZE": "preprocess", "box_to_256": "preprocess", "image_to_model_input": "preprocess",
    "mask_box_256": "preprocess", "resized_size": "preprocess",
    "masks_from_logits": "postprocess", "upscale_logits": "postprocess",
    "STAGES": "timing", "stage": "timing",
    "MissingDependency": "optional", "require_torch": "optional",
    "atomic_file": "atomic", "atomic_path": "atomic", "write_segs": "atomic", "write_with": "atomic",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
