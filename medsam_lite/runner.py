"""The case pipeline over a folder: .npz in, ``segs`` .npz out, one result record per case."""
from __future__ import annotations

import csv
import errno
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from .cases import CaseError, load_case
from .engines.base import Engine
from .guards import check_case_fits
from .model_map import ModelRouter
from .outputs import write_segs, write_with
from .segment import DEFAULT_CACHE_BYTES, segment_2d, segment_3d

SCHEDULES = ("fast", "official")
TIMING_FIELDS = ("case", "seconds", "boxes", "slices_encoded", "model")


@dataclass
class CaseResult:
    """What happened to one case: status ``ok``, ``skipped`` or ``failed``, with timing and messages."""

    case: str
    status: str
    seconds: float = 0.0
    boxes: int = 0
    slices_encoded: int = 0
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    model: str = ""


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


def _segment(engine: Engine, case, schedule: str):
    if schedule == "official":
        from .official_schedule import segment_2d_official, segment_3d_official

        run_2d, run_3d = segment_2d_official, segment_3d_official
    else:
        run_2d, run_3d = segment_2d, segment_3d
    if case.is_3d:
        return run_3d(engine, case.image, case.boxes, dtype=case.label_dtype)
    return run_2d(engine, case.image, case.boxes, dtype=case.label_dtype)


def _write_error(exc: OSError, output: Path) -> str:
    """What a user can act on when writing ``output`` failed (the temporary file is already removed)."""
    if exc.errno == errno.ENOSPC:
        return f"cannot write {output}: no space left on device (nothing of this case was kept; free space and re-run)"
    if exc.errno == errno.EDQUOT:
        return f"cannot write {output}: disk quota exceeded (nothing of this case was kept)"
    if not output.parent.is_dir():
        return f"cannot write {output}: the output folder {output.parent} no longer exists"
    return f"cannot write output {output}: {exc}"


def run_case(
    engine: Engine,
    path: Path,
    output_dir: Path,
    overlay_dir: Path | None = None,
    schedule: str = "fast",
) -> CaseResult:
    """Segment one file and write ``output_dir/<same name>``; errors become a ``failed`` result.

    The case is first checked against the memory this process may use (headers only). The overlay, if asked
    for, is written before the segmentation, so that an existing output always means a finished case."""
    start = time.perf_counter()
    passes_before = engine.encoder_passes
    output = output_dir / path.name
    try:
        check_case_fits(path, DEFAULT_CACHE_BYTES)
        case = load_case(path)
        segs = _segment(engine, case, schedule)
        if overlay_dir is not None:
            if schedule == "official":
                from .official_schedule import save_official_overlay as save_overlay
            else:
                from .overlay import save_overlay
            output = overlay_dir / (path.stem + ".png")
            save_overlay(output, case.image, segs, case.boxes)
            output = output_dir / path.name
        write_segs(output, segs)
    except CaseError as exc:
        return CaseResult(path.name, "failed", time.perf_counter() - start, message=str(exc))
    except MemoryError:
        return CaseResult(path.name, "failed", time.perf_counter() - start, message="out of memory")
    except OSError as exc:
        return CaseResult(path.name, "failed", time.perf_counter() - start, message=_write_error(exc, output))
    except Exception as exc:  # one broken case must not stop the others
        return CaseResult(
            path.name, "failed", time.perf_counter() - start, message=f"unexpected {type(exc).__name__}: {exc}"
        )
    return CaseResult(
        path.name,
        "ok",
        time.perf_counter() - start,
        boxes=len(case.boxes),
        slices_encoded=engine.encoder_passes - passes_before,
        warnings=case.warnings,
    )


def run_folder(
    engine: Engine | ModelRouter,
    cases: Iterable[Path],
    output_dir: Path,
    overwrite: bool = False,
    overlay_dir: Path | None = None,
    schedule: str = "fast",
) -> Iterator[CaseResult]:
    """Run every case in turn; an existing output is skipped unless ``overwrite``.

    ``engine``: one engine for all cases, or a ModelRouter that picks (and loads once) each case's model."""
    for path in cases:
        if not overwrite and (output_dir / path.name).exists():
            yield CaseResult(path.name, "skipped", message="output exists (use --overwrite to redo it)")
            continue
        if isinstance(engine, ModelRouter):
            try:
                label, choice = engine.choice_for(path.name)
            except Exception as exc:  # the model could not be loaded: this case fails, the run goes on
                yield CaseResult(path.name, "failed", message=f"its model could not be loaded: {exc}")
                continue
            case_engine = choice.engine
        else:
            label, case_engine = engine.name, engine
        result = run_case(case_engine, path, output_dir, overlay_dir, schedule)
        result.model = label
        yield result


def write_timing_csv(path: str | os.PathLike[str], results: Iterable[CaseResult]) -> None:
    """``case,seconds,boxes,slices_encoded,model`` for the cases that ran (the official efficiency.csv's first
    columns, then the model that segmented the case)."""

    def _write(handle) -> None:
        writer = csv.writer(handle)
        writer.writerow(TIMING_FIELDS)
        for r in results:
            if r.status == "ok":
                writer.writerow([r.case, f"{r.seconds:.4f}", r.boxes, r.slices_encoded, r.model])

    write_with(path, _write, mode="w")
