"""Filling the embedding cache while the cases are read: each case not cached yet is encoded by the process
whose share it is (``predict``'s engine: OpenVINO from the checkpoint's export, else torch), and then its
image is dropped from memory (only its labels are needed from here on), so a run holds one image at a time.
``finish`` waits for every process and maps all cases: ``{(case name, flipped): (S, 256, 64, 64) float16}``."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from medsam_lite.train.config import FinetuneConfig
from medsam_lite.train.data import CaseSource, TrainingCase
from medsam_lite.train.distributed import Distributed
from medsam_lite.train.embeddings import EmbeddingCache, default_cache_dir, resolve_precision


class CacheFiller:
    """``add(source, case)`` for every case read, in the same order on every process; then ``finish``."""

    def __init__(self, config: FinetuneConfig, checkpoint: Path, digest: str, dist: Distributed,
                 log: Callable[[str], None], total: int) -> None:
        self.config, self.checkpoint, self.dist, self.log = config, checkpoint, dist, log
        self.precision = resolve_precision(config.cache_precision)
        root = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
        self.cache = EmbeddingCache(root / f"{digest[:16]}-{self.precision}", digest, self.precision)
        self.flips = (False, True) if config.flips else (False,)
        self.engine = None
        self.count = 0
        self.encoded = 0
        self.seconds = 0.0
        self.sources: dict[str, CaseSource] = {}
        self.bar = tqdm(total=total, unit="case", file=sys.stderr, disable=not dist.is_main, desc="cases")

    def add(self, source: CaseSource, case: TrainingCase) -> None:
        mine = self.count % self.dist.world == self.dist.rank
        self.count += 1
        for flip in self.flips:
            if mine and not self.cache.has(source, flip):
                start = time.perf_counter()
                self.cache.build(source, case, self._encoder(), flip)
                self.seconds += time.perf_counter() - start
                self.encoded += case.slices
                self.bar.set_postfix(encoded=f"{self.encoded} slices")
        self.sources[source.name] = source
        case.image = np.broadcast_to(np.zeros((), np.uint8), case.image.shape)  # embeddings from here on
        self.bar.update(1)

    def _encoder(self):
        if self.engine is None:
            from medsam_lite.engines import create_engine

            choice = create_engine("auto", self.checkpoint, self.config.export_dir, precision=self.precision,
                                   threads=self.config.threads, say=self.log)
            choice.engine.ready()
            self.engine = choice.engine
            self.log(f"encoding each slice once into {self.cache.root} ({choice.description})")
        return self.engine.encode

    def finish(self) -> dict:
        if self.encoded:
            self.log(f"encoded {self.encoded} slices in {self.seconds:.0f} s ({self.precision})")
        else:
            self.log(f"embeddings of all {len(self.sources)} cases from the cache {self.cache.root}")
        self.dist.barrier()
        return {(name, f): self.cache.open(s, f) for name, s in self.sources.items() for f in self.flips}
