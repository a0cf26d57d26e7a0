"""``medsam-lite convert``: to and from the challenge npz (``io.convert``)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from medsam_lite.cli.common import main, ct_window, intensity_options
from medsam_lite.core.optional import MissingDependency


@main.group()
def convert() -> None:
    """Convert between your images and the challenge's .npz layout."""


@convert.command("to-npz")
@click.argument("image", type=click.Path(exists=True, path_type=Path))
@click.option("--labels", "labels_path", type=click.Path(exists=True, path_type=Path), default=None,
              help="Label map of the image: written as gts, with boxes from its labels.")
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
              help="The .npz to write, or a folder (name: 3DBox_<Modality>_<case>.npz / 2DBox_...).")
@click.option("--label-slices-only", is_flag=True, help="Keep only the slices that hold a label (as pre_CT_MR.py).")
@intensity_options
def convert_to_npz(image: Path, labels_path: Path | None, out: Path, label_slices_only: bool, modality: str | None,
                   window: str | None, window_level: float | None, window_width: float | None,
                   series: str | None) -> None:
    """IMAGE (+ label map) -> the challenge .npz (imgs, gts, spacing (x, y, z), boxes), as the official
    preprocessing writes it."""
    from medsam_lite.io.convert import to_npz
    from medsam_lite.io.image_case import ImageOptions

    options = ImageOptions(modality, ct_window(window, window_level, window_width), series=series)
    done = _converted(image.name, out, lambda: to_npz(image, out, options, labels_path, label_slices_only))
    click.echo(f"{done.path}: imgs {done.shape}, {done.boxes} box(es)", err=True)


def _converted(name: str, out: Path, convert_one):
    """Run one conversion: its notes said, or one ERROR line naming the file and exit 1."""
    from medsam_lite.core.case import CaseError
    from medsam_lite.io.image import ImageError

    try:
        done = convert_one()
    except (ImageError, CaseError, MissingDependency) as exc:
        click.echo(f"ERROR {name}: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        from medsam_lite.core.atomic import why_not_written

        click.echo(f"ERROR {name}: cannot write {out}: {why_not_written(exc)} (nothing half-written was left)", err=True)
        sys.exit(1)
    for note in done.notes:
        click.echo(f"note: {note}", err=True)
    return done


@convert.command("to-nifti")
@click.argument("segs", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The .nii.gz (or .nrrd, .mha) to write.")
@click.option("--like", type=click.Path(exists=True, path_type=Path), default=None,
              help="The original image: its origin, spacing and direction are copied.")
@click.option("--case", "case_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Without --like: the challenge case .npz whose spacing to use.")
def convert_to_nifti(segs: Path, out: Path, like: Path | None, case_path: Path | None) -> None:
    """A challenge segmentation (segs .npz) -> NIfTI with the original image's geometry."""
    from medsam_lite.io.convert import to_nifti

    done = _converted(segs.name, out, lambda: to_nifti(segs, out, like, case_path))
    click.echo(f"{done.path}: segs {done.shape}", err=True)
