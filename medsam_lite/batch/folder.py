"""Which files a folder run takes: the ``.npz`` cases of a folder, and the share of them one shard runs.

Kept apart from the pipeline (and its OpenCV import) so that ``predict`` can list and check its cases, and
start compiling the models, before it loads anything else.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def find_cases(input_dir: str | os.PathLike[str]) -> tuple[list[Path], list[Path]]:
    """Sorted ``*.npz`` files directly in ``input_dir``, and the other files there (which are ignored)."""
    entries = sorted(p for p in Path(input_dir).iterdir() if p.is_file() and not p.name.startswith("."))
    cases = [p for p in entries if p.suffix == ".npz"]
    return cases, [p for p in entries if p.suffix != ".npz"]


def shard_of(name: str, count: int) -> int:
    """The shard (0..count-1) of a case file name: a hash, so it does not depend on the other files."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % count


def select_shard(cases: list[Path], index: int, count: int) -> list[Path]:
    """The cases of shard ``index`` of ``count``, in their given (sorted) order."""
    return [case for case in cases if shard_of(case.name, count) == index]
