"""Where a case's time goes: wall seconds per pipeline stage, collected while a case runs.

Stages: ``startup`` (process start, imports and model compilation until the first case may run), ``load``
(reading and checking the file), ``preprocess`` (resize, normalise, pad), ``encoder``, ``decoder`` (logits at
256), ``postprocess`` (upsampling to original pixels, thresholding, merging labels) and ``write`` (the
output and overlay files). The pipeline is single-threaded, so one collector at a time is active.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator

STAGES = ("startup", "load", "preprocess", "encoder", "decoder", "postprocess", "write")

_active: dict[str, float] | None = None


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Add the wall time of the block to ``name`` of the active collector (nothing when none is active)."""
    if _active is None:
        yield
        return
    collector, start = _active, time.perf_counter()
    try:
        yield
    finally:
        collector[name] = collector.get(name, 0.0) + time.perf_counter() - start


@contextlib.contextmanager
def collect() -> Iterator[dict[str, float]]:
    """Collect stage times into a new dict for the duration of the block (nested: the inner one wins)."""
    global _active
    outer, _active = _active, {}
    try:
        yield _active
    finally:
        _active = outer


def process_age() -> float | None:
    """Seconds since this process started (Linux: /proc), or None where that cannot be read."""
    try:
        with open("/proc/self/stat") as handle:
            start_ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
