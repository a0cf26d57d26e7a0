"""What the commands share: the click group, the engine options and loading, log lines, the report of a run."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import click

from medsam_lite.core.optional import MissingDependency
from medsam_lite.core.timing import process_age
from medsam_lite.engines.checkpoint import CheckpointError
from medsam_lite.engines.manifest import ExportError
from medsam_lite.engines.precision import CHOICES


CLI_IMPORTED = time.perf_counter()


def say(message: str, quiet: bool = False) -> None:
    """A log line on stderr that does not break the progress bar."""
    if not quiet:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def load_engine(engine: str, checkpoint: Path | None, export_dir: Path | None, precision: str,
                threads: int | None = None, device: str = "cpu", background: bool = False, offline: bool = False):
    """The engine to run (``create_engine``: the weights found, else fetched once unless ``offline``; their
    export, made once where there is none), its notes said on stderr; exit 2 if none loads.

    ``background=True``: the OpenVINO encoder may still be compiling; ``engine_ready`` waits for it, so that
    what the command does in between (imports, listing) runs beside the compilation."""
    from medsam_lite.engines import create_engine

    try:
        choice = create_engine(engine, checkpoint, export_dir, precision=precision, threads=threads, device=device,
                               background=background, allow_fetch=not offline, say=say)
    except (CheckpointError, ExportError, MissingDependency, ValueError) as exc:
        fail(str(exc))
    for note in choice.notes:
        say(f"note: {note}")
    return choice


def engine_ready(choice) -> None:
    """Wait for an engine loaded with ``background=True``; exit 2 with the reason if it could not be loaded."""
    try:
        choice.engine.ready()
    except ExportError as exc:
        fail(str(exc))


def writable_folders(output_dir: Path, overlay_dir: Path | None, timing_csv: Path | None = None) -> None:
    """Make the output (and overlay) folder; exit 2 with the reason when one cannot take a file. Temporaries
    a killed run left there are removed (said in a note). The timing CSV's folder is made and checked too: said
    now, not once every case has run."""
    from medsam_lite.core.atomic import remove_stale, unwritable

    if timing_csv is not None and (why := unwritable(timing_csv.parent)):
        fail(f"cannot write the timing CSV {timing_csv}: {why}")

    for folder, what in [(output_dir, "output"), (overlay_dir, "overlay")]:
        if folder is not None:
            if folder.exists() and not folder.is_dir():
                fail(f"the {what} folder {folder} is a file; name a folder (it is made if missing)")
            if why := unwritable(folder):
                fail(f"the {what} folder {folder} is not writable: {why}")
            stale = remove_stale(folder)
            if stale:
                say(f"note: removed {len(stale)} temporary file(s) a killed run left in {folder} ({stale[0].name}"
                    f"{', ...' if len(stale) > 1 else ''})")


CHECKPOINT_OPTION = click.option(
    "--checkpoint", type=click.Path(path_type=Path), default=None,
    help="LiteMedSAM weights [default: $MEDSAM_LITE_CHECKPOINT, else work_dir/LiteMedSAM/lite_medsam.pth, else the "
         "official weights in $MEDSAM_LITE_HOME (~/.cache/medsam-lite), fetched there once if absent].")


OFFLINE_OPTION = click.option(
    "--offline", is_flag=True, default=False, envvar="MEDSAM_LITE_OFFLINE",
    help="Never fetch the official weights; where none are found, say how to get them [env: MEDSAM_LITE_OFFLINE=1].")


ENGINE_OPTION = click.option(
    "--engine", type=click.Choice(["auto", "openvino", "torch"]), default="auto", show_default=True,
    help="auto: OpenVINO when an export of the checkpoint exists (medsam-lite export), else torch.")


EXPORT_DIR_OPTION = click.option(
    "--export-dir", type=click.Path(path_type=Path), default=None,
    help="OpenVINO export folder [default: $MEDSAM_LITE_EXPORT_DIR, else the export of the checkpoint in "
         "$MEDSAM_LITE_HOME/exports/, made once where there is none (needs torch)].")


PRECISION_OPTION = click.option(
    "--precision", type=click.Choice(list(CHOICES)), default="f32", show_default=True,
    help="f32: exact. bf16, int8, mixed, bf16-linears (OpenVINO only): faster but approximate (not the official "
         "numbers). fast: the fastest mode measured to be 2x f32 and keep accuracy on this kind of CPU (README, "
         "'Precision modes': mixed on a CPU with AMX, about 2.1x; f32 on every other kind measured so far); the log "
         "and the timing CSV say which ran.")


class Stopped(KeyboardInterrupt):
    """SIGTERM (a scheduler's time limit or preemption, ``docker stop``, a pod's eviction), raised where the main
    thread is, as Ctrl+C raises KeyboardInterrupt."""


@contextlib.contextmanager
def stopped_by_sigterm() -> Iterator[None]:
    """SIGTERM raises ``Stopped`` in the main thread within the block. Without a handler a SIGTERM kills the
    process before it reports (and the process of ``predict.sh``, PID 1 in a container, ignores it until the
    SIGKILL that follows)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame) -> None:
        raise Stopped()

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def stopped_how(exc: KeyboardInterrupt) -> tuple[str, int]:
    """What stopped a command (for its last line) and its exit code: 143 for SIGTERM, 130 for Ctrl+C."""
    return ("SIGTERM", 143) if isinstance(exc, Stopped) else ("Ctrl+C", 130)


class _Commands(click.Group):
    """The command group. A command stopped by Ctrl+C or SIGTERM that does not report its own stop (``predict``,
    ``segment``, ``finetune`` and ``serve`` do) ends with one line and exit 130 / 143; the temporary files of
    what it was writing are removed on the way (an unhandled SIGTERM killed it and left them: an export's
    temporary folder, a download under way)."""

    def invoke(self, ctx: click.Context):
        with stopped_by_sigterm():
            try:
                return super().invoke(ctx)
            except KeyboardInterrupt as exc:
                how, code = stopped_how(exc)
                click.echo(f"stopped by {how} before it finished; nothing half-written was left (run the same "
                           f"command again)", err=True)
                sys.exit(code)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Exact, fast LiteMedSAM inference and evaluation for the CVPR 'MedSAM on Laptop' challenge format."""


def run_and_report(results_iter, bar, unit: str, start: float, output_dir: Path, timing_csv: Path | None,
                   quiet: bool, with_model: bool = False) -> None:
    """Report each result as it comes (the process's start-up counted on the first case it ran), write the
    timing CSV, print the summary; exit 1 when any case failed. Ctrl+C or SIGTERM stops the run between two
    steps: the case under way leaves nothing (each output is written whole or not at all), the timing CSV
    and the summary cover the cases finished, and the exit code is 130 or 143."""
    from medsam_lite.batch.runner import write_timing_csv

    startup = process_age()
    startup = startup if startup is not None else time.perf_counter() - CLI_IMPORTED
    results, said, stopped = [], set(), None
    try:
        for result in results_iter:
            if startup and result.status != "skipped":
                result.stages["startup"] = result.stages.get("startup", 0.0) + startup
                startup = 0.0
            results.append(result)
            report_result(result, quiet, with_model)
            for note in result.notes:
                if note not in said:
                    said.add(note)
                    say(f"note: {note}", quiet)
    except KeyboardInterrupt as exc:
        stopped = stopped_how(exc)
        results_iter.close()  # a write under way on the writer thread ends (whole) first
    bar.close()
    unwritten = None
    if timing_csv is not None:
        try:
            write_timing_csv(timing_csv, results)
        except OSError as exc:  # a disk that filled meanwhile: said after the summary, which it does not take along
            from medsam_lite.core.atomic import why_not_written

            unwritten = f"error: cannot write the timing CSV {timing_csv}: {why_not_written(exc)}"
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    summary = (f"{counts['ok']} written, {counts['skipped']} skipped (output exists), {counts['failed']} failed "
               f"of {len(results)} {unit}(s) in {time.perf_counter() - start:.1f} s -> {output_dir}")
    if stopped:
        click.echo(f"stopped by {stopped[0]}: {summary}. The {unit} under way left nothing; run the same command "
                   f"again to do the rest (outputs that exist are skipped)", err=True)
    else:
        click.echo(summary, err=True)
    if unwritten:
        click.echo(unwritten, err=True)
    if stopped or unwritten or counts["failed"]:
        sys.exit(stopped[1] if stopped else 2 if unwritten else 1)


def report_result(result, quiet: bool, with_model: bool) -> None:
    """The log lines of one case result."""
    for warning in result.warnings:
        say(f"WARNING {result.case}: {warning}")
    if result.status == "failed":
        say(f"ERROR {result.case}: {result.message}")
    elif result.status == "ok":
        say(f"{result.case}: {result.boxes} box(es), {result.slices_encoded} slice(s) encoded, "
             f"{result.seconds:.2f} s" + (f", model {result.model}" if with_model else ""), quiet)


def ct_window(preset: str | None, level: float | None, width: float | None) -> tuple[float, float] | None:
    """(level, width) from a preset and/or explicit numbers (numbers win); None: the default window."""
    from medsam_lite.io.intensity import WINDOWS

    base = WINDOWS[preset] if preset else None
    if base is None and level is None and width is None:
        return None
    base = base or WINDOWS["abdomen"]
    return (base[0] if level is None else level, base[1] if width is None else width)


def window_options(command):
    """--window, --window-level, --window-width: the CT window (segment, convert, serve)."""
    for option in reversed([
        click.option("--window", type=click.Choice(["abdomen", "lung", "brain", "bone"]), default=None,
                     help="CT window preset (level/width HU): abdomen 40/400 (default), lung -600/1500, brain 40/80, "
                          "bone 400/1800."),
        click.option("--window-level", type=float, default=None, help="CT window level in HU (overrides --window)."),
        click.option("--window-width", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="CT window width in HU (overrides --window)."),
    ]):
        command = option(command)
    return command


def intensity_options(command):
    """--modality, --window, --window-level, --window-width, --series: how an image becomes uint8."""
    command = click.option("--series", default=None, metavar="UID",
                           help="The DICOM series to read where a folder holds several.")(command)
    command = window_options(command)
    return click.option("--modality", type=click.Choice(["CT", "MR", "other", "raw"]), default=None,
                        help="Intensity rule of the official preprocessing. CT: window, then min-max; MR/other: "
                             "0.5-99.5 percentiles of the non-zero voxels; raw: values already 0..255. [default: from "
                             "the metadata (DICOM Modality); pictures (PNG, JPEG, ...): as pre_grey_rgb.py]")(command)


def compile_prompt_decoder(engine) -> None:
    """The OpenVINO engine's point-prompt decoder (the service's), compiled now; exit 2 if it cannot be."""
    warm = getattr(engine, "compile_prompt_decoder", None)
    if warm is not None:
        try:
            warm()
        except ExportError as exc:
            engine.wait()  # the encoder's compilation is not left running
            fail(str(exc))
