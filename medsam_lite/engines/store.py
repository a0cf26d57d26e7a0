"""OpenVINO exports kept per checkpoint digest, so that switching checkpoints never meets a stale export.

``$MEDSAM_LITE_HOME/exports/<first 16 hex digits of the checkpoint's sha256>/`` holds the export of that
checkpoint (made once, by the first run that needs it, when torch is installed); a checkout's
``work_dir/openvino`` is used too when its manifest names the same digest. A folder the user names
(``--export-dir``, ``$MEDSAM_LITE_EXPORT_DIR``) is not part of this: it is used as it is.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable, Iterator

from medsam_lite.engines.manifest import REMAKE, ExportError, read_manifest

CHECKOUT_EXPORT_DIR = Path("work_dir/openvino")  # the folder `medsam-lite export --out work_dir/openvino` fills


def store_root() -> Path:
    from medsam_lite.engines.weights import home_dir

    return home_dir() / "exports"


def store_dir(digest: str) -> Path:
    """The store's folder for the checkpoint with this sha256."""
    return store_root() / digest[:16]


def in_store(folder: Path) -> bool:
    """Whether ``folder`` is one of the store's (made by medsam-lite, not named by the user)."""
    return Path(folder).resolve().parent == store_root().resolve()


def remedy(folder: Path) -> str:
    """What makes the export in ``folder`` whole again: the store makes its own again once it is gone."""
    return f"delete {folder}: the next run makes it again" if in_store(folder) else REMAKE


def find_export(digest: str) -> Path | None:
    """An export made from the checkpoint with this sha256 (the store's, else the checkout's), or None."""
    for folder in (store_dir(digest), CHECKOUT_EXPORT_DIR):
        try:
            manifest = read_manifest(folder)
        except ExportError:  # a damaged export is not this checkpoint's
            continue
        if manifest is not None and manifest.checkpoint_sha256 == digest:
            return folder
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (a file) where the platform has flock; two processes that need the same
    export make it once."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: the manifest, written last, still marks a finished export
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_export(checkpoint: Path, digest: str, say: Callable[[str], None] | None = None) -> Path:
    """The export of ``checkpoint`` (sha256 ``digest``), made in the store first if there is none (needs torch
    and onnx; MissingDependency otherwise). An export cut short has no manifest and is made again."""
    found = find_export(digest)
    if found is not None:
        return found
    from medsam_lite.core.optional import require_torch

    target = store_dir(digest)
    require_torch(f"No OpenVINO export of {checkpoint} exists yet (looked in {target}); making one", ("torch", "onnx"),
                  hint="Or copy an export of this checkpoint made elsewhere (`medsam-lite export`) to that folder.")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _locked(target.parent / f"{target.name}.lock"):
            found = find_export(digest)  # made by another process meanwhile
            if found is not None:
                return found
            from medsam_lite.engines.export import export_openvino

            if say is not None:
                say(_making(checkpoint, target))
            start = time.perf_counter()
            report = export_openvino(checkpoint, target)
    except OSError as exc:
        from medsam_lite.core.atomic import disk_full, why_not_written
        from medsam_lite.engines.weights import HOME_ENV

        then = ("it needs about 200 MB; the next run makes it again" if disk_full(exc) else
                f"set ${HOME_ENV} to a folder you can write, or name an export with --export-dir")
        raise ExportError(f"cannot make the OpenVINO export in {target}: {why_not_written(exc)} ({then})") from exc
    if say is not None:
        say(f"exported in {time.perf_counter() - start:.1f} s (OpenVINO fp32 vs torch: max abs difference "
            f"{report.encoder_max_abs_diff:.1e} embedding, {report.decoder_max_abs_diff:.1e} logits)")
    return target


def _making(checkpoint: Path, target: Path) -> str:
    """The line that says an export is being made, and why again where there was one."""
    try:
        read_manifest(target)
    except ExportError as exc:  # damaged, or of an older format: made again in place
        return f"the OpenVINO export in {target} cannot be used ({exc.problem}); making it again (about half a minute)"
    return f"exporting {checkpoint} to OpenVINO once -> {target} (about half a minute)"
