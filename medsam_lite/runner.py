"""The case pipeline over a folder: .npz in, ``segs`` .npz out, one result record per case."""
from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from .cases import CaseError, load_case
from .engines.base import Engine
from .outputs import write_segs, write_with
from .segment import segment_2d, segment_3d

SCHEDULES = ("fast", "official")
TIMING_FIELDS = ("case", "seconds", "boxes", "slices_encoded")


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


def find_cases(input_dir: str | os.PathLike[str]) -> tuple[list[Path], list[Path]]:
    """Sorted ``*.npz`` files directly in ``input_dir``, and the other files there (which are ignored)."""
    entries = sorted(p for p in Path(input_dir).iterdir() if p.is_file() and not p.name.startswith("."))
    cases = [p for p in entries if p.suffix == ".npz"]
    return cases, [p for p in entries if p.suffix != ".npz"]


def _segment(engine: Engine, case, schedule: str):
    if schedule == "official":
        from .official_schedule import segment_2d_official, segment_3d_official

        run_2d, run_3d = segment_2d_official, segment_3d_official
    else:
        run_2d, run_3d = segment_2d, segment_3d
    if case.is_3d:
        return run_3d(engine, case.image, case.boxes, dtype=case.label_dtype)
    return run_2d(engine, case.image, case.boxes, dtype=case.label_dtype)


def run_case(
    engine: Engine,
    path: Path,
    output_dir: Path,
    overlay_dir: Path | None = None,
    schedule: str = "fast",
) -> CaseResult:
    """Segment one file and write ``output_dir/<same name>``; errors become a ``failed`` result."""
    start = time.perf_counter()
    passes_before = engine.encoder_passes
    try:
        case = load_case(path)
        segs = _segment(engine, case, schedule)
        write_segs(output_dir / path.name, segs)
        if overlay_dir is not None:
            if schedule == "official":
                from .official_schedule import save_official_overlay as save_overlay
            else:
                from .overlay import save_overlay
            save_overlay(overlay_dir / (path.stem + ".png"), case.image, segs, case.boxes)
    except CaseError as exc:
        return CaseResult(path.name, "failed", time.perf_counter() - start, message=str(exc))
    except MemoryError:
        return CaseResult(path.name, "failed", time.perf_counter() - start, message="out of memory")
    except OSError as exc:
        return CaseResult(path.name, "failed", time.perf_counter() - start, message=f"cannot write output: {exc}")
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
    engine: Engine,
    cases: Iterable[Path],
    output_dir: Path,
    overwrite: bool = False,
    overlay_dir: Path | None = None,
    schedule: str = "fast",
) -> Iterator[CaseResult]:
    """Run every case in turn; an existing output is skipped unless ``overwrite``."""
    for path in cases:
        if not overwrite and (output_dir / path.name).exists():
            yield CaseResult(path.name, "skipped", message="output exists (use --overwrite to redo it)")
            continue
        yield run_case(engine, path, output_dir, overlay_dir, schedule)


def write_timing_csv(path: str | os.PathLike[str], results: Iterable[CaseResult]) -> None:
    """``case,seconds,boxes,slices_encoded`` for the cases that ran, like the official efficiency.csv."""

    def _write(handle) -> None:
        writer = csv.writer(handle)
        writer.writerow(TIMING_FIELDS)
        for r in results:
            if r.status == "ok":
                writer.writerow([r.case, f"{r.seconds:.4f}", r.boxes, r.slices_encoded])

    write_with(path, _write, mode="w")
