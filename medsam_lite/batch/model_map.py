"""A model per modality: ``predict --model-map MAP.json`` routes each case to the checkpoint or export of the
modality in its file name (``2DBox_<Modality>_...``, ``3DBox_<Modality>_...``).

The map is a JSON object; each key is a modality as written in file names (``CT``, ``MR``, ``XRay``, ...;
matched ignoring case), a finer name pattern, or ``default``. A key with ``_`` names consecutive parts of the
file name (``MR_Hippocampus`` takes ``3DBox_MR_Hippocampus_001.npz`` but not ``3DBox_MR_BraTS_001.npz``); a key
with ``*``, ``?`` or ``[`` is a shell pattern on the whole file name (``3DBox_MR_Hippo*``). The most specific key
wins: a pattern (the longest first) before a modality before ``default``. Each value is
- a path to a checkpoint file (run by the torch engine),
- a path to an export folder (``medsam-lite export``; run by OpenVINO as exported), or
- an object ``{"checkpoint": PATH, "export_dir": PATH}``: the export, checked against the checkpoint's sha256
  as ``predict`` checks it (``--engine`` applies).
Relative paths are relative to the map file. Cases of a modality without an entry and without ``default`` use
the engine given by ``--checkpoint``/``--export-dir``. Each model is loaded once, when its first case comes.
"""
from __future__ import annotations

import fnmatch
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from medsam_lite.engines import EngineChoice, create_engine

DEFAULT_KEY = "default"


class ModelMapError(ValueError):
    """A model map that cannot be used; the message names the file and the entry."""


def modality_of(case_name: str) -> str | None:
    """``CT`` for ``3DBox_CT_AMOS_0018.npz``: the second ``_``-separated part of a challenge file name."""
    parts = case_name.split("_")
    return parts[1] if len(parts) >= 3 and parts[0] in ("2DBox", "3DBox") else None


def is_pattern(key: str) -> bool:
    """A key finer than a modality: parts joined by ``_``, or a shell pattern."""
    return "_" in key or any(c in key for c in "*?[")


def name_matches(key: str, case_name: str) -> bool:
    """``key`` (lower case) against a file name: a shell pattern on the whole name, else consecutive ``_`` parts of
    the name after its ``2DBox``/``3DBox`` prefix."""
    name = case_name.lower()
    if any(c in key for c in "*?["):
        return fnmatch.fnmatchcase(name, key)
    parts = name.removesuffix(".npz").split("_")
    wanted = key.split("_")
    parts = parts[1:] if parts and parts[0] in ("2dbox", "3dbox") else parts
    return any(parts[i:i + len(wanted)] == wanted for i in range(len(parts) - len(wanted) + 1))


@dataclass
class ModelEntry:
    """Where one entry's model comes from."""

    key: str
    checkpoint: Path | None = None
    export_dir: Path | None = None

    @property
    def label(self) -> str:
        """What the log and the timing CSV call this model."""
        return f"{self.key}={self.export_dir or self.checkpoint}"


def _entry(key: str, value, base: Path, map_path: Path) -> ModelEntry:
    def path_of(raw, what: str) -> Path:
        if not isinstance(raw, str) or not raw:
            raise ModelMapError(f"{map_path}: entry {key!r}: {what} must be a path (a string), got {raw!r}")
        path = Path(raw) if os.path.isabs(raw) else base / raw
        if not path.exists():
            raise ModelMapError(f"{map_path}: entry {key!r}: no such {what} {path}")
        return path

    if isinstance(value, dict):
        unknown = sorted(set(value) - {"checkpoint", "export_dir"})
        if unknown or not value:
            raise ModelMapError(f"{map_path}: entry {key!r}: expected keys checkpoint and/or export_dir, got {sorted(value)}")
        return ModelEntry(key, path_of(value["checkpoint"], "checkpoint") if "checkpoint" in value else None,
                          path_of(value["export_dir"], "export folder") if "export_dir" in value else None)
    path = path_of(value, "checkpoint or export folder")
    return ModelEntry(key, export_dir=path) if path.is_dir() else ModelEntry(key, checkpoint=path)


def read_model_map(path: str | os.PathLike[str]) -> dict[str, ModelEntry]:
    """Parse and check ``path`` (paths must exist; nothing is loaded). Keys are lower-cased modalities."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise ModelMapError(f"cannot read the model map {path}: {exc}") from exc
    except ValueError as exc:
        raise ModelMapError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise ModelMapError(f"{path}: expected a JSON object mapping modalities (and 'default') to models")
    entries = {}
    for key, value in raw.items():
        if key.lower() in entries:
            raise ModelMapError(f"{path}: key {key!r} is given twice (keys are matched ignoring case)")
        entries[key.lower()] = _entry(key, value, path.resolve().parent, path)
    return entries


@dataclass
class ModelRouter:
    """The engine for each case: its modality's entry, else ``default``, else ``fallback`` (loaded lazily).

    ``load(entry)`` makes an entry's EngineChoice; a load error is kept and raised again for every later case
    of that model, so that each of them fails with the same message and the run goes on."""

    entries: dict[str, ModelEntry]
    load: Callable[[ModelEntry], EngineChoice]
    fallback: Callable[[], EngineChoice]
    announce: Callable[[str, EngineChoice], None] | None = None
    loaded: dict[str, EngineChoice | Exception] = field(default_factory=dict)
    load_seconds: float = 0.0  # spent loading models since take_load_seconds was last called

    def entry_for(self, case_name: str) -> ModelEntry | None:
        patterns = sorted((k for k in self.entries if is_pattern(k)), key=len, reverse=True)
        for key in patterns:
            if name_matches(key, case_name):
                return self.entries[key]
        modality = (modality_of(case_name) or "").lower()
        return self.entries.get(modality) or self.entries.get(DEFAULT_KEY)

    def choice_for(self, case_name: str) -> tuple[str, EngineChoice]:
        """(model label, engine) for a case; raises the entry's load error if it could not be loaded."""
        entry = self.entry_for(case_name)
        label = entry.label if entry else "--checkpoint"
        if label not in self.loaded:
            start = time.perf_counter()
            try:
                self.loaded[label] = self.load(entry) if entry else self.fallback()
            except Exception as exc:  # kept: every case of this model reports it
                self.loaded[label] = exc
            else:
                if self.announce is not None:
                    self.announce(label, self.loaded[label])
            self.load_seconds += time.perf_counter() - start
        choice = self.loaded[label]
        if isinstance(choice, Exception):
            raise choice
        return label, choice


    def take_load_seconds(self) -> float:
        """Seconds spent loading models since the last call."""
        seconds, self.load_seconds = self.load_seconds, 0.0
        return seconds


def entry_loader(engine: str, precision: str, threads: int | None, device: str) -> Callable[[ModelEntry], EngineChoice]:
    """How ``predict`` loads a map entry with its engine options."""

    def load(entry: ModelEntry) -> EngineChoice:
        if entry.export_dir is None:  # a checkpoint alone: the torch engine
            if engine == "openvino":
                raise ModelMapError(f"model map entry {entry.key!r} gives a checkpoint but no export_dir, and "
                                    f"--engine openvino was asked for")
            return create_engine("torch", entry.checkpoint, Path(os.devnull), precision, threads, device)
        if engine == "torch" and entry.checkpoint is None:
            raise ModelMapError(f"model map entry {entry.key!r} gives an export folder but no checkpoint, and "
                                f"--engine torch was asked for")
        name = "openvino" if engine == "auto" else engine
        return create_engine(name, entry.checkpoint, entry.export_dir, precision, threads, device,
                             default_checkpoint=False)

    return load
