"""``medsam-lite check``: load the engine ``predict`` would use, say which, fill its model cache."""
from __future__ import annotations

import time
from pathlib import Path

import click

from medsam_lite.cli.common import (
    CHECKPOINT_OPTION, ENGINE_OPTION, EXPORT_DIR_OPTION, OFFLINE_OPTION, PRECISION_OPTION, compile_prompt_decoder,
    engine_ready, load_engine, main
)


@main.command()
@CHECKPOINT_OPTION
@ENGINE_OPTION
@EXPORT_DIR_OPTION
@PRECISION_OPTION
@OFFLINE_OPTION
def check(checkpoint: Path | None, engine: str, export_dir: Path | None, precision: str, offline: bool) -> None:
    """Load the engine that `predict` would use and say which it is (exit 2 if none can be loaded).

    With OpenVINO this also fills the export's model cache (with the service's point-prompt decoder too), so
    that later runs start faster.
    """
    start = time.perf_counter()
    choice = load_engine(engine, checkpoint, export_dir, precision, background=True, offline=offline)
    compile_prompt_decoder(choice.engine)
    engine_ready(choice)
    click.echo(f"{choice.description} ready in {time.perf_counter() - start:.2f} s")
