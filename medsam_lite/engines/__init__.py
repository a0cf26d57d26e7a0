"""Engines that run LiteMedSAM; each is imported only when asked for, so that torch stays unloaded
unless the torch engine is used."""
from __future__ import annotations

import os

from .base import Engine

ENGINES = ("torch",)


def create_engine(name: str, checkpoint: str | os.PathLike[str], threads: int | None = None, device: str = "cpu") -> Engine:
    """An engine by name, loaded with ``checkpoint``."""
    if name == "torch":
        from .torch_engine import TorchEngine

        return TorchEngine(checkpoint, device=device, threads=threads)
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")


__all__ = ["ENGINES", "Engine", "create_engine"]
