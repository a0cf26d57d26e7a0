"""Finding and loading LiteMedSAM checkpoints (``lite_medsam.pth`` layout)."""
from __future__ import annotations

import hashlib
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CHECKPOINT = Path("work_dir/LiteMedSAM/lite_medsam.pth")
CHECKPOINT_ENV = "MEDSAM_LITE_CHECKPOINT"



class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or not in the LiteMedSAM layout."""


@dataclass
class LoadedCheckpoint:
    """A state dict in the official layout and what was unwrapped to get it."""

    state_dict: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def resolve_checkpoint(path: str | os.PathLike[str] | None) -> Path:
    """The checkpoint to use, without fetching (``weights.find_checkpoint``): the named one, else the checkout's,
    else the cached official weights; CheckpointError saying how to get them when there is none."""
    from medsam_lite.engines.weights import OFFLINE_HELP, cached_checkpoint, find_checkpoint

    found = find_checkpoint(path)
    if found is None:
        raise CheckpointError(f"No LiteMedSAM checkpoint at {DEFAULT_CHECKPOINT} or {cached_checkpoint()}. "
                              f"`medsam-lite weights fetch` gets the official weights. {OFFLINE_HELP}")
    return found


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unwrap_state_dict(raw: Any) -> LoadedCheckpoint:
    """Accept a plain state dict, or a training checkpoint ``{"model": ...}`` and/or ``module.``-prefixed keys."""
    notes: list[str] = []
    if isinstance(raw, dict) and "model" in raw and isinstance(raw["model"], dict):
        others = sorted(k for k in raw if k != "model")
        notes.append("took the weights from the 'model' entry" + (f" (ignored: {', '.join(others)})" if others else ""))
        raw = raw["model"]
    if not isinstance(raw, dict) or not raw:
        raise CheckpointError(f"expected a state dict (a mapping of names to tensors), got {type(raw).__name__}")
    if all(isinstance(k, str) and k.startswith("module.") for k in raw):
        notes.append("removed the 'module.' prefix of a DataParallel/DDP checkpoint")
        raw = {k[len("module.") :]: v for k, v in raw.items()}
    return LoadedCheckpoint(dict(raw), notes)


def describe_key_mismatch(missing: list[str], unexpected: list[str], shown: int = 5) -> str:
    """One readable sentence naming (some of) the missing and unexpected keys."""

    def _names(keys: list[str]) -> str:
        more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
        return ", ".join(keys[:shown]) + more

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_names(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_names(unexpected)}")
    return "; ".join(parts)


# What torch.save writes first: a zip archive (torch >= 1.6), or the pickle protocol mark of the legacy format.
CHECKPOINT_STARTS = (b"PK\x03\x04", b"\x80")


def _unreadable(path: str | os.PathLike[str], exc: Exception) -> CheckpointError:
    """One line for a checkpoint torch could not load: what is in the way, without torch's advice to load it
    with code execution enabled."""
    text = str(exc)
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if refused:
        return CheckpointError(f"cannot read checkpoint {path}: it holds a {refused.group(1)} object beside the "
                               f"weights, which weights-only loading refuses (unpickling it could run code); save "
                               f"the state dict alone, e.g. torch.save(checkpoint['model'], 'weights.pth')")
    reason = re.search(r"WeightsUnpickler error: (.+)", text)
    first = reason.group(1) if reason else text.split(". ")[0]
    return CheckpointError(f"cannot read checkpoint {path}: {first.strip().rstrip('.')}")


def load_state_dict(path: str | os.PathLike[str]) -> LoadedCheckpoint:
    """Read a checkpoint file with torch (weights only) and unwrap it."""
    import argparse

    import torch

    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    if not head.startswith(CHECKPOINT_STARTS):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint: it starts with {head!r}, where torch.save "
                              f"writes a zip archive or a pickle")
    if head.startswith(CHECKPOINT_STARTS[0]) and not zipfile.is_zipfile(path):  # torch: "failed finding central directory"
        raise CheckpointError(f"{path} is cut short: a zip archive of {os.path.getsize(path):,} bytes without its end "
                              f"(a download or copy that stopped part-way); copy or fetch it again")
    try:
        # Training scripts keep their command-line arguments (argparse.Namespace, a plain attribute bag) beside
        # the weights: allowed by the weights-only unpickler rather than refused.
        with torch.serialization.safe_globals([argparse.Namespace]):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad file
        raise _unreadable(path, exc) from exc
    try:
        return unwrap_state_dict(raw)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc


def load_model(path: str | os.PathLike[str]):  # -> LiteMedSAM (torch is imported lazily)
    """Build LiteMedSAM, load ``path`` with ``strict=True`` and return (model in eval mode, notes)."""
    import torch

    from medsam_lite.modeling import build_lite_medsam

    loaded = load_state_dict(path)
    model = build_lite_medsam()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(loaded.state_dict))
    unexpected = sorted(set(loaded.state_dict) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path} is not a LiteMedSAM checkpoint: {describe_key_mismatch(missing, unexpected)}")
    wrong = [
        f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})"
        for k, v in loaded.state_dict.items()
        if not isinstance(v, torch.Tensor) or v.shape != expected[k].shape
    ]
    if wrong:
        raise CheckpointError(f"{path} has tensors of the wrong shape: {', '.join(wrong[:5])}")
    model.load_state_dict(loaded.state_dict, strict=True)
    model.eval()
    return model, loaded.notes
