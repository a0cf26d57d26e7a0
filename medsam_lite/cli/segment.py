"""``medsam-lite segment``: your own images (NIfTI, DICOM, PNG, ...) with box prompts -> masks (``batch.image_runner``)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from medsam_lite.cli.common import (
    CHECKPOINT_OPTION, ENGINE_OPTION, EXPORT_DIR_OPTION, OFFLINE_OPTION, PRECISION_OPTION, ct_window, engine_ready,
    fail, intensity_options, load_engine, main, run_and_report, say, writable_folders
)


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for <case>.nii.gz (the input's geometry) or <case>.png (2D pictures) and <case>.json.")
@click.option("--boxes", type=click.Path(exists=True, path_type=Path), default=None,
              help="Box prompts: a JSON file (a list of boxes, or {\"boxes\": [...], \"labels\": [...]}; 2D "
                   "[x_min, y_min, x_max, y_max], 3D [x_min, y_min, z_min, x_max, y_max, z_max] or 2025 dicts; "
                   "array indices), or a folder of <case>.json.")
@click.option("--boxes-from", type=click.Path(exists=True, path_type=Path), default=None, metavar="LABELS",
              help="A label map (or a folder of them named after the cases): the tight box of each label; the "
                   "label values are kept in the output.")
@click.option("--box-margin", type=click.IntRange(min=0), default=0, show_default=True,
              help="Pixels added around the boxes of --boxes-from (x and y).")
@click.option("--until-empty", is_flag=True,
              help="3D: each box is drawn on one slice (its z_mid, else the middle of its z range) and propagates "
                   "up and down until its mask vanishes, as the service's nnInteractive and MONAI Label boxes do.")
@click.option("--reach", type=click.IntRange(min=0), default=None,
              help="With --until-empty: at most this many slices each way [default: the whole volume].")
@intensity_options
@CHECKPOINT_OPTION
@ENGINE_OPTION
@EXPORT_DIR_OPTION
@PRECISION_OPTION
@click.option("--device", default="cpu", show_default=True, help="Torch device for --engine torch.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for inference.")
@click.option("--overwrite", is_flag=True, help="Redo images whose output exists (default: skip them).")
@click.option("--save-overlay", "overlay_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write a PNG overlay per image into this folder.")
@click.option("--timing-csv", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Per image: seconds, boxes, slices encoded and the seconds per stage.")
@OFFLINE_OPTION
@click.option("-q", "--quiet", is_flag=True, help="Only errors and the summary.")
def segment(images: tuple[Path, ...], output_dir: Path, boxes: Path | None, boxes_from: Path | None, box_margin: int,
            until_empty: bool, reach: int | None, modality: str | None, window: str | None, window_level: float | None, window_width: float | None,
            series: str | None, checkpoint: Path | None, engine: str, export_dir: Path | None, precision: str,
            device: str, threads: int | None, overwrite: bool, overlay_dir: Path | None, timing_csv: Path | None,
            offline: bool, quiet: bool) -> None:
    """Segment your own images (NIfTI, NRRD, MHA/MHD, DICOM series folder or .zip, PNG/JPEG/BMP/TIFF; or folders
    of them) with box prompts, with the engines and exactness of `predict`."""
    from medsam_lite.io.image_case import ImageOptions
    from medsam_lite.io.read import find_images

    if boxes is not None and boxes_from is not None:
        fail("give --boxes or --boxes-from, not both")
    if boxes is None and boxes_from is None:
        fail("no box prompts: give --boxes FILE.json (or a folder of <case>.json) or --boxes-from LABELS")
    paths, skipped = find_images(list(images))
    from medsam_lite.batch.guards import UnsafeOutput, check_outputs_apart

    try:
        check_outputs_apart(list(images), {"output folder": output_dir, "overlay folder": overlay_dir})
    except UnsafeOutput as exc:
        fail(str(exc))
    writable_folders(output_dir, overlay_dir, timing_csv)
    if skipped:
        say(f"ignoring {len(skipped)} entr(ies) that are not images: {', '.join(p.name for p in skipped[:5])}", quiet)
    if not paths:
        say("no images found in " + ", ".join(map(str, images)))
        return
    if reach is not None and not until_empty:
        fail("--reach bounds --until-empty; give both or neither")
    options = ImageOptions(modality, ct_window(window, window_level, window_width), boxes, boxes_from, box_margin, series,
                           until_empty, reach)
    start = time.perf_counter()
    choice = load_engine(engine, checkpoint, export_dir, precision, threads, device, background=True, offline=offline)
    from tqdm import tqdm  # imported while the encoder compiles

    from medsam_lite.batch.image_runner import run_images

    engine_ready(choice)
    say(f"{choice.description} ready in {time.perf_counter() - start:.2f} s", quiet)
    bar = tqdm(paths, desc="images", unit="image", file=sys.stderr, disable=quiet or None)
    run_and_report(run_images(choice.engine, bar, output_dir, options, overwrite, overlay_dir), bar, "image",
                   start, output_dir, timing_csv, quiet)
