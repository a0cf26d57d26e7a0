"""Engines that run LiteMedSAM. Each is imported only when chosen, so that torch is loaded only by the
torch engine (the OpenVINO engine needs numpy, OpenCV and OpenVINO)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint import CHECKPOINT_ENV, DEFAULT_CHECKPOINT, CheckpointError, file_sha256, resolve_checkpoint
from ..optional import MissingDependency, require_torch
from .base import Engine
from .manifest import ExportError, check_matches, read_manifest

ENGINES = ("auto", "openvino", "torch")


@dataclass
class EngineChoice:
    """The engine to run and what the user should be told about the choice."""

    engine: Engine
    description: str
    notes: list[str] = field(default_factory=list)


def _explicit_or_default_checkpoint(checkpoint: str | os.PathLike[str] | None, use_default: bool = True) -> Path | None:
    """The checkpoint the user points at (option, else environment and default if ``use_default``) if that
    file exists."""
    if checkpoint is None and not use_default:
        return None
    chosen = Path(checkpoint or os.environ.get(CHECKPOINT_ENV) or DEFAULT_CHECKPOINT)
    return chosen if chosen.is_file() else None


def create_engine(
    name: str,
    checkpoint: str | os.PathLike[str] | None,
    export_dir: str | os.PathLike[str],
    precision: str = "f32",
    threads: int | None = None,
    device: str = "cpu",
    default_checkpoint: bool = True,
    background: bool = False,
) -> EngineChoice:
    """Load an engine. ``auto``: OpenVINO when ``export_dir`` holds an export, else torch.

    An export is used only if it was made from the checkpoint in use (sha256, computed while the encoder
    compiles); when no checkpoint file is there (a runtime image may ship only the export), the export is used
    as it is and that is said. ``default_checkpoint=False``: only ``checkpoint`` itself counts, not
    $MEDSAM_LITE_CHECKPOINT or the default. ``background=True``: the OpenVINO encoder may still be compiling
    when this returns (``engine.ready()`` waits for it).
    """
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    manifest = read_manifest(export_dir) if name in ("auto", "openvino") else None
    if name == "openvino" and manifest is None:
        raise ExportError(f"no OpenVINO export in {export_dir}; run `medsam-lite export --checkpoint PATH` first")
    if manifest is not None:
        notes = []
        found = _explicit_or_default_checkpoint(checkpoint, default_checkpoint)
        if checkpoint is not None and found is None:
            raise CheckpointError(f"no checkpoint at {checkpoint}")
        if precision != "f32":
            notes.append(f"--precision {precision} is approximate: masks may differ from the official fp32 model")
        from .openvino_engine import OpenVINOEngine

        engine = OpenVINOEngine(export_dir, precision=precision, threads=threads, background=True)
        try:
            if found is not None:
                check_matches(manifest, export_dir, file_sha256(found), str(found))
            else:
                notes.insert(0, f"no checkpoint file here to check the export against; using it as exported from "
                                f"{manifest.checkpoint} (sha256 {manifest.checkpoint_sha256[:12]}...)")
        except BaseException:
            engine.wait()  # a stale export: its compilation is not left running
            raise
        if not background:
            engine.ready()
        return EngineChoice(engine, f"openvino {precision} engine ({export_dir})", notes)
    if precision != "f32":
        raise ValueError("--precision bf16/int8 needs the OpenVINO engine (run `medsam-lite export` first)")
    path = resolve_checkpoint(checkpoint)
    if name == "torch":
        require_torch("The torch engine")
    else:
        require_torch(f"{export_dir} holds no OpenVINO export, so the torch engine would run; it",
                      hint=f"Then `medsam-lite export` once gives the faster, torch-free OpenVINO engine (an export "
                           f"made on another machine can also be copied to {export_dir}).")
    from .torch_engine import TorchEngine

    engine = TorchEngine(path, device=device, threads=threads)
    return EngineChoice(engine, f"torch engine ({path})", [f"checkpoint {path}: {n}" for n in engine.notes])


__all__ = ["ENGINES", "Engine", "EngineChoice", "ExportError", "CheckpointError", "MissingDependency", "create_engine"]
