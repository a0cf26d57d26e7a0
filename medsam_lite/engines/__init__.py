"""Engines that run LiteMedSAM. Each is imported only when chosen, so that torch is loaded only by the
torch engine (the OpenVINO engine needs numpy, OpenCV and OpenVINO)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from medsam_lite.engines.checkpoint import DEFAULT_CHECKPOINT, CheckpointError, file_sha256
from medsam_lite.core.optional import MissingDependency, require_torch
from medsam_lite.engines.base import Engine
from medsam_lite.engines.manifest import ExportError, check_matches, read_manifest
from medsam_lite.engines.precision import needs_openvino, no_bf16_note, resolve

ENGINES = ("auto", "openvino", "torch")
EXPORT_DIR_ENV = "MEDSAM_LITE_EXPORT_DIR"


@dataclass
class EngineChoice:
    """The engine to run and what the user should be told about the choice."""

    engine: Engine
    description: str
    notes: list[str] = field(default_factory=list)
    checkpoint_sha256: str | None = None  # of the weights it runs (from the export's manifest where no file is here)


def named_export_dir(export_dir: str | os.PathLike[str] | None) -> Path | None:
    """The export folder the user names: ``export_dir``, else ``$MEDSAM_LITE_EXPORT_DIR``; None: the store."""
    named = export_dir or os.environ.get(EXPORT_DIR_ENV)
    return Path(named) if named else None


def weights_note(path: Path, digest: str) -> list[str]:
    """The log's word on weights that are not the official ones (none for the official ones)."""
    from medsam_lite.engines.weights import OFFICIAL_SHA256

    return [] if digest == OFFICIAL_SHA256 else [f"{path}: not the official LiteMedSAM weights (sha256 {digest[:16]}...)"]


def _explicit_or_default_checkpoint(checkpoint: str | os.PathLike[str] | None, use_default: bool = True) -> Path | None:
    """The checkpoint the user points at (option, else environment and the checkout's default if
    ``use_default``) if that file exists."""
    from medsam_lite.engines.weights import named_checkpoint

    if checkpoint is None and not use_default:
        return None
    chosen = named_checkpoint(checkpoint) or DEFAULT_CHECKPOINT
    return chosen if chosen.is_file() else None


def create_engine(
    name: str,
    checkpoint: str | os.PathLike[str] | None,
    export_dir: str | os.PathLike[str] | None = None,
    precision: str = "f32",
    threads: int | None = None,
    device: str = "cpu",
    default_checkpoint: bool = True,
    background: bool = False,
    allow_fetch: bool = True,
    say: Callable[[str], None] | None = None,
) -> EngineChoice:
    """Load an engine for the weights in use.

    Weights: ``checkpoint``, else $MEDSAM_LITE_CHECKPOINT, else the checkout's or the cached official weights,
    else the official weights fetched once (``allow_fetch``; ``say`` gets the progress lines).

    ``export_dir`` (or $MEDSAM_LITE_EXPORT_DIR) names an export folder: ``auto`` runs OpenVINO when it holds an
    export, else torch. The export is used only if it was made from the checkpoint in use (sha256, computed
    while the encoder compiles); when no checkpoint file is there (a runtime image may ship only the export),
    it is used as it is and that is said. ``default_checkpoint=False``: only ``checkpoint`` itself counts.

    No folder named: the export of these weights in the per-digest store (``engines.store``), made once first
    where there is none (``auto``/``openvino``; needs torch). ``background=True``: the OpenVINO encoder may
    still be compiling when this returns (``engine.ready()`` waits for it).
    """
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    chosen = resolve(precision)
    if name == "torch" and chosen.mode != "f32":  # before any folder or checkpoint is looked at
        raise ValueError(needs_openvino(precision, chosen.mode))
    choice = _create(name, checkpoint, export_dir, precision, chosen.mode, threads, device, default_checkpoint,
                     background, allow_fetch, say)
    if chosen.note:
        choice.notes.insert(0, chosen.note)
    return choice


def _create(name: str, checkpoint, export_dir, precision: str, mode: str, threads: int | None, device: str,
            default_checkpoint: bool, background: bool, allow_fetch: bool, say) -> EngineChoice:
    """``create_engine`` for ``precision`` as asked (``fast`` included), ``mode`` the one it runs."""
    folder = named_export_dir(export_dir)
    if folder is None:
        return _from_store(name, checkpoint, precision, mode, threads, device, background, allow_fetch, say)
    manifest = read_manifest(folder) if name in ("auto", "openvino") else None
    if name == "openvino" and manifest is None:
        raise ExportError(f"no OpenVINO export in {folder}; run `medsam-lite export --checkpoint PATH --out {folder}` "
                          f"first (or name no --export-dir: the export of the checkpoint is then made once)")
    if manifest is not None:
        notes = []
        found = _explicit_or_default_checkpoint(checkpoint, default_checkpoint)
        if checkpoint is not None and found is None:
            raise CheckpointError(f"no checkpoint at {checkpoint}")
        from medsam_lite.engines.openvino_engine import OpenVINOEngine

        engine = OpenVINOEngine(folder, precision=precision, threads=threads, background=True)
        try:
            if found is not None:
                digest = file_sha256(found)
                check_matches(manifest, folder, digest, str(found))
                notes += weights_note(found, digest)
            else:
                notes.append(f"no checkpoint file here to check the export against; using it as exported from "
                             f"{manifest.checkpoint} (sha256 {manifest.checkpoint_sha256[:12]}...)")
        except BaseException:
            engine.wait()  # a stale export: its compilation is not left running
            raise
        return _openvino_choice(engine, folder, notes, manifest.checkpoint_sha256, background)
    if mode != "f32":  # `auto` on a folder without an export: the torch engine would run
        raise ValueError(f"{needs_openvino(precision, mode)}: run `medsam-lite export` first")
    if name == "torch":
        require_torch("The torch engine")
    else:
        require_torch(f"{folder} holds no OpenVINO export, so the torch engine would run; it",
                      hint=f"Then `medsam-lite export` once gives the faster, torch-free OpenVINO engine (an export "
                           f"made on another machine can also be copied to {folder}).")
    from medsam_lite.engines.weights import checkpoint_or_fetch, checkpoint_sha256

    path = checkpoint_or_fetch(checkpoint, allow_fetch, say)
    choice = _torch_choice(path, checkpoint_sha256(path), device, threads, precision)
    if name == "auto":  # the user named a folder and gets the slower engine: say why and how to change it
        choice.notes.insert(0, f"{folder} holds no OpenVINO export, so the torch engine runs; `medsam-lite export "
                               f"--checkpoint {path} --out {folder}` once gives the faster OpenVINO engine")
    return choice


def _from_store(name: str, checkpoint, precision: str, mode: str, threads: int | None, device: str,
                background: bool, allow_fetch: bool, say) -> EngineChoice:
    """``create_engine`` with no export folder named: the weights found (or fetched), their store export."""
    from medsam_lite.engines.weights import checkpoint_or_fetch, checkpoint_sha256

    if name == "torch":
        require_torch("The torch engine")
    path = checkpoint_or_fetch(checkpoint, allow_fetch, say)
    digest = checkpoint_sha256(path)
    if name == "torch":
        return _torch_choice(path, digest, device, threads, precision)
    from medsam_lite.engines.openvino_engine import OpenVINOEngine
    from medsam_lite.engines.store import ensure_export

    folder = ensure_export(path, digest, say)
    notes = weights_note(path, digest)
    engine = OpenVINOEngine(folder, precision=precision, threads=threads, background=True)
    return _openvino_choice(engine, folder, notes, digest, background)


def _openvino_choice(engine, folder: Path, notes: list[str], digest: str, background: bool) -> EngineChoice:
    if engine.precision != "f32":
        rounded = {"bf16": "the image encoder in bf16, the decoder f32",
                   "int8": "the image encoder's linears in int8, its other layers bf16 where the CPU has bf16 units, "
                           "the decoder f32",
                   "mixed": "the image encoder's convolution stage f32 but its MBConv projections, the rest bf16; the "
                            "box decoder's largest products bf16",
                   "bf16-linears": "the image encoder's linears in bf16, everything else f32"}
        notes.append(f"--precision {engine.precision} is approximate ({rounded[engine.precision]}): "
                     f"masks may differ from the official fp32 model")
        if note := no_bf16_note(engine.precision):
            notes.append(note)
    if not background:
        engine.ready()
    return EngineChoice(engine, f"openvino {engine.precision_label} engine ({folder})", notes, digest)


def _torch_choice(path: Path, digest: str, device: str, threads: int | None, precision: str = "f32") -> EngineChoice:
    from medsam_lite.engines.torch_engine import TorchEngine

    engine = TorchEngine(path, device=device, threads=threads, precision=precision)
    notes = weights_note(path, digest) + [f"checkpoint {path}: {n}" for n in engine.notes]
    return EngineChoice(engine, f"torch engine ({path})", notes, digest)


__all__ = ["ENGINES", "Engine", "EngineChoice", "ExportError", "CheckpointError", "MissingDependency", "create_engine",
           "named_export_dir"]
