"""Checks that keep a batch run from losing data: outputs never land on inputs, and a case is not loaded when
it cannot fit in the memory this process may use; and the CPUs it may use."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsam_lite.core.case import CaseError, is_3d_name
from medsam_lite.io.npy_header import ArrayHeader, read_npz_headers

MIB = 1 << 20
# What a case needs besides its arrays: the per-slice work (model input, logits, upsampled masks) and the
# allocator's slack; measured peaks are in the README (batch section).
CASE_MARGIN_BYTES = 256 * MIB
CGROUP_ROOT = Path("/sys/fs/cgroup")
MEMINFO = Path("/proc/meminfo")
MEMORY_LIMIT_ENV = "MEDSAM_LITE_MEMORY_LIMIT_MB"


class UnsafeOutput(ValueError):
    """An output path that would write into the input folder or onto an input file."""


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_outputs_outside_inputs(input_dir: Path, cases: list[Path], outputs: dict[str, Path | None]) -> None:
    """Refuse any output (``{"output folder": path, ...}``; None = not used) that resolves, symlinks
    followed, into the input folder or below it, or a folder that holds (the target of) an input case."""
    inputs = input_dir.resolve()
    targets = {case.resolve() for case in cases}
    for what, path in outputs.items():
        if path is None:
            continue
        resolved = path.resolve()
        if _inside(resolved, inputs):
            where = "is the input folder" if resolved == inputs else f"lies inside the input folder {input_dir}"
            raise UnsafeOutput(f"the {what} {path} {where}: inputs would be overwritten; choose another folder")
        if resolved in targets or any(_inside(t, resolved) for t in targets):
            raise UnsafeOutput(f"the {what} {path} holds input files (symbolic links in {input_dir} point there): "
                               f"they would be overwritten; choose another folder")


def check_outputs_apart(inputs: list[Path], outputs: dict[str, Path | None]) -> None:
    """Refuse (UnsafeOutput) an output folder that is the folder of an input file, or is or lies inside an input
    folder (symbolic links followed): ``segment``'s inputs are files and folders, not one folder of cases."""
    for what, target in outputs.items():
        if target is None:
            continue
        resolved = target.resolve()
        for path in inputs:
            folder = path.resolve() if path.is_dir() else path.resolve().parent
            if resolved == folder or (path.is_dir() and folder in resolved.parents):
                raise UnsafeOutput(f"the {what} {target} is inside the input folder {folder}: inputs could be "
                                   f"overwritten; choose another folder")


def case_peak_bytes(name: str, headers: dict[str, ArrayHeader], cache_bytes: int, slice_pairs: bool) -> int:
    """Estimated peak memory (bytes) of segmenting the case file ``name`` with these array headers: the image
    as stored and as uint8, the label map, the 3D embedding cache (bounded by ``cache_bytes``), the engine's
    second encoder where its ``slice_pairs`` says a volume's slices go in pairs (counted again once it exists: a
    margin) and a margin."""
    from medsam_lite.pipeline.segment import EMBEDDING_BYTES, PAIRED_ENCODER_BYTES, PAIRS_FROM

    image = headers.get("imgs")
    if image is None or len(image.shape) < 2:
        return 0  # load_case names what is wrong
    pixels = math.prod(image.shape)
    boxes = headers.get("boxes")
    label_bytes = 2 if boxes is not None and len(boxes.shape) >= 1 and boxes.shape[0] > 255 else 1
    as_uint8 = 0 if image.dtype == np.uint8 else pixels
    if is_3d_name(name) and len(image.shape) == 3:
        depth, height, width = image.shape
        labels = depth * height * width * label_bytes
        paired = PAIRED_ENCODER_BYTES if slice_pairs and depth >= PAIRS_FROM else 0
        cache = min(cache_bytes, depth * EMBEDDING_BYTES) + paired
    else:
        height, width = image.shape[:2]
        labels = height * width * label_bytes
        cache = 0
    return image.nbytes + as_uint8 + labels + cache + CASE_MARGIN_BYTES + 8 * height * width


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat_value(path: Path, *keys: str) -> int | None:
    """The first of ``keys`` found in a cgroup ``memory.stat`` file."""
    try:
        stats = dict(line.split()[:2] for line in path.read_text().splitlines() if len(line.split()) >= 2)
    except OSError:
        return None
    for key in keys:
        if key in stats and stats[key].isdigit():
            return int(stats[key])
    return None


def cgroup_limit_bytes() -> tuple[int | None, int | None]:
    """(limit, memory in use) of this process's memory cgroup in bytes; (None, None) where there is no limit.

    cgroup v2 (``memory.max``) or v1 (``memory.limit_in_bytes``). In use counts anonymous memory only
    (``memory.stat``: anon / total_rss): the page cache of files read earlier is given back under pressure."""
    root = CGROUP_ROOT
    candidates = [(root / "memory.max", root / "memory.stat", ("anon",), root / "memory.current"),
                  (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.stat", ("total_rss", "rss"),
                   root / "memory" / "memory.usage_in_bytes")]
    for limit_file, stat_file, keys, usage_file in candidates:
        limit = _read_int(limit_file)
        if limit is not None and limit < (1 << 60):  # v1 says "no limit" with a huge number
            used = _stat_value(stat_file, *keys)
            return limit, used if used is not None else _read_int(usage_file)
    return None, None


def usable_cpus() -> int:
    """CPUs this process may run on: its CPU affinity, capped by a cgroup CPU quota (v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; ``docker run --cpus``), rounded up."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = None
    try:
        limit, period = (CGROUP_ROOT / "cpu.max").read_text().split()[:2]
        if limit.isdigit() and period.isdigit():
            quota = int(limit) / int(period)
    except (OSError, ValueError):
        v1 = CGROUP_ROOT / "cpu"
        limit_v1, period_v1 = _read_int(v1 / "cpu.cfs_quota_us"), _read_int(v1 / "cpu.cfs_period_us")
        if limit_v1 and period_v1:  # v1 says "no quota" with -1 (not read as a number here)
            quota = limit_v1 / period_v1
    return max(1, min(cpus, math.ceil(quota))) if quota else max(1, cpus)


def available_ram_bytes() -> int | None:
    """MemAvailable of /proc/meminfo in bytes, or None where it cannot be read."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass
class MemoryBudget:
    """What this process may still use (bytes), and where that number comes from."""

    bytes: int | None
    source: str

    @classmethod
    def now(cls) -> "MemoryBudget":
        """The tighter of the cgroup's room (limit - usage) and the machine's available RAM; override with
        $MEDSAM_LITE_MEMORY_LIMIT_MB (the budget in MiB, for schedulers that enforce limits otherwise)."""
        override = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
        if override:
            try:
                return cls(int(float(override) * MIB), f"${MEMORY_LIMIT_ENV}={override}")
            except ValueError:
                raise ValueError(f"${MEMORY_LIMIT_ENV} must be a number of MiB, not {override!r}") from None
        limit, usage = cgroup_limit_bytes()
        ram = available_ram_bytes()
        options = []
        if limit is not None:
            options.append((limit - (usage or 0), f"cgroup memory limit {limit / MIB:.0f} MiB, {(usage or 0) / MIB:.0f} MiB in use"))
        if ram is not None:
            options.append((ram, "available RAM"))
        if not options:
            return cls(None, "unknown")
        room, source = min(options)
        return cls(max(room, 0), source)


def check_case_fits(path: Path, cache_bytes: int, slice_pairs: bool, budget: MemoryBudget | None = None) -> None:
    """Raise CaseError naming both numbers when the case at ``path`` needs more memory than ``budget``
    (default: measured now) allows, with ``slice_pairs`` the engine's (see ``case_peak_bytes``). Reads only the
    .npy headers."""
    budget = budget or MemoryBudget.now()
    if budget.bytes is None:
        return
    try:
        headers = read_npz_headers(path)
    except CaseError:
        return  # not a readable .npz: load_case says what it is
    needed = case_peak_bytes(Path(path).name, headers, cache_bytes, slice_pairs)
    if needed > budget.bytes:
        raise CaseError(
            f"needs about {needed / MIB:,.0f} MiB (imgs {headers['imgs'].shape}) but this process may use only "
            f"{budget.bytes / MIB:,.0f} MiB more ({budget.source}); not loaded"
        )
