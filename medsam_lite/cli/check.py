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
    click.echo(cpu_line())


def cpu_line(cpuinfo: str | None = None) -> str:
    """This CPU (or ``cpuinfo``, a /proc/cpuinfo text), its instruction sets and the two choices made by its kind
    (README, 'The exact path' and 'Precision modes'): worth quoting in a report of speed or of a difference."""
    import os

    from medsam_lite.engines.cpu import cpu_features, cpu_flags, cpu_name, pair_rule
    from medsam_lite.engines.precision import fast_rule

    pairs, fast = pair_rule(cpuinfo), fast_rule(cpu_flags(cpuinfo))
    return (f"cpu: {cpu_name(cpuinfo)}, {os.cpu_count()} logical CPUs ({cpu_features(cpuinfo)}); a volume's slices "
            f"{'in pairs' if pairs.pairs else 'one at a time'} ({pairs.kind}); --precision fast runs {fast.mode} "
            f"({fast.kind})")
