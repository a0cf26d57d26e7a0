"""``medsam-lite export``: weights -> OpenVINO IR (``engines.export``; int8: ``batch.int8``)."""
from __future__ import annotations

from pathlib import Path

import click

from medsam_lite.cli.common import say, fail, CHECKPOINT_OPTION, OFFLINE_OPTION, main
from medsam_lite.core.optional import MissingDependency
from medsam_lite.core.optional import require_torch
from medsam_lite.engines.checkpoint import CheckpointError


@main.command()
@CHECKPOINT_OPTION
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Export folder [default: $MEDSAM_LITE_EXPORT_DIR, else the checkpoint's folder in "
                   "$MEDSAM_LITE_HOME/exports/, where predict, segment and serve look for it].")
@click.option("--int8", "int8_calibration", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              metavar="CASES_DIR", help="Also make an int8 encoder (NNCF; approximate), calibrated on the .npz cases here.")
@OFFLINE_OPTION
def export(checkpoint: Path | None, out_dir: Path | None, int8_calibration: Path | None, offline: bool) -> None:
    """Convert the checkpoint to OpenVINO IR (fp32) for the fast, torch-free engine."""
    from medsam_lite.engines import named_export_dir
    from medsam_lite.engines.weights import checkpoint_or_fetch, checkpoint_sha256

    try:
        require_torch("medsam-lite export", ("torch", "onnx"))
        path = checkpoint_or_fetch(checkpoint, allow_fetch=not offline, say=say)
    except (CheckpointError, MissingDependency) as exc:
        fail(str(exc))
    from medsam_lite.engines.store import store_dir
    from medsam_lite.engines.export import export_openvino

    target = named_export_dir(out_dir) or store_dir(checkpoint_sha256(path))
    click.echo(f"exporting {path} -> {target} (takes about half a minute)", err=True)
    try:
        report = export_openvino(path, target)
    except CheckpointError as exc:
        fail(str(exc))
    except OSError as exc:  # the folder keeps no manifest: predict, segment and serve do not take it for an export
        from medsam_lite.core.atomic import why_not_written

        fail(f"cannot write the export to {target}: {why_not_written(exc)} (it needs about 200 MB; the folder is not "
             f"a usable export)")
    if int8_calibration is not None:
        from medsam_lite.batch.int8 import export_int8_encoder

        click.echo(f"warning: int8 is approximate; calibrating on {int8_calibration}", err=True)
        try:
            used = export_int8_encoder(target, int8_calibration)
        except (ImportError, ValueError) as exc:
            fail(f"int8 export failed: {exc} (int8 needs `pip install nncf`)")
        click.echo(f"int8 encoder calibrated on {used} slice(s)", err=True)
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(
        f"exported in {report.seconds:.1f} s; OpenVINO fp32 vs torch on a random input: max abs difference "
        f"{report.encoder_max_abs_diff:.2e} (embedding), {report.decoder_max_abs_diff:.2e} (logits)",
        err=True,
    )
