"""``medsam-lite predict``: a folder of challenge cases -> their segmentations (``batch.runner``)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from medsam_lite.cli.common import (
    CHECKPOINT_OPTION, ENGINE_OPTION, EXPORT_DIR_OPTION, OFFLINE_OPTION, PRECISION_OPTION, engine_ready, fail,
    load_engine, main, run_and_report, say, writable_folders
)


def _parse_shard(value: str | None) -> tuple[int, int] | None:
    """'K/N' -> (K, N) with 0 <= K < N."""
    if value is None:
        return None
    k, sep, n = value.partition("/")
    if not (sep and k.strip().isdigit() and n.strip().isdigit() and 0 <= int(k) < int(n)):
        raise click.BadParameter(f"{value!r}: expected K/N with 0 <= K < N, e.g. 0/4")
    return int(k), int(n)


def _model_router(model_map: Path, engine: str, checkpoint: Path | None, export_dir: Path | None, precision: str,
                  threads: int | None, device: str, quiet: bool, offline: bool):
    """The ModelRouter of ``--model-map`` (checked now, each model loaded when its first case comes); exit 2 if
    the map cannot be used."""
    from medsam_lite.engines import create_engine
    from medsam_lite.batch.model_map import ModelMapError, ModelRouter, entry_loader, read_model_map

    try:
        entries = read_model_map(model_map)
    except ModelMapError as exc:
        fail(str(exc))

    def announce(label: str, choice) -> None:
        for note in choice.notes:
            say(f"note: {label}: {note}")
        say(f"model {label}: {choice.description} ready", quiet)

    return ModelRouter(
        entries,
        load=entry_loader(engine, precision, threads, device),
        fallback=lambda: create_engine(engine, checkpoint, export_dir, precision=precision, threads=threads,
                                       device=device, allow_fetch=not offline, say=say),
        announce=announce,
    )


@main.command()
@click.option("-i", "--input-dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of challenge .npz cases (2D: imgs HxWx3, boxes Nx4; 3D: name starts with '3D').")
@click.option("-o", "--output-dir", required=True, type=click.Path(path_type=Path),
              help="Folder for the segmentations (same file names, array 'segs').")
@CHECKPOINT_OPTION
@ENGINE_OPTION
@EXPORT_DIR_OPTION
@PRECISION_OPTION
@click.option("--device", default="cpu", show_default=True, help="Torch device for --engine torch.")
@click.option("--overwrite", is_flag=True, help="Redo cases whose output exists (default: skip them).")
@click.option("--save-overlay", "overlay_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write a PNG overlay per case into this folder.")
@click.option("--timing-csv", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write case,seconds,boxes,slices_encoded,model,precision and the seconds per stage (startup, load, "
                   "preprocess, encoder, decoder, postprocess, write) for the cases run.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for inference [default: all]. Below the CPUs available, each case's files are "
                   "written while the next case is computed.")
@click.option("--schedule", type=click.Choice(["fast", "official"]), default="fast", hidden=True,
              help="'official' re-encodes every slice per box, as the official script; for benchmarks only.")
@click.option("--shard", default=None, callback=lambda ctx, param, value: _parse_shard(value), metavar="K/N",
              help="Run only shard K of N (K = 0..N-1; a case's shard is a hash of its file name, so adding files "
                   "moves no case to another shard). For job arrays: N processes with K = $SLURM_ARRAY_TASK_ID or "
                   "$JOB_COMPLETION_INDEX on one shared folder write every case once.")
@click.option("--model-map", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="MAP.json",
              help="Route each case to the model of its modality (from the file name: 2DBox_<Modality>_...): a "
                   "JSON object of modality (or 'default') -> checkpoint file, export folder, or "
                   "{checkpoint, export_dir}. Other cases use --checkpoint/--export-dir.")
@OFFLINE_OPTION
@click.option("-q", "--quiet", is_flag=True, help="Only errors and the summary.")
def predict(input_dir: Path, output_dir: Path, checkpoint: Path | None, engine: str, export_dir: Path | None,
            precision: str, device: str, overwrite: bool, overlay_dir: Path | None, timing_csv: Path | None,
            threads: int | None, schedule: str, shard: tuple[int, int] | None, model_map: Path | None,
            offline: bool, quiet: bool) -> None:
    """Segment every .npz in INPUT_DIR with its box prompts and write OUTPUT_DIR/<name>.npz.

    Nothing is ever written into INPUT_DIR; a case that cannot fit in the memory left is refused before it is
    read; a case whose output exists is skipped (so a re-run, or a re-run shard, finishes only what is missing)."""
    from medsam_lite.batch.folder import find_cases, select_shard
    from medsam_lite.batch.guards import MemoryBudget, UnsafeOutput, check_outputs_outside_inputs

    if schedule == "official":
        from medsam_lite.pipeline.official import import_official_startup

        try:
            import_official_startup()
        except ImportError as exc:
            fail(str(exc))

    cases, ignored = find_cases(input_dir)
    try:
        check_outputs_outside_inputs(input_dir, cases, {"output folder": output_dir, "overlay folder": overlay_dir,
                                                        "timing CSV": timing_csv})
        MemoryBudget.now()  # a malformed $MEDSAM_LITE_MEMORY_LIMIT_MB stops here, not in every case
    except (UnsafeOutput, ValueError) as exc:
        fail(str(exc))
    writable_folders(output_dir, overlay_dir, timing_csv)
    if ignored:
        say(f"ignoring {len(ignored)} file(s) that are not .npz: {', '.join(p.name for p in ignored[:5])}", quiet)
    if shard is not None:
        total = len(cases)
        cases = select_shard(cases, *shard)
        say(f"shard {shard[0]}/{shard[1]}: {len(cases)} of {total} case(s)", quiet)
    if not cases:
        say(f"no .npz cases in {input_dir}" + (" for this shard" if shard is not None else ""))
        return

    start = time.perf_counter()
    choice = None if model_map else load_engine(engine, checkpoint, export_dir, precision, threads, device, True,
                                                offline)
    from tqdm import tqdm  # imported while the encoder compiles

    from medsam_lite.batch.runner import run_folder, writes_can_overlap

    if choice is not None:
        engine_ready(choice)
        runner_engine = choice.engine
        say(f"{choice.description} ready in {time.perf_counter() - start:.2f} s", quiet)
    else:
        runner_engine = _model_router(model_map, engine, checkpoint, export_dir, precision, threads, device, quiet,
                                      offline)
    bar = tqdm(cases, desc="cases", unit="case", file=sys.stderr, disable=quiet or None)
    cases_run = run_folder(runner_engine, bar, output_dir, overwrite, overlay_dir, schedule, writes_can_overlap(threads))
    run_and_report(cases_run, bar, "case", start, output_dir, timing_csv, quiet, with_model=model_map is not None)
