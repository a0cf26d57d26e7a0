"""medsam-lite: exact, fast CPU inference of LiteMedSAM. ``from medsam_lite import Predictor`` (and
``segment_npz``, ``segment_folder``, ``to_uint8``; ``finetune`` with ``FinetuneConfig``) is the Python API,
imported only when first used, so that ``import medsam_lite`` stays cheap for the command line."""

from medsam_lite.core.lazy import lazy_exports

_EXPORTS = {"Predictor": "pipeline.predictor", "segment_npz": "pipeline.predictor", "segment_folder": "batch.runner",
            "to_uint8": "io.intensity", "FinetuneConfig": "train.config", "finetune": "train.loop"}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
