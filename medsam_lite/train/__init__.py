"""Fine-tuning LiteMedSAM on a user's labelled cases (``medsam-lite finetune``; ``finetune(FinetuneConfig(...))``
from Python): the decoder on cached embeddings by default, validation by case through ``predict``'s
segmentation and ``evaluate``'s metrics, ``best.pth`` in the official layout. Names are imported when first
used, so that the command line's start does not load torch."""

from medsam_lite.core.lazy import lazy_exports

_EXPORTS = {"FinetuneConfig": "config", "FinetuneResult": "loop", "finetune": "loop"}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
