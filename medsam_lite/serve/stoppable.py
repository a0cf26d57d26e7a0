"""The engine as the service's jobs see it: the same engine, whose every encoder or decoder call first asks the
worker whether the job under way still has a client (``InferenceWorker.check``), so that any job (a propagation,
a whole challenge case through ``/v1/predict``, SAM's automatic masks) stops within one pass once its client has
gone, whatever pipeline function it runs. Nothing of the arithmetic changes: the calls go to the engine as they
are."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from medsam_lite.engines.base import Engine


class StoppableEngine:
    """``engine`` with ``check()`` called before each ``encode``, ``encode_pair``, ``masks`` and
    ``prompt_logits``; every other attribute is the engine's own."""

    def __init__(self, engine: Engine, check: Callable[[], None]) -> None:
        self._engine = engine
        self._check = check  # raises (worker.ClientGone) to stop the job under way

    def __getattr__(self, name: str) -> Any:  # name, precision_label, slice_pairs, ready, ...
        return getattr(self._engine, name)

    def encode(self, image: np.ndarray) -> Any:
        self._check()
        return self._engine.encode(image)

    def encode_pair(self, first: np.ndarray, second: np.ndarray) -> tuple[Any, Any]:
        self._check()
        return self._engine.encode_pair(first, second)

    def masks(self, embedding: Any, boxes_256: np.ndarray, resized: tuple[int, int],
              original: tuple[int, int]) -> Iterator[np.ndarray]:
        self._check()
        return self._engine.masks(embedding, boxes_256, resized, original)

    def prompt_logits(self, embedding: Any, coords_256: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check()
        return self._engine.prompt_logits(embedding, coords_256, labels)
