"""Folders of files -> files: challenge cases (``runner.run_folder``, ``runner.segment_folder``), your own images
(``image_runner``), which files and which shard (``folder``), inputs protected and memory checked (``guards``),
a model per modality (``model_map``) and the int8 encoder calibrated on a folder (``int8``)."""
from medsam_lite.core.lazy import lazy_exports

_EXPORTS = {
    "CaseResult": "runner", "run_folder": "runner", "segment_folder": "runner", "write_timing_csv": "runner",
    "run_images": "image_runner",
    "find_cases": "folder", "select_shard": "folder",
    "MemoryBudget": "guards", "UnsafeOutput": "guards", "check_outputs_apart": "guards",
    "check_outputs_outside_inputs": "guards",
    "ModelRouter": "model_map", "read_model_map": "model_map",
    "export_int8_encoder": "int8",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
