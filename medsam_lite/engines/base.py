"""What an engine is: something that turns a model input into an embedding and boxes into masks."""
from __future__ import annotations

from typing import Any, Iterator, Protocol

import numpy as np


class Engine(Protocol):
    """An inference backend for LiteMedSAM.

    ``ready`` waits until the engine can run (it may still be compiling when made) and raises what stopped it;
    ``encode`` takes (1, 3, 256, 256) float32 and returns an opaque embedding (1, 256, 64, 64);
    ``masks`` takes that embedding, (N, 4) int64 boxes at 256, the (h, w) of the resized image and the
    original (H, W), and yields N boolean (H, W) masks in box order. An engine may also have
    ``encode_pair(first, second)``: two such inputs -> their two embeddings, the same as ``encode`` gives, computed
    side by side (the OpenVINO engine), and ``slice_pairs``: True where that pays on this CPU; a volume's slices
    then go in pairs (``pipeline.segment.SliceEncoder``).
    """

    name: str
    encoder_passes: int
    slice_pairs: bool  # a volume's slices go two side by side (through ``encode_pair``); False without it
    precision_label: str  # the mode that runs (engines.precision.MODES); "fast=" before it when fast chose it

    def ready(self) -> None: ...

    def encode(self, image: np.ndarray) -> Any: ...

    def masks(
        self, embedding: Any, boxes_256: np.ndarray, resized: tuple[int, int], original: tuple[int, int]
    ) -> Iterator[np.ndarray]: ...

    def prompt_logits(self, embedding: Any, coords_256: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(K, 2) float points at 256 with SAM labels (K,) -> (4, 256, 256) float32 logits, (4,) IoU estimates."""
        ...
