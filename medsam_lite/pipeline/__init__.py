"""One image or volume plus prompts, in memory -> labels: ``segment_2d``/``segment_3d`` (each slice encoded once,
boxes propagated through a volume; ``segment``), a checked case (``case.segment_case``), the official schedule
(``official``), SAM's point prompts (``prompting``) and automatic masks (``automask``), and the Python API's
``Predictor`` (``predictor``)."""
from medsam_lite.core.lazy import lazy_exports

_EXPORTS = {
    "encode_image": "segment", "segment_2d": "segment", "segment_3d": "segment",
    "segment_case": "case",
    "segment_2d_official": "official", "segment_3d_official": "official",
    "Predictor": "predictor", "segment_npz": "predictor",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
