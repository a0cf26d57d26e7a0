"""The case pipeline over a folder: .npz in, ``segs`` .npz out, one result record per case."""
from __future__ import annotations

import csv
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from medsam_lite.core.case import CaseError
from medsam_lite.io.challenge import load_case
from medsam_lite.engines.base import Engine
from medsam_lite.batch.guards import check_case_fits, usable_cpus
from medsam_lite.batch.model_map import ModelRouter
from medsam_lite.core.atomic import write_segs, write_with
from medsam_lite.pipeline.case import segment_case
from medsam_lite.pipeline.segment import DEFAULT_CACHE_BYTES
from medsam_lite.core.timing import STAGES, collect, stage

TIMING_FIELDS = ("case", "seconds", "boxes", "slices_encoded", "model", "precision", *(f"{s}_s" for s in STAGES))


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
    precision: str = ""  # the mode that ran (engines.precision.MODES), "fast=" before it when --precision fast chose it
    notes: list[str] = field(default_factory=list)  # said once per run by the caller
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage (medsam_lite.core.timing.STAGES)


def write_error_message(exc: OSError, output: Path) -> str:
    """What a user can act on when writing ``output`` failed (the temporary file is already removed)."""
    from medsam_lite.core.atomic import disk_full, why_not_written

    if disk_full(exc):
        return f"cannot write {output}: {why_not_written(exc)} (nothing of this case was kept; free space and re-run)"
    if not output.parent.is_dir():
        return f"cannot write {output}: the output folder {output.parent} no longer exists"
    return f"cannot write output {output}: {exc}"


def timed(engine: Engine, run: Callable[[], CaseResult]) -> CaseResult:
    """``run()``'s result with its wall seconds, seconds per stage and (when ok) the slices it encoded."""
    start = time.perf_counter()
    passes_before = engine.encoder_passes
    with collect() as stages:
        result = run()
    result.seconds = time.perf_counter() - start
    result.stages = stages
    if result.status == "ok":
        result.slices_encoded = engine.encoder_passes - passes_before
    return result


Writer = Callable[[], None]  # writes a computed case's files; raises CaseWriteError


class CaseWriteError(Exception):
    """Writing a computed case failed; the message says what the user can act on (nothing of it is kept)."""


def compute_case(engine: Engine, path: Path, output: Path, overlay_dir: Path | None = None,
                 schedule: str = "fast") -> tuple[CaseResult, Writer | None]:
    """Load, check and segment one file, timed (``timed``): its result (errors become ``failed``), and the
    function that writes its overlay (if asked for) and then ``output`` (None when the case failed).

    The case is first checked against the memory this process may use (headers only). The overlay is written
    before the segmentation, so that an existing output always means a finished case (``write_case``)."""
    writer: list[Writer] = []
    result = timed(engine, lambda: _compute_case(engine, path, output, overlay_dir, schedule, writer))
    return result, (writer[0] if writer else None)


def write_case(result: CaseResult, writer: Writer | None) -> CaseResult:
    """Run ``writer`` and add its seconds to ``result`` (``write`` stage and ``seconds``); a failed write makes
    the result ``failed`` with its reason. Safe on any thread: it times itself, not through medsam_lite.core.timing."""
    if writer is None:
        return result
    start = time.perf_counter()
    try:
        writer()
    except CaseWriteError as exc:
        result.status, result.message = "failed", str(exc)
    except Exception as exc:  # one broken case must not stop the others
        result.status, result.message = "failed", f"unexpected {type(exc).__name__} while writing: {exc}"
    seconds = time.perf_counter() - start
    result.stages["write"] = result.stages.get("write", 0.0) + seconds
    result.seconds += seconds
    return result


def _compute_case(engine: Engine, path: Path, output: Path, overlay_dir: Path | None, schedule: str,
                  writer: list[Writer]) -> CaseResult:
    try:
        with stage("load"):
            check_case_fits(path, DEFAULT_CACHE_BYTES, slice_pairs=engine.slice_pairs)
            case = load_case(path)
        segs = segment_case(engine, case, schedule)
    except CaseError as exc:
        return CaseResult(path.name, "failed", message=str(exc))
    except MemoryError:
        return CaseResult(path.name, "failed", message="out of memory")
    except Exception as exc:  # one broken case must not stop the others
        return CaseResult(path.name, "failed", message=f"unexpected {type(exc).__name__}: {exc}")

    def write() -> None:
        writing = output  # the file a write error is about
        try:
            if overlay_dir is not None:
                if schedule == "official":
                    from medsam_lite.pipeline.official import save_official_overlay as save_overlay
                else:
                    from medsam_lite.io.overlay import save_overlay
                writing = overlay_dir / (path.stem + ".png")
                save_overlay(writing, case.image, segs, case.boxes)
                writing = output
            write_segs(output, segs)
        except OSError as exc:
            raise CaseWriteError(write_error_message(exc, writing)) from exc

    writer.append(write)
    return CaseResult(path.name, "ok", boxes=len(case.boxes), warnings=case.warnings, notes=case.notes)


def writes_can_overlap(threads: int | None) -> bool:
    """Whether case k may be written while case k+1 is computed: only with inference ``threads`` below the CPUs
    this process may use. Measured on 2 cores (8 2D cases with overlays, medians of 6 interleaved runs): with
    the encoder on both cores a writer thread slowed it more than it saved (6.05 -> 6.20 s); with ``--threads 1``
    it saved 0.2 s of 10.7 s."""
    return threads is not None and threads < usable_cpus()


def run_folder(
    engine: Engine | ModelRouter,
    cases: Iterable[Path],
    output_dir: Path,
    overwrite: bool = False,
    overlay_dir: Path | None = None,
    schedule: str = "fast",
    overlap_writes: bool = False,
) -> Iterator[CaseResult]:
    """Run every case in turn, results in case order; an existing output is skipped unless ``overwrite``.

    ``engine``: one engine for all cases, or a ModelRouter that picks (and loads once) each case's model.
    ``overlap_writes`` (see ``writes_can_overlap``): case k's files are written on a writer thread while case
    k+1 is computed (PNG and zlib encoding release the GIL; an overlay of a 2604x1726 mammogram takes 0.28 s);
    its result comes once they are written. The official schedule writes in turn, as the official script does.
    A generator closed early still finishes the write under way (each is atomic), so nothing is half-written;
    stopped by Ctrl+C or SIGTERM while a case is computed, it yields the case written meanwhile before the stop
    goes on, so that the run's report and timing CSV list every output that exists."""
    with _Writes(overlap_writes and schedule != "official") as writes:
        try:
            yield from _run_cases(engine, cases, output_dir, overwrite, overlay_dir, schedule, writes)
        except KeyboardInterrupt:
            yield from writes.flush()
            raise


def _run_cases(engine: Engine | ModelRouter, cases: Iterable[Path], output_dir: Path, overwrite: bool,
               overlay_dir: Path | None, schedule: str, writes: "_Writes") -> Iterator[CaseResult]:
    """``run_folder``'s loop, its writes through ``writes``."""
    for path in cases:
        if not overwrite and (output_dir / path.name).exists():
            yield from writes.flush()
            yield CaseResult(path.name, "skipped", message="output exists (use --overwrite to redo it)")
            continue
        if isinstance(engine, ModelRouter):
            try:
                label, choice = engine.choice_for(path.name)
            except Exception as exc:  # the model could not be loaded: this case fails, the run goes on
                yield from writes.flush()
                yield CaseResult(path.name, "failed", message=f"its model could not be loaded: {exc}")
                continue
            case_engine = choice.engine
        else:
            label, case_engine = engine.name, engine
        result, writer = compute_case(case_engine, path, output_dir / path.name, overlay_dir, schedule)
        result.model, result.precision = label, case_engine.precision_label
        if isinstance(engine, ModelRouter):  # a model loaded for this case counts as its start-up
            result.stages["startup"] = result.stages.get("startup", 0.0) + engine.take_load_seconds()
        yield from writes.flush()  # the previous case, written meanwhile
        yield from writes.submit(result, writer)
    yield from writes.flush()


class _Writes:
    """At most one case being written: on a thread (``overlap``) or at once."""

    def __init__(self, overlap: bool) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="medsam-lite-write") if overlap else None
        self._pending: Future | None = None

    def submit(self, result: CaseResult, writer: Writer | None) -> Iterator[CaseResult]:
        """Write a computed case (after ``flush``): at once, yielding its result, or on the writer thread (its
        result comes from the next ``flush``)."""
        if self._pool is None or writer is None:
            yield write_case(result, writer)
        else:
            self._pending = self._pool.submit(write_case, result, writer)

    def flush(self) -> Iterator[CaseResult]:
        """The result of the case being written, once it is (nothing when none is)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            yield pending.result()

    def __enter__(self) -> "_Writes":
        return self

    def __exit__(self, *exc_info) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # a write under way ends (atomically) before we return


def write_timing_csv(path: str | os.PathLike[str], results: Iterable[CaseResult]) -> None:
    """``case,seconds,boxes,slices_encoded,model,precision,startup_s,load_s,...,write_s`` for the cases that ran:
    the official efficiency.csv's first columns, the model that segmented the case and its precision
    (``fast=f32``: ``--precision fast`` chose f32 on this CPU), and the seconds per stage
    (``startup_s``: the process's start-up, on the first case it ran; a model loaded for a case, on that case)."""

    def _write(handle) -> None:
        writer = csv.writer(handle)
        writer.writerow(TIMING_FIELDS)
        for r in results:
            if r.status == "ok":
                stages = [f"{r.stages.get(name, 0.0):.4f}" for name in STAGES]
                writer.writerow([r.case, f"{r.seconds:.4f}", r.boxes, r.slices_encoded, r.model, r.precision, *stages])

    write_with(path, _write, mode="w")


def segment_folder(input_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str],
                   predictor=None, overwrite: bool = False,
                   overlay_dir: str | os.PathLike[str] | None = None) -> Iterator:
    """``medsam-lite predict`` from Python: every case of ``input_dir`` written to ``output_dir``; yields one
    result per case (``.case``, ``.status`` ok/skipped/failed, ``.message``, ``.seconds``) as it finishes."""
    from medsam_lite.pipeline.predictor import Predictor
    from medsam_lite.batch.folder import find_cases
    from medsam_lite.batch.guards import check_outputs_outside_inputs

    predictor = predictor or Predictor()
    inputs, output = Path(input_dir), Path(output_dir)
    cases, _ = find_cases(inputs)
    overlays = Path(overlay_dir) if overlay_dir is not None else None
    check_outputs_outside_inputs(inputs, cases, {"output folder": output, "overlay folder": overlays})
    output.mkdir(parents=True, exist_ok=True)
    if overlays is not None:
        overlays.mkdir(parents=True, exist_ok=True)
    yield from run_folder(predictor.engine, cases, output, overwrite, overlays)
