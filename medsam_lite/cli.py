"""``medsam-lite``: the command line. It parses options, calls the pipeline and reports; nothing else."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from .checkpoint import CheckpointError, resolve_checkpoint


def _say(message: str, quiet: bool = False) -> None:
    """A log line on stderr that does not break the progress bar."""
    if not quiet:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Exact, fast LiteMedSAM inference and evaluation for the CVPR 'MedSAM on Laptop' challenge format."""


@main.command()
@click.option("-i", "--input-dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of challenge .npz cases (2D: imgs HxWx3, boxes Nx4; 3D: name starts with '3D').")
@click.option("-o", "--output-dir", required=True, type=click.Path(path_type=Path),
              help="Folder for the segmentations (same file names, array 'segs').")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="LiteMedSAM weights [default: $MEDSAM_LITE_CHECKPOINT or work_dir/LiteMedSAM/lite_medsam.pth].")
@click.option("--engine", type=click.Choice(["torch"]), default="torch", show_default=True,
              help="Inference backend.")
@click.option("--device", default="cpu", show_default=True, help="Torch device for --engine torch.")
@click.option("--overwrite", is_flag=True, help="Redo cases whose output exists (default: skip them).")
@click.option("--save-overlay", "overlay_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write a PNG overlay per case into this folder.")
@click.option("--timing-csv", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write case,seconds,boxes,slices_encoded for the cases run.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for inference.")
@click.option("--schedule", type=click.Choice(["fast", "official"]), default="fast", hidden=True,
              help="'official' re-encodes every slice per box, as the official script; for benchmarks only.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and the summary.")
def predict(input_dir: Path, output_dir: Path, checkpoint: Path | None, engine: str, device: str, overwrite: bool,
            overlay_dir: Path | None, timing_csv: Path | None, threads: int | None, schedule: str,
            quiet: bool) -> None:
    """Segment every .npz in INPUT_DIR with its box prompts and write OUTPUT_DIR/<name>.npz."""
    from tqdm import tqdm

    from .engines import create_engine
    from .outputs import check_writable_dir
    from .runner import find_cases, run_folder, write_timing_csv

    try:
        checkpoint_path = resolve_checkpoint(checkpoint)
    except CheckpointError as exc:
        _fail(str(exc))
    for folder, what in [(output_dir, "output"), (overlay_dir, "overlay")]:
        if folder is not None:
            try:
                check_writable_dir(folder)
            except OSError as exc:
                _fail(f"the {what} folder {folder} is not writable: {exc}")
    cases, ignored = find_cases(input_dir)
    if ignored:
        _say(f"ignoring {len(ignored)} file(s) that are not .npz: {', '.join(p.name for p in ignored[:5])}", quiet)
    if not cases:
        _say(f"no .npz cases in {input_dir}")
        return

    start = time.perf_counter()
    try:
        runner_engine = create_engine(engine, checkpoint_path, threads=threads, device=device)
    except CheckpointError as exc:
        _fail(str(exc))
    for note in getattr(runner_engine, "notes", []):
        _say(f"checkpoint {checkpoint_path}: {note}")
    _say(f"{engine} engine ready in {time.perf_counter() - start:.2f} s ({checkpoint_path})", quiet)

    results = []
    bar = tqdm(cases, desc="cases", unit="case", file=sys.stderr, disable=quiet or None)
    for result in run_folder(runner_engine, bar, output_dir, overwrite, overlay_dir, schedule):
        results.append(result)
        for warning in result.warnings:
            _say(f"WARNING {result.case}: {warning}")
        if result.status == "failed":
            _say(f"ERROR {result.case}: {result.message}")
        elif result.status == "ok":
            _say(f"{result.case}: {result.boxes} box(es), {result.slices_encoded} slice(s) encoded, "
                 f"{result.seconds:.2f} s", quiet)
    bar.close()

    if timing_csv is not None:
        write_timing_csv(timing_csv, results)
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    click.echo(
        f"{counts['ok']} written, {counts['skipped']} skipped (output exists), {counts['failed']} failed "
        f"of {len(results)} case(s) in {time.perf_counter() - start:.1f} s -> {output_dir}",
        err=True,
    )
    if counts["failed"]:
        sys.exit(1)


@main.command()
@click.option("-s", "--seg-dir", required=True, type=click.Path(path_type=Path), help="Folder of predictions (segs).")
@click.option("-g", "--gt-dir", required=True, type=click.Path(path_type=Path), help="Folder of ground truth (gts).")
@click.option("-o", "--output", "csv_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Per-case CSV: case,dsc,nsd,note (4 decimals, sorted).")
@click.option("--no-nsd", is_flag=True, help="DSC only.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes.")
@click.option("--spacing-order", type=click.Choice(["stored", "zyx"]), default="stored", show_default=True,
              help="'stored': spacing as in the file, as the official script (x, y, z against z, y, x arrays); "
                   "'zyx': reversed, geometrically correct.")
@click.option("--summary-json", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the per-modality summary as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def evaluate(seg_dir: Path, gt_dir: Path, csv_path: Path, no_nsd: bool, workers: int, spacing_order: str,
             summary_json: Path | None, quiet: bool) -> None:
    """DSC and NSD (2 mm) per case, as the challenge's compute_metrics.py, plus a per-modality summary."""
    from evaluation.report import run_evaluation

    sys.exit(run_evaluation(seg_dir, gt_dir, csv_path, nsd=not no_nsd, workers=workers,
                            spacing_order=spacing_order, summary_json=summary_json, quiet=quiet))


if __name__ == "__main__":
    main()
