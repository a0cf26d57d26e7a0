"""``medsam-lite evaluate``: DSC and NSD per case, as the challenge's compute_metrics.py (``evaluation``)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from medsam_lite.cli.common import fail, main


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
    try:
        from evaluation.report import run_evaluation
    except ImportError as exc:  # the runtime image installs requirements/runtime.txt only
        fail(f"evaluate needs {exc.name or 'scipy'}, which is not installed here: pip install -r requirements/evaluate.txt "
              f"(or reinstall medsam-lite with its dependencies)")

    sys.exit(run_evaluation(seg_dir, gt_dir, csv_path, nsd=not no_nsd, workers=workers,
                            spacing_order=spacing_order, summary_json=summary_json, quiet=quiet))
